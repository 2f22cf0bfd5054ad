//! Replay protection: nonces of device request signatures and single-use capabilities, kept in
//! the database until they expire so every broker replica sees the same set.

use super::{Lock, Store, StoreError};

/// What a nonce protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceKind {
    /// A device request signature (device id || nonce).
    Request,
    /// A single-use capability.
    Capability,
}

impl NonceKind {
    fn as_str(self) -> &'static str {
        match self {
            NonceKind::Request => "request",
            NonceKind::Capability => "capability",
        }
    }
}

impl Store {
    /// Records `nonce` until `expires_at`. Returns `false` if it was already recorded (a replay).
    /// Expired nonces are purged on the way, so the table holds only live ones.
    pub async fn remember_nonce(
        &self,
        kind: NonceKind,
        nonce: &[u8],
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        // Not workspace-scoped: the table has no row-level security.
        let mut tx = self.begin_unscoped(Lock::None).await?;
        sqlx::query("DELETE FROM seen_nonces WHERE expires_at < $1")
            .bind(as_i64(now))
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO seen_nonces (kind, nonce, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (kind, nonce) DO NOTHING",
        )
        .bind(kind.as_str())
        .bind(nonce)
        .bind(as_i64(expires_at))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(inserted == 1)
    }
}

/// Unix seconds as the databases' 64-bit integer; times past year 292 billion saturate.
pub(crate) fn as_i64(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}
