//! Server configuration: command-line flags, then environment variables, then an optional TOML
//! file, then defaults, in that order of precedence.
//!
//! | setting | flag | environment | TOML key | default |
//! |---|---|---|---|---|
//! | API listener | `--listen` | `LATCHKEY_LISTEN` | `listen` | `127.0.0.1:8740` |
//! | metrics listener (`off` disables it) | `--metrics-listen` | `LATCHKEY_METRICS_LISTEN` | `metrics_listen` | `127.0.0.1:8741` |
//! | data directory | `--data-dir` | `LATCHKEY_DATA_DIR` | `data_dir` | `$XDG_DATA_HOME/latchkey-server` |
//! | log format | `--log-format` | `LATCHKEY_LOG_FORMAT` | `log_format` | `text` |
//! | broker key file | `--broker-key-file` | `LATCHKEY_BROKER_KEY_FILE` | `broker_key_file` | `<data dir>/broker.key` |
//! | broker key | | `LATCHKEY_BROKER_KEY` | | |
//! | PostgreSQL URL of the service role (SQLite in the data directory when absent) | `--database-url` | `LATCHKEY_DATABASE_URL` | `database_url` | |
//! | PostgreSQL URL of the schema owner, to migrate and grant at startup | `--migrate-database-url` | `LATCHKEY_MIGRATE_DATABASE_URL` | `migrate_database_url` | |
//! | origin devices reach the broker at, behind a load balancer (default: the listener's address) | `--public-origin` | `LATCHKEY_PUBLIC_ORIGIN` | `public_origin` | |
//! | seconds a call is held for a member's approval (`0`: never held) | `--approval-timeout` | `LATCHKEY_APPROVAL_TIMEOUT` | `approval_timeout` | `120` |
//! | signed requests a second one device may send, sustained (`0`: no limit) | `--device-request-rate` | `LATCHKEY_DEVICE_REQUEST_RATE` | `device_request_rate` | `10` |
//! | signed requests one device may send at once | `--device-request-burst` | `LATCHKEY_DEVICE_REQUEST_BURST` | `device_request_burst` | `3000` |
//! | threads that serve requests, each with a runtime of its own, or `auto` for one per core (default: one runtime shared by all cores) | `--serving-threads` | `LATCHKEY_SERVING_THREADS` | `serving_threads` | |
//! | PEM file of certificate authorities trusted for upstream calls besides the system's | `--upstream-ca` | `LATCHKEY_UPSTREAM_CA` | `upstream_ca` | |
//! | HTTP proxy for every upstream call (CONNECT for `https`), instead of `HTTPS_PROXY` and the like | `--upstream-proxy` | `LATCHKEY_UPSTREAM_PROXY` | `upstream_proxy` | |
//! | PEM certificate chain to serve the API over TLS (with `--tls-key`) | `--tls-cert` | `LATCHKEY_TLS_CERT` | `tls_cert` | |
//! | PEM private key of that certificate (mode 0600) | `--tls-key` | `LATCHKEY_TLS_KEY` | `tls_key` | |
//! | who may create workspaces: `open`, `token` or `closed` | `--workspace-creation` | `LATCHKEY_WORKSPACE_CREATION` | `workspace_creation` | `token` with a token file; else `open` on loopback, `closed` elsewhere |
//! | file holding the workspace creation token (mode 0600) | `--creation-token-file` | `LATCHKEY_CREATION_TOKEN_FILE` | `creation_token_file` | |
//!
//! The broker key is never accepted as a flag (flags are visible to every local user in the
//! process list) nor in the TOML file (which is usually less protected than a key file). When
//! neither the environment variable nor the key file exists, a new key is generated into the key
//! file with mode 0600. An existing key file readable by group or others is refused, and so are a
//! TLS key file and a creation token file. The creation token itself is read from its file only,
//! never from a flag, the environment or the TOML file, and the broker keeps only its digest
//! (`crate::creation`).
//!
//! Database passwords belong in a `~/.pgpass` file (`PGPASSFILE`) or `PGPASSWORD`, which the
//! PostgreSQL driver reads when a URL has none; a URL's password is redacted from `Debug` output.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use latchkey_core::keys::BrokerSecretKey;
use serde::Deserialize;

pub use crate::creation::{CreationMode, WorkspaceCreation};
use crate::rate_limit::{DeviceRateLimit, MAX_BURST, MAX_PER_SECOND};

/// Configuration could not be assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file is not valid.
    #[error("invalid config file {path}: {message}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The parser's explanation and line, without quoting the file's contents.
        message: String,
    },
    /// No data directory was given and none can be derived from the environment.
    #[error("no data directory: pass --data-dir or set LATCHKEY_DATA_DIR")]
    NoDataDir,
    /// The broker key could not be loaded or created.
    #[error("broker key: {0}")]
    BrokerKey(String),
    /// The database settings do not fit together.
    #[error("database: {0}")]
    Database(&'static str),
    /// The public origin is not an `http` or `https` origin.
    #[error(
        "public origin {0:?}: give scheme, host and optional port only, e.g. https://latchkey.example.com"
    )]
    PublicOrigin(String),
    /// The approval timeout is longer than a call may be held.
    #[error(
        "approval timeout: {0} seconds is more than the most a call may be held ({MAX_APPROVAL_TIMEOUT_SECS})"
    )]
    ApprovalTimeout(u64),
    /// The device request rate is more than the broker accepts.
    #[error(
        "device request rate: {0} requests a second is more than the most a device may be allowed ({MAX_PER_SECOND}); 0 turns the limit off"
    )]
    DeviceRequestRate(u64),
    /// The device request burst is zero or more than the broker accepts.
    #[error(
        "device request burst: {0} requests is not between 1 and {MAX_BURST}; to turn the limit off, set the device request rate to 0"
    )]
    DeviceRequestBurst(u64),
    /// The number of serving threads is zero or more than the broker starts.
    #[error(
        "serving threads: {0} is not between 1 and {MAX_SERVING_THREADS}; give auto for one per core, or leave the setting out to serve on one runtime with a worker per core"
    )]
    ServingThreads(u64),
    /// The API listener's TLS certificate and key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The workspace creation settings do not fit together.
    #[error("workspace creation: {0}")]
    WorkspaceCreation(String),
    /// The creation token file cannot be used.
    #[error("workspace creation: {0}")]
    CreationTokenFile(crate::creation::CreationTokenFileError),
    /// The upstream certificate authorities could not be read.
    #[error("upstream CA file {path}: {reason}")]
    UpstreamCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The longest a call may be held for an approval: an hour.
pub const MAX_APPROVAL_TIMEOUT_SECS: u64 = 3600;

/// The shortest creation token a broker accepts in its token file, in characters: long enough
/// that nobody guesses it (`openssl rand -base64 32` gives 44).
pub const MIN_CREATION_TOKEN_LEN: usize = 32;

/// An `http` or `https` origin with nothing after the authority, as devices sign it.
fn checked_origin(text: String) -> Result<String, ConfigError> {
    let trimmed = text.trim_end_matches('/');
    let ok = url::Url::parse(trimmed).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some()
            && u.path() == "/"
            && u.query().is_none()
            && u.fragment().is_none()
            && u.username().is_empty()
            && u.password().is_none()
            && !trimmed.ends_with('?')
    });
    if ok { Ok(trimmed.to_owned()) } else { Err(ConfigError::PublicOrigin(text)) }
}

/// A PostgreSQL connection URL (`postgres://` or `postgresql://`). It may carry a password, so
/// its `Debug` output replaces the password, and it is not `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL, password included, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_redacted(f, "DatabaseUrl", &self.0)
    }
}

/// `name(url)` with the URL's password, if any, replaced.
fn debug_redacted(f: &mut std::fmt::Formatter<'_>, name: &str, text: &str) -> std::fmt::Result {
    match url::Url::parse(text) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Cannot fail: the URL has a password, so it has a host that can carry one.
                let _ = url.set_password(Some("redacted"));
            }
            f.debug_tuple(name).field(&url.as_str()).finish()
        }
        Err(_) => write!(f, "{name}(<unparsable>)"),
    }
}

/// An HTTP proxy for upstream calls (`http://` or `https://`, host, optional port and
/// `user:password@`). Its `Debug` output replaces the password, and it is not `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(String);

impl ProxyUrl {
    /// The URL, password included, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_redacted(f, "ProxyUrl", &self.0)
    }
}

impl std::str::FromStr for ProxyUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        // Not echoed: a mistyped URL may still hold a password.
        let url = url::Url::parse(text)
            .map_err(|_| "expected a proxy URL such as http://proxy.internal:3128".to_owned())?;
        let ok = matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some()
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none();
        if !ok {
            return Err("expected an http:// or https:// proxy URL with a host and nothing after \
                        the port, such as http://proxy.internal:3128"
                .to_owned());
        }
        Ok(Self(text.to_owned()))
    }
}

impl<'de> Deserialize<'de> for ProxyUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if !crate::store::is_postgres_url(text) {
            // Not echoed: a mistyped URL may still hold a password.
            return Err("expected a postgres:// URL (SQLite needs no URL: it lives in the data \
                        directory)"
                .to_owned());
        }
        url::Url::parse(text).map_err(|e| format!("not a valid URL: {e}"))?;
        Ok(Self(text.to_owned()))
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where Prometheus metrics are served: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListen {
    /// No metrics listener.
    Off,
    /// Serve `GET /metrics` on this address (never the API listener's).
    At(SocketAddr),
}

impl std::str::FromStr for MetricsListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        text.trim().parse().map(Self::At).map_err(|_| {
            "expected an address such as 127.0.0.1:8741, or off to disable metrics".to_owned()
        })
    }
}

impl<'de> Deserialize<'de> for MetricsListen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How many serving threads the operator asked for: a number, or `auto` for one per core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingThreads {
    /// One per core the process may run on.
    Auto,
    /// This many (checked to be between 1 and [`MAX_SERVING_THREADS`] when resolved).
    Count(u64),
}

impl std::str::FromStr for ServingThreads {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        text.parse()
            .map(Self::Count)
            .map_err(|_| "expected a number of threads, or auto for one per core".to_owned())
    }
}

impl<'de> Deserialize<'de> for ServingThreads {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ServingThreads;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of threads, or \"auto\" for one per core")
            }

            fn visit_u64<E: serde::de::Error>(self, count: u64) -> Result<Self::Value, E> {
                Ok(ServingThreads::Count(count))
            }

            fn visit_i64<E: serde::de::Error>(self, count: i64) -> Result<Self::Value, E> {
                u64::try_from(count).map(ServingThreads::Count).map_err(|_| {
                    E::custom("a number of threads cannot be negative; give 1 or more, or auto")
                })
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Command-line flags (and their environment variables) of `latchkey-server`.
#[derive(Debug, Default, Parser)]
#[command(
    name = "latchkey-server",
    version,
    about = "Latchkey broker: stores ciphertext it cannot open, brokers agents' calls"
)]
pub struct Flags {
    /// TOML configuration file.
    #[arg(long, env = "LATCHKEY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the API listener.
    #[arg(long, env = "LATCHKEY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the Prometheus metrics listener, or `off`.
    #[arg(long, env = "LATCHKEY_METRICS_LISTEN")]
    pub metrics_listen: Option<MetricsListen>,
    /// Directory for the SQLite database and the broker key file.
    #[arg(long, env = "LATCHKEY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "LATCHKEY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// File holding the broker's secret key (created with mode 0600 if absent).
    #[arg(long, env = "LATCHKEY_BROKER_KEY_FILE")]
    pub broker_key_file: Option<PathBuf>,
    /// PostgreSQL URL the broker connects as (its unprivileged service role); without it, the
    /// broker uses SQLite in the data directory.
    #[arg(long, env = "LATCHKEY_DATABASE_URL")]
    pub database_url: Option<DatabaseUrl>,
    /// PostgreSQL URL of the schema owner: migrations run and the service role's grants are set
    /// with it at startup.
    #[arg(long, env = "LATCHKEY_MIGRATE_DATABASE_URL")]
    pub migrate_database_url: Option<DatabaseUrl>,
    /// Seconds the proxy holds a call that needs a member's approval (0: never hold; answer
    /// `approval_required` at once). At most 3600.
    #[arg(long, env = "LATCHKEY_APPROVAL_TIMEOUT", value_name = "SECONDS")]
    pub approval_timeout: Option<u64>,
    /// Signed requests a second one enrolled device may send, sustained, once its burst is
    /// spent; more are answered `429 rate_limited` (0: no limit). Each broker process counts
    /// its own. At most 100000.
    #[arg(long, env = "LATCHKEY_DEVICE_REQUEST_RATE", value_name = "PER_SECOND")]
    pub device_request_rate: Option<u64>,
    /// Signed requests one enrolled device may send at once, after a pause. From 1 to 1000000.
    #[arg(long, env = "LATCHKEY_DEVICE_REQUEST_BURST", value_name = "REQUESTS")]
    pub device_request_burst: Option<u64>,
    /// Serve requests on this many threads (auto: one per core), each a single-threaded runtime
    /// handling its connections from start to end (one per core suits a broker under heavy
    /// load: more requests a second, a little more latency per call when idle). Without it, one
    /// runtime with a worker per core serves every connection. From 1 to 1024, or auto.
    #[arg(long, env = "LATCHKEY_SERVING_THREADS", value_name = "THREADS")]
    pub serving_threads: Option<ServingThreads>,
    /// The origin (scheme, host, port) devices use to reach the broker, when it is behind a
    /// load balancer or reverse proxy: device signatures cover it. Every replica gets the same.
    #[arg(long, env = "LATCHKEY_PUBLIC_ORIGIN", value_name = "URL")]
    pub public_origin: Option<String>,
    /// PEM file of certificate authorities to trust for upstream APIs and token endpoints, on
    /// top of the system's (an API behind a private CA).
    #[arg(long, env = "LATCHKEY_UPSTREAM_CA", value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
    /// HTTP proxy every upstream call (APIs and token endpoints) goes through, as CONNECT
    /// tunnels for https upstreams, so the proxy never sees a credential; hosts in NO_PROXY go
    /// direct. Without it the standard HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY
    /// variables apply.
    #[arg(long, env = "LATCHKEY_UPSTREAM_PROXY", value_name = "URL")]
    pub upstream_proxy: Option<ProxyUrl>,
    /// PEM certificate chain (the server's certificate first) to serve the API over TLS, with
    /// HTTP/2; needs --tls-key. Without it the API is plain HTTP, for loopback or behind a
    /// TLS-terminating load balancer.
    #[arg(long, env = "LATCHKEY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the --tls-cert certificate; the file must not be readable by others.
    #[arg(long, env = "LATCHKEY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Who may create workspaces: anyone who reaches the broker (open), only with the creation
    /// token (token), or nobody (closed; people join with invites). Default: token when
    /// --creation-token-file is given, else open on a loopback listener and closed on any other.
    #[arg(long, env = "LATCHKEY_WORKSPACE_CREATION", value_enum, value_name = "MODE")]
    pub workspace_creation: Option<CreationMode>,
    /// File holding the workspace creation token (at least 32 visible ASCII characters, e.g.
    /// from `openssl rand -base64 32`); the file must not be readable by others. Read again on
    /// SIGHUP.
    #[arg(long, env = "LATCHKEY_CREATION_TOKEN_FILE", value_name = "FILE")]
    pub creation_token_file: Option<PathBuf>,
}

/// The TOML file: the same settings as the flags, minus secrets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    metrics_listen: Option<MetricsListen>,
    data_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    broker_key_file: Option<PathBuf>,
    database_url: Option<DatabaseUrl>,
    migrate_database_url: Option<DatabaseUrl>,
    approval_timeout: Option<u64>,
    device_request_rate: Option<u64>,
    device_request_burst: Option<u64>,
    serving_threads: Option<ServingThreads>,
    public_origin: Option<String>,
    upstream_ca: Option<PathBuf>,
    upstream_proxy: Option<ProxyUrl>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    workspace_creation: Option<CreationMode>,
    creation_token_file: Option<PathBuf>,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// API listener address.
    pub listen: SocketAddr,
    /// Metrics listener address; `None` when metrics are off.
    pub metrics_listen: Option<SocketAddr>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
    /// Broker key file.
    pub broker_key_file: PathBuf,
    /// PostgreSQL as the service role; `None` for SQLite at [`Config::database_path`].
    pub database_url: Option<DatabaseUrl>,
    /// PostgreSQL as the schema owner, to migrate at startup (only with `database_url`).
    pub migrate_database_url: Option<DatabaseUrl>,
    /// How long a call is held for a member's approval (zero: never).
    pub approval_timeout: std::time::Duration,
    /// How many signed requests one enrolled device may send; `None`: no limit.
    pub device_rate_limit: Option<DeviceRateLimit>,
    /// How many threads serve requests, each with a runtime of its own; `None`: the main
    /// runtime's workers serve them.
    pub serving_threads: Option<std::num::NonZeroUsize>,
    /// The origin devices reach the broker at; `None`: the listener's address.
    pub public_origin: Option<String>,
    /// PEM file of extra certificate authorities for upstream calls (see [`Config::upstream_roots`]).
    pub upstream_ca: Option<PathBuf>,
    /// The HTTP proxy for upstream calls; `None`: the standard proxy variables apply.
    pub upstream_proxy: Option<ProxyUrl>,
    /// The API listener's certificate chain and key files (see [`Config::server_tls`]).
    pub tls: Option<TlsFiles>,
    /// Who may create workspaces, as the operator chose; `None`: the default (see
    /// [`Config::creation_mode`]).
    pub workspace_creation: Option<CreationMode>,
    /// The file holding the creation token (see [`Config::workspace_creation`]).
    pub creation_token_file: Option<PathBuf>,
}

/// The PEM files of the API listener's TLS certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Default API listener: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8740";
/// Default metrics listener: loopback only, next to the API port.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:8741";

impl Config {
    /// Resolves flags (which already include their environment variables) over the TOML file
    /// over defaults. `env` looks up other environment variables (a parameter, for tests).
    pub fn resolve(
        flags: Flags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = flags
            .data_dir
            .or(file.data_dir)
            .or_else(|| default_data_dir(&env))
            .ok_or(ConfigError::NoDataDir)?;
        let broker_key_file = flags
            .broker_key_file
            .or(file.broker_key_file)
            .unwrap_or_else(|| data_dir.join("broker.key"));
        let database_url = flags.database_url.or(file.database_url);
        let migrate_database_url = flags.migrate_database_url.or(file.migrate_database_url);
        if database_url.is_none() && migrate_database_url.is_some() {
            return Err(ConfigError::Database(
                "--migrate-database-url needs --database-url (the service role's URL)",
            ));
        }
        let approval_timeout = flags
            .approval_timeout
            .or(file.approval_timeout)
            .unwrap_or(crate::approvals::DEFAULT_TIMEOUT.as_secs());
        if approval_timeout > MAX_APPROVAL_TIMEOUT_SECS {
            return Err(ConfigError::ApprovalTimeout(approval_timeout));
        }
        let device_rate_limit = device_rate_limit(
            flags.device_request_rate.or(file.device_request_rate),
            flags.device_request_burst.or(file.device_request_burst),
        )?;
        let serving_threads =
            flags.serving_threads.or(file.serving_threads).map(serving_threads).transpose()?;
        let public_origin =
            flags.public_origin.or(file.public_origin).map(checked_origin).transpose()?;
        let workspace_creation = flags.workspace_creation.or(file.workspace_creation);
        let creation_token_file = flags.creation_token_file.or(file.creation_token_file);
        match (workspace_creation, &creation_token_file) {
            (Some(CreationMode::Token), None) => {
                return Err(ConfigError::WorkspaceCreation(
                    "--workspace-creation token needs the token's file: give it with \
                     --creation-token-file FILE (LATCHKEY_CREATION_TOKEN_FILE, \
                     creation_token_file)"
                        .to_owned(),
                ));
            }
            (Some(mode @ (CreationMode::Open | CreationMode::Closed)), Some(_)) => {
                return Err(ConfigError::WorkspaceCreation(format!(
                    "a creation token file is given, but --workspace-creation is {}: drop the \
                     file, or choose token",
                    mode.as_str()
                )));
            }
            _ => {}
        }
        Ok(Self {
            listen: flags.listen.or(file.listen).unwrap_or_else(|| parse_default(DEFAULT_LISTEN)),
            metrics_listen: match flags.metrics_listen.or(file.metrics_listen) {
                Some(MetricsListen::At(addr)) => Some(addr),
                Some(MetricsListen::Off) => None,
                None => Some(parse_default(DEFAULT_METRICS_LISTEN)),
            },
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
            data_dir,
            broker_key_file,
            database_url,
            migrate_database_url,
            approval_timeout: std::time::Duration::from_secs(approval_timeout),
            device_rate_limit,
            serving_threads,
            public_origin,
            upstream_ca: flags.upstream_ca.or(file.upstream_ca),
            upstream_proxy: flags.upstream_proxy.or(file.upstream_proxy),
            tls: match (flags.tls_cert.or(file.tls_cert), flags.tls_key.or(file.tls_key)) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::Tls(
                        "give both --tls-cert and --tls-key (tls_cert and tls_key), or neither"
                            .to_owned(),
                    ));
                }
            },
            workspace_creation,
            creation_token_file,
        })
    }

    /// Who may create workspaces: the operator's choice; without one, `token` when a token file
    /// is given, else [`CreationMode::default_for`] the listener and the public origin (`open`
    /// when only this computer reaches the broker, `closed` otherwise).
    pub fn creation_mode(&self) -> CreationMode {
        match (self.workspace_creation, &self.creation_token_file) {
            (Some(mode), _) => mode,
            (None, Some(_)) => CreationMode::Token,
            (None, None) => CreationMode::default_for(self.listen, self.public_origin.as_deref()),
        }
    }

    /// How the broker answers workspace creations, reading the creation token file for `token`
    /// ([`crate::creation::CreationTokenFile::read`]). The file must not be readable by group or
    /// others and must hold one token of at least [`MIN_CREATION_TOKEN_LEN`] characters; no
    /// error quotes it.
    pub fn workspace_creation(&self) -> Result<WorkspaceCreation, ConfigError> {
        match (self.creation_mode(), &self.creation_token_file) {
            (CreationMode::Open, _) => Ok(WorkspaceCreation::Open),
            (CreationMode::Closed, _) => Ok(WorkspaceCreation::Closed),
            (CreationMode::Token, Some(path)) => crate::creation::CreationTokenFile::read(path)
                .map(WorkspaceCreation::TokenFile)
                .map_err(ConfigError::CreationTokenFile),
            (CreationMode::Token, None) => Err(ConfigError::WorkspaceCreation(
                "token mode needs --creation-token-file FILE".to_owned(),
            )),
        }
    }

    /// Reads the API listener's certificate chain and key, when TLS is configured. The key file
    /// must not be readable by group or others.
    pub fn server_tls(&self) -> Result<Option<crate::tls::ServerTls>, ConfigError> {
        let Some(files) = &self.tls else { return Ok(None) };
        let cert = std::fs::read(&files.cert)
            .map_err(|e| ConfigError::Tls(format!("cannot read {}: {e}", files.cert.display())))?;
        let key = match std::fs::File::open(&files.key) {
            Ok(file) => read_private(&files.key, file).map_err(ConfigError::Tls)?,
            Err(e) => {
                return Err(ConfigError::Tls(format!("cannot read {}: {e}", files.key.display())));
            }
        };
        crate::tls::ServerTls::from_pem(&cert, &key).map(Some).map_err(|e| {
            ConfigError::Tls(format!("{} and {}: {e}", files.cert.display(), files.key.display()))
        })
    }

    /// Reads the upstream certificate authorities, when a file is configured.
    pub fn upstream_roots(&self) -> Result<Option<crate::tls::UpstreamRoots>, ConfigError> {
        self.upstream_ca
            .as_deref()
            .map(|path| {
                crate::tls::UpstreamRoots::read(path).map_err(|problem| ConfigError::UpstreamCa {
                    path: path.to_owned(),
                    reason: problem.to_string(),
                })
            })
            .transpose()
    }

    /// Path of the SQLite database.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("latchkey.sqlite3")
    }
}

/// Loads the broker key from `LATCHKEY_BROKER_KEY` (via `env`) or the key file, creating the file
/// with a fresh key (mode 0600) when neither exists.
pub fn load_broker_key(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<BrokerSecretKey, ConfigError> {
    if let Some(text) = env("LATCHKEY_BROKER_KEY") {
        return BrokerSecretKey::from_secret_text(&text)
            .map_err(|e| ConfigError::BrokerKey(format!("LATCHKEY_BROKER_KEY: {e}")));
    }
    let path = &config.broker_key_file;
    match std::fs::File::open(path) {
        Ok(file) => {
            let bytes = read_private(path, file).map_err(ConfigError::BrokerKey)?;
            let text = std::str::from_utf8(&bytes).map_err(|_| {
                ConfigError::BrokerKey(format!(
                    "{}: not a broker key (not UTF-8 text)",
                    path.display()
                ))
            })?;
            BrokerSecretKey::from_secret_text(text)
                .map_err(|e| ConfigError::BrokerKey(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key_file(path),
        Err(e) => Err(ConfigError::BrokerKey(format!("cannot read {}: {e}", path.display()))),
    }
}

/// The device rate limit from its two settings, each defaulting to
/// [`DeviceRateLimit::DEFAULT`]'s; a rate of 0 turns it off.
fn device_rate_limit(
    rate: Option<u64>,
    burst: Option<u64>,
) -> Result<Option<DeviceRateLimit>, ConfigError> {
    let default = DeviceRateLimit::DEFAULT;
    let rate = rate.unwrap_or(u64::from(default.per_second()));
    let burst = burst.unwrap_or(u64::from(default.burst()));
    let per_second = u32::try_from(rate)
        .ok()
        .filter(|r| *r <= MAX_PER_SECOND)
        .ok_or(ConfigError::DeviceRequestRate(rate))?;
    let burst_fits = u32::try_from(burst).ok().filter(|b| (1..=MAX_BURST).contains(b));
    let burst = burst_fits.ok_or(ConfigError::DeviceRequestBurst(burst))?;
    if per_second == 0 {
        return Ok(None);
    }
    // Both are in range here, which is all `new` asks.
    DeviceRateLimit::new(per_second, burst).map(Some).ok_or(ConfigError::DeviceRequestRate(rate))
}

/// The most serving threads a broker runs: far beyond any machine's cores, low enough that a
/// typo cannot exhaust the process's threads.
pub const MAX_SERVING_THREADS: u64 = 1024;

fn serving_threads(setting: ServingThreads) -> Result<std::num::NonZeroUsize, ConfigError> {
    let threads = match setting {
        // A platform that cannot say how many cores it has gets one thread, which always works.
        ServingThreads::Auto => {
            return Ok(std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN));
        }
        ServingThreads::Count(threads) => threads,
    };
    usize::try_from(threads)
        .ok()
        .filter(|_| threads <= MAX_SERVING_THREADS)
        .and_then(std::num::NonZeroUsize::new)
        .ok_or(ConfigError::ServingThreads(threads))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|e| {
        // The parser's Display quotes the offending source line, which could be a secret someone
        // pasted into the wrong file: report only its message and the line number.
        let line = e.span().map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        let message = match line {
            Some(line) => format!("line {line}: {}", e.message()),
            None => e.message().to_owned(),
        };
        ConfigError::ParseFile { path: path.to_owned(), message }
    })
}

fn default_data_dir(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = env("XDG_DATA_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
        env("HOME").filter(|v| !v.is_empty()).map(|h| Path::new(&h).join(".local/share"))
    })?;
    Some(base.join("latchkey-server"))
}

fn parse_default(addr: &str) -> SocketAddr {
    // INVARIANT: the defaults are literal, valid socket addresses (checked by a unit test).
    addr.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Reads all of `file`, opened from `path`, as [`read_private_file`] does, with its errors
/// told as text naming `path`.
fn read_private(path: &Path, file: std::fs::File) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    read_private_file(file, None).map_err(|error| match error {
        PrivateFileError::Unreadable(e) => format!("cannot read {}: {e}", path.display()),
        PrivateFileError::Shared { mode } => private_message(path, mode),
        // No limit was given.
        PrivateFileError::TooLarge => format!("cannot read {}: too large", path.display()),
    })
}

/// Why [`read_private_file`] read nothing.
#[derive(Debug)]
pub(crate) enum PrivateFileError {
    /// The file could not be read.
    Unreadable(std::io::Error),
    /// Group or others have these permission bits on it.
    Shared {
        /// Its permission bits.
        mode: u32,
    },
    /// It holds more than the limit.
    TooLarge,
}

/// Reads all of a secret's `file`, once its permissions show it is its owner's alone, and at most
/// `limit` bytes of it (a longer file is [`PrivateFileError::TooLarge`]: a wrong path to a
/// device or a pipe that keeps writing is not read without end). The permissions checked are
/// those of the file read, so a file swapped in at its path meanwhile is never read unchecked.
pub(crate) fn read_private_file(
    file: std::fs::File,
    limit: Option<usize>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, PrivateFileError> {
    use std::io::Read as _;
    let meta = file.metadata().map_err(PrivateFileError::Unreadable)?;
    if let Some(mode) = shared_mode(&meta) {
        return Err(PrivateFileError::Shared { mode });
    }
    // Sized up front, so the secret is not copied into a larger buffer (and the smaller one left
    // behind unzeroized) as it is read. At most one byte past the limit is read.
    let most = limit.map_or(usize::MAX, |limit| limit.saturating_add(1));
    let capacity = usize::try_from(meta.len()).unwrap_or(0).min(most).saturating_add(1);
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(capacity));
    let take = u64::try_from(most).unwrap_or(u64::MAX);
    file.take(take).read_to_end(&mut bytes).map_err(PrivateFileError::Unreadable)?;
    if limit.is_some_and(|limit| bytes.len() > limit) {
        return Err(PrivateFileError::TooLarge);
    }
    Ok(bytes)
}

/// What is wrong with a secret's file whose permission bits are `mode`, and the fix.
fn private_message(path: &Path, mode: u32) -> String {
    format!(
        "{} is readable by other users (mode {mode:o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )
}

/// The file's permission bits when group or others have any of them (a secret's file must be
/// its owner's alone); `None` when they have none, and on systems without Unix permissions.
pub(crate) fn shared_mode(meta: &std::fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

fn create_key_file(path: &Path) -> Result<BrokerSecretKey, ConfigError> {
    use std::io::Write as _;
    let key = BrokerSecretKey::generate().map_err(|e| ConfigError::BrokerKey(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| ConfigError::BrokerKey(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| ConfigError::BrokerKey(format!("cannot create {}: {e}", path.display())))?;
    let text = key.expose_secret_text();
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(|e| ConfigError::BrokerKey(format!("cannot write {}: {e}", path.display())))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_core::creation::CreationToken;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_loopback_and_valid() {
        assert!(DEFAULT_LISTEN.parse::<SocketAddr>().unwrap().ip().is_loopback());
        assert!(DEFAULT_METRICS_LISTEN.parse::<SocketAddr>().unwrap().ip().is_loopback());
        let flags = Flags { data_dir: Some("/d".into()), ..Flags::default() };
        let config = Config::resolve(flags, no_env).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            config.metrics_listen.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_METRICS_LISTEN),
            "metrics are on by default, on loopback"
        );
        assert_eq!(config.broker_key_file, PathBuf::from("/d/broker.key"));
        assert_eq!(config.approval_timeout.as_secs(), 120, "calls are held two minutes by default");
        assert_eq!(
            config.device_rate_limit,
            Some(DeviceRateLimit::DEFAULT),
            "devices are limited by default, to 3000 at once and 10 a second"
        );
    }

    #[test]
    fn the_device_rate_limit_comes_from_flags_or_the_file_and_a_rate_of_0_lifts_it() {
        let flags = Flags::try_parse_from([
            "latchkey-server",
            "--data-dir",
            "/d",
            "--device-request-rate",
            "50",
            "--device-request-burst",
            "2000",
        ])
        .unwrap();
        let limit = Config::resolve(flags, no_env).unwrap().device_rate_limit.unwrap();
        assert_eq!((limit.per_second(), limit.burst()), (50, 2000));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "data_dir = \"/d\"\ndevice_request_burst = 40\n").unwrap();
        let limit =
            Config::resolve(Flags { config: Some(file.clone()), ..Flags::default() }, no_env)
                .unwrap()
                .device_rate_limit
                .unwrap();
        assert_eq!((limit.per_second(), limit.burst()), (10, 40), "each setting on its own");
        let flags = Flags {
            config: Some(file.clone()),
            device_request_burst: Some(60),
            ..Flags::default()
        };
        let limit = Config::resolve(flags, no_env).unwrap().device_rate_limit.unwrap();
        assert_eq!(limit.burst(), 60, "the flag beats the file");

        let off =
            Flags { data_dir: Some("/d".into()), device_request_rate: Some(0), ..Flags::default() };
        assert_eq!(Config::resolve(off, no_env).unwrap().device_rate_limit, None, "0 lifts it");

        std::fs::write(&file, "data_dir = \"/d\"\ndevice_request_rate = \"fast\"\n").unwrap();
        let error = Config::resolve(Flags { config: Some(file), ..Flags::default() }, no_env)
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2"), "a word for a number is refused with its line: {error}");
        let error = Flags::try_parse_from(["x", "--device-request-burst", "lots"]).unwrap_err();
        assert!(error.to_string().contains("device-request-burst"), "{error}");
    }

    #[test]
    fn serving_threads_come_from_a_flag_or_the_file_and_out_of_range_is_refused() {
        let flags =
            Flags::try_parse_from(["x", "--data-dir", "/d", "--serving-threads", "4"]).unwrap();
        let threads = Config::resolve(flags, no_env).unwrap().serving_threads;
        assert_eq!(threads.map(std::num::NonZeroUsize::get), Some(4));
        let unset = Flags { data_dir: Some("/d".into()), ..Flags::default() };
        assert_eq!(
            Config::resolve(unset, no_env).unwrap().serving_threads,
            None,
            "without the setting the main runtime serves, as before"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "data_dir = \"/d\"\nserving_threads = 2\n").unwrap();
        let from_file = Flags { config: Some(file.clone()), ..Flags::default() };
        let threads = Config::resolve(from_file, no_env).unwrap().serving_threads;
        assert_eq!(threads.map(std::num::NonZeroUsize::get), Some(2));

        for threads in [0, MAX_SERVING_THREADS + 1, u64::MAX] {
            let flags = Flags {
                data_dir: Some("/d".into()),
                serving_threads: Some(ServingThreads::Count(threads)),
                ..Flags::default()
            };
            let error = Config::resolve(flags, no_env).unwrap_err().to_string();
            assert!(
                error.starts_with("serving threads:")
                    && error.contains(&format!("{threads} is not between 1 and"))
                    && error.contains("leave the setting out"),
                "names the setting, the value and the default: {error}"
            );
        }
        let error = Flags::try_parse_from(["x", "--serving-threads", "many"]).unwrap_err();
        assert!(
            error.to_string().contains("serving-threads") && error.to_string().contains("auto"),
            "names the flag and what it takes: {error}"
        );

        let cores = std::thread::available_parallelism().unwrap();
        let flags =
            Flags::try_parse_from(["x", "--data-dir", "/d", "--serving-threads", "auto"]).unwrap();
        assert_eq!(Config::resolve(flags, no_env).unwrap().serving_threads, Some(cores));
        std::fs::write(&file, "data_dir = \"/d\"\nserving_threads = \"auto\"\n").unwrap();
        let from_file = Flags { config: Some(file.clone()), ..Flags::default() };
        assert_eq!(
            Config::resolve(from_file, no_env).unwrap().serving_threads,
            Some(cores),
            "auto in the file too"
        );
        for bad in ["serving_threads = \"lots\"", "serving_threads = -2"] {
            std::fs::write(&file, format!("data_dir = \"/d\"\n{bad}\n")).unwrap();
            let from_file = Flags { config: Some(file.clone()), ..Flags::default() };
            let error = Config::resolve(from_file, no_env).unwrap_err().to_string();
            assert!(
                error.contains("line 2") && error.contains("auto"),
                "{bad} is refused with its line and what is allowed: {error}"
            );
        }
    }

    #[test]
    fn device_rate_limits_out_of_range_are_refused_by_name() {
        let with = |rate: Option<u64>, burst: Option<u64>| {
            let flags = Flags {
                data_dir: Some("/d".into()),
                device_request_rate: rate,
                device_request_burst: burst,
                ..Flags::default()
            };
            Config::resolve(flags, no_env).map(|c| c.device_rate_limit)
        };
        let too_fast = u64::from(MAX_PER_SECOND) + 1;
        let error = with(Some(too_fast), None).unwrap_err().to_string();
        assert!(
            error.starts_with("device request rate:")
                && error.contains(&too_fast.to_string())
                && error.contains("0 turns the limit off"),
            "names the setting, the value, and the way to no limit: {error}"
        );
        assert!(with(Some(u64::MAX), None).is_err(), "not cut down to 32 bits");
        for burst in [0, u64::from(MAX_BURST) + 1, u64::MAX] {
            let error = with(None, Some(burst)).unwrap_err().to_string();
            assert!(
                error.starts_with("device request burst:")
                    && error.contains(&format!("{burst} requests is not between 1 and"))
                    && error.contains("rate to 0"),
                "a burst that lets nothing through, or too much, is refused: {error}"
            );
        }
        assert!(
            with(Some(0), Some(0)).is_err(),
            "a burst of 0 is a mistake even with the limit off: the rate is what turns it off"
        );
        let most = with(Some(MAX_PER_SECOND.into()), Some(MAX_BURST.into())).unwrap().unwrap();
        assert_eq!((most.per_second(), most.burst()), (MAX_PER_SECOND, MAX_BURST));
        let least = with(Some(1), Some(1)).unwrap().unwrap();
        assert_eq!((least.per_second(), least.burst()), (1, 1));
    }

    #[test]
    fn a_public_origin_is_scheme_host_and_port_only() {
        let with = |origin: &str| {
            let flags = Flags {
                data_dir: Some("/d".into()),
                public_origin: Some(origin.to_owned()),
                ..Flags::default()
            };
            Config::resolve(flags, no_env)
        };
        assert_eq!(
            with("https://latchkey.example.com/").unwrap().public_origin.as_deref(),
            Some("https://latchkey.example.com"),
            "a trailing slash is dropped: devices sign the origin plus the path"
        );
        assert_eq!(
            with("http://10.0.0.5:8740").unwrap().public_origin.as_deref(),
            Some("http://10.0.0.5:8740")
        );
        for bad in
            ["latchkey.example.com", "ftp://x", "https://x/api", "https://x?q", "https://u:p@x"]
        {
            let error = with(bad).unwrap_err();
            assert!(error.to_string().contains("public origin"), "{bad}: {error}");
        }
    }

    #[test]
    fn an_approval_timeout_over_an_hour_is_refused_by_name() {
        let flags = Flags {
            data_dir: Some("/d".into()),
            approval_timeout: Some(MAX_APPROVAL_TIMEOUT_SECS + 1),
            ..Flags::default()
        };
        let error = Config::resolve(flags, no_env).unwrap_err();
        assert!(error.to_string().contains("approval timeout"), "names the setting: {error}");
        let flags =
            Flags { data_dir: Some("/d".into()), approval_timeout: Some(0), ..Flags::default() };
        assert!(Config::resolve(flags, no_env).unwrap().approval_timeout.is_zero(), "0 is allowed");
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nlog_format = \"json\"\ndata_dir = \"/from-file\"\n",
        )
        .unwrap();
        let flags = Flags {
            config: Some(file),
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            ..Flags::default()
        };
        let config = Config::resolve(flags, no_env).unwrap();
        assert_eq!(config.listen.port(), 9100, "flag beats file");
        assert_eq!(config.log_format, LogFormat::Json, "file beats default");
        assert_eq!(config.data_dir, PathBuf::from("/from-file"));
    }

    #[test]
    fn upstream_cas_come_from_the_flag_or_the_file_and_a_bad_file_is_refused_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, format!("{}{}", ca.pem(), ca.pem())).unwrap();
        let toml = dir.path().join("server.toml");
        std::fs::write(&toml, format!("upstream_ca = {:?}\n", good.display().to_string())).unwrap();

        let from_file =
            Flags { data_dir: Some("/d".into()), config: Some(toml.clone()), ..Flags::default() };
        let config = Config::resolve(from_file, no_env).unwrap();
        assert_eq!(config.upstream_ca.as_deref(), Some(good.as_path()), "read from the file");
        let roots = config.upstream_roots().unwrap().expect("roots");
        assert_eq!(roots.len(), 2, "every certificate of the bundle is trusted");
        let none =
            Config::resolve(Flags { data_dir: Some("/d".into()), ..Flags::default() }, no_env)
                .unwrap();
        assert!(none.upstream_roots().unwrap().is_none(), "no extra roots unless configured");

        let with = |path: PathBuf| {
            let flags = Flags {
                data_dir: Some("/d".into()),
                config: Some(toml.clone()),
                upstream_ca: Some(path),
                ..Flags::default()
            };
            Config::resolve(flags, no_env).unwrap().upstream_roots()
        };
        let missing = dir.path().join("missing.pem");
        let error = with(missing.clone()).unwrap_err();
        assert!(
            error.to_string().contains(&missing.display().to_string())
                && error.to_string().contains("cannot read"),
            "the flag wins over the file, and a missing file is named: {error}"
        );
        let key_file = dir.path().join("key.pem");
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let error = with(key_file).unwrap_err().to_string();
        assert!(error.contains("private key"), "a key file is refused as one: {error}");
        assert!(
            !error.contains(key.serialize_pem().lines().nth(1).unwrap()),
            "the refusal does not quote the key: {error}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(with(empty).unwrap_err().to_string().contains("no certificate found"));
    }

    #[test]
    fn an_upstream_proxy_is_an_http_url_whose_password_stays_out_of_debug_output() {
        let proxy: ProxyUrl = "http://user:hunter2@proxy.internal:3128".parse().unwrap();
        let flags =
            Flags { data_dir: Some("/d".into()), upstream_proxy: Some(proxy), ..Flags::default() };
        let config = Config::resolve(flags, no_env).unwrap();
        let debug = format!("{config:?}");
        assert!(debug.contains("proxy.internal:3128") && !debug.contains("hunter2"), "{debug}");
        for bad in ["proxy.internal:3128", "socks5://p:1080", "http://p:3128/path", "http://p?x"] {
            let error = bad.parse::<ProxyUrl>().unwrap_err();
            assert!(error.contains("proxy URL"), "{bad}: {error}");
        }
        let error = "http://u:hunter2@ bad".parse::<ProxyUrl>().unwrap_err();
        assert!(!error.contains("hunter2"), "a refused URL is not echoed: {error}");
        assert!("https://proxy.internal".parse::<ProxyUrl>().is_ok());
    }

    #[test]
    fn tls_needs_a_certificate_and_its_private_key_and_a_bad_pair_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let issue = || {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (cert, key) = issue();
        let (_, other_key) = issue();
        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            path
        };
        let cert_file = write("cert.pem", &cert, 0o644);
        let with = |cert: Option<PathBuf>, key: Option<PathBuf>| {
            let flags = Flags {
                data_dir: Some("/d".into()),
                tls_cert: cert,
                tls_key: key,
                ..Flags::default()
            };
            Config::resolve(flags, no_env).and_then(|c| c.server_tls())
        };

        let good = write("key.pem", &key, 0o600);
        assert!(with(Some(cert_file.clone()), Some(good.clone())).unwrap().is_some());
        assert!(with(None, None).unwrap().is_none(), "plain HTTP unless configured");
        let half = with(Some(cert_file.clone()), None).unwrap_err().to_string();
        assert!(half.contains("--tls-cert and --tls-key"), "both or neither: {half}");

        let shared = write("shared.pem", &key, 0o644);
        let error = with(Some(cert_file.clone()), Some(shared)).unwrap_err().to_string();
        assert!(error.contains("readable by other users"), "{error}");
        let mismatched = write("other.pem", &other_key, 0o600);
        let error = with(Some(cert_file.clone()), Some(mismatched)).unwrap_err().to_string();
        assert!(error.contains("does not fit the certificate"), "{error}");
        let not_a_key = write("cert-as-key.pem", &cert, 0o600);
        let error = with(Some(cert_file.clone()), Some(not_a_key)).unwrap_err().to_string();
        assert!(error.contains("no usable PEM private key"), "{error}");
        let error = with(Some(good.clone()), Some(good.clone())).unwrap_err().to_string();
        assert!(error.contains("no usable PEM certificate"), "a key given as the chain: {error}");
        let key_body = key.lines().nth(1).unwrap();
        for error in [error, half] {
            assert!(!error.contains(key_body), "no error quotes the key: {error}");
        }
    }

    /// A file in `dir` holding `text`, with `mode` on Unix.
    fn private_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        path
    }

    const CREATION_TOKEN: &str = "cT0k3n-CANARY-4f8a1b2c3d4e5f60718293a4b5c6d7e8";

    #[test]
    fn workspace_creation_is_open_on_loopback_closed_elsewhere_and_by_token_with_a_token_file() {
        let mode = |listen: &str, origin: Option<&str>, token_file: Option<&str>| {
            let flags = Flags {
                data_dir: Some("/d".into()),
                listen: Some(listen.parse().unwrap()),
                public_origin: origin.map(str::to_owned),
                creation_token_file: token_file.map(PathBuf::from),
                ..Flags::default()
            };
            Config::resolve(flags, no_env).unwrap().creation_mode()
        };
        assert_eq!(
            mode("127.0.0.1:8740", None, None),
            CreationMode::Open,
            "only this computer reaches a loopback broker: the desktop's and a developer's"
        );
        assert_eq!(mode("[::1]:8740", None, None), CreationMode::Open, "IPv6 loopback too");
        assert_eq!(
            mode("0.0.0.0:8740", None, None),
            CreationMode::Closed,
            "a broker the network reaches creates nothing unless its operator says so"
        );
        assert_eq!(mode("10.0.0.5:8740", None, None), CreationMode::Closed);
        assert_eq!(
            mode("127.0.0.1:8740", Some("https://latchkey.example.com"), None),
            CreationMode::Closed,
            "a loopback listener behind a reverse proxy is reached from the network"
        );
        assert_eq!(
            mode("0.0.0.0:8740", None, Some("/etc/latchkey/creation-token")),
            CreationMode::Token,
            "a token file means creation by token"
        );
        let default =
            Config::resolve(Flags { data_dir: Some("/d".into()), ..Flags::default() }, no_env)
                .unwrap();
        assert_eq!(default.creation_mode(), CreationMode::Open, "the default listener is loopback");

        let chosen = Flags::try_parse_from([
            "latchkey-server",
            "--data-dir",
            "/d",
            "--listen",
            "0.0.0.0:8740",
            "--workspace-creation",
            "open",
        ])
        .unwrap();
        let config = Config::resolve(chosen, no_env).unwrap();
        assert_eq!(config.creation_mode(), CreationMode::Open, "the operator's choice wins");
        assert_eq!(config.workspace_creation().unwrap(), WorkspaceCreation::Open);
        let error =
            Flags::try_parse_from(["x", "--workspace-creation", "invite-only"]).unwrap_err();
        assert!(
            error.to_string().contains("open") && error.to_string().contains("closed"),
            "the flag error lists the modes: {error}"
        );
    }

    #[test]
    fn token_mode_without_a_token_file_and_a_token_file_with_another_mode_are_refused() {
        let with = |mode: CreationMode, file: Option<&str>| {
            let flags = Flags {
                data_dir: Some("/d".into()),
                workspace_creation: Some(mode),
                creation_token_file: file.map(PathBuf::from),
                ..Flags::default()
            };
            Config::resolve(flags, no_env)
        };
        let error = with(CreationMode::Token, None).unwrap_err().to_string();
        assert!(
            error.contains("--workspace-creation token") && error.contains("--creation-token-file"),
            "says what is missing and where to give it: {error}"
        );
        for mode in [CreationMode::Open, CreationMode::Closed] {
            let error = with(mode, Some("/etc/token")).unwrap_err().to_string();
            assert!(
                error.contains("creation token file is given") && error.contains(mode.as_str()),
                "a token that would be ignored is a mistake to point out: {error}"
            );
        }
        assert!(with(CreationMode::Closed, None).is_ok());
    }

    #[test]
    fn the_creation_token_file_must_be_private_long_enough_and_is_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let creation = |path: PathBuf| {
            let flags = Flags {
                data_dir: Some("/d".into()),
                listen: Some("0.0.0.0:8740".parse().unwrap()),
                creation_token_file: Some(path),
                ..Flags::default()
            };
            Config::resolve(flags, no_env).unwrap().workspace_creation()
        };

        let good = private_file(dir.path(), "token", &format!("{CREATION_TOKEN}\n"), 0o600);
        let creation_by_file = creation(good.clone()).unwrap();
        let Some(file) = creation_by_file.token_file() else {
            panic!("a token file gives creation by token, read again on a reload")
        };
        assert_eq!(creation_by_file.mode(), CreationMode::Token);
        assert_eq!(file.path(), good);
        assert!(
            file.matches(&CreationToken::parse(CREATION_TOKEN).unwrap()),
            "the token is the file's line without its newline"
        );
        assert!(!format!("{creation_by_file:?}").contains(CREATION_TOKEN), "{creation_by_file:?}");

        let mut errors = Vec::new();
        #[cfg(unix)]
        {
            let shared = private_file(dir.path(), "shared", CREATION_TOKEN, 0o640);
            let error = creation(shared).unwrap_err().to_string();
            assert!(
                error.contains("readable by other users") && error.contains("chmod 600"),
                "a token others can read is refused, as a TLS key is: {error}"
            );
            errors.push(error);
        }
        let short = private_file(dir.path(), "short", &CREATION_TOKEN[..20], 0o600);
        let error = creation(short).unwrap_err().to_string();
        assert!(
            error.contains("fewer than the 32") && error.contains("openssl rand"),
            "a guessable token is refused with a way to make a good one: {error}"
        );
        errors.push(error);
        let two_words =
            private_file(dir.path(), "words", "correct horse battery staple 12345", 0o600);
        let error = creation(two_words).unwrap_err().to_string();
        assert!(error.contains("visible ASCII"), "{error}");
        errors.push(error);
        let empty = private_file(dir.path(), "empty", "\n", 0o600);
        errors.push(creation(empty).unwrap_err().to_string());
        let missing = dir.path().join("missing");
        let error = creation(missing.clone()).unwrap_err().to_string();
        assert!(error.contains(&missing.display().to_string()), "names the file: {error}");
        errors.push(error);
        for error in errors {
            assert!(
                !error.contains(&CREATION_TOKEN[..20]) && !error.contains("horse"),
                "no error quotes the file: {error}"
            );
            assert!(error.starts_with("workspace creation:"), "names the setting: {error}");
        }
    }

    #[test]
    fn workspace_creation_comes_from_the_file_but_the_token_itself_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = private_file(dir.path(), "token", CREATION_TOKEN, 0o600);
        let toml = dir.path().join("server.toml");
        std::fs::write(
            &toml,
            format!(
                "data_dir = \"/d\"\nworkspace_creation = \"token\"\ncreation_token_file = {:?}\n",
                token_file.display().to_string()
            ),
        )
        .unwrap();
        let config =
            Config::resolve(Flags { config: Some(toml.clone()), ..Flags::default() }, no_env)
                .unwrap();
        assert_eq!(config.creation_mode(), CreationMode::Token);
        assert_eq!(config.creation_token_file.as_deref(), Some(token_file.as_path()));
        let flags = Flags {
            config: Some(toml.clone()),
            workspace_creation: Some(CreationMode::Closed),
            creation_token_file: None,
            ..Flags::default()
        };
        assert!(
            Config::resolve(flags, no_env).is_err(),
            "the flag's mode meets the file's token file: closed with a token is refused"
        );

        std::fs::write(
            &toml,
            format!("data_dir = \"/d\"\ncreation_token = \"{CREATION_TOKEN}\"\n"),
        )
        .unwrap();
        let error = Config::resolve(Flags { config: Some(toml), ..Flags::default() }, no_env)
            .unwrap_err()
            .to_string();
        assert!(error.contains("creation_token"), "the key is named: {error}");
        assert!(!error.contains(&CREATION_TOKEN[..20]), "the token is not echoed: {error}");
        assert!(
            !format!("{config:?}").contains(&CREATION_TOKEN[..20]),
            "the configuration holds the token's path, never the token"
        );
    }

    #[test]
    fn unknown_keys_and_secrets_in_the_file_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "broker_key = \"lkbroker1_x\"\n").unwrap();
        let err =
            Config::resolve(Flags { config: Some(file), ..Flags::default() }, no_env).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("server.toml") && message.contains("broker_key"), "{message}");
        assert!(
            !message.contains("lkbroker1_x"),
            "a key-shaped value must not be echoed: {message}"
        );
    }

    #[test]
    fn metrics_listen_takes_an_address_or_off_from_flag_or_file() {
        let flags = Flags::try_parse_from([
            "latchkey-server",
            "--data-dir",
            "/d",
            "--metrics-listen",
            "off",
        ])
        .unwrap();
        assert_eq!(Config::resolve(flags, no_env).unwrap().metrics_listen, None, "off disables");
        let flags =
            Flags::try_parse_from(["x", "--data-dir", "/d", "--metrics-listen", "0.0.0.0:9100"])
                .unwrap();
        assert_eq!(
            Config::resolve(flags, no_env).unwrap().metrics_listen,
            Some("0.0.0.0:9100".parse().unwrap())
        );
        let err = Flags::try_parse_from(["x", "--metrics-listen", "everywhere"]).unwrap_err();
        assert!(err.to_string().contains("or off"), "the flag error says what is accepted: {err}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "data_dir = \"/d\"\nmetrics_listen = \"off\"\n").unwrap();
        let config =
            Config::resolve(Flags { config: Some(file.clone()), ..Flags::default() }, no_env)
                .unwrap();
        assert_eq!(config.metrics_listen, None, "off in the file disables metrics");
        let flags = Flags {
            config: Some(file.clone()),
            metrics_listen: Some(MetricsListen::At("127.0.0.1:9200".parse().unwrap())),
            ..Flags::default()
        };
        assert_eq!(
            Config::resolve(flags, no_env).unwrap().metrics_listen.map(|a| a.port()),
            Some(9200),
            "the flag beats the file"
        );
        std::fs::write(&file, "data_dir = \"/d\"\nmetrics_listen = \"nowhere\"\n").unwrap();
        let err =
            Config::resolve(Flags { config: Some(file), ..Flags::default() }, no_env).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn database_urls_are_postgres_only_and_their_passwords_stay_out_of_debug_output() {
        let flags = Flags::try_parse_from([
            "x",
            "--data-dir",
            "/d",
            "--database-url",
            "postgres://svc:hunter2@db.internal:5432/latchkey",
            "--migrate-database-url",
            "postgresql://owner@db.internal/latchkey",
        ])
        .unwrap();
        let config = Config::resolve(flags, no_env).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "the password must be redacted: {debug}");
        assert!(debug.contains("svc:redacted@db.internal"), "{debug}");
        assert_eq!(
            config.database_url.as_ref().map(DatabaseUrl::expose),
            Some("postgres://svc:hunter2@db.internal:5432/latchkey"),
            "the connection itself gets the password"
        );

        let err = Flags::try_parse_from(["x", "--database-url", "mysql://u:pw@h/db"]).unwrap_err();
        assert!(err.to_string().contains("postgres://"), "{err}");

        let flags = Flags::try_parse_from([
            "x",
            "--data-dir",
            "/d",
            "--migrate-database-url",
            "postgres://owner@h/db",
        ])
        .unwrap();
        let err = Config::resolve(flags, no_env).unwrap_err();
        assert!(err.to_string().contains("--database-url"), "{err}");
    }

    #[test]
    fn a_missing_data_dir_is_a_clear_error() {
        let err = Config::resolve(Flags::default(), no_env).unwrap_err();
        assert!(err.to_string().contains("--data-dir"), "{err}");
    }

    #[test]
    fn the_broker_key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let config = Config::resolve(
            Flags { data_dir: Some(dir.path().into()), ..Flags::default() },
            no_env,
        )
        .unwrap();
        let first = load_broker_key(&config, no_env).unwrap();
        let mode = std::fs::metadata(&config.broker_key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key file must be private");
        let second = load_broker_key(&config, no_env).unwrap();
        assert_eq!(first.public_key(), second.public_key(), "the key must survive restarts");

        std::fs::set_permissions(&config.broker_key_file, std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let err = load_broker_key(&config, no_env).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_malformed_broker_key_in_the_environment_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::resolve(
            Flags { data_dir: Some(dir.path().into()), ..Flags::default() },
            no_env,
        )
        .unwrap();
        let env =
            |name: &str| (name == "LATCHKEY_BROKER_KEY").then(|| "lkbroker1_c2VjcmV0".to_owned());
        let err = load_broker_key(&config, env).unwrap_err();
        assert!(err.to_string().contains("LATCHKEY_BROKER_KEY"), "{err}");
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
    }
}
