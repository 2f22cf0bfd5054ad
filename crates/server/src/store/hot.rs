//! The proxy's read cache: agents by token hash, workspaces' pause states, credentials by name,
//! active devices and standing grants, plus the record keys of standing capabilities that have
//! been verified and opened once.
//!
//! Every proxied call needs the same five rows. Reading them from the database costs five
//! round trips to the driver's worker thread per call; reading them from here costs five hash
//! lookups. Correctness rests on one rule: **every store method that changes one of these tables
//! invalidates the whole cache when it returns** (after its commit), through
//! [`HotCache::invalidate_on_drop`]. A revocation, deletion, rotation or status change made
//! through this broker is therefore seen by the very next request.
//!
//! Loads race with invalidations safely: a reader takes the cache's generation before it reads
//! the database and inserts what it read only if the generation is unchanged. A write that
//! commits after the read bumps the generation, so the stale row is never cached; a write that
//! commits before the read is what the read sees.
//!
//! Writes made outside this process (a second broker replica on the same database, an operator's
//! SQL) do not reach that generation. On PostgreSQL the database keeps a shared one: triggers on
//! every mirrored table (and the lookup tables the loaders read) move `cache_generation` forward
//! inside the writing transaction (migrations/postgres/0002_cache_generation.sql). The proxy
//! reads it once per call, before it consults the cache ([`super::Store::sync_hot_cache`]), and
//! the cache is invalidated when it changed: a write committed through any replica is seen by
//! every replica's next call. On SQLite (one broker per file; a second process on the same file
//! is not a supported set-up) entries expire after [`ENTRY_TTL`], which bounds how long a write
//! by another process can go unseen; the TTL applies on PostgreSQL too, as a second bound for
//! writes that bypass the triggers (an operator disabling them).
//!
//! The record-key cache holds keys only for standing capabilities, whose reuse is by design:
//! a single-use capability is opened once and its key dropped. A cached key is keyed by the
//! SHA-256 of the capability's bytes, so only the exact capability that was verified finds it;
//! every call still re-checks the claims against the request and the clock, the grant, the
//! issuing device and the key version from the (cached) rows. The key is zeroized when its entry
//! goes: on any invalidation (a grant revoked, a device removed, a key rotated), once it is older
//! than [`ENTRY_TTL`] and the cache next looks it up or sweeps (at most once per TTL, on a load), or when
//! the cache is full and starts over. Holding it adds nothing
//! an attacker who can read the broker's memory does not already have: that memory holds the
//! broker key, which opens every capability agents present.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use latchkey_core::capability::Claims;
use latchkey_core::ids::{DeviceId, GrantId, WorkspaceId};
use latchkey_core::keys::RecordKey;
use latchkey_core::token::TokenHash;

use super::StoreError;
use super::agents::{AgentRecord, GrantRecord};
use super::credentials::CredentialRecord;
use super::devices::ActiveDevice;
use super::pauses::PauseState;

/// How long an entry may serve without being read again from the database.
pub(crate) const ENTRY_TTL: Duration = Duration::from_secs(2);

/// Most entries per map; a full map starts over (the working set of a broker is its active
/// agents, credentials and grants, far below this).
const MAX_ENTRIES: usize = 16_384;

/// A standing capability that passed every check once and whose record key was opened.
pub(crate) struct OpenedStanding {
    /// Its claims, re-checked against every request.
    pub claims: Claims,
    /// The record key it carries.
    pub record_key: RecordKey,
}

impl std::fmt::Debug for OpenedStanding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedStanding").field("claims", &self.claims).finish_non_exhaustive()
    }
}

/// The cache; one per [`super::Store`], shared by its clones.
#[derive(Debug, Default)]
pub(crate) struct HotCache {
    generation: AtomicU64,
    /// The database's shared generation as of the last invalidation it caused (PostgreSQL).
    seen: SeenGeneration,
    maps: RwLock<Maps>,
}

/// The last shared generation this process acted on; none before the first check.
#[derive(Debug)]
struct SeenGeneration(AtomicI64);

impl Default for SeenGeneration {
    fn default() -> Self {
        // No generation the database holds (it starts at 0 and only grows): the first check
        // always invalidates.
        Self(AtomicI64::new(i64::MIN))
    }
}

#[derive(Debug, Default)]
pub(crate) struct Maps {
    /// By the token hash's bytes. A hash lookup's timing says nothing useful about a token: the
    /// key is a SHA-256 output the caller cannot steer.
    agents: HashMap<[u8; 32], Entry<AgentRecord>>,
    /// Every workspace a call was made in, paused or not (a pause state always exists, so
    /// "not paused" is cached too).
    pauses: HashMap<WorkspaceId, Entry<PauseState>>,
    credentials: HashMap<(WorkspaceId, String), Entry<CredentialRecord>>,
    devices: HashMap<DeviceId, Entry<ActiveDevice>>,
    grants: HashMap<(WorkspaceId, GrantId), Entry<GrantRecord>>,
    standing: HashMap<[u8; 32], Entry<OpenedStanding>>,
    /// When expired entries were last dropped.
    swept: Option<Instant>,
}

impl Maps {
    fn sweep(&mut self) {
        fn fresh<K, T>(map: &mut HashMap<K, Entry<T>>) {
            map.retain(|_, entry| entry.loaded.elapsed() < ENTRY_TTL);
        }
        fresh(&mut self.agents);
        fresh(&mut self.pauses);
        fresh(&mut self.credentials);
        fresh(&mut self.devices);
        fresh(&mut self.grants);
        fresh(&mut self.standing);
        self.swept = Some(Instant::now());
    }
}

#[derive(Debug)]
pub(crate) struct Entry<T> {
    value: Arc<T>,
    loaded: Instant,
}

impl<T> Entry<T> {
    fn fresh(&self) -> Option<Arc<T>> {
        (self.loaded.elapsed() < ENTRY_TTL).then(|| Arc::clone(&self.value))
    }
}

/// Where a cached value goes: one of the maps.
pub(crate) trait Slot<K, T> {
    fn map(maps: &mut Maps) -> &mut HashMap<K, Entry<T>>;
    fn map_ref(maps: &Maps) -> &HashMap<K, Entry<T>>;
}

macro_rules! slot {
    ($field:ident, $key:ty, $value:ty) => {
        impl Slot<$key, $value> for HotCache {
            fn map(maps: &mut Maps) -> &mut HashMap<$key, Entry<$value>> {
                &mut maps.$field
            }
            fn map_ref(maps: &Maps) -> &HashMap<$key, Entry<$value>> {
                &maps.$field
            }
        }
    };
}
slot!(agents, [u8; 32], AgentRecord);
slot!(pauses, WorkspaceId, PauseState);
slot!(credentials, (WorkspaceId, String), CredentialRecord);
slot!(devices, DeviceId, ActiveDevice);
slot!(grants, (WorkspaceId, GrantId), GrantRecord);
slot!(standing, [u8; 32], OpenedStanding);

/// The generation a load started at; pass it back to [`HotCache::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generation(u64);

/// Invalidates its cache when dropped. Taken at the start of every store method that writes a
/// table the cache mirrors, so the invalidation follows the commit on every return path.
#[must_use = "the cache is invalidated when this guard is dropped"]
#[derive(Debug)]
pub(crate) struct InvalidateOnDrop<'a>(&'a HotCache);

impl Drop for InvalidateOnDrop<'_> {
    fn drop(&mut self) {
        self.0.invalidate();
    }
}

impl HotCache {
    /// The current generation, to take before reading the database.
    pub(crate) fn generation(&self) -> Generation {
        Generation(self.generation.load(Ordering::Acquire))
    }

    /// A fresh cached value for `key`.
    pub(crate) fn get<K: Eq + Hash, T>(&self, key: &K) -> Option<Arc<T>>
    where
        Self: Slot<K, T>,
    {
        {
            let maps = self.maps.read().unwrap_or_else(PoisonError::into_inner);
            match <Self as Slot<K, T>>::map_ref(&maps).get(key) {
                None => return None,
                Some(entry) => {
                    if let Some(fresh) = entry.fresh() {
                        return Some(fresh);
                    }
                }
            }
        }
        // Expired: drop it now rather than when the map is next cleared (a cached record key
        // is zeroized when its last holder lets go).
        let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
        let map = <Self as Slot<K, T>>::map(&mut maps);
        if map.get(key).is_some_and(|entry| entry.fresh().is_none()) {
            map.remove(key);
        }
        None
    }

    /// Caches `value` under `key` if nothing was invalidated since `loaded_at` was taken.
    pub(crate) fn insert<K: Eq + Hash, T>(&self, loaded_at: Generation, key: K, value: Arc<T>)
    where
        Self: Slot<K, T>,
    {
        let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
        // Checked under the write lock: `invalidate` bumps the generation before it takes the
        // lock to clear, so an insert that sees the old generation here is cleared after it.
        if self.generation() != loaded_at {
            return;
        }
        // Expired entries are swept out at most once per TTL, on an insert, so none outlives
        // its time by much more than the next load.
        if maps.swept.is_none_or(|at| at.elapsed() >= ENTRY_TTL) {
            maps.sweep();
        }
        let map = <Self as Slot<K, T>>::map(&mut maps);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, Entry { value, loaded: Instant::now() });
    }

    /// Forgets everything (zeroizing cached record keys) and makes loads in flight uncacheable.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
        *maps = Maps::default();
    }

    /// Takes note of the database's shared generation, read just now: if it is not the one this
    /// process last acted on, a write was committed elsewhere since, and the cache is dropped.
    ///
    /// The invalidation comes before the new value is recorded. A concurrent caller that finds
    /// the value already recorded therefore knows the invalidation it stands for has happened,
    /// so what it reads next was loaded after that write committed. Two callers racing here may
    /// both invalidate, or record an older value after a newer one; either only costs one more
    /// invalidation at a later call, never a missed one.
    pub(crate) fn observe_shared_generation(&self, shared: i64) {
        if self.seen.0.load(Ordering::Acquire) != shared {
            self.invalidate();
            self.seen.0.store(shared, Ordering::Release);
        }
    }

    /// A guard that invalidates when dropped; see [`InvalidateOnDrop`].
    pub(crate) fn invalidate_on_drop(&self) -> InvalidateOnDrop<'_> {
        InvalidateOnDrop(self)
    }

    /// Notes that `agent`'s token was used at `now` (seconds). Returns whether the database
    /// should be told: only the first use each second is written.
    pub(crate) fn mark_agent_used(&self, hash: &TokenHash, now: u64) -> bool {
        let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = maps.agents.get_mut(hash.as_bytes()) else { return true };
        if entry.value.last_used_at.is_some_and(|at| at >= now) {
            return false;
        }
        let mut updated = (*entry.value).clone();
        updated.last_used_at = Some(now);
        entry.value = Arc::new(updated);
        true
    }

    /// Notes that the credential `name` of `workspace` was used at `now` (seconds). Returns
    /// whether the database should be told: only the first use each second is written.
    pub(crate) fn mark_credential_used(
        &self,
        workspace: WorkspaceId,
        name: &str,
        now: u64,
    ) -> bool {
        let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = maps.credentials.get_mut(&(workspace, name.to_owned())) else {
            return true;
        };
        if entry.value.last_used_at.is_some_and(|at| at >= now) {
            return false;
        }
        let mut updated = (*entry.value).clone();
        updated.last_used_at = Some(now);
        entry.value = Arc::new(updated);
        true
    }
}

impl super::Store {
    /// Records, in the background, that `agent` (found by its token `hash`) made a call at
    /// `now` (seconds): kept to the second, so most calls find it current in the cache and write
    /// nothing. A failed write is logged, never the call's concern.
    pub(crate) fn note_agent_used(&self, agent: &AgentRecord, hash: &TokenHash, now: u64) {
        if agent.last_used_at.is_some_and(|at| at >= now) || !self.hot.mark_agent_used(hash, now) {
            return;
        }
        let (store, workspace, id) = (self.clone(), agent.workspace, agent.id);
        tokio::spawn(async move {
            if let Err(e) = store.touch_agent(workspace, id, now).await {
                tracing::warn!(error = %e, "could not record agent use");
            }
        });
    }

    /// Records, in the background, that the proxy forwarded a call with `credential` at `now`
    /// (seconds), as it records an agent's use: kept to the second, so most calls find it
    /// current in the cache and write nothing. A failed write is logged, never the call's
    /// concern.
    pub(crate) fn note_credential_used(&self, credential: &CredentialRecord, now: u64) {
        if credential.last_used_at.is_some_and(|at| at >= now)
            || !self.hot.mark_credential_used(credential.workspace, &credential.name, now)
        {
            return;
        }
        let (store, workspace, id) = (self.clone(), credential.workspace, credential.id);
        tokio::spawn(async move {
            if let Err(e) = store.touch_credential(workspace, id, now).await {
                tracing::warn!(error = %e, "could not record credential use");
            }
        });
    }

    /// [`super::Store::agent_by_token_hash`] through the cache.
    pub(crate) async fn cached_agent(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<Arc<AgentRecord>>, StoreError> {
        let key = *hash.as_bytes();
        self.through_cache(key, || self.agent_by_token_hash(hash)).await
    }

    /// [`super::Store::pause_state`] through the cache.
    pub(crate) async fn cached_pause_state(
        &self,
        workspace: WorkspaceId,
    ) -> Result<Arc<PauseState>, StoreError> {
        let loaded = self
            .through_cache(workspace, || async { Ok(Some(self.pause_state(workspace).await?)) });
        // The loader always answers `Some`, so `None` cannot come back; were it to, "paused by
        // nobody" would be wrong, so it is refused as a corrupt answer instead.
        loaded.await?.ok_or_else(|| StoreError::Corrupt("no pause state loaded".into()))
    }

    /// [`super::Store::credential_by_name`] through the cache.
    pub(crate) async fn cached_credential(
        &self,
        workspace: WorkspaceId,
        name: &str,
    ) -> Result<Option<Arc<CredentialRecord>>, StoreError> {
        let key = (workspace, name.to_owned());
        self.through_cache(key, || self.credential_by_name(workspace, name)).await
    }

    /// [`super::Store::active_device`] through the cache.
    pub(crate) async fn cached_active_device(
        &self,
        id: DeviceId,
    ) -> Result<Option<Arc<ActiveDevice>>, StoreError> {
        self.through_cache(id, || self.active_device(id)).await
    }

    /// [`super::Store::grant`] through the cache.
    pub(crate) async fn cached_grant(
        &self,
        workspace: WorkspaceId,
        grant: GrantId,
    ) -> Result<Option<Arc<GrantRecord>>, StoreError> {
        self.through_cache((workspace, grant), || self.grant(workspace, grant)).await
    }

    /// Brings the cache up to date with writes committed by other brokers on the same
    /// database, before a call consults it. On PostgreSQL, reads the shared generation (one
    /// round trip) and invalidates the cache if it moved since this process last looked; on
    /// SQLite does nothing (one broker per database file; entries expire after [`ENTRY_TTL`]).
    ///
    /// Why one check per call, before the cache is consulted, is enough (race-free): a write `W`
    /// commits together with its bump of the shared generation. A call that starts after `W`
    /// committed reads a generation that includes the bump, so it either invalidates now or
    /// finds the value already recorded, which happens only after the invalidation that value
    /// caused (see [`HotCache::observe_shared_generation`]); either way every entry it can hit
    /// was loaded after `W` committed, and every load that was in flight before that
    /// invalidation took the local generation it bumped, so it is never cached. A load that
    /// started before `W` committed and read the old row is therefore either dropped by that
    /// invalidation or uncacheable; only the call that was itself concurrent with `W` may act on
    /// the old row. The bump and the write commit atomically, so no call can see the new
    /// generation before the write, invalidate, and then reload and cache the old row.
    pub(crate) async fn sync_hot_cache(&self) -> Result<(), StoreError> {
        if self.backend() != super::Backend::Postgres {
            return Ok(());
        }
        let shared: i64 = sqlx::query_scalar("SELECT generation FROM cache_generation")
            .fetch_one(&self.pool)
            .await?;
        self.hot.observe_shared_generation(shared);
        Ok(())
    }

    /// A fresh cached row, or the database's answer (cached if it exists and nothing was
    /// invalidated while it was read). Absent rows are not cached: they are rare on the call
    /// path (unknown tokens, mistyped names) and must not crowd out real entries.
    async fn through_cache<K, T, F>(
        &self,
        key: K,
        load: impl FnOnce() -> F,
    ) -> Result<Option<Arc<T>>, StoreError>
    where
        K: Eq + Hash,
        HotCache: Slot<K, T>,
        F: Future<Output = Result<Option<T>, StoreError>>,
    {
        if let Some(hit) = self.hot.get(&key) {
            return Ok(Some(hit));
        }
        let generation = self.hot.generation();
        let Some(row) = load().await? else { return Ok(None) };
        let row = Arc::new(row);
        self.hot.insert(generation, key, Arc::clone(&row));
        Ok(Some(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: DeviceId) -> ActiveDevice {
        ActiveDevice {
            workspace: WorkspaceId::random(),
            id,
            member: latchkey_core::ids::MemberId::random(),
            role: crate::store::devices::Role::Member,
            signing_key: [1; 32],
            exchange_key: [2; 32],
        }
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_cached() {
        let cache = HotCache::default();
        let id = DeviceId::random();
        let before = cache.generation();
        cache.invalidate(); // a write committed while the load read the database
        cache.insert(before, id, Arc::new(device(id)));
        assert!(
            cache.get::<DeviceId, ActiveDevice>(&id).is_none(),
            "a row read before a write committed must not be served after it"
        );

        let now = cache.generation();
        cache.insert(now, id, Arc::new(device(id)));
        assert!(
            cache.get::<DeviceId, ActiveDevice>(&id).is_some(),
            "an undisturbed load is cached"
        );
    }

    #[test]
    fn the_guard_invalidates_when_the_writing_method_returns() {
        let cache = HotCache::default();
        let id = DeviceId::random();
        cache.insert(cache.generation(), id, Arc::new(device(id)));
        {
            let _guard = cache.invalidate_on_drop();
            assert!(
                cache.get::<DeviceId, ActiveDevice>(&id).is_some(),
                "still cached while the write runs"
            );
        }
        assert!(cache.get::<DeviceId, ActiveDevice>(&id).is_none(), "gone once it returned");
    }

    #[test]
    fn a_moved_shared_generation_invalidates_once_and_makes_loads_in_flight_uncacheable() {
        let cache = HotCache::default();
        let id = DeviceId::random();
        cache.observe_shared_generation(7);
        cache.insert(cache.generation(), id, Arc::new(device(id)));
        cache.observe_shared_generation(7);
        assert!(
            cache.get::<DeviceId, ActiveDevice>(&id).is_some(),
            "an unchanged shared generation keeps the cache"
        );

        let in_flight = cache.generation(); // a load that started before another broker's write
        cache.observe_shared_generation(8);
        assert!(
            cache.get::<DeviceId, ActiveDevice>(&id).is_none(),
            "a moved shared generation drops what was cached before"
        );
        cache.insert(in_flight, id, Arc::new(device(id)));
        assert!(
            cache.get::<DeviceId, ActiveDevice>(&id).is_none(),
            "a load that started before the invalidation is not cached"
        );
    }

    #[test]
    fn the_first_shared_generation_seen_invalidates_whatever_it_is() {
        let cache = HotCache::default();
        let id = DeviceId::random();
        cache.insert(cache.generation(), id, Arc::new(device(id)));
        cache.observe_shared_generation(0);
        assert!(
            cache.get::<DeviceId, ActiveDevice>(&id).is_none(),
            "nothing cached before the first check may outlive it"
        );
    }

    #[test]
    fn a_credential_use_is_written_once_per_second() {
        let cache = HotCache::default();
        let credential = CredentialRecord::example();
        let (workspace, name) = (credential.workspace, credential.name.clone());
        assert!(cache.mark_credential_used(workspace, &name, 10), "not cached: always written");
        cache.insert(cache.generation(), (workspace, name.clone()), Arc::new(credential));
        assert!(cache.mark_credential_used(workspace, &name, 10), "first use this second");
        assert!(!cache.mark_credential_used(workspace, &name, 10), "second use this second");
        assert!(!cache.mark_credential_used(workspace, &name, 9), "an older use");
        assert!(cache.mark_credential_used(workspace, &name, 11), "the next second");
        let cached = cache.get::<(WorkspaceId, String), CredentialRecord>(&(workspace, name));
        assert_eq!(cached.and_then(|c| c.last_used_at), Some(11), "the cached row follows");
    }

    #[test]
    fn a_full_map_starts_over_instead_of_growing() {
        let cache = HotCache::default();
        for _ in 0..=MAX_ENTRIES {
            let id = DeviceId::random();
            cache.insert(cache.generation(), id, Arc::new(device(id)));
        }
        let maps = cache.maps.read().unwrap();
        assert!(maps.devices.len() <= MAX_ENTRIES, "bounded at {MAX_ENTRIES}");
    }
}
