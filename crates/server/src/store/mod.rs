//! The broker's database: SQLite in WAL mode (the embedded default) or PostgreSQL with forced
//! row-level security, chosen when the store is opened ([`Store::open`]).
//!
//! Both backends run the same SQL text through sqlx's `Any` driver: statements use numbered
//! `$N` placeholders, which SQLite binds by number too, and the two schemas agree on table and
//! column names and on column types as the `Any` driver decodes them (BIGINT, TEXT, BYTEA/BLOB).
//! What really differs is kept in [`Backend`]: how a transaction starts and takes its
//! workspace's write lock, how a JSON field is read, and how the database is opened and migrated.
//!
//! Every store method that touches workspace rows runs in a transaction begun by
//! `Store::begin`, which on PostgreSQL first sets `latchkey.workspace` for that transaction: the
//! row-level security policies then hide every other workspace's rows, whatever the statements
//! themselves say.
//!
//! The store only ever receives envelopes, wrapped keys, public keys and hashes: no type that can
//! hold a plaintext credential or a key crosses into this module.

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod credentials;
pub mod devices;
pub(crate) mod hot;
pub mod leases;
pub mod members;
pub mod nonces;
pub mod pauses;
pub mod policies;
pub mod workspaces;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use latchkey_core::ids::WorkspaceId;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions as _, Executor as _};

/// The embedded SQLite migrations.
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
/// The PostgreSQL migrations, run as the owner role.
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

use crate::audit::IngestProgress;

/// Longest a read of the audit log waits for the journal's ingester to index what was committed
/// before it.
const AUDIT_READ_WAIT: Duration = Duration::from_secs(5);

/// A transaction on either backend.
pub(crate) type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// The database could not be opened, migrated or queried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Opening or querying failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not parse (a bug or a hand-edited database).
    #[error("corrupt database row: {0}")]
    Corrupt(String),
    /// The PostgreSQL schema is older (or newer) than this broker's.
    #[error(
        "the database schema is at migration {found:?}, this broker needs {expected}; run the broker once with --migrate-database-url (the owner role) to migrate"
    )]
    SchemaVersion {
        /// The latest applied migration, if any.
        found: Option<i64>,
        /// The latest migration this broker knows.
        expected: i64,
    },
    /// The service role could escape row-level security or rewrite the audit log.
    #[error(
        "the database role the broker connects as {0}; connect as an unprivileged service role (docs/operations.md, \"PostgreSQL\")"
    )]
    UnsafeRole(&'static str),
    /// The audit journal could not be opened, recovered or written.
    #[error("audit journal: {0}")]
    AuditJournal(String),
    /// Records committed to the audit journal are not in the database yet and did not get there
    /// in time (the database refuses them or is slow); the reader should retry.
    #[error("recent audit records are not indexed yet; retry shortly")]
    AuditBehind,
}

/// How long a request waits for a PostgreSQL connection before it is answered `503
/// unavailable`: while the database is down or out of reach, callers hear so within seconds
/// instead of after sqlx's default of 30.
const POSTGRES_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the store cannot serve right now although nothing is wrong with the request: a
/// condition to retry once the database is back, or once an operator has made room. Anything
/// else the database refuses is a bug or damage, which retrying will not mend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// No connection could be had in time, or the one in use was lost (refused, reset, closed
    /// by the server or its operator).
    Unreachable,
    /// Another process held SQLite's write lock for longer than the busy timeout (a shell or a
    /// backup tool with a write transaction open on the broker's database).
    Busy,
    /// The disk is full (SQLite), or PostgreSQL ran out of disk, memory or connections.
    OutOfSpace,
    /// The database file cannot be written: opened read-only, or the operating system reported
    /// an I/O error.
    CannotWrite,
}

impl StoreError {
    /// Whether this failure is one to retry later, and why; `None` for everything else.
    pub fn unavailable(&self) -> Option<Unavailable> {
        let Self::Database(error) = self else { return None };
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Some(Unavailable::Unreachable),
            sqlx::Error::Database(error) => {
                if let Some(sqlite) = error.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                    return sqlite_unavailable(sqlite);
                }
                let code = error.code()?;
                // SQLSTATE class 08 (connection exception) and 57P (the server shutting down or
                // terminating the session, as a restart or failover does); class 53 (disk full,
                // out of memory, too many connections).
                if code.starts_with("08") || code.starts_with("57P") {
                    Some(Unavailable::Unreachable)
                } else if code.starts_with("53") {
                    Some(Unavailable::OutOfSpace)
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

/// What SQLite's result code says: its primary code is the low byte of the extended one.
fn sqlite_unavailable(error: &sqlx::sqlite::SqliteError) -> Option<Unavailable> {
    use sqlx::error::DatabaseError as _;
    let extended: i32 = error.code()?.parse().ok()?;
    match extended & 0xff {
        // SQLITE_BUSY, SQLITE_LOCKED
        5 | 6 => Some(Unavailable::Busy),
        // SQLITE_FULL
        13 => Some(Unavailable::OutOfSpace),
        // SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN
        8 | 10 | 14 => Some(Unavailable::CannotWrite),
        _ => None,
    }
}

/// A creation refused because a workspace (or one of its agents or members) already has as many
/// rows of the kind as a broker keeps; nothing was written.
///
/// Each limit is a constant beside the store method that enforces it, far above what a team uses
/// and far below what a script creating in a loop reaches. The count is taken in the inserting
/// transaction under the workspace's write lock (`Lock::Workspace`), so concurrent creations
/// cannot overshoot. Rows that no longer do anything (revoked agents and grants, expired grants
/// and invites, used invites, removed members and devices) do not count. Messages name the limit
/// and how to get under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitReached {
    /// The workspace has [`agents::MAX_ACTIVE_AGENTS`] unrevoked agents.
    #[error(
        "a workspace has at most {max} active agents; revoke agents no longer in use first (latchkey agent revoke; an admin sees every member's agents)",
        max = agents::MAX_ACTIVE_AGENTS
    )]
    Agents,
    /// The agent has [`agents::MAX_LIVE_GRANTS_PER_AGENT`] unrevoked, unexpired grants.
    #[error(
        "an agent has at most {max} live grants; revoke grants it no longer needs first (latchkey grant revoke), or wait for some to expire",
        max = agents::MAX_LIVE_GRANTS_PER_AGENT
    )]
    Grants,
    /// The workspace has [`credentials::MAX_CREDENTIALS`] credentials (shared and personal, in
    /// any status).
    #[error(
        "a workspace has at most {max} credentials, shared and personal together; remove credentials no longer in use first (latchkey credential remove)",
        max = credentials::MAX_CREDENTIALS
    )]
    Credentials,
    /// The workspace has [`members::MAX_PENDING_INVITES`] pending invites.
    #[error(
        "a workspace has at most {max} pending invites; revoke unused ones (latchkey invite list, latchkey invite revoke ID) or wait for them to expire (7 days at most)",
        max = members::MAX_PENDING_INVITES
    )]
    Invites,
    /// The workspace has [`members::MAX_MEMBERS`] active members.
    #[error(
        "a workspace has at most {max} members; an admin must remove members who left (latchkey member remove) before anyone else joins",
        max = members::MAX_MEMBERS
    )]
    Members,
    /// The member has [`members::MAX_DEVICES_PER_MEMBER`] active devices.
    #[error(
        "a member has at most {max} devices; remove devices no longer in use (latchkey device remove) before enrolling another",
        max = members::MAX_DEVICES_PER_MEMBER
    )]
    Devices,
}

impl LimitReached {
    /// A short stable name of the limit, for log lines: `agents`, `grants`, `credentials`,
    /// `invites`, `members` or `devices`.
    pub fn name(self) -> &'static str {
        match self {
            LimitReached::Agents => "agents",
            LimitReached::Grants => "grants",
            LimitReached::Credentials => "credentials",
            LimitReached::Invites => "invites",
            LimitReached::Members => "members",
            LimitReached::Devices => "devices",
        }
    }
}

/// Whether `count` rows (a `count(*)`) reach the limit `max`. A count that does not fit a
/// `usize` cannot happen; it would count as reached, so the store errs on writing nothing.
pub(crate) fn reaches(count: i64, max: usize) -> bool {
    usize::try_from(count).unwrap_or(usize::MAX) >= max
}

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL database with forced row-level security.
    Postgres,
}

/// What a transaction needs besides atomicity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    /// Nothing: reads, and writes whose single statements check what they depend on.
    None,
    /// The workspace's write lock, from the first statement to the commit: checks made inside
    /// the transaction cannot be invalidated by a concurrent writer. SQLite takes its database
    /// write lock (`BEGIN IMMEDIATE`); PostgreSQL a transaction advisory lock on the workspace.
    Workspace,
}

impl Backend {
    /// An SQL expression for the text of the top-level JSON field `key` of the TEXT column
    /// `column`, NULL when the column is not JSON or lacks the field. `key` is a fixed
    /// identifier of the caller's, never input.
    pub(crate) fn json_text(self, column: &str, key: &str) -> String {
        match self {
            Backend::Sqlite => {
                format!("CASE WHEN json_valid({column}) THEN json_extract({column}, '$.{key}') END")
            }
            Backend::Postgres => format!("({column}::jsonb ->> '{key}')"),
        }
    }
}

/// A handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
    /// The proxy's read cache of agents, pause states, credentials, devices and grants (see
    /// [`hot`]).
    pub(crate) hot: Arc<hot::HotCache>,
    /// PostgreSQL: the service role's URL, for the approvals listener's own connection.
    listen_url: Option<ListenUrl>,
    /// SQLite: the database file.
    sqlite_path: Option<Arc<Path>>,
    /// While a broker commits audit records to a journal: how far its ingester has copied them
    /// into the database, which reads of the log wait for (see `crate::audit`).
    pub(crate) audit_progress: Arc<Mutex<Option<Arc<IngestProgress>>>>,
}

/// A database URL kept for opening a listening connection; it may carry a password, so its
/// `Debug` shows nothing of it.
#[derive(Clone)]
struct ListenUrl(Arc<str>);

impl std::fmt::Debug for ListenUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListenUrl(<redacted>)")
    }
}

impl Store {
    /// Opens the database `location` names: a `postgres://` or `postgresql://` URL opens
    /// PostgreSQL as [`Store::open_postgres`] does without a migration URL; anything else is a
    /// SQLite path or `sqlite:` URL, opened (and created and migrated) as [`Store::open_sqlite`].
    pub async fn open(location: &str) -> Result<Self, StoreError> {
        if is_postgres_url(location) {
            return Self::open_postgres(location, None).await;
        }
        let path = location
            .strip_prefix("sqlite://")
            .or_else(|| location.strip_prefix("sqlite:"))
            .unwrap_or(location);
        Self::open_sqlite(Path::new(path)).await
    }

    /// Opens (creating if needed) the SQLite database at `path` in WAL mode and applies pending
    /// migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        // The Any driver opens SQLite from a URL, which carries the file and mode but not the
        // pragmas: foreign keys and the busy timeout are the driver's defaults, and the two
        // pragmas below are set on every connection (journal_mode is persistent anyway).
        let options = AnyConnectOptions::from_url(&sqlite_file_url(path)?)?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
            hot: Arc::default(),
            listen_url: None,
            sqlite_path: Some(Arc::from(path)),
            audit_progress: Arc::default(),
        })
    }

    /// Opens PostgreSQL at `url` as the broker's service role.
    ///
    /// With `migrate_url` (the schema owner's URL), first applies pending migrations as the
    /// owner and grants the service role exactly its privileges. Then refuses a service role that
    /// is a superuser, has BYPASSRLS, is (or can become) the tables' owner, may update or
    /// delete audit records or write the shared cache generation, and a schema that is not at
    /// this broker's migration.
    pub async fn open_postgres(url: &str, migrate_url: Option<&str>) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        if let Some(owner_url) = migrate_url {
            let service: String =
                sqlx::query_scalar("SELECT current_user::text").fetch_one(&pool).await?;
            let owner = AnyPoolOptions::new().max_connections(1).connect(owner_url).await?;
            POSTGRES_MIGRATIONS.run(&owner).await?;
            sqlx::query("SELECT latchkey_grant_service($1::name)::text")
                .bind(service)
                .execute(&owner)
                .await?;
            owner.close().await;
        }
        check_postgres(&pool).await?;
        let store = Self {
            pool,
            backend: Backend::Postgres,
            hot: Arc::default(),
            listen_url: Some(ListenUrl(url.into())),
            sqlite_path: None,
            audit_progress: Arc::default(),
        };
        // Reads the shared cache generation once: a role that cannot is refused now rather
        // than on every call.
        store.sync_hot_cache().await?;
        Ok(store)
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// SQLite: the database file.
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.sqlite_path.as_deref()
    }

    /// Waits until the audit journal's ingester (if a broker runs one over this store) has put
    /// every record committed so far into the database.
    pub(crate) async fn audit_caught_up(&self) -> Result<(), StoreError> {
        let progress = self.audit_progress.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match progress {
            Some(progress) if !progress.caught_up(AUDIT_READ_WAIT).await => {
                Err(StoreError::AuditBehind)
            }
            _ => Ok(()),
        }
    }

    /// PostgreSQL: the URL a listening connection opens (the service role's).
    pub(crate) fn listen_url(&self) -> Option<String> {
        self.listen_url.as_ref().map(|u| u.0.to_string())
    }

    /// PostgreSQL: sends `payload` on `channel` to every listening session.
    pub(crate) async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)::text")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes all connections (on SQLite, checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Begins a transaction on `workspace`'s rows: on PostgreSQL its first statement sets
    /// `latchkey.workspace`, so row-level security shows and admits that workspace's rows only.
    pub(crate) async fn begin(&self, workspace: WorkspaceId, lock: Lock) -> Result<Tx, StoreError> {
        let mut tx = self.begin_unscoped(lock).await?;
        self.enter(&mut tx, workspace, lock).await?;
        Ok(tx)
    }

    /// Begins a transaction without a workspace: on PostgreSQL it sees no workspace rows until
    /// [`Store::enter`] names one (used where the workspace is learnt inside the transaction,
    /// and for the tables that are not workspace-scoped).
    pub(crate) async fn begin_unscoped(&self, lock: Lock) -> Result<Tx, StoreError> {
        Ok(match (self.backend, lock) {
            (Backend::Sqlite, Lock::Workspace) => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            _ => self.pool.begin().await?,
        })
    }

    /// Switches `tx` to `workspace`'s rows (and, with [`Lock::Workspace`] on PostgreSQL, takes
    /// that workspace's write lock; SQLite's was taken by `BEGIN IMMEDIATE`). A transaction that
    /// locks several workspaces must enter them in a fixed order, or two could deadlock.
    pub(crate) async fn enter(
        &self,
        tx: &mut sqlx::AnyConnection,
        workspace: WorkspaceId,
        lock: Lock,
    ) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let statement = match lock {
            Lock::None => "SELECT set_config('latchkey.workspace', $1, true)",
            // The lock's key space: classid "lk" (0x6c6b), objid the workspace id's hash.
            Lock::Workspace => {
                "SELECT set_config('latchkey.workspace', $1, true),
                        pg_advisory_xact_lock(27755, hashtext($1))::text"
            }
        };
        sqlx::query(statement).bind(workspace.to_string()).execute(&mut *tx).await?;
        Ok(())
    }
}

/// Whether `location` is a PostgreSQL connection URL.
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// Refuses a PostgreSQL service role that could see past row-level security or rewrite the audit
/// log, and a schema that is not at this broker's latest migration.
async fn check_postgres(pool: &AnyPool) -> Result<(), StoreError> {
    let expected = POSTGRES_MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    let found: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .map_err(|e| match &e {
                // No migrations table yet, or no right to read it: not migrated for this role.
                sqlx::Error::Database(db)
                    if matches!(db.code().as_deref(), Some("42P01" | "42501")) =>
                {
                    StoreError::SchemaVersion { found: None, expected }
                }
                _ => StoreError::Database(e),
            })?;
    if found != Some(expected) {
        return Err(StoreError::SchemaVersion { found, expected });
    }
    let (superuser, bypass, owner, tamper, generation): (bool, bool, bool, bool, bool) =
        sqlx::query_as(
            "SELECT r.rolsuper, r.rolbypassrls,
                EXISTS (SELECT 1 FROM pg_tables t
                        WHERE t.schemaname = current_schema() AND t.tablename = 'audit_log'
                          AND pg_has_role(current_user, t.tableowner, 'MEMBER')),
                has_table_privilege('audit_log', 'UPDATE')
                  OR has_table_privilege('audit_log', 'DELETE')
                  OR has_table_privilege('audit_log', 'TRUNCATE'),
                has_table_privilege('cache_generation', 'INSERT')
                  OR has_table_privilege('cache_generation', 'UPDATE')
                  OR has_table_privilege('cache_generation', 'DELETE')
                  OR has_table_privilege('cache_generation', 'TRUNCATE')
         FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(pool)
        .await?;
    let problem = if superuser {
        Some("is a superuser, which bypasses row-level security")
    } else if bypass {
        Some("has BYPASSRLS")
    } else if owner {
        Some("owns the tables (or can become their owner)")
    } else if tamper {
        Some("may update, delete or truncate audit records")
    } else if generation {
        // It could set the shared cache generation back to a value a replica has seen, and so
        // hide a revocation from that replica's cache for up to its entry lifetime.
        Some("may write the shared cache generation")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(StoreError::UnsafeRole(problem)),
        None => Ok(()),
    }
}

/// The Any driver's URL for the SQLite file at `path`, created if missing: `sqlite:` directly
/// followed by the percent-encoded path, since the driver takes everything after the scheme (up to
/// `?`), percent-decoded, as the file name. sqlx's own `to_url_lossy` writes `sqlite://<path>`,
/// where a Windows path's drive (`C:`) is parsed as a host and port and the file name comes back
/// changed. A path that is not UTF-8 is refused here (the driver decodes the name as UTF-8).
fn sqlite_file_url(path: &Path) -> Result<url::Url, StoreError> {
    use std::fmt::Write as _;
    let unusable = |why: &str| {
        StoreError::Database(sqlx::Error::Configuration(
            format!("the database path {} {why}", path.display()).into(),
        ))
    };
    let text = path.to_str().ok_or_else(|| unusable("is not valid UTF-8"))?;
    let mut url = String::with_capacity(text.len() + 16);
    url.push_str("sqlite:");
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"/:-._~".contains(&byte) {
            url.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(url, "%{byte:02X}");
        }
    }
    url.push_str("?mode=rwc&cache=private");
    url::Url::parse(&url).map_err(|_| unusable("cannot be written as a database URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_url_gives_the_driver_the_exact_file_name() {
        use sqlx::ConnectOptions as _;
        for path in [
            r"C:\Users\Ada Lovelace\AppData\Roaming\latchkey\broker.sqlite3",
            r"\\server\share\latchkey.sqlite3",
            "/var/lib/latchkey/broker.sqlite3",
            "/tmp/a b/odd?#%&=+;name/é/db.sqlite3",
            "relative/db.sqlite3",
        ] {
            let url = sqlite_file_url(Path::new(path)).unwrap();
            let options = sqlx::sqlite::SqliteConnectOptions::from_url(&url).unwrap();
            assert_eq!(
                options.get_filename(),
                Path::new(path),
                "the driver must open the file it was given, not one renamed by the URL ({url})"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_database_path_that_is_not_utf8_is_refused_by_name() {
        use std::os::unix::ffi::OsStrExt as _;
        let path = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/\xff/db.sqlite3"));
        let err = sqlite_file_url(path).unwrap_err();
        assert!(err.to_string().contains("is not valid UTF-8"), "{err}");
    }

    #[tokio::test]
    async fn the_store_opens_in_a_directory_whose_name_needs_url_escaping() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a b?#%é");
        std::fs::create_dir(&odd).unwrap();
        let path = odd.join("db.sqlite3");
        let store = Store::open_sqlite(&path).await.unwrap();
        assert!(path.is_file(), "the database is the file named, in the directory named");
        drop(store);
    }

    /// The store's SQL is written once with `$N` placeholders; SQLite must bind them by number
    /// (reused and out of order), as PostgreSQL does, or the shared text would mean different
    /// things on the two backends.
    #[tokio::test]
    async fn sqlite_binds_dollar_placeholders_by_number() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(&dir.path().join("db.sqlite3")).await.expect("open");
        let text: String = sqlx::query_scalar("SELECT $2 || '-' || $1 || '-' || $2")
            .bind("one")
            .bind("two")
            .fetch_one(&store.pool)
            .await
            .expect("query");
        assert_eq!(text, "two-one-two", "placeholders bind by their number, not their position");
        store.close().await;
    }

    #[test]
    fn the_listening_url_never_shows_its_password() {
        let url = ListenUrl("postgres://svc:CANARYpassw0rd@db.internal/latchkey".into());
        let shown = format!("{url:?}");
        assert!(!shown.contains("CANARYpassw0rd"), "Debug must not print the password: {shown}");
        assert!(!shown.contains("db.internal"), "nor anything else of the URL: {shown}");
    }

    #[test]
    fn locations_choose_the_backend() {
        assert!(is_postgres_url("postgres://svc@db/latchkey"));
        assert!(is_postgres_url("postgresql://svc@db/latchkey"));
        assert!(!is_postgres_url("sqlite:///var/lib/latchkey/latchkey.sqlite3"));
        assert!(!is_postgres_url("/var/lib/latchkey/postgres://odd-but-a-path"));
    }
}
