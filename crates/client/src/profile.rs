//! Profiles: separate worlds of keys and settings on one machine, so test, development and real
//! data never mix.
//!
//! A profile has a name and a directory for its configuration. The name picks the OS keychain
//! service the profile's keys live under (`latchkey` for the real profile, `latchkey.dev`,
//! `latchkey.test`, ... for named ones) and the files it uses in its directory:
//!
//! ```text
//! <config dir>/default.toml   the real profile's configuration   (keychain service `latchkey`)
//! <config dir>/dev.toml       profile `dev`                      (keychain service `latchkey.dev`)
//! <config dir>/dev.keys       profile `dev`'s encrypted key file, only if chosen (--key-store file)
//! ```
//!
//! The configuration file holds identifiers, the broker URL and the certificate authorities
//! trusted for it, never a secret: keys live only in the key store ([`crate::keychain`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use latchkey_core::fingerprint::Fingerprint;
use latchkey_core::ids::{DeviceId, KeyVersion, MemberId, WorkspaceId};
use latchkey_core::tls::TrustAnchors;
use serde::{Deserialize, Serialize};

use crate::api::{BrokerEndpoint, BrokerUrl};

/// The keychain service name of the real profile; named profiles append `.<name>`.
pub const SERVICE_PREFIX: &str = "latchkey";

/// Longest profile name, in characters.
pub const MAX_NAME_LEN: usize = 40;

/// A profile name: the real profile, or a named one such as `dev` or `test`.
///
/// Named profiles are 1 to 40 characters of `a-z`, `0-9` and `-`, starting with a letter or
/// digit; `default` is reserved for the real profile's files.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProfileName(Option<String>);

impl ProfileName {
    /// The real profile: keychain service `latchkey`, configuration `default.toml`.
    pub const REAL: Self = Self(None);

    /// A named profile, e.g. `dev` (keychain service `latchkey.dev`).
    pub fn named(name: &str) -> Result<Self, ProfileError> {
        let valid_chars =
            name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let starts_well = name.bytes().next().is_some_and(|b| b != b'-');
        if name.is_empty() || name.len() > MAX_NAME_LEN || !valid_chars || !starts_well {
            return Err(ProfileError::InvalidName {
                reason: "use 1 to 40 characters of a-z, 0-9 and '-', not starting with '-'",
            });
        }
        if name == "default" {
            return Err(ProfileError::InvalidName {
                reason: "`default` is the real profile; leave the profile out to use it",
            });
        }
        Ok(Self(Some(name.to_owned())))
    }

    /// Whether this is the real profile.
    pub fn is_real(&self) -> bool {
        self.0.is_none()
    }

    /// The OS keychain service name: `latchkey` or `latchkey.<name>`.
    pub fn keychain_service(&self) -> String {
        match &self.0 {
            None => SERVICE_PREFIX.to_owned(),
            Some(name) => format!("{SERVICE_PREFIX}.{name}"),
        }
    }

    /// The stem of the profile's files: `default` or the name.
    pub fn file_stem(&self) -> &str {
        self.0.as_deref().unwrap_or("default")
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_stem())
    }
}

impl fmt::Debug for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProfileName({})", self.file_stem())
    }
}

impl FromStr for ProfileName {
    type Err = ProfileError;

    /// `default` (or the empty string) is the real profile; anything else must be a valid name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "default" => Ok(Self::REAL),
            name => Self::named(name),
        }
    }
}

/// A profile and the directory its files live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    name: ProfileName,
    config_dir: PathBuf,
}

impl Profile {
    /// A profile whose files live in `config_dir` (tests and `--config-dir`).
    pub fn new(name: ProfileName, config_dir: impl Into<PathBuf>) -> Self {
        Self { name, config_dir: config_dir.into() }
    }

    /// A profile in the platform's configuration directory (see [`platform_config_dir`]).
    pub fn in_platform_config_dir(name: ProfileName) -> Result<Self, ProfileError> {
        Ok(Self::new(name, platform_config_dir()?))
    }

    /// The profile's name.
    pub fn name(&self) -> &ProfileName {
        &self.name
    }

    /// The directory holding the profile's files.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// `<config dir>/<stem>.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.config_dir.join(format!("{}.toml", self.name.file_stem()))
    }

    /// `<config dir>/<stem>.keys`: where the encrypted-file key store keeps this profile's keys.
    pub fn key_file_path(&self) -> PathBuf {
        self.config_dir.join(format!("{}.keys", self.name.file_stem()))
    }

    /// `<config dir>/<stem>.pending`: refreshed OAuth tokens the provider issued but the broker
    /// has not stored yet, one sealed file per credential (see `refresh`).
    pub fn pending_refresh_dir(&self) -> PathBuf {
        self.config_dir.join(format!("{}.pending", self.name.file_stem()))
    }

    /// Whether the profile has a configuration file (a device was set up in it).
    pub fn is_set_up(&self) -> bool {
        self.config_path().exists()
    }

    /// Reads the profile's configuration.
    pub fn load_config(&self) -> Result<ProfileConfig, ProfileError> {
        let path = self.config_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ProfileError::NotSetUp { profile: self.name.to_string(), path });
            }
            Err(source) => return Err(ProfileError::Io { action: "read", path, source }),
        };
        toml::from_str(&text)
            .map_err(|e| ProfileError::Malformed { path, detail: e.message().to_owned() })
    }

    /// Writes the profile's configuration (atomically: a reader sees the old or the new file).
    pub fn save_config(&self, config: &ProfileConfig) -> Result<(), ProfileError> {
        let path = self.config_path();
        let text = toml::to_string(config)
            .map_err(|e| ProfileError::Malformed { path: path.clone(), detail: e.to_string() })?;
        let mut contents = String::from(CONFIG_HEADER);
        contents.push_str(&text);
        write_atomically(&path, contents.as_bytes()).map_err(|source| ProfileError::Io {
            action: "write",
            path,
            source,
        })
    }
}

const CONFIG_HEADER: &str =
    "# Latchkey profile configuration. Identifiers only: the keys are in the key store.\n";

/// Which key store a profile's keys are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum KeyStoreKind {
    /// The OS keychain (Secret Service on Linux).
    OsKeychain,
    /// The passphrase-encrypted key file, chosen explicitly for headless machines.
    EncryptedFile,
}

/// A profile's non-secret configuration: who this device is, in which workspace, at which broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// The broker this device is enrolled at.
    pub broker_url: BrokerUrl,
    /// Certificate authorities trusted for the broker besides the system's (a team server
    /// behind a private authority), as a PEM bundle of their certificates.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "pem::serialize",
        deserialize_with = "pem::deserialize"
    )]
    pub broker_ca: Option<TrustAnchors>,
    /// The workspace.
    pub workspace: WorkspaceId,
    /// This device's member.
    pub member: MemberId,
    /// This device.
    pub device: DeviceId,
    /// Where the keys are.
    pub key_store: KeyStoreKind,
    /// The newest workspace key version this device holds, once it holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_key_version: Option<KeyVersion>,
    /// The newest member key version this device holds, once it holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_key_version: Option<KeyVersion>,
    /// Devices whose fingerprint a person on this device confirmed: keys they wrap for this
    /// device are accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_devices: Vec<TrustedDevice>,
}

impl ProfileConfig {
    /// The broker and the authorities trusted for it.
    pub fn broker(&self) -> BrokerEndpoint {
        BrokerEndpoint::new(self.broker_url.clone()).trusting(self.broker_ca.clone())
    }

    /// Whether a person on this device confirmed `device`'s fingerprint and it is still
    /// `fingerprint` (the one of the keys the broker hands out for it now).
    pub fn trusts(&self, device: DeviceId, fingerprint: &Fingerprint) -> bool {
        self.trusted_devices.iter().any(|t| t.id == device && t.fingerprint.matches(fingerprint))
    }
}

/// `broker_ca` as a PEM bundle, read back through the same checks as a file of authorities.
mod pem {
    use latchkey_core::tls::TrustAnchors;
    use serde::{Deserialize as _, Deserializer, Serializer};

    #[expect(clippy::ref_option, reason = "the signature serde's `serialize_with` calls")]
    pub(super) fn serialize<S: Serializer>(
        anchors: &Option<TrustAnchors>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match anchors {
            Some(anchors) => serializer.serialize_str(&anchors.to_pem()),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<TrustAnchors>, D::Error> {
        let pem = String::deserialize(deserializer)?;
        TrustAnchors::from_pem(pem.as_bytes())
            .map(Some)
            .map_err(|problem| serde::de::Error::custom(format!("broker_ca: {problem}")))
    }
}

/// Another device whose fingerprint was compared by a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedDevice {
    /// The device.
    pub id: DeviceId,
    /// Its fingerprint as confirmed.
    pub fingerprint: Fingerprint,
}

/// A profile could not be named, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The profile name is not acceptable.
    #[error("invalid profile name: {reason}")]
    InvalidName {
        /// What is wrong.
        reason: &'static str,
    },
    /// No configuration file: the device was never set up in this profile.
    #[error(
        "profile `{profile}` is not set up on this device ({path} does not exist): create or join a workspace first"
    )]
    NotSetUp {
        /// The profile.
        profile: String,
        /// The configuration file looked for.
        path: PathBuf,
    },
    /// A configuration file exists where a new one would be written.
    #[error(
        "profile `{profile}` is already set up on this device ({path}): use another profile, or remove that one first"
    )]
    AlreadySetUp {
        /// The profile.
        profile: String,
        /// The existing configuration file.
        path: PathBuf,
    },
    /// The configuration file is not valid.
    #[error("the profile configuration {path} is not valid ({detail}): fix or remove it")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// No home or configuration directory could be found.
    #[error(
        "no configuration directory found: set HOME (or XDG_CONFIG_HOME, or APPDATA on Windows), or pass a configuration directory"
    )]
    NoConfigDir,
}

/// The platform's configuration directory for Latchkey: `$XDG_CONFIG_HOME/latchkey` or
/// `~/.config/latchkey` on Linux and BSD, `~/Library/Application Support/latchkey` on macOS,
/// `%APPDATA%\latchkey` on Windows.
pub fn platform_config_dir() -> Result<PathBuf, ProfileError> {
    let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    let base = if cfg!(windows) {
        absolute("APPDATA")
    } else if cfg!(target_os = "macos") {
        absolute("HOME").map(|h| h.join("Library").join("Application Support"))
    } else {
        absolute("XDG_CONFIG_HOME").or_else(|| absolute("HOME").map(|h| h.join(".config")))
    };
    base.map(|b| b.join("latchkey")).ok_or(ProfileError::NoConfigDir)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// readers never see a half-written file. Creates the directory (0700 on Unix) if needed; the
/// file is 0600 on Unix.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;

    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = crate::files::private_options().create(true).truncate(true).open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_profile_uses_the_bare_service_name_and_named_ones_append_theirs() {
        assert_eq!(ProfileName::REAL.keychain_service(), "latchkey");
        assert_eq!(ProfileName::named("dev").unwrap().keychain_service(), "latchkey.dev");
        assert_eq!(ProfileName::named("test").unwrap().keychain_service(), "latchkey.test");
        assert_eq!("default".parse::<ProfileName>().unwrap(), ProfileName::REAL);
    }

    #[test]
    fn profile_names_that_could_escape_their_namespace_are_refused() {
        for bad in ["", "Dev", "a.b", "../x", "-x", "a b", "default", &"x".repeat(41)] {
            assert!(ProfileName::named(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(ProfileName::named("ci-2").is_ok());
    }

    #[test]
    fn each_profile_has_its_own_files() {
        let dir = Path::new("/cfg");
        let real = Profile::new(ProfileName::REAL, dir);
        let dev = Profile::new(ProfileName::named("dev").unwrap(), dir);
        assert_eq!(real.config_path(), dir.join("default.toml"));
        assert_eq!(dev.config_path(), dir.join("dev.toml"));
        assert_eq!(dev.key_file_path(), dir.join("dev.keys"));
    }

    #[test]
    fn the_configuration_round_trips_and_holds_only_identifiers() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::new(ProfileName::named("t").unwrap(), dir.path());
        let config = ProfileConfig {
            broker_url: "https://broker.example/".parse().unwrap(),
            broker_ca: None,
            workspace: WorkspaceId::random(),
            member: MemberId::random(),
            device: DeviceId::random(),
            key_store: KeyStoreKind::OsKeychain,
            workspace_key_version: Some(KeyVersion::FIRST),
            member_key_version: None,
            trusted_devices: vec![TrustedDevice {
                id: DeviceId::random(),
                fingerprint: Fingerprint::of(&[1; 32], &[2; 32]),
            }],
        };
        assert!(matches!(profile.load_config(), Err(ProfileError::NotSetUp { .. })));
        profile.save_config(&config).unwrap();
        assert_eq!(profile.load_config().unwrap(), config);
        let text = std::fs::read_to_string(profile.config_path()).unwrap();
        assert!(text.contains("key_store = \"os-keychain\""), "{text}");
        assert!(text.contains("broker_url = \"https://broker.example\""), "{text}");
    }

    #[test]
    fn the_broker_authorities_are_kept_as_pem_and_a_damaged_bundle_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::new(ProfileName::named("t").unwrap(), dir.path());
        let ca = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = params.self_signed(&ca).unwrap().pem();
        let anchors = TrustAnchors::from_pem(pem.as_bytes()).unwrap();
        let config = ProfileConfig {
            broker_url: "https://broker.internal/".parse().unwrap(),
            broker_ca: Some(anchors.clone()),
            workspace: WorkspaceId::random(),
            member: MemberId::random(),
            device: DeviceId::random(),
            key_store: KeyStoreKind::OsKeychain,
            workspace_key_version: None,
            member_key_version: None,
            trusted_devices: Vec::new(),
        };
        profile.save_config(&config).unwrap();
        let text = std::fs::read_to_string(profile.config_path()).unwrap();
        assert!(text.contains("-----BEGIN CERTIFICATE-----"), "kept readable, as PEM: {text}");
        let loaded = profile.load_config().unwrap();
        assert_eq!(loaded, config, "the authorities read back unchanged");
        assert_eq!(loaded.broker().authorities(), Some(&anchors), "and reach the endpoint");

        // A bundle edited by hand into something unusable stops the profile from loading,
        // naming the field, instead of silently trusting the system's authorities alone.
        let damaged = text.replace("-----END CERTIFICATE-----", "");
        std::fs::write(profile.config_path(), damaged).unwrap();
        match profile.load_config().unwrap_err() {
            ProfileError::Malformed { detail, .. } => {
                assert!(
                    detail.contains("broker_ca: malformed PEM"),
                    "names field and problem: {detail}"
                );
            }
            other => panic!("a damaged bundle must be refused as malformed: {other}"),
        }
    }

    #[test]
    fn a_configuration_with_unknown_fields_is_refused_rather_than_half_read() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::new(ProfileName::REAL, dir.path());
        std::fs::write(profile.config_path(), "secret = \"x\"\n").unwrap();
        let err = profile.load_config().unwrap_err();
        assert!(matches!(err, ProfileError::Malformed { .. }), "{err}");
    }
}
