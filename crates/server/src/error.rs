//! The one error shape every HTTP response uses: `{"code": "...", "message": "..."}`.
//!
//! Codes are stable identifiers that clients branch on; messages are for people and say what to
//! do next. A code is never reassigned to another meaning; new situations get new codes. Messages
//! never contain a credential, key, capability or agent token.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Stable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is malformed (syntax, types, limits).
    BadRequest,
    /// The request is well-formed but a value is not acceptable.
    InvalidRequest,
    /// No such route or resource.
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The body is larger than the endpoint accepts.
    PayloadTooLarge,
    /// The request conflicts with the current state (duplicate name, stale version).
    Conflict,
    /// A device request has no valid RFC 9421 signature.
    SignatureInvalid,
    /// The signing key id is not an enrolled, active device.
    UnknownDevice,
    /// A signed request's nonce was already used.
    ReplayedRequest,
    /// The caller is authenticated but not allowed to do this.
    Forbidden,
    /// An agent token is missing, malformed or unknown.
    UnknownToken,
    /// An agent token was revoked.
    TokenRevoked,
    /// The agent already has as many calls waiting for approval as a broker holds for one agent;
    /// retry once some are answered.
    TooManyWaiting,
    /// The signing device sent more requests than the broker accepts from one device; retry
    /// after the `Retry-After` seconds. If nobody on the device sent them, an admin should remove
    /// it.
    RateLimited,
    /// A capability failed verification (signature, claims, time, replay, revocation).
    CapabilityInvalid,
    /// A Cedar policy denied the call.
    PolicyDenied,
    /// The call needs a member's approval.
    ApprovalRequired,
    /// A member's device denied the held call.
    ApprovalDenied,
    /// Nobody answered the held call in time; retrying asks again.
    ApprovalTimeout,
    /// The upstream host is not in the credential's allow-list.
    HostNotAllowed,
    /// The upstream could not be reached or misbehaved.
    UpstreamFailed,
    /// The service cannot serve right now (for example, its database is unreachable).
    Unavailable,
    /// An unexpected failure; details are in the server log, never in the response.
    Internal,
    /// An invite code is unknown, already used, expired or revoked (deliberately not saying
    /// which).
    InviteInvalid,
    /// A member paused every agent call in the workspace; a resume lifts it.
    AgentsPaused,
    /// Only an admin or the member who paused the agents may resume them.
    ResumeNotAllowed,
    /// Someone else (another device or process, or the broker) is refreshing the credential's
    /// OAuth tokens right now; read it again after the `Retry-After` seconds, it is probably
    /// fresh by then.
    RefreshInProgress,
    /// This broker creates no workspaces (its operator closed creation): join an existing
    /// workspace with an invite instead.
    WorkspaceCreationClosed,
    /// This broker creates a workspace only with its operator's creation token, and the request
    /// carried none.
    CreationTokenRequired,
    /// The creation token the request carried is not the broker's.
    CreationTokenInvalid,
    /// The workspace (or the agent or member concerned) already has as many of what the request
    /// would create as a broker keeps: agents, grants, credentials, invites, members, devices or
    /// policies. The message names the limit and what to remove first; nothing was written.
    LimitReached,
}

impl ErrorCode {
    /// The code's stable JSON spelling (`policy_denied`), as the error body, the audit log's
    /// `reason_code` and the metrics' `code` label carry it.
    pub(crate) fn spelling(self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(text)) => text,
            // Unreachable: every variant is a unit variant, which serde spells as a string.
            _ => "other".to_owned(),
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Conflict | ErrorCode::RefreshInProgress | ErrorCode::LimitReached => {
                StatusCode::CONFLICT
            }
            ErrorCode::SignatureInvalid
            | ErrorCode::UnknownDevice
            | ErrorCode::ReplayedRequest
            | ErrorCode::UnknownToken
            | ErrorCode::TokenRevoked => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden
            | ErrorCode::CapabilityInvalid
            | ErrorCode::PolicyDenied
            | ErrorCode::HostNotAllowed
            | ErrorCode::ApprovalDenied => StatusCode::FORBIDDEN,
            ErrorCode::ApprovalRequired => StatusCode::PRECONDITION_REQUIRED,
            ErrorCode::TooManyWaiting | ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ErrorCode::ApprovalTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InviteInvalid
            | ErrorCode::AgentsPaused
            | ErrorCode::ResumeNotAllowed
            | ErrorCode::WorkspaceCreationClosed
            | ErrorCode::CreationTokenRequired
            | ErrorCode::CreationTokenInvalid => StatusCode::FORBIDDEN,
        }
    }
}

/// An error as it leaves the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error, utoipa::ToSchema)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// What happened and what to do next.
    pub message: String,
    /// Seconds after which the same request may succeed: sent as `Retry-After`, not in the body.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None }
    }

    /// The same error, answered with `Retry-After: secs` (at least one second).
    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// An internal failure: logs `error` (which must not contain secrets) and answers without
    /// detail.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(ErrorCode::Internal, "internal error; the server log has details")
    }
}

impl From<crate::store::LimitReached> for ApiError {
    fn from(limit: crate::store::LimitReached) -> Self {
        Self::new(ErrorCode::LimitReached, limit.to_string())
    }
}

impl From<crate::store::StoreError> for ApiError {
    /// A database out of reach, busy, full or unwritable is `503 unavailable` with a
    /// `Retry-After`, something to retry; any other store failure is `500 internal`.
    fn from(error: crate::store::StoreError) -> Self {
        use crate::store::Unavailable;
        let Some(reason) = error.unavailable() else { return Self::internal(&error) };
        let (message, retry_after) = match reason {
            Unavailable::Unreachable => {
                tracing::warn!(%error, "the database is not reachable; answering 503");
                ("the broker's database is not reachable right now", BRIEF_RETRY_AFTER_SECS)
            }
            Unavailable::Busy => {
                tracing::warn!(
                    %error,
                    "the database stayed locked by another process; answering 503"
                );
                ("the broker's database is locked by another program", BRIEF_RETRY_AFTER_SECS)
            }
            Unavailable::OutOfSpace => {
                tracing::error!(
                    %error,
                    "the database is out of space (disk full, or PostgreSQL out of resources); \
                     free space for it; answering 503 until then"
                );
                ("the broker's storage is full", OPERATOR_RETRY_AFTER_SECS)
            }
            Unavailable::CannotWrite => {
                tracing::error!(
                    %error,
                    "the database file cannot be written (read-only or an I/O error); check its \
                     disk and permissions; answering 503 until then"
                );
                ("the broker cannot write its database", OPERATOR_RETRY_AFTER_SECS)
            }
        };
        Self::new(
            ErrorCode::Unavailable,
            format!("{message}, so nothing was done; retry in {retry_after} seconds"),
        )
        .retry_after(retry_after)
    }
}

/// The `Retry-After` while the database is out of reach or locked: conditions that pass.
const BRIEF_RETRY_AFTER_SECS: u64 = 2;
/// The `Retry-After` while the database's storage is full or unwritable: conditions an
/// operator has to mend.
const OPERATOR_RETRY_AFTER_SECS: u64 = 30;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code;
        let retry_after = self.retry_after;
        let mut response = (code.status(), Json(self)).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // For the request log and metrics, which read the code rather than the body.
        response.extensions_mut().insert(code);
        response
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection as _;

    use super::*;
    use crate::store::{StoreError, Unavailable};

    /// A connection to a fresh SQLite file through the Any driver, as the broker opens its own.
    async fn sqlite(dir: &std::path::Path, mode: &str) -> sqlx::AnyConnection {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode={mode}", dir.join("db.sqlite3").display());
        sqlx::AnyConnection::connect(&url).await.expect("open SQLite")
    }

    /// The answer a device would get for `error`, and how the store classed it.
    fn answer(error: sqlx::Error) -> (Option<Unavailable>, ApiError) {
        let error = StoreError::Database(error);
        (error.unavailable(), ApiError::from(error))
    }

    fn assert_retryable(
        (reason, answer): (Option<Unavailable>, ApiError),
        expected: Unavailable,
        says: &str,
        retry_after: u64,
    ) {
        assert_eq!(reason, Some(expected), "{}", answer.message);
        assert_eq!(answer.code, ErrorCode::Unavailable, "503, to retry: {}", answer.message);
        assert_eq!(answer.retry_after, Some(retry_after), "{}", answer.message);
        assert!(
            answer.message.contains(says) && answer.message.contains("nothing was done"),
            "says what is wrong and that nothing changed: {}",
            answer.message
        );
    }

    #[tokio::test]
    async fn a_full_disk_is_a_503_to_retry_after_the_operator_makes_room() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = sqlite(dir.path(), "rwc").await;
        sqlx::query("CREATE TABLE t (v BLOB)").execute(&mut db).await.unwrap();
        // SQLite's own ceiling on the file's pages answers as a full disk does.
        sqlx::query("PRAGMA max_page_count = 8").execute(&mut db).await.unwrap();
        let mut full = None;
        for _ in 0..64 {
            let insert = sqlx::query("INSERT INTO t VALUES (zeroblob(2000))").execute(&mut db);
            if let Err(error) = insert.await {
                full = Some(error);
                break;
            }
        }
        let error = full.expect("the file fills up");
        assert_retryable(answer(error), Unavailable::OutOfSpace, "storage is full", 30);
    }

    #[tokio::test]
    async fn a_database_locked_by_another_program_is_a_503_to_retry_shortly() {
        let dir = tempfile::tempdir().unwrap();
        let mut holder = sqlite(dir.path(), "rwc").await;
        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut holder).await.unwrap();
        sqlx::query("CREATE TABLE t (v INTEGER)").execute(&mut holder).await.unwrap();
        let mut other = sqlite(dir.path(), "rw").await;
        sqlx::query("PRAGMA busy_timeout = 0").execute(&mut other).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
        let error = sqlx::query("INSERT INTO t VALUES (1)").execute(&mut other).await.unwrap_err();
        assert_retryable(answer(error), Unavailable::Busy, "locked by another program", 2);
    }

    #[tokio::test]
    async fn a_read_only_database_is_a_503_for_the_operator_to_mend() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = sqlite(dir.path(), "rwc").await;
        sqlx::query("CREATE TABLE t (v INTEGER)").execute(&mut db).await.unwrap();
        db.close().await.unwrap();
        let mut read_only = sqlite(dir.path(), "ro").await;
        let error =
            sqlx::query("INSERT INTO t VALUES (1)").execute(&mut read_only).await.unwrap_err();
        assert_retryable(answer(error), Unavailable::CannotWrite, "cannot write its database", 30);
    }

    #[tokio::test]
    async fn a_refused_statement_stays_a_500_since_retrying_will_not_mend_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = sqlite(dir.path(), "rwc").await;
        sqlx::query("CREATE TABLE t (v INTEGER PRIMARY KEY)").execute(&mut db).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)").execute(&mut db).await.unwrap();
        let error = sqlx::query("INSERT INTO t VALUES (1)").execute(&mut db).await.unwrap_err();
        let (reason, refused) = answer(error);
        assert_eq!(reason, None, "a constraint violation is not a condition that passes");
        assert_eq!((refused.code, refused.retry_after), (ErrorCode::Internal, None));
        let missing = sqlx::query("SELECT * FROM missing").execute(&mut db).await.unwrap_err();
        assert_eq!(answer(missing).0, None, "nor is a missing table");
    }
}
