//! Refresh leases: at most one refresher of a credential's OAuth tokens at a time, across
//! device processes, devices and broker replicas (migrations `0005_refresh_lease.sql`).
//!
//! A refresher takes the lease before it presents the refresh token to the provider and gives it
//! back when the rotated pair is stored (in the storing transaction: see
//! [`Store::update_credential`] and [`Store::replace_envelope`]) or when it gives up
//! ([`Store::release_refresh_lease`]). Taking is one conditional upsert: it inserts the row, or
//! replaces it once the holder's lease has expired (a crashed or hung holder), and the statement
//! changes the row for exactly one of several concurrent takers, on SQLite and on PostgreSQL
//! alike. Each take gets a fresh random id, so a lease taken over is a new lease.
//!
//! The lease guards the provider, not the stored envelope: the revision and envelope
//! compare-and-swaps still decide what is stored.

use latchkey_core::ids::{CredentialId, DeviceId, LeaseId, WorkspaceId};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::nonces::as_i64;
use super::{Lock, Store, StoreError, Tx};

/// How long a refresh lease lasts: longer than a refresher's token request may take (devices
/// give up on one after 30 seconds, the broker after 20), with time left to store the result.
pub const REFRESH_LEASE_SECS: u64 = 60;

/// Who holds a refresh lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseHolder {
    /// A device (any of its processes: the lease id, not the device, identifies the holder).
    Device(DeviceId),
    /// The broker's own refresh on the call path (any replica).
    Broker,
}

impl LeaseHolder {
    fn column(self) -> Option<String> {
        match self {
            LeaseHolder::Device(device) => Some(device.to_string()),
            LeaseHolder::Broker => None,
        }
    }
}

/// A refresh lease as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshLease {
    /// Chosen by the broker at each take.
    pub id: LeaseId,
    /// The credential whose refresh it guards.
    pub credential: CredentialId,
    /// Who holds it.
    pub holder: LeaseHolder,
    /// When it was taken (unix seconds).
    pub taken_at: u64,
    /// When it lapses (unix seconds): from then on anyone may take it over.
    pub expires_at: u64,
}

impl RefreshLease {
    /// Whether the lease still binds others at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        self.expires_at > now
    }
}

/// A lease that was taken, and the credential's revision when it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakenLease {
    /// The lease now held.
    pub lease: RefreshLease,
    /// The credential's revision at the take: a refresher that read an older one reads again
    /// (someone may have refreshed meanwhile) before it presents a refresh token.
    pub revision: u64,
}

/// Why a lease was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRefused {
    /// Someone else holds a live lease on the credential.
    Held(RefreshLease),
    /// No such credential in the workspace.
    NotFound,
}

impl Store {
    /// Takes the refresh lease of `credential` for `holder` for `ttl_secs` from `now`, unless
    /// someone holds a live one (a lapsed lease is taken over). A holder that already holds a
    /// live lease is refused too: two processes of one device must not both refresh.
    pub async fn take_refresh_lease(
        &self,
        workspace: WorkspaceId,
        credential: CredentialId,
        holder: LeaseHolder,
        ttl_secs: u64,
        now: u64,
    ) -> Result<Result<TakenLease, LeaseRefused>, StoreError> {
        let id = LeaseId::random();
        let expires_at = now.saturating_add(ttl_secs.max(1));
        let mut tx = self.begin(workspace, Lock::None).await?;
        // `INSERT ... SELECT` so a missing credential inserts nothing (rather than failing its
        // foreign key); SQLite needs the SELECT's WHERE before ON CONFLICT anyway.
        let taken = sqlx::query(
            "INSERT INTO refresh_leases (workspace_id, credential_id, id, holder_device, taken_at, expires_at)
             SELECT $1, $2, $3, $4, $5, $6 FROM credentials WHERE workspace_id = $1 AND id = $2
             ON CONFLICT (workspace_id, credential_id) DO UPDATE
                 SET id = excluded.id, holder_device = excluded.holder_device,
                     taken_at = excluded.taken_at, expires_at = excluded.expires_at
                 WHERE refresh_leases.expires_at <= $5",
        )
        .bind(workspace.to_string())
        .bind(credential.to_string())
        .bind(id.to_string())
        .bind(holder.column())
        .bind(as_i64(now))
        .bind(as_i64(expires_at))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let revision: Option<i64> = sqlx::query_scalar(
            "SELECT revision FROM credentials WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace.to_string())
        .bind(credential.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(revision) = revision else {
            tx.commit().await?;
            return Ok(Err(LeaseRefused::NotFound));
        };
        let current = lease_in(&mut tx, workspace, credential).await?;
        tx.commit().await?;
        let current = current.ok_or_else(|| {
            StoreError::Corrupt(format!("refresh lease of {credential} vanished"))
        })?;
        if !taken {
            return Ok(Err(LeaseRefused::Held(current)));
        }
        let revision = u64::try_from(revision)
            .map_err(|_| StoreError::Corrupt(format!("credential {credential}: revision")))?;
        Ok(Ok(TakenLease { lease: current, revision }))
    }

    /// The refresh lease of `credential`, live or lapsed, if there is one.
    pub async fn refresh_lease(
        &self,
        workspace: WorkspaceId,
        credential: CredentialId,
    ) -> Result<Option<RefreshLease>, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let lease = lease_in(&mut tx, workspace, credential).await?;
        tx.commit().await?;
        Ok(lease)
    }

    /// Gives back the lease `id` on `credential` if `holder` holds it (live or lapsed but not
    /// taken over); returns whether it did.
    pub async fn release_refresh_lease(
        &self,
        workspace: WorkspaceId,
        credential: CredentialId,
        id: LeaseId,
        holder: LeaseHolder,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let released = release_in(&mut tx, workspace, credential, id, holder).await?;
        tx.commit().await?;
        Ok(released)
    }
}

/// Deletes the lease `id` of `credential` held by `holder`, inside `tx`; returns whether it did.
pub(crate) async fn release_in(
    tx: &mut Tx,
    workspace: WorkspaceId,
    credential: CredentialId,
    id: LeaseId,
    holder: LeaseHolder,
) -> Result<bool, StoreError> {
    let released = sqlx::query(
        "DELETE FROM refresh_leases
         WHERE workspace_id = $1 AND credential_id = $2 AND id = $3
           AND holder_device IS NOT DISTINCT FROM $4",
    )
    .bind(workspace.to_string())
    .bind(credential.to_string())
    .bind(id.to_string())
    .bind(holder.column())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(released == 1)
}

/// The lease row of `credential`, inside `tx`.
pub(crate) async fn lease_in(
    tx: &mut Tx,
    workspace: WorkspaceId,
    credential: CredentialId,
) -> Result<Option<RefreshLease>, StoreError> {
    let row = sqlx::query(
        "SELECT credential_id, id, holder_device, taken_at, expires_at FROM refresh_leases
         WHERE workspace_id = $1 AND credential_id = $2",
    )
    .bind(workspace.to_string())
    .bind(credential.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(lease).transpose()
}

fn lease(row: &AnyRow) -> Result<RefreshLease, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("refresh lease: {what}"));
    let time = |column: &str| -> Result<u64, StoreError> {
        u64::try_from(row.try_get::<i64, _>(column)?).map_err(|_| corrupt(column))
    };
    let holder = match row.try_get::<Option<String>, _>("holder_device")? {
        None => LeaseHolder::Broker,
        Some(device) => LeaseHolder::Device(device.parse().map_err(|_| corrupt("holder"))?),
    };
    Ok(RefreshLease {
        id: row.try_get::<String, _>("id")?.parse().map_err(|_| corrupt("id"))?,
        credential: row
            .try_get::<String, _>("credential_id")?
            .parse()
            .map_err(|_| corrupt("credential"))?,
        holder,
        taken_at: time("taken_at")?,
        expires_at: time("expires_at")?,
    })
}
