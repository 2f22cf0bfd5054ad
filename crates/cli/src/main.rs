//! `latchkey`: the command-line front end of the client library. Each command is a few lines
//! over `latchkey_client`; this file owns only argument handling, prompts, output and exit
//! codes (see `cli::EXIT_CODES`).

mod approvals;
mod cli;
mod commands;
mod connect;
mod job;
mod people;
mod policy;
mod run;
mod shown;

use std::process::ExitCode;

use clap::Parser as _;
use latchkey_client::access::AccessError;
use latchkey_client::api::{ClientError, InviteCodeError, codes};
use latchkey_client::approvals::ApprovalError;
use latchkey_client::audit::AuditError;
use latchkey_client::connection::ConnectError;
use latchkey_client::inject::InjectError;
use latchkey_client::keychain::KeychainError;
use latchkey_client::oauth::OAuthError;
use latchkey_client::policies::PolicyError;
use latchkey_client::profile::ProfileError;
use latchkey_client::recovery::RecoveryKitError;
use latchkey_client::refresh::RefreshError;
use latchkey_client::workspace::WorkspaceError;
use latchkey_core::creation::CreationTokenError;
use latchkey_core::tls::TlsProblem;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
        // The TLS verifier logs every certificate it refuses; the CLI reports that itself, as
        // the command's one error line.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,rustls_platform_verifier=off")
        });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return report(&anyhow::Error::new(error)),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&error),
    }
}

/// Prints `error: <message>` (and a hint where one helps) and picks the documented exit code.
fn report(error: &anyhow::Error) -> ExitCode {
    let (code, hint) = classify(error);
    #[allow(clippy::print_stderr, reason = "the binary's error report, for a person or a script")]
    {
        // Messages can carry what the broker or an agent named: never a terminal's controls.
        eprintln!("error: {}", shown::shown(&message(error)));
        // A refused policy: each of Cedar's problems, with its position, under the error.
        if let Some(PolicyError::Refused { problems }) =
            error.chain().find_map(|c| c.downcast_ref::<PolicyError>())
        {
            for problem in problems {
                eprintln!("  {}", shown::shown(&problem.to_string()));
            }
        }
        if let Some(hint) = hint {
            eprintln!("hint: {hint}");
        }
    }
    ExitCode::from(code)
}

/// The error and its causes on one line, each cause once: library errors often repeat their
/// source in their own message, which `{:#}` would print twice.
fn message(error: &anyhow::Error) -> String {
    latchkey_client::error_text(error.chain())
}

type Verdict = (u8, Option<&'static str>);

fn classify(error: &anyhow::Error) -> Verdict {
    for cause in error.chain() {
        // Library errors wrap each other transparently (their `source` skips a level), so the
        // wrappers are unpacked by hand.
        let verdict = if let Some(e) = cause.downcast_ref::<AccessError>() {
            access(e)
        } else if let Some(e) = cause.downcast_ref::<ConnectError>() {
            match e {
                ConnectError::Access(a) => access(a),
                ConnectError::UnknownProvider(_) => Some((3, None)),
                ConnectError::NoClientId(_) => {
                    Some((1, Some("pass --client-id ID, or set LATCHKEY_OAUTH_CLIENT_ID")))
                }
                ConnectError::MissingEndpoints => {
                    Some((1, Some("pass --issuer URL, or --authorize-url URL and --token-url URL")))
                }
                ConnectError::AccountEndpoints(_) | ConnectError::EndpointOffAccount { .. } => {
                    Some((
                        1,
                        Some(
                            "pass --base-url URL, --authorize-url URL and --token-url URL, all on your account's host",
                        ),
                    ))
                }
                ConnectError::OAuth(OAuthError::Timeout(_)) => {
                    Some((1, Some("--timeout SECONDS waits longer for the sign-in")))
                }
                ConnectError::RevocationFailed { .. } => Some((
                    1,
                    Some(
                        "--revocation-url URL names the provider's revocation endpoint; `--force` deletes it without revoking",
                    ),
                )),
                _ => None,
            }
        } else if let Some(e) = cause.downcast_ref::<InjectError>() {
            match e {
                InjectError::Access(a) => access(a),
                InjectError::BrokerTooOld { .. } => Some((4, None)),
                _ => None,
            }
        } else if let Some(e) = cause.downcast_ref::<RefreshError>() {
            match e {
                RefreshError::Access(a) => access(a),
                RefreshError::NotAllowed(_) => Some((4, None)),
                _ => None,
            }
        } else if let Some(e) = cause.downcast_ref::<ApprovalError>() {
            match e {
                ApprovalError::Access(a) => access(a),
                ApprovalError::Closed { .. } => Some((4, None)),
                ApprovalError::NotFound(_) => Some((3, None)),
                ApprovalError::AnsweredByAdmins(_) => Some((4, None)),
                _ => None,
            }
        } else if let Some(e) = cause.downcast_ref::<AuditError>() {
            match e {
                AuditError::Broker(c) => Some(client(c)),
                AuditError::Profile(p) => profile(p),
                _ => None,
            }
        } else if let Some(e) = cause.downcast_ref::<PolicyError>() {
            match e {
                PolicyError::Broker(c) => Some(client(c)),
                PolicyError::Access(a) => access(a),
                PolicyError::Refused { .. } => {
                    Some((4, Some("the schema and examples are in docs/policy.md")))
                }
                _ => None,
            }
        } else if let Some(RecoveryKitError::Workspace(w)) =
            cause.downcast_ref::<RecoveryKitError>()
        {
            workspace(w)
        } else if let Some(w) = cause.downcast_ref::<WorkspaceError>() {
            workspace(w)
        } else if let Some(c) = cause.downcast_ref::<ClientError>() {
            Some(client(c))
        } else if let Some(k) = cause.downcast_ref::<KeychainError>() {
            Some(keychain(k))
        } else if let Some(p) = cause.downcast_ref::<ProfileError>() {
            profile(p)
        } else if cause.downcast_ref::<commands::UnusableBrokerCa>().is_some() {
            Some((
                2,
                Some(
                    "give a PEM file of the certificate authorities' certificates (`-----BEGIN CERTIFICATE-----` blocks, no private key)",
                ),
            ))
        } else if cause.downcast_ref::<CreationTokenError>().is_some() {
            Some((2, Some("give the creation token exactly as the broker's operator gave it")))
        } else if cause.downcast_ref::<InviteCodeError>().is_some() {
            Some((2, Some("paste the code exactly as the member who invited you sent it")))
        } else if cause.downcast_ref::<commands::NotFound>().is_some() {
            Some((3, None))
        } else {
            None
        };
        if let Some(verdict) = verdict {
            return verdict;
        }
    }
    (1, None)
}

fn access(error: &AccessError) -> Option<Verdict> {
    match error {
        AccessError::Broker(c) => Some(client(c)),
        AccessError::Workspace(w) => workspace(w),
        AccessError::UnknownCredential(_) => Some((3, None)),
        _ => None,
    }
}

fn workspace(error: &WorkspaceError) -> Option<Verdict> {
    match error {
        WorkspaceError::Broker(c) => Some(client(c)),
        // The broker refused the creation itself.
        WorkspaceError::CreationClosed => Some((
            4,
            Some(
                "join a workspace with `latchkey workspace join` and an invite code from one of its admins",
            ),
        )),
        WorkspaceError::CreationTokenRequired => Some((
            4,
            Some(
                "set LATCHKEY_CREATION_TOKEN, or pass --creation-token to be asked for it (--creation-token-stdin reads it from standard input)",
            ),
        )),
        WorkspaceError::CreationTokenInvalid => Some((
            4,
            Some(
                "check the token in LATCHKEY_CREATION_TOKEN, or what you typed or piped in, against the one the broker's operator gave you",
            ),
        )),
        WorkspaceError::Keychain(k) => Some(keychain(k)),
        WorkspaceError::Profile(p) => profile(p),
        _ => None,
    }
}

/// Where a team's private certificate authority goes so that this computer trusts the server:
/// the system's trust store, which the TLS verifier reads, or the profile (`--broker-ca`) for
/// Latchkey alone.
#[cfg(target_os = "macos")]
const TRUST_A_PRIVATE_CA: &str = "if your team's server uses a private certificate authority, add it to the System keychain in Keychain Access and set it to be trusted for SSL, or trust its PEM file for Latchkey alone with `latchkey workspace broker-ca FILE` (--broker-ca FILE when creating or joining)";
#[cfg(target_os = "windows")]
const TRUST_A_PRIVATE_CA: &str = "if your team's server uses a private certificate authority, import it into Trusted Root Certification Authorities (certlm.msc, or certmgr.msc for your user only), or trust its PEM file for Latchkey alone with `latchkey workspace broker-ca FILE` (--broker-ca FILE when creating or joining)";
#[cfg(not(any(target_os = "macos", target_os = "windows")))]
const TRUST_A_PRIVATE_CA: &str = "if your team's server uses a private certificate authority, add it to this computer's trust store, or trust its PEM file for Latchkey alone with `latchkey workspace broker-ca FILE` (--broker-ca FILE when creating or joining)";

fn client(error: &ClientError) -> Verdict {
    match error {
        ClientError::Transport { .. } | ClientError::Stalled { .. } => {
            (5, Some("check the broker URL and that the broker is running"))
        }
        ClientError::Tls { problem: TlsProblem::Certificate(_), .. } => {
            (5, Some(TRUST_A_PRIVATE_CA))
        }
        ClientError::Tls { .. } => (5, Some("check the broker URL's scheme and port")),
        ClientError::BrokerCa(_) => (
            2,
            Some("point LATCHKEY_BROKER_CA at a PEM file of certificate authorities, or unset it"),
        ),
        ClientError::RateLimited { .. } => (
            4,
            Some(
                "an admin removes a device with `latchkey device remove ID` (`latchkey device list` shows the ids)",
            ),
        ),
        ClientError::Api(api) if api.is(codes::NOT_FOUND) => (3, None),
        ClientError::Api(_) => (4, None),
        _ => (1, None),
    }
}

fn keychain(error: &KeychainError) -> Verdict {
    match error {
        KeychainError::NoKeychain | KeychainError::Locked => {
            (6, Some("on a machine without a desktop keychain, use --key-store file"))
        }
        KeychainError::Missing { .. } => (3, None),
        _ => (6, None),
    }
}

fn profile(error: &ProfileError) -> Option<Verdict> {
    match error {
        ProfileError::NotSetUp { .. } => Some((
            3,
            Some("create a workspace with `latchkey workspace create`, or pass --profile"),
        )),
        _ => None,
    }
}
