//! Reading the audit log: `GET /v1/audit` (filtered pages), `GET /v1/audit/export` (streamed
//! JSONL or CSV) and `GET /v1/audit/verify` (the chain check). Any member's device may call them;
//! each only ever reads the caller's own workspace.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use latchkey_core::ids::{AgentId, WorkspaceId};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::DeviceErrors;
use crate::audit::{AuditKind, Decision, to_hex};
use crate::auth::Signed;
use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;
use crate::store::audit::{AuditOrder, AuditQuery, MAX_PAGE, StoredAuditRecord};
use crate::store::{Store, StoreError};

pub(super) fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(export)).routes(routes!(verify))
}

/// Records a listing returns unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// Records an export reads from the database at a time.
const EXPORT_PAGE: u32 = 500;
/// The most bytes of records one listing page carries: an agent can make each of its records a
/// few KiB (a long path of characters JSON escapes), and a page of 1000 of them must still fit
/// what a device reads in one answer. A page cut short by it names where to continue.
const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// What a listed record adds to its stored text: seq, both hashes in hex, keys and punctuation.
const ENTRY_OVERHEAD: usize = 200;

/// Columns of the CSV export, in order.
const CSV_COLUMNS: [&str; 23] = [
    "seq",
    "at_ms",
    "kind",
    "decision",
    "reason_code",
    "workspace",
    "agent",
    "device",
    "member",
    "credential_name",
    "method",
    "host",
    "path",
    "policy_ids",
    "approval_id",
    "attempt_seq",
    "upstream_status",
    "latency_ms",
    "client_ip",
    "lifetime_secs",
    "command",
    "prev_hash",
    "hash",
];

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditListing)]
struct Listing {
    /// Each `{seq, prev_hash, hash, record}`: hashes in hex, `record` the chained record (its
    /// fields are in docs/protocol.md, "Audit log").
    #[schema(value_type = Vec<Object>)]
    records: Vec<Value>,
    /// Pass as `after_seq` for the next page; `null` when this page is the last. A page may hold
    /// fewer than `limit` records and still have a next one: pages stop at 1 MiB of records.
    next_after_seq: Option<u64>,
}

/// A filtered page of the caller's workspace's audit log, newest first by default.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    operation_id = "list_audit",
    security(("device_signature" = [])),
    params(
        ("agent" = Option<String>, Query, format = "uuid", description = "Only this agent's records"),
        ("credential" = Option<String>, Query, description = "Only records of this credential name"),
        ("decision" = Option<String>, Query, description = "`allowed` or `denied`"),
        ("kind" = Option<String>, Query, description = "A record kind, e.g. `proxy_attempt`"),
        ("since_ms" = Option<u64>, Query, description = "From this time (unix ms)"),
        ("until_ms" = Option<u64>, Query, description = "Until this time (unix ms)"),
        ("after_seq" = Option<u64>, Query, description = "Continue after this seq (`next_after_seq` of the previous page)"),
        ("order" = Option<String>, Query, description = "`newest_first` (default) or `oldest_first`"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000; 100 by default"),
    ),
    responses(
        (status = 200, description = "A page of records", body = Listing),
        DeviceErrors,
        (status = 400, description = "`bad_request` or `invalid_request`: an unknown, repeated or malformed parameter", body = ApiError),
    ),
)]
async fn list(
    State(state): State<SharedState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    request: Signed<()>,
) -> Result<Json<Listing>, ApiError> {
    let params = Params::parse(query, Endpoint::List)?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let query = AuditQuery { limit, ..params.query };
    let rows = state.store.audit_records(request.caller.workspace, &query).await?;
    let mut records = Vec::with_capacity(rows.len());
    let (mut bytes, mut last) = (0, None);
    for row in &rows {
        bytes += row.record.len() + ENTRY_OVERHEAD;
        if bytes > MAX_PAGE_BYTES && last.is_some() {
            break;
        }
        records.push(entry(row)?);
        last = Some(row.seq);
    }
    let full = records.len() < rows.len() || rows.len() == limit as usize;
    let next_after_seq = last.filter(|_| full);
    Ok(Json(Listing { records, next_after_seq }))
}

/// The caller's workspace's audit log as a download: JSONL (each line verifies offline) or CSV,
/// oldest first by default.
#[utoipa::path(
    get,
    path = "/v1/audit/export",
    tag = "audit",
    operation_id = "export_audit",
    security(("device_signature" = [])),
    params(
        ("format" = Option<String>, Query, description = "`jsonl` (default) or `csv`"),
        ("agent" = Option<String>, Query, format = "uuid", description = "Only this agent's records"),
        ("credential" = Option<String>, Query, description = "Only records of this credential name"),
        ("decision" = Option<String>, Query, description = "`allowed` or `denied`"),
        ("kind" = Option<String>, Query, description = "A record kind, e.g. `proxy_attempt`"),
        ("since_ms" = Option<u64>, Query, description = "From this time (unix ms)"),
        ("until_ms" = Option<u64>, Query, description = "Until this time (unix ms)"),
        ("after_seq" = Option<u64>, Query, description = "Start after this seq"),
        ("order" = Option<String>, Query, description = "`oldest_first` (default) or `newest_first`"),
        ("limit" = Option<u32>, Query, description = "Most records to export; all by default"),
    ),
    responses(
        (status = 200, description = "The export, streamed; a failure midway ends the body abruptly",
            content(("application/x-ndjson"), ("text/csv"))),
        DeviceErrors,
        (status = 400, description = "`bad_request` or `invalid_request`: an unknown, repeated or malformed parameter", body = ApiError),
    ),
)]
async fn export(
    State(state): State<SharedState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    request: Signed<()>,
) -> Result<Response, ApiError> {
    let params = Params::parse(query, Endpoint::Export)?;
    let format = params.format.unwrap_or(Format::Jsonl);
    let workspace = request.caller.workspace;
    let mut export = Export {
        store: state.store.clone(),
        workspace,
        query: params.query,
        remaining: params.limit.map(u64::from),
        format,
        pending: None,
        started: false,
        done: false,
    };
    // The first page is read before answering, so an unreachable database is a proper error
    // rather than an empty 200.
    export.query.limit = export.page_limit();
    export.pending = Some(state.store.audit_records(workspace, &export.query).await?);
    let (content_type, extension) = match format {
        Format::Jsonl => ("application/x-ndjson", "jsonl"),
        Format::Csv => ("text/csv; charset=utf-8; header=present", "csv"),
    };
    let disposition = format!("attachment; filename=\"latchkey-audit-{workspace}.{extension}\"");
    let body = Body::from_stream(futures_util::stream::unfold(export, Export::next_chunk));
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// The chain check's answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum Verification {
    /// `checked_from`: the first record checked (1, or the `from_seq` asked for).
    Intact {
        ok: bool,
        records: u64,
        head: String,
        checked_from: u64,
    },
    Broken {
        ok: bool,
        first_broken_seq: u64,
        reason: &'static str,
        message: String,
    },
}

/// Verifies the hash chain of the caller's workspace's audit log.
#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    tag = "audit",
    operation_id = "verify_audit",
    security(("device_signature" = [])),
    params(
        ("from_seq" = Option<u64>, Query, description = "Check from this record on, taking its `prev_hash` as given (a device that verified up to it earlier); the whole chain by default, and when the chain is shorter"),
    ),
    responses(
        (status = 200, description = "`ok: true` with the record count, head hash and the first record checked, or `ok: false` with the first broken seq and why", body = Verification),
        DeviceErrors,
        (status = 400, description = "`bad_request` or `invalid_request`: an unknown, repeated or malformed parameter", body = ApiError),
    ),
)]
async fn verify(
    State(state): State<SharedState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    request: Signed<()>,
) -> Result<Json<Verification>, ApiError> {
    let workspace = request.caller.workspace;
    let from_seq = verify_from(query)?;
    let answer = match state.store.verify_audit_chain_from(workspace, from_seq).await? {
        Ok(summary) => Verification::Intact {
            ok: true,
            records: summary.records,
            head: to_hex(&summary.head),
            checked_from: summary.checked_from,
        },
        Err(broken) => {
            tracing::warn!(%workspace, seq = broken.seq, reason = broken.reason.code(), "audit chain does not verify");
            Verification::Broken {
                ok: false,
                first_broken_seq: broken.seq,
                reason: broken.reason.code(),
                message: broken.reason.to_string(),
            }
        }
    };
    Ok(Json(answer))
}

/// The chain check's one parameter, `from_seq` (1 by default).
fn verify_from(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<u64, ApiError> {
    let Ok(Query(pairs)) = query else {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "the query string is not valid URL encoding",
        ));
    };
    if pairs.iter().any(|(name, _)| name != "from_seq") {
        return Err(invalid("unknown query parameter; accepted: from_seq"));
    }
    match pairs.as_slice() {
        [] => Ok(1),
        [(_, value)] => parse_u64(value, "from_seq")
            .ok()
            .filter(|&seq| seq >= 1)
            .ok_or_else(|| invalid("from_seq must be a record's seq, 1 or more")),
        _ => Err(invalid("each query parameter may appear once")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    List,
    Export,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jsonl,
    Csv,
}

/// The query parameters, parsed. Messages name the parameter, never echo its value.
#[derive(Debug)]
struct Params {
    query: AuditQuery,
    limit: Option<u32>,
    format: Option<Format>,
}

impl Params {
    fn parse(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        endpoint: Endpoint,
    ) -> Result<Self, ApiError> {
        let Ok(Query(pairs)) = query else {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "the query string is not valid URL encoding",
            ));
        };
        let mut params = Params {
            query: AuditQuery {
                order: match endpoint {
                    Endpoint::List => AuditOrder::NewestFirst,
                    Endpoint::Export => AuditOrder::OldestFirst,
                },
                ..AuditQuery::all(MAX_PAGE)
            },
            limit: None,
            format: None,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in &pairs {
            if seen.contains(&name.as_str()) {
                return Err(invalid("each query parameter may appear once"));
            }
            seen.push(name);
            let q = &mut params.query;
            match name.as_str() {
                "agent" => q.agent = Some(parse_id::<AgentId>(value, "agent")?),
                "credential" => {
                    if value.is_empty() || value.len() > 64 {
                        return Err(invalid(
                            "credential must be a credential name (1 to 64 bytes)",
                        ));
                    }
                    q.credential_name = Some(value.clone());
                }
                "decision" => {
                    q.decision = Some(
                        Decision::parse(value)
                            .ok_or_else(|| invalid("decision must be allowed or denied"))?,
                    );
                }
                "kind" => {
                    q.kind = Some(AuditKind::parse(value).ok_or_else(|| {
                        invalid("kind must be an audit record kind such as proxy_attempt; see docs/api.md")
                    })?);
                }
                "since_ms" => q.since_ms = Some(parse_u64(value, "since_ms")?),
                "until_ms" => q.until_ms = Some(parse_u64(value, "until_ms")?),
                "after_seq" => q.after_seq = Some(parse_u64(value, "after_seq")?),
                "order" => {
                    q.order = match value.as_str() {
                        "newest_first" => AuditOrder::NewestFirst,
                        "oldest_first" => AuditOrder::OldestFirst,
                        _ => return Err(invalid("order must be newest_first or oldest_first")),
                    };
                }
                "limit" => {
                    let max = match endpoint {
                        Endpoint::List => MAX_PAGE,
                        Endpoint::Export => u32::MAX,
                    };
                    let limit = u32::try_from(parse_u64(value, "limit")?)
                        .ok()
                        .filter(|l| (1..=max).contains(l))
                        .ok_or_else(|| invalid(format!("limit must be between 1 and {max}")))?;
                    params.limit = Some(limit);
                }
                "format" if endpoint == Endpoint::Export => {
                    params.format = Some(match value.as_str() {
                        "jsonl" => Format::Jsonl,
                        "csv" => Format::Csv,
                        _ => return Err(invalid("format must be jsonl or csv")),
                    });
                }
                _ => {
                    return Err(invalid(match endpoint {
                        Endpoint::List => {
                            "unknown query parameter; accepted: agent, credential, decision, kind, since_ms, until_ms, after_seq, order, limit"
                        }
                        Endpoint::Export => {
                            "unknown query parameter; accepted: format, agent, credential, decision, kind, since_ms, until_ms, after_seq, order, limit"
                        }
                    }));
                }
            }
        }
        Ok(params)
    }
}

/// A streamed export: one chunk per database page.
#[derive(Debug)]
struct Export {
    store: Store,
    workspace: WorkspaceId,
    query: AuditQuery,
    /// Records still to send when the export has a limit.
    remaining: Option<u64>,
    format: Format,
    /// A page read but not yet sent.
    pending: Option<Vec<StoredAuditRecord>>,
    started: bool,
    done: bool,
}

impl Export {
    fn page_limit(&self) -> u32 {
        let cap = u64::from(EXPORT_PAGE);
        u32::try_from(self.remaining.map_or(cap, |r| r.min(cap))).unwrap_or(EXPORT_PAGE)
    }

    /// The next chunk; an error ends the body abruptly, so the client sees a failed download
    /// rather than a silently short export.
    async fn next_chunk(mut self) -> Option<(Result<Bytes, StoreError>, Self)> {
        if self.done {
            return None;
        }
        let page = match self.pending.take() {
            Some(page) => page,
            None => {
                self.query.limit = self.page_limit();
                match self.store.audit_records(self.workspace, &self.query).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::error!(%error, "audit export failed midway");
                        self.done = true;
                        return Some((Err(error), self));
                    }
                }
            }
        };
        let mut chunk = String::new();
        if !self.started && self.format == Format::Csv {
            chunk.push_str(&CSV_COLUMNS.join(","));
            chunk.push_str("\r\n");
        }
        self.started = true;
        for row in &page {
            match self.format {
                Format::Jsonl => jsonl_line(row, &mut chunk),
                Format::Csv => csv_row(row, &mut chunk),
            }
        }
        let sent = page.len() as u64;
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(sent);
        }
        self.query.after_seq = page.last().map(|r| r.seq).or(self.query.after_seq);
        if sent < u64::from(self.query.limit) || self.remaining == Some(0) {
            self.done = true;
        }
        if chunk.is_empty() {
            return None;
        }
        Some((Ok(Bytes::from(chunk)), self))
    }
}

/// A record as listed: the stored JSON record with its chain position and hashes.
fn entry(row: &StoredAuditRecord) -> Result<Value, StoreError> {
    let record: Value = serde_json::from_str(&row.record)
        .map_err(|_| StoreError::Corrupt(format!("audit record {} is not JSON", row.seq)))?;
    let mut map = Map::new();
    map.insert("seq".into(), row.seq.into());
    map.insert("prev_hash".into(), to_hex(&row.prev_hash).into());
    map.insert("hash".into(), to_hex(&row.hash).into());
    map.insert("record".into(), record);
    Ok(Value::Object(map))
}

/// `{"hash":..,"prev_hash":..,"record":<stored text>,"seq":N}`: the stored record is copied
/// byte for byte, so the line verifies offline.
fn jsonl_line(row: &StoredAuditRecord, out: &mut String) {
    out.push_str("{\"hash\":\"");
    out.push_str(&to_hex(&row.hash));
    out.push_str("\",\"prev_hash\":\"");
    out.push_str(&to_hex(&row.prev_hash));
    out.push_str("\",\"record\":");
    out.push_str(&row.record);
    out.push_str(",\"seq\":");
    out.push_str(&row.seq.to_string());
    out.push_str("}\n");
}

fn csv_row(row: &StoredAuditRecord, out: &mut String) {
    let record = match serde_json::from_str::<Value>(&row.record) {
        Ok(Value::Object(map)) => map,
        _ => {
            tracing::warn!(
                seq = row.seq,
                "audit record is not a JSON object; exported without fields"
            );
            Map::new()
        }
    };
    for (i, column) in CSV_COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let cell = match *column {
            "seq" => row.seq.to_string(),
            "prev_hash" => to_hex(&row.prev_hash),
            "hash" => to_hex(&row.hash),
            name => match record.get(name) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| item.as_str().map_or_else(|| item.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(";"),
                Some(other) => other.to_string(),
            },
        };
        csv_cell(&cell, out);
    }
    out.push_str("\r\n");
}

/// One RFC 4180 cell. A cell that a spreadsheet would run as a formula (it starts with `=`, `+`,
/// `-`, `@`, tab or carriage return) is prefixed with `'`; the JSONL export is the exact one.
fn csv_cell(value: &str, out: &mut String) {
    let formula = matches!(value.chars().next(), Some('=' | '+' | '-' | '@' | '\t' | '\r'));
    if !formula && !value.contains([',', '"', '\n', '\r']) {
        out.push_str(value);
        return;
    }
    out.push('"');
    if formula {
        out.push('\'');
    }
    out.push_str(&value.replace('"', "\"\""));
    out.push('"');
}

fn parse_id<T: std::str::FromStr>(value: &str, name: &str) -> Result<T, ApiError> {
    value
        .parse()
        .map_err(|_| invalid(format!("{name} must be an id (a lowercase hyphenated UUID)")))
}

fn parse_u64(value: &str, name: &str) -> Result<u64, ApiError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("{name} must be a non-negative integer")));
    }
    value.parse().map_err(|_| invalid(format!("{name} is too large")))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(value: &str) -> String {
        let mut out = String::new();
        csv_cell(value, &mut out);
        out
    }

    #[test]
    fn csv_cells_are_quoted_only_when_needed_and_formulas_are_defused() {
        assert_eq!(cell("/repos/a"), "/repos/a", "plain values stay bare");
        assert_eq!(cell("a,b"), "\"a,b\"", "commas are quoted");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"", "quotes are doubled");
        assert_eq!(cell("a\nb"), "\"a\nb\"", "newlines are quoted");
        assert_eq!(cell("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"", "formulas are defused");
        assert_eq!(cell(""), "", "empty stays empty");
    }
}
