//! `latchkey policy ...`: the workspace's Cedar policies.

use std::io::Read as _;

use anyhow::{Context as _, bail};
use latchkey_client::api::{Decision, Expected, GrantKind, NewPolicy, Policy};
use latchkey_client::policies::{CallToCheck, InjectToCheck, check_call, check_inject, set_policy};
use latchkey_client::profile::Profile;
use serde_json::json;

use crate::cli::{GrantChoice, KeyStoreChoice, PolicyCommand};
use crate::commands::{NotFound, Output, client};
use crate::shown::shown;

/// Largest policy file read (the broker takes at most 16 KiB of source).
const MAX_POLICY_FILE_BYTES: u64 = 64 * 1024;

/// `latchkey policy ...`.
pub(crate) async fn policy(
    profile: &Profile,
    choice: KeyStoreChoice,
    out: &Output,
    command: PolicyCommand,
) -> anyhow::Result<()> {
    match command {
        PolicyCommand::List => {
            let policies = client(profile, choice).await?.policies().await?;
            let lines: Vec<String> = policies
                .iter()
                .map(|p| {
                    format!(
                        "{:<36} {:<8} r{:<4} {}",
                        shown(p.id.as_str()),
                        state(p),
                        p.revision,
                        shown(&p.description)
                    )
                })
                .collect();
            out.list(&serde_json::to_value(&policies)?, &lines, "No policies.")
        }
        PolicyCommand::Set { id, file, description, disabled, if_revision } => {
            let source = read_source(&file)?;
            let client = client(profile, choice).await?;
            let expected = Expected::from_revision(if_revision);
            let new = NewPolicy {
                source: &source,
                description: &description,
                enabled: !disabled,
                expected,
            };
            let saved = set_policy(&client, &id, &new).await?;
            let mut text = format!(
                "{} policy {id} (revision {}){}.",
                if saved.created { "Created" } else { "Replaced" },
                saved.policy.revision,
                if disabled { ", disabled" } else { "" }
            );
            for warning in &saved.warnings {
                text.push_str(&format!("\nwarning: {warning}"));
            }
            out.value(&serde_json::to_value(&saved)?, &text)
        }
        PolicyCommand::Show { id } => {
            let policies = client(profile, choice).await?.policies().await?;
            let Some(policy) = policies.into_iter().find(|p| p.id == id) else {
                return Err(NotFound(format!(
                    "no policy {id} in this workspace; list them with `latchkey policy list`"
                ))
                .into());
            };
            let mut text = format!(
                "{}: revision {}, {}",
                shown(policy.id.as_str()),
                policy.revision,
                state(&policy)
            );
            if !policy.description.is_empty() {
                text.push_str(&format!("\n{}", shown(&policy.description)));
            }
            for problem in &policy.problems {
                text.push_str(&format!("\nproblem: {problem}"));
            }
            text.push_str(&format!("\n\n{}", shown_source(&policy.source)));
            out.value(&serde_json::to_value(&policy)?, text.trim_end())
        }
        PolicyCommand::Remove { id, if_revision } => {
            client(profile, choice).await?.delete_policy(&id, if_revision).await?;
            out.value(&json!({"deleted": id}), &format!("Deleted policy {id}."))
        }
        PolicyCommand::Check {
            agent,
            credential,
            method,
            path,
            host,
            grant,
            inject,
            ttl,
            command_name,
        } => {
            let client = client(profile, choice).await?;
            let (decision, subject) = if inject {
                let command = command_name.as_deref().unwrap_or("unnamed");
                let lifetime_secs = ttl.secs;
                let decision = check_inject(
                    &client,
                    &InjectToCheck {
                        agent,
                        credential: &credential,
                        lifetime_secs,
                        command,
                        at: None,
                    },
                )
                .await?;
                (decision, format!("inject {credential} into {command} for {ttl}"))
            } else {
                let (Some(method), Some(path)) = (method, path) else {
                    bail!("check a call with --method and --path, or an inject with --inject");
                };
                let grant = match grant {
                    GrantChoice::Standing => GrantKind::Standing,
                    GrantChoice::SingleUse => GrantKind::SingleUse,
                    GrantChoice::None => GrantKind::None,
                };
                let decision = check_call(
                    &client,
                    &CallToCheck {
                        agent,
                        credential: &credential,
                        method,
                        path: &path,
                        host: host.as_deref(),
                        grant,
                        at: None,
                    },
                )
                .await?;
                (decision, format!("{} {path} via {credential}", method.as_str()))
            };
            let verdict = match decision.decision {
                Decision::Allow => "allowed",
                Decision::Deny => "denied",
                Decision::ApprovalRequired => "allowed once the agent's owner approves it",
            };
            let mut text = format!("{subject}: {verdict}");
            if !decision.policies.is_empty() {
                text.push_str(&format!(
                    " (policies: {})",
                    crate::shown::shown_all(&decision.policies, ", ")
                ));
            }
            for error in &decision.errors {
                text.push_str(&format!("\nevaluation error: {}", shown(error)));
            }
            out.value(&serde_json::to_value(&decision)?, &text)
        }
    }
}

/// Whether a policy is evaluated, as listed.
fn state(policy: &Policy) -> &'static str {
    match (policy.enabled, policy.problems.is_empty()) {
        (_, false) => "INVALID",
        (true, true) => "enabled",
        (false, true) => "disabled",
    }
}

/// Cedar text as shown in a terminal: line by line, each line's control and bidi characters
/// escaped (an admin wrote it, but a terminal should not take orders from it).
fn shown_source(source: &str) -> String {
    source.lines().map(|line| shown(line).to_string()).collect::<Vec<_>>().join("\n")
}

/// A policy's source from a file, or stdin for `-`.
fn read_source(path: &std::path::Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_POLICY_FILE_BYTES)
            .read_to_string(&mut text)
            .context("cannot read the policy from stdin (it must be UTF-8)")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_POLICY_FILE_BYTES).read_to_string(&mut text))
            .with_context(|| format!("cannot read {} (it must be UTF-8 text)", path.display()))?;
    }
    Ok(text)
}
