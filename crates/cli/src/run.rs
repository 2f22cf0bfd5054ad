//! `latchkey run`: a command as an agent, with credentials through a private local proxy
//! (`--credential`), injected into its environment (`--inject`), or both.
//!
//! Inject mode asks the broker for every injected credential first (policy and audit; see
//! `latchkey_client::inject`); if any is refused, the command never runs. The values go into the
//! command's environment only, never its arguments, this process's output or a log, and this
//! process's copies are dropped (zeroized) once the command is spawned. The command runs as a
//! job of its own (see `crate::job`); it and everything it started are stopped when the lifetime
//! (`--ttl`) runs out, and on Linux whatever it left behind (even outside its process group) is
//! stopped when it exits.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use latchkey_client::catalog::{Catalog, is_env_var_name};
use latchkey_client::inject::{InjectTerms, InjectedCredential, InjectedKind, release_for_inject};
use latchkey_client::keychain::SharedKeyStore;
use latchkey_client::profile::Profile;
use latchkey_core::ids::AgentId;
use latchkey_core::token::AgentToken;
use zeroize::Zeroizing;

use crate::cli::{KeyStoreChoice, LocalAccess, RunAccess};
use crate::commands::{LocalSession, key_store, sdk_environment};
use crate::job::Job;

/// Where the agent's token comes from.
const AGENT_TOKEN_ENV: &str = "LATCHKEY_AGENT_TOKEN";
/// Variables the command never inherits from this process: they open the device's key file or
/// a recovery kit.
const NEVER_INHERITED: [&str; 2] = ["LATCHKEY_KEYSTORE_PASSPHRASE", "LATCHKEY_RECOVERY_PASSPHRASE"];

/// One `--inject CREDENTIAL[=ENV_VAR]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InjectSpec {
    credential: String,
    variable: Option<String>,
}

impl InjectSpec {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let (credential, variable) = match text.split_once('=') {
            Some((credential, variable)) => (credential, Some(variable)),
            None => (text, None),
        };
        if credential.is_empty() {
            bail!("--inject {text:?}: name a credential, as CREDENTIAL or CREDENTIAL=ENV_VAR");
        }
        if let Some(variable) = variable {
            check_variable(variable)?;
        }
        Ok(Self { credential: credential.to_owned(), variable: variable.map(str::to_owned) })
    }
}

/// An environment variable a credential may be put in: a plain upper-case name that does not
/// change how the command is started or what Latchkey itself reads.
fn check_variable(name: &str) -> anyhow::Result<()> {
    if !is_env_var_name(name) {
        bail!(
            "{name:?} is not an environment variable name: 1 to 64 of A-Z, 0-9 and _, not starting with a digit"
        );
    }
    let reserved = name == "PATH"
        || name.starts_with("LD_")
        || name.starts_with("DYLD_")
        || name.starts_with("LATCHKEY_");
    if reserved {
        bail!("{name} changes how the command starts or what Latchkey reads; choose another name");
    }
    Ok(())
}

/// `latchkey run ...`.
pub(crate) async fn run(
    profile: &Profile,
    choice: KeyStoreChoice,
    access: RunAccess,
    command: Vec<String>,
) -> anyhow::Result<()> {
    let specs =
        access.inject.iter().map(|s| InjectSpec::parse(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let lifetime_secs = if specs.is_empty() { None } else { Some(access.ttl.secs) };
    let Some(program) = command.first() else { bail!("name the command to run after --") };
    let agent = access.agent;
    let token = Zeroizing::new(std::env::var(AGENT_TOKEN_ENV).with_context(|| {
        format!(
            "set {AGENT_TOKEN_ENV} to the agent's token (it is passed to the command where its SDKs expect a key, and proves the agent for --inject)"
        )
    })?);
    let store = key_store(profile, choice, false)?;

    // Everything injected is released (and audited) before anything runs: a refusal of any one
    // means the command never starts.
    let injected = match lifetime_secs {
        Some(lifetime_secs) => {
            let token = AgentToken::parse(&token).context(
                "LATCHKEY_AGENT_TOKEN is not an agent token (lk_...): give the token shown when the agent was created",
            )?;
            release_all(profile, &store, agent, &token, &specs, lifetime_secs, program).await?
        }
        None => Vec::new(),
    };

    let proxied = (!access.credentials.is_empty()).then(|| LocalAccess {
        agent: access.agent,
        credentials: access.credentials.clone(),
        methods: access.methods.clone(),
        paths: access.paths.clone(),
        duration: access.duration.clone(),
    });
    let session = match &proxied {
        Some(local) => {
            let session = LocalSession::open(profile, &store, local).await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("cannot listen on loopback")?;
            Some(session.serve(listener).await?)
        }
        None => None,
    };

    let mut child = tokio::process::Command::new(program);
    child.args(&command[1..]);
    for name in NEVER_INHERITED {
        child.env_remove(name);
    }
    if let Some((proxy, session)) = &session {
        let base = format!("http://{}", proxy.address());
        child.env("LATCHKEY_PROXY_URL", &base);
        for credential in &session.credentials {
            for (variable, value) in sdk_environment(&base, &credential.0, &credential.1, &token) {
                child.env(variable, value);
            }
        }
    }
    for (variable, released) in &injected {
        child.env(variable, environment_value(released)?);
    }
    // With injected credentials the job is contained: nothing the command starts outlives it
    // or the lifetime (on Linux and Windows; see `crate::job`).
    let contained = lifetime_secs.is_some();
    let spawned =
        Job::spawn(&mut child, contained).with_context(|| format!("cannot run {program:?}"));
    // This process's copies of the injected values go now; the command has its own.
    drop(child);
    drop(injected);
    let status = match spawned {
        Ok(mut job) => {
            let lifetime = lifetime_secs.map(Duration::from_secs);
            let ran_out = || {
                note(&format!(
                    "latchkey: the injected credentials' lifetime ({}) ran out: stopping {program} and what it started.",
                    human(lifetime_secs.unwrap_or_default())
                ));
            };
            let left_behind = |count: usize| {
                let processes = if count == 1 { "a process" } else { "processes" };
                // Windows ends a job object's processes at once; Unix gives them a grace period.
                let how = if cfg!(windows) {
                    String::new()
                } else {
                    format!(
                        " (SIGTERM, then SIGKILL {} later)",
                        human(crate::job::STOP_GRACE.as_secs())
                    )
                };
                note(&format!(
                    "latchkey: {program} exited and left {processes} behind ({count}) with the injected credentials: stopping them{how}."
                ));
            };
            job.wait(lifetime, ran_out, left_behind, program).await
        }
        Err(error) => Err(error),
    };
    if let Some((proxy, session)) = session {
        proxy.stop().await;
        session.close().await?;
    }
    let code = exit_code(status?);
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// Releases every `--inject` (in order), each with its environment variable: all of them in one
/// request to the broker, so a refusal of any one releases none.
async fn release_all(
    profile: &Profile,
    store: &SharedKeyStore,
    agent: AgentId,
    token: &AgentToken,
    specs: &[InjectSpec],
    lifetime_secs: u64,
    program: &str,
) -> anyhow::Result<Vec<(String, InjectedCredential)>> {
    let command = program_name(program);
    let listed =
        latchkey_client::workspace::broker_client(profile, store).await?.credentials().await?;
    // The variables are settled before the broker is asked, so a missing name releases nothing.
    let mut variables: Vec<String> = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let variable = match &spec.variable {
            Some(variable) => variable.clone(),
            None => default_variable(&spec.credential, &listed)?,
        };
        if let Some(earlier) = variables.iter().position(|v| *v == variable) {
            bail!(
                "{variable} would hold both {} and {}: give one of them another name with CREDENTIAL=ENV_VAR",
                specs[earlier].credential,
                spec.credential
            );
        }
        if specs[..index].iter().any(|s| s.credential == spec.credential) {
            bail!("--inject {} is given twice: name each credential once", spec.credential);
        }
        variables.push(variable);
    }
    let names: Vec<&str> = specs.iter().map(|s| s.credential.as_str()).collect();
    let terms = InjectTerms { agent, token, credentials: &names, lifetime_secs, command: &command };
    let released = release_for_inject(profile, store, &terms).await?;
    for (variable, credential) in variables.iter().zip(&released) {
        note(&release_note(variable, credential, &command, lifetime_secs));
    }
    Ok(variables.into_iter().zip(released).collect())
}

/// The provider's environment variable for a credential named `name`, from the catalog.
fn default_variable(
    name: &str,
    listed: &[latchkey_client::api::CredentialInfo],
) -> anyhow::Result<String> {
    let credential = listed.iter().find(|c| c.name == name).ok_or_else(|| {
        crate::commands::NotFound(format!(
            "no credential named {name:?} in this workspace: list them with `latchkey credential list`"
        ))
    })?;
    Catalog::builtin()
        .get(&credential.provider)
        .and_then(|p| p.env_var.clone())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "provider {:?} has no usual environment variable: name one with --inject {name}=ENV_VAR",
                credential.provider
            )
        })
}

/// What is said on stderr about a release (never the value).
fn release_note(
    variable: &str,
    released: &InjectedCredential,
    command: &str,
    lifetime: u64,
) -> String {
    let mut text = format!(
        "latchkey: {} is in {variable} for {command}, for up to {} (audit record {}). Until the command exits, a pause, a revocation or a disabled credential cannot take it back.",
        released.credential.name,
        human(lifetime),
        released.allowed.audit_seq
    );
    if let InjectedKind::OAuthAccessToken { expires_at } = released.kind {
        text.push_str(
            " It is an OAuth access token and will not be refreshed while the command runs",
        );
        match expires_at {
            Some(at) if at < released.allowed.expires_at => {
                text.push_str(&format!(
                    "; it expires at {at} (unix seconds), before the lifetime ends."
                ));
            }
            _ => text.push('.'),
        }
    }
    text
}

/// The value for the environment: the bytes as they are (Unix takes any bytes but NUL, which
/// the client library refuses), or UTF-8 elsewhere.
fn environment_value(released: &InjectedCredential) -> anyhow::Result<&std::ffi::OsStr> {
    let bytes = released.secret.expose_secret();
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt as _;
        Ok(std::ffi::OsStr::from_bytes(bytes))
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(bytes).map(std::ffi::OsStr::new).map_err(|_| {
            anyhow::anyhow!(
                "{} is not UTF-8 text, which environment variables need here",
                released.credential.name
            )
        })
    }
}

/// The command's exit code, or 128 + N when signal N ended it, as a shell reports it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return 128 + signal;
        }
    }
    1
}

/// The program's name as the broker records it: the last path component, cut to what it
/// accepts (a command the broker would refuse becomes `unnamed`).
fn program_name(program: &str) -> String {
    let name =
        std::path::Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let mut cut = name.to_owned();
    while cut.len() > latchkey_client::inject::MAX_COMMAND_BYTES {
        cut.pop();
    }
    if latchkey_client::inject::command_ok(&cut) { cut } else { "unnamed".to_owned() }
}

/// `3600` as `1h`, `90` as `90s`.
fn human(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// One line on stderr (stdout belongs to the command).
fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_specs_name_a_credential_and_maybe_a_variable() {
        assert_eq!(
            InjectSpec::parse("openai").unwrap(),
            InjectSpec { credential: "openai".into(), variable: None }
        );
        assert_eq!(
            InjectSpec::parse("models=MY_KEY").unwrap(),
            InjectSpec { credential: "models".into(), variable: Some("MY_KEY".into()) }
        );
        for bad in
            ["", "=X", "a=", "a=lower", "a=1X", "a=PATH", "a=LD_PRELOAD", "a=LATCHKEY_AGENT_TOKEN"]
        {
            assert!(InjectSpec::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn the_command_is_named_by_its_program_only() {
        assert_eq!(program_name("/usr/bin/python3"), "python3", "no directory");
        assert_eq!(program_name("./run.sh"), "run.sh");
        assert_eq!(program_name("/"), "unnamed", "nothing to name");
        assert_eq!(program_name(&"x".repeat(300)).len(), 128, "cut to what the broker takes");
    }

    #[cfg(unix)]
    #[test]
    fn exit_codes_follow_the_shell() {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(7 << 8)), 7, "exit(7)");
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(15)), 143, "SIGTERM is 128 + 15");
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(9)), 137, "SIGKILL is 128 + 9");
    }

    #[test]
    fn lifetimes_read_like_the_flags() {
        assert_eq!(human(3600), "1h");
        assert_eq!(human(1800), "30m");
        assert_eq!(human(90), "90s");
    }
}
