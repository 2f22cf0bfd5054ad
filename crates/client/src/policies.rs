//! The workspace's Cedar policies from a member's device: save one with Cedar's problems as
//! typed values, and ask "would this call (or this inject) be allowed" by credential name.
//!
//! Listing and deleting are single broker calls ([`BrokerClient::policies`],
//! [`BrokerClient::delete_policy`]); the broker validates every policy against its schema, so
//! nothing is checked here that the broker would not check again. Schema and default policies:
//! docs/policy.md.

use latchkey_core::capability::Method;
use latchkey_core::ids::AgentId;

use crate::access::{AccessError, find_credential};
use crate::api::{
    BrokerClient, ClientError, GrantKind, InjectPolicyQuery, NewPolicy, PolicyDecision, PolicyId,
    PolicyProblem, PolicyQuery, SavedPolicy, codes,
};

/// A policy operation failed. Messages say what to do; policy text is not secret (every member
/// can read it), so Cedar's messages may quote it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The broker refused or could not be reached.
    #[error(transparent)]
    Broker(#[from] ClientError),
    /// The policy does not parse or validate against the schema; nothing was stored.
    #[error(
        "the broker refused the policy ({} problem{}): fix the source and set it again",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    )]
    Refused {
        /// Each problem, with its line and column where Cedar gives one.
        problems: Vec<PolicyProblem>,
    },
    /// The credential to check against is unknown, or the broker failed while looking it up.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The credential's base URL has no host to check against.
    #[error("credential {0:?} has no host in its base URL: pass the host to check explicitly")]
    NoHost(String),
}

/// Creates or replaces the policy `id` (admins). A source that does not parse or validate is
/// [`PolicyError::Refused`] with Cedar's problems; warnings come back with the saved policy.
pub async fn set_policy(
    client: &BrokerClient,
    id: &PolicyId,
    new: &NewPolicy<'_>,
) -> Result<SavedPolicy, PolicyError> {
    match client.put_policy(id, new).await {
        Ok(saved) => {
            tracing::info!(policy = %id, created = saved.created, "policy saved");
            Ok(saved)
        }
        Err(ClientError::Api(refused))
            if refused.is(codes::INVALID_REQUEST) && !refused.problems.is_empty() =>
        {
            Err(PolicyError::Refused { problems: refused.problems })
        }
        Err(other) => Err(other.into()),
    }
}

/// A call to check, with the credential by name.
#[derive(Debug, Clone)]
pub struct CallToCheck<'a> {
    /// The calling agent.
    pub agent: AgentId,
    /// The credential's name.
    pub credential: &'a str,
    /// The method.
    pub method: Method,
    /// The upstream path, starting with `/`.
    pub path: &'a str,
    /// The upstream host; `None`: the host of the credential's base URL.
    pub host: Option<&'a str>,
    /// What would authorise it.
    pub grant: GrantKind,
    /// Evaluate as if at this time (unix seconds); `None`: now.
    pub at: Option<u64>,
}

/// What the workspace's policies would decide for `call`, exactly as the proxy would decide it,
/// without making it.
pub async fn check_call(
    client: &BrokerClient,
    call: &CallToCheck<'_>,
) -> Result<PolicyDecision, PolicyError> {
    let credential = find_credential(client, call.credential).await?;
    let default_host = url::Url::parse(&credential.upstream_base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned));
    let host = match (call.host, &default_host) {
        (Some(host), _) => host,
        (None, Some(host)) => host.as_str(),
        (None, None) => return Err(PolicyError::NoHost(credential.name)),
    };
    let decision = client
        .check_policy(&PolicyQuery {
            agent: call.agent,
            credential: credential.id,
            method: call.method,
            host,
            path: call.path,
            grant: call.grant,
            at: call.at,
        })
        .await?;
    Ok(decision)
}

/// An inject to check, with the credential by name.
#[derive(Debug, Clone)]
pub struct InjectToCheck<'a> {
    /// The agent the command would run as.
    pub agent: AgentId,
    /// The credential's name.
    pub credential: &'a str,
    /// How long the command would keep it, in seconds.
    pub lifetime_secs: u64,
    /// The command's program name.
    pub command: &'a str,
    /// Evaluate as if at this time (unix seconds); `None`: now.
    pub at: Option<u64>,
}

/// What the workspace's policies would decide for releasing the credential into a command's
/// environment (`latchkey run --inject`), exactly as the broker would, without releasing or
/// auditing anything.
pub async fn check_inject(
    client: &BrokerClient,
    inject: &InjectToCheck<'_>,
) -> Result<PolicyDecision, PolicyError> {
    let credential = find_credential(client, inject.credential).await?;
    let decision = client
        .check_inject_policy(&InjectPolicyQuery {
            agent: inject.agent,
            credential: credential.id,
            lifetime_secs: inject.lifetime_secs,
            command: inject.command,
            at: inject.at,
        })
        .await?;
    Ok(decision)
}
