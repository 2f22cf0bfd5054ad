//! The broker embedded in the app: `latchkey-server` on loopback with SQLite in the app's data
//! directory, for a workspace that lives on this computer. Local agents call it like any broker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use latchkey_server::config::{self, Config, LogFormat};
use latchkey_server::store::Store;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The embedded broker's default address: the same loopback port as `latchkey-server`'s default,
/// so agents and the CLI find it where the docs say.
pub const DEFAULT_LISTEN: &str = config::DEFAULT_LISTEN;

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The data directory could not be created.
    #[error("cannot create the broker's data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The address is taken (another broker, or another copy of the app).
    #[error(
        "cannot listen on {addr}: {source}; quit the other Latchkey app or latchkey-server using it, or set LATCHKEY_DESKTOP_BROKER_LISTEN to another loopback address"
    )]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The broker key or the database could not be opened.
    #[error("the embedded broker cannot start: {0}")]
    Broker(String),
}

/// A running embedded broker; stopped (in-flight calls drained) by [`Embedded::stop`] or on drop.
#[derive(Debug)]
pub struct Embedded {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Embedded {
    /// Starts a broker on `listen` storing its data (database and broker key) in `data_dir`.
    pub async fn start(data_dir: &Path, listen: SocketAddr) -> Result<Self, EmbeddedError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| EmbeddedError::DataDir { path: data_dir.to_owned(), source })?;
        let config = Config {
            listen,
            metrics_listen: None,
            data_dir: data_dir.to_owned(),
            log_format: LogFormat::Text,
            broker_key_file: data_dir.join("broker.key"),
            database_url: None,
            migrate_database_url: None,
            approval_timeout: latchkey_server::approvals::DEFAULT_TIMEOUT,
            device_rate_limit: Some(latchkey_server::rate_limit::DeviceRateLimit::DEFAULT),
            // One member's calls: the app's runtime serves them, with no threads of its own.
            serving_threads: None,
            public_origin: None,
            // Upstream APIs behind a private CA are trusted through the system's trust store.
            upstream_ca: None,
            // The standard proxy variables apply, as for any program on this computer.
            upstream_proxy: None,
            // Loopback only: the app's own devices and agents reach it on this computer.
            tls: None,
            // The person at this computer creates her workspace on it; nobody else reaches it.
            workspace_creation: Some(config::CreationMode::Open),
            creation_token_file: None,
        };
        // The broker key comes from its file only: an environment variable meant for a
        // stand-alone broker must not leak into the app's.
        let broker_key = config::load_broker_key(&config, |_| None)
            .map_err(|e| EmbeddedError::Broker(e.to_string()))?;
        let store = Store::open_sqlite(&config.database_path())
            .await
            .map_err(|e| EmbeddedError::Broker(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| EmbeddedError::Listen { addr: listen, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmbeddedError::Listen { addr: listen, source })?;
        let broker = latchkey_server::Broker::new(store.clone(), broker_key)
            .with_approval_timeout(config.approval_timeout)
            .with_device_rate_limit(config.device_rate_limit)
            .with_workspace_creation(latchkey_server::creation::WorkspaceCreation::Open);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = latchkey_server::serve(broker, listener, shutdown).await {
                tracing::error!(%error, "the embedded broker stopped with an error");
            }
            store.close().await;
        });
        tracing::info!(%addr, data_dir = %data_dir.display(), "embedded broker ready");
        Ok(Self { addr, stop: Some(stop), task: Some(task) })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, as devices and agents use it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting calls, lets in-flight ones finish and writes the queued audit records.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
