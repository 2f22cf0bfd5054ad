//! Answering the calls the broker holds for a member's approval (docs/api.md, "Approvals").
//!
//! ```text
//! list          the held calls this device may answer (pending, or all)
//! watch         the live stream of them (`BrokerClient::approval_events`)
//! approve_once  a single-use capability for exactly the held call's agent, credential, method
//!               and path, valid for two minutes, sent as the answer: the call goes on once
//! approve_for   a standing grant for that agent and credential, the method, and the exact path
//!               (or a pattern covering it), registered, then its capability sent as the answer:
//!               the call goes on and the agent receives the capability for its next calls
//! deny          the call is refused (`403 approval_denied`)
//! ```
//!
//! The capability stays a [`CapabilityText`](crate::access::CapabilityText) (zeroized, redacted
//! `Debug`) until it is sent. The first answer wins: a second one, or one after the call
//! expired, is an [`ApprovalError::Closed`] and changes nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use latchkey_core::capability::{Method, PathPattern};
use latchkey_core::ids::ApprovalId;

use crate::access::{
    AccessError, GrantTerms, MAX_GRANT_SECS, SignedIn, SingleUseTerms, grant_standing_for,
    issue_single_use_for,
};
use crate::api::{
    ApprovalAnswer, ApprovalEvents, ApprovalInfo, ApprovalStatus, ClientError, GrantInfo, codes,
};
use crate::keychain::SharedKeyStore;
use crate::profile::Profile;
use crate::workspace::{WorkspaceError, signed_in};

/// How long the single-use capability of an approve-once stays usable, in seconds: the broker
/// uses it the moment the answer arrives.
pub const APPROVE_ONCE_LIFETIME_SECS: u64 = 120;

/// Answering or listing approvals failed. Every message says what happened and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// The profile, key store or broker failed, or the capability could not be issued.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The approval was already answered, or the held call expired: nothing was changed.
    #[error(
        "approval {id} {how}; nothing was changed (see `latchkey approvals list --all`), and an agent that still needs the call retries it"
    )]
    Closed {
        /// The approval.
        id: ApprovalId,
        /// "was already approved", "was already denied", "has expired", or the broker's words.
        how: String,
    },
    /// No such approval for this device to answer (wrong id, or a credential it may not answer
    /// for: personal credentials are answered by their owner, shared ones by admins).
    #[error(
        "no approval {0} for you to answer: see `latchkey approvals list` (shared credentials are approved by admins, personal ones by their owner)"
    )]
    NotFound(ApprovalId),
    /// A call of this member's agent that an admin answers (a shared credential's): listed so
    /// the member knows why the agent waits, not for this device to answer.
    #[error(
        "approval {0} is for a shared credential, so an admin answers it: ask one to approve it in the Latchkey app or with `latchkey approvals approve`"
    )]
    AnsweredByAdmins(ApprovalId),
    /// The held call cannot be approved as asked.
    #[error("cannot approve {id} that way: {reason}")]
    Unapprovable {
        /// The approval.
        id: ApprovalId,
        /// Why.
        reason: String,
    },
}

impl From<ClientError> for ApprovalError {
    fn from(e: ClientError) -> Self {
        ApprovalError::Access(AccessError::Broker(e))
    }
}

impl From<WorkspaceError> for ApprovalError {
    fn from(e: WorkspaceError) -> Self {
        ApprovalError::Access(AccessError::Workspace(e))
    }
}

/// The held calls this device may answer, and its member's agents' calls that admins answer
/// ([`ApprovalInfo::answerable`] `false`), newest first: pending ones, or (`all`) every one the
/// broker still lists.
pub async fn list(
    profile: &Profile,
    store: &SharedKeyStore,
    all: bool,
) -> Result<Vec<ApprovalInfo>, ApprovalError> {
    let (_, _, client) = signed_in(profile, store).await?;
    Ok(client.approvals(all).await?)
}

/// The approval `id`, as the broker lists it now.
pub async fn get(
    profile: &Profile,
    store: &SharedKeyStore,
    id: ApprovalId,
) -> Result<ApprovalInfo, ApprovalError> {
    list(profile, store, true)
        .await?
        .into_iter()
        .find(|a| a.id == id)
        .ok_or(ApprovalError::NotFound(id))
}

/// The live stream of approvals this device may see (as [`list`] lists them): every pending one
/// first, then each one requested or resolved. On [`crate::api::ApprovalEvent::Lagged`], [`list`] again.
pub async fn watch(
    profile: &Profile,
    store: &SharedKeyStore,
) -> Result<ApprovalEvents, ApprovalError> {
    let (_, _, client) = signed_in(profile, store).await?;
    Ok(client.approval_events().await?)
}

/// Lets the held call go on, once: a single-use capability for exactly its agent, credential,
/// method and path, valid for [`APPROVE_ONCE_LIFETIME_SECS`]. Answers the approval as it is now.
pub async fn approve_once(
    profile: &Profile,
    store: &SharedKeyStore,
    approval: &ApprovalInfo,
) -> Result<ApprovalInfo, ApprovalError> {
    let method = still_open(approval)?;
    let path = exact_path(approval)?;
    let device = signed_in(profile, store).await?;
    let credential =
        device.2.credential(approval.credential).await.map_err(|e| gone(approval, e))?;
    let terms = SingleUseTerms {
        agent: approval.agent,
        credential: &credential.name,
        method,
        path,
        lifetime_secs: APPROVE_ONCE_LIFETIME_SECS,
    };
    let capability = issue_single_use_for(store, &device, &credential, &terms).await?;
    answer(&device, approval.id, ApprovalAnswer::Approve(&capability)).await
}

/// An approval for a window: the approval as answered and the grant registered for it.
#[derive(Debug)]
pub struct ApprovedFor {
    /// The approval, answered.
    pub approval: ApprovalInfo,
    /// The standing grant behind the capability the agent received (revoke it to end the
    /// window early).
    pub grant: GrantInfo,
}

/// Lets the held call go on and lets its agent make the same call (the same method, and the
/// exact path or any path `path_pattern` matches) with the same credential for `duration_secs`:
/// a standing grant is registered and its capability answers the approval; the broker hands it
/// to the agent in the `Latchkey-Capability` header of the call's response. If the answer is
/// refused, the grant is revoked again.
pub async fn approve_for(
    profile: &Profile,
    store: &SharedKeyStore,
    approval: &ApprovalInfo,
    duration_secs: u64,
    path_pattern: Option<&str>,
) -> Result<ApprovedFor, ApprovalError> {
    let method = still_open(approval)?;
    let pattern = match path_pattern {
        Some(pattern) => {
            let parsed = PathPattern::parse(pattern).map_err(AccessError::from)?;
            if !parsed.matches(&approval.path) {
                return Err(unapprovable(
                    approval,
                    format!(
                        "the pattern {pattern} does not match the held call's path {}",
                        approval.path
                    ),
                ));
            }
            pattern
        }
        None => exact_path(approval)?,
    };
    if duration_secs == 0 || duration_secs > MAX_GRANT_SECS {
        return Err(unapprovable(approval, "a window lasts from 1 second to 90 days".to_owned()));
    }
    let device = signed_in(profile, store).await?;
    let credential =
        device.2.credential(approval.credential).await.map_err(|e| gone(approval, e))?;
    let terms = GrantTerms {
        agent: approval.agent,
        credential: &credential.name,
        methods: &[method],
        path_patterns: &[pattern],
        duration_secs,
    };
    let issued = grant_standing_for(store, &device, &credential, &terms).await?;
    match answer(&device, approval.id, ApprovalAnswer::Approve(&issued.capability)).await {
        Ok(answered) => Ok(ApprovedFor { approval: answered, grant: issued.grant }),
        Err(error) => {
            // Nobody holds the capability: the grant would only linger.
            if let Err(revoke) = device.2.revoke_grant(issued.grant.id).await {
                tracing::warn!(grant = %issued.grant.id, error = %revoke, "could not revoke the unused grant of a refused approval");
            }
            Err(error)
        }
    }
}

/// Refuses the held call: the agent receives `403 approval_denied`.
pub async fn deny(
    profile: &Profile,
    store: &SharedKeyStore,
    id: ApprovalId,
) -> Result<ApprovalInfo, ApprovalError> {
    let device = signed_in(profile, store).await?;
    answer(&device, id, ApprovalAnswer::Deny).await
}

async fn answer(
    (_, _, client): &SignedIn,
    id: ApprovalId,
    answer: ApprovalAnswer<'_>,
) -> Result<ApprovalInfo, ApprovalError> {
    client.answer_approval(id, answer).await.map_err(|error| match error.api() {
        Some(api) if api.is(codes::CONFLICT) => {
            ApprovalError::Closed { id, how: closed_how(&api.message) }
        }
        Some(api) if api.is(codes::NOT_FOUND) => ApprovalError::NotFound(id),
        _ => error.into(),
    })
}

/// The broker's conflict message, reduced to how the approval ended.
fn closed_how(message: &str) -> String {
    for how in ["was already approved", "was already denied", "expired"] {
        if message.contains(how) {
            return if how == "expired" { "has expired".to_owned() } else { how.to_owned() };
        }
    }
    format!("can no longer be answered ({message})")
}

/// The held call's method, if it is still waiting (as listed, and by this device's clock).
fn still_open(approval: &ApprovalInfo) -> Result<Method, ApprovalError> {
    if !approval.answerable {
        return Err(ApprovalError::AnsweredByAdmins(approval.id));
    }
    let how = match approval.status {
        ApprovalStatus::Pending if approval.expires_at < unix_now() => Some("has expired"),
        ApprovalStatus::Pending => None,
        ApprovalStatus::Approved => Some("was already approved"),
        ApprovalStatus::Denied => Some("was already denied"),
        ApprovalStatus::Expired => Some("has expired"),
    };
    if let Some(how) = how {
        return Err(ApprovalError::Closed { id: approval.id, how: how.to_owned() });
    }
    Method::parse(&approval.method).ok_or_else(|| {
        unapprovable(approval, format!("the method {:?} cannot be granted", approval.method))
    })
}

/// The held call's path as a pattern that matches exactly it and nothing else.
fn exact_path(approval: &ApprovalInfo) -> Result<&str, ApprovalError> {
    let path = approval.path.as_str();
    let wildcard = path.split('/').any(|segment| segment.contains('*'));
    if wildcard || PathPattern::parse(path).is_err() {
        return Err(unapprovable(
            approval,
            format!(
                "its path {path} cannot be granted exactly; approve it for a window with a pattern that covers it"
            ),
        ));
    }
    Ok(path)
}

/// A credential that vanished since the call was held: the approval cannot be answered.
fn gone(approval: &ApprovalInfo, error: ClientError) -> ApprovalError {
    if error.api().is_some_and(|e| e.is(codes::NOT_FOUND)) {
        unapprovable(
            approval,
            format!("its credential {} no longer exists", approval.credential_name),
        )
    } else {
        error.into()
    }
}

fn unapprovable(approval: &ApprovalInfo, reason: String) -> ApprovalError {
    ApprovalError::Unapprovable { id: approval.id, reason }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use latchkey_core::ids::{AgentId, CredentialId};

    use super::*;

    fn held(path: &str, method: &str) -> ApprovalInfo {
        ApprovalInfo {
            id: ApprovalId::random(),
            status: ApprovalStatus::Pending,
            agent: AgentId::random(),
            credential: CredentialId::random(),
            credential_name: "github".into(),
            method: method.into(),
            host: "api.github.com".into(),
            path: path.into(),
            query_keys: Vec::new(),
            body_size: None,
            policy_ids: Vec::new(),
            created_at: unix_now(),
            expires_at: unix_now() + 120,
            decided_at: None,
            decided_by: None,
            answerable: true,
        }
    }

    #[test]
    fn only_a_pending_call_with_an_exact_path_is_approved_as_is() {
        let open = held("/repos/acme/widgets", "GET");
        assert_eq!(still_open(&open).ok(), Some(Method::Get), "a pending GET can be approved");
        assert_eq!(exact_path(&open).ok(), Some("/repos/acme/widgets"));

        let answered = ApprovalInfo { status: ApprovalStatus::Denied, ..open.clone() };
        let error = still_open(&answered).unwrap_err();
        assert!(
            error.to_string().contains("was already denied"),
            "an answered approval says how it ended: {error}"
        );
        let theirs = ApprovalInfo { answerable: false, ..open.clone() };
        assert!(
            matches!(still_open(&theirs), Err(ApprovalError::AnsweredByAdmins(_))),
            "a call an admin answers is refused here, before a capability is issued"
        );
        let late = ApprovalInfo { expires_at: unix_now() - 1, ..open.clone() };
        assert!(
            still_open(&late).unwrap_err().to_string().contains("has expired"),
            "a call past its deadline is not answered"
        );
        for path in ["/files/*", "/a/**", "/a//b"] {
            assert!(
                exact_path(&held(path, "GET")).is_err(),
                "{path} would grant more than the held call as a pattern"
            );
        }
        assert!(still_open(&held("/x", "TRACE")).is_err(), "a method capabilities cannot name");
    }

    #[test]
    fn the_brokers_conflict_reads_as_how_the_approval_ended() {
        assert_eq!(
            closed_how("this approval was already approved; nothing"),
            "was already approved"
        );
        assert_eq!(closed_how("this approval expired; nothing"), "has expired");
        assert!(closed_how("something new").contains("something new"));
    }
}
