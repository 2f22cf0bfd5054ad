//! The broker's database. SQLite in WAL mode is the embedded default.
//!
//! The store only ever receives envelopes, wrapped keys, public keys and hashes: no type that can
//! hold a plaintext credential or a key crosses into this module.

pub mod agents;
pub mod audit;
pub mod credentials;
pub mod devices;
pub(crate) mod hot;
pub mod members;
pub mod nonces;
pub mod policies;
pub mod workspaces;

use std::path::Path;
use std::str::FromStr as _;
use std::sync::Arc;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

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
}

/// A handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
    /// The proxy's read cache of agents, credentials, devices and grants (see [`hot`]).
    pub(crate) hot: Arc<hot::HotCache>,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` in WAL mode and applies pending
    /// migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool, hot: Arc::default() })
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes all connections, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
