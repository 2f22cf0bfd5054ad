//! The append-only, hash-chained audit log.
//!
//! Every proxied call (allowed or not) and every device or admin action appends one
//! [`AuditEvent`]. Each workspace has its own chain: records are numbered 1, 2, 3, ... and each
//! record's hash commits to the previous record's hash, so an edited, reordered or removed record
//! is found by [`verify_chain`] (the format is in `docs/protocol.md`, "Audit log").
//!
//! Appends go through one background writer per broker ([`AuditLog`]). It commits the appends
//! queued while its previous transaction ran as one transaction (group commit), assigns sequence numbers inside that
//! transaction (reading each workspace's chain head there, so several writers on one database
//! cannot fork a chain), and answers every waiter only after the commit. A failed transaction
//! fails every append in it: callers that must not act without an audit record deny.
//!
//! Nothing in an [`AuditEvent`] can hold a secret: every field is an identifier, a name, a code,
//! a number or a client address. The path is recorded without its query string or fragment,
//! where some APIs carry keys.

mod chain;
mod journal;
mod record;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use latchkey_core::ids::{AgentId, DeviceId, MemberId, WorkspaceId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use self::chain::{
    BreakReason, BrokenLink, ChainRecord, ChainSummary, ChainVerifier, JsonlError, verify_chain,
    verify_jsonl,
};
pub(crate) use self::journal::IngestProgress;
#[doc(hidden)]
pub use self::journal::JournalFaults;
pub(crate) use self::record::PreparedRecord;
pub use self::record::{
    CHAIN_LABEL, GENESIS_HASH, canonical_json, canonical_record, chain_hash, from_hex, to_hex,
};
use crate::error::{ApiError, ErrorCode};
use crate::store::audit::ChainHead;
use crate::store::{Backend, Store, StoreError};

/// One thing that happened, as the audit log records it.
///
/// INVARIANT: no field can carry a credential, key, capability or agent token. Fields are ids,
/// names, codes, numbers and a client address; `path` loses its query string and fragment when
/// recorded. Add fields only with the same property, and document them in `docs/protocol.md`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// The workspace whose chain the record joins.
    pub workspace: WorkspaceId,
    /// When it happened, in unix milliseconds.
    pub at_ms: u64,
    /// What happened.
    pub kind: AuditKind,
    /// The broker's decision, for proxy calls.
    pub decision: Option<Decision>,
    /// The error code of a denial (an [`ErrorCode`] in snake case, e.g. `policy_denied`).
    pub reason_code: Option<String>,
    /// The agent that made the call or was acted on.
    pub agent: Option<AgentId>,
    /// The device that issued the capability or made the change.
    pub device: Option<DeviceId>,
    /// That device's member.
    pub member: Option<MemberId>,
    /// The credential's name (never its value).
    pub credential_name: Option<String>,
    /// HTTP method of a proxied call.
    pub method: Option<String>,
    /// Upstream host of a proxied call; recorded (and serialized) without user info.
    #[serde(serialize_with = "record::serialize_host")]
    pub host: Option<String>,
    /// Upstream path of a proxied call; recorded (and serialized) without query string or
    /// fragment.
    #[serde(serialize_with = "record::serialize_path")]
    pub path: Option<String>,
    /// Ids of the policies that decided.
    pub policy_ids: Vec<String>,
    /// The approval that allowed the call, if one did.
    pub approval_id: Option<String>,
    /// For a `proxy_outcome`: the seq of its `proxy_attempt`.
    pub attempt_seq: Option<u64>,
    /// Status the upstream answered with.
    pub upstream_status: Option<u16>,
    /// Time from receiving the call to the upstream's answer.
    pub latency_ms: Option<u64>,
    /// The calling client's IP address.
    pub client_ip: Option<String>,
    /// For an inject: how long the command may keep the credential, in seconds.
    pub lifetime_secs: Option<u64>,
    /// For an inject: the command's program name (never its arguments).
    pub command: Option<String>,
    /// What a device's change was about when it is not the agent or credential above: the id of
    /// the member, device or grant it added, changed or removed, an invite's role, a credential's
    /// new status (each kind says which).
    pub subject: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` in `workspace` at `at_ms` with every optional field empty.
    pub fn new(workspace: WorkspaceId, at_ms: u64, kind: AuditKind) -> Self {
        Self {
            workspace,
            at_ms,
            kind,
            decision: None,
            reason_code: None,
            agent: None,
            device: None,
            member: None,
            credential_name: None,
            method: None,
            host: None,
            path: None,
            policy_ids: Vec::new(),
            approval_id: None,
            attempt_seq: None,
            upstream_status: None,
            latency_ms: None,
            client_ip: None,
            lifetime_secs: None,
            command: None,
            subject: None,
        }
    }
}

/// What an audit record is about. The snake-case codes are stable: extend, never reassign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditKind {
    /// A proxied call was decided (written before the upstream call when allowed).
    ProxyAttempt,
    /// An allowed proxied call finished (upstream status and latency).
    ProxyOutcome,
    /// A workspace was created.
    WorkspaceCreated,
    /// A member joined.
    MemberJoined,
    /// A device was removed.
    DeviceRemoved,
    /// A credential was stored (`subject`: `account <name>` when the device named the account it
    /// acts as).
    CredentialCreated,
    /// A credential was deleted.
    CredentialDeleted,
    /// Workspace or member keys were rotated.
    KeysRotated,
    /// An agent was created.
    AgentCreated,
    /// An agent was revoked.
    AgentRevoked,
    /// A standing grant was revoked.
    GrantRevoked,
    /// A policy was created, changed or removed.
    PolicyChanged,
    /// An agent's call was held for a member's approval.
    ApprovalRequested,
    /// A device approved (decision `allowed`) or denied (`denied`) a held call.
    ApprovalAnswered,
    /// A held call ended without an answer: nobody answered in time, the agent went away, the
    /// broker stopped, or the agents were paused (`reason_code` says which).
    ApprovalExpired,
    /// A member paused every agent call in the workspace.
    AgentsPaused,
    /// A member lifted the pause.
    AgentsResumed,
    /// A credential was released into a command's environment on a member's device (`latchkey
    /// run --inject`): committed before the device is told it may open it.
    InjectReleased,
    /// A request to release a credential into a command's environment was refused
    /// (`reason_code` says why).
    InjectDenied,
    /// Another device of an existing member joined (`subject`: the new device).
    DeviceJoined,
    /// A device wrapped a key to another device: the admission that shares the workspace (and
    /// a member's own) key (`subject`: the recipient device).
    KeysShared,
    /// An invite was made (`subject`: what it admits, the role it invites as or `device of
    /// {member}`, then `, invite {id}`).
    InviteCreated,
    /// A member was made an admin (`subject`: the member).
    MemberPromoted,
    /// An admin was made a plain member (`subject`: the member).
    MemberDemoted,
    /// A member and all their devices were removed (`subject`: the member).
    MemberRemoved,
    /// A credential's metadata or envelope was replaced (its upstream, hosts, scopes, ...;
    /// `subject` as for [`AuditKind::CredentialCreated`]).
    CredentialUpdated,
    /// A credential was disabled, enabled again or marked as needing a reconnect (`subject`: the
    /// new status).
    CredentialStatusChanged,
    /// An agent was given a new token; the old one no longer works.
    AgentTokenRegenerated,
    /// A standing grant was registered (`subject`: the grant).
    GrantCreated,
    /// A pending invite was revoked: its code is refused from now on (`subject` as for
    /// [`AuditKind::InviteCreated`]).
    InviteRevoked,
    /// An enrolled device's request was refused because its member may not do what it asked
    /// (`reason_code` `forbidden`; `method` and `path` the API route, e.g. `PUT`
    /// `/v1/policies/{id}`).
    RequestRefused,
}

impl AuditKind {
    /// Every kind, in the order the codes were assigned.
    pub const ALL: [AuditKind; 31] = [
        AuditKind::ProxyAttempt,
        AuditKind::ProxyOutcome,
        AuditKind::WorkspaceCreated,
        AuditKind::MemberJoined,
        AuditKind::DeviceRemoved,
        AuditKind::CredentialCreated,
        AuditKind::CredentialDeleted,
        AuditKind::KeysRotated,
        AuditKind::AgentCreated,
        AuditKind::AgentRevoked,
        AuditKind::GrantRevoked,
        AuditKind::PolicyChanged,
        AuditKind::ApprovalRequested,
        AuditKind::ApprovalAnswered,
        AuditKind::ApprovalExpired,
        AuditKind::AgentsPaused,
        AuditKind::AgentsResumed,
        AuditKind::InjectReleased,
        AuditKind::InjectDenied,
        AuditKind::DeviceJoined,
        AuditKind::KeysShared,
        AuditKind::InviteCreated,
        AuditKind::MemberPromoted,
        AuditKind::MemberDemoted,
        AuditKind::MemberRemoved,
        AuditKind::CredentialUpdated,
        AuditKind::CredentialStatusChanged,
        AuditKind::AgentTokenRegenerated,
        AuditKind::GrantCreated,
        AuditKind::InviteRevoked,
        AuditKind::RequestRefused,
    ];

    /// The stable code (the serde spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::ProxyAttempt => "proxy_attempt",
            AuditKind::ProxyOutcome => "proxy_outcome",
            AuditKind::WorkspaceCreated => "workspace_created",
            AuditKind::MemberJoined => "member_joined",
            AuditKind::DeviceRemoved => "device_removed",
            AuditKind::CredentialCreated => "credential_created",
            AuditKind::CredentialDeleted => "credential_deleted",
            AuditKind::KeysRotated => "keys_rotated",
            AuditKind::AgentCreated => "agent_created",
            AuditKind::AgentRevoked => "agent_revoked",
            AuditKind::GrantRevoked => "grant_revoked",
            AuditKind::PolicyChanged => "policy_changed",
            AuditKind::ApprovalRequested => "approval_requested",
            AuditKind::ApprovalAnswered => "approval_answered",
            AuditKind::ApprovalExpired => "approval_expired",
            AuditKind::AgentsPaused => "agents_paused",
            AuditKind::AgentsResumed => "agents_resumed",
            AuditKind::InjectReleased => "inject_released",
            AuditKind::InjectDenied => "inject_denied",
            AuditKind::DeviceJoined => "device_joined",
            AuditKind::KeysShared => "keys_shared",
            AuditKind::InviteCreated => "invite_created",
            AuditKind::MemberPromoted => "member_promoted",
            AuditKind::MemberDemoted => "member_demoted",
            AuditKind::MemberRemoved => "member_removed",
            AuditKind::CredentialUpdated => "credential_updated",
            AuditKind::CredentialStatusChanged => "credential_status_changed",
            AuditKind::AgentTokenRegenerated => "agent_token_regenerated",
            AuditKind::GrantCreated => "grant_created",
            AuditKind::InviteRevoked => "invite_revoked",
            AuditKind::RequestRefused => "request_refused",
        }
    }

    /// Parses a code.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == code)
    }
}

/// The broker's decision on a proxied call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The call was allowed.
    Allowed,
    /// The call was refused.
    Denied,
}

impl Decision {
    /// The stable code (the serde spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
        }
    }

    /// Parses a code.
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "allowed" => Some(Decision::Allowed),
            "denied" => Some(Decision::Denied),
            _ => None,
        }
    }
}

/// Proof that a record was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditReceipt {
    /// The record's position in its workspace's chain.
    pub seq: u64,
}

/// An append did not commit. The record is not in the log; callers that need one must not act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The transaction carrying the record failed (details are in the server log).
    #[error("the audit log could not commit the record")]
    CommitFailed,
    /// The writer has stopped (the broker is shutting down).
    #[error("the audit log is not running")]
    Stopped,
}

impl From<AuditError> for ApiError {
    fn from(error: AuditError) -> Self {
        tracing::error!(%error, "audit append failed");
        ApiError::new(
            ErrorCode::Unavailable,
            "the audit log could not record this request, so it was not carried out; retry shortly",
        )
    }
}

/// How the writer batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Longest time the writer lingers, after taking every queued append, for more to arrive.
    /// Zero (the default) is pure group commit: appends that arrive while a transaction commits
    /// form the next batch, and an idle broker never waits.
    pub max_wait: Duration,
    /// Most records in one transaction.
    pub max_events: usize,
    /// Appends that may queue before `append` waits for room.
    pub queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { max_wait: Duration::ZERO, max_events: 256, queue: 4096 }
    }
}

/// Counters of the writer, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Transactions that failed (each failed all its appends).
    pub failed_transactions: u64,
    /// Records committed.
    pub records: u64,
    /// Time spent in transactions (committed or failed), from the first statement to the
    /// commit's answer.
    pub commit_time: Duration,
}

/// Handle to the background writer; cheap to clone. See the module docs.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Inner,
    counters: Arc<Counters>,
}

#[derive(Debug, Clone)]
enum Inner {
    /// Records are committed by the writer's database transactions.
    Database { sender: mpsc::Sender<Message>, writer: Arc<Mutex<Option<JoinHandle<()>>>> },
    /// Records are committed to a journal and indexed by an ingester (see [`journal`]).
    Journal {
        journal: Arc<journal::Journal>,
        store: Store,
        ingester: Arc<Mutex<Option<JoinHandle<()>>>>,
    },
}

impl AuditLog {
    /// Spawns the writer over `store` with the default batching. Must be called inside a tokio
    /// runtime.
    pub fn start(store: Store) -> Self {
        Self::start_with(store, BatchConfig::default())
    }

    /// Spawns the writer with `config`.
    pub fn start_with(store: Store, config: BatchConfig) -> Self {
        let config = BatchConfig {
            max_events: config.max_events.max(1),
            queue: config.queue.max(1),
            ..config
        };
        let (sender, receiver) = mpsc::channel(config.queue);
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            store,
            receiver,
            config,
            heads: HashMap::new(),
            shared: HashMap::new(),
            counters: Arc::clone(&counters),
            deferred: Vec::new(),
            deferred_deadline: None,
            connection: None,
        };
        let task = tokio::spawn(writer.run());
        Self {
            inner: Inner::Database { sender, writer: Arc::new(Mutex::new(Some(task))) },
            counters,
        }
    }

    /// Opens the audit journal in `dir` over the SQLite `store` (indexing what a previous broker
    /// left in it first) and spawns its ingester. Only one broker may use a journal at a time: a
    /// second is refused with an error saying so.
    pub async fn start_journaled(store: Store, dir: &std::path::Path) -> Result<Self, StoreError> {
        Self::start_journaled_with(store, dir, None).await
    }

    /// [`AuditLog::start_journaled`] with injected write failures (tests only).
    #[doc(hidden)]
    pub async fn start_journaled_with(
        store: Store,
        dir: &std::path::Path,
        faults: Option<JournalFaults>,
    ) -> Result<Self, StoreError> {
        let journal = Arc::new(journal::Journal::open(&store, dir, faults).await?);
        *store.audit_progress.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Arc::clone(&journal.progress));
        let task = tokio::spawn(ingest(Arc::clone(&journal), store.clone()));
        Ok(Self {
            inner: Inner::Journal { journal, store, ingester: Arc::new(Mutex::new(Some(task))) },
            counters: Arc::default(),
        })
    }

    /// Appends one record and resolves once it is committed. Concurrent appends share one
    /// transaction; if it fails, every append in it fails.
    pub async fn append(&self, event: AuditEvent) -> Result<AuditReceipt, AuditError> {
        let receipts = self.append_all(vec![event]).await?;
        receipts.first().copied().ok_or(AuditError::CommitFailed)
    }

    /// Appends `events` in one transaction (with a journal, one write), in order: all commit or
    /// none does. Resolves with a receipt per record once they are committed. For decisions that
    /// stand or fall together (several credentials released for one command).
    pub async fn append_all(
        &self,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditReceipt>, AuditError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        match &self.inner {
            Inner::Database { sender, .. } => {
                let (reply, answer) = oneshot::channel();
                sender
                    .send(Message::Append(events, reply))
                    .await
                    .map_err(|_| AuditError::Stopped)?;
                // A dropped reply means the writer stopped before it got to this append.
                answer.await.unwrap_or(Err(AuditError::Stopped))
            }
            Inner::Journal { journal, store, .. } => {
                let started = std::time::Instant::now();
                let appended = journal_append(journal, store, &events).await.map(|seqs| {
                    seqs.into_iter().map(|seq| AuditReceipt { seq }).collect::<Vec<_>>()
                });
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.counters.commit_micros.fetch_add(micros, Ordering::Relaxed);
                let counter = match &appended {
                    Ok(receipts) => {
                        self.counters.records.fetch_add(receipts.len() as u64, Ordering::Relaxed);
                        &self.counters.transactions
                    }
                    Err(_) => &self.counters.failed_transactions,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                appended
            }
        }
    }

    /// Queues one record without waiting for its commit: it is committed with the next awaited
    /// append, or at most [`DEFERRED_DELAY`] later, or at shutdown. For records written after
    /// the fact (a call's outcome), which no decision waits on; a failed commit is logged.
    pub async fn append_deferred(&self, event: AuditEvent) -> Result<(), AuditError> {
        match &self.inner {
            Inner::Database { sender, .. } => sender
                .send(Message::Deferred(Box::new(event)))
                .await
                .map_err(|_| AuditError::Stopped),
            Inner::Journal { journal, .. } => journal.defer(&event),
        }
    }

    /// Writes every append queued so far, then stops the writer. Appends made afterwards (through
    /// any clone) fail with [`AuditError::Stopped`].
    pub async fn shutdown(self) {
        let task = match &self.inner {
            Inner::Database { sender, writer } => {
                // Queued behind every earlier append, so those are written first.
                let _ = sender.send(Message::Stop).await;
                writer.lock().unwrap_or_else(PoisonError::into_inner).take()
            }
            Inner::Journal { journal, ingester, .. } => {
                journal.close();
                journal.progress.wake.notify_one();
                ingester.lock().unwrap_or_else(PoisonError::into_inner).take()
            }
        };
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::error!(%error, "the audit writer ended abnormally");
        }
        if let Inner::Journal { store, journal, .. } = &self.inner {
            let mut progress = store.audit_progress.lock().unwrap_or_else(PoisonError::into_inner);
            if progress.as_ref().is_some_and(|p| Arc::ptr_eq(p, &journal.progress)) {
                *progress = None;
            }
        }
    }

    /// The writer's counters so far. With a journal, a "transaction" is one journal write.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            failed_transactions: self.counters.failed_transactions.load(Ordering::Relaxed),
            records: self.counters.records.load(Ordering::Relaxed),
            commit_time: Duration::from_micros(self.counters.commit_micros.load(Ordering::Relaxed)),
        }
    }
}

/// How long the ingester lets records gather after being woken, so it indexes them in a few
/// large transactions rather than one per call.
const INGEST_LINGER: Duration = Duration::from_millis(10);

/// How long the ingester waits before retrying a transaction the database refused.
const INGEST_RETRY: Duration = Duration::from_millis(500);

/// Appends `events` (after any deferred records) to the journal, reading a workspace's chain
/// head from the database the first time the journal meets the workspace. The seqs of `events`.
async fn journal_append(
    journal: &journal::Journal,
    store: &Store,
    events: &[AuditEvent],
) -> Result<Vec<u64>, AuditError> {
    loop {
        match journal.append(events)? {
            journal::Appended::Committed(seqs) => return Ok(seqs),
            journal::Appended::NeedHead(workspace) => {
                let head = store.audit_head(workspace).await.map_err(|error| {
                    tracing::error!(%error, "could not read an audit chain head");
                    AuditError::CommitFailed
                })?;
                journal.learn_head(head);
            }
        }
    }
}

/// Copies journaled records into the database until the journal is closed and every record is
/// in. Records the database keeps refusing stay in the journal, which the next broker indexes
/// (or refuses to start over, naming the line) when it opens it.
async fn ingest(journal: Arc<journal::Journal>, store: Store) {
    let _checkpoints = AbortOnDrop(tokio::spawn(checkpoint_periodically(store.clone())));
    let mut connection: Option<sqlx::AnyConnection> = None;
    let mut backlog: Vec<crate::store::audit::ChainRow> = Vec::new();
    let mut through = 0;
    loop {
        let closing = journal.is_closed();
        if !closing {
            journal.progress.wake.notified().await;
            tokio::time::sleep(INGEST_LINGER).await;
            // Deferred records no append has carried in the meantime (a closed journal wrote
            // its own). A failure is logged by the journal; they wait for the next write.
            if let Err(AuditError::Stopped) = journal_append(&journal, &store, &[]).await {
                tracing::debug!("the journal closed while writing deferred records");
            }
        }
        match journal.take() {
            Ok((rows, count)) => {
                backlog.extend(rows);
                through = count;
            }
            Err(error) => tracing::error!(%error, "could not seal an audit journal segment"),
        }
        if !backlog.is_empty() {
            match index(&store, &mut connection, &backlog).await {
                Ok(()) => backlog.clear(),
                Err(error) => {
                    tracing::error!(%error, records = backlog.len(), "the database refused journaled audit records; retrying");
                    connection = None;
                    if closing {
                        tracing::error!(
                            "stopping with audit records only in the journal; the next start indexes them"
                        );
                        return;
                    }
                    tokio::time::sleep(INGEST_RETRY).await;
                    journal.progress.wake.notify_one();
                    continue;
                }
            }
        }
        journal.ingested(through);
        if closing {
            journal.finish();
            return;
        }
    }
}

/// Inserts `rows` on the ingester's own connection (opened as the writer's is).
async fn index(
    store: &Store,
    connection: &mut Option<sqlx::AnyConnection>,
    rows: &[crate::store::audit::ChainRow],
) -> Result<(), StoreError> {
    let connection = match connection {
        Some(connection) => connection,
        None => {
            let mut opened = store.pool.acquire().await?.detach();
            sqlx::query("PRAGMA wal_autocheckpoint = 0").execute(&mut opened).await?;
            connection.insert(opened)
        }
    };
    store.insert_chained(connection, rows).await
}

type Reply = oneshot::Sender<Result<Vec<AuditReceipt>, AuditError>>;

#[derive(Debug)]
enum Message {
    /// Records committed together, in one transaction, and their waiter.
    Append(Vec<AuditEvent>, Reply),
    Deferred(Box<AuditEvent>),
    Stop,
}

/// How many records the appends of `batch` hold.
fn records(batch: &[(Vec<AuditEvent>, Reply)]) -> usize {
    batch.iter().map(|(events, _)| events.len()).sum()
}

/// Longest a deferred record waits for an awaited append to share its commit.
pub const DEFERRED_DELAY: Duration = Duration::from_millis(10);

#[derive(Debug, Default)]
struct Counters {
    transactions: AtomicU64,
    failed_transactions: AtomicU64,
    records: AtomicU64,
    commit_micros: AtomicU64,
}

#[derive(Debug)]
struct Writer {
    store: Store,
    receiver: mpsc::Receiver<Message>,
    config: BatchConfig,
    /// The head this writer last committed per workspace. The database stays the authority (the
    /// head is re-read inside every transaction); this copy notices a head that went backwards.
    heads: HashMap<WorkspaceId, ChainHead>,
    /// Workspaces another writer (a replica on the same database) appended to lately, and until
    /// when: their batches go the careful way at once, rather than first trying a head that is
    /// likely stale.
    shared: HashMap<WorkspaceId, tokio::time::Instant>,
    counters: Arc<Counters>,
    /// Records queued with [`AuditLog::append_deferred`], waiting for a commit to join.
    deferred: Vec<AuditEvent>,
    /// When the oldest deferred record must be committed at the latest.
    deferred_deadline: Option<tokio::time::Instant>,
    /// The writer's own connection, detached from the pool, so its page cache stays warm and no
    /// append waits for the pool; reopened after a failure.
    connection: Option<sqlx::AnyConnection>,
}

/// How long a workspace another writer appended to takes the careful way (see [`Writer::shared`]).
const SHARED_FOR: Duration = Duration::from_secs(1);

/// How often the WAL is checkpointed on SQLite (see [`Writer::run`]).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Writer {
    async fn run(mut self) {
        // On SQLite the writer's connection never checkpoints the WAL itself: a checkpoint
        // copies pages into the database file and syncs it, milliseconds that every call waiting
        // for its record would wait too. A passive checkpoint on a pooled connection does it
        // beside the writer instead (it never blocks writers), for as long as the writer runs.
        let _checkpoints = (self.store.backend() == Backend::Sqlite)
            .then(|| AbortOnDrop(tokio::spawn(checkpoint_periodically(self.store.clone()))));
        loop {
            let next = match self.deferred_deadline {
                None => self.receiver.recv().await,
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                        Ok(message) => message,
                        Err(_elapsed) => {
                            self.commit(Vec::new()).await;
                            continue;
                        }
                    }
                }
            };
            let first = match next {
                Some(Message::Append(events, reply)) => (events, reply),
                Some(Message::Deferred(event)) => {
                    self.defer(*event);
                    if self.deferred.len() >= self.config.max_events {
                        self.commit(Vec::new()).await;
                    }
                    continue;
                }
                Some(Message::Stop) | None => {
                    self.commit(Vec::new()).await;
                    return;
                }
            };
            let mut batch = vec![first];
            let mut stop = false;
            // Group commit: everything queued while the previous transaction ran joins this one,
            // with no waiting, so an idle broker commits at once and a busy one batches.
            while records(&batch) + self.deferred.len() < self.config.max_events {
                match self.receiver.try_recv() {
                    Ok(Message::Append(events, reply)) => batch.push((events, reply)),
                    Ok(Message::Deferred(event)) => self.defer(*event),
                    Ok(Message::Stop) | Err(mpsc::error::TryRecvError::Disconnected) => {
                        stop = true;
                        break;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
            let deadline = tokio::time::Instant::now() + self.config.max_wait;
            while !stop
                && !self.config.max_wait.is_zero()
                && records(&batch) + self.deferred.len() < self.config.max_events
            {
                match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                    Ok(Some(Message::Append(events, reply))) => batch.push((events, reply)),
                    Ok(Some(Message::Deferred(event))) => self.defer(*event),
                    Ok(Some(Message::Stop) | None) => {
                        stop = true;
                        break;
                    }
                    Err(_elapsed) => break,
                }
            }
            self.commit(batch).await;
            if stop {
                // Appends queued after the stop are dropped unanswered: their callers see
                // `Stopped`.
                return;
            }
        }
    }

    fn defer(&mut self, event: AuditEvent) {
        if self.deferred.is_empty() {
            self.deferred_deadline = Some(tokio::time::Instant::now() + DEFERRED_DELAY);
        }
        self.deferred.push(event);
    }

    /// Commits the deferred records followed by `batch` in one transaction and answers the
    /// waiters of `batch`.
    async fn commit(&mut self, batch: Vec<(Vec<AuditEvent>, Reply)>) {
        let deferred = std::mem::take(&mut self.deferred);
        self.deferred_deadline = None;
        if deferred.is_empty() && batch.is_empty() {
            return;
        }
        let deferred_count = deferred.len();
        let mut events = deferred;
        let mut replies = Vec::with_capacity(batch.len());
        for (awaited, reply) in batch {
            replies.push((awaited.len(), reply));
            events.extend(awaited);
        }
        let started = tokio::time::Instant::now();
        let appended = self.append(&events).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counters.commit_micros.fetch_add(micros, Ordering::Relaxed);
        match appended {
            Ok(appended) => {
                self.counters.transactions.fetch_add(1, Ordering::Relaxed);
                self.counters.records.fetch_add(events.len() as u64, Ordering::Relaxed);
                let now = tokio::time::Instant::now();
                for before in &appended.heads_before {
                    if self.check_head(before) {
                        self.shared.insert(before.workspace, now + SHARED_FOR);
                    }
                }
                for head in appended.heads_after {
                    self.heads.insert(head.workspace, head);
                }
                let mut seqs = appended.seqs.into_iter().skip(deferred_count);
                for (count, reply) in replies {
                    let receipts = seqs.by_ref().take(count).map(|seq| AuditReceipt { seq });
                    // A caller that stopped waiting no longer needs the receipts.
                    let _ = reply.send(Ok(receipts.collect()));
                }
            }
            Err(error) => {
                self.counters.failed_transactions.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, records = events.len(), deferred = deferred_count, "audit batch failed; its appends are refused");
                for (_, reply) in replies {
                    let _ = reply.send(Err(AuditError::CommitFailed));
                }
            }
        }
    }

    /// Appends on the writer's own connection, opening it first if needed; a failure drops the
    /// connection so the next batch starts on a fresh one.
    async fn append(
        &mut self,
        events: &[AuditEvent],
    ) -> Result<crate::store::audit::AppendedBatch, crate::store::StoreError> {
        // A closed store takes no more records, even on a connection the writer still holds.
        if self.store.pool.is_closed() {
            self.connection = None;
            return Err(sqlx::Error::PoolClosed.into());
        }
        let connection = match self.connection.as_mut() {
            Some(connection) => connection,
            None => {
                let mut connection = self.store.pool.acquire().await?.detach();
                if self.store.backend() == Backend::Sqlite {
                    sqlx::query("PRAGMA wal_autocheckpoint = 0").execute(&mut connection).await?;
                }
                self.connection.insert(connection)
            }
        };
        let now = tokio::time::Instant::now();
        self.shared.retain(|_, until| *until > now);
        let known = if self.shared.is_empty() {
            std::borrow::Cow::Borrowed(&self.heads)
        } else {
            std::borrow::Cow::Owned(
                self.heads
                    .iter()
                    .filter(|(workspace, _)| !self.shared.contains_key(workspace))
                    .map(|(workspace, head)| (*workspace, *head))
                    .collect(),
            )
        };
        let appended = self.store.append_audit_batch(connection, events, &known).await;
        if appended.is_err() {
            self.connection = None;
        }
        appended
    }

    /// Compares the head found in the database with the one this writer last committed; true
    /// when another writer appended since.
    fn check_head(&self, found: &ChainHead) -> bool {
        let Some(known) = self.heads.get(&found.workspace) else { return false };
        if found.seq < known.seq || (found.seq == known.seq && found.hash != known.hash) {
            tracing::error!(
                workspace = %found.workspace,
                expected_seq = known.seq,
                found_seq = found.seq,
                "audit chain head moved backwards or changed: records were removed or rewritten outside the broker"
            );
        } else if found.seq > known.seq {
            tracing::debug!(workspace = %found.workspace, "another writer appended to this audit chain");
            return true;
        }
        false
    }
}

/// Checkpoints the SQLite WAL every [`CHECKPOINT_EVERY`], passively: frames no reader needs are
/// copied into the database file and the WAL restarts from its beginning once all are, so it
/// stays small while the writer, which does not checkpoint, appends.
async fn checkpoint_periodically(store: Store) {
    let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if store.pool.is_closed() {
            return;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&store.pool).await
        {
            tracing::warn!(%error, "could not checkpoint the SQLite WAL");
        }
    }
}
