//! The commands the UI invokes: each parses its input, calls the [`Backend`] and returns what
//! the UI is shown. Argument names arrive in camelCase (`workspaceName`), as Tauri maps them.

use std::sync::Arc;

use latchkey_client::api::{InviteCode, Role};
use latchkey_client::catalog::Catalog;
use latchkey_client::files::NewFile;
use latchkey_client::workspace::Joining;
use latchkey_core::creation::CreationToken;
use latchkey_core::ids::MemberId;
use latchkey_core::secret::SecretBytes;
use latchkey_core::tls::TrustAnchors;
use serde::Serialize;
use tauri::{AppHandle, Emitter as _, Manager as _, Runtime, State};

use crate::backend::{
    AuditQuery, Backend, CallCheck, InjectCheck, JoinRequest, NewConnection, NewGrant, NewKey,
    NewWorkspace, Outcome, PolicyDraft,
};
use crate::error::CommandError;
use crate::view::{
    Agent, AppStatus, Approval, AuditRow, AuditVerdict, CheckResult, DeviceInvite, Integration,
    Invite, IssuedGrant, KitImported, Member, NewAgent, PendingInvite, Policy, PolicyTemplate,
    Provider, RotationResult,
};
use crate::{events, templates};

/// The backend the commands use.
#[derive(Clone)]
pub struct Shell {
    pub backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shell")
    }
}

/// A path written for the person (an export), as the UI shows it.
#[derive(Debug, Serialize)]
pub struct Saved {
    pub path: String,
}

#[tauri::command]
pub async fn app_status(shell: State<'_, Shell>) -> Outcome<AppStatus> {
    Ok(shell.backend.status().await)
}

#[tauri::command]
#[allow(clippy::too_many_arguments, reason = "one argument per form field, as the UI sends them")]
pub async fn create_workspace<R: Runtime>(
    app: AppHandle<R>,
    shell: State<'_, Shell>,
    workspace_name: String,
    member_name: String,
    device_name: String,
    team_server_url: Option<String>,
    team_server_ca: Option<String>,
    creation_token: Option<String>,
) -> Outcome<AppStatus> {
    // The token moves into zeroizing storage at once; it goes one way, to the server.
    let creation_token = creation_token.map(zeroize::Zeroizing::new);
    let team_server_url = team_server_url.filter(|u| !u.trim().is_empty());
    let team_server_ca = authorities(team_server_ca)?;
    if team_server_url.is_none() && team_server_ca.is_some() {
        return Err(CommandError::invalid(
            "a certificate authority is for a team server: give its URL too, or leave the authority out for this computer's broker",
        ));
    }
    let creation_token = match creation_token.filter(|t| !t.trim().is_empty()) {
        None => None,
        Some(_) if team_server_url.is_none() => {
            return Err(CommandError::invalid(
                "a creation token is for a team server: give its URL too, or leave the token out for this computer's broker",
            ));
        }
        Some(text) => Some(text.parse::<CreationToken>().map_err(|problem| {
            CommandError::new(
                crate::error::codes::INVALID_CREATION_TOKEN,
                format!("{problem}: paste the token exactly as the server's operator gave it"),
            )
        })?),
    };
    let new = NewWorkspace {
        workspace_name,
        member_name,
        device_name,
        team_server_url,
        team_server_ca,
        creation_token,
    };
    let status = shell.backend.create_workspace(new).await?;
    events::tray_follows(&app, &status);
    Ok(status)
}

#[tauri::command]
pub async fn join_workspace(
    shell: State<'_, Shell>,
    server_url: String,
    server_ca: Option<String>,
    invite_code: String,
    member_name: Option<String>,
    device_of: Option<String>,
    device_name: String,
) -> Outcome<JoinStarted> {
    let server_ca = authorities(server_ca)?;
    let joining = joining(member_name, device_of)?;
    let invite_code: InviteCode = invite_code
        .parse()
        .map_err(|e: latchkey_client::api::InviteCodeError| CommandError::invalid(e.to_string()))?;
    let fingerprint = shell
        .backend
        .join_workspace(JoinRequest { server_url, server_ca, invite_code, joining, device_name })
        .await?;
    Ok(JoinStarted { fingerprint })
}

/// The certificate authorities a person pasted for a team server (PEM), if any: blank is none;
/// text that cannot serve as authorities is refused, saying why.
fn authorities(pem: Option<String>) -> Outcome<Option<TrustAnchors>> {
    let Some(pem) = pem.filter(|p| !p.trim().is_empty()) else {
        return Ok(None);
    };
    TrustAnchors::from_pem(pem.as_bytes()).map(Some).map_err(|problem| {
        CommandError::new(
            crate::error::codes::BROKER_CA_UNUSABLE,
            format!("the certificate authority you gave cannot be used: {problem}"),
        )
    })
}

/// Whom a device joins as: a new member with `member_name`, or another device of the member
/// `device_of` (the id their other device showed with the invite). Exactly one of the two.
fn joining(member_name: Option<String>, device_of: Option<String>) -> Outcome<Joining> {
    let given = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    match (given(member_name), given(device_of)) {
        (Some(name), None) => Ok(Joining::NewMember { name }),
        (None, Some(member)) => member.parse::<MemberId>().map(Joining::ExistingMember).map_err(|_| {
            CommandError::new(
                crate::error::codes::INVALID_MEMBER_ID,
                format!(
                    "{member:?} is not a member id: copy the one shown with the invite under \"Add a device of mine\" on your other device"
                ),
            )
        }),
        (Some(_), Some(_)) => Err(CommandError::invalid(
            "give your name (you are new to this workspace) or your member id (this is another device of yours), not both",
        )),
        (None, None) => Err(CommandError::invalid(
            "enter your name, or your member id if this is another device of yours",
        )),
    }
}

/// A device that joined and waits to be admitted.
#[derive(Debug, Serialize)]
pub struct JoinStarted {
    /// This device's fingerprint, to read to the admin.
    pub fingerprint: String,
}

#[tauri::command]
pub async fn finish_join<R: Runtime>(
    app: AppHandle<R>,
    shell: State<'_, Shell>,
    admin_fingerprint: String,
) -> Outcome<AppStatus> {
    let status = shell.backend.finish_join(admin_fingerprint).await?;
    events::tray_follows(&app, &status);
    Ok(status)
}

#[tauri::command]
pub fn list_providers(query: String) -> Vec<Provider> {
    let catalog = Catalog::builtin();
    if query.trim().is_empty() {
        catalog.iter().map(Provider::from).collect()
    } else {
        catalog.search(query.trim()).into_iter().map(Provider::from).collect()
    }
}

#[tauri::command]
pub async fn list_integrations(shell: State<'_, Shell>) -> Outcome<Vec<Integration>> {
    shell.backend.integrations().await
}

#[tauri::command]
pub async fn add_api_key(
    shell: State<'_, Shell>,
    provider: String,
    name: String,
    secret: String,
    shared: bool,
    base_url: Option<String>,
    account: Option<String>,
) -> Outcome<Integration> {
    // The key moves into zeroizing storage at once; the String's buffer is wiped too.
    let secret = SecretBytes::from_zeroizing(zeroize::Zeroizing::new(secret.into_bytes()));
    shell.backend.add_api_key(NewKey { provider, name, secret, shared, base_url, account }).await
}

#[tauri::command]
#[allow(clippy::too_many_arguments, reason = "one argument per form field, as the UI sends them")]
pub async fn connect_oauth(
    shell: State<'_, Shell>,
    provider: String,
    name: String,
    client_id: String,
    client_secret: Option<String>,
    scopes: Option<Vec<String>>,
    shared: bool,
    issuer: Option<String>,
    base_url: Option<String>,
    authorize_url: Option<String>,
    token_url: Option<String>,
) -> Outcome<Integration> {
    let blank_is_none =
        |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let (issuer, base_url) = (blank_is_none(issuer), blank_is_none(base_url));
    let (authorize_url, token_url) = (blank_is_none(authorize_url), blank_is_none(token_url));
    let client_secret = client_secret
        .filter(|s| !s.is_empty())
        .map(|s| SecretBytes::from_zeroizing(zeroize::Zeroizing::new(s.into_bytes())));
    shell
        .backend
        .connect(NewConnection {
            provider,
            name,
            client_id,
            client_secret,
            scopes,
            shared,
            issuer,
            base_url,
            authorize_url,
            token_url,
        })
        .await
}

#[tauri::command]
pub async fn reconnect(shell: State<'_, Shell>, id: String) -> Outcome<Integration> {
    shell.backend.reconnect(id).await
}

#[tauri::command]
pub async fn cancel_connect(shell: State<'_, Shell>) -> Outcome<()> {
    shell.backend.cancel_connect().await;
    Ok(())
}

/// What a disconnect did at the provider.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Disconnected {
    pub revoked_at_provider: bool,
}

#[tauri::command]
pub async fn disconnect(shell: State<'_, Shell>, id: String, force: bool) -> Outcome<Disconnected> {
    let revoked_at_provider = shell.backend.disconnect(id, force).await?;
    Ok(Disconnected { revoked_at_provider })
}

#[tauri::command]
pub async fn set_integration_account(
    shell: State<'_, Shell>,
    id: String,
    account: Option<String>,
) -> Outcome<Integration> {
    let account = account.map(|a| a.trim().to_owned()).filter(|a| !a.is_empty());
    shell.backend.set_integration_account(id, account).await
}

#[tauri::command]
pub async fn list_agents(shell: State<'_, Shell>) -> Outcome<Vec<Agent>> {
    shell.backend.agents().await
}

#[tauri::command]
pub async fn create_agent(shell: State<'_, Shell>, name: String) -> Outcome<NewAgent> {
    shell.backend.create_agent(name).await
}

#[tauri::command]
pub async fn regenerate_agent(shell: State<'_, Shell>, id: String) -> Outcome<NewAgent> {
    shell.backend.regenerate_agent(id).await
}

#[tauri::command]
pub async fn revoke_agent(shell: State<'_, Shell>, id: String) -> Outcome<()> {
    shell.backend.revoke_agent(id).await
}

#[tauri::command]
pub async fn create_grant(
    shell: State<'_, Shell>,
    agent: String,
    credential: String,
    methods: Vec<String>,
    path_patterns: Vec<String>,
    duration_secs: u64,
) -> Outcome<IssuedGrant> {
    if methods.is_empty() {
        return Err(CommandError::invalid("choose at least one method"));
    }
    if path_patterns.iter().all(|p| p.trim().is_empty()) {
        return Err(CommandError::invalid("give at least one path pattern, e.g. /repos/*"));
    }
    let path_patterns = path_patterns.into_iter().filter(|p| !p.trim().is_empty()).collect();
    shell
        .backend
        .create_grant(NewGrant { agent, credential, methods, path_patterns, duration_secs })
        .await
}

#[tauri::command]
pub async fn revoke_grant(shell: State<'_, Shell>, id: String) -> Outcome<()> {
    shell.backend.revoke_grant(id).await
}

#[tauri::command]
pub async fn list_approvals(shell: State<'_, Shell>, all: bool) -> Outcome<Vec<Approval>> {
    shell.backend.approvals(all).await
}

#[tauri::command]
pub async fn approve_once(shell: State<'_, Shell>, id: String) -> Outcome<Approval> {
    shell.backend.approve_once(id).await
}

#[tauri::command]
pub async fn approve_for(
    shell: State<'_, Shell>,
    id: String,
    duration_secs: u64,
) -> Outcome<Approval> {
    shell.backend.approve_for(id, duration_secs).await
}

#[tauri::command]
pub async fn deny(shell: State<'_, Shell>, id: String) -> Outcome<Approval> {
    shell.backend.deny(id).await
}

#[tauri::command]
pub async fn list_policies(shell: State<'_, Shell>) -> Outcome<Vec<Policy>> {
    shell.backend.policies().await
}

#[tauri::command]
pub fn policy_templates() -> Vec<PolicyTemplate> {
    templates::TEMPLATES.to_vec()
}

#[tauri::command]
pub async fn save_policy(
    shell: State<'_, Shell>,
    id: String,
    description: String,
    source: String,
    enabled: bool,
    revision: Option<u64>,
) -> Outcome<Policy> {
    shell.backend.save_policy(PolicyDraft { id, description, source, enabled, revision }).await
}

#[tauri::command]
pub async fn delete_policy(
    shell: State<'_, Shell>,
    id: String,
    revision: Option<u64>,
) -> Outcome<()> {
    shell.backend.delete_policy(id, revision).await
}

#[tauri::command]
pub async fn check_call(
    shell: State<'_, Shell>,
    agent: String,
    credential: String,
    method: String,
    path: String,
) -> Outcome<CheckResult> {
    shell.backend.check_call(CallCheck { agent, credential, method, path }).await
}

#[tauri::command]
pub async fn check_inject(
    shell: State<'_, Shell>,
    agent: String,
    credential: String,
    lifetime_secs: u64,
    command: String,
) -> Outcome<CheckResult> {
    if lifetime_secs == 0 || lifetime_secs > latchkey_client::inject::MAX_LIFETIME_SECS {
        return Err(CommandError::invalid("an inject lasts from 1 second to 24 hours"));
    }
    let command = command.trim();
    if command.is_empty() {
        return Err(CommandError::invalid("name the command, e.g. gh"));
    }
    let command = command.to_owned();
    shell.backend.check_inject(InjectCheck { agent, credential, lifetime_secs, command }).await
}

#[tauri::command]
pub async fn list_audit(
    shell: State<'_, Shell>,
    agent: Option<String>,
    credential_name: Option<String>,
    decision: Option<String>,
    since: Option<u64>,
    limit: u32,
) -> Outcome<Vec<AuditRow>> {
    if decision.as_deref().is_some_and(|d| d != "allowed" && d != "denied") {
        return Err(CommandError::invalid("decision is allowed or denied"));
    }
    shell.backend.audit(AuditQuery { agent, credential_name, decision, since, limit }).await
}

#[tauri::command]
pub async fn verify_audit(shell: State<'_, Shell>, full: Option<bool>) -> Outcome<AuditVerdict> {
    shell.backend.verify_audit(full.unwrap_or(false)).await
}

#[tauri::command]
pub async fn export_audit<R: Runtime>(
    app: AppHandle<R>,
    shell: State<'_, Shell>,
    format: String,
) -> Outcome<Saved> {
    let csv = match format.as_str() {
        "csv" => true,
        "jsonl" => false,
        other => {
            return Err(CommandError::invalid(format!("export format {other:?}: jsonl or csv")));
        }
    };
    let dir = export_dir(&app)?;
    let cannot_write = |e: std::io::Error| {
        CommandError::new(
            crate::error::codes::FAILED,
            format!("cannot write the export in {}: {e}", dir.display()),
        )
    };
    // Written as it arrives; a download that fails midway leaves no file behind.
    let mut file = NewFile::numbered(&dir, "latchkey-audit", &format).map_err(cannot_write)?;
    shell.backend.export_audit(csv, &mut file).await?;
    let path = file.finish().map_err(cannot_write)?;
    Ok(Saved { path: path.display().to_string() })
}

#[tauri::command]
pub async fn list_members(shell: State<'_, Shell>) -> Outcome<Vec<Member>> {
    shell.backend.members().await
}

#[tauri::command]
pub async fn create_invite(
    shell: State<'_, Shell>,
    role: Role,
    valid_for_secs: Option<u64>,
) -> Outcome<Invite> {
    shell.backend.create_invite(role, valid_for_secs).await
}

#[tauri::command]
pub async fn create_device_invite(
    shell: State<'_, Shell>,
    valid_for_secs: Option<u64>,
) -> Outcome<DeviceInvite> {
    shell.backend.create_device_invite(valid_for_secs).await
}

#[tauri::command]
pub async fn list_invites(shell: State<'_, Shell>) -> Outcome<Vec<PendingInvite>> {
    shell.backend.invites().await
}

#[tauri::command]
pub async fn revoke_invite(shell: State<'_, Shell>, id: String) -> Outcome<Vec<PendingInvite>> {
    shell.backend.revoke_invite(id).await
}

#[tauri::command]
pub async fn admit_device(
    shell: State<'_, Shell>,
    device_id: String,
    fingerprint: String,
) -> Outcome<Vec<Member>> {
    shell.backend.admit_device(device_id, fingerprint).await
}

#[tauri::command]
pub async fn remove_member(
    shell: State<'_, Shell>,
    id: String,
    rotate: bool,
) -> Outcome<Vec<Member>> {
    shell.backend.remove_member(id, rotate).await
}

#[tauri::command]
pub async fn remove_device(
    shell: State<'_, Shell>,
    id: String,
    rotate: bool,
) -> Outcome<Vec<Member>> {
    shell.backend.remove_device(id, rotate).await
}

#[tauri::command]
pub async fn rotate_keys<R: Runtime>(
    app: AppHandle<R>,
    shell: State<'_, Shell>,
) -> Outcome<RotationResult> {
    let emitter = app.clone();
    let progress = Box::new(move |step| {
        let _ = emitter.emit(events::ROTATION_PROGRESS, step);
    });
    shell.backend.rotate_keys(progress).await
}

#[tauri::command]
pub async fn export_recovery_kit<R: Runtime>(
    app: AppHandle<R>,
    shell: State<'_, Shell>,
    passphrase: String,
) -> Outcome<Saved> {
    let passphrase = SecretBytes::from_zeroizing(zeroize::Zeroizing::new(passphrase.into_bytes()));
    let path = shell.backend.export_recovery_kit(passphrase, export_dir(&app)?).await?;
    Ok(Saved { path: path.display().to_string() })
}

/// The largest text taken as a recovery kit: a kit holds at most 64 keys, a few KiB.
const MAX_KIT_BYTES: usize = 64 * 1024;

#[tauri::command]
pub async fn import_recovery_kit(
    shell: State<'_, Shell>,
    kit: String,
    passphrase: String,
) -> Outcome<KitImported> {
    // Both move into zeroizing storage at once: the kit is sealed, the passphrase opens it.
    let kit = zeroize::Zeroizing::new(kit);
    let passphrase = SecretBytes::from_zeroizing(zeroize::Zeroizing::new(passphrase.into_bytes()));
    if kit.trim().is_empty() {
        return Err(CommandError::invalid("choose the kit's file or paste its text"));
    }
    if kit.len() > MAX_KIT_BYTES {
        return Err(CommandError::invalid(
            "this is too large to be a recovery kit (a kit is a few KiB): choose the file export saved",
        ));
    }
    if passphrase.is_empty() {
        return Err(CommandError::invalid("type the passphrase the kit was exported with"));
    }
    shell.backend.import_recovery_kit(kit, passphrase).await
}

#[tauri::command]
pub async fn set_paused<R: Runtime>(
    app: AppHandle<R>,
    shell: State<'_, Shell>,
    paused: bool,
) -> Outcome<AppStatus> {
    let status = shell.backend.set_paused(paused).await?;
    events::status_changed(&app, &status);
    Ok(status)
}

/// Trusts the pasted certificate authorities (PEM) for the broker besides the system's, or, with
/// `pem` blank or absent, the system's alone again. Nothing changes unless the broker answers a
/// request made with the new set.
#[tauri::command]
pub async fn set_broker_ca<R: Runtime>(
    app: AppHandle<R>,
    shell: State<'_, Shell>,
    pem: Option<String>,
) -> Outcome<AppStatus> {
    let status = shell.backend.set_broker_ca(authorities(pem)?).await?;
    events::status_changed(&app, &status);
    Ok(status)
}

#[tauri::command]
pub async fn lock<R: Runtime>(app: AppHandle<R>, shell: State<'_, Shell>) -> Outcome<AppStatus> {
    let status = shell.backend.lock().await?;
    events::status_changed(&app, &status);
    Ok(status)
}

#[tauri::command]
pub async fn unlock<R: Runtime>(app: AppHandle<R>, shell: State<'_, Shell>) -> Outcome<AppStatus> {
    let status = shell.backend.unlock().await?;
    events::status_changed(&app, &status);
    Ok(status)
}

#[tauri::command]
pub fn open_external(url: String) -> Outcome<()> {
    let parsed = url::Url::parse(&url)
        .map_err(|_| CommandError::invalid(format!("{url:?} is not a URL")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(CommandError::invalid("only http and https links open in the browser"));
    }
    latchkey_client::oauth::BrowserLauncher::open(&latchkey_client::oauth::SystemBrowser, &parsed)
        .map_err(|e| CommandError::new(crate::error::codes::FAILED, e.to_string()))
}

/// The folder exports are written to (created if missing): `LATCHKEY_DESKTOP_EXPORT_DIR`, else
/// the Downloads folder, else home.
fn export_dir<R: Runtime>(app: &AppHandle<R>) -> Outcome<std::path::PathBuf> {
    let dir = std::env::var_os("LATCHKEY_DESKTOP_EXPORT_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| app.path().download_dir().ok())
        .or_else(|| app.path().home_dir().ok())
        .ok_or_else(|| CommandError::new(crate::error::codes::FAILED, "no folder to save to"))?;
    std::fs::create_dir_all(&dir).map_err(|e| {
        CommandError::new(
            crate::error::codes::FAILED,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    Ok(dir)
}
