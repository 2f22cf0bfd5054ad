//! Members and devices: inviting, joining a workspace, admitting a device after comparing
//! fingerprints, receiving keys, listing and removing devices and members.

use std::io::Read as _;

use anyhow::{Context as _, bail};
use latchkey_client::api::{BrokerEndpoint, InviteCode, InviteFor, Member, PendingInvite, Role};
use latchkey_client::profile::Profile;
use latchkey_client::rotation::{RotationScope, RotationSummary, rotate};
use latchkey_client::workspace::{Joining, admit_device, join_workspace, receive_keys};
use latchkey_core::ids::MemberId;
use latchkey_core::tls::TrustAnchors;
use serde_json::json;
use zeroize::Zeroizing;

use crate::approvals::unix_now;
use crate::cli::{DeviceCommand, InviteCommand, KeyStoreChoice, MemberCommand, RoleChoice};
use crate::commands::{Output, authority_lines, client, key_store, rotation_progress};
use crate::shown::shown;

/// The arguments of `workspace join`.
pub(crate) struct Join {
    pub(crate) broker: BrokerEndpoint,
    pub(crate) member_name: Option<String>,
    pub(crate) device_of: Option<MemberId>,
    pub(crate) device_name: String,
    pub(crate) code_stdin: bool,
}

/// `latchkey invite ...`.
pub(crate) async fn invite(
    profile: &Profile,
    choice: KeyStoreChoice,
    out: &Output,
    command: InviteCommand,
) -> anyhow::Result<()> {
    let client = client(profile, choice).await?;
    match command {
        InviteCommand::Create { role, device_for, duration } => {
            let authorities = client.endpoint().authorities();
            let invite_for = match device_for {
                Some(member) => InviteFor::Device(member),
                None => InviteFor::NewMember(match role {
                    RoleChoice::Admin => Role::Admin,
                    RoleChoice::Member => Role::Member,
                }),
            };
            let invite = client.create_invite(invite_for, Some(duration.secs)).await?;
            let mut text = format!(
                "Invite code (one use, shown once, expires in {}): {}\nThe new device joins with it, then you compare fingerprints.\nNot needed after all? latchkey invite revoke {}",
                remaining(invite.expires_at.saturating_sub(unix_now())),
                invite.code.expose_secret(),
                invite.id
            );
            if let Some(authorities) = authorities {
                text.push_str(
                    "\nThe broker's certificate comes from a private authority: give the new device its PEM too (`latchkey workspace broker-ca --print`), to join with --broker-ca FILE. Its SHA-256 fingerprint, to compare:\n",
                );
                text.push_str(&authority_lines(&authorities.sha256_fingerprints()));
            }
            out.value(
                &json!({
                    "id": invite.id, "code": invite.code.expose_secret(),
                    "expires_at": invite.expires_at,
                    "broker_ca": authorities.map(TrustAnchors::sha256_fingerprints),
                }),
                &text,
            )
        }
        InviteCommand::List => {
            let invites = client.invites().await?;
            let members = if invites.is_empty() { Vec::new() } else { client.members().await? };
            let now = unix_now();
            let values: Vec<serde_json::Value> = invites.iter().map(invite_json).collect();
            let lines: Vec<String> = invites
                .iter()
                .map(|invite| {
                    format!(
                        "{}  {:<28} by {:<16} expires in {}",
                        invite.id,
                        admits(invite, &members),
                        shown(&member_name(&members, invite.created_by_member)),
                        remaining(invite.expires_at.saturating_sub(now)),
                    )
                })
                .collect();
            out.list(&json!(values), &lines, "No pending invites.")
        }
        InviteCommand::Revoke { id } => {
            client.revoke_invite(id).await?;
            out.value(
                &json!({"revoked": id}),
                &format!("Revoked invite {id}; its code is refused from now on."),
            )
        }
    }
}

/// A pending invite in `--json` listings: the broker's fields, never a code.
fn invite_json(invite: &PendingInvite) -> serde_json::Value {
    let mut value = json!({
        "id": invite.id, "created_by": invite.created_by,
        "created_by_member": invite.created_by_member, "created_at": invite.created_at,
        "expires_at": invite.expires_at,
    });
    match invite.invite_for {
        InviteFor::NewMember(role) => value["role"] = json!(role),
        InviteFor::Device(member) => value["member"] = json!(member),
    }
    value
}

/// What accepting an invite does, for a listing line.
fn admits(invite: &PendingInvite, members: &[Member]) -> String {
    match invite.invite_for {
        InviteFor::NewMember(Role::Admin) => "a new admin".to_owned(),
        InviteFor::NewMember(Role::Member) => "a new member".to_owned(),
        InviteFor::Device(member) => format!("a device of {}", member_name(members, member)),
    }
}

/// A member's name, or their id when they are not among `members` (removed since the listing).
fn member_name(members: &[Member], id: MemberId) -> String {
    members.iter().find(|m| m.id == id).map_or_else(|| id.to_string(), |m| m.name.clone())
}

/// "6 d 23 h", "23 h 59 min", "59 min", "under a minute".
fn remaining(secs: u64) -> String {
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => "under a minute".to_owned(),
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// `latchkey workspace join`.
pub(crate) async fn join(
    profile: &Profile,
    choice: KeyStoreChoice,
    out: &Output,
    join: Join,
) -> anyhow::Result<()> {
    let joining = match (join.device_of, join.member_name) {
        (Some(member), _) => Joining::ExistingMember(member),
        (None, Some(name)) => Joining::NewMember { name },
        // clap requires one of the two; kept as an error rather than a panic.
        (None, None) => bail!("pass --member-name (a new member) or --device-of (your own device)"),
    };
    let code = read_invite_code(join.code_stdin)?;
    let store = key_store(profile, choice, true)?;
    let joined =
        join_workspace(profile, &store, join.broker, &code, &joining, &join.device_name).await?;
    out.value(
        &json!({
            "workspace": joined.workspace, "member": joined.member, "device": joined.device,
            "role": joined.role, "new_member": joined.new_member,
            "fingerprint": joined.fingerprint.to_string(),
        }),
        &format!(
            "Joined workspace {} as device {}.\nThis device's fingerprint: {}\nRead it to the member admitting you: they run\n  latchkey device admit {} --fingerprint {}\nthen, with the fingerprint their device shows:\n  latchkey device receive-keys --from <their fingerprint>",
            joined.workspace, joined.device, joined.fingerprint, joined.device, joined.fingerprint
        ),
    )
}

/// `latchkey device ...`.
pub(crate) async fn device(
    profile: &Profile,
    choice: KeyStoreChoice,
    out: &Output,
    command: DeviceCommand,
) -> anyhow::Result<()> {
    match command {
        DeviceCommand::List => {
            let client = client(profile, choice).await?;
            let me = client.device_id();
            let members = client.members().await?;
            let mut values = Vec::new();
            let mut lines = Vec::new();
            for member in &members {
                for device in &member.devices {
                    let this = device.id == me;
                    values.push(json!({
                        "id": device.id, "name": device.name, "member": member.id,
                        "member_name": member.name, "created_at": device.created_at,
                        "fingerprint": device.broker_fingerprint.to_string(),
                        "this_device": this,
                    }));
                    lines.push(format!(
                        "{}  {:<20} {:<16} {}{}",
                        device.id,
                        shown(&device.name),
                        shown(&member.name),
                        device.broker_fingerprint,
                        if this { "  (this device)" } else { "" }
                    ));
                }
            }
            out.list(&json!(values), &lines, "No devices.")
        }
        DeviceCommand::Admit { id, fingerprint: expected } => {
            let store = key_store(profile, choice, false)?;
            let admitted = admit_device(profile, &store, id, &expected).await?;
            let keys: Vec<&str> = admitted
                .shared
                .iter()
                .map(|kind| match kind {
                    latchkey_core::keys::WrappedKind::Workspace => "workspace",
                    latchkey_core::keys::WrappedKind::Member => "member",
                })
                .collect();
            out.value(
                &json!({
                    "device": admitted.device, "member": admitted.member, "keys": keys,
                    "fingerprint": admitted.fingerprint.to_string(),
                }),
                &format!(
                    "Admitted device {}: sent it the {} key{}.\nOn that device, confirm this device's fingerprint:\n  latchkey device receive-keys --from {}",
                    admitted.device,
                    keys.join(" and "),
                    if keys.len() == 1 { "" } else { "s" },
                    admitted.fingerprint
                ),
            )
        }
        DeviceCommand::ReceiveKeys { from } => {
            let store = key_store(profile, choice, false)?;
            let received = receive_keys(profile, &store, Some(&from)).await?;
            out.value(
                &json!({
                    "workspace_keys": received.workspace_keys,
                    "member_keys": received.member_keys, "ignored": received.ignored,
                }),
                &format!(
                    "Stored {} workspace and {} member key versions from the device you confirmed.",
                    received.workspace_keys.len(),
                    received.member_keys.len()
                ),
            )
        }
        DeviceCommand::Remove { id, no_rotate } => {
            let client = client(profile, choice).await?;
            let me = client.me().await?;
            let mine = client
                .members()
                .await?
                .iter()
                .any(|m| m.id == me.member && m.devices.iter().any(|d| d.id == id));
            let removal = client.remove_device(id).await?;
            let mut scopes = Vec::new();
            if removal.rotation_recommended && me.role == Role::Admin {
                scopes.push(RotationScope::Shared);
            }
            if mine {
                scopes.push(RotationScope::Member);
            }
            let removed = format!("Removed device {id}; it is refused from its next request.");
            let mut rotated = Vec::new();
            if !no_rotate {
                rotated = rotate_scopes(profile, choice, out, &scopes).await?;
            }
            let mut text = removed + &rotation_text(&rotated, no_rotate.then_some(&scopes[..]));
            if removal.rotation_recommended && me.role != Role::Admin {
                text.push_str(
                    "\nIt held the workspace key: ask an admin to rotate it (`latchkey rotate`).",
                );
            }
            out.value(&json!({"removal": removal, "rotations": rotated_json(&rotated)}), &text)
        }
    }
}

/// `latchkey member ...`.
pub(crate) async fn member(
    profile: &Profile,
    choice: KeyStoreChoice,
    out: &Output,
    command: MemberCommand,
) -> anyhow::Result<()> {
    let client = client(profile, choice).await?;
    match command {
        MemberCommand::List => {
            let members = client.members().await?;
            let lines: Vec<String> = members
                .iter()
                .map(|m| {
                    let role = match m.role {
                        Role::Admin => "admin",
                        Role::Member => "member",
                    };
                    format!(
                        "{}  {:<20} {role:<7} {} device{}",
                        m.id,
                        shown(&m.name),
                        m.devices.len(),
                        if m.devices.len() == 1 { "" } else { "s" }
                    )
                })
                .collect();
            out.list(&serde_json::to_value(&members)?, &lines, "No members.")
        }
        MemberCommand::Remove { id, no_rotate } => {
            let removal = client.remove_member(id).await?;
            let scopes =
                if removal.rotation_recommended { vec![RotationScope::Shared] } else { Vec::new() };
            let mut rotated = Vec::new();
            if !no_rotate {
                rotated = rotate_scopes(profile, choice, out, &scopes).await?;
            }
            let plural = |n: u64| if n == 1 { "" } else { "s" };
            let text = format!(
                "Removed member {id} and {} device{}; {} agent{} revoked and {} personal credential{} deleted with them.{}",
                removal.devices_removed,
                plural(removal.devices_removed),
                removal.agents_revoked,
                plural(removal.agents_revoked),
                removal.personal_credentials_deleted,
                plural(removal.personal_credentials_deleted),
                rotation_text(&rotated, no_rotate.then_some(&scopes[..]))
            );
            out.value(&json!({"removal": removal, "rotations": rotated_json(&rotated)}), &text)
        }
        MemberCommand::Role { id, role } => {
            let role = match role {
                RoleChoice::Admin => Role::Admin,
                RoleChoice::Member => Role::Member,
            };
            client.set_member_role(id, role).await?;
            out.value(
                &json!({"member": id, "role": role}),
                &format!(
                    "Member {id} is now {}.",
                    if role == Role::Admin { "an admin" } else { "a member" }
                ),
            )
        }
    }
}

/// The invite code from stdin or a hidden prompt (it is a secret until used).
fn read_invite_code(from_stdin: bool) -> anyhow::Result<InviteCode> {
    let raw = Zeroizing::new(if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the invite code from stdin")?;
        text
    } else {
        rpassword::prompt_password("Invite code: ").context(
            "cannot read the invite code from the terminal; pipe it in with --code-stdin",
        )?
    });
    Ok(raw.parse()?)
}

/// Rotates `scopes` after a removal, with the progress on stderr (not with `--json`).
async fn rotate_scopes(
    profile: &Profile,
    choice: KeyStoreChoice,
    out: &Output,
    scopes: &[RotationScope],
) -> anyhow::Result<Vec<(RotationScope, RotationSummary)>> {
    let store = key_store(profile, choice, false)?;
    let mut rotated = Vec::new();
    for scope in scopes {
        let summary =
            rotate(profile, &store, *scope, &rotation_progress(out)).await.with_context(|| {
                format!(
                    "removed, but rotating the {} key failed: run `{}` to finish",
                    scope_name(*scope),
                    rotate_command(*scope)
                )
            })?;
        rotated.push((*scope, summary));
    }
    Ok(rotated)
}

fn scope_name(scope: RotationScope) -> &'static str {
    match scope {
        RotationScope::Shared => "workspace",
        RotationScope::Member => "member",
    }
}

fn rotate_command(scope: RotationScope) -> &'static str {
    match scope {
        RotationScope::Shared => "latchkey rotate",
        RotationScope::Member => "latchkey rotate --scope member",
    }
}

/// What a removal's rotations did, or (`skipped`, with `--no-rotate`) what is left to rotate.
fn rotation_text(
    rotated: &[(RotationScope, RotationSummary)],
    skipped: Option<&[RotationScope]>,
) -> String {
    let mut text = String::new();
    for (scope, summary) in rotated {
        text.push_str(&format!(
            "\nRotated the {} key to version {}: {} credential{} re-sealed; anything copied from what was removed is useless now.",
            scope_name(*scope),
            summary.to,
            summary.credentials,
            if summary.credentials == 1 { "" } else { "s" },
        ));
    }
    for scope in skipped.unwrap_or_default() {
        text.push_str(&format!(
            "\nNot rotated (--no-rotate): the {} key it held stays current until `{}`.",
            scope_name(*scope),
            rotate_command(*scope)
        ));
    }
    text
}

fn rotated_json(rotated: &[(RotationScope, RotationSummary)]) -> serde_json::Value {
    rotated
        .iter()
        .map(|(scope, s)| {
            json!({
                "scope": scope_name(*scope), "from": s.from, "to": s.to,
                "credentials": s.credentials, "devices": s.devices, "not_sent": s.not_sent,
            })
        })
        .collect()
}
