//! One log line per request, and the count of device requests by outcome.
//!
//! The line names the method, the route template that matched (`/v1/credentials/{id}`,
//! `/p/{*rest}`), the status, the error code if any, and the latency, at `info` level with target
//! `latchkey_server::request`. It never names the raw path or query (a proxied path or query can
//! carry a key, and ids there are not the log's business), nor any header.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Extensions;
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::DeviceCaller;
use crate::error::ErrorCode;
use crate::state::SharedState;

/// Logs the request once it is answered and counts it if it was a device request.
pub(crate) async fn log_request(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(no route)".to_owned(), |path| path.as_str().to_owned());
    let device = DeviceRequest::default();
    request.extensions_mut().insert(device.clone());

    let response = next.run(request).await;

    let code = response.extensions().get::<ErrorCode>().copied();
    let status = response.status().as_u16();
    if device.0.read.load(Ordering::Relaxed) {
        state.metrics.device_request(code);
    }
    let code = code.map(crate::error::ErrorCode::spelling);
    tracing::info!(
        target: "latchkey_server::request",
        method = %method,
        route = %route,
        status,
        code = code.as_deref().unwrap_or("ok"),
        latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// Set by the device authenticator on every request it reads, so the log layer can count device
/// requests by the code they were finally answered with, and, once the signature is verified,
/// who sent it (for the audit record of a refusal, `api::audit_refusals`).
#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceRequest(Arc<DeviceRequestState>);

#[derive(Debug, Default)]
struct DeviceRequestState {
    /// The authenticator read the request.
    read: AtomicBool,
    /// The device whose signature on the request verified.
    caller: OnceLock<DeviceCaller>,
}

impl DeviceRequest {
    /// The device whose signature on this request verified, if one did.
    pub(crate) fn caller(&self) -> Option<DeviceCaller> {
        self.0.caller.get().copied()
    }
}

/// Marks the request (by its extensions) as a device request.
pub(crate) fn mark_device_request(extensions: &Extensions) {
    if let Some(mark) = extensions.get::<DeviceRequest>() {
        mark.0.read.store(true, Ordering::Relaxed);
    }
}

/// Notes (in the request's extensions) the device whose signature on the request verified.
pub(crate) fn note_caller(extensions: &Extensions, caller: DeviceCaller) {
    if let Some(mark) = extensions.get::<DeviceRequest>() {
        // One authenticated caller per request: a second extractor would find the same one.
        let _ = mark.0.caller.set(caller);
    }
}
