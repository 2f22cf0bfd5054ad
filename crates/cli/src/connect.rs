//! `latchkey connect`, `reconnect`, `disconnect` and `credential refresh`: OAuth connections,
//! over `latchkey_client::connection` and `latchkey_client::refresh`.

use std::io::Read as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use latchkey_client::api::CredentialInfo;
use latchkey_client::connection::{
    ConnectRequest, CustomEndpoints, DisconnectOptions, ReconnectOptions, RevocationOutcome,
    connect, disconnect, prepare, reconnect,
};
use latchkey_client::oauth::{
    BrowserLauncher, CommandBrowser, FlowOptions, OAuthError, SystemBrowser,
};
use latchkey_client::profile::Profile;
use latchkey_client::refresh::{
    DEFAULT_BUFFER, RefreshAction, RefreshOptions, RefreshReport, refresh_all, refresh_if_needed,
};
use latchkey_core::secret::SecretBytes;
use serde_json::json;
use url::Url;
use zeroize::Zeroizing;

use crate::cli::{ConnectArgs, KeyStoreChoice};
use crate::commands::{Output, key_store};
use crate::shown::shown;

/// Shows the sign-in URL on stderr (stdout stays for the result, JSON or text) and, unless
/// told not to, hands it to a browser as well.
struct Terminal {
    browser: Option<Box<dyn BrowserLauncher>>,
    provider: String,
    timeout: Duration,
}

impl Terminal {
    /// `open`: the program `LATCHKEY_BROWSER` names, else the system browser, as in the desktop
    /// app; otherwise (`--no-browser`) the link is only printed.
    fn new(open: bool, provider: String, timeout: Duration) -> Self {
        let browser = open.then(|| -> Box<dyn BrowserLauncher> {
            match CommandBrowser::from_env() {
                Some(chosen) => Box::new(chosen),
                None => Box::new(SystemBrowser),
            }
        });
        Self { browser, provider, timeout }
    }
}

impl BrowserLauncher for Terminal {
    #[allow(clippy::print_stderr, reason = "the person signing in reads the link here")]
    fn open(&self, url: &Url) -> Result<(), OAuthError> {
        eprintln!("Sign in at {} with this link:\n{url}", self.provider);
        if let Some(browser) = &self.browser
            && let Err(e) = browser.open(url)
        {
            eprintln!("{e}");
        }
        eprintln!("Waiting up to {} s for the sign-in...", self.timeout.as_secs());
        Ok(())
    }
}

/// `latchkey connect <provider>`
pub(crate) async fn connect_command(
    profile: &Profile,
    choice: KeyStoreChoice,
    out: &Output,
    args: ConnectArgs,
) -> anyhow::Result<()> {
    if args.timeout == 0 {
        bail!("--timeout must be at least 1 second");
    }
    let mut prepared = prepare(ConnectRequest {
        provider: &args.provider,
        name: args.name.as_deref(),
        base_url: args.base_url.as_deref(),
        allowed_hosts: args.allowed_hosts,
        endpoints: CustomEndpoints {
            issuer: args.issuer,
            authorize: args.authorize_url,
            token: args.token_url,
            revocation: args.revocation_url,
        },
        client_id: args.client_id,
        client_secret: None,
        scopes: args.scopes,
        shared: !args.personal,
    })?;
    if prepared.needs_client_secret() || args.client_secret_stdin {
        prepared.set_client_secret(read_client_secret(args.client_secret_stdin)?);
    }
    let store = key_store(profile, choice, false)?;
    let timeout = Duration::from_secs(args.timeout);
    let browser = Terminal::new(!args.no_browser, prepared.provider_name().to_owned(), timeout);
    let options = FlowOptions { timeout, ..FlowOptions::default() };
    let stored = connect(profile, &store, prepared, &browser, &options).await?;
    out.value(
        &serde_json::to_value(&stored)?,
        &format!(
            "Connected {}{} ({}); agents call it at /p/{}/...",
            shown(&stored.name),
            as_account(&stored),
            stored.id,
            shown(&stored.name)
        ),
    )
}

/// ` as <account>` when the connection knows whose account it acts as.
fn as_account(stored: &CredentialInfo) -> String {
    stored.account.as_deref().map(|a| format!(" as {}", shown(a))).unwrap_or_default()
}

/// `latchkey disconnect <name>`
/// `latchkey reconnect`'s options.
pub(crate) struct Reconnect {
    pub(crate) client_id: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) authorize_url: Option<String>,
    pub(crate) no_browser: bool,
    pub(crate) timeout: u64,
}

pub(crate) async fn reconnect_command(
    profile: &Profile,
    choice: KeyStoreChoice,
    out: &Output,
    name: &str,
    args: Reconnect,
) -> anyhow::Result<()> {
    if args.timeout == 0 {
        bail!("--timeout must be at least 1 second");
    }
    let store = key_store(profile, choice, false)?;
    let timeout = Duration::from_secs(args.timeout);
    let browser = Terminal::new(!args.no_browser, name.to_owned(), timeout);
    let options = ReconnectOptions {
        client_id: args.client_id,
        client_secret: None,
        issuer: args.issuer,
        authorize: args.authorize_url,
        flow: FlowOptions { timeout, ..FlowOptions::default() },
    };
    let stored = reconnect(profile, &store, name, &browser, options).await?;
    out.value(
        &serde_json::to_value(&stored)?,
        &format!(
            "Reconnected {}{} ({}); it is active again.",
            shown(&stored.name),
            as_account(&stored),
            stored.id
        ),
    )
}

pub(crate) async fn disconnect_command(
    profile: &Profile,
    choice: KeyStoreChoice,
    out: &Output,
    name: &str,
    options: DisconnectOptions,
) -> anyhow::Result<()> {
    let store = key_store(profile, choice, false)?;
    let (credential, outcome) = disconnect(profile, &store, name, &options).await?;
    let (revocation, text) = match &outcome {
        RevocationOutcome::Revoked => {
            ("revoked", "The provider revoked its tokens.".to_owned())
        }
        RevocationOutcome::NotSupported => (
            "not_supported",
            "The provider has no revocation endpoint: remove the app's access in your account settings there.".to_owned(),
        ),
        RevocationOutcome::Failed(reason) => (
            "failed",
            format!("The revocation failed ({reason}): remove the app's access in your account settings at the provider."),
        ),
        _ => ("unknown", String::new()),
    };
    out.value(
        &json!({"deleted": credential.id, "revocation": revocation}),
        &format!("{text}\nDeleted {name}; agents lose it at their next call."),
    )
}

/// The client secret from stdin or a hidden prompt; surrounding whitespace dropped.
fn read_client_secret(from_stdin: bool) -> anyhow::Result<SecretBytes> {
    let raw = Zeroizing::new(if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the client secret from stdin")?;
        text
    } else {
        rpassword::prompt_password("Client secret (not shown): ").context(
            "cannot read the client secret from the terminal; pipe it in with --client-secret-stdin",
        )?
    });
    let secret = raw.trim();
    if secret.is_empty() {
        bail!("the client secret is empty: paste your OAuth app's client secret");
    }
    Ok(SecretBytes::copy_from(secret.as_bytes()))
}

/// `latchkey credential refresh [NAME | --all] [--force]`.
pub(crate) async fn refresh_command(
    profile: &Profile,
    choice: KeyStoreChoice,
    out: &Output,
    name: Option<&str>,
    all: bool,
    force: bool,
) -> anyhow::Result<()> {
    let store = key_store(profile, choice, false)?;
    if !all {
        let Some(name) = name else { bail!("name a credential, or pass --all") };
        let options = RefreshOptions { buffer: DEFAULT_BUFFER, force };
        let outcome = refresh_if_needed(profile, &store, name, options).await?;
        let until = expiry_text(outcome.expires_at);
        let text = match outcome.action {
            RefreshAction::Refreshed => format!("Refreshed {name}; the new token {until}."),
            RefreshAction::RefreshedElsewhere => {
                format!("{name} was refreshed meanwhile by someone else; its token {until}.")
            }
            RefreshAction::InProgress => format!(
                "{name} is being refreshed right now by someone else (the broker, another device or another Latchkey on this one); its token {until}. Nothing was done here."
            ),
            _ => format!("{name} is fresh; its token {until}."),
        };
        return out.value(&serde_json::to_value(&outcome)?, &text);
    }
    let reports = refresh_all(profile, &store, DEFAULT_BUFFER).await?;
    let mut attention = 0_usize;
    let lines: Vec<String> = reports
        .iter()
        .map(|report| match report {
            RefreshReport::Refreshed { credential, expires_at } => {
                format!(
                    "{:<24} refreshed; the new token {}",
                    shown(&credential.name),
                    expiry_text(*expires_at)
                )
            }
            RefreshReport::Fresh { credential, expires_at } => {
                format!(
                    "{:<24} fresh; the token {}",
                    shown(&credential.name),
                    expiry_text(*expires_at)
                )
            }
            RefreshReport::InProgress { credential, expires_at } => format!(
                "{:<24} being refreshed elsewhere right now; the token {}",
                shown(&credential.name),
                expiry_text(*expires_at)
            ),
            RefreshReport::ReconnectNeeded { credential } => {
                attention += 1;
                format!(
                    "{:<24} reconnect needed: run `latchkey reconnect {}`",
                    shown(&credential.name),
                    shown(&credential.name)
                )
            }
            RefreshReport::NoRefreshToken { credential } => {
                format!(
                    "{:<24} no refresh token: reconnect it when it expires",
                    shown(&credential.name)
                )
            }
            RefreshReport::Failed { credential, reason } => {
                attention += 1;
                format!("{:<24} failed: {reason}", shown(&credential.name))
            }
            _ => String::new(),
        })
        .collect();
    out.list(&serde_json::to_value(&reports)?, &lines, "No OAuth connections to refresh.")?;
    if attention > 0 {
        bail!("{attention} of {} connections could not be refreshed (listed above)", reports.len());
    }
    Ok(())
}

/// "expires in 59 min", "has no known expiry", "has expired".
fn expiry_text(expires_at: Option<u64>) -> String {
    let Some(expires_at) = expires_at else {
        return "has no known expiry".to_owned();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match expires_at.checked_sub(now) {
        None | Some(0) => "has expired".to_owned(),
        Some(secs) if secs < 120 => format!("expires in {secs} s"),
        Some(secs) => format!("expires in {} min", secs / 60),
    }
}
