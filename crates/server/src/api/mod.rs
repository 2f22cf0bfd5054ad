//! The HTTP API. Each submodule owns one area and contributes its routes to [`router`].

mod agents;
mod audit;
mod credentials;
mod members;
mod policies;
mod service;
mod wire;
mod workspaces;

use axum::Router;

use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;

/// All routes of the broker.
pub(crate) fn router(state: SharedState) -> Router {
    Router::new()
        .merge(agents::routes())
        .merge(audit::routes())
        .merge(credentials::routes())
        .merge(members::routes())
        .merge(policies::routes())
        .merge(service::routes())
        .merge(workspaces::routes())
        .merge(crate::proxy::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint; see docs/api.md for the API")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this endpoint does not accept that method")
}
