//! Service endpoints: liveness, readiness and the broker's public key.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;

pub(super) fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(broker_key))
}

#[derive(Serialize, ToSchema)]
struct Status {
    /// `ok` (liveness) or `ready` (readiness).
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process is serving requests.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    operation_id = "healthz",
    responses((status = 200, description = "The process serves requests", body = Status)),
)]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness: the database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    operation_id = "readyz",
    responses(
        (status = 200, description = "The database answers", body = Status),
        (status = 503, description = "`unavailable`: the database is not reachable", body = ApiError),
    ),
)]
async fn readyz(State(state): State<SharedState>) -> Result<Json<Status>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(ErrorCode::Unavailable, "the database is not reachable; see the server log")
    })?;
    Ok(Json(Status { status: "ready" }))
}

#[derive(Serialize, ToSchema)]
struct BrokerKeyResponse {
    /// HPKE suite of capabilities sealed to this key.
    #[schema(example = "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305")]
    suite: &'static str,
    /// The X25519 public key, base64url without padding.
    public_key: String,
}

/// The broker's public key, to which devices seal capabilities.
#[utoipa::path(
    get,
    path = "/v1/broker-key",
    tag = "service",
    operation_id = "broker_key",
    responses((status = 200, description = "The broker's HPKE public key", body = BrokerKeyResponse)),
)]
async fn broker_key(State(state): State<SharedState>) -> Json<BrokerKeyResponse> {
    use base64::Engine as _;
    Json(BrokerKeyResponse {
        suite: "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305",
        public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(state.broker_key.public_key().to_bytes()),
    })
}
