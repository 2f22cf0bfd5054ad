//! The audit log table: batched, chained appends and scoped, filtered reads.
//!
//! A batch chained on heads the writer knows is one statement; any other batch (or one whose
//! known heads were stale) runs in one transaction that holds the write lock of every workspace
//! in the batch (`Lock::Workspace`, taken in workspace order) before any head is read, so two
//! writers (two brokers on one database) serialize instead of forking a chain. The table's own
//! triggers refuse updates, deletes and any insert that does not extend its chain, whoever the
//! writer is; on PostgreSQL the service role also lacks the privilege to update or delete.

use std::collections::HashMap;

use latchkey_core::ids::{AgentId, WorkspaceId};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::nonces::as_i64;
use super::{Backend, Lock, Store, StoreError};
use crate::audit::{
    AuditEvent, AuditKind, BrokenLink, ChainRecord, ChainSummary, ChainVerifier, Decision,
    GENESIS_HASH, PreparedRecord, chain_hash,
};

/// Most records one read returns.
pub const MAX_PAGE: u32 = 1000;

/// The last record of a workspace's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The last seq (0 for an empty chain).
    pub seq: u64,
    /// The last hash ([`GENESIS_HASH`] for an empty chain).
    pub hash: [u8; 32],
}

/// What one batch appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedBatch {
    /// The seq of each event, in the order given.
    pub seqs: Vec<u64>,
    /// Each workspace's head as read inside the transaction, before the batch.
    pub heads_before: Vec<ChainHead>,
    /// Each workspace's head after the batch.
    pub heads_after: Vec<ChainHead>,
}

/// Which records to read, within one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records about this agent.
    pub agent: Option<AgentId>,
    /// Only records about the credential with this name.
    pub credential_name: Option<String>,
    /// Only records with this decision.
    pub decision: Option<Decision>,
    /// Only records of this kind.
    pub kind: Option<AuditKind>,
    /// Only records at or after this time (unix ms).
    pub since_ms: Option<u64>,
    /// Only records before this time (unix ms).
    pub until_ms: Option<u64>,
    /// Cursor: only records after this seq in `order` (above it oldest first, below it newest
    /// first).
    pub after_seq: Option<u64>,
    /// Oldest or newest first.
    pub order: AuditOrder,
    /// Most records to return (at most [`MAX_PAGE`]).
    pub limit: u32,
}

impl AuditQuery {
    /// Every record, oldest first, `limit` at a time.
    pub fn all(limit: u32) -> Self {
        Self {
            agent: None,
            credential_name: None,
            decision: None,
            kind: None,
            since_ms: None,
            until_ms: None,
            after_seq: None,
            order: AuditOrder::OldestFirst,
            limit,
        }
    }
}

/// Order of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOrder {
    /// Ascending seq.
    OldestFirst,
    /// Descending seq.
    NewestFirst,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditRecord {
    /// Position in the chain.
    pub seq: u64,
    /// Indexed copy of the record's time.
    pub at_ms: u64,
    /// The canonical record text.
    pub record: String,
    /// Hash of the previous record.
    pub prev_hash: [u8; 32],
    /// This record's hash.
    pub hash: [u8; 32],
}

impl From<StoredAuditRecord> for ChainRecord {
    fn from(r: StoredAuditRecord) -> Self {
        ChainRecord {
            seq: r.seq,
            prev_hash: r.prev_hash,
            hash: r.hash,
            record: r.record,
            at_ms: Some(r.at_ms),
        }
    }
}

impl Store {
    /// Appends `events` atomically on a pooled connection, reading every chain head first (the
    /// audit writer keeps its own connection and heads; see [`Store::append_audit_batch`]).
    pub async fn append_audit(&self, events: &[AuditEvent]) -> Result<AppendedBatch, StoreError> {
        let mut connection = self.pool.acquire().await?;
        self.append_audit_batch(&mut connection, events, &HashMap::new()).await
    }

    /// Appends `events` atomically, each at the end of its workspace's chain.
    ///
    /// With `known` holding the head of every workspace in the batch (the writer's own record
    /// of what it last committed), the batch is one statement in autocommit, so a single round
    /// trip to the database, and atomic: on SQLite a multi-row `INSERT`, on PostgreSQL a call of
    /// `latchkey_audit_append` (migrations/postgres/0007), which takes each workspace's setting
    /// and write lock as the careful way does before inserting its rows. The table's trigger
    /// still checks every row against the stored chain, so if `known` is stale (another writer
    /// appended, or rows were tampered with) the statement fails as a whole and the batch is
    /// retried the careful way: one transaction that takes every workspace's write lock, reads
    /// each head, inserts and commits.
    pub async fn append_audit_batch(
        &self,
        connection: &mut sqlx::AnyConnection,
        events: &[AuditEvent],
        known: &HashMap<WorkspaceId, ChainHead>,
    ) -> Result<AppendedBatch, StoreError> {
        if !events.is_empty() && events.iter().all(|e| known.contains_key(&e.workspace)) {
            let mut heads = known.clone();
            let heads_before: Vec<ChainHead> = distinct_workspaces(events)
                .filter_map(|workspace| known.get(&workspace).copied())
                .collect();
            let rows = chain_rows(events, &mut heads);
            let appended = match self.backend {
                Backend::Sqlite => insert_rows(&rows).build().execute(&mut *connection).await,
                Backend::Postgres => {
                    sqlx::query("SELECT latchkey_audit_append($1)")
                        .bind(append_batches(&rows))
                        .execute(&mut *connection)
                        .await
                }
            };
            match appended {
                Ok(_) => {
                    let heads_after = heads_before
                        .iter()
                        .filter_map(|b| heads.get(&b.workspace).copied())
                        .collect();
                    return Ok(AppendedBatch {
                        seqs: rows.iter().map(|r| r.seq).collect(),
                        heads_before,
                        heads_after,
                    });
                }
                Err(error) => {
                    tracing::debug!(%error, "audit fast append refused; re-reading the chain heads");
                }
            }
        }

        let mut tx = match self.backend {
            Backend::Sqlite => {
                sqlx::Connection::begin_with(&mut *connection, "BEGIN IMMEDIATE").await?
            }
            Backend::Postgres => sqlx::Connection::begin(&mut *connection).await?,
        };
        // Every workspace's write lock, in a fixed order (two writers cannot deadlock), before
        // any head is read.
        let mut locked: Vec<WorkspaceId> = distinct_workspaces(events).collect();
        locked.sort_unstable();
        for workspace in &locked {
            self.enter(&mut tx, *workspace, Lock::Workspace).await?;
        }
        let mut current = locked.last().copied();
        let mut heads: HashMap<WorkspaceId, ChainHead> = HashMap::new();
        let mut heads_before = Vec::new();
        for workspace in distinct_workspaces(events) {
            if current != Some(workspace) {
                self.enter(&mut tx, workspace, Lock::None).await?;
                current = Some(workspace);
            }
            let head = read_head(&mut tx, workspace).await?;
            heads_before.push(head);
            heads.insert(workspace, head);
        }
        let rows = chain_rows(events, &mut heads);
        for row in &rows {
            if current != Some(row.workspace) {
                self.enter(&mut tx, row.workspace, Lock::None).await?;
                current = Some(row.workspace);
            }
            sqlx::query(
                "INSERT INTO audit_log (workspace_id, seq, at_ms, record, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(row.workspace.to_string())
            .bind(as_i64(row.seq))
            .bind(as_i64(row.at_ms))
            .bind(&row.record)
            .bind(&row.prev_hash[..])
            .bind(&row.hash[..])
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let heads_after = heads_before
            .iter()
            .filter_map(|before| heads.get(&before.workspace).copied())
            .collect();
        Ok(AppendedBatch { seqs: rows.iter().map(|r| r.seq).collect(), heads_before, heads_after })
    }

    /// Inserts rows chained elsewhere (the audit journal's) in one SQLite transaction. The
    /// table's trigger checks that every row extends its chain, so rows that do not are refused
    /// as a whole.
    pub(crate) async fn insert_chained(
        &self,
        connection: &mut sqlx::AnyConnection,
        rows: &[ChainRow],
    ) -> Result<(), StoreError> {
        let mut tx = sqlx::Connection::begin_with(&mut *connection, "BEGIN IMMEDIATE").await?;
        for chunk in shaped_chunks(rows) {
            insert_rows(chunk).build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The last record of `workspace`'s chain as stored.
    pub(crate) async fn audit_head(&self, workspace: WorkspaceId) -> Result<ChainHead, StoreError> {
        let mut tx = self.begin(workspace, Lock::None).await?;
        let head = read_head(&mut tx, workspace).await?;
        tx.commit().await?;
        Ok(head)
    }

    /// Up to `query.limit` records of `workspace` matching `query`, in its order.
    ///
    /// With an audit journal (see `crate::audit`), first waits for every record committed so
    /// far to be indexed here, so a read sees every record an earlier call committed.
    pub async fn audit_records(
        &self,
        workspace: WorkspaceId,
        query: &AuditQuery,
    ) -> Result<Vec<StoredAuditRecord>, StoreError> {
        self.audit_caught_up().await?;
        // One statement per order and backend; absent filters are NULL and match everything. The
        // JSON accessor yields NULL for a record that is not JSON (only a hand-edited database has
        // one). `since_ms` also bounds the seq range, exactly, with the first seq at or after it
        // (by the time index; a bound the planner uses only outside an `IS NULL OR`): a day's
        // window of a long history reads that day, not the history.
        let (after, direction) = match query.order {
            AuditOrder::OldestFirst => (">", "ASC"),
            AuditOrder::NewestFirst => ("<", "DESC"),
        };
        let field = |key: &str| self.backend.json_text("record", key);
        let sql = format!(
            "SELECT seq, at_ms, record, prev_hash, hash FROM audit_log
             WHERE workspace_id = $1
               AND ($2 IS NULL OR {agent} = $2)
               AND ($3 IS NULL OR {credential} = $3)
               AND ($4 IS NULL OR {decision} = $4)
               AND ($5 IS NULL OR {kind} = $5)
               AND seq >= COALESCE(
                   (SELECT min(seq) FROM audit_log WHERE workspace_id = $1 AND at_ms >= $6),
                   CASE WHEN $6 IS NULL THEN 0 ELSE 9223372036854775807 END)
               AND ($6 IS NULL OR at_ms >= $6)
               AND ($7 IS NULL OR at_ms < $7)
               AND ($8 IS NULL OR seq {after} $8)
             ORDER BY seq {direction} LIMIT $9",
            agent = field("agent"),
            credential = field("credential_name"),
            decision = field("decision"),
            kind = field("kind"),
        );
        let mut tx = self.begin(workspace, Lock::None).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace.to_string())
            .bind(query.agent.map(|a| a.to_string()))
            .bind(query.credential_name.as_deref())
            .bind(query.decision.map(Decision::as_str))
            .bind(query.kind.map(AuditKind::as_str))
            .bind(query.since_ms.map(as_i64))
            .bind(query.until_ms.map(as_i64))
            .bind(query.after_seq.map(as_i64))
            .bind(i64::from(query.limit.min(MAX_PAGE)))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(parse_row).collect()
    }

    /// Verifies the whole chain of `workspace`, reading it a page at a time.
    pub async fn verify_audit_chain(
        &self,
        workspace: WorkspaceId,
    ) -> Result<Result<ChainSummary, BrokenLink>, StoreError> {
        self.verify_audit_chain_from(workspace, 1).await
    }

    /// [`Store::verify_audit_chain`] from record `from_seq` on ([`ChainVerifier::from_seq`]): a
    /// device that verified up to that record checks only what came after it. A chain shorter
    /// than `from_seq` is verified from its start, so the answer still names its true length.
    pub async fn verify_audit_chain_from(
        &self,
        workspace: WorkspaceId,
        from_seq: u64,
    ) -> Result<Result<ChainSummary, BrokenLink>, StoreError> {
        let mut query = AuditQuery::all(MAX_PAGE);
        let mut start = from_seq.max(1);
        if start > 1 {
            query.after_seq = Some(start - 1);
            let first = AuditQuery { limit: 1, ..query.clone() };
            if self.audit_records(workspace, &first).await?.is_empty() {
                start = 1;
                query.after_seq = None;
            }
        }
        let mut verifier = ChainVerifier::from_seq(workspace, start);
        loop {
            let page = self.audit_records(workspace, &query).await?;
            let Some(last) = page.last().map(|r| r.seq) else { break };
            let full = page.len() == MAX_PAGE as usize;
            for record in page {
                if let Err(broken) = verifier.push(&record.into()) {
                    return Ok(Err(broken));
                }
            }
            if !full {
                break;
            }
            query.after_seq = Some(last);
        }
        Ok(Ok(verifier.finish()))
    }
}

/// One record, chained, ready to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainRow {
    pub(crate) workspace: WorkspaceId,
    pub(crate) seq: u64,
    pub(crate) at_ms: u64,
    pub(crate) record: String,
    pub(crate) prev_hash: [u8; 32],
    pub(crate) hash: [u8; 32],
}

impl ChainRow {
    /// `event` chained onto `head`, which moves to the new record.
    pub(crate) fn chain(event: &AuditEvent, head: &mut ChainHead) -> Self {
        Self::chain_prepared(&PreparedRecord::new(event), event.at_ms, head)
    }

    /// [`ChainRow::chain`] for a record prepared earlier (of an event at `at_ms` in `head`'s
    /// workspace).
    pub(crate) fn chain_prepared(
        record: &PreparedRecord,
        at_ms: u64,
        head: &mut ChainHead,
    ) -> Self {
        let seq = head.seq + 1;
        let record = record.with_seq(seq);
        let hash = chain_hash(&head.hash, record.as_bytes());
        let row =
            ChainRow { workspace: head.workspace, seq, at_ms, record, prev_hash: head.hash, hash };
        *head = ChainHead { workspace: head.workspace, seq, hash };
        row
    }

    /// This row's head: the chain as it stands once the row is in it.
    pub(crate) fn head(&self) -> ChainHead {
        ChainHead { workspace: self.workspace, seq: self.seq, hash: self.hash }
    }
}

/// Chains `events` onto `heads` (a workspace without an entry starts a new chain), advancing
/// them.
fn chain_rows(events: &[AuditEvent], heads: &mut HashMap<WorkspaceId, ChainHead>) -> Vec<ChainRow> {
    events
        .iter()
        .map(|event| {
            let head = heads.entry(event.workspace).or_insert(ChainHead {
                workspace: event.workspace,
                seq: 0,
                hash: GENESIS_HASH,
            });
            ChainRow::chain(event, head)
        })
        .collect()
}

/// The row counts of the multi-row `INSERT`s that index journaled records, largest first (6
/// parameters a row: the largest well under SQLite's 32,766). Few shapes, so each statement is
/// prepared once on the ingester's connection and then found in its statement cache; a
/// statement per batch size was prepared afresh for most batches (a tenth of the ingester's
/// time under load).
const INSERT_SHAPES: [usize; 6] = [1024, 256, 64, 16, 4, 1];

/// `rows`, in order, cut into chunks whose lengths are all [`INSERT_SHAPES`].
fn shaped_chunks(rows: &[ChainRow]) -> impl Iterator<Item = &[ChainRow]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        let size = INSERT_SHAPES.iter().copied().find(|size| *size <= rest.len())?;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// Pushes one multi-row `INSERT` of `rows`.
fn insert_rows(rows: &[ChainRow]) -> sqlx::QueryBuilder<sqlx::Any> {
    let mut insert = sqlx::QueryBuilder::<sqlx::Any>::new(
        "INSERT INTO audit_log (workspace_id, seq, at_ms, record, prev_hash, hash) ",
    );
    insert.push_values(rows, |mut values, row| {
        values
            .push_bind(row.workspace.to_string())
            .push_bind(as_i64(row.seq))
            .push_bind(as_i64(row.at_ms))
            .push_bind(row.record.as_str())
            .push_bind(&row.prev_hash[..])
            .push_bind(&row.hash[..]);
    });
    insert
}

/// `rows` as `latchkey_audit_append` takes them: grouped by workspace, the workspaces in the
/// order the careful path locks them (so two writers cannot deadlock), hashes in hex.
fn append_batches(rows: &[ChainRow]) -> String {
    #[derive(serde::Serialize)]
    struct Batch<'a> {
        workspace: String,
        records: Vec<Record<'a>>,
    }
    #[derive(serde::Serialize)]
    struct Record<'a> {
        seq: u64,
        at_ms: u64,
        record: &'a str,
        prev_hash: String,
        hash: String,
    }
    let mut by_workspace: std::collections::BTreeMap<WorkspaceId, Vec<Record<'_>>> =
        std::collections::BTreeMap::new();
    for row in rows {
        by_workspace.entry(row.workspace).or_default().push(Record {
            seq: row.seq,
            at_ms: row.at_ms,
            record: &row.record,
            prev_hash: crate::audit::to_hex(&row.prev_hash),
            hash: crate::audit::to_hex(&row.hash),
        });
    }
    let batches: Vec<Batch<'_>> = by_workspace
        .into_iter()
        .map(|(workspace, records)| Batch { workspace: workspace.to_string(), records })
        .collect();
    // Strings, integers and vectors of them always serialize.
    serde_json::to_string(&batches).unwrap_or_default()
}

/// The workspaces of `events`, each once, in order of first appearance.
fn distinct_workspaces(events: &[AuditEvent]) -> impl Iterator<Item = WorkspaceId> + '_ {
    let mut seen = std::collections::HashSet::new();
    events.iter().map(|e| e.workspace).filter(move |w| seen.insert(*w))
}

async fn read_head(
    connection: &mut sqlx::AnyConnection,
    workspace: WorkspaceId,
) -> Result<ChainHead, StoreError> {
    let row = sqlx::query(
        "SELECT seq, hash FROM audit_log WHERE workspace_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(workspace.to_string())
    .fetch_optional(&mut *connection)
    .await?;
    let Some(row) = row else {
        return Ok(ChainHead { workspace, seq: 0, hash: GENESIS_HASH });
    };
    Ok(ChainHead { workspace, seq: seq_of(&row, "seq")?, hash: hash_of(&row, "hash")? })
}

fn parse_row(row: &AnyRow) -> Result<StoredAuditRecord, StoreError> {
    Ok(StoredAuditRecord {
        seq: seq_of(row, "seq")?,
        at_ms: seq_of(row, "at_ms")?,
        record: row.try_get("record")?,
        prev_hash: hash_of(row, "prev_hash")?,
        hash: hash_of(row, "hash")?,
    })
}

fn seq_of(row: &AnyRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("audit_log.{column} is negative")))
}

fn hash_of(row: &AnyRow, column: &str) -> Result<[u8; 32], StoreError> {
    let bytes: Vec<u8> = row.try_get(column)?;
    bytes.try_into().map_err(|_| StoreError::Corrupt(format!("audit_log.{column} is not 32 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(count: usize) -> Vec<ChainRow> {
        let workspace = WorkspaceId::random();
        (1..=count as u64)
            .map(|seq| ChainRow {
                workspace,
                seq,
                at_ms: seq,
                record: String::new(),
                prev_hash: [0; 32],
                hash: [0; 32],
            })
            .collect()
    }

    #[test]
    fn indexing_chunks_keep_every_row_in_order_in_few_statement_shapes() {
        for count in [0, 1, 3, 4, 5, 63, 64, 65, 100, 1023, 1024, 1025, 1500, 4099] {
            let rows = rows(count);
            let chunks: Vec<&[ChainRow]> = shaped_chunks(&rows).collect();
            let seqs: Vec<u64> = chunks.iter().flat_map(|c| c.iter().map(|r| r.seq)).collect();
            assert_eq!(seqs, (1..=count as u64).collect::<Vec<_>>(), "every row once, in order");
            assert!(
                chunks.iter().all(|c| INSERT_SHAPES.contains(&c.len())),
                "only the cached shapes are used for {count} rows: {:?}",
                chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
            );
            let below_largest = chunks.iter().filter(|c| c.len() < INSERT_SHAPES[0]).count();
            assert!(
                below_largest <= 3 * (INSERT_SHAPES.len() - 1),
                "a batch takes few statements beyond its largest chunks ({count} rows: {below_largest})"
            );
        }
    }
}
