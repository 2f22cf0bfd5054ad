//! `latchkey-server`: the broker. It stores ciphertext it cannot open, authenticates devices and
//! agents, and brokers agents' calls to upstream APIs.
//!
//! The server is a library with a thin binary: [`serve`] takes a configured [`Broker`], an
//! already-bound listener and a shutdown future, so tests start it on `127.0.0.1:0` and stop it
//! deterministically.

mod api;
mod auth;
pub mod clock;
pub mod config;
pub mod error;
mod state;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::state::AppState;
pub use crate::state::Broker;

/// The server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Serving failed.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `broker` on `listener` until `shutdown` completes, then finishes in-flight requests and
/// returns.
pub async fn serve(
    broker: Broker,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let public_origin = match broker.public_origin {
        Some(origin) => origin,
        None => format!("http://{}", listener.local_addr()?),
    };
    let state = Arc::new(AppState {
        store: broker.store,
        broker_key: broker.broker_key,
        clock: broker.clock,
        public_origin,
    });
    axum::serve(listener, api::router(state)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
