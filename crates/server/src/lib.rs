//! `latchkey-server`: the broker. It stores ciphertext it cannot open, authenticates devices and
//! agents, and brokers agents' calls to upstream APIs.
//!
//! The server is a library with a thin binary: [`serve`] takes a configured [`Broker`], an
//! already-bound listener and a shutdown future, so tests start it on `127.0.0.1:0` and stop it
//! deterministically.

mod access_log;
mod api;
pub mod approvals;
pub mod audit;
mod auth;
pub mod clock;
pub mod config;
mod connections;
pub mod creation;
pub mod error;
pub mod metrics;
pub mod policy;
mod proxy;
pub mod rate_limit;
mod state;
pub mod store;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use crate::metrics::{Metrics, serve_metrics};
use crate::state::AppState;
pub use crate::state::Broker;

/// The server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Serving failed.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The upstream HTTP client could not be built (TLS setup).
    #[error("upstream HTTP client: {0}")]
    Upstream(#[from] crate::upstream::UpstreamClientError),
    /// The audit log could not be opened (its journal is locked by another broker, unreadable
    /// or damaged).
    #[error("audit log: {0}")]
    Audit(#[from] crate::store::StoreError),
    /// The policy engine could not be set up (its embedded schema or default policies).
    #[error("policy engine: {0}")]
    Policy(#[from] crate::policy::PolicyError),
}

/// Where the audit journal of the SQLite database at `database` lives: beside it, in
/// `<database>.audit/`.
pub fn audit_journal_dir(database: &std::path::Path) -> std::path::PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".audit");
    std::path::PathBuf::from(name)
}

/// Serves `broker` on `listener` until `shutdown` completes, then finishes in-flight requests and
/// returns.
pub async fn serve(
    broker: Broker,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let workspace_creation = match broker.workspace_creation {
        Some(creation) => creation,
        None => creation::WorkspaceCreation::default_for(
            listener.local_addr()?,
            broker.public_origin.as_deref(),
        ),
    };
    let public_origin = match (broker.public_origin, &broker.tls) {
        (Some(origin), _) => origin,
        (None, Some(_)) => format!("https://{}", listener.local_addr()?),
        (None, None) => format!("http://{}", listener.local_addr()?),
    };
    let broker_tls = broker.tls.clone();
    let metrics = broker.metrics.clone();
    let policies = crate::policy::PolicyEngine::new()?;
    let audit = match broker.store.sqlite_path() {
        Some(database) => {
            audit::AuditLog::start_journaled_with(
                broker.store.clone(),
                &audit_journal_dir(database),
                broker.journal_faults.clone(),
            )
            .await?
        }
        None => audit::AuditLog::start(broker.store.clone()),
    };
    broker.metrics.observe_audit(&audit);
    let approvals = Arc::new(approvals::Approvals::new(broker.approval_timeout));
    approvals.spawn_listener(&broker.store);
    let approvals_hub = Arc::clone(&approvals);
    let state = Arc::new(AppState {
        store: broker.store,
        broker_key: broker.broker_key,
        clock: broker.clock,
        public_origin,
        workspace_creation,
        policies,
        audit: audit.clone(),
        upstream: upstream::UpstreamClient::new(
            broker.upstream_roots.as_ref(),
            broker.upstream_proxy.as_ref(),
        )?,
        refresh_locks: proxy::RefreshLocks::default(),
        refusals: api::RefusalBudget::default(),
        device_budgets: rate_limit::DeviceBudgets::new(broker.device_rate_limit),
        metrics: broker.metrics,
        approvals,
        background: tokio::runtime::Handle::current(),
    });
    let app = api::router(state);
    // Long-lived requests (device streams, held calls) end when shutdown begins, so graceful
    // shutdown does not wait on them.
    let shutdown = async move {
        shutdown.await;
        approvals_hub.close();
    };
    let served = match broker.serving_threads {
        None => serve_on(listener, app, broker_tls.as_ref(), metrics, shutdown).await,
        Some(threads) => {
            serve_on_threads(threads, listener, app, broker_tls, metrics, shutdown).await
        }
    };
    // Every request has finished: write the audit records still queued, then stop the writer.
    audit.shutdown().await;
    served?;
    Ok(())
}

/// Serves `app` on `listener` from the current runtime until `shutdown` completes, then
/// finishes in-flight requests.
async fn serve_on(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<&tls::ServerTls>,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(tls) => {
            let listener = tls::TlsListener::new(listener, tls, metrics)?;
            connections::serve(listener, app, shutdown).await;
        }
        None => {
            use axum::serve::ListenerExt as _;
            let listener = listener.tap_io(|tcp| connections::keep_alive(tcp));
            connections::serve(listener, app, shutdown).await;
        }
    }
    Ok(())
}

/// Serves `app` on `threads` threads, each a single-threaded runtime accepting from a handle of
/// the one `listener`, until `shutdown` completes (or one thread stops with an error, which stops
/// the others); then each finishes its in-flight requests.
async fn serve_on_threads(
    threads: NonZeroUsize,
    listener: TcpListener,
    app: axum::Router,
    tls: Option<tls::ServerTls>,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.into_std()?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let (finished, mut results) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<()>>();
    for index in 0..threads.get() {
        let listener = listener.try_clone()?;
        let (app, tls, metrics) = (app.clone(), tls.clone(), metrics.clone());
        let mut stopping = stopping.clone();
        let finished = finished.clone();
        std::thread::Builder::new().name(format!("latchkey-serve-{index}")).spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| {
                    runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        let stopped = async move {
                            // An error means the sender is gone, which is a stop too.
                            let _ = stopping.wait_for(|stop| *stop).await;
                        };
                        serve_on(listener, app, tls.as_ref(), metrics, stopped).await
                    })
                });
            // The receiver is gone only once `serve` has returned; nobody is left to tell.
            let _ = finished.send(served);
        })?;
    }
    drop(finished);
    let mut outcomes = Vec::with_capacity(threads.get());
    tokio::select! {
        () = shutdown => {}
        Some(early) = results.recv() => {
            outcomes.push(early.and(Err(std::io::Error::other("a serving thread stopped early"))));
        }
    }
    let _ = stop.send(true);
    // Ends once every thread has ended: each drops its sender, after its result if it has one.
    while let Some(served) = results.recv().await {
        outcomes.push(served);
    }
    if outcomes.len() < threads.get() {
        outcomes.push(Err(std::io::Error::other("a serving thread panicked")));
    }
    // The first error, if any.
    outcomes.into_iter().collect()
}

/// The runtime to call [`serve`] on for a broker with `serving_threads`
/// ([`Broker::with_serving_threads`]): with threads of their own serving requests, it runs only
/// background work (the audit writer, the approvals listener, metrics, signals) and one thread
/// is enough; without, its workers serve requests, one per core.
pub fn main_runtime(
    serving_threads: Option<NonZeroUsize>,
) -> std::io::Result<tokio::runtime::Runtime> {
    match serving_threads {
        Some(_) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
}
