//! `latchkey-server`: the broker. It stores ciphertext it cannot open, authenticates devices and
//! agents, and brokers agents' calls to upstream APIs.
//!
//! The server is a library with a thin binary: [`serve`] takes an already-bound listener and a
//! shutdown future, so tests start it on `127.0.0.1:0` and stop it deterministically.

pub mod config;
pub mod error;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use latchkey_core::keys::BrokerSecretKey;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::error::{ApiError, ErrorCode};
use crate::store::Store;

/// The server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Serving failed.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything request handlers share.
#[derive(Debug)]
struct AppState {
    store: Store,
    broker_key: BrokerSecretKey,
}

/// Serves the broker API on `listener` until `shutdown` completes, then finishes in-flight
/// requests and returns.
pub async fn serve(
    store: Store,
    broker_key: BrokerSecretKey,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let state = Arc::new(AppState { store, broker_key });
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/broker-key", get(broker_key))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// Liveness: the process is serving requests.
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness: the database answers.
async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Status>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(ErrorCode::Unavailable, "the database is not reachable; see the server log")
    })?;
    Ok(Json(Status { status: "ready" }))
}

#[derive(Serialize)]
struct BrokerKeyResponse {
    /// HPKE suite of capabilities sealed to this key.
    suite: &'static str,
    /// The X25519 public key, base64url without padding.
    public_key: String,
}

/// The broker's public key, to which devices seal capabilities.
async fn broker_key(State(state): State<Arc<AppState>>) -> Json<BrokerKeyResponse> {
    use base64::Engine as _;
    Json(BrokerKeyResponse {
        suite: "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305",
        public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(state.broker_key.public_key().to_bytes()),
    })
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint; see /openapi.json for the API")
}

async fn method_not_allowed() -> (StatusCode, ApiError) {
    let error =
        ApiError::new(ErrorCode::MethodNotAllowed, "this endpoint does not accept that method");
    (StatusCode::METHOD_NOT_ALLOWED, error)
}
