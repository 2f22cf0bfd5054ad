//! Latchkey's core: every key, envelope, capability, request signature and token format that the
//! desktop app, the CLI and the broker share.
//!
//! This crate does no I/O and links no runtime or web framework. It is the one place where
//! Latchkey's cryptography lives, so it can be read, reviewed and tested on its own; byte formats
//! are specified in `docs/protocol.md` and each module's documentation repeats the layout it owns.
//!
//! Secret values are types: they zeroize on drop, print as `[REDACTED]` in `Debug`, implement
//! neither `Serialize` nor `Clone`, and hand out their bytes only through a method named
//! `expose_secret`, so every place that touches key material can be found with one search.

pub mod capability;
pub mod creation;
pub(crate) mod crypto;
pub mod envelope;
pub mod fingerprint;
pub mod httpsig;
pub mod ids;
pub mod keys;
pub mod payload;
pub mod pkce;
pub mod random;
pub mod recovery;
pub mod secret;
pub mod text;
#[cfg(feature = "tls")]
pub mod tls;
pub mod token;
#[cfg(test)]
mod vectors;
