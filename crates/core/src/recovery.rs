//! Recovery kits: workspace and member keys exported under a passphrase, as a text file the user
//! keeps. Without a device or a kit nobody can recover the credentials those keys protect.
//!
//! # Wire format
//!
//! The file is UTF-8 text:
//!
//! ```text
//! LATCHKEY RECOVERY KIT v1
//! # Keep this file and its passphrase apart; without a device or this kit nobody can recover ...
//! # (more lines starting with '#': notes for humans, ignored on import)
//! TEtSSwEBAAEAAAAAAAMBq1k...      standard base64 with padding, lines of 64 characters
//! ```
//!
//! The base64 block decodes to (integers big-endian):
//!
//! ```text
//! offset  len  field
//!      0    4  magic "LKRK"
//!      4    1  format version = 0x01
//!      5    1  key derivation function = 0x01 (Argon2id, version 0x13)
//!      6    4  m_cost: memory in KiB (u32)
//!     10    4  t_cost: passes (u32)
//!     14    1  p_cost: lanes (u8)
//!     15   16  salt, random
//!     31   12  AES-256-GCM nonce, random
//!     43    n  AES-256-GCM ciphertext of the payload (n = 1 + 69 × count)
//!   43+n   16  AES-256-GCM tag
//!
//! key = Argon2id(password = passphrase bytes, salt, m_cost, t_cost, p_cost, output 32 bytes)
//! AAD = bytes 0..43 (the whole header)
//!
//! payload = count (u8, 1..=64) || count × entry
//! entry   = workspace id (16) || owner (17) || key version (u32, 4, never 0) || key (32)
//! ```
//!
//! # Why
//!
//! - Argon2id is memory-hard, so a stolen kit costs an attacker 64 MiB and three passes per
//!   passphrase guess. Export always uses m = 65536 KiB, t = 3, p = 1, stronger than OWASP's
//!   minimum (m = 19456 KiB, t = 2, p = 1).
//! - The parameters are stored in the kit so they can be raised later without a new format, but
//!   they are bounded on import: a kit weaker than OWASP's minimum is refused, so whoever can edit
//!   the file cannot downgrade it into one that is cheap to attack (for instance, by planting a
//!   weak kit for the user to "restore" and re-export), and a kit demanding more than 1 GiB,
//!   20 passes or 8 lanes is refused so a hostile file cannot exhaust the machine that opens it.
//! - The header is the AEAD's associated data, so changing any parameter, the salt or the nonce
//!   makes decryption fail; the salt and nonce are fresh for every export and never chosen by a
//!   caller.
//! - Every check that needs no passphrase (magic, version, parameters, length) runs before the
//!   expensive key derivation. All decryption failures are one error: the kit cannot tell a wrong
//!   passphrase from an altered file, and says so.
//! - The format is text so it survives e-mail, printing and copy-paste; `#` lines are for humans.

use core::fmt::Write as _;

use argon2::{Algorithm, Argon2, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::crypto::{self, NONCE_LEN, TAG_LEN};
use crate::ids::{KeyVersion, Owner, WorkspaceId};
use crate::random::{self, RandomError};
use crate::secret::{Key32, SecretBytes};

/// First line of every kit file.
pub const FIRST_LINE: &str = "LATCHKEY RECOVERY KIT v1";
/// Most keys one kit holds.
pub const MAX_ENTRIES: usize = 64;
/// Shortest passphrase [`export`] accepts, in characters (Unicode scalar values).
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// One key in a kit: the workspace key (owner [`Owner::Shared`]) or a member key
/// ([`Owner::Member`]) of one key version. `Debug` shows everything but the key.
#[derive(Debug, PartialEq, Eq)]
pub struct KitEntry {
    /// The workspace the key belongs to.
    pub workspace: WorkspaceId,
    /// Shared for the workspace key, the member for a member key.
    pub owner: Owner,
    /// Which version of that key.
    pub version: KeyVersion,
    /// The key.
    pub key: Key32,
}

/// A recovery kit could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// [`export`] was given a passphrase shorter than [`MIN_PASSPHRASE_CHARS`].
    #[error(
        "the passphrase is too short: a recovery kit needs a passphrase of at least 12 characters"
    )]
    PassphraseTooShort,
    /// [`export`] was given no keys or more than [`MAX_ENTRIES`].
    #[error("a recovery kit holds 1 to 64 keys, {found} were given")]
    EntryCount {
        /// Number of entries given.
        found: usize,
    },
    /// The text is not a recovery kit at all.
    #[error("this is not a latchkey recovery kit: it must start with the line \"{FIRST_LINE}\"")]
    NotAKit,
    /// A recovery kit of a format version this build does not know.
    #[error(
        "this recovery kit is not format version 1: it was made by a newer latchkey, update to import it"
    )]
    UnsupportedVersion,
    /// A key derivation function this build does not know.
    #[error(
        "this recovery kit uses key derivation function {id}, but only 1 (argon2id) is supported"
    )]
    UnsupportedKdf {
        /// The identifier found.
        id: u8,
    },
    /// Argon2id parameters weaker than the minimum or costlier than the maximum.
    #[error(
        "the kit's argon2id parameters (memory {m_cost} KiB, {t_cost} passes, {p_cost} lanes) are outside the accepted range (19456 to 1048576 KiB, 2 to 20 passes, 1 to 8 lanes): the file was altered or is not from latchkey"
    )]
    ParametersOutOfBounds {
        /// Memory in KiB, as found.
        m_cost: u32,
        /// Passes, as found.
        t_cost: u32,
        /// Lanes, as found.
        p_cost: u8,
    },
    /// The kit is damaged in a way that is visible without the passphrase.
    #[error("the recovery kit is corrupted: {reason}")]
    Corrupted {
        /// What is wrong.
        reason: &'static str,
    },
    /// Authenticated decryption failed.
    #[error("wrong passphrase or the kit was altered")]
    WrongPassphraseOrAltered,
    /// Argon2id could not allocate its memory.
    #[error("deriving the kit key needs {kib} KiB of memory, which could not be allocated")]
    OutOfMemory {
        /// The memory Argon2id asked for.
        kib: u32,
    },
    /// Argon2id refused its input for another reason.
    #[error("argon2id could not derive the kit key from the passphrase")]
    Kdf,
    /// AES-256-GCM refused to encrypt (it cannot for a payload this small).
    #[error("aes-256-gcm refused to encrypt the kit")]
    Encryption,
    /// The operating system's random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Writes `entries` as a recovery kit encrypted under `passphrase`, at the recommended Argon2id
/// parameters (64 MiB, 3 passes, 1 lane). Slow by design: about a quarter of a second.
///
/// The passphrase bytes are used exactly as given; callers that read it from a human should
/// normalise it (Unicode NFC) so the same passphrase typed on another system still opens the kit.
pub fn export(passphrase: &SecretBytes, entries: &[KitEntry]) -> Result<String, RecoveryError> {
    export_with(KdfParams::RECOMMENDED, passphrase, entries)
}

/// Reads a recovery kit, checking everything that needs no passphrase first, then deriving the key
/// and decrypting. Parameters outside Latchkey's bounds are refused before any key derivation.
pub fn import(passphrase: &SecretBytes, text: &str) -> Result<Vec<KitEntry>, RecoveryError> {
    import_with(&KdfBounds::ACCEPTED, passphrase, text)
}

/// Argon2id cost parameters. Deliberately private with private fields: production code can only
/// export at [`KdfParams::RECOMMENDED`] and import within [`KdfBounds::ACCEPTED`]; only this
/// module's tests build cheaper ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KdfParams {
    m_cost: u32,
    t_cost: u32,
    p_cost: u8,
}

impl KdfParams {
    /// What [`export`] uses.
    const RECOMMENDED: Self = Self { m_cost: 64 * 1024, t_cost: 3, p_cost: 1 };
    /// OWASP's minimum for Argon2id: the weakest kit [`import`] opens.
    const FLOOR: Self = Self { m_cost: 19 * 1024, t_cost: 2, p_cost: 1 };
    /// The costliest kit [`import`] opens.
    const CEILING: Self = Self { m_cost: 1024 * 1024, t_cost: 20, p_cost: 8 };
}

/// Inclusive bounds on each parameter of a kit being imported.
#[derive(Debug, Clone, Copy)]
struct KdfBounds {
    min: KdfParams,
    max: KdfParams,
}

impl KdfBounds {
    /// What [`import`] accepts.
    const ACCEPTED: Self = Self { min: KdfParams::FLOOR, max: KdfParams::CEILING };

    fn check(&self, params: KdfParams) -> Result<(), RecoveryError> {
        let within = |value: u32, min: u32, max: u32| (min..=max).contains(&value);
        if within(params.m_cost, self.min.m_cost, self.max.m_cost)
            && within(params.t_cost, self.min.t_cost, self.max.t_cost)
            && within(
                u32::from(params.p_cost),
                u32::from(self.min.p_cost),
                u32::from(self.max.p_cost),
            )
        {
            Ok(())
        } else {
            Err(RecoveryError::ParametersOutOfBounds {
                m_cost: params.m_cost,
                t_cost: params.t_cost,
                p_cost: params.p_cost,
            })
        }
    }
}

const MAGIC: &[u8; 4] = b"LKRK";
const FORMAT_VERSION: u8 = 1;
const KDF_ARGON2ID: u8 = 1;
const SALT_LEN: usize = 16;
/// magic, version, kdf, m, t, p, salt, nonce.
const HEADER_LEN: usize = 4 + 1 + 1 + 4 + 4 + 1 + SALT_LEN + NONCE_LEN;
/// workspace id, owner, key version, key.
const ENTRY_LEN: usize = 16 + Owner::ENCODED_LEN + 4 + Key32::LEN;
/// Longest binary kit: 64 entries.
const MAX_BINARY_LEN: usize = HEADER_LEN + 1 + MAX_ENTRIES * ENTRY_LEN + TAG_LEN;
/// Longest text [`import`] reads. A real kit is under 6.5 KB; the rest is room for notes.
const MAX_TEXT_LEN: usize = 64 * 1024;
/// Width of the base64 lines.
const LINE_WIDTH: usize = 64;

const NOTES: &[&str] = &[
    "# Keep this file and its passphrase apart; without a device or this kit nobody can recover",
    "# your credentials. Anyone who has both can decrypt every credential these keys protect.",
];

fn export_with(
    params: KdfParams,
    passphrase: &SecretBytes,
    entries: &[KitEntry],
) -> Result<String, RecoveryError> {
    if passphrase_chars(passphrase) < MIN_PASSPHRASE_CHARS {
        return Err(RecoveryError::PassphraseTooShort);
    }
    let count = u8::try_from(entries.len())
        .ok()
        .filter(|n| (1..=MAX_ENTRIES).contains(&usize::from(*n)))
        .ok_or(RecoveryError::EntryCount { found: entries.len() })?;

    let mut payload = Zeroizing::new(Vec::with_capacity(1 + entries.len() * ENTRY_LEN));
    payload.push(count);
    for entry in entries {
        payload.extend_from_slice(entry.workspace.as_bytes());
        payload.extend_from_slice(&entry.owner.encode());
        payload.extend_from_slice(&entry.version.get().to_be_bytes());
        payload.extend_from_slice(entry.key.expose_secret());
    }
    seal(params, passphrase, &payload, entries.len())
}

/// Encrypts an encoded payload into a kit file. `count` only feeds the human note.
fn seal(
    params: KdfParams,
    passphrase: &SecretBytes,
    payload: &[u8],
    count: usize,
) -> Result<String, RecoveryError> {
    let salt = random::array::<SALT_LEN>()?;
    let nonce = random::array::<NONCE_LEN>()?;
    let mut binary = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN);
    binary.extend_from_slice(MAGIC);
    binary.push(FORMAT_VERSION);
    binary.push(KDF_ARGON2ID);
    binary.extend_from_slice(&params.m_cost.to_be_bytes());
    binary.extend_from_slice(&params.t_cost.to_be_bytes());
    binary.push(params.p_cost);
    binary.extend_from_slice(&salt);
    binary.extend_from_slice(&nonce);

    let key = derive_key(params, passphrase, &salt)?;
    // AES-GCM refuses only plaintexts over 64 GiB; a payload is at most 4417 bytes.
    let sealed = crypto::aes256gcm_seal(&key, &nonce, &binary, payload)
        .map_err(|_| RecoveryError::Encryption)?;
    binary.extend_from_slice(&sealed);
    Ok(render(&binary, count))
}

fn import_with(
    bounds: &KdfBounds,
    passphrase: &SecretBytes,
    text: &str,
) -> Result<Vec<KitEntry>, RecoveryError> {
    let binary = decode_text(text)?;
    let header = parse_header(&binary)?;
    bounds.check(header.params)?;

    let body = binary.get(HEADER_LEN..).ok_or(TRUNCATED)?;
    let payload_len = body.len().checked_sub(TAG_LEN).ok_or(TRUNCATED)?;
    if payload_len < 1 + ENTRY_LEN {
        return Err(TRUNCATED);
    }
    let count = (payload_len - 1) / ENTRY_LEN;
    if payload_len != 1 + count * ENTRY_LEN || count > MAX_ENTRIES {
        return Err(RecoveryError::Corrupted {
            reason: "its length is not that of a whole number of keys",
        });
    }

    let key = derive_key(header.params, passphrase, &header.salt)?;
    let aad = binary.get(..HEADER_LEN).ok_or(TRUNCATED)?;
    let payload = crypto::aes256gcm_open(&key, &header.nonce, aad, body)
        .map_err(|_| RecoveryError::WrongPassphraseOrAltered)?;
    parse_payload(&payload, count)
}

const TRUNCATED: RecoveryError = RecoveryError::Corrupted { reason: "it is truncated" };

struct Header {
    params: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
}

/// The base64 block of a kit's text, decoded.
fn decode_text(text: &str) -> Result<Vec<u8>, RecoveryError> {
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    match lines.next() {
        Some(first) if first == FIRST_LINE => {}
        Some(first) if first.starts_with("LATCHKEY RECOVERY KIT") => {
            return Err(RecoveryError::UnsupportedVersion);
        }
        _ => return Err(RecoveryError::NotAKit),
    }
    if text.len() > MAX_TEXT_LEN {
        return Err(RecoveryError::Corrupted { reason: "the file is far longer than any kit" });
    }
    let mut block = String::with_capacity(text.len());
    for line in lines.filter(|line| !line.starts_with('#')) {
        block.push_str(line);
    }
    if block.is_empty() {
        return Err(RecoveryError::Corrupted { reason: "the encrypted block is missing" });
    }
    let binary = STANDARD.decode(block.as_bytes()).map_err(|_| RecoveryError::Corrupted {
        reason: "the encrypted block is not valid base64",
    })?;
    if binary.len() > MAX_BINARY_LEN {
        return Err(RecoveryError::Corrupted { reason: "the encrypted block is too long" });
    }
    Ok(binary)
}

/// Magic, version, KDF identifier and parameters, salt and nonce, checked in that order.
fn parse_header(binary: &[u8]) -> Result<Header, RecoveryError> {
    match binary.get(..MAGIC.len()) {
        Some(magic) if magic == MAGIC => {}
        Some(_) => return Err(RecoveryError::NotAKit),
        None => return Err(TRUNCATED),
    }
    match binary.get(4) {
        Some(&FORMAT_VERSION) => {}
        Some(_) => return Err(RecoveryError::UnsupportedVersion),
        None => return Err(TRUNCATED),
    }
    match binary.get(5) {
        Some(&KDF_ARGON2ID) => {}
        Some(&id) => return Err(RecoveryError::UnsupportedKdf { id }),
        None => return Err(TRUNCATED),
    }
    let header: &[u8; HEADER_LEN] =
        binary.get(..HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or(TRUNCATED)?;
    // INVARIANT: `header` is HEADER_LEN = 6 + 4 + 4 + 1 + 16 + 12 bytes, so these splits are in
    // range.
    let (m_cost, rest) = header[6..].split_at(4);
    let (t_cost, rest) = rest.split_at(4);
    let (p_cost, rest) = rest.split_at(1);
    let (salt, nonce) = rest.split_at(SALT_LEN);
    let params = KdfParams {
        m_cost: u32::from_be_bytes(array(m_cost)?),
        t_cost: u32::from_be_bytes(array(t_cost)?),
        p_cost: u8::from_be_bytes(array(p_cost)?),
    };
    Ok(Header { params, salt: array(salt)?, nonce: array(nonce)? })
}

/// The entries of a decrypted payload whose length was checked to hold `count` of them.
fn parse_payload(payload: &[u8], count: usize) -> Result<Vec<KitEntry>, RecoveryError> {
    let (&stated, rest) = payload.split_first().ok_or(TRUNCATED)?;
    if usize::from(stated) != count || rest.len() != count * ENTRY_LEN {
        return Err(RecoveryError::Corrupted {
            reason: "the number of keys inside does not match its length",
        });
    }
    rest.chunks_exact(ENTRY_LEN)
        .map(|entry| {
            // INVARIANT: every chunk is ENTRY_LEN = 16 + 17 + 4 + 32 bytes, so these splits are in
            // range.
            let (workspace, rest) = entry.split_at(16);
            let (owner, rest) = rest.split_at(Owner::ENCODED_LEN);
            let (version, key) = rest.split_at(4);
            Ok(KitEntry {
                workspace: WorkspaceId::from_bytes(array(workspace)?),
                owner: Owner::decode(&array(owner)?).ok_or_else(invalid_entry)?,
                version: KeyVersion::new(u32::from_be_bytes(array(version)?))
                    .ok_or_else(invalid_entry)?,
                key: Key32::from_slice(key).ok_or_else(invalid_entry)?,
            })
        })
        .collect()
}

fn invalid_entry() -> RecoveryError {
    RecoveryError::Corrupted { reason: "a key entry inside is malformed" }
}

/// A fixed-size array from a slice whose length the caller already fixed.
fn array<const N: usize>(slice: &[u8]) -> Result<[u8; N], RecoveryError> {
    slice.try_into().map_err(|_| TRUNCATED)
}

/// The Argon2 that KDF identifier 0x01 names: Argon2id, version 0x13 (RFC 9106).
const ARGON2_ALGORITHM: Algorithm = Algorithm::Argon2id;
const ARGON2_VERSION: Version = Version::V0x13;

/// The kit key: Argon2id of the passphrase under `salt` (a kit's 16 bytes; a slice, so the
/// reference implementation's vectors, whose salts are 8 bytes, run through this very function).
fn derive_key(
    params: KdfParams,
    passphrase: &SecretBytes,
    salt: &[u8],
) -> Result<Key32, RecoveryError> {
    let argon_params = argon2::Params::new(
        params.m_cost,
        params.t_cost,
        u32::from(params.p_cost),
        Some(Key32::LEN),
    )
    .map_err(|_| RecoveryError::Kdf)?;
    let mut out = Zeroizing::new([0u8; Key32::LEN]);
    Argon2::new(ARGON2_ALGORITHM, ARGON2_VERSION, argon_params)
        .hash_password_into(passphrase.expose_secret(), salt, out.as_mut())
        .map_err(|err| match err {
            argon2::Error::OutOfMemory => RecoveryError::OutOfMemory { kib: params.m_cost },
            _ => RecoveryError::Kdf,
        })?;
    Ok(Key32::from_bytes(*out))
}

fn passphrase_chars(passphrase: &SecretBytes) -> usize {
    let bytes = passphrase.expose_secret();
    core::str::from_utf8(bytes).map_or(bytes.len(), |s| s.chars().count())
}

/// The kit file: first line, notes, base64 block in lines of 64.
fn render(binary: &[u8], count: usize) -> String {
    let encoded = STANDARD.encode(binary);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / LINE_WIDTH + 512);
    out.push_str(FIRST_LINE);
    out.push('\n');
    for note in NOTES {
        out.push_str(note);
        out.push('\n');
    }
    let keys = if count == 1 { "key" } else { "keys" };
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# {count} {keys}, encrypted under your passphrase with Argon2id and AES-256-GCM."
    );
    for line in encoded.as_bytes().chunks(LINE_WIDTH) {
        out.extend(line.iter().map(|&b| char::from(b)));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ids::MemberId;

    /// Cheap parameters so tests that run the KDF hundreds of times stay fast. Real imports refuse
    /// them; only `import_with(&TEST_BOUNDS, ..)` accepts them.
    const TEST_PARAMS: KdfParams = KdfParams { m_cost: 8, t_cost: 1, p_cost: 1 };
    const TEST_BOUNDS: KdfBounds =
        KdfBounds { min: TEST_PARAMS, max: KdfParams { m_cost: 64, t_cost: 2, p_cost: 2 } };
    const PASSPHRASE: &[u8] = b"correct horse battery staple";

    /// The worked example of `docs/protocol.md`, made by `export` and opened independently with
    /// Python's `cryptography` (Argon2id, AESGCM).
    const EXAMPLE_KIT: &str = "\
LATCHKEY RECOVERY KIT v1
# Keep this file and its passphrase apart; without a device or this kit nobody can recover
# your credentials. Anyone who has both can decrypt every credential these keys protect.
# 2 keys, encrypted under your passphrase with Argon2id and AES-256-GCM.
TEtSSwEBAAEAAAAAAAMB0OqzRs372W2+9ke8FLwFCZ6yxCA6cGBzrCEWzKTzRoeI
3XQo4lXaeZwgLSWs5HWxzvOUrze4w5IS1VWMGdKh8sQ6QmAmSIYtn8ke5XQRCONb
xsQ1xTNXSPLhHSCOgPCn7YEkbUbfEVk9nqdzLbsx4E9H7LIYezn5Mhx3PDfweK9Z
hvJFDW7GB+Fg2I9UZEhJ/ooxg+lFOXArCRD1i/Z5GZohvV8LTk09j3RbExsDd4CO
Qjai7RTt
";

    fn passphrase() -> SecretBytes {
        SecretBytes::copy_from(PASSPHRASE)
    }

    fn example_entries() -> Vec<KitEntry> {
        let workspace = "6f1c1c2e-4c39-4a8e-9b0e-2d5f0c4a7b11".parse().unwrap();
        let member = "5a1d3c7e-2b4f-4e6a-8c9d-0e1f2a3b4c5d".parse().unwrap();
        vec![
            KitEntry {
                workspace,
                owner: Owner::Shared,
                version: KeyVersion::FIRST,
                key: Key32::from_bytes([0x42; 32]),
            },
            KitEntry {
                workspace,
                owner: Owner::Member(member),
                version: KeyVersion::new(2).unwrap(),
                key: Key32::from_bytes([0x17; 32]),
            },
        ]
    }

    fn random_entries(n: usize) -> Vec<KitEntry> {
        (0..n)
            .map(|i| KitEntry {
                workspace: WorkspaceId::random(),
                owner: if i % 2 == 0 { Owner::Shared } else { Owner::Member(MemberId::random()) },
                version: KeyVersion::new(u32::try_from(i).unwrap() + 1).unwrap(),
                key: Key32::generate().unwrap(),
            })
            .collect()
    }

    fn binary_of(kit: &str) -> Vec<u8> {
        decode_text(kit).unwrap()
    }

    fn text_of(binary: &[u8]) -> String {
        render(binary, 1)
    }

    fn with_params(kit: &str, m_cost: u32, t_cost: u32, p_cost: u8) -> String {
        let mut binary = binary_of(kit);
        binary[6..10].copy_from_slice(&m_cost.to_be_bytes());
        binary[10..14].copy_from_slice(&t_cost.to_be_bytes());
        binary[14] = p_cost;
        text_of(&binary)
    }

    #[test]
    fn the_documented_example_kit_opens_with_the_real_import() {
        let entries = import(&passphrase(), EXAMPLE_KIT).unwrap();
        assert_eq!(entries, example_entries(), "docs/protocol.md example must hold");
    }

    #[test]
    fn a_kit_round_trips_at_the_recommended_parameters() {
        let kit = export(&passphrase(), &example_entries()).unwrap();
        let binary = binary_of(&kit);
        assert_eq!(&binary[6..15], &[0, 1, 0, 0, 0, 0, 0, 3, 1], "m=65536 KiB, t=3, p=1");
        let entries = import(&passphrase(), &kit).unwrap();
        assert_eq!(entries, example_entries(), "import must return what export was given");
    }

    #[test]
    fn the_weakest_accepted_parameters_still_open_with_the_real_import() {
        let kit = export_with(KdfParams::FLOOR, &passphrase(), &example_entries()).unwrap();
        let entries = import(&passphrase(), &kit).unwrap();
        assert_eq!(entries, example_entries(), "OWASP's minimum is inside the bounds");
    }

    #[test]
    fn a_kit_round_trips_with_every_number_of_entries_up_to_the_maximum() {
        for n in [1, 2, 7, MAX_ENTRIES] {
            let entries = random_entries(n);
            let kit = export_with(TEST_PARAMS, &passphrase(), &entries).unwrap();
            let back = import_with(&TEST_BOUNDS, &passphrase(), &kit).unwrap();
            assert_eq!(back, entries, "{n} entries must round trip in order");
        }
    }

    #[test]
    fn the_kit_text_has_the_documented_shape() {
        let kit = export_with(TEST_PARAMS, &passphrase(), &random_entries(3)).unwrap();
        let lines: Vec<&str> = kit.lines().collect();
        assert_eq!(lines[0], FIRST_LINE, "first line names the format");
        assert!(lines[1].starts_with("# Keep this file and its passphrase apart"), "notes follow");
        assert!(kit.contains("nobody can recover"), "the notes must say what losing it means");
        let block: Vec<&str> =
            lines.iter().copied().skip(1).filter(|l| !l.starts_with('#')).collect();
        let (last, full) = block.split_last().unwrap();
        assert!(full.iter().all(|l| l.len() == 64), "base64 lines are 64 characters wide");
        assert!(last.len() <= 64 && !last.is_empty());
        assert!(kit.ends_with('\n'), "the file ends with a newline");
        let binary = binary_of(&kit);
        assert_eq!(&binary[..6], b"LKRK\x01\x01", "magic, version 1, argon2id");
        assert_eq!(binary.len(), HEADER_LEN + 1 + 3 * ENTRY_LEN + TAG_LEN, "documented length");
    }

    #[test]
    fn a_wrong_passphrase_is_refused_with_one_error() {
        let kit = export_with(TEST_PARAMS, &passphrase(), &random_entries(2)).unwrap();
        for wrong in [&b"correct horse battery stapl"[..], b"Correct horse battery staple", b""] {
            let err = import_with(&TEST_BOUNDS, &SecretBytes::copy_from(wrong), &kit).unwrap_err();
            assert!(
                matches!(err, RecoveryError::WrongPassphraseOrAltered),
                "a wrong passphrase must give the one decryption error, got {err:?}"
            );
            assert_eq!(err.to_string(), "wrong passphrase or the kit was altered");
        }
    }

    #[test]
    fn flipping_any_bit_of_the_binary_makes_import_fail() {
        let kit = export_with(TEST_PARAMS, &passphrase(), &random_entries(2)).unwrap();
        let binary = binary_of(&kit);
        for byte in 0..binary.len() {
            for bit in 0..8 {
                let mut altered = binary.clone();
                altered[byte] ^= 1 << bit;
                let result = import_with(&TEST_BOUNDS, &passphrase(), &text_of(&altered));
                assert!(result.is_err(), "flipping byte {byte} bit {bit} must be detected");
            }
        }
    }

    #[test]
    fn downgraded_parameters_are_refused_by_the_real_import() {
        let weak = export_with(TEST_PARAMS, &passphrase(), &random_entries(1)).unwrap();
        let err = import(&passphrase(), &weak).unwrap_err();
        assert!(
            matches!(err, RecoveryError::ParametersOutOfBounds { m_cost: 8, t_cost: 1, p_cost: 1 }),
            "a kit below OWASP's minimum must be refused before any derivation, got {err:?}"
        );
        // Each bound, just outside, on an otherwise well-formed kit. These fail before Argon2
        // runs, so the real import is cheap here.
        for (m, t, p) in [
            (19 * 1024 - 1, 3, 1),
            (64 * 1024, 1, 1),
            (64 * 1024, 3, 0),
            (1024 * 1024 + 1, 3, 1),
            (64 * 1024, 21, 1),
            (64 * 1024, 3, 9),
            (u32::MAX, u32::MAX, u8::MAX),
            (0, 0, 0),
        ] {
            let err = import(&passphrase(), &with_params(&weak, m, t, p)).unwrap_err();
            assert!(
                matches!(err, RecoveryError::ParametersOutOfBounds { .. }),
                "m={m} t={t} p={p} must be out of bounds, got {err:?}"
            );
            assert!(err.to_string().contains(&format!("memory {m} KiB")), "message names values");
        }
    }

    #[test]
    fn raising_the_parameters_of_a_kit_breaks_it_because_the_header_is_authenticated() {
        let kit = export_with(TEST_PARAMS, &passphrase(), &random_entries(1)).unwrap();
        let err =
            import_with(&TEST_BOUNDS, &passphrase(), &with_params(&kit, 16, 1, 1)).unwrap_err();
        assert!(matches!(err, RecoveryError::WrongPassphraseOrAltered), "got {err:?}");
    }

    #[test]
    fn a_truncated_kit_is_refused() {
        let kit = export_with(TEST_PARAMS, &passphrase(), &random_entries(2)).unwrap();
        let binary = binary_of(&kit);
        for len in 0..binary.len() {
            let err = import_with(&TEST_BOUNDS, &passphrase(), &text_of(&binary[..len]));
            assert!(err.is_err(), "a kit cut to {len} bytes must be refused");
        }
        let without_last_line: String =
            kit.lines().take(kit.lines().count() - 1).map(|l| format!("{l}\n")).collect();
        let err = import_with(&TEST_BOUNDS, &passphrase(), &without_last_line).unwrap_err();
        assert!(
            matches!(err, RecoveryError::Corrupted { .. }),
            "a lost line is corruption: {err:?}"
        );
        let err = import_with(&TEST_BOUNDS, &passphrase(), &text_of(&binary[..40])).unwrap_err();
        assert!(matches!(err, RecoveryError::Corrupted { reason: "it is truncated" }), "{err:?}");
    }

    #[test]
    fn text_that_is_not_a_kit_is_refused_with_a_specific_error() {
        let kit = export_with(TEST_PARAMS, &passphrase(), &random_entries(1)).unwrap();
        let binary = binary_of(&kit);
        type Expected = fn(&RecoveryError) -> bool;
        let cases: Vec<(String, Expected)> = vec![
            (String::new(), |e| matches!(e, RecoveryError::NotAKit)),
            ("hello world".into(), |e| matches!(e, RecoveryError::NotAKit)),
            ("-----BEGIN AGE ENCRYPTED FILE-----\n".into(), |e| {
                matches!(e, RecoveryError::NotAKit)
            }),
            (kit.replace("KIT v1", "KIT v2"), |e| matches!(e, RecoveryError::UnsupportedVersion)),
            (FIRST_LINE.into(), |e| matches!(e, RecoveryError::Corrupted { .. })),
            (format!("{FIRST_LINE}\nnot base64 at all!\n"), |e| {
                matches!(
                    e,
                    RecoveryError::Corrupted { reason: "the encrypted block is not valid base64" }
                )
            }),
            (format!("{FIRST_LINE}\n{}\n", "QUFB".repeat(3000)), |e| {
                matches!(e, RecoveryError::Corrupted { .. })
            }),
            (format!("{kit}{}", "#\n".repeat(40_000)), |e| {
                matches!(e, RecoveryError::Corrupted { .. })
            }),
            (
                {
                    let mut b = binary.clone();
                    b[..4].copy_from_slice(b"AGE!");
                    text_of(&b)
                },
                |e| matches!(e, RecoveryError::NotAKit),
            ),
            (
                {
                    let mut b = binary.clone();
                    b[4] = 2;
                    text_of(&b)
                },
                |e| matches!(e, RecoveryError::UnsupportedVersion),
            ),
            (
                {
                    let mut b = binary.clone();
                    b[5] = 2;
                    text_of(&b)
                },
                |e| matches!(e, RecoveryError::UnsupportedKdf { id: 2 }),
            ),
        ];
        for (i, (text, expected)) in cases.iter().enumerate() {
            let err = import_with(&TEST_BOUNDS, &passphrase(), text).unwrap_err();
            assert!(expected(&err), "case {i}: unexpected error {err:?}");
        }
    }

    #[test]
    fn notes_blank_lines_indentation_and_crlf_are_ignored_on_import() {
        let entries = random_entries(2);
        let kit = export_with(TEST_PARAMS, &passphrase(), &entries).unwrap();
        let mut lines: Vec<String> = kit.lines().map(|l| format!("  {l}\r")).collect();
        lines.insert(1, String::new());
        lines.insert(3, "# a note the user added".into());
        let edited = format!("\n\n{}\r\n", lines.join("\n"));
        let back = import_with(&TEST_BOUNDS, &passphrase(), &edited).unwrap();
        assert_eq!(back, entries, "formatting around the block must not matter");
    }

    #[test]
    fn export_refuses_short_passphrases_and_bad_entry_counts() {
        for short in ["", "short", "elevenchars", "ééééééééééé"] {
            let err = export_with(
                TEST_PARAMS,
                &SecretBytes::copy_from(short.as_bytes()),
                &random_entries(1),
            )
            .unwrap_err();
            assert!(
                matches!(err, RecoveryError::PassphraseTooShort),
                "{short:?} is under 12 characters, got {err:?}"
            );
            assert!(err.to_string().contains("at least 12 characters"), "say what is required");
        }
        let twelve = SecretBytes::copy_from("éééééééééééé".as_bytes());
        assert!(
            export_with(TEST_PARAMS, &twelve, &random_entries(1)).is_ok(),
            "12 characters pass"
        );
        for n in [0, MAX_ENTRIES + 1, 300] {
            let err = export_with(TEST_PARAMS, &passphrase(), &random_entries(n)).unwrap_err();
            assert!(
                matches!(err, RecoveryError::EntryCount { found } if found == n),
                "{n} entries must be refused, got {err:?}"
            );
        }
    }

    #[test]
    fn malformed_entries_inside_a_valid_encryption_are_refused() {
        let good = {
            let mut p = vec![1u8];
            p.extend_from_slice(&[7; 16]);
            p.extend_from_slice(&Owner::Shared.encode());
            p.extend_from_slice(&1u32.to_be_bytes());
            p.extend_from_slice(&[9; 32]);
            p
        };
        let kit = seal(TEST_PARAMS, &passphrase(), &good, 1).unwrap();
        assert!(import_with(&TEST_BOUNDS, &passphrase(), &kit).is_ok(), "the control case opens");
        let mut wrong_count = good.clone();
        wrong_count[0] = 2;
        let mut bad_owner = good.clone();
        bad_owner[17] = 2;
        let mut zero_version = good.clone();
        zero_version[34..38].copy_from_slice(&0u32.to_be_bytes());
        for (name, payload) in
            [("count", wrong_count), ("owner", bad_owner), ("version 0", zero_version)]
        {
            let kit = seal(TEST_PARAMS, &passphrase(), &payload, 1).unwrap();
            let err = import_with(&TEST_BOUNDS, &passphrase(), &kit).unwrap_err();
            assert!(matches!(err, RecoveryError::Corrupted { .. }), "{name}: got {err:?}");
        }
    }

    #[test]
    fn kit_entry_debug_never_shows_the_key() {
        let entry = &example_entries()[0];
        let shown = format!("{entry:?}");
        assert!(!shown.contains("66, 66"), "Debug leaked key bytes: {shown}");
        assert!(!shown.to_lowercase().contains("4242"), "Debug leaked key bytes: {shown}");
        assert!(shown.contains("REDACTED"), "the key must be shown as redacted: {shown}");
        assert!(shown.contains("6f1c1c2e"), "the workspace id is not secret: {shown}");
    }

    include!("../../../tests/support/phc_argon2id.rs");

    /// RFC 9106 §5.3, the Argon2id test vector (v0x13; m = 32 KiB, t = 3, p = 4; password 32 ×
    /// 0x01, salt 16 × 0x02, secret 8 × 0x03, associated data 12 × 0x04), transcribed from the
    /// RFC text; the reference implementation's `kats/argon2id` ends with the same tag.
    const RFC9106_ARGON2ID_TAG: &str =
        "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659";

    #[test]
    fn derive_key_gives_the_argon2id_tags_of_the_reference_implementation() {
        let mut run = 0usize;
        for case in &PHC_ARGON2ID_CASES {
            let name = format!(
                "t={} m=2^{} p={} {:?}/{:?}",
                case.t_cost, case.m_log2, case.p_cost, case.password, case.salt
            );
            let params =
                KdfParams { m_cost: 1 << case.m_log2, t_cost: case.t_cost, p_cost: case.p_cost };
            let key = derive_key(
                params,
                &SecretBytes::copy_from(case.password.as_bytes()),
                case.salt.as_bytes(),
            )
            .unwrap_or_else(|e| panic!("{name}: derive_key refused the reference's input: {e}"));
            assert_eq!(
                hex::encode(key.expose_secret()),
                case.tag,
                "{name}: a kit key must be Argon2id v0x13 as the reference implementation computes \
                 it, or kits made elsewhere would not open"
            );
            run += 1;
        }
        assert!(run >= 7, "ran {run} reference Argon2id cases, expected at least 7");
    }

    #[test]
    fn the_argon2_derive_key_configures_gives_the_rfc_9106_argon2id_tag() {
        // RFC 9106's one Argon2id vector has a secret and associated data, which derive_key never
        // passes. So the same crate runs it at derive_key's algorithm and version, with the
        // parameters built as derive_key builds them plus the associated data.
        let params = |data: Option<&[u8]>| {
            let mut builder = argon2::ParamsBuilder::new();
            builder.m_cost(32).t_cost(3).p_cost(4).output_len(Key32::LEN);
            if let Some(data) = data {
                builder.data(argon2::AssociatedData::new(data).unwrap());
            }
            builder.build().unwrap()
        };
        assert_eq!(
            params(None),
            argon2::Params::new(32, 3, 4, Some(Key32::LEN)).unwrap(),
            "without associated data these are the parameters derive_key builds"
        );
        let argon = Argon2::new_with_secret(
            &[0x03; 8],
            ARGON2_ALGORITHM,
            ARGON2_VERSION,
            params(Some(&[0x04; 12])),
        )
        .unwrap();
        let mut tag = [0u8; 32];
        argon.hash_password_into(&[0x01; 32], &[0x02; 16], &mut tag).unwrap();
        assert_eq!(
            hex::encode(tag),
            RFC9106_ARGON2ID_TAG,
            "RFC 9106 §5.3: the Argon2 kits use must be the RFC's Argon2id v0x13"
        );
    }

    #[test]
    fn the_documented_example_kits_key_is_the_documented_argon2id_output() {
        // docs/protocol.md, "Recovery kits": the derived key of the worked example, at the
        // parameters export writes, from the salt in the kit's header.
        let binary = binary_of(EXAMPLE_KIT);
        let header = parse_header(&binary).unwrap();
        assert_eq!(header.params, KdfParams::RECOMMENDED, "the example is at export's parameters");
        let key = derive_key(header.params, &passphrase(), &header.salt).unwrap();
        assert_eq!(
            hex::encode(key.expose_secret()),
            "60eed673141db96ed1b9d4816926ce606d22ce973487a2d97e46aacd9319c64d",
            "the documented derived key"
        );
    }

    #[test]
    fn each_region_of_the_documented_kit_altered_gives_its_own_error() {
        // The committed example, one region at a time, through the real import: what needs no
        // passphrase is refused by name before Argon2id runs; the rest is the one AEAD error.
        let binary = binary_of(EXAMPLE_KIT);
        let flipped = |at: usize| {
            let mut altered = binary.clone();
            altered[at] ^= 0x01;
            text_of(&altered)
        };
        type Expected = fn(&RecoveryError) -> bool;
        let altered = |e: &RecoveryError| matches!(e, RecoveryError::WrongPassphraseOrAltered);
        let cases: [(&str, String, Expected); 12] = [
            ("magic", flipped(0), |e| matches!(e, RecoveryError::NotAKit)),
            ("format version", flipped(4), |e| matches!(e, RecoveryError::UnsupportedVersion)),
            ("kdf", flipped(5), |e| matches!(e, RecoveryError::UnsupportedKdf { id: 0 })),
            ("m_cost over the ceiling", flipped(6), |e| {
                matches!(e, RecoveryError::ParametersOutOfBounds { m_cost: 0x0101_0000, .. })
            }),
            ("p_cost 0", flipped(14), |e| {
                matches!(e, RecoveryError::ParametersOutOfBounds { p_cost: 0, .. })
            }),
            ("m_cost raised within bounds", flipped(9), altered),
            ("t_cost lowered within bounds", flipped(13), altered),
            ("salt", flipped(15), altered),
            ("nonce", flipped(31), altered),
            ("ciphertext", flipped(HEADER_LEN), altered),
            ("tag", flipped(binary.len() - 1), altered),
            ("last byte cut", text_of(&binary[..binary.len() - 1]), |e| {
                matches!(e, RecoveryError::Corrupted { .. })
            }),
        ];
        for (region, text, expected) in &cases {
            let err = import(&passphrase(), text).unwrap_err();
            assert!(expected(&err), "{region} altered: unexpected error {err:?}");
        }
        assert!(import(&passphrase(), EXAMPLE_KIT).is_ok(), "the unaltered kit still opens");
    }

    #[test]
    fn the_accepted_parameters_are_exactly_the_documented_range_and_the_error_names_it() {
        // docs/protocol.md, "Recovery kits", rule 5, and export's parameters.
        assert_eq!(KdfParams::RECOMMENDED, KdfParams { m_cost: 65536, t_cost: 3, p_cost: 1 });
        let check = |m_cost, t_cost, p_cost| {
            KdfBounds::ACCEPTED.check(KdfParams { m_cost, t_cost, p_cost })
        };
        for (m, t, p) in [(19456, 2, 1), (1_048_576, 20, 8), (65536, 3, 1)] {
            assert!(check(m, t, p).is_ok(), "m={m} t={t} p={p} is inside the documented range");
        }
        for (m, t, p) in [
            (19455, 3, 1),
            (1_048_577, 3, 1),
            (65536, 1, 1),
            (65536, 21, 1),
            (65536, 3, 0),
            (65536, 3, 9),
        ] {
            let err = check(m, t, p).unwrap_err();
            assert!(
                err.to_string().contains("(19456 to 1048576 KiB, 2 to 20 passes, 1 to 8 lanes)"),
                "m={m} t={t} p={p} is refused and the message states the range: {err}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn the_real_import_never_panics_on_arbitrary_text(text in "\\PC{0,300}") {
            let _ = import(&passphrase(), &text);
            let _ = import(&passphrase(), &format!("{FIRST_LINE}\n{text}"));
        }

        #[test]
        fn import_never_panics_on_arbitrary_binary_in_a_kit_frame(
            tail in proptest::collection::vec(any::<u8>(), 0..400),
            m_cost in 0u32..80,
            t_cost in 0u32..4,
            p_cost in 0u8..4,
        ) {
            let mut binary = b"LKRK\x01\x01".to_vec();
            binary.extend_from_slice(&m_cost.to_be_bytes());
            binary.extend_from_slice(&t_cost.to_be_bytes());
            binary.push(p_cost);
            binary.extend_from_slice(&tail);
            let result = import_with(&TEST_BOUNDS, &passphrase(), &text_of(&binary));
            prop_assert!(result.is_err(), "random bytes must never open");
        }
    }
}
