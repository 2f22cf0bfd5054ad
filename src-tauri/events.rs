//! Events the shell sends the UI (names and payloads are part of the UI contract).

use tauri::{Emitter as _, Runtime};

use crate::view::AppStatus;

/// `{ pending: number }`: the pending approvals changed.
pub const APPROVALS_CHANGED: &str = "approvals-changed";
/// `Approval`: a new request is waiting.
pub const APPROVAL_REQUESTED: &str = "approval-requested";
/// `{ screen, approvalId? }`: the tray asks the window to show a screen.
pub const NAVIGATE: &str = "navigate";
/// `RotationProgress`: a step of a key rotation.
pub const ROTATION_PROGRESS: &str = "rotation-progress";
/// `AppStatus`: the app's state changed (set-up, pause).
pub const STATUS_CHANGED: &str = "status-changed";

/// Where the tray sends the window.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Navigate {
    pub screen: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
}

/// `{ pending }`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ApprovalsChanged {
    pub pending: usize,
}

/// Tells the UI the state changed. A window that is gone misses nothing it would not re-read.
/// The tray follows too, where there is one.
pub fn status_changed<R: Runtime>(app: &tauri::AppHandle<R>, status: &AppStatus) {
    if let Err(error) = app.emit(STATUS_CHANGED, status) {
        tracing::debug!(%error, "status event not delivered");
    }
    tray_follows(app, status);
}

/// Brings the tray up to `status` without telling the window: onboarding gets the new status
/// as its command's answer and moves on when the person has seen the fingerprint and kit.
pub fn tray_follows<R: Runtime>(app: &tauri::AppHandle<R>, status: &AppStatus) {
    use tauri::Manager as _;
    if let Some(tray) = app.try_state::<crate::watch::Tray>() {
        let (set_up, paused) = (status.set_up, status.paused);
        tray.update(|s| {
            s.set_up = set_up;
            s.paused = paused;
        });
    }
}
