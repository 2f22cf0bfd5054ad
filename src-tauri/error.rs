//! The one error shape the UI sees: `{code, message}` (plus Cedar's problems for a refused
//! policy). Codes are stable; messages are written for a person and say what to do next.
//!
//! Client-library errors are classified by walking their `source` chain, the way the CLI picks
//! its exit code, so a broker's own code (`agent_revoked`, `approval_closed`, ...) reaches the UI
//! unchanged. No message here is built from a secret: the client library's errors never carry
//! key material, and this module only reads their `Display`.

use latchkey_client::access::AccessError;
use latchkey_client::api::{ClientError, PolicyProblem, codes as broker_codes};
use latchkey_client::approvals::ApprovalError;
use latchkey_client::audit::AuditError;
use latchkey_client::connection::ConnectError;
use latchkey_client::keychain::KeychainError;
use latchkey_client::oauth::OAuthError;
use latchkey_client::policies::PolicyError;
use latchkey_client::profile::ProfileError;
use latchkey_client::recovery::RecoveryKitError;
use latchkey_client::workspace::WorkspaceError;
use serde::Serialize;

/// Stable error codes of the desktop shell's own refusals (the broker's codes pass through).
pub mod codes {
    /// The request from the UI is not well formed (an id, a URL, a duration).
    pub const INVALID_INPUT: &str = "invalid_input";
    /// The member id typed to join as another device of an existing member is not one.
    pub const INVALID_MEMBER_ID: &str = "invalid_member_id";
    /// The creation token typed for a team server cannot be one (empty after trimming, spaces,
    /// characters outside visible ASCII); the server was not asked.
    pub const INVALID_CREATION_TOKEN: &str = "invalid_creation_token";
    /// This computer has no workspace yet.
    pub const NOT_SET_UP: &str = "not_set_up";
    /// This computer already belongs to a workspace.
    pub const ALREADY_SET_UP: &str = "already_set_up";
    /// The broker cannot be reached.
    pub const BROKER_UNREACHABLE: &str = "broker_unreachable";
    /// The broker's TLS certificate was refused, or the TLS handshake with it failed.
    pub const BROKER_TLS_REFUSED: &str = "broker_tls_refused";
    /// Certificate authorities given for the broker (pasted at onboarding, or the file
    /// `LATCHKEY_BROKER_CA` names) cannot be used.
    pub const BROKER_CA_UNUSABLE: &str = "broker_ca_unusable";
    /// The embedded broker could not start.
    pub const BROKER_START_FAILED: &str = "broker_start_failed";
    /// The OS keychain is locked.
    pub const KEYCHAIN_LOCKED: &str = "keychain_locked";
    /// The OS keychain is absent or failed.
    pub const KEYCHAIN_UNAVAILABLE: &str = "keychain_unavailable";
    /// A key this device should hold is missing or corrupt.
    pub const KEY_MISSING: &str = "key_missing";
    /// No credential, agent, approval or member has that name or id.
    pub const NOT_FOUND: &str = "not_found";
    /// The provider refused the API key typed (`401` when asked whose account it is): nothing
    /// was stored.
    pub const INVALID_KEY: &str = "invalid_key";
    /// The device joined but no admin has admitted it yet.
    pub const NOT_ADMITTED_YET: &str = "not_admitted_yet";
    /// A fingerprint the person typed is not the other device's: nothing was shared or accepted.
    pub const FINGERPRINT_MISMATCH: &str = "fingerprint_mismatch";
    /// A recovery kit was refused: not a kit, a wrong passphrase or an altered file, another
    /// workspace's or member's, or in conflict with a key this device holds. Nothing was written.
    pub const RECOVERY_KIT_REFUSED: &str = "recovery_kit_refused";
    /// A Cedar policy did not validate; `problems` says where.
    pub const POLICY_INVALID: &str = "policy_invalid";
    /// The approval was already answered or expired.
    pub const APPROVAL_CLOSED: &str = "approval_closed";
    /// A call of this member's agent that an admin answers (a shared credential's).
    pub const ANSWERED_BY_ADMINS: &str = "answered_by_admins";
    /// The sign-in at the provider did not finish in time.
    pub const OAUTH_TIMEOUT: &str = "oauth_timeout";
    /// The sign-in at the provider failed or was refused.
    pub const OAUTH_FAILED: &str = "oauth_failed";
    /// A sign-in is already under way.
    pub const CONNECT_IN_PROGRESS: &str = "connect_in_progress";
    /// The person cancelled the sign-in.
    pub const CONNECT_CANCELLED: &str = "connect_cancelled";
    /// The provider did not confirm the revocation; nothing was deleted.
    pub const REVOCATION_FAILED: &str = "revocation_failed";
    /// Anything else: the message says what happened.
    pub const FAILED: &str = "failed";
}

/// A refused command, as the UI receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct CommandError {
    /// Stable, machine-readable code.
    pub code: String,
    /// What happened and what to do next, for a person.
    pub message: String,
    /// For `policy_invalid`: where Cedar found problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

/// One problem in a Cedar policy, positioned for the editor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// What is wrong.
    pub message: String,
    /// 1-based line, when Cedar gave a position.
    pub line: Option<u32>,
    /// 1-based column, when Cedar gave a position.
    pub column: Option<u32>,
    /// A validator warning: the policy was saved and is in force; the person may still fix it.
    pub warning: bool,
}

impl CommandError {
    /// An error with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into(), problems: Vec::new() }
    }

    /// The UI sent something that is not well formed.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_INPUT, message)
    }

    /// Classifies a client-library (or any) error by its source chain.
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let code = classify(error);
        let problems = chain(error)
            .find_map(|e| match e.downcast_ref::<PolicyError>() {
                Some(PolicyError::Refused { problems }) => Some(problems.as_slice()),
                _ => None,
            })
            .map(|problems| problems.iter().map(Problem::from).collect())
            .unwrap_or_default();
        Self { code, message: latchkey_client::error_text(chain(error)), problems }
    }
}

impl From<&PolicyProblem> for Problem {
    fn from(problem: &PolicyProblem) -> Self {
        let message = match &problem.help {
            Some(help) => format!("{} ({help})", problem.message),
            None => problem.message.clone(),
        };
        Self {
            message,
            line: problem.line,
            column: problem.column,
            warning: problem.kind == "warning",
        }
    }
}

macro_rules! from_client_errors {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for CommandError {
            fn from(error: $error) -> Self {
                Self::from_error(&error)
            }
        }
    )*};
}

from_client_errors!(
    AccessError,
    ApprovalError,
    AuditError,
    ClientError,
    ConnectError,
    KeychainError,
    PolicyError,
    ProfileError,
    RecoveryKitError,
    WorkspaceError,
    latchkey_client::catalog::CatalogError,
    latchkey_client::api::BrokerUrlError,
);

fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// The error a transparent wrapper stands for. `#[error(transparent)]` forwards `source()` to
/// the inner error's own source, so the inner error itself never shows up in the chain.
fn peel<'a>(error: &'a (dyn std::error::Error + 'static)) -> &'a (dyn std::error::Error + 'static) {
    if let Some(e) = error.downcast_ref::<AccessError>() {
        match e {
            AccessError::Workspace(inner) => return peel(inner),
            AccessError::Broker(inner) => return inner,
            _ => {}
        }
    } else if let Some(e) = error.downcast_ref::<WorkspaceError>() {
        match e {
            WorkspaceError::Keychain(inner) => return inner,
            WorkspaceError::Broker(inner) => return inner,
            WorkspaceError::Profile(inner) => return inner,
            _ => {}
        }
    } else if let Some(ApprovalError::Access(inner)) = error.downcast_ref::<ApprovalError>() {
        return peel(inner);
    } else if let Some(e) = error.downcast_ref::<PolicyError>() {
        match e {
            PolicyError::Access(inner) => return peel(inner),
            PolicyError::Broker(inner) => return inner,
            _ => {}
        }
    } else if let Some(ConnectError::Access(inner)) = error.downcast_ref::<ConnectError>() {
        return peel(inner);
    } else if let Some(e) = error.downcast_ref::<AuditError>() {
        match e {
            AuditError::Broker(inner) => return inner,
            AuditError::Profile(inner) => return inner,
            _ => {}
        }
    } else if let Some(RecoveryKitError::Workspace(inner)) =
        error.downcast_ref::<RecoveryKitError>()
    {
        return peel(inner);
    }
    error
}

fn classify(error: &(dyn std::error::Error + 'static)) -> String {
    for cause in chain(error) {
        let cause = peel(cause);
        let code = if let Some(e) = cause.downcast_ref::<ClientError>() {
            Some(client(e))
        } else if let Some(e) = cause.downcast_ref::<KeychainError>() {
            Some(keychain(e))
        } else if let Some(e) = cause.downcast_ref::<ProfileError>() {
            profile(e)
        } else if let Some(e) = cause.downcast_ref::<AccessError>() {
            match e {
                AccessError::UnknownCredential(_) => Some(codes::NOT_FOUND.to_owned()),
                AccessError::KeyRefused { .. } => Some(codes::INVALID_KEY.to_owned()),
                _ => None,
            }
        } else if let Some(e) = cause.downcast_ref::<RecoveryKitError>() {
            (!matches!(e, RecoveryKitError::Workspace(_) | RecoveryKitError::NothingToExport))
                .then(|| codes::RECOVERY_KIT_REFUSED.to_owned())
        } else if let Some(e) = cause.downcast_ref::<WorkspaceError>() {
            match e {
                WorkspaceError::FingerprintMismatch { .. }
                | WorkspaceError::KeysFromUnconfirmedSender { .. } => {
                    Some(codes::FINGERPRINT_MISMATCH.to_owned())
                }
                // The broker's own codes, which the onboarding explains.
                WorkspaceError::CreationClosed => {
                    Some(broker_codes::WORKSPACE_CREATION_CLOSED.to_owned())
                }
                WorkspaceError::CreationTokenRequired => {
                    Some(broker_codes::CREATION_TOKEN_REQUIRED.to_owned())
                }
                WorkspaceError::CreationTokenInvalid => {
                    Some(broker_codes::CREATION_TOKEN_INVALID.to_owned())
                }
                _ => None,
            }
        } else if let Some(e) = cause.downcast_ref::<ApprovalError>() {
            match e {
                ApprovalError::Closed { .. } => Some(codes::APPROVAL_CLOSED.to_owned()),
                ApprovalError::NotFound(_) => Some(codes::NOT_FOUND.to_owned()),
                ApprovalError::AnsweredByAdmins(_) => Some(codes::ANSWERED_BY_ADMINS.to_owned()),
                _ => None,
            }
        } else if let Some(e) = cause.downcast_ref::<PolicyError>() {
            matches!(e, PolicyError::Refused { .. }).then(|| codes::POLICY_INVALID.to_owned())
        } else if let Some(e) = cause.downcast_ref::<ConnectError>() {
            match e {
                ConnectError::RevocationFailed { .. } => Some(codes::REVOCATION_FAILED.to_owned()),
                ConnectError::OAuth(OAuthError::Timeout(_)) => {
                    Some(codes::OAUTH_TIMEOUT.to_owned())
                }
                ConnectError::OAuth(_) => Some(codes::OAUTH_FAILED.to_owned()),
                _ => None,
            }
        } else {
            None
        };
        if let Some(code) = code {
            return code;
        }
    }
    codes::FAILED.to_owned()
}

fn client(error: &ClientError) -> String {
    match error {
        ClientError::Api(api) => api.code.clone(),
        ClientError::RateLimited { .. } => broker_codes::RATE_LIMITED.to_owned(),
        ClientError::Transport { .. } => codes::BROKER_UNREACHABLE.to_owned(),
        ClientError::Tls { .. } => codes::BROKER_TLS_REFUSED.to_owned(),
        ClientError::BrokerCa(_) => codes::BROKER_CA_UNUSABLE.to_owned(),
        _ => codes::FAILED.to_owned(),
    }
}

fn keychain(error: &KeychainError) -> String {
    match error {
        KeychainError::Locked => codes::KEYCHAIN_LOCKED,
        KeychainError::Missing { .. } | KeychainError::Corrupt { .. } => codes::KEY_MISSING,
        _ => codes::KEYCHAIN_UNAVAILABLE,
    }
    .to_owned()
}

fn profile(error: &ProfileError) -> Option<String> {
    match error {
        ProfileError::NotSetUp { .. } => Some(codes::NOT_SET_UP.to_owned()),
        ProfileError::AlreadySetUp { .. } => Some(codes::ALREADY_SET_UP.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keychain_error_inside_a_workspace_error_keeps_its_specific_code() {
        let error = WorkspaceError::Keychain(KeychainError::Locked);
        let shown = CommandError::from(error);
        assert_eq!(shown.code, codes::KEYCHAIN_LOCKED, "the UI offers 'unlock' only on this code");
        assert_eq!(
            shown.message,
            KeychainError::Locked.to_string(),
            "the message must be the key store's own, which says how to fix it on this system"
        );
        assert!(shown.message.contains(" and try again"), "{}", shown.message);
    }

    #[test]
    fn keys_from_a_device_not_confirmed_are_a_fingerprint_mismatch_not_a_wait() {
        let fingerprint = latchkey_core::fingerprint::Fingerprint::of(&[7; 32], &[8; 32]);
        let shown = CommandError::from(WorkspaceError::KeysFromUnconfirmedSender {
            fingerprint,
            waiting: 1,
        });
        assert_eq!(
            shown.code,
            codes::FINGERPRINT_MISMATCH,
            "the onboarding tells a mistyped fingerprint apart from an admin who has not acted yet"
        );
        assert!(shown.message.contains("Compare the fingerprint"), "{}", shown.message);
    }

    #[test]
    fn a_refused_workspace_creation_keeps_the_brokers_code_and_the_message_that_names_the_fix() {
        for (error, code) in [
            (WorkspaceError::CreationClosed, "workspace_creation_closed"),
            (WorkspaceError::CreationTokenRequired, "creation_token_required"),
            (WorkspaceError::CreationTokenInvalid, "creation_token_invalid"),
        ] {
            let expected = error.to_string();
            let shown = CommandError::from(error);
            assert_eq!(shown.code, code, "the onboarding branches on the broker's code");
            assert_eq!(shown.message, expected, "the client library's message says what to do");
        }
    }

    #[test]
    fn a_creation_refused_at_a_limit_keeps_the_brokers_code_and_its_message() {
        let refusal = latchkey_client::api::ApiError {
            status: 409,
            code: broker_codes::LIMIT_REACHED.to_owned(),
            message: "a workspace has at most 1000 active agents; revoke agents no longer in use \
                      first (latchkey agent revoke; an admin sees every member's agents)"
                .to_owned(),
            problems: Vec::new(),
        };
        let shown = CommandError::from(AccessError::Broker(ClientError::Api(refusal)));
        assert_eq!(shown.code, "limit_reached", "the UI may branch on the broker's own code");
        assert!(
            shown.message.contains("at most 1000 active agents")
                && shown.message.contains("latchkey agent revoke"),
            "the ErrorNote shows the broker's message, which names the limit and the way out: {}",
            shown.message
        );
    }

    #[test]
    fn a_key_its_provider_refused_has_its_own_code_and_names_the_provider() {
        let shown = CommandError::from(AccessError::KeyRefused { provider: "Stripe".into() });
        assert_eq!(
            shown.code,
            codes::INVALID_KEY,
            "the form can point at the key field: {shown:?}"
        );
        assert!(shown.message.starts_with("Stripe refused this key"), "{}", shown.message);
    }

    #[test]
    fn a_refused_recovery_kit_has_its_own_code_and_keeps_its_reason() {
        let shown = CommandError::from(RecoveryKitError::OtherMember);
        assert_eq!(shown.code, codes::RECOVERY_KIT_REFUSED, "not a generic failure: {shown:?}");
        assert!(shown.message.contains("another member's key"), "{}", shown.message);
        let locked = CommandError::from(RecoveryKitError::Workspace(WorkspaceError::Keychain(
            KeychainError::Locked,
        )));
        assert_eq!(locked.code, codes::KEYCHAIN_LOCKED, "a locked keychain is not the kit's fault");
    }

    #[test]
    fn the_message_does_not_repeat_a_transparent_wrapper() {
        let error = AccessError::Workspace(WorkspaceError::Keychain(KeychainError::NoKeychain));
        let shown = CommandError::from(error);
        assert_eq!(shown.code, codes::KEYCHAIN_UNAVAILABLE);
        assert_eq!(
            shown.message.matches("no OS keychain is available").count(),
            1,
            "each cause appears once: {}",
            shown.message
        );
    }

    #[test]
    fn an_unusable_broker_ca_file_has_its_own_code_and_names_the_file() {
        let unusable = latchkey_client::api::BrokerCaError {
            path: "team-ca.txt".into(),
            problem: latchkey_core::tls::TrustAnchorsError::Empty,
        };
        let shown = CommandError::from(WorkspaceError::Broker(ClientError::from(unusable)));
        assert_eq!(shown.code, codes::BROKER_CA_UNUSABLE, "not a generic failure: {shown:?}");
        assert!(
            shown.message.contains("LATCHKEY_BROKER_CA")
                && shown.message.contains("team-ca.txt")
                && shown.message.contains("no certificate found"),
            "the message says which setting, which file and what is wrong: {}",
            shown.message
        );
    }

    #[test]
    fn a_validator_warning_is_marked_as_one() {
        let problem = |kind: &str| PolicyProblem {
            kind: kind.into(),
            message: "policy is impossible".into(),
            help: None,
            line: Some(1),
            column: Some(1),
        };
        assert!(Problem::from(&problem("warning")).warning, "the editor labels it a warning");
        assert!(!Problem::from(&problem("syntax")).warning, "a syntax error is not a warning");
        let json = serde_json::to_value(Problem::from(&problem("warning"))).expect("serialises");
        assert_eq!(json["warning"], true, "the UI reads `warning`: {json}");
    }

    #[test]
    fn serialises_to_code_and_message_only_without_problems() {
        let json = serde_json::to_value(CommandError::new(codes::NOT_FOUND, "no agent x"))
            .expect("plain strings serialise");
        assert_eq!(json, serde_json::json!({"code": "not_found", "message": "no agent x"}));
    }
}
