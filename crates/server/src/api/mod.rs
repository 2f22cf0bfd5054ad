//! The HTTP API. Each submodule owns one area and contributes its routes to [`router`].

mod agents;
mod approvals;
mod audit;
mod credentials;
mod inject;
mod members;
mod openapi;
mod pause;
mod policies;
mod service;
mod wire;
mod workspaces;

use axum::Router;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::DeviceCaller;
use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;
use crate::store::LimitReached;

/// All routes of the broker.
pub(crate) fn router(state: SharedState) -> Router {
    let (routes, _) = documented().split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::access_log::log_request))
        .with_state(state)
}

/// Every route with its OpenAPI description (see [`openapi`]).
fn documented() -> OpenApiRouter<SharedState> {
    OpenApiRouter::with_openapi(openapi::root())
        .merge(agents::routes())
        .merge(approvals::routes())
        .merge(audit::routes())
        .merge(credentials::routes())
        .merge(inject::routes())
        .merge(members::routes())
        .merge(openapi::routes())
        .merge(pause::routes())
        .merge(policies::routes())
        .merge(service::routes())
        .merge(workspaces::routes())
        .merge(crate::proxy::routes())
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such endpoint; see /openapi.json or docs/api.md for the API",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this endpoint does not accept that method")
}

/// `409 limit_reached` for a creation the store refused at one of its limits, logged at `warn`
/// with the device that asked: a device creating in a loop is found by its id.
fn limit_reached(caller: &DeviceCaller, limit: LimitReached) -> ApiError {
    tracing::warn!(
        workspace = %caller.workspace, member = %caller.member, device = %caller.device,
        limit = limit.name(), "creation refused at a limit"
    );
    ApiError::from(limit)
}
