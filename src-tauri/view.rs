//! What the UI is shown: metadata only, camelCase, built from the client library's types.
//!
//! Nothing here holds a key or a credential value. The two values the UI may see that are not
//! plain metadata are typed apart: [`NewAgent::token`] (an agent's placeholder token, shown once)
//! and [`Invite::code`] (a one-time invite code, read out to the person joining).

use std::collections::HashMap;

use latchkey_client::api::{
    AgentInfo, ApprovalInfo, ApprovalStatus, AuditEntry, CredentialInfo, CredentialStatus,
    GrantInfo, InviteFor, Member as BrokerMember, PendingInvite as BrokerPendingInvite, Role,
};
use latchkey_client::audit::ChainCheck;
use latchkey_client::catalog::{Provider as CatalogProvider, ProviderKind};
use latchkey_core::ids::{DeviceId, MemberId, Owner};
use serde::Serialize;
use serde_json::Value;

/// How long before its expiry an OAuth credential is shown as "expiring" (the device refreshes
/// it within 5 minutes of expiry; a day's warning lets a person act on one that cannot refresh).
pub const EXPIRING_WITHIN_SECS: u64 = 24 * 60 * 60;

/// The app's state, for the header, onboarding and the tray.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// `default` or a named profile.
    pub profile: String,
    /// Whether this computer belongs to a workspace.
    pub set_up: bool,
    /// The workspace, once set up.
    pub workspace: Option<WorkspaceView>,
    /// The broker this computer talks to.
    pub broker: BrokerView,
    /// Whether every agent call is refused until resumed.
    pub paused: bool,
    /// Calls waiting for this member's answer.
    pub pending_approvals: usize,
    /// Whether the keychain holding this device's keys is locked (the app's Lock, or the
    /// desktop session's): nothing that needs a key works until it is unlocked.
    pub locked: bool,
}

/// This computer's place in its workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceView {
    /// The workspace id.
    pub id: String,
    /// The name given when the workspace was created, as the broker says it; `None` while the
    /// broker cannot be asked.
    pub name: Option<String>,
    /// The broker URL.
    pub broker_url: String,
    /// Whether the broker is the one embedded in this app.
    pub local: bool,
    /// This member.
    pub member_id: String,
    /// This member's role.
    pub role: Role,
    /// This device.
    pub device_id: String,
    /// This device's fingerprint, compared when admitting devices.
    pub fingerprint: String,
    /// The SHA-256 fingerprint of each certificate authority trusted for the broker besides
    /// the system's (kept in the profile); empty: the system's alone.
    pub broker_ca: Vec<String>,
    /// Those authorities' certificates as PEM (public), to hand to a device that joins.
    pub broker_ca_pem: Option<String>,
}

/// The broker's reachability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerView {
    /// Its URL, once known.
    pub url: Option<String>,
    /// Whether it runs inside this app.
    pub local: bool,
    /// Whether it answered.
    pub reachable: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
}

/// A provider of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    pub id: String,
    pub name: String,
    /// `oauth2` or `api_key`.
    pub kind: &'static str,
    /// A generic provider: the person gives its endpoints.
    pub custom: bool,
    /// Its API lives on each account's host: the person gives the account's base URL.
    pub account_specific: bool,
    /// Its OAuth endpoints live on each account's host: the person gives them (Zendesk).
    pub needs_endpoints: bool,
    pub api_base_url: String,
    pub allowed_hosts: Vec<String>,
    pub default_scopes: Vec<String>,
    pub needs_client_secret: bool,
    pub docs: Option<String>,
}

impl From<&CatalogProvider> for Provider {
    fn from(p: &CatalogProvider) -> Self {
        let oauth = p.oauth();
        Self {
            id: p.id.as_str().to_owned(),
            name: p.name.clone(),
            kind: kind_name(&p.kind),
            custom: p.custom,
            account_specific: p.account_specific,
            needs_endpoints: latchkey_client::connection::endpoints_per_account(p),
            api_base_url: p
                .api_base_url
                .as_ref()
                .map(|u| u.as_str().to_owned())
                .unwrap_or_default(),
            allowed_hosts: p.allowed_hosts.clone(),
            default_scopes: oauth.map(|o| o.default_scopes.clone()).unwrap_or_default(),
            needs_client_secret: oauth
                .is_some_and(|o| o.client_auth != latchkey_client::catalog::ClientAuth::None),
            docs: p.docs_url.as_ref().map(|u| u.as_str().to_owned()),
        }
    }
}

fn kind_name(kind: &ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OAuth(_) => "oauth2",
        ProviderKind::ApiKey(_) => "api_key",
    }
}

/// A connected integration (a credential's metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Integration {
    pub id: String,
    pub name: String,
    pub provider: String,
    pub provider_name: String,
    /// `oauth2` or `api_key`.
    pub kind: &'static str,
    pub upstream_base_url: String,
    pub allowed_hosts: Vec<String>,
    /// `shared` or `personal`.
    pub owner: &'static str,
    /// `active`, `expiring`, `reconnect_needed` or `disabled`.
    pub status: &'static str,
    pub scopes: Vec<String>,
    /// Whose account at the provider it acts as, when known.
    pub account: Option<String>,
    pub expires_at: Option<u64>,
    pub last_used_at: Option<u64>,
    pub key_version: u32,
}

impl Integration {
    /// `credential` as shown at `now`.
    pub fn new(credential: &CredentialInfo, now: u64) -> Self {
        let catalog = latchkey_client::catalog::Catalog::builtin().get(&credential.provider);
        let status = match credential.status {
            CredentialStatus::Disabled => "disabled",
            CredentialStatus::ReconnectNeeded => "reconnect_needed",
            CredentialStatus::Active => match credential.expires_hint {
                Some(at) if at <= now.saturating_add(EXPIRING_WITHIN_SECS) => "expiring",
                _ => "active",
            },
        };
        Self {
            id: credential.id.to_string(),
            name: credential.name.clone(),
            provider: credential.provider.clone(),
            provider_name: catalog.map_or_else(|| credential.provider.clone(), |p| p.name.clone()),
            kind: catalog.map_or("api_key", |p| kind_name(&p.kind)),
            upstream_base_url: credential.upstream_base_url.clone(),
            allowed_hosts: credential.allowed_hosts.clone(),
            owner: match credential.owner {
                Owner::Shared => "shared",
                Owner::Member(_) => "personal",
            },
            status,
            scopes: credential.scopes.clone(),
            account: credential.account.clone(),
            expires_at: credential.expires_hint,
            last_used_at: credential.last_used_at,
            key_version: credential.key_version.get(),
        }
    }
}

/// A standing grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub id: String,
    pub agent: String,
    pub credential: String,
    pub credential_name: String,
    pub methods: Vec<String>,
    pub path_patterns: Vec<String>,
    pub expires_at: u64,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
}

/// What importing a recovery kit wrote: the key versions new to this device, and how many the
/// kit held that the device already had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KitImported {
    pub workspace_keys: Vec<u32>,
    pub member_keys: Vec<u32>,
    pub already_present: usize,
}

/// A grant just made, with the standing capability the agent needs for it: shown this once,
/// for the person to hand to the agent (the broker keeps only the grant's row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedGrant {
    pub grant: Grant,
    /// The capability text, sent by the agent in a `Latchkey-Capability` header or after its
    /// token and a `.`. Not a credential (the record key in it is sealed to the broker's key),
    /// but a bearer authorisation together with the agent's token: never logged.
    pub capability: ShownOnce,
}

/// A value shown to the person once (an agent's token and the snippets holding it, an invite
/// code, a grant's capability): serialized as its text for the UI, `<redacted>` in `Debug`, so
/// no log or panic message carries it.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ShownOnce(pub String);

impl std::fmt::Debug for ShownOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for ShownOnce {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for ShownOnce {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl Grant {
    /// `grant`, naming its credential from `names` (id to name).
    pub fn new(grant: &GrantInfo, names: &HashMap<String, String>) -> Self {
        let credential = grant.credential.to_string();
        Self {
            id: grant.id.to_string(),
            agent: grant.agent.to_string(),
            credential_name: names.get(&credential).cloned().unwrap_or_else(|| credential.clone()),
            credential,
            methods: grant.methods.clone(),
            path_patterns: grant.path_patterns.clone(),
            expires_at: grant.expires_at,
            created_at: grant.created_at,
            revoked_at: grant.revoked_at,
        }
    }
}

/// An agent with its grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
    pub last_used_at: Option<u64>,
    pub grants: Vec<Grant>,
}

impl Agent {
    /// `agent` with `grants` (already its own).
    pub fn new(agent: &AgentInfo, grants: Vec<Grant>) -> Self {
        Self {
            id: agent.id.to_string(),
            name: agent.name.clone(),
            created_at: agent.created_at,
            revoked_at: agent.revoked_at,
            last_used_at: agent.last_used_at,
            grants,
        }
    }
}

/// A ready-to-paste way to point an SDK at the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snippet {
    pub label: String,
    pub language: &'static str,
    /// Holds the agent's token.
    pub text: ShownOnce,
}

/// A new agent (or a new token for one): the token is shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewAgent {
    pub agent: Agent,
    /// The agent's placeholder token: not a credential, but shown only this once.
    pub token: ShownOnce,
    /// Where agents send their calls.
    pub proxy_url: String,
    pub snippets: Vec<Snippet>,
}

/// Snippets that point the OpenAI, Anthropic and GitHub SDKs at the broker with `token`;
/// `names` are the workspace's credentials for those three providers (agents call
/// `/p/{name}/...`).
pub fn snippets(broker_url: &str, token: &str, names: [String; 3]) -> Vec<Snippet> {
    let base = broker_url.trim_end_matches('/');
    let [openai, anthropic, github] = names;
    let env = |label: &str, lines: &[(&str, String)]| Snippet {
        label: label.to_owned(),
        language: "sh",
        text: lines
            .iter()
            .map(|(k, v)| format!("export {k}=\"{v}\""))
            .collect::<Vec<_>>()
            .join("\n")
            .into(),
    };
    vec![
        env(
            "OpenAI",
            &[
                ("OPENAI_BASE_URL", format!("{base}/p/{openai}/v1")),
                ("OPENAI_API_KEY", token.to_owned()),
            ],
        ),
        env(
            "Anthropic",
            &[
                ("ANTHROPIC_BASE_URL", format!("{base}/p/{anthropic}")),
                ("ANTHROPIC_API_KEY", token.to_owned()),
            ],
        ),
        env(
            "GitHub",
            &[("GITHUB_API_URL", format!("{base}/p/{github}")), ("GITHUB_TOKEN", token.to_owned())],
        ),
    ]
}

/// A call held for approval (or its history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub id: String,
    /// `pending`, `approved`, `denied` or `expired`.
    pub status: &'static str,
    pub agent: String,
    pub agent_name: String,
    pub credential: String,
    pub credential_name: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub query_keys: Vec<String>,
    pub body_size: Option<u64>,
    pub policy_ids: Vec<String>,
    pub created_at: u64,
    pub expires_at: u64,
    pub answered_at: Option<u64>,
    pub answered_by: Option<String>,
    /// Whether this device may answer it; `false` for a call of this member's agent that an
    /// admin answers (a shared credential's), shown so she knows why the agent waits.
    pub answerable: bool,
}

impl Approval {
    /// `approval`, naming its agent from `agents` (id to name).
    pub fn new(approval: &ApprovalInfo, agents: &HashMap<String, String>) -> Self {
        let agent = approval.agent.to_string();
        Self {
            id: approval.id.to_string(),
            status: match approval.status {
                ApprovalStatus::Pending => "pending",
                ApprovalStatus::Approved => "approved",
                ApprovalStatus::Denied => "denied",
                _ => "expired",
            },
            agent_name: agents.get(&agent).cloned().unwrap_or_else(|| agent.clone()),
            agent,
            credential: approval.credential.to_string(),
            credential_name: approval.credential_name.clone(),
            method: approval.method.clone(),
            host: approval.host.clone(),
            path: approval.path.clone(),
            query_keys: approval.query_keys.clone(),
            body_size: approval.body_size,
            policy_ids: approval.policy_ids.clone(),
            created_at: approval.created_at,
            expires_at: approval.expires_at,
            answered_at: approval.decided_at,
            answered_by: approval.decided_by.map(|d| d.to_string()),
            answerable: approval.answerable,
        }
    }
}

/// One audit record, flattened for the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRow {
    pub seq: u64,
    /// Unix seconds.
    pub at: u64,
    pub kind: String,
    pub agent: Option<String>,
    pub agent_name: Option<String>,
    pub credential_name: Option<String>,
    pub method: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub policy_ids: Vec<String>,
    pub upstream_status: Option<u16>,
    /// What a device's change was about (a member, device or grant id, an invite's role, a
    /// credential's new status), when the record names it.
    pub subject: Option<String>,
}

impl AuditRow {
    /// `entry`, naming its agent from `agents`.
    pub fn new(entry: &AuditEntry, agents: &HashMap<String, String>) -> Self {
        let r = &entry.record;
        let text = |key: &str| r.get(key).and_then(Value::as_str).map(str::to_owned);
        let agent = text("agent");
        Self {
            seq: entry.seq,
            at: r.get("at_ms").and_then(Value::as_u64).unwrap_or_default() / 1000,
            kind: text("kind").unwrap_or_default(),
            agent_name: agent.as_ref().and_then(|a| agents.get(a).cloned()),
            agent,
            credential_name: text("credential_name"),
            method: text("method"),
            host: text("host"),
            path: text("path"),
            decision: text("decision"),
            reason: text("reason_code"),
            policy_ids: r
                .get("policy_ids")
                .and_then(Value::as_array)
                .map(|ids| ids.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            upstream_status: r
                .get("upstream_status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok()),
            subject: text("subject"),
        }
    }
}

/// The chain verification's result: this device's own check of the whole log (against the
/// head it kept from its last check) and the broker's verdict, which must agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditVerdict {
    pub ok: bool,
    pub records: u64,
    pub head: Option<String>,
    pub first_broken_seq: Option<u64>,
    pub reason: Option<String>,
    /// The record this device had verified before and found unchanged (`ok`), or whose loss or
    /// change broke the check; `None` at a device's first check.
    pub anchored_seq: Option<u64>,
    /// Records this check read and hashed: every one, or those from the anchored record on.
    pub checked: u64,
    /// The first of them; `None` when none was read or the check broke.
    pub checked_from: Option<u64>,
}

impl From<&ChainCheck> for AuditVerdict {
    fn from(check: &ChainCheck) -> Self {
        let anchored_seq = check.anchor.as_ref().map(|a| a.seq);
        match &check.local {
            Ok(chain) if check.verified() => Self {
                ok: true,
                records: chain.records,
                head: Some(chain.head.clone()),
                first_broken_seq: None,
                reason: None,
                anchored_seq,
                checked: chain.checked,
                checked_from: chain.checked_from,
            },
            Err(broken) => Self {
                ok: false,
                records: 0,
                head: None,
                first_broken_seq: Some(broken.seq),
                reason: Some(broken.reason.to_owned()),
                anchored_seq,
                checked: 0,
                checked_from: None,
            },
            // This device's check passed; the broker's did not, or named another head.
            Ok(_) => Self {
                ok: false,
                records: 0,
                head: None,
                first_broken_seq: check.broker.first_broken_seq,
                reason: Some(check.broker.reason.clone().unwrap_or_else(|| {
                    "the broker's verdict and this device's check disagree: treat the log as altered"
                        .to_owned()
                })),
                anchored_seq,
                checked: 0,
                checked_from: None,
            },
        }
    }
}

/// A device of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub id: String,
    pub name: String,
    pub created_at: u64,
    pub fingerprint: String,
    pub this_device: bool,
    /// Whether a person on this device confirmed its fingerprint (admitted it, or received keys
    /// from it): the app offers "Admit" only for devices not confirmed yet.
    pub confirmed: bool,
}

/// A member and their devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: u64,
    pub devices: Vec<Device>,
    pub you: bool,
}

impl Member {
    /// `member` as seen from `me` on `this_device`, which confirmed the devices in `confirmed`.
    pub fn new(
        member: &BrokerMember,
        me: MemberId,
        this_device: DeviceId,
        confirmed: &[DeviceId],
    ) -> Self {
        Self {
            id: member.id.to_string(),
            name: member.name.clone(),
            role: member.role,
            created_at: member.created_at,
            devices: member
                .devices
                .iter()
                .map(|d| Device {
                    id: d.id.to_string(),
                    name: d.name.clone(),
                    created_at: d.created_at,
                    fingerprint: d.broker_fingerprint.to_string(),
                    this_device: d.id == this_device,
                    confirmed: d.id == this_device || confirmed.contains(&d.id),
                })
                .collect(),
            you: member.id == me,
        }
    }
}

/// A one-time invite code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invite {
    /// The invite's id, to revoke it by.
    pub id: String,
    /// Shown once, read out to the person joining.
    pub code: ShownOnce,
    pub role: Role,
    pub expires_at: u64,
}

/// A one-time invite code for another device of the signed-in member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInvite {
    /// The invite's id, to revoke it by.
    pub id: String,
    /// Shown once, typed on the new device.
    pub code: ShownOnce,
    /// The member the new device joins as: typed on the new device with the code.
    pub member_id: String,
    pub expires_at: u64,
}

/// A pending invite: unused, unexpired and still usable. Never its code, which was shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingInvite {
    pub id: String,
    /// For a new member: their role.
    pub role: Option<Role>,
    /// For another device of an existing member: that member's name (their id if not listed).
    pub device_of: Option<String>,
    /// The name of the member whose device made it (their id if not listed).
    pub made_by: String,
    /// Whether the signed-in member made it.
    pub yours: bool,
    pub created_at: u64,
    pub expires_at: u64,
}

impl PendingInvite {
    /// `invite` as seen by member `me`, with names from `members`.
    pub fn new(invite: &BrokerPendingInvite, members: &[BrokerMember], me: MemberId) -> Self {
        let name = |id: MemberId| {
            members.iter().find(|m| m.id == id).map_or_else(|| id.to_string(), |m| m.name.clone())
        };
        let (role, device_of) = match invite.invite_for {
            InviteFor::NewMember(role) => (Some(role), None),
            InviteFor::Device(member) => (None, Some(name(member))),
        };
        Self {
            id: invite.id.to_string(),
            role,
            device_of,
            made_by: name(invite.created_by_member),
            yours: invite.created_by_member == me,
            created_at: invite.created_at,
            expires_at: invite.expires_at,
        }
    }
}

/// A step of a key rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationProgress {
    /// `sealing`, `verifying`, `swapping` or `done`.
    pub phase: &'static str,
    pub done: usize,
    pub total: usize,
}

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationResult {
    pub credentials: usize,
    /// Devices not sent the new key: this device never confirmed their fingerprints.
    pub not_sent: usize,
    pub workspace_key_version: u32,
    pub member_key_version: u32,
}

/// A Cedar policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub id: String,
    pub description: String,
    pub source: String,
    pub enabled: bool,
    pub updated_at: u64,
    /// Sent back with an edit or a deletion, so a change someone made since is not overwritten.
    pub revision: u64,
    pub problems: Vec<crate::error::Problem>,
}

impl From<&latchkey_client::api::Policy> for Policy {
    fn from(p: &latchkey_client::api::Policy) -> Self {
        Self {
            id: p.id.to_string(),
            description: p.description.clone(),
            source: p.source.clone(),
            enabled: p.enabled,
            updated_at: p.updated_at,
            revision: p.revision,
            problems: p.problems.iter().map(crate::error::Problem::from).collect(),
        }
    }
}

/// What the policies would do with a hypothetical call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It would go through.
    Allow,
    /// It would wait until someone approves it.
    Approval,
    /// It would be refused, and no approval could change that.
    Deny,
}

/// Whether a hypothetical call would be allowed, held for approval or denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Only for [`Verdict::Allow`]; `verdict` tells a call held for approval from a denied one.
    pub allowed: bool,
    pub verdict: Verdict,
    pub policy_ids: Vec<String>,
    pub reason: String,
}

/// A policy to start from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTemplate {
    pub id: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub source: &'static str,
}

/// The tester's answer for a broker decision.
pub fn check_result(decision: &latchkey_client::api::PolicyDecision) -> CheckResult {
    use latchkey_client::api::Decision;
    let verdict = match decision.decision {
        Decision::Allow => Verdict::Allow,
        Decision::ApprovalRequired => Verdict::Approval,
        Decision::Deny => Verdict::Deny,
    };
    let reason = if !decision.errors.is_empty() {
        format!("policy errors: {}", decision.errors.join("; "))
    } else {
        match decision.decision {
            Decision::Allow => "allowed: a policy permits it and none forbids it".to_owned(),
            Decision::ApprovalRequired => {
                "held for approval: it goes through once a member approves it".to_owned()
            }
            _ if decision.policies.is_empty() => "denied: no policy permits it".to_owned(),
            _ => "denied: a policy forbids it".to_owned(),
        }
    };
    CheckResult {
        allowed: verdict == Verdict::Allow,
        verdict,
        policy_ids: decision.policies.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_client::api::{Decision, PolicyDecision};

    #[test]
    fn a_call_held_for_approval_is_told_from_a_denied_one() {
        let held = check_result(&PolicyDecision {
            decision: Decision::ApprovalRequired,
            policies: vec!["approve-writes".into()],
            errors: vec![],
        });
        assert_eq!(held.verdict, Verdict::Approval, "the tester must not call it denied");
        assert!(!held.allowed, "it does not go through without an approval");
        let json = serde_json::to_value(&held).expect("a verdict serialises");
        assert_eq!(json["verdict"], "approval", "the UI reads the three-way verdict: {json}");

        let denied = check_result(&PolicyDecision {
            decision: Decision::Deny,
            policies: vec![],
            errors: vec![],
        });
        assert_eq!(serde_json::to_value(&denied).expect("serialises")["verdict"], "deny");
        let allowed = check_result(&PolicyDecision {
            decision: Decision::Allow,
            policies: vec!["read-only".into()],
            errors: vec![],
        });
        assert_eq!((allowed.verdict, allowed.allowed), (Verdict::Allow, true));
    }

    #[test]
    fn a_pending_invite_names_members_by_name_and_says_whose_it_is() {
        let (ada, grace, gone) = (MemberId::random(), MemberId::random(), MemberId::random());
        let members = [
            BrokerMember {
                id: ada,
                name: "Ada".into(),
                role: Role::Admin,
                created_at: 0,
                devices: vec![],
            },
            BrokerMember {
                id: grace,
                name: "Grace".into(),
                role: Role::Member,
                created_at: 0,
                devices: vec![],
            },
        ];
        let invite = |invite_for, by| BrokerPendingInvite {
            id: latchkey_core::ids::InviteId::random(),
            invite_for,
            created_by: DeviceId::random(),
            created_by_member: by,
            created_at: 1,
            expires_at: 2,
        };
        let admin =
            PendingInvite::new(&invite(InviteFor::NewMember(Role::Admin), ada), &members, ada);
        assert_eq!(
            (admin.role, admin.device_of.as_deref(), admin.made_by.as_str(), admin.yours),
            (Some(Role::Admin), None, "Ada", true),
            "a new admin's invite, made by the signed-in member"
        );
        let laptop = PendingInvite::new(&invite(InviteFor::Device(grace), grace), &members, ada);
        assert_eq!(
            (laptop.role, laptop.device_of.as_deref(), laptop.made_by.as_str(), laptop.yours),
            (None, Some("Grace"), "Grace", false),
            "another member's device invite, by her name"
        );
        let orphan = PendingInvite::new(&invite(InviteFor::Device(gone), gone), &members, ada);
        assert_eq!(
            orphan.device_of,
            Some(gone.to_string()),
            "a member missing from the listing is named by id, not dropped"
        );
    }
}
