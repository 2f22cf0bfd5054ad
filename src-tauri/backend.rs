//! What the commands need from the client library, as one trait: the live implementation
//! ([`crate::live::Live`]) calls `latchkey-client` against the broker; tests drive the command
//! adapters and the tray over an in-memory fake.

use async_trait::async_trait;
use latchkey_client::api::Role;
use latchkey_client::files::NewFile;
use latchkey_client::workspace::Joining;
use latchkey_core::creation::CreationToken;
use latchkey_core::secret::SecretBytes;
use latchkey_core::tls::TrustAnchors;

use crate::error::CommandError;
use crate::view::{
    Agent, AppStatus, Approval, AuditRow, AuditVerdict, DeviceInvite, Integration, Invite,
    IssuedGrant, KitImported, Member, NewAgent, PendingInvite, RotationProgress, RotationResult,
};

/// A command's result.
pub type Outcome<T> = Result<T, CommandError>;

/// Creating a workspace.
#[derive(Debug)]
pub struct NewWorkspace {
    pub workspace_name: String,
    pub member_name: String,
    pub device_name: String,
    /// `None`: the broker embedded in this app.
    pub team_server_url: Option<String>,
    /// Certificate authorities trusted for the team server besides the system's (a server
    /// behind a private authority); kept in the profile.
    pub team_server_ca: Option<TrustAnchors>,
    /// The team server's workspace creation token, when its operator creates workspaces with
    /// it alone: zeroized when dropped, sent to the server, kept nowhere, never shown again.
    pub creation_token: Option<CreationToken>,
}

/// Joining a workspace with an invite code.
#[derive(Debug)]
pub struct JoinRequest {
    pub server_url: String,
    /// Certificate authorities trusted for the server besides the system's; kept in the profile.
    pub server_ca: Option<TrustAnchors>,
    /// A one-time code: zeroized when dropped.
    pub invite_code: latchkey_client::api::InviteCode,
    /// A new member with their name, or another device of an existing member (the member id
    /// their invite was created for).
    pub joining: Joining,
    pub device_name: String,
}

/// Adding an API key.
#[derive(Debug)]
pub struct NewKey {
    pub provider: String,
    pub name: String,
    /// The key the person typed: zeroized when dropped, sealed on this device.
    pub secret: SecretBytes,
    pub shared: bool,
    pub base_url: Option<String>,
    /// Whose account the key belongs to, as the person typed it; empty or `None`: asked of the
    /// provider where the catalog says how.
    pub account: Option<String>,
}

/// Connecting an OAuth integration.
#[derive(Debug)]
pub struct NewConnection {
    pub provider: String,
    pub name: String,
    pub client_id: String,
    pub client_secret: Option<SecretBytes>,
    pub scopes: Option<Vec<String>>,
    pub shared: bool,
    /// `custom-oauth2`: the authorization server (its metadata names the endpoints).
    pub issuer: Option<String>,
    /// `custom-oauth2` and per-account providers: the API the tokens are for.
    pub base_url: Option<String>,
    /// Per-account providers (Zendesk): the authorization endpoint on the account's host.
    pub authorize_url: Option<String>,
    /// Per-account providers (Zendesk): the token endpoint on the account's host.
    pub token_url: Option<String>,
}

/// A standing grant to issue.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub agent: String,
    pub credential: String,
    pub methods: Vec<String>,
    pub path_patterns: Vec<String>,
    pub duration_secs: u64,
}

/// A listing of the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub agent: Option<String>,
    /// The credential's name, as audit records carry it.
    pub credential_name: Option<String>,
    pub decision: Option<String>,
    /// Unix seconds.
    pub since: Option<u64>,
    pub limit: u32,
}

/// A policy to save.
#[derive(Debug, Clone)]
pub struct PolicyDraft {
    pub id: String,
    pub description: String,
    pub source: String,
    pub enabled: bool,
    /// The revision the editor read: the save is refused (`conflict`) if someone changed the
    /// policy since. 0: a new policy (refused if the id is taken). `None`: unconditional.
    pub revision: Option<u64>,
}

/// A hypothetical call to check against the policies.
#[derive(Debug, Clone)]
pub struct CallCheck {
    pub agent: String,
    pub credential: String,
    pub method: String,
    pub path: String,
}

/// A hypothetical inject (`latchkey run --inject`) to check against the policies.
#[derive(Debug, Clone)]
pub struct InjectCheck {
    pub agent: String,
    pub credential: String,
    /// How long the command would hold the credential, 1 second to 24 hours.
    pub lifetime_secs: u64,
    /// The command's program name, trimmed and not empty.
    pub command: String,
}

/// What the commands do. Every method takes the caller's input already parsed into owned
/// values and returns what the UI is shown.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The app's state (never fails: an unreachable broker is part of the state).
    async fn status(&self) -> AppStatus;
    /// Creates a workspace on this computer's embedded broker or a team server.
    async fn create_workspace(&self, new: NewWorkspace) -> Outcome<AppStatus>;
    /// Joins a workspace; returns this device's fingerprint to read to the admin.
    async fn join_workspace(&self, join: JoinRequest) -> Outcome<String>;
    /// Takes the keys an admin wrapped to this device, from the admin device whose fingerprint
    /// the person read off its screen.
    async fn finish_join(&self, admin_fingerprint: String) -> Outcome<AppStatus>;

    async fn integrations(&self) -> Outcome<Vec<Integration>>;
    async fn add_api_key(&self, key: NewKey) -> Outcome<Integration>;
    /// Runs the OAuth sign-in in the system browser.
    async fn connect(&self, connection: NewConnection) -> Outcome<Integration>;
    /// Signs in again and replaces an OAuth integration's tokens in place.
    async fn reconnect(&self, id: String) -> Outcome<Integration>;
    /// Ends a sign-in under way.
    async fn cancel_connect(&self);
    /// Revokes at the provider (where it can), then deletes. Returns whether the provider
    /// confirmed the revocation.
    async fn disconnect(&self, id: String, force: bool) -> Outcome<bool>;
    /// Names the account an integration acts as, or forgets it (`None`); the secret is not
    /// touched.
    async fn set_integration_account(
        &self,
        id: String,
        account: Option<String>,
    ) -> Outcome<Integration>;

    async fn agents(&self) -> Outcome<Vec<Agent>>;
    async fn create_agent(&self, name: String) -> Outcome<NewAgent>;
    async fn regenerate_agent(&self, id: String) -> Outcome<NewAgent>;
    async fn revoke_agent(&self, id: String) -> Outcome<()>;
    /// Registers a standing grant and issues its capability, which the agent needs.
    async fn create_grant(&self, grant: NewGrant) -> Outcome<IssuedGrant>;
    async fn revoke_grant(&self, id: String) -> Outcome<()>;

    async fn approvals(&self, all: bool) -> Outcome<Vec<Approval>>;
    async fn approve_once(&self, id: String) -> Outcome<Approval>;
    async fn approve_for(&self, id: String, duration_secs: u64) -> Outcome<Approval>;
    async fn deny(&self, id: String) -> Outcome<Approval>;

    async fn policies(&self) -> Outcome<Vec<crate::view::Policy>>;
    async fn save_policy(&self, draft: PolicyDraft) -> Outcome<crate::view::Policy>;
    /// Deletes the policy; with `revision`, only if it is still at it (else `conflict`).
    async fn delete_policy(&self, id: String, revision: Option<u64>) -> Outcome<()>;
    async fn check_call(&self, call: CallCheck) -> Outcome<crate::view::CheckResult>;
    async fn check_inject(&self, inject: InjectCheck) -> Outcome<crate::view::CheckResult>;

    async fn audit(&self, query: AuditQuery) -> Outcome<Vec<AuditRow>>;
    /// This device's check of the chain: from the first record (`full`), or from the one it
    /// verified last.
    async fn verify_audit(&self, full: bool) -> Outcome<AuditVerdict>;
    /// Writes the whole log as JSONL or CSV into `file` as it arrives; returns the bytes written.
    async fn export_audit(&self, csv: bool, file: &mut NewFile) -> Outcome<u64>;

    async fn members(&self) -> Outcome<Vec<Member>>;
    /// An invite for a new member; `valid_for_secs` as the broker takes it (60 s to 7 days; a day
    /// when `None`).
    async fn create_invite(&self, role: Role, valid_for_secs: Option<u64>) -> Outcome<Invite>;
    /// An invite for another device of the signed-in member; `valid_for_secs` as for
    /// [`Backend::create_invite`].
    async fn create_device_invite(&self, valid_for_secs: Option<u64>) -> Outcome<DeviceInvite>;
    /// Pending invites: every one for an admin, the member's own otherwise.
    async fn invites(&self) -> Outcome<Vec<PendingInvite>>;
    /// Revokes a pending invite; returns the pending invites after.
    async fn revoke_invite(&self, id: String) -> Outcome<Vec<PendingInvite>>;
    async fn admit_device(&self, device: String, fingerprint: String) -> Outcome<Vec<Member>>;
    async fn remove_member(&self, id: String, rotate: bool) -> Outcome<Vec<Member>>;
    async fn remove_device(&self, id: String, rotate: bool) -> Outcome<Vec<Member>>;

    /// Rotates the workspace key and this member's key, reporting each step.
    async fn rotate_keys(
        &self,
        progress: Box<dyn Fn(RotationProgress) + Send + Sync>,
    ) -> Outcome<RotationResult>;
    /// Writes a recovery kit sealed with `passphrase` to a new file of `dir` and returns its path.
    async fn export_recovery_kit(
        &self,
        passphrase: SecretBytes,
        dir: std::path::PathBuf,
    ) -> Outcome<std::path::PathBuf>;
    /// Imports a recovery kit's keys into this enrolled device; keys it holds are never replaced.
    async fn import_recovery_kit(
        &self,
        kit: zeroize::Zeroizing<String>,
        passphrase: SecretBytes,
    ) -> Outcome<KitImported>;
    /// Locks the keychain that holds this device's keys and forgets every key the app holds.
    async fn lock(&self) -> Outcome<AppStatus>;
    /// Unlocks the keychain (the system asks the person for their keychain password).
    async fn unlock(&self) -> Outcome<AppStatus>;
    /// Pulls or releases the workspace's kill switch.
    async fn set_paused(&self, paused: bool) -> Outcome<AppStatus>;
    /// Replaces the certificate authorities trusted for the broker besides the system's
    /// (`None`: the system's alone), once the broker answered a request made with them.
    async fn set_broker_ca(&self, authorities: Option<TrustAnchors>) -> Outcome<AppStatus>;
}
