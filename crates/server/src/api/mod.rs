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

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use latchkey_core::ids::DeviceId;
use utoipa_axum::router::OpenApiRouter;

use crate::access_log::DeviceRequest;
use crate::audit::AuditKind;
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
        // Inside the log layer, which puts in the slot the authenticator notes the caller in.
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit_refusals))
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

/// Most `request_refused` records one device appends per minute; past that its refusals are
/// logged only, so a device refused in a loop cannot grow the audit chain, which is never pruned,
/// without end. Its first refusals are on the chain, which is what an admin needs to act.
pub(crate) const REFUSALS_RECORDED_PER_MINUTE: u32 = 30;

/// How many refusals each device had recorded in its current minute.
#[derive(Debug, Default)]
pub(crate) struct RefusalBudget(Mutex<HashMap<DeviceId, (u64, u32)>>);

impl RefusalBudget {
    /// Whether `device`'s refusal at `now` (Unix seconds) is recorded, counting it if so.
    fn take(&self, device: DeviceId, now: u64) -> bool {
        let minute = now / 60;
        // A poisoned map only means another thread panicked while counting; the counts stand.
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Devices whose minute ended count from zero again: forget them rather than grow.
        counts.retain(|_, (at, _)| *at == minute);
        let (_, used) = counts.entry(device).or_insert((minute, 0));
        if *used >= REFUSALS_RECORDED_PER_MINUTE {
            return false;
        }
        *used += 1;
        true
    }
}

/// Appends a `request_refused` record when an enrolled device's verified request is answered
/// `403 forbidden`: its member's role or ownership does not allow what it asked (a member
/// changing policies, removing someone, answering another member's approval, ...). A device
/// that tries what it may not is on the chain, where a log line could be lost or edited; requests
/// refused before a signature verifies name no workspace and are only logged. At most
/// [`REFUSALS_RECORDED_PER_MINUTE`] records per device and minute; the rest are logged.
async fn audit_refusals(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    // Cheap clones (an `Arc` each, a standard method by value): this runs on every proxied call.
    let device = request.extensions().get::<DeviceRequest>().cloned();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let refused = response.extensions().get::<ErrorCode>() == Some(&ErrorCode::Forbidden);
    if let (true, Some(caller)) = (refused, device.as_ref().and_then(DeviceRequest::caller)) {
        if !state.refusals.take(caller.device, state.now()) {
            tracing::warn!(
                workspace = %caller.workspace, member = %caller.member, device = %caller.device,
                method = %method, route = route.as_ref().map_or("(no route)", MatchedPath::as_str),
                "request refused for its role; not on the audit chain (over {REFUSALS_RECORDED_PER_MINUTE} this minute)"
            );
            return response;
        }
        credentials::audit(&state, &caller, AuditKind::RequestRefused, |e| {
            e.reason_code = Some(ErrorCode::Forbidden.spelling());
            e.method = Some(method.as_str().to_owned());
            // The route template, not the path: what was attempted, in the API's own terms.
            e.path = route.map(|r| r.as_str().to_owned());
        })
        .await;
    }
    response
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
