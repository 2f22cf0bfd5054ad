//! The encrypted-file key store: for headless machines without an OS keychain, chosen only
//! explicitly (`--key-store file`), never as a fallback.
//!
//! # File format
//!
//! ```text
//! offset  len  field
//!      0    4  magic "LKKF"
//!      4    1  format version = 0x01
//!      5    1  key derivation function = 0x01 (Argon2id, version 0x13)
//!      6    4  m_cost: memory in KiB (u32, big-endian)
//!     10    4  t_cost: passes (u32, big-endian)
//!     14    1  p_cost: lanes
//!     15   16  salt, random, fixed for the life of the file
//!     31   12  AES-256-GCM nonce, random, fresh for every write
//!     43    n  AES-256-GCM ciphertext of the payload
//!   43+n   16  AES-256-GCM tag
//!
//! key     = Argon2id(passphrase, salt, m_cost, t_cost, p_cost, 32 bytes)
//! AAD     = bytes 0..43
//! payload = service length (u8) || service (UTF-8, e.g. "latchkey.dev")
//!           || entry count (u16) || count × (name length (u16) || name || value length (u16) || value)
//! ```
//!
//! The parameters are the recovery kit's (`latchkey_core::recovery`): 64 MiB, 3 passes, 1 lane
//! when a file is created; a file outside OWASP's minimum (19 MiB, 2 passes) or above 1 GiB,
//! 20 passes or 8 lanes is refused before any derivation, so an edited header can neither make
//! the file cheap to attack nor exhaust the machine that opens it. Everything that needs no
//! passphrase is checked first; a wrong passphrase and an altered file are one error. An example
//! file, with its inputs, is committed as `crates/client/testdata/key-file-v1.hex`.
//!
//! The key is derived once per opened store and kept (zeroized on drop) together with the
//! passphrase; every read and write re-reads the file, so several stores (or processes) see each
//! other's writes. Writes replace the file atomically, but two processes writing at the same
//! moment can lose one of the writes: use one process per key file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Version};
use latchkey_core::secret::{Key32, SecretBytes};
use zeroize::Zeroizing;

use super::{KeySlot, KeyStore, KeychainError, missing};
use crate::profile::{KeyStoreKind, ProfileName, write_atomically};

/// Shortest passphrase accepted for a new key file, in characters (as for recovery kits).
pub const MIN_PASSPHRASE_CHARS: usize = latchkey_core::recovery::MIN_PASSPHRASE_CHARS;

/// Keys of one profile in a passphrase-encrypted file.
pub struct EncryptedFileStore {
    profile: ProfileName,
    service: String,
    path: PathBuf,
    unlocked: Mutex<Unlocked>,
}

struct Unlocked {
    passphrase: SecretBytes,
    /// The key derived for the file's current parameters and salt.
    derived: Option<(KdfParams, [u8; SALT_LEN], Key32)>,
}

impl EncryptedFileStore {
    /// Creates a new, empty key file at `path` for `profile`. Refuses to overwrite a file. Slow by
    /// design (Argon2id at 64 MiB: about a quarter of a second).
    pub fn create(
        path: impl Into<PathBuf>,
        profile: &ProfileName,
        passphrase: SecretBytes,
    ) -> Result<Self, KeychainError> {
        Self::create_with(KdfParams::RECOMMENDED, path.into(), profile, passphrase)
    }

    /// Opens an existing key file, checking the passphrase and that the file is `profile`'s.
    pub fn open(
        path: impl Into<PathBuf>,
        profile: &ProfileName,
        passphrase: SecretBytes,
    ) -> Result<Self, KeychainError> {
        let path = path.into();
        if !path.exists() {
            return Err(KeychainError::NoKeyFile { path });
        }
        let store = Self::unopened(path, profile, passphrase);
        store.with_entries(|_| Ok(((), false)))?;
        Ok(store)
    }

    /// Opens the key file at `path`, creating it if there is none.
    pub fn open_or_create(
        path: impl Into<PathBuf>,
        profile: &ProfileName,
        passphrase: SecretBytes,
    ) -> Result<Self, KeychainError> {
        let path = path.into();
        if path.exists() {
            Self::open(path, profile, passphrase)
        } else {
            Self::create(path, profile, passphrase)
        }
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn create_with(
        params: KdfParams,
        path: PathBuf,
        profile: &ProfileName,
        passphrase: SecretBytes,
    ) -> Result<Self, KeychainError> {
        let chars = std::str::from_utf8(passphrase.expose_secret())
            .map_or(passphrase.len(), |s| s.chars().count());
        if chars < MIN_PASSPHRASE_CHARS {
            return Err(KeychainError::PassphraseTooShort { min_chars: MIN_PASSPHRASE_CHARS });
        }
        if path.exists() {
            return Err(KeychainError::KeyFileExists { path });
        }
        let salt = random_array::<SALT_LEN>()?;
        let key = derive_key(params, &passphrase, &salt)?;
        let store = Self::unopened(path, profile, passphrase);
        store.lock().derived = Some((params, salt, key));
        let header = Header { params, salt };
        let empty = Entries { service: store.service.clone(), list: Vec::new() };
        store.write_file(&header, &empty)?;
        Ok(store)
    }

    fn unopened(path: PathBuf, profile: &ProfileName, passphrase: SecretBytes) -> Self {
        Self {
            profile: profile.clone(),
            service: profile.keychain_service(),
            path,
            unlocked: Mutex::new(Unlocked { passphrase, derived: None }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Unlocked> {
        // The guarded data is a cache and the passphrase; a panic elsewhere leaves it valid.
        self.unlocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads and decrypts the file, runs `f` on its entries, and writes the file back if `f`
    /// says it changed them.
    fn with_entries<T>(
        &self,
        f: impl FnOnce(&mut Entries) -> Result<(T, bool), KeychainError>,
    ) -> Result<T, KeychainError> {
        let mut unlocked = self.lock();
        let bytes = std::fs::read(&self.path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => KeychainError::NoKeyFile { path: self.path.clone() },
            _ => KeychainError::FileIo { action: "read", path: self.path.clone(), source },
        })?;
        let header = parse_header(&bytes).map_err(|reason| self.file_corrupt(reason))?;
        let key = match unlocked.derived.take() {
            Some((params, salt, key)) if params == header.params && salt == header.salt => key,
            _ => derive_key(header.params, &unlocked.passphrase, &header.salt)?,
        };
        let opened = open_payload(&key, &bytes);
        unlocked.derived = Some((header.params, header.salt, key));
        drop(unlocked);
        let payload =
            opened.map_err(|()| KeychainError::WrongPassphrase { path: self.path.clone() })?;
        let mut entries = Entries::decode(&payload).map_err(|reason| self.file_corrupt(reason))?;
        if entries.service != self.service {
            return Err(KeychainError::FileProfileMismatch {
                path: self.path.clone(),
                expected: self.service.clone(),
                found: entries.service.clone(),
            });
        }
        let (value, changed) = f(&mut entries)?;
        if changed {
            self.write_file(&header, &entries)?;
        }
        Ok(value)
    }

    fn write_file(&self, header: &Header, entries: &Entries) -> Result<(), KeychainError> {
        let payload =
            entries.encode().ok_or_else(|| self.file_corrupt("too many or too long entries"))?;
        let unlocked = self.lock();
        let Some((_, _, key)) = unlocked.derived.as_ref() else {
            return Err(KeychainError::Kdf { reason: "the file key was not derived" });
        };
        let nonce = random_array::<NONCE_LEN>()?;
        let mut file = header.encode(&nonce);
        let sealed = Aes256Gcm::new(key.expose_secret().into())
            .encrypt(&Nonce::from(nonce), Payload { msg: &payload, aad: &file })
            .map_err(|_| KeychainError::Kdf { reason: "encryption failed" })?;
        drop(unlocked);
        file.extend_from_slice(&sealed);
        write_atomically(&self.path, &file).map_err(|source| KeychainError::FileIo {
            action: "write",
            path: self.path.clone(),
            source,
        })
    }

    fn file_corrupt(&self, reason: &'static str) -> KeychainError {
        KeychainError::FileCorrupt { path: self.path.clone(), reason }
    }
}

impl KeyStore for EncryptedFileStore {
    fn profile(&self) -> &ProfileName {
        &self.profile
    }

    fn kind(&self) -> KeyStoreKind {
        KeyStoreKind::EncryptedFile
    }

    fn write_entry(&self, slot: &KeySlot, value: &[u8]) -> Result<(), KeychainError> {
        let name = slot.entry_name();
        self.with_entries(|entries| {
            entries.put(name, value);
            Ok(((), true))
        })
    }

    fn read_entry(&self, slot: &KeySlot) -> Result<Zeroizing<Vec<u8>>, KeychainError> {
        let name = slot.entry_name();
        self.with_entries(|entries| match entries.get(&name) {
            Some(value) => Ok((Zeroizing::new(value.to_vec()), false)),
            None => Err(missing(&self.profile, slot)),
        })
    }

    fn delete_entry(&self, slot: &KeySlot) -> Result<(), KeychainError> {
        let name = slot.entry_name();
        self.with_entries(|entries| Ok(((), entries.remove(&name))))
    }
}

impl fmt::Debug for EncryptedFileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedFileStore")
            .field("service", &self.service)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Format
// ---------------------------------------------------------------------------------------------

const MAGIC: &[u8; 4] = b"LKKF";
const FORMAT_VERSION: u8 = 1;
const KDF_ARGON2ID: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 4 + 1 + 1 + 4 + 4 + 1 + SALT_LEN + NONCE_LEN;
/// Largest key file read: far above any real one (a few KB), far below memory trouble.
const MAX_FILE_LEN: usize = 4 * 1024 * 1024;

/// Argon2id parameters (the recovery kit's, see `latchkey_core::recovery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KdfParams {
    m_cost: u32,
    t_cost: u32,
    p_cost: u8,
}

impl KdfParams {
    const RECOMMENDED: Self = Self { m_cost: 64 * 1024, t_cost: 3, p_cost: 1 };
    const FLOOR: Self = Self { m_cost: 19 * 1024, t_cost: 2, p_cost: 1 };
    const CEILING: Self = Self { m_cost: 1024 * 1024, t_cost: 20, p_cost: 8 };

    fn acceptable(self) -> bool {
        (Self::FLOOR.m_cost..=Self::CEILING.m_cost).contains(&self.m_cost)
            && (Self::FLOOR.t_cost..=Self::CEILING.t_cost).contains(&self.t_cost)
            && (Self::FLOOR.p_cost..=Self::CEILING.p_cost).contains(&self.p_cost)
    }
}

struct Header {
    params: KdfParams,
    salt: [u8; SALT_LEN],
}

impl Header {
    fn encode(&self, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 256);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.push(KDF_ARGON2ID);
        out.extend_from_slice(&self.params.m_cost.to_be_bytes());
        out.extend_from_slice(&self.params.t_cost.to_be_bytes());
        out.push(self.params.p_cost);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(nonce);
        out
    }
}

fn parse_header(bytes: &[u8]) -> Result<Header, &'static str> {
    if bytes.len() > MAX_FILE_LEN {
        return Err("it is too large");
    }
    if bytes.len() < HEADER_LEN + TAG_LEN {
        return Err("it is truncated");
    }
    if &bytes[0..4] != MAGIC {
        return Err("it does not start with LKKF");
    }
    if bytes[4] != FORMAT_VERSION {
        return Err("unknown format version; a newer latchkey wrote it");
    }
    if bytes[5] != KDF_ARGON2ID {
        return Err("unknown key derivation function");
    }
    let u32_at = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[at..at + 4]);
        u32::from_be_bytes(b)
    };
    let params = KdfParams { m_cost: u32_at(6), t_cost: u32_at(10), p_cost: bytes[14] };
    if !params.acceptable() {
        return Err("its Argon2id parameters are outside the accepted range (19456 to 1048576 \
                    KiB, 2 to 20 passes, 1 to 8 lanes)");
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&bytes[15..15 + SALT_LEN]);
    Ok(Header { params, salt })
}

/// Decrypts the payload of a whole file whose header parsed. `Err(())` on any AEAD failure.
fn open_payload(key: &Key32, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, ()> {
    let (header, sealed) = bytes.split_at(HEADER_LEN);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&header[HEADER_LEN - NONCE_LEN..]);
    Aes256Gcm::new(key.expose_secret().into())
        .decrypt(&Nonce::from(nonce), Payload { msg: sealed, aad: header })
        .map(Zeroizing::new)
        .map_err(|_| ())
}

/// The file key: Argon2id v0x13 of the passphrase under `salt` (the file's 16 bytes; a slice, so
/// the reference implementation's vectors, whose salts are 8 bytes, run through this function).
fn derive_key(
    params: KdfParams,
    passphrase: &SecretBytes,
    salt: &[u8],
) -> Result<Key32, KeychainError> {
    let argon_params = argon2::Params::new(
        params.m_cost,
        params.t_cost,
        u32::from(params.p_cost),
        Some(Key32::LEN),
    )
    .map_err(|_| KeychainError::Kdf { reason: "invalid parameters" })?;
    let mut out = Zeroizing::new([0u8; Key32::LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params)
        .hash_password_into(passphrase.expose_secret(), salt, out.as_mut())
        .map_err(|err| match err {
            argon2::Error::OutOfMemory => KeychainError::Kdf { reason: "out of memory" },
            _ => KeychainError::Kdf { reason: "argon2id refused its input" },
        })?;
    Ok(Key32::from_bytes(*out))
}

fn random_array<const N: usize>() -> Result<[u8; N], KeychainError> {
    latchkey_core::random::array::<N>().map_err(|_| KeychainError::Random)
}

/// The decrypted contents: the service the file belongs to, and its entries in name order.
struct Entries {
    service: String,
    list: Vec<(String, Zeroizing<Vec<u8>>)>,
}

impl Entries {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.list.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    fn put(&mut self, name: String, value: &[u8]) {
        let value = Zeroizing::new(value.to_vec());
        match self.list.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
            Ok(i) => self.list[i].1 = value,
            Err(i) => self.list.insert(i, (name, value)),
        }
    }

    fn remove(&mut self, name: &str) -> bool {
        let before = self.list.len();
        self.list.retain(|(n, _)| n != name);
        self.list.len() != before
    }

    /// `None` if a length does not fit its field.
    fn encode(&self) -> Option<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::new());
        out.push(u8::try_from(self.service.len()).ok()?);
        out.extend_from_slice(self.service.as_bytes());
        out.extend_from_slice(&u16::try_from(self.list.len()).ok()?.to_be_bytes());
        for (name, value) in &self.list {
            out.extend_from_slice(&u16::try_from(name.len()).ok()?.to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&u16::try_from(value.len()).ok()?.to_be_bytes());
            out.extend_from_slice(value);
        }
        Some(out)
    }

    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        const BAD: &str = "its contents are malformed";
        let mut reader = Reader(bytes);
        let service_len = usize::from(reader.take(1).ok_or(BAD)?[0]);
        let service = std::str::from_utf8(reader.take(service_len).ok_or(BAD)?).map_err(|_| BAD)?;
        let count = reader.u16().ok_or(BAD)?;
        let mut entries = Entries { service: service.to_owned(), list: Vec::new() };
        for _ in 0..count {
            let name_len = usize::from(reader.u16().ok_or(BAD)?);
            let name = std::str::from_utf8(reader.take(name_len).ok_or(BAD)?).map_err(|_| BAD)?;
            let value_len = usize::from(reader.u16().ok_or(BAD)?);
            let value = reader.take(value_len).ok_or(BAD)?;
            entries.put(name.to_owned(), value);
        }
        if !reader.0.is_empty() || entries.list.len() != usize::from(count) {
            return Err(BAD);
        }
        Ok(entries)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use latchkey_core::ids::{DeviceId, KeyVersion, WorkspaceId};
    use latchkey_core::keys::{DeviceKeys, WorkspaceKey};

    use super::*;

    /// The weakest parameters `open` accepts (OWASP's minimum): keeps the unit tests fast.
    const FAST: KdfParams = KdfParams::FLOOR;

    fn profile(name: &str) -> ProfileName {
        ProfileName::named(name).unwrap()
    }

    fn passphrase() -> SecretBytes {
        SecretBytes::copy_from(b"correct horse battery")
    }

    fn new_store(dir: &Path, name: &str) -> EncryptedFileStore {
        EncryptedFileStore::create_with(
            FAST,
            dir.join(format!("{name}.keys")),
            &profile(name),
            passphrase(),
        )
        .unwrap()
    }

    #[test]
    fn keys_round_trip_through_the_file_and_a_second_opening() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "dev");
        let device = DeviceId::random();
        let keys = DeviceKeys::generate().unwrap();
        store.save_device_keys(device, &keys).unwrap();
        let wk = WorkspaceKey::generate(WorkspaceId::random(), KeyVersion::FIRST).unwrap();
        store.save_workspace_key(&wk).unwrap();

        let again = EncryptedFileStore::open(store.path(), &profile("dev"), passphrase()).unwrap();
        let loaded = again.load_device_keys(device).unwrap();
        assert_eq!(loaded.public_keys(), keys.public_keys());
        let loaded_wk = again.load_workspace_key(wk.workspace(), wk.version()).unwrap();
        assert_eq!(loaded_wk.expose_secret(), wk.expose_secret());

        again.delete_device_keys(device).unwrap();
        let err = store.load_device_keys(device).unwrap_err();
        assert!(
            matches!(err, KeychainError::Missing { .. }),
            "the first store sees the delete: {err}"
        );
        again.delete_device_keys(device).unwrap();
    }

    #[test]
    fn a_wrong_passphrase_is_refused_with_one_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "dev");
        let err = EncryptedFileStore::open(
            store.path(),
            &profile("dev"),
            SecretBytes::copy_from(b"not the passphrase"),
        )
        .unwrap_err();
        assert!(matches!(err, KeychainError::WrongPassphrase { .. }), "{err}");
    }

    #[test]
    fn every_flipped_bit_of_the_file_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "dev");
        store
            .save_key(&KeySlot::DeviceSigning(DeviceId::random()), &Key32::from_bytes([3; 32]))
            .unwrap();
        let original = std::fs::read(store.path()).unwrap();
        // Parameters and the salt change the derived key; re-deriving for each of their bits
        // would take minutes, so flip those bytes' first bit only and every bit elsewhere.
        for i in 0..original.len() {
            let bits: &[u8] =
                if (6..31).contains(&i) { &[0x01] } else { &[1, 2, 4, 8, 16, 32, 64, 128] };
            for bit in bits {
                let mut altered = original.clone();
                altered[i] ^= bit;
                std::fs::write(store.path(), &altered).unwrap();
                let err =
                    store.read_entry(&KeySlot::DeviceSigning(DeviceId::random())).unwrap_err();
                assert!(
                    matches!(
                        err,
                        KeychainError::WrongPassphrase { .. } | KeychainError::FileCorrupt { .. }
                    ),
                    "byte {i} bit {bit}: {err}"
                );
            }
        }
    }

    #[test]
    fn weak_or_hostile_parameters_are_refused_before_any_derivation() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "dev");
        let original = std::fs::read(store.path()).unwrap();
        // Each bound just outside, and absurd values. Deriving at any of these would either make
        // the file cheap to attack or take the machine's memory or minutes: they fail first.
        for (m, t, p) in [
            (19 * 1024 - 1, 3, 1),
            (1024 * 1024 + 1, 3, 1),
            (64 * 1024, 1, 1),
            (64 * 1024, 21, 1),
            (64 * 1024, 3, 0),
            (64 * 1024, 3, 9),
            (8, 3, 1),
            (u32::MAX, 3, 1),
            (64 * 1024, u32::MAX, 1),
            (u32::MAX, u32::MAX, u8::MAX),
            (0, 0, 0),
        ] {
            let mut bytes = original.clone();
            bytes[6..10].copy_from_slice(&m.to_be_bytes());
            bytes[10..14].copy_from_slice(&t.to_be_bytes());
            bytes[14] = p;
            std::fs::write(store.path(), &bytes).unwrap();
            let err =
                EncryptedFileStore::open(store.path(), &profile("dev"), passphrase()).unwrap_err();
            assert!(
                matches!(err, KeychainError::FileCorrupt { .. }),
                "m={m} t={t} p={p} must be refused as a damaged file: {err}"
            );
            assert!(
                err.to_string().contains("(19456 to 1048576 KiB, 2 to 20 passes, 1 to 8 lanes)"),
                "m={m} t={t} p={p}: the message states the accepted range: {err}"
            );
        }
    }

    #[test]
    fn the_accepted_parameters_are_the_recovery_kits() {
        // The module docs promise the kit's parameters and bounds (latchkey_core::recovery,
        // docs/protocol.md "Recovery kits").
        assert_eq!(KdfParams::RECOMMENDED, KdfParams { m_cost: 65536, t_cost: 3, p_cost: 1 });
        assert_eq!(KdfParams::FLOOR, KdfParams { m_cost: 19456, t_cost: 2, p_cost: 1 });
        assert_eq!(KdfParams::CEILING, KdfParams { m_cost: 1_048_576, t_cost: 20, p_cost: 8 });
        assert!(KdfParams::FLOOR.acceptable() && KdfParams::CEILING.acceptable(), "inclusive");
    }

    #[test]
    fn a_new_key_file_is_written_at_the_recommended_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            EncryptedFileStore::create(dir.path().join("dev.keys"), &profile("dev"), passphrase())
                .unwrap();
        let bytes = std::fs::read(store.path()).unwrap();
        assert_eq!(&bytes[..6], b"LKKF\x01\x01", "magic, version 1, argon2id");
        assert_eq!(&bytes[6..15], &[0, 1, 0, 0, 0, 0, 0, 3, 1], "m=65536 KiB, t=3, p=1");
    }

    include!("../../../../tests/support/phc_argon2id.rs");

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
            let hex: String = key.expose_secret().iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(
                hex, case.tag,
                "{name}: the file key must be Argon2id v0x13 as the reference implementation \
                 computes it"
            );
            run += 1;
        }
        assert!(run >= 7, "ran {run} reference Argon2id cases, expected at least 7");
    }

    #[test]
    fn a_key_file_opens_only_for_its_own_profile() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "dev");
        let err =
            EncryptedFileStore::open(store.path(), &profile("test"), passphrase()).unwrap_err();
        assert!(matches!(err, KeychainError::FileProfileMismatch { .. }), "{err}");
    }

    #[test]
    fn creating_refuses_short_passphrases_and_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.keys");
        let short = EncryptedFileStore::create_with(
            FAST,
            path.clone(),
            &profile("x"),
            SecretBytes::copy_from(b"short"),
        );
        assert!(matches!(short, Err(KeychainError::PassphraseTooShort { .. })));
        new_store(dir.path(), "x");
        let again = EncryptedFileStore::create_with(FAST, path, &profile("x"), passphrase());
        assert!(matches!(again, Err(KeychainError::KeyFileExists { .. })));
        let none =
            EncryptedFileStore::open(dir.path().join("none.keys"), &profile("x"), passphrase());
        assert!(matches!(none, Err(KeychainError::NoKeyFile { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "dev");
        let mode = std::fs::metadata(store.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_file_never_contains_key_bytes_or_entry_names_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "dev");
        let canary = [0xC7u8; 32];
        let device = DeviceId::random();
        store.save_key(&KeySlot::DeviceSigning(device), &Key32::from_bytes(canary)).unwrap();
        let bytes = std::fs::read(store.path()).unwrap();
        assert!(!bytes.windows(8).any(|w| w == &canary[..8]));
        let name = device.to_string();
        assert!(!bytes.windows(name.len()).any(|w| w == name.as_bytes()));
    }

    /// A key file made once by `create` and checked independently (see the file's notes).
    const COMMITTED: &str = include_str!("../../testdata/key-file-v1.hex");
    const COMMITTED_PASSPHRASE: &[u8] = b"correct horse battery staple";

    /// The committed file's bytes: its hex with `#` comments and whitespace dropped.
    fn committed() -> Vec<u8> {
        let digits: Vec<u8> = COMMITTED
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default())
            .flat_map(str::split_whitespace)
            .flat_map(str::bytes)
            .collect();
        digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).unwrap();
                u8::from_str_radix(pair, 16)
                    .unwrap_or_else(|e| panic!("{pair:?} in the committed file is not hex: {e}"))
            })
            .collect()
    }

    /// The committed file, written where a store can open it.
    fn committed_in(dir: &Path) -> PathBuf {
        let path = dir.join("dev.keys");
        std::fs::write(&path, committed()).unwrap();
        path
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_committed_key_file_opens_to_its_keys_and_a_rewrite_keeps_its_header() {
        // Opening pins the reader: the header, the AAD, the KDF at the file's parameters, the
        // payload's encoding and the entry names. A write pins the writer; its nonce is fresh.
        let dir = tempfile::tempdir().unwrap();
        let path = committed_in(dir.path());
        let passphrase = || SecretBytes::copy_from(COMMITTED_PASSPHRASE);
        let store = EncryptedFileStore::open(&path, &profile("dev"), passphrase()).unwrap();
        let workspace: WorkspaceId = "6f1c1c2e-4c39-4a8e-9b0e-2d5f0c4a7b11".parse().unwrap();
        let member = "5a1d3c7e-2b4f-4e6a-8c9d-0e1f2a3b4c5d".parse().unwrap();
        let device = "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f".parse().unwrap();

        let keys = store.load_device_keys(device).unwrap();
        assert_eq!(keys.signing.expose_secret().expose_secret(), &[0xa1; 32], "signing seed");
        assert_eq!(
            hex(&keys.exchange.public_key().to_bytes()),
            "db48257e1237976a74ad8cfedca00213408fe89ac6251f1b930245f242b5c31a",
            "the exchange key of secret b2 x 32"
        );
        let wk = store.load_workspace_key(workspace, KeyVersion::FIRST).unwrap();
        assert_eq!(wk.expose_secret().expose_secret(), &[0x42; 32], "workspace key v1");
        let v2 = KeyVersion::new(2).unwrap();
        let mk = store.load_member_key(workspace, member, v2).unwrap();
        assert_eq!(mk.expose_secret().expose_secret(), &[0x17; 32], "member key v2");

        let original = committed();
        let header = parse_header(&original).unwrap();
        assert_eq!(header.params, KdfParams::RECOMMENDED, "made at create's parameters");
        let key = derive_key(header.params, &passphrase(), &header.salt).unwrap();
        assert_eq!(
            hex(key.expose_secret()),
            "f3988002c0a6b4a5847ab57cbfafd11eaf9179c6ac0e50a0f895374924cc9369",
            "the derived key Python's cryptography computed"
        );

        store.save_workspace_key(&wk).unwrap();
        let rewritten = std::fs::read(&path).unwrap();
        assert_eq!(rewritten.len(), original.len(), "the same entries, the same length");
        assert_eq!(&rewritten[..31], &original[..31], "a write keeps magic, parameters and salt");
        assert_ne!(&rewritten[31..43], &original[31..43], "with a fresh nonce");
        let again = EncryptedFileStore::open(&path, &profile("dev"), passphrase()).unwrap();
        let mk = again.load_member_key(workspace, member, v2).unwrap();
        assert_eq!(mk.expose_secret().expose_secret(), &[0x17; 32], "and it opens alike");
    }

    #[test]
    fn each_region_of_the_committed_key_file_altered_gives_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = committed_in(dir.path());
        let passphrase = || SecretBytes::copy_from(COMMITTED_PASSPHRASE);
        // One store throughout: it keeps the key derived for the file's parameters and salt, so
        // only the cases that change those derive again.
        let store = EncryptedFileStore::open(&path, &profile("dev"), passphrase()).unwrap();
        let original = committed();
        let flip = |at: usize| {
            let mut altered = original.clone();
            altered[at] ^= 0x01;
            altered
        };
        type Expected = Box<dyn Fn(&KeychainError) -> bool>;
        let corrupt = |reason: &'static str| -> Expected {
            Box::new(
                move |e| matches!(e, KeychainError::FileCorrupt { reason: r, .. } if *r == reason),
            )
        };
        let wrong =
            || -> Expected { Box::new(|e| matches!(e, KeychainError::WrongPassphrase { .. })) };
        let range = "its Argon2id parameters are outside the accepted range (19456 to 1048576 KiB, \
                     2 to 20 passes, 1 to 8 lanes)";
        let end = original.len();
        let cases: Vec<(&str, Vec<u8>, Expected)> = vec![
            ("magic", flip(0), corrupt("it does not start with LKKF")),
            (
                "format version",
                flip(4),
                corrupt("unknown format version; a newer latchkey wrote it"),
            ),
            ("kdf", flip(5), corrupt("unknown key derivation function")),
            ("m_cost over the ceiling", flip(6), corrupt(range)),
            ("t_cost over the ceiling", flip(12), corrupt(range)),
            ("p_cost 0", flip(14), corrupt(range)),
            (
                "cut to a header",
                original[..HEADER_LEN + TAG_LEN - 1].to_vec(),
                corrupt("it is truncated"),
            ),
            ("nonce", flip(31), wrong()),
            ("ciphertext", flip(HEADER_LEN), wrong()),
            ("tag", flip(end - 1), wrong()),
            ("last byte cut", original[..end - 1].to_vec(), wrong()),
            // These change the derived key: each derives again.
            ("m_cost raised within bounds", flip(9), wrong()),
            ("t_cost lowered within bounds", flip(13), wrong()),
            ("salt", flip(15), wrong()),
        ];
        let slot = KeySlot::Workspace {
            workspace: "6f1c1c2e-4c39-4a8e-9b0e-2d5f0c4a7b11".parse().unwrap(),
            version: KeyVersion::FIRST,
        };
        for (region, bytes, expected) in &cases {
            std::fs::write(&path, bytes).unwrap();
            let err = store.read_entry(&slot).unwrap_err();
            assert!(expected(&err), "{region} altered: unexpected error {err}");
        }

        std::fs::write(&path, &original).unwrap();
        let other = EncryptedFileStore::open(&path, &profile("test"), passphrase()).unwrap_err();
        assert!(
            matches!(&other, KeychainError::FileProfileMismatch { found, .. } if found == "latchkey.dev"),
            "the encrypted service name is the dev profile's: {other}"
        );
        let err = EncryptedFileStore::open(
            &path,
            &profile("dev"),
            SecretBytes::copy_from(b"correct horse battery stapler"),
        )
        .unwrap_err();
        assert!(matches!(err, KeychainError::WrongPassphrase { .. }), "{err}");
        assert!(store.read_entry(&slot).is_ok(), "the unaltered file still opens");
    }

    #[test]
    fn decoding_never_panics_on_arbitrary_payloads() {
        let mut seed = 0x1234_5678u32;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = Entries::decode(&bytes);
            let _ = parse_header(&bytes);
        }
    }
}
