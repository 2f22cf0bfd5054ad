//! Who may create a workspace on this broker (`POST /v1/workspaces`).
//!
//! A broker serves the workspaces created on it, so whoever can reach it could fill it with
//! workspaces of their own. The operator chooses ([`CreationMode`], `--workspace-creation`):
//!
//! - `open`: anyone who reaches the broker (the desktop app's embedded broker, a broker on
//!   loopback for one person);
//! - `token`: only a creation carrying the operator's creation token (read from a file, kept as
//!   its digest, compared in constant time: [`latchkey_core::creation`]);
//! - `closed`: nobody; people join existing workspaces with invites.
//!
//! Without a choice, a broker with a token file uses `token`; one that listens on loopback only,
//! and whose public origin (if any) is loopback too, is `open`; any other is `closed`
//! ([`CreationMode::default_for`]). Joining with an invite is never affected.
//!
//! A refusal comes before the request's signature is checked, so it costs the broker no write
//! (not even the signature's nonce), and its message says what to do next. The token is never
//! logged, audited, stored or echoed.

use std::net::SocketAddr;

use latchkey_core::creation::{CreationToken, CreationTokenDigest};
use serde::Deserialize;

use crate::error::{ApiError, ErrorCode};

/// How a broker answers workspace creations, as an operator configures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CreationMode {
    /// Anyone who reaches the broker may create a workspace.
    Open,
    /// Only a creation carrying the creation token.
    Token,
    /// Nobody: people join existing workspaces with invites.
    Closed,
}

impl CreationMode {
    /// The mode when the operator chose none and gave no token file: `open` when the API listener
    /// is on loopback and the public origin, if any, names a loopback host too (only this
    /// computer reaches the broker); `closed` otherwise (a listener on another address, or a
    /// loopback listener behind a reverse proxy that devices reach by another name).
    pub fn default_for(listen: SocketAddr, public_origin: Option<&str>) -> Self {
        if only_this_computer_reaches(listen, public_origin) { Self::Open } else { Self::Closed }
    }

    /// Its spelling in flags, the environment, the TOML file and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Token => "token",
            Self::Closed => "closed",
        }
    }
}

/// How a running broker answers workspace creations: [`CreationMode`] with the token's digest.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkspaceCreation {
    /// Anyone who reaches the broker may create a workspace.
    Open,
    /// Only a creation carrying the token whose digest this is.
    Token(CreationTokenDigest),
    /// Nobody may.
    Closed,
}

impl WorkspaceCreation {
    /// As [`CreationMode::default_for`] says: open or closed, never by token (there is none).
    pub fn default_for(listen: SocketAddr, public_origin: Option<&str>) -> Self {
        if only_this_computer_reaches(listen, public_origin) { Self::Open } else { Self::Closed }
    }

    /// Creation with `token` only. The broker keeps its digest, not the token.
    pub fn with_token(token: &CreationToken) -> Self {
        Self::Token(token.digest())
    }

    /// The mode, without the digest.
    pub fn mode(&self) -> CreationMode {
        match self {
            Self::Open => CreationMode::Open,
            Self::Token(_) => CreationMode::Token,
            Self::Closed => CreationMode::Closed,
        }
    }

    /// Whether a creation carrying `presented` (the body's `creation_token`) may go ahead; the
    /// refusal says what to do next and never repeats the token.
    pub(crate) fn admit(&self, presented: Option<&str>) -> Result<(), ApiError> {
        match self {
            Self::Open => Ok(()),
            Self::Closed => Err(ApiError::new(
                ErrorCode::WorkspaceCreationClosed,
                "this broker does not create workspaces: ask an admin of a workspace on it for an \
                 invite and join with it, or ask the broker's operator to allow creation",
            )),
            Self::Token(digest) => {
                let Some(presented) = presented else {
                    return Err(ApiError::new(
                        ErrorCode::CreationTokenRequired,
                        "this broker creates a workspace only with its creation token: ask the \
                         broker's operator for it and send it as creation_token",
                    ));
                };
                // A token that does not even parse is answered like a wrong one.
                match CreationToken::parse(presented) {
                    Ok(token) if digest.matches(&token) => Ok(()),
                    _ => Err(ApiError::new(
                        ErrorCode::CreationTokenInvalid,
                        "this is not the broker's creation token: check it with the broker's \
                         operator (it is compared exactly, letter case included)",
                    )),
                }
            }
        }
    }
}

/// Whether the broker listens on loopback and devices name it by a loopback host.
fn only_this_computer_reaches(listen: SocketAddr, public_origin: Option<&str>) -> bool {
    let origin_is_local = public_origin.is_none_or(|origin| {
        url::Url::parse(origin).is_ok_and(|url| match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => false,
        })
    });
    listen.ip().is_loopback() && origin_is_local
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_a_broker_reached_from_this_computer_alone_is_open_by_default() {
        let open = CreationMode::Open;
        let closed = CreationMode::Closed;
        assert_eq!(CreationMode::default_for(addr("127.0.0.1:8740"), None), open);
        assert_eq!(CreationMode::default_for(addr("[::1]:8740"), None), open);
        assert_eq!(
            CreationMode::default_for(addr("127.0.0.1:8740"), Some("https://localhost:8443")),
            open,
            "a local TLS terminator is still this computer alone"
        );
        assert_eq!(
            CreationMode::default_for(addr("0.0.0.0:8740"), None),
            closed,
            "every interface"
        );
        assert_eq!(CreationMode::default_for(addr("10.0.0.5:8740"), None), closed);
        assert_eq!(CreationMode::default_for(addr("[::]:8740"), None), closed);
        assert_eq!(
            CreationMode::default_for(addr("127.0.0.1:8740"), Some("https://latchkey.example.com")),
            closed,
            "a loopback listener behind a reverse proxy that the network reaches"
        );
        assert_eq!(
            WorkspaceCreation::default_for(addr("127.0.0.1:0"), None),
            WorkspaceCreation::Open
        );
        assert_eq!(
            WorkspaceCreation::default_for(addr("0.0.0.0:0"), None),
            WorkspaceCreation::Closed
        );
    }

    #[test]
    fn each_refusal_has_its_own_code_and_never_echoes_the_token() {
        let token = CreationToken::parse("the-right-token-0123456789abcdefXYZ").unwrap();
        let by_token = WorkspaceCreation::with_token(&token);
        assert_eq!(by_token.mode(), CreationMode::Token);
        assert!(by_token.admit(Some(token.expose_secret())).is_ok(), "the right token");
        assert!(
            by_token.admit(Some(" the-right-token-0123456789abcdefXYZ\n")).is_ok(),
            "read as a token file or a paste would hold it"
        );
        let code = |result: Result<(), ApiError>| result.unwrap_err().code;
        assert_eq!(code(by_token.admit(None)), ErrorCode::CreationTokenRequired);
        for wrong in ["the-wrong-token-0123456789abcdefXYZ", "", "has space", "THE-RIGHT-TOKEN"] {
            let error = by_token.admit(Some(wrong)).unwrap_err();
            assert_eq!(error.code, ErrorCode::CreationTokenInvalid, "{wrong:?}");
            assert!(
                wrong.is_empty() || !error.message.contains(wrong),
                "the message must not repeat what was sent: {}",
                error.message
            );
        }
        assert_eq!(
            code(WorkspaceCreation::Closed.admit(Some(token.expose_secret()))),
            ErrorCode::WorkspaceCreationClosed,
            "a closed broker takes no token at all"
        );
        assert!(WorkspaceCreation::Open.admit(None).is_ok());
        assert!(WorkspaceCreation::Open.admit(Some("anything")).is_ok(), "open ignores a token");
        assert_eq!(format!("{by_token:?}"), "Token(CreationTokenDigest([REDACTED]))");
    }
}
