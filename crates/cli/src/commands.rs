//! One function per command, each a thin layer over `latchkey_client`.

use std::borrow::Cow;
use std::io::{Read as _, Write as _};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use latchkey_client::access::{
    CredentialChanges, GrantTerms, NewApiKey, SingleUseTerms, add_api_key, find_credential,
    grant_standing, issue_single_use, set_credential_status, update_credential,
};
use latchkey_client::api::{
    AuditFilter, BrokerClient, BrokerEndpoint, BrokerUrl, CredentialInfo, CredentialStatus,
    PauseState,
};
use latchkey_client::audit::{Anchor, CheckFrom, VerifiedChain, check_workspace_chain, export_log};
use latchkey_client::catalog::Catalog;
use latchkey_client::connection::DisconnectOptions;
use latchkey_client::files::NewFile;
use latchkey_client::keychain::{EncryptedFileStore, SharedKeyStore};
use latchkey_client::profile::{Profile, ProfileName};
use latchkey_client::recovery::{export_kit, import_kit};
use latchkey_client::rotation::{RotationProgress, RotationScope, rotate};
use latchkey_client::workspace::{
    broker_client, create_workspace, own_fingerprint, set_broker_authorities,
};
use latchkey_core::capability::Method;
use latchkey_core::creation::CreationToken;
use latchkey_core::ids::GrantId;
use latchkey_core::payload::Injection;
use latchkey_core::secret::SecretBytes;
use latchkey_core::tls::{TrustAnchors, TrustAnchorsError};
use serde_json::json;
use zeroize::Zeroizing;

use crate::approvals::{approvals, unix_now};
use crate::cli::{
    AddCredential, AgentCommand, AuditCommand, CapabilityCommand, Cli, Command, CredentialCommand,
    GrantCommand, KeyStoreChoice, ProviderCommand, RecoveryCommand, ScopeChoice, WorkspaceCommand,
};
use crate::connect::{connect_command, disconnect_command};
use crate::people::{Join, device, invite, join, member};
use crate::policy::policy;
use crate::shown::{shown, shown_all};

/// A `--broker-ca` file (or `workspace broker-ca` FILE) that cannot be used (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("the certificate authority file {} cannot be used: {problem}", path.display())]
pub(crate) struct UnusableBrokerCa {
    /// The file given.
    pub(crate) path: std::path::PathBuf,
    /// What is wrong with it.
    pub(crate) problem: TrustAnchorsError,
}

/// The authorities of the PEM file `path`.
fn read_broker_ca(path: &std::path::Path) -> Result<TrustAnchors, UnusableBrokerCa> {
    TrustAnchors::read(path).map_err(|problem| UnusableBrokerCa { path: path.to_owned(), problem })
}

/// `--broker URL` with the authorities of `--broker-ca FILE`, if given.
pub(crate) fn broker_endpoint(
    url: BrokerUrl,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<BrokerEndpoint> {
    let authorities = ca_file.map(read_broker_ca).transpose()?;
    Ok(BrokerEndpoint::new(url).trusting(authorities))
}

/// One indented line per certificate: its SHA-256 fingerprint.
pub(crate) fn authority_lines(fingerprints: &[String]) -> String {
    let lines: Vec<String> = fingerprints.iter().map(|f| format!("  SHA-256 {f}")).collect();
    lines.join("\n")
}

/// Something the user named does not exist (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NotFound(pub String);

/// Environment variable with the encrypted key file's passphrase (for scripts and CI).
const KEYSTORE_PASSPHRASE_ENV: &str = "LATCHKEY_KEYSTORE_PASSPHRASE";
/// Environment variable with a recovery kit's passphrase.
const RECOVERY_PASSPHRASE_ENV: &str = "LATCHKEY_RECOVERY_PASSPHRASE";
/// Environment variable with a team server's workspace creation token.
pub(crate) const CREATION_TOKEN_ENV: &str = "LATCHKEY_CREATION_TOKEN";

/// Runs one parsed command line.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    if let Command::Completions { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "latchkey", &mut std::io::stdout());
        return Ok(());
    }
    let profile = profile(&cli)?;
    let choice = cli.key_store;
    match cli.command {
        Command::Workspace(WorkspaceCommand::Create {
            broker,
            broker_ca,
            name,
            member_name,
            device_name,
            creation_token,
            creation_token_stdin,
        }) => {
            let broker = broker_endpoint(broker, broker_ca.as_deref())?;
            let token = read_creation_token(creation_token_stdin, creation_token)?;
            let store = key_store(&profile, choice, true)?;
            let created = create_workspace(
                &profile,
                &store,
                broker,
                &name,
                &member_name,
                &device_name,
                token.as_ref(),
            )
            .await?;
            out.value(
                &json!({
                    "workspace": created.workspace, "member": created.member,
                    "device": created.device, "fingerprint": created.fingerprint.to_string(),
                }),
                &format!(
                    "Created workspace {name} ({}). You are its admin.\nThis device's fingerprint: {}\nCompare it when you admit other devices.",
                    created.workspace, created.fingerprint
                ),
            )
        }
        Command::Workspace(WorkspaceCommand::Join {
            broker,
            broker_ca,
            member_name,
            device_of,
            device_name,
            code_stdin,
        }) => {
            let broker = broker_endpoint(broker, broker_ca.as_deref())?;
            join(
                &profile,
                choice,
                &out,
                Join { broker, member_name, device_of, device_name, code_stdin },
            )
            .await
        }
        Command::Workspace(WorkspaceCommand::BrokerCa { print: true, .. }) => {
            let Some(authorities) = profile.load_config()?.broker_ca else {
                return Err(NotFound(
                    "this profile trusts the system's certificate authorities alone for its broker"
                        .to_owned(),
                )
                .into());
            };
            let pem = authorities.to_pem();
            out.value(&json!({ "broker_ca_pem": pem }), pem.trim_end())
        }
        Command::Workspace(WorkspaceCommand::BrokerCa { file, clear: _, print: false }) => {
            // clap requires FILE unless --clear or --print, and refuses two of them.
            let authorities = file.as_deref().map(read_broker_ca).transpose()?;
            let fingerprints = authorities.as_ref().map(TrustAnchors::sha256_fingerprints);
            let store = key_store(&profile, choice, false)?;
            set_broker_authorities(&profile, &store, authorities).await?;
            out.value(
                &json!({ "broker_ca": fingerprints }),
                &match &fingerprints {
                    Some(fingerprints) => format!(
                        "The broker answered; this profile now trusts, besides the system's authorities:\n{}",
                        authority_lines(fingerprints)
                    ),
                    None => "The broker answered; this profile trusts the system's authorities alone.".to_owned(),
                },
            )
        }
        Command::Invite(command) => invite(&profile, choice, &out, command).await,
        Command::Device(command) => device(&profile, choice, &out, command).await,
        Command::Member(command) => member(&profile, choice, &out, command).await,
        Command::Policy(command) => policy(&profile, choice, &out, command).await,
        Command::Approvals(command) => approvals(&profile, choice, &out, command).await,
        Command::Credential(CredentialCommand::Show { name }) => {
            let client = client(&profile, choice).await?;
            let credential = find_credential(&client, &name).await?;
            out.value(&serde_json::to_value(&credential)?, &credential_text(&credential))
        }
        Command::Credential(CredentialCommand::Update {
            name,
            rename,
            base_url,
            allowed_hosts,
            account,
            no_account,
        }) => {
            let nothing = rename.is_none()
                && base_url.is_none()
                && allowed_hosts.is_empty()
                && account.is_none();
            if nothing && !no_account {
                bail!(
                    "nothing to change: pass --rename, --base-url, --allow-host, --account or --no-account"
                );
            }
            let client = client(&profile, choice).await?;
            let base_url = base_url.map(|b| b.trim_end_matches('/').to_owned());
            let changes = CredentialChanges {
                name: rename.as_deref(),
                base_url: base_url.as_deref(),
                allowed_hosts: (!allowed_hosts.is_empty()).then_some(allowed_hosts.as_slice()),
                account: if no_account { Some(None) } else { account.as_deref().map(Some) },
                ..CredentialChanges::default()
            };
            let updated = update_credential(&client, &name, &changes).await?;
            out.value(
                &serde_json::to_value(&updated)?,
                &format!("Updated {} (revision {}).", shown(&updated.name), updated.revision),
            )
        }
        Command::Credential(CredentialCommand::Disable { name }) => {
            let client = client(&profile, choice).await?;
            let updated = set_credential_status(&client, &name, CredentialStatus::Disabled).await?;
            out.value(
                &serde_json::to_value(&updated)?,
                &format!("Switched {name} off; agents are refused from their next call."),
            )
        }
        Command::Credential(CredentialCommand::Enable { name }) => {
            let client = client(&profile, choice).await?;
            let updated = set_credential_status(&client, &name, CredentialStatus::Active).await?;
            out.value(&serde_json::to_value(&updated)?, &format!("Switched {name} on."))
        }
        Command::Agent(AgentCommand::Regenerate { id }) => {
            let renewed = client(&profile, choice).await?.regenerate_agent_token(id).await?;
            let token = renewed.token.expose_secret();
            out.value(
                &json!({"agent": renewed.agent, "token": token}),
                &format!(
                    "New token for agent {} ({}), shown once; the old one no longer works:\n{token}",
                    shown(&renewed.agent.name),
                    renewed.agent.id
                ),
            )
        }
        Command::Capability(CapabilityCommand::Issue {
            agent,
            credential,
            method,
            path,
            duration,
        }) => {
            let store = key_store(&profile, choice, false)?;
            let capability = issue_single_use(
                &profile,
                &store,
                SingleUseTerms {
                    agent,
                    credential: &credential,
                    method,
                    path: &path,
                    lifetime_secs: duration.secs,
                },
            )
            .await?;
            let text = capability.expose_secret();
            out.value(
                &json!({"capability": text}),
                &format!(
                    "A capability for one {} {path} via {credential}; give it to the agent in a `Latchkey-Capability` header:\n{text}",
                    method.as_str()
                ),
            )
        }
        Command::Workspace(WorkspaceCommand::Show) => {
            let config = profile.load_config()?;
            let store = key_store(&profile, choice, false)?;
            let fingerprint = own_fingerprint(&profile, &store).await?;
            let authorities = config.broker_ca.as_ref().map(TrustAnchors::sha256_fingerprints);
            let mut text = format!(
                "broker       {}\nworkspace    {}\nmember       {}\ndevice       {}\nfingerprint  {fingerprint}",
                config.broker_url.as_str(),
                config.workspace,
                config.member,
                config.device
            );
            if let Some(fingerprints) = &authorities {
                text.push_str("\nbroker CA    trusted besides the system's authorities:\n");
                text.push_str(&authority_lines(fingerprints));
            }
            out.value(
                &json!({
                    "broker": config.broker_url.as_str(), "workspace": config.workspace,
                    "member": config.member, "device": config.device,
                    "fingerprint": fingerprint.to_string(),
                    "workspace_key_version": config.workspace_key_version,
                    "member_key_version": config.member_key_version,
                    "broker_ca": authorities,
                }),
                &text,
            )
        }
        Command::Credential(CredentialCommand::Add(add)) => {
            let store = key_store(&profile, choice, false)?;
            let (base_url, allowed_hosts, injection) = credential_target(&add)?;
            let label = Catalog::builtin()
                .get(&add.provider)
                .and_then(|p| p.api_key())
                .map_or("API key", |k| k.key_label.as_str());
            let key = read_key(add.key_stdin, label)?;
            let stored = add_api_key(
                &profile,
                &store,
                NewApiKey {
                    name: &add.name,
                    provider: &add.provider,
                    base_url: base_url.as_str().trim_end_matches('/'),
                    allowed_hosts: &allowed_hosts,
                    injection,
                    shared: !add.personal,
                    key,
                    account: add.account.as_deref(),
                },
            )
            .await?;
            out.value(
                &serde_json::to_value(&stored)?,
                &format!(
                    "Stored {} ({}); agents call it at /p/{}/...",
                    shown(&stored.name),
                    stored.id,
                    shown(&stored.name)
                ),
            )
        }
        Command::Audit(AuditCommand::List { agent, credential, decision, kind, limit }) => {
            let filter = AuditFilter {
                agent,
                credential,
                decision,
                kind,
                limit: Some(limit),
                ..AuditFilter::default()
            };
            let records = client(&profile, choice).await?.audit(&filter).await?;
            let lines: Vec<String> = records
                .iter()
                .map(|r| {
                    let field = |name: &str| {
                        shown(r.record.get(name).and_then(|v| v.as_str()).unwrap_or("-"))
                            .into_owned()
                    };
                    // A call's method, host and path (a device's refused request has no host:
                    // its path is the API route); a device's change, what it was about.
                    let what = if r.record.get("method").is_some() {
                        let host = r.record.get("host").map_or_else(String::new, |_| field("host"));
                        format!("{} {host}{}", field("method"), field("path"))
                    } else {
                        field("subject")
                    };
                    format!(
                        "{:>6}  {:<16} {:<8} {:<16} {what}",
                        r.seq,
                        field("kind"),
                        field("decision"),
                        field("credential_name"),
                    )
                })
                .collect();
            out.list(&serde_json::to_value(&records)?, &lines, "No audit records match.")
        }
        Command::Audit(AuditCommand::Verify { since_anchor }) => {
            let client = client(&profile, choice).await?;
            let from = if since_anchor { CheckFrom::Anchor } else { CheckFrom::Start };
            let check = check_workspace_chain(&client, &profile, from).await?;
            let value = json!({
                "broker": check.broker,
                "local": match &check.local {
                    Ok(chain) => json!({
                        "ok": true,
                        "records": chain.records,
                        "head": chain.head,
                        "checked": chain.checked,
                        "checked_from": chain.checked_from,
                    }),
                    Err(broken) => json!({"ok": false, "first_broken_seq": broken.seq, "reason": broken.reason}),
                },
                "anchor": check.anchor.as_ref().map(|a| json!({"seq": a.seq, "hash": a.hash})),
            });
            let verified = check.verified();
            let text = match (&check.local, &check.anchor) {
                (Ok(chain), anchor) if verified => verified_text(chain, anchor.as_ref()),
                (Ok(_), _) => "The broker's verdict and this device's check disagree: treat the log as altered.".to_owned(),
                (Err(broken), _) => broken.to_string(),
            };
            out.value(&value, &text)?;
            if verified { Ok(()) } else { bail!("the audit chain does not verify") }
        }
        Command::Audit(AuditCommand::Export { format, out: path }) => {
            let client = client(&profile, choice).await?;
            let mut file = NewFile::create(&path).with_context(|| {
                format!(
                    "cannot write {} (it must be a new file in a folder you can write)",
                    path.display()
                )
            })?;
            let bytes =
                export_log(&client, format == "csv", &AuditFilter::default(), &mut file).await?;
            file.finish().with_context(|| format!("cannot write {}", path.display()))?;
            out.value(
                &json!({"path": path, "bytes": bytes}),
                &format!("Wrote the audit log to {}.", path.display()),
            )
        }
        Command::Proxy { access, listen } => {
            if !listen.ip().is_loopback() {
                bail!("the local proxy listens on loopback only (127.0.0.1 or ::1), not {listen}");
            }
            // Listening first: nothing is granted for a proxy that cannot start.
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let store = key_store(&profile, choice, false)?;
            let local = LocalSession::open(&profile, &store, &access).await?;
            let result = local.serve(listener).await;
            match result {
                Ok((proxy, session)) => {
                    out.value(
                        &json!({"listen": proxy.address(), "credentials": access.credentials}),
                        &format!(
                            "Local proxy on http://{} for {}; agents call /p/<credential>/... with their token. Ctrl-C stops it and revokes its grants.",
                            proxy.address(),
                            access.credentials.join(", ")
                        ),
                    )?;
                    shutdown_signal().await;
                    proxy.stop().await;
                    session.close().await
                }
                Err(error) => Err(error),
            }
        }
        Command::Run { access, command } => {
            crate::run::run(&profile, choice, access, command).await
        }
        Command::Provider(ProviderCommand::List { query }) => {
            let found = Catalog::builtin().search(query.as_deref().unwrap_or_default());
            let value: Vec<_> = found
                .iter()
                .map(|p| {
                    json!({
                        "id": p.id, "name": p.name,
                        "kind": p.kind.as_str(),
                        "api_base_url": p.api_base_url, "allowed_hosts": p.allowed_hosts,
                        "custom": p.custom, "account_specific": p.account_specific,
                    })
                })
                .collect();
            let lines: Vec<String> = found
                .iter()
                .map(|p| {
                    let kind = if p.oauth().is_some() { "oauth" } else { "api key" };
                    let base = p.api_base_url.as_ref().map_or("(your URL)", |u| u.as_str());
                    format!("{:<18} {:<30} {kind:<8} {base}", p.id, p.name)
                })
                .collect();
            out.list(&json!(value), &lines, "No provider matches; try fewer words.")
        }
        Command::Credential(CredentialCommand::List) => {
            let credentials = client(&profile, choice).await?.credentials().await?;
            let lines: Vec<String> = credentials
                .iter()
                .map(|c| {
                    let owner = match c.owner {
                        latchkey_core::ids::Owner::Shared => "shared",
                        latchkey_core::ids::Owner::Member(_) => "personal",
                    };
                    let used = c
                        .last_used_at
                        .map_or_else(|| "never used".to_owned(), |t| format!("last used {t}"));
                    format!(
                        "{:<24} {:<14} {:<22} {:<9} {:<16} {used:<21} {}",
                        shown(&c.name),
                        shown(&c.provider),
                        c.account.as_deref().map_or(Cow::Borrowed("-"), shown),
                        owner,
                        status_text(c.status),
                        shown(&c.upstream_base_url)
                    )
                })
                .collect();
            out.list(
                &serde_json::to_value(&credentials)?,
                &lines,
                "No credentials yet: add one with `latchkey credential add`.",
            )
        }
        Command::Connect(args) => connect_command(&profile, choice, &out, args).await,
        Command::Reconnect { name, client_id, issuer, authorize_url, no_browser, timeout } => {
            crate::connect::reconnect_command(
                &profile,
                choice,
                &out,
                &name,
                crate::connect::Reconnect { client_id, issuer, authorize_url, no_browser, timeout },
            )
            .await
        }
        Command::Disconnect { name, force, issuer, revocation_url, client_id } => {
            let options = DisconnectOptions { force, issuer, revocation_url, client_id };
            disconnect_command(&profile, choice, &out, &name, options).await
        }
        Command::Credential(CredentialCommand::Refresh { name, all, force }) => {
            crate::connect::refresh_command(&profile, choice, &out, name.as_deref(), all, force)
                .await
        }
        Command::Credential(CredentialCommand::Remove { name }) => {
            let client = client(&profile, choice).await?;
            let credential =
                client.credentials().await?.into_iter().find(|c| c.name == name).ok_or_else(
                    || {
                        NotFound(format!(
                            "no credential named {name:?}: see `latchkey credential list`"
                        ))
                    },
                )?;
            client.delete_credential(credential.id).await?;
            out.value(
                &json!({"deleted": credential.id}),
                &format!("Deleted {name}; agents lose it at their next call."),
            )
        }
        Command::Agent(AgentCommand::Create { name }) => {
            let created = client(&profile, choice).await?.create_agent(&name).await?;
            let token = created.token.expose_secret();
            out.value(
                &json!({"agent": created.agent, "token": token}),
                &format!(
                    "Created agent {} ({}).\nIts token, shown once (give it to the agent where its SDK takes an API key):\n{token}",
                    shown(&created.agent.name),
                    created.agent.id
                ),
            )
        }
        Command::Agent(AgentCommand::List) => {
            let agents = client(&profile, choice).await?.agents().await?;
            let lines: Vec<String> = agents
                .iter()
                .map(|a| {
                    let state = if a.revoked_at.is_some() { "revoked" } else { "active" };
                    let used = a
                        .last_used_at
                        .map_or_else(|| "never used".to_owned(), |t| format!("last used {t}"));
                    format!("{}  {:<24} {state:<8} {used}", a.id, shown(&a.name))
                })
                .collect();
            out.list(
                &serde_json::to_value(&agents)?,
                &lines,
                "No agents yet: create one with `latchkey agent create <name>`.",
            )
        }
        Command::Agent(AgentCommand::Pause) => {
            let state = client(&profile, choice).await?.set_paused(true).await?;
            out.value(&serde_json::to_value(state)?, &pause_text(&state))
        }
        Command::Agent(AgentCommand::Resume) => {
            let state = client(&profile, choice).await?.set_paused(false).await?;
            out.value(&serde_json::to_value(state)?, &pause_text(&state))
        }
        Command::Agent(AgentCommand::PauseStatus) => {
            let state = client(&profile, choice).await?.pause_state().await?;
            out.value(&serde_json::to_value(state)?, &pause_text(&state))
        }
        Command::Agent(AgentCommand::Revoke { id }) => {
            client(&profile, choice).await?.revoke_agent(id).await?;
            out.value(&json!({"revoked": id}), &format!("Revoked agent {id} and all its grants."))
        }
        Command::Grant(GrantCommand::Create { agent, credential, methods, paths, duration }) => {
            let store = key_store(&profile, choice, false)?;
            let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
            let issued = grant_standing(
                &profile,
                &store,
                GrantTerms {
                    agent,
                    credential: &credential,
                    methods: &methods,
                    path_patterns: &paths,
                    duration_secs: duration.secs,
                },
            )
            .await?;
            let capability = issued.capability.expose_secret();
            out.value(
                &json!({"grant": issued.grant, "capability": capability}),
                &format!(
                    "Granted until {} (grant {}).\nGive the agent this capability, in a `Latchkey-Capability` header or after its token and a `.`:\n{capability}",
                    issued.grant.expires_at, issued.grant.id
                ),
            )
        }
        Command::Grant(GrantCommand::List { agent, all }) => {
            let grants = client(&profile, choice).await?.grants(agent, all).await?;
            let now = unix_now();
            let lines: Vec<String> = grants
                .iter()
                .map(|g| {
                    let state = if g.revoked_at.is_some() {
                        "revoked"
                    } else if g.expires_at <= now {
                        "expired"
                    } else {
                        "live"
                    };
                    format!(
                        "{}  agent {}  {} {}  until {} {state}",
                        g.id,
                        g.agent,
                        shown_all(&g.methods, ","),
                        shown_all(&g.path_patterns, ","),
                        g.expires_at
                    )
                })
                .collect();
            let none =
                if all { "No grants." } else { "No grants in force (--all adds ended ones)." };
            out.list(&serde_json::to_value(&grants)?, &lines, none)
        }
        Command::Grant(GrantCommand::Revoke { id }) => {
            client(&profile, choice).await?.revoke_grant(id).await?;
            out.value(
                &json!({"revoked": id}),
                &format!("Revoked grant {id}; its capability is refused from the next call."),
            )
        }
        Command::Recovery(RecoveryCommand::Export { out: path }) => {
            let store = key_store(&profile, choice, false)?;
            let passphrase =
                passphrase(RECOVERY_PASSPHRASE_ENV, "Recovery kit passphrase (12+ characters): ")?;
            let kit = export_kit(&profile, &store, passphrase).await?;
            create_new_file(&path, kit.text.as_bytes())?;
            out.value(
                &json!({"path": path, "workspace_keys": kit.workspace_keys, "member_keys": kit.member_keys}),
                &format!("Wrote the recovery kit to {}. Keep it and its passphrase apart.", path.display()),
            )
        }
        Command::Recovery(RecoveryCommand::Import { file }) => {
            let store = key_store(&profile, choice, false)?;
            let text = Zeroizing::new(
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?,
            );
            let passphrase = passphrase(RECOVERY_PASSPHRASE_ENV, "Recovery kit passphrase: ")?;
            let imported = import_kit(&profile, &store, &text, passphrase).await?;
            out.value(
                &json!({"workspace_keys": imported.workspace_keys, "member_keys": imported.member_keys, "already_present": imported.already_present}),
                &format!(
                    "Imported {} workspace and {} member key versions ({} already here).",
                    imported.workspace_keys.len(), imported.member_keys.len(), imported.already_present
                ),
            )
        }
        Command::Rotate { scope } => {
            let store = key_store(&profile, choice, false)?;
            let scope = match scope {
                ScopeChoice::Shared => RotationScope::Shared,
                ScopeChoice::Member => RotationScope::Member,
            };
            let summary = rotate(&profile, &store, scope, &rotation_progress(&out)).await?;
            out.value(
                &json!({
                    "from": summary.from, "to": summary.to, "credentials": summary.credentials,
                    "devices": summary.devices, "not_sent": summary.not_sent,
                    "resumed": summary.resumed,
                }),
                &if summary.resumed {
                    format!("Finished an interrupted rotation: key version {} is current.", summary.to)
                } else {
                    let mut text = format!(
                        "Rotated to key version {}: {} credentials re-sealed, the new key sent to {} devices.",
                        summary.to, summary.credentials, summary.devices
                    );
                    if !summary.not_sent.is_empty() {
                        let ids: Vec<String> =
                            summary.not_sent.iter().map(ToString::to_string).collect();
                        text.push_str(&format!(
                            "\nNot sent to {} device(s) whose fingerprint was never confirmed on this device: {}.\nCompare fingerprints and run `latchkey device admit` for each that should have it.",
                            ids.len(),
                            ids.join(", ")
                        ));
                    }
                    text
                },
            )
        }
        Command::Completions { .. } => Ok(()),
    }
}

/// Writes `bytes` to a file that must not exist yet: an export never overwrites anything. On
/// Unix the file is readable and writable by its owner alone (a recovery kit, an audit log).
/// What `audit verify` says of a chain that verified.
fn verified_text(chain: &VerifiedChain, anchor: Option<&Anchor>) -> String {
    let mut text =
        format!("The audit chain verifies: {} records, head {}.", chain.records, chain.head);
    text.push_str(&match (anchor, chain.checked_from) {
        (Some(_), Some(from)) if from > 1 => format!(
            "\nRead from record {from}, which this device verified before, to record {}: nothing was removed from the log's end or rewritten since. `latchkey audit verify` without --since-anchor re-reads every record.",
            chain.records
        ),
        (Some(a), _) => format!(
            "\nIt still holds record {} as this device verified it before: nothing was removed from its end or rewritten since.",
            a.seq
        ),
        (None, _) => "\nThis device keeps its head, to find records removed from the end or a rewritten log at the next check.".to_owned(),
    });
    text
}

fn create_new_file(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    latchkey_client::files::create_new_private(path, bytes).with_context(|| {
        format!("cannot write {} (it must be a new file in a folder you can write)", path.display())
    })
}

/// One progress line on stderr (stdout stays for the result).
/// A rotation's progress, as a bar on stderr; nothing with `--json`.
pub(crate) fn rotation_progress(out: &Output) -> impl Fn(RotationProgress) + Sync + use<> {
    let show = !out.json;
    move |step| {
        if show {
            progress_line(step);
        }
    }
}

fn progress_line(step: RotationProgress) {
    let line = match step {
        RotationProgress::Resealed { done, total } => {
            let width = 30;
            let filled = (done * width).checked_div(total).unwrap_or(width).min(width);
            format!(
                "[{}{}] {done}/{total} credentials re-sealed",
                "#".repeat(filled),
                "-".repeat(width - filled)
            )
        }
        RotationProgress::Wrapped(devices) => format!("new key wrapped to {devices} devices"),
        RotationProgress::Committed => "committed at the broker".to_owned(),
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Grants issued for one `proxy` or `run`, revoked when it ends.
pub(crate) struct LocalSession {
    client: BrokerClient,
    broker: BrokerEndpoint,
    grants: Vec<GrantId>,
    capabilities: std::collections::HashMap<String, latchkey_client::access::CapabilityText>,
    /// (credential name, provider) of each credential served.
    pub(crate) credentials: Vec<(String, String)>,
}

impl LocalSession {
    pub(crate) async fn open(
        profile: &Profile,
        store: &SharedKeyStore,
        access: &crate::cli::LocalAccess,
    ) -> anyhow::Result<Self> {
        let agent = access.agent;
        let methods = if access.methods.is_empty() {
            vec![
                Method::Get,
                Method::Head,
                Method::Post,
                Method::Put,
                Method::Patch,
                Method::Delete,
                Method::Options,
            ]
        } else {
            access.methods.clone()
        };
        let paths: Vec<&str> = if access.paths.is_empty() {
            vec!["/**"]
        } else {
            access.paths.iter().map(String::as_str).collect()
        };
        let duration_secs = access.duration.secs;
        let client = broker_client(profile, store).await?;
        let listed = client.credentials().await?;
        let mut session = Self {
            broker: client.endpoint().clone(),
            client,
            grants: Vec::new(),
            capabilities: std::collections::HashMap::new(),
            credentials: Vec::new(),
        };
        for name in &access.credentials {
            let issued = grant_standing(
                profile,
                store,
                GrantTerms {
                    agent,
                    credential: name,
                    methods: &methods,
                    path_patterns: &paths,
                    duration_secs,
                },
            )
            .await;
            let issued = match issued {
                Ok(issued) => issued,
                Err(error) => {
                    session.close().await?;
                    return Err(error.into());
                }
            };
            session.grants.push(issued.grant.id);
            let provider = listed
                .iter()
                .find(|c| &c.name == name)
                .map(|c| c.provider.clone())
                .unwrap_or_default();
            session.credentials.push((name.clone(), provider));
            session.capabilities.insert(name.clone(), issued.capability);
        }
        Ok(session)
    }

    pub(crate) async fn serve(
        mut self,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<(latchkey_client::local_proxy::LocalProxy, Self)> {
        let capabilities = std::mem::take(&mut self.capabilities);
        match latchkey_client::local_proxy::LocalProxy::start(
            listener,
            self.broker.clone(),
            capabilities,
        ) {
            Ok(proxy) => Ok((proxy, self)),
            Err(error) => {
                self.close().await?;
                Err(error.into())
            }
        }
    }

    /// Revokes every grant made for this session.
    pub(crate) async fn close(self) -> anyhow::Result<()> {
        for grant in &self.grants {
            self.client.revoke_grant(*grant).await.with_context(|| {
                format!(
                    "could not revoke grant {grant}; revoke it with `latchkey grant revoke {grant}`"
                )
            })?;
        }
        Ok(())
    }
}

/// Environment variables that point a provider's official SDK at the local proxy, with the
/// agent token where the SDK expects its key.
pub(crate) fn sdk_environment(
    base: &str,
    name: &str,
    provider: &str,
    token: &str,
) -> Vec<(String, String)> {
    let upper: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .collect();
    let mut vars = vec![(format!("LATCHKEY_{upper}_URL"), format!("{base}/p/{name}"))];
    match provider {
        "openai" => {
            vars.push(("OPENAI_BASE_URL".into(), format!("{base}/p/{name}/v1")));
            vars.push(("OPENAI_API_KEY".into(), token.to_owned()));
        }
        "anthropic" => {
            vars.push(("ANTHROPIC_BASE_URL".into(), format!("{base}/p/{name}")));
            vars.push(("ANTHROPIC_API_KEY".into(), token.to_owned()));
        }
        "github" => {
            vars.push(("GITHUB_API_URL".into(), format!("{base}/p/{name}")));
            vars.push(("GITHUB_TOKEN".into(), token.to_owned()));
        }
        _ => {}
    }
    vars
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        #[cfg(unix)]
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Where an API key goes: the catalog's base URL, hosts and injection, or the user's for a
/// custom or per-account provider.
fn credential_target(add: &AddCredential) -> anyhow::Result<(url::Url, Vec<String>, Injection)> {
    let provider = Catalog::builtin().get(&add.provider).ok_or_else(|| {
        NotFound(format!(
            "no provider {:?} in the catalog: see `latchkey provider list`, or use custom-api-key",
            add.provider
        ))
    })?;
    if provider.oauth().is_some() {
        bail!(
            "{} connects with OAuth in the browser: use `latchkey connect {}` (to store a token you already hold, use --provider custom-api-key)",
            provider.name,
            provider.id
        );
    }
    let base = provider.base_url_for(add.base_url.as_deref())?;
    let injection = match (&add.header, &add.query, provider.custom) {
        (None, None, _) => provider.injection.clone(),
        (Some(name), None, true) => Injection::Header {
            name: name.to_ascii_lowercase(),
            prefix: add.prefix.clone().unwrap_or_default(),
        },
        (None, Some(name), true) => Injection::Query { name: name.clone() },
        _ => bail!(
            "{} takes its key where the catalog says; leave --header and --query out",
            provider.name
        ),
    };
    let hosts = if !add.allowed_hosts.is_empty() {
        add.allowed_hosts.clone()
    } else if provider.custom || provider.account_specific {
        vec![latchkey_client::catalog::allowed_host_of(&base)]
    } else {
        provider.allowed_hosts.clone()
    };
    Ok((base, hosts, injection))
}

fn profile(cli: &Cli) -> anyhow::Result<Profile> {
    let name = match cli.profile.as_deref() {
        None | Some("default") => ProfileName::REAL,
        Some(name) => ProfileName::named(name)?,
    };
    Ok(match &cli.config_dir {
        Some(dir) => Profile::new(name, dir),
        None => Profile::in_platform_config_dir(name)?,
    })
}

/// Opens the chosen key store; `create` allows a new encrypted key file.
pub(crate) fn key_store(
    profile: &Profile,
    choice: KeyStoreChoice,
    create: bool,
) -> anyhow::Result<SharedKeyStore> {
    if !create {
        // A profile that is not set up says so (and how to set it up) before any key store is
        // opened or a passphrase asked for.
        profile.load_config()?;
    }
    match choice {
        KeyStoreChoice::File => {
            let passphrase = passphrase(KEYSTORE_PASSPHRASE_ENV, "Key file passphrase: ")?;
            std::fs::create_dir_all(profile.config_dir())
                .with_context(|| format!("cannot create {}", profile.config_dir().display()))?;
            let store = if create {
                EncryptedFileStore::open_or_create(
                    profile.key_file_path(),
                    profile.name(),
                    passphrase,
                )?
            } else {
                EncryptedFileStore::open(profile.key_file_path(), profile.name(), passphrase)?
            };
            Ok(Arc::new(store))
        }
        KeyStoreChoice::Os => os_key_store(profile),
    }
}

#[cfg(any(
    all(unix, not(any(target_os = "macos", target_os = "ios", target_os = "android"))),
    target_os = "macos",
    target_os = "windows"
))]
fn os_key_store(profile: &Profile) -> anyhow::Result<SharedKeyStore> {
    Ok(Arc::new(latchkey_client::keychain::OsKeychainStore::open(profile.name())?))
}

#[cfg(not(any(
    all(unix, not(any(target_os = "macos", target_os = "ios", target_os = "android"))),
    target_os = "macos",
    target_os = "windows"
)))]
fn os_key_store(_profile: &Profile) -> anyhow::Result<SharedKeyStore> {
    bail!("this build has no OS keychain support for this platform yet: use --key-store file")
}

/// What `agent pause`, `agent resume` and `agent pause-status` print for people.
fn pause_text(state: &PauseState) -> String {
    match (state.paused, state.paused_by_member, state.paused_by_device, state.paused_at) {
        (true, Some(member), Some(device), Some(at)) => format!(
            "All agents in this workspace are paused (by member {member}, from device {device}, since {at}): every call is refused with 403 agents_paused.\nResume with `latchkey agent resume` (admins, and the member who paused)."
        ),
        (true, ..) => "All agents in this workspace are paused: every call is refused with 403 agents_paused.\nResume with `latchkey agent resume` (admins, and the member who paused).".to_owned(),
        (false, ..) => "Agents are not paused: they call as their grants and policies allow.".to_owned(),
    }
}

pub(crate) async fn client(
    profile: &Profile,
    choice: KeyStoreChoice,
) -> anyhow::Result<BrokerClient> {
    let store = key_store(profile, choice, false)?;
    Ok(broker_client(profile, &store).await?)
}

/// A passphrase from `env` or, failing that, a hidden prompt.
pub(crate) fn passphrase(env: &str, prompt: &str) -> anyhow::Result<SecretBytes> {
    if let Some(value) = std::env::var_os(env) {
        return Ok(SecretBytes::from_zeroizing(Zeroizing::new(value.into_encoded_bytes())));
    }
    let typed = Zeroizing::new(
        rpassword::prompt_password(prompt)
            .with_context(|| format!("cannot read a passphrase from the terminal; set {env}"))?,
    );
    Ok(SecretBytes::copy_from(typed.as_bytes()))
}

/// The broker's creation token: from stdin with `--creation-token-stdin`, from a hidden prompt
/// with `--creation-token`, else from `LATCHKEY_CREATION_TOKEN` when it is set and not empty,
/// else none (an open broker needs none). Never from the command line.
fn read_creation_token(from_stdin: bool, ask: bool) -> anyhow::Result<Option<CreationToken>> {
    let raw = Zeroizing::new(if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the creation token from stdin")?;
        text
    } else if ask {
        rpassword::prompt_password("The broker's creation token (not shown): ").with_context(
            || {
                format!(
                    "cannot read the creation token from the terminal; set {CREATION_TOKEN_ENV} \
                     or pipe it in with --creation-token-stdin"
                )
            },
        )?
    } else {
        match std::env::var(CREATION_TOKEN_ENV) {
            Ok(text) if !text.is_empty() => text,
            Ok(_) | Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("{CREATION_TOKEN_ENV} is not valid text: set it to the token as given")
            }
        }
    });
    Ok(Some(CreationToken::parse(&raw)?))
}

/// The API key from stdin (`--key-stdin`) or a hidden prompt naming it as the provider does
/// (`label`); surrounding whitespace dropped.
fn read_key(from_stdin: bool, label: &str) -> anyhow::Result<SecretBytes> {
    let raw = Zeroizing::new(if from_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the key from stdin")?;
        text
    } else {
        rpassword::prompt_password(format!("{label} (not shown): "))
            .context("cannot read the key from the terminal; pipe it in with --key-stdin")?
    });
    let key = raw.trim();
    if key.is_empty() {
        bail!("the key is empty: paste the provider's API key");
    }
    Ok(SecretBytes::copy_from(key.as_bytes()))
}

/// A credential's metadata for people.
fn credential_text(c: &CredentialInfo) -> String {
    let owner = match c.owner {
        latchkey_core::ids::Owner::Shared => "shared with the workspace".to_owned(),
        latchkey_core::ids::Owner::Member(member) => format!("personal (member {member})"),
    };
    let status = status_text(c.status);
    let used = c.last_used_at.map_or_else(|| "never".to_owned(), |t| t.to_string());
    let account = c.account.as_deref().map_or(Cow::Borrowed("unknown"), shown);
    format!(
        "name           {}\nid             {}\nprovider       {}\naccount        {account}\nbase URL       {}\nallowed hosts  {}\nowner          {owner}\nstatus         {status}\nlast used      {used}\nkey version    {}\nrevision       {}\nagents call    /p/{}/...",
        shown(&c.name),
        c.id,
        shown(&c.provider),
        shown(&c.upstream_base_url),
        shown_all(&c.allowed_hosts, ", "),
        c.key_version,
        c.revision,
        shown(&c.name)
    )
}

/// A credential's status for people, in listings and `credential show` alike.
fn status_text(status: CredentialStatus) -> &'static str {
    match status {
        CredentialStatus::Active => "active",
        CredentialStatus::ReconnectNeeded => "reconnect needed",
        CredentialStatus::Disabled => "disabled",
    }
}

/// Text or JSON on stdout.
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    pub(crate) fn value(&self, value: &serde_json::Value, text: &str) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        if self.json {
            writeln!(stdout, "{}", serde_json::to_string_pretty(value)?)?;
        } else {
            writeln!(stdout, "{text}")?;
        }
        Ok(())
    }

    pub(crate) fn list(
        &self,
        value: &serde_json::Value,
        lines: &[String],
        empty: &str,
    ) -> anyhow::Result<()> {
        if self.json {
            return self.value(value, "");
        }
        let text = if lines.is_empty() { empty.to_owned() } else { lines.join("\n") };
        self.value(value, &text)
    }
}
