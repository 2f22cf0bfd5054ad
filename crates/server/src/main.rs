//! `latchkey-server` binary: parses configuration, sets up logging, binds, serves until Ctrl-C or
//! SIGTERM. SIGHUP reloads the TLS certificate and the creation token file.

use anyhow::Context as _;
use clap::Parser as _;
use latchkey_server::config::{self, Config, CreationMode, Flags, LogFormat};
use latchkey_server::creation::CreationTokenFile;
use latchkey_server::store::Store;

/// The broker allocates and frees many small buffers per call from two or more threads;
/// mimalloc serves that pattern with less work than glibc's allocator (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::resolve(Flags::parse(), env)?;
    init_logging(config.log_format);
    let runtime = latchkey_server::main_runtime(config.serving_threads)
        .context("cannot start the async runtime")?;
    runtime.block_on(run(config))
}

/// The process environment's `name`, if set and Unicode.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let broker_key = config::load_broker_key(&config, env)?;
    let upstream_roots = config.upstream_roots()?;
    let tls = config.server_tls()?;
    let workspace_creation = config.workspace_creation()?;
    let store = match &config.database_url {
        Some(url) => {
            let migrate = config.migrate_database_url.as_ref().map(|u| u.expose());
            Store::open_postgres(url.expose(), migrate).await?
        }
        None => Store::open_sqlite(&config.database_path()).await?,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let metrics = latchkey_server::Metrics::new();
    // The metrics listener stops after the API listener, so the last requests are still counted
    // while in-flight calls drain.
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = match config.metrics_listen {
        Some(addr) => {
            let metrics_listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!(
                        "cannot listen on {addr} for metrics (--metrics-listen off disables them)"
                    )
                })?;
            tracing::info!(metrics_listen = %metrics_listener.local_addr()?, "serving metrics at /metrics");
            Some(tokio::spawn(latchkey_server::serve_metrics(
                metrics_listener,
                metrics.clone(),
                async {
                    let _ = metrics_stopped.await;
                },
            )))
        }
        None => None,
    };
    // The token file's clone shares its digest with the broker's: a reload applies to both.
    reload_on_hangup(config.clone(), tls.clone(), workspace_creation.token_file().cloned());
    tracing::info!(
        listen = %listener.local_addr()?,
        tls = config.tls.is_some(),
        serving_threads = config
            .serving_threads
            .map_or_else(|| "shared runtime".to_owned(), |threads| threads.to_string()),
        data_dir = %config.data_dir.display(),
        workspace_creation = workspace_creation.mode().as_str(),
        "latchkey-server ready"
    );
    if config.workspace_creation.is_none() && workspace_creation.mode() == CreationMode::Closed {
        tracing::info!(
            "workspace creation is closed: this broker is reachable beyond this computer and has \
             no creation token; to let people create workspaces, give it a token file with \
             --creation-token-file FILE (or --workspace-creation open to let anyone who reaches \
             it); people join existing workspaces with invites either way"
        );
    }
    let mut broker = latchkey_server::Broker::new(store.clone(), broker_key)
        .with_metrics(metrics)
        .with_approval_timeout(config.approval_timeout)
        .with_device_rate_limit(config.device_rate_limit)
        .with_serving_threads(config.serving_threads)
        .with_workspace_creation(workspace_creation);
    if let Some(origin) = &config.public_origin {
        broker = broker.with_public_origin(origin.clone());
    }
    if let Some(proxy) = &config.upstream_proxy {
        broker = broker.with_upstream_proxy(proxy.clone());
    }
    if let Some(roots) = upstream_roots {
        tracing::info!(
            certificates = roots.len(),
            "trusting extra upstream certificate authorities"
        );
        broker = broker.with_upstream_roots(roots);
    }
    if let Some(tls) = tls {
        broker = broker.with_tls(tls);
    }
    let served = latchkey_server::serve(broker, listener, shutdown_signal()).await;
    let _ = stop_metrics.send(());
    if let Some(task) = metrics_task {
        match task.await {
            Ok(Err(error)) => tracing::error!(%error, "the metrics listener failed"),
            Err(error) => tracing::error!(%error, "the metrics listener ended abnormally"),
            Ok(Ok(())) => {}
        }
    }
    served?;
    store.close().await;
    tracing::info!("latchkey-server stopped");
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// On each SIGHUP, reads the TLS certificate and key files again and serves them from the next
/// handshake on (a renewed certificate without a restart), and reads the creation token file
/// again (a new token from the next workspace creation on). Each is reloaded on its own: files
/// that cannot be used leave the current certificate or token in place, with an error in the
/// log, and do not keep the other from being reloaded. Without either, a SIGHUP is logged as
/// reloading nothing: `systemctl reload` must never stop a broker, whatever it was started with.
fn reload_on_hangup(
    config: Config,
    tls: Option<latchkey_server::tls::ServerTls>,
    token_file: Option<CreationTokenFile>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Watched from here on, before the broker says it is ready: a SIGHUP sent after that
        // line reloads instead of ending the process.
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!(
                "cannot watch for SIGHUP; restart the broker to renew its certificate or to \
                 change its creation token"
            );
            return;
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if tls.is_none() && token_file.is_none() {
                    tracing::info!(
                        "SIGHUP: nothing to reload (no --tls-cert and --tls-key, no \
                         --creation-token-file)"
                    );
                }
                // Each file is read on a blocking thread of its own: a path that blocks its
                // reader (a named pipe nobody writes, a stalled network file system) holds up
                // neither the runtime's workers nor the other file's reload.
                let tls_reload = tls.clone().map(|tls| {
                    let config = config.clone();
                    reload_off_the_runtime("TLS certificate", move || reload_tls(&config, &tls))
                });
                let token_reload = token_file.clone().map(|file| {
                    // The outcome is logged by `reload`, and a failure keeps the previous token.
                    reload_off_the_runtime("creation token", move || {
                        let _ = file.reload();
                    })
                });
                tokio::join!(
                    async {
                        if let Some(reload) = tls_reload {
                            reload.await;
                        }
                    },
                    async {
                        if let Some(reload) = token_reload {
                            reload.await;
                        }
                    },
                );
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (config, tls, token_file);
}

/// Reads the certificate and key again and serves them from the next handshake on; a failure
/// keeps the previous pair. Logs the outcome.
#[cfg(unix)]
fn reload_tls(config: &Config, tls: &latchkey_server::tls::ServerTls) {
    match config.server_tls() {
        Ok(Some(renewed)) => {
            tls.replace_with(&renewed);
            tracing::info!("TLS certificate and key reloaded");
        }
        Ok(None) => {}
        Err(error) => {
            tracing::error!(%error, "TLS certificate not reloaded; still serving the previous one");
        }
    }
}

/// How long a reload may take before the broker says it is still waiting for its file.
#[cfg(unix)]
const SLOW_RELOAD: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `reload` on a thread of its own and waits for it, saying so once in the log when it
/// takes longer than [`SLOW_RELOAD`]. Further `SIGHUP`s wait until it is done. The thread is not
/// the runtime's: a reload stuck on its file never holds up the broker's exit on `SIGTERM`,
/// which a blocking task of the runtime would (the runtime waits for those when it stops).
#[cfg(unix)]
async fn reload_off_the_runtime(what: &'static str, reload: impl FnOnce() + Send + 'static) {
    let (done, mut finished) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new().name(format!("reload {what}")).spawn(move || {
        reload();
        let _ = done.send(());
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "SIGHUP: cannot start the {what} reload; nothing was reloaded");
        return;
    }
    let outcome = match tokio::time::timeout(SLOW_RELOAD, &mut finished).await {
        Ok(outcome) => outcome,
        Err(_) => {
            tracing::warn!(
                "SIGHUP: the {what} reload is still waiting for its file (a named pipe nobody \
                 writes to, or a stalled file system?); the broker goes on serving, and later \
                 SIGHUPs take effect once this reload ends"
            );
            finished.await
        }
    };
    if outcome.is_err() {
        tracing::error!("SIGHUP: the {what} reload ended abnormally");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
