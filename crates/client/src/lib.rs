//! Latchkey's client library: everything the CLI (`latchkey`) and the desktop app do, as plain
//! functions both front ends call.
//!
//! - [`profile`]: profiles (`latchkey`, `latchkey.dev`, `latchkey.test`, ...) that keep real,
//!   development and test data apart, and the non-secret profile configuration file.
//! - [`keychain`]: where a device keeps its keys: the OS keychain ([`keychain::OsKeychainStore`]:
//!   the Secret Service on Linux; the macOS keychain or the Windows Credential Manager) or, chosen explicitly, a passphrase-encrypted file
//!   ([`keychain::EncryptedFileStore`]), behind one [`keychain::KeyStore`] trait.
//! - [`api`]: the broker's device API, every request signed by the device key (RFC 9421).
//! - [`workspace`]: the flows people run: create a workspace, join one, admit a new device after
//!   comparing its fingerprint, receive the keys it was given.
//! - [`access`]: what lets agents call APIs: API keys and OAuth tokens sealed on the device,
//!   credential metadata and status, standing grants and single-use capabilities (agents
//!   themselves are created with [`api::BrokerClient::create_agent`]).
//! - [`approvals`]: answer the calls the broker holds for a member's approval: list and watch
//!   them, approve once or for a window, deny.
//! - [`policies`]: the workspace's Cedar policies: save one with Cedar's problems typed, and
//!   "would this call be allowed" by credential name.
//! - [`rotation`]: rotate the workspace key or this member's key, resumably: every credential
//!   re-sealed and verified on the device, swapped at the broker in one transaction.
//! - [`audit`]: verify an audit log export on the device, independently of the broker.
//! - [`catalog`]: the provider catalog (endpoints, hosts, injection, scopes), compiled in.
//! - [`connection`]: connect a provider's account with OAuth (tokens sealed on the device) and
//!   disconnect it (tokens revoked at the provider, then the credential deleted).
//! - [`inject`]: release a credential into a command's environment on this device, after the
//!   broker allowed (policy) and audited it: `latchkey run --inject`.
//! - [`local_proxy`]: a loopback proxy local agents call with their token; it adds the
//!   capability this device issued and forwards to the broker.
//! - [`oauth`]: OAuth 2.0 authorization code with PKCE for a native app: discovery, loopback
//!   callback, state and issuer checks, refresh and revocation.
//! - [`refresh`]: refresh OAuth access tokens on the device before they expire (five minutes by
//!   default), the rotated refresh token stored atomically, a refused one marked "reconnect
//!   needed"; one credential or all of them.
//! - [`recovery`]: recovery kits: export this device's workspace and member keys under a
//!   passphrase, import them into a replacement device.
//!
//! Secrets stay in `latchkey_core` secret types (zeroized on drop, redacted `Debug`); no error or
//! `Debug` output of this crate contains key material or a request body.

pub mod access;
pub mod account;
pub mod api;
pub mod approvals;
pub mod audit;
pub mod catalog;
pub mod connection;
pub mod files;
pub mod inject;
pub mod keychain;
pub mod local_proxy;
pub mod oauth;
pub mod policies;
pub mod profile;
pub mod recovery;
pub mod refresh;
pub mod rotation;
pub mod workspace;

/// An error and its causes as one line for a person: each cause's text once, outermost first,
/// joined with `: ` (a wrapper whose text already holds its source's adds nothing). The CLI and
/// the desktop app report errors this way; no error of this crate carries a secret.
pub fn error_text<'a>(
    causes: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut text = String::new();
    for cause in causes {
        let this = cause.to_string();
        if text.contains(&this) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&this);
    }
    text
}
