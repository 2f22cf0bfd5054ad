//! Service endpoints: liveness, readiness and the broker's public key.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;

pub(super) fn routes() -> Router<SharedState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/broker-key", get(broker_key))
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
async fn readyz(State(state): State<SharedState>) -> Result<Json<Status>, ApiError> {
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
async fn broker_key(State(state): State<SharedState>) -> Json<BrokerKeyResponse> {
    use base64::Engine as _;
    Json(BrokerKeyResponse {
        suite: "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305",
        public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(state.broker_key.public_key().to_bytes()),
    })
}
