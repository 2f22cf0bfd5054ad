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
//! A token read from a file ([`CreationTokenFile`], `--creation-token-file`) can be replaced while
//! the broker runs: [`CreationTokenFile::reload`] (the binary calls it on `SIGHUP`) reads the file
//! again with the checks of the first read, and the new token alone creates workspaces from the
//! next request on. A file that cannot be used leaves the previous token in force.
//!
//! A refusal comes before the request's signature is checked, so it costs the broker no write
//! (not even the signature's nonce), and its message says what to do next. The token is never
//! logged, audited, stored or echoed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use latchkey_core::creation::{CreationToken, CreationTokenDigest, CreationTokenError};
use serde::Deserialize;

use crate::config::MIN_CREATION_TOKEN_LEN;
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
    /// Only a creation carrying the token last read from this file (read again by
    /// [`CreationTokenFile::reload`]).
    TokenFile(CreationTokenFile),
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
            Self::Token(_) | Self::TokenFile(_) => CreationMode::Token,
            Self::Closed => CreationMode::Closed,
        }
    }

    /// The token file to read again on a reload, when the token comes from one.
    pub fn token_file(&self) -> Option<&CreationTokenFile> {
        match self {
            Self::TokenFile(file) => Some(file),
            Self::Open | Self::Token(_) | Self::Closed => None,
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
            Self::Token(digest) => admit_token(presented, |token| digest.matches(token)),
            Self::TokenFile(file) => admit_token(presented, |token| file.matches(token)),
        }
    }
}

/// Whether `presented` is a token that `matches`; the refusals of [`WorkspaceCreation::admit`].
fn admit_token(
    presented: Option<&str>,
    matches: impl FnOnce(&CreationToken) -> bool,
) -> Result<(), ApiError> {
    let Some(presented) = presented else {
        return Err(ApiError::new(
            ErrorCode::CreationTokenRequired,
            "this broker creates a workspace only with its creation token: ask the broker's \
             operator for it and send it as creation_token",
        ));
    };
    // A token that does not even parse is answered like a wrong one.
    match CreationToken::parse(presented) {
        Ok(token) if matches(&token) => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::CreationTokenInvalid,
            "this is not the broker's creation token: check it with the broker's operator (it is \
             compared exactly, letter case included)",
        )),
    }
}

/// A creation token file and the digest of the token last read from it. Clones share that
/// digest: a [`CreationTokenFile::reload`] on any clone applies to every creation checked
/// afterwards, so the broker's clone and the one that reloads on `SIGHUP` agree.
#[derive(Clone)]
pub struct CreationTokenFile {
    path: Arc<Path>,
    /// Held for reading only while one digest is compared with another, and for writing only
    /// while one is assigned over the other: never across a file read or a hash.
    current: Arc<RwLock<CreationTokenDigest>>,
}

/// A creation token file cannot be used. The messages name the file and say what is wrong;
/// none quotes the file's contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreationTokenFileError {
    /// The file cannot be opened or read (missing, not permitted, a directory, not UTF-8).
    #[error("creation token file {}: cannot read it: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the system said.
        reason: std::io::Error,
    },
    /// Group or others have permissions on the file.
    #[error(
        "creation token file {} is readable by other users (mode {mode:o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold one well-formed token.
    #[error("creation token file {}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents.
        reason: CreationTokenError,
    },
    /// The token is shorter than [`MIN_CREATION_TOKEN_LEN`].
    #[error(
        "creation token file {}: the token has {length} characters, fewer than the \
         {MIN_CREATION_TOKEN_LEN} a token needs; write a long random one, e.g. \
         `openssl rand -base64 32 > FILE`",
        path.display()
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// The token's length in characters.
        length: usize,
    },
}

impl CreationTokenFile {
    /// Reads the token in `path`. The file must not be readable by group or others and must hold
    /// one token of at least [`MIN_CREATION_TOKEN_LEN`] characters (whitespace around it, such
    /// as a final newline, is not part of it). The broker keeps the token's digest only.
    pub fn read(path: impl Into<PathBuf>) -> Result<Self, CreationTokenFileError> {
        let path: PathBuf = path.into();
        let digest = read_token_digest(&path)?;
        Ok(Self { path: path.into(), current: Arc::new(RwLock::new(digest)) })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again with the checks of [`CreationTokenFile::read`]. On success its token
    /// is the only one that creates a workspace from the next request on; on failure the
    /// previous token stays in force. Either way one log line says so (`info` or `error`, with
    /// the file and the problem), never with the token or its digest.
    pub fn reload(&self) -> Result<(), CreationTokenFileError> {
        match read_token_digest(&self.path) {
            Ok(digest) => {
                // Only a panic while the write lock is held poisons it, and it is held for one
                // assignment of a 32-byte value: the digest inside is whole either way.
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = digest;
                tracing::info!(file = %self.path.display(), "workspace creation token reloaded");
                Ok(())
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    "workspace creation token not reloaded; the previous token is still in force"
                );
                Err(error)
            }
        }
    }

    /// Whether `token` is the token last read from the file. Constant-time; the token is hashed
    /// before the lock is taken.
    pub fn matches(&self, token: &CreationToken) -> bool {
        let presented = token.digest();
        // Poisoning: see `reload`.
        *self.current.read().unwrap_or_else(PoisonError::into_inner) == presented
    }
}

impl std::fmt::Debug for CreationTokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreationTokenFile")
            .field("path", &self.path)
            .field("digest", &format_args!("[REDACTED]"))
            .finish()
    }
}

impl PartialEq for CreationTokenFile {
    /// The same file holding the same token as last read (the digests compared in constant
    /// time).
    fn eq(&self, other: &Self) -> bool {
        if Arc::ptr_eq(&self.current, &other.current) {
            return true;
        }
        // Poisoning: see `reload`.
        let mine = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let theirs = other.current.read().unwrap_or_else(PoisonError::into_inner);
        self.path == other.path && *mine == *theirs
    }
}

impl Eq for CreationTokenFile {}

/// Most bytes of a creation token file read: a token of at most
/// [`latchkey_core::creation::MAX_LEN`] characters with room for the whitespace around it.
const MAX_TOKEN_FILE_BYTES: usize = 64 * 1024;

/// The digest of the token in `path`, after the checks [`CreationTokenFile::read`] lists.
fn read_token_digest(path: &Path) -> Result<CreationTokenDigest, CreationTokenFileError> {
    use crate::config::PrivateFileError;
    let unreadable = |reason: std::io::Error| CreationTokenFileError::Unreadable {
        path: path.to_owned(),
        reason,
    };
    let malformed = |reason| CreationTokenFileError::Malformed { path: path.to_owned(), reason };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let bytes =
        crate::config::read_private_file(file, Some(MAX_TOKEN_FILE_BYTES)).map_err(|error| {
            match error {
                PrivateFileError::Unreadable(reason) => unreadable(reason),
                PrivateFileError::Shared { mode } => {
                    CreationTokenFileError::NotPrivate { path: path.to_owned(), mode }
                }
                PrivateFileError::TooLarge => malformed(CreationTokenError::TooLong),
            }
        })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })?;
    let token = CreationToken::parse(text).map_err(malformed)?;
    if token.len() < MIN_CREATION_TOKEN_LEN {
        return Err(CreationTokenFileError::TooShort {
            path: path.to_owned(),
            length: token.len(),
        });
    }
    Ok(token.digest())
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
