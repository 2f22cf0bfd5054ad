//! `latchkey policy ...`: the workspace's Cedar policies.

use std::io::Read as _;

use anyhow::{Context as _, bail};
use latchkey_client::api::{Decision, GrantKind, NewPolicy};
use latchkey_client::policies::{CallToCheck, InjectToCheck, check_call, check_inject, set_policy};
use latchkey_client::profile::Profile;
use serde_json::json;

use crate::cli::{GrantChoice, KeyStoreChoice, PolicyCommand};
use crate::commands::{Output, client};
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
                    let state = match (p.enabled, p.problems.is_empty()) {
                        (_, false) => "INVALID",
                        (true, true) => "enabled",
                        (false, true) => "disabled",
                    };
                    format!("{:<36} {state:<8} {}", shown(p.id.as_str()), shown(&p.description))
                })
                .collect();
            out.list(&serde_json::to_value(&policies)?, &lines, "No policies.")
        }
        PolicyCommand::Set { id, file, description, disabled } => {
            let source = read_source(&file)?;
            let client = client(profile, choice).await?;
            let saved = set_policy(
                &client,
                &id,
                &NewPolicy { source: &source, description: &description, enabled: !disabled },
            )
            .await?;
            let mut text = format!(
                "{} policy {id}{}.",
                if saved.created { "Created" } else { "Replaced" },
                if disabled { " (disabled)" } else { "" }
            );
            for warning in &saved.warnings {
                text.push_str(&format!("\nwarning: {warning}"));
            }
            out.value(&serde_json::to_value(&saved)?, &text)
        }
        PolicyCommand::Remove { id } => {
            client(profile, choice).await?.delete_policy(&id).await?;
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
