//! `latchkey approvals ...`: the agents' calls the broker holds until a member answers.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::{Context as _, bail};
use latchkey_client::api::{
    APPROVAL_STREAM_READ_TIMEOUT, ApprovalEvent, ApprovalEvents, ApprovalInfo, ApprovalStatus,
    BrokerClient, ClientError,
};
use latchkey_client::approvals::{approve_for, approve_once, deny, get, list};
use latchkey_client::keychain::SharedKeyStore;
use latchkey_client::profile::Profile;
use latchkey_client::workspace::broker_client;
use latchkey_core::ids::AgentId;
use serde_json::json;

use crate::cli::{ApprovalsCommand, KeyStoreChoice};
use crate::commands::{Output, key_store};
use crate::shown::{shown, shown_all};

/// What "for an hour" (`h`) at the `watch` prompt grants.
const HOUR_SECS: u64 = 3600;
/// How long `watch` waits before opening a broken approval stream again.
const RECONNECT_FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to open it.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(30);

/// `latchkey approvals ...`.
pub(crate) async fn approvals(
    profile: &Profile,
    choice: KeyStoreChoice,
    out: &Output,
    command: ApprovalsCommand,
) -> anyhow::Result<()> {
    let store = key_store(profile, choice, false)?;
    match command {
        ApprovalsCommand::List { all } => {
            let approvals = list(profile, &store, all).await?;
            let names = agent_names(&broker_client(profile, &store).await?).await;
            let lines: Vec<String> = approvals.iter().map(|a| line(a, &names)).collect();
            let empty = if all {
                "No approvals."
            } else {
                "No calls are waiting for your approval (`--all` lists answered ones too)."
            };
            out.list(&serde_json::to_value(&approvals)?, &lines, empty)
        }
        ApprovalsCommand::Approve { id, duration, path } => {
            let approval = get(profile, &store, id).await?;
            match duration {
                None => {
                    let answered = approve_once(profile, &store, &approval).await?;
                    out.value(
                        &serde_json::to_value(&answered)?,
                        &format!(
                            "Approved {} {}{} once; the agent's call goes on.",
                            shown(&approval.method),
                            shown(&approval.host),
                            shown(&approval.path)
                        ),
                    )
                }
                Some(duration) => {
                    let approved =
                        approve_for(profile, &store, &approval, duration.secs, path.as_deref())
                            .await?;
                    let grant = &approved.grant;
                    out.value(
                        &json!({"approval": approved.approval, "grant": grant}),
                        &format!(
                            "Approved {} {} via {} for {duration} (until {}); the agent received a capability for its next calls.\nEnd it early with `latchkey grant revoke {}`.",
                            shown(&approval.method),
                            shown_all(&grant.path_patterns, ","),
                            shown(&approval.credential_name),
                            grant.expires_at,
                            grant.id
                        ),
                    )
                }
            }
        }
        ApprovalsCommand::Deny { id } => {
            let answered = deny(profile, &store, id).await?;
            out.value(
                &serde_json::to_value(&answered)?,
                &format!(
                    "Denied {} {}{}; the agent was refused.",
                    shown(&answered.method),
                    shown(&answered.host),
                    shown(&answered.path)
                ),
            )
        }
        ApprovalsCommand::Watch { prompt, read_timeout_ms } => {
            let read_timeout =
                read_timeout_ms.map_or(APPROVAL_STREAM_READ_TIMEOUT, Duration::from_millis);
            watch_approvals(profile, &store, out, prompt, read_timeout).await
        }
    }
}

/// Prints each approval as it arrives and, on a terminal (or with `prompt`), asks about each
/// pending one. A broken stream is opened again, waiting longer after each failed attempt.
async fn watch_approvals(
    profile: &Profile,
    store: &SharedKeyStore,
    out: &Output,
    prompt: bool,
    read_timeout: Duration,
) -> anyhow::Result<()> {
    if prompt && out.json {
        bail!(
            "--prompt asks about each call and --json prints them as lines: use one or the other"
        );
    }
    let interactive = !out.json && (prompt || std::io::stdin().is_terminal());
    let client = broker_client(profile, store).await?;
    let mut names = agent_names(&client).await;
    let mut events = client.approval_events_with_read_timeout(read_timeout).await?;
    let mut asked = HashSet::new();
    if !out.json {
        let _ = writeln!(
            std::io::stderr().lock(),
            "Watching for calls held for your approval (and your agents' calls an admin answers); Ctrl-C stops."
        );
    }
    loop {
        let approvals = match events.next().await {
            Ok(None) => bail!(
                "the broker ended the approval stream (it is restarting, or this device was removed); run `latchkey approvals watch` again"
            ),
            Ok(Some(ApprovalEvent::Approval(approval))) => vec![approval],
            // Events were lost: the pending listing catches up, oldest first.
            Ok(Some(ApprovalEvent::Lagged { .. })) => {
                let mut pending = client.approvals(false).await?;
                pending.reverse();
                // Those that ended meanwhile are forgotten, as their end would have made them.
                asked.retain(|id| pending.iter().any(|a| a.id == *id));
                pending
            }
            Err(error) if is_connection_lost(&error) => {
                events = reconnect(&client, read_timeout, &error).await?;
                // The new stream opens with every pending call: those already asked about
                // are not asked again, and those that ended meanwhile are forgotten.
                let pending = client.approvals(false).await?;
                asked.retain(|id| pending.iter().any(|a| a.id == *id));
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        for approval in approvals {
            if !names.contains_key(&approval.agent) {
                names = agent_names(&client).await;
            }
            if out.json {
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{}", serde_json::to_string(&approval)?)?;
                stdout.flush()?;
                continue;
            }
            // Calls of this member's agents that an admin answers are shown, never asked about.
            let open = approval.status == ApprovalStatus::Pending && approval.answerable;
            if approval.status != ApprovalStatus::Pending {
                // Answered or expired: its id is not seen pending again; a watch of weeks
                // keeps only the calls still open.
                asked.remove(&approval.id);
            }
            if interactive && open && asked.insert(approval.id) {
                ask(profile, store, &approval, &names).await?;
            } else {
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{}", line(&approval, &names))?;
                stdout.flush()?;
            }
        }
    }
}

/// Whether the stream broke on the way (unreachable, reset, or silent past its keep-alives),
/// as opposed to the broker refusing this device: only the first is worth reconnecting for.
fn is_connection_lost(error: &ClientError) -> bool {
    matches!(error, ClientError::Transport { .. } | ClientError::Stalled { .. })
}

/// Opens the approval stream again after `lost`, saying so on stderr: first after
/// [`RECONNECT_FIRST_DELAY`], then twice as long after each failed attempt, up to
/// [`RECONNECT_MAX_DELAY`]. A refusal by the broker ends the watch.
async fn reconnect(
    client: &BrokerClient,
    read_timeout: Duration,
    lost: &ClientError,
) -> anyhow::Result<ApprovalEvents> {
    let mut delay = RECONNECT_FIRST_DELAY;
    let mut why = lost.to_string();
    loop {
        let _ = writeln!(
            std::io::stderr().lock(),
            "The approval stream broke ({why}); reconnecting in {}s.",
            delay.as_secs()
        );
        tokio::time::sleep(delay).await;
        match client.approval_events_with_read_timeout(read_timeout).await {
            Ok(events) => {
                let _ = writeln!(std::io::stderr().lock(), "Reconnected; watching again.");
                return Ok(events);
            }
            Err(error) if is_connection_lost(&error) => {
                why = error.to_string();
                delay = (delay * 2).min(RECONNECT_MAX_DELAY);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Shows a pending call in full and does what the member answers.
async fn ask(
    profile: &Profile,
    store: &SharedKeyStore,
    approval: &ApprovalInfo,
    names: &HashMap<AgentId, String>,
) -> anyhow::Result<()> {
    let left = approval.expires_at.saturating_sub(unix_now());
    {
        let mut stdout = std::io::stdout().lock();
        write!(
            stdout,
            "\n{}\nApprove [o]nce, for an [h]our, [d]eny, [s]kip? ",
            details(approval, names, left)
        )?;
        stdout.flush()?;
    }
    let answer = tokio::task::spawn_blocking(|| {
        let mut text = String::new();
        std::io::stdin().read_line(&mut text).map(|_| text)
    })
    .await
    .context("the prompt failed")?
    .context("cannot read the answer from the terminal")?;
    let outcome = match answer.trim().to_ascii_lowercase().as_str() {
        "o" | "once" => {
            approve_once(profile, store, approval).await.map(|_| "Approved once.".to_owned())
        }
        "h" | "hour" => approve_for(profile, store, approval, HOUR_SECS, None)
            .await
            .map(|a| format!("Approved for an hour (grant {}).", a.grant.id)),
        "d" | "deny" => deny(profile, store, approval.id).await.map(|_| "Denied.".to_owned()),
        _ => Ok("Skipped; it stays pending until someone answers or it expires.".to_owned()),
    };
    // A failed answer (already answered elsewhere, expired) is reported; watching goes on.
    match outcome {
        Ok(text) => writeln!(std::io::stdout().lock(), "{text}")?,
        Err(error) => {
            let _ = writeln!(std::io::stderr().lock(), "error: {error}");
        }
    }
    Ok(())
}

/// One line per approval, for listings and the stream.
fn line(a: &ApprovalInfo, names: &HashMap<AgentId, String>) -> String {
    format!(
        "{}  {:<8} {} {}{}  via {}  by {}{}",
        a.id,
        a.status.as_str(),
        shown(&a.method),
        shown(&a.host),
        shown(&a.path),
        shown(&a.credential_name),
        agent_label(a.agent, names),
        if a.answerable { "" } else { "  (your agent; an admin answers)" }
    )
}

/// Everything a member needs to decide about a held call (never a query value or a body).
fn details(a: &ApprovalInfo, names: &HashMap<AgentId, String>, left: u64) -> String {
    let query =
        if a.query_keys.is_empty() { "-".to_owned() } else { shown_all(&a.query_keys, ", ") };
    let body = a.body_size.map_or_else(|| "size not declared".to_owned(), |n| format!("{n} bytes"));
    // The policies of a held call are those that allow it once a member approves it.
    let why = match a.policy_ids.as_slice() {
        [] => "no grant covers it".to_owned(),
        [one] => format!("no grant covers it; once approved, policy {} allows it", shown(one)),
        many => format!(
            "no grant covers it; once approved, policies {} allow it",
            shown_all(many, ", ")
        ),
    };
    format!(
        "Held call {}, waiting {left} more seconds:\n  agent       {}\n  credential  {}\n  call        {} {}{}\n  query       {query} (names only)\n  body        {body}\n  why held    {why}",
        a.id,
        agent_label(a.agent, names),
        shown(&a.credential_name),
        shown(&a.method),
        shown(&a.host),
        shown(&a.path)
    )
}

fn agent_label(agent: AgentId, names: &HashMap<AgentId, String>) -> String {
    match names.get(&agent) {
        Some(name) => format!("{} ({agent})", shown(name)),
        None => agent.to_string(),
    }
}

/// The names of the agents this member can see; none if the listing fails (ids are shown).
async fn agent_names(client: &BrokerClient) -> HashMap<AgentId, String> {
    client
        .agents()
        .await
        .map(|agents| agents.into_iter().map(|a| (a.id, a.name)).collect())
        .unwrap_or_default()
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
