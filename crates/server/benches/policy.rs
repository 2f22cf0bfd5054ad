//! Cedar evaluation as the proxy runs it, with 100 other workspaces' policy sets in the engine.
//!
//! ```text
//! cargo bench -p latchkey-server --bench policy            # criterion groups, then the report
//! cargo bench -p latchkey-server --bench policy -- --quick
//! ```
//!
//! Each iteration builds a fresh `PolicyRequest` and calls `PolicyEngine::evaluate` exactly as the
//! proxy does (the cache lookup, the Cedar request and entity construction, the authorizer),
//! driven by a current-thread Tokio runtime; the compiled sets are cached, so no iteration touches
//! the database. The workspace evaluated has the two default policies plus three of its own; each
//! of the 100 others has the defaults plus three policies of its own.
//!
//! Five cases: `allow` (a standing grant, one evaluation), `approval_required` (no grant: the
//! second, hypothetical evaluation runs too), `forbid` (another member's personal credential),
//! `allow_new_path` (the `allow` call with a path not seen before every time, so no remembered
//! decision answers it: Cedar runs), and `allow_new_agent` (a different agent every time, so the
//! engine's per agent-and-credential entity store is never reused either: the cold path, which
//! builds the action hierarchy's closure). The first three repeat one call, which the compiled
//! set answers from the decisions it remembers, as it does for an agent polling one endpoint.
//! After criterion's groups a report prints the median (p50) and p99 of single evaluations in
//! microseconds against the target, p50 <= 50 µs. Under `cargo test --benches` each benchmark
//! runs once and no report is printed.

#![allow(clippy::print_stdout, reason = "a benchmark's report goes to stdout")]

use std::error::Error;
use std::hint::black_box;
use std::time::Instant;

use criterion::Criterion;
use latchkey_core::ids::{AgentId, CredentialId, MemberId, Owner, WorkspaceId};
use latchkey_server::policy::{
    DEFAULT_POLICIES, GrantKind, MAX_POLICIES, PolicyEngine, PolicyRequest,
};
use latchkey_server::store::Store;
use latchkey_server::store::policies::{Expected, NewPolicy};
use tokio::runtime::Runtime;

type BoxError = Box<dyn Error>;

/// Fixed broker time: cached sets never expire during the run.
const NOW: u64 = 1_800_000_000;
/// Other workspaces whose compiled sets sit in the engine's cache.
const OTHER_WORKSPACES: usize = 100;
/// Target median of one evaluation.
const TARGET_P50_MICROS: f64 = 50.0;
/// Single evaluations timed for the report, per case.
const REPORT_SAMPLES: usize = 20_000;

/// Policies every benchmarked workspace adds to the defaults (typical admin rules).
const CUSTOM: [(&str, &str); 3] = [
    (
        "single-use-for-shared-deletes",
        r#"forbid (principal, action == Latchkey::Action::"DELETE", resource is Latchkey::Credential)
when { resource.shared && context.grant != "single_use" };"#,
    ),
    (
        "business-hours",
        r#"forbid (principal, action in Latchkey::Action::"call", resource)
unless { context.weekday <= 5 && context.hour >= 8 && context.hour < 18 };"#,
    ),
    (
        "no-github-org-membership",
        r#"forbid (principal, action in Latchkey::Action::"call", resource)
when { resource.provider == "github" && context.path like "/orgs/*/members*" };"#,
    ),
];

fn main() {
    if let Err(error) = run() {
        eprintln!("benchmark setup failed: {error}");
        std::process::exit(1);
    }
}

/// The identities of the evaluated call.
#[derive(Clone, Copy)]
struct Call {
    workspace: WorkspaceId,
    agent: AgentId,
    owner: MemberId,
    credential: CredentialId,
}

#[derive(Clone, Copy)]
enum Case {
    Allow,
    ApprovalRequired,
    Forbid,
    AllowNewPath,
    AllowNewAgent,
}

impl Case {
    const ALL: [(Case, &'static str); 5] = [
        (Case::Allow, "allow"),
        (Case::ApprovalRequired, "approval_required"),
        (Case::Forbid, "forbid"),
        (Case::AllowNewPath, "allow_new_path"),
        (Case::AllowNewAgent, "allow_new_agent"),
    ];
}

/// Distinct paths `allow_new_path` cycles through: far more than a compiled set remembers, so
/// every one is a miss.
const NEW_PATHS: usize = 50_000;

/// The next of [`NEW_PATHS`] distinct issue paths.
fn new_path() -> &'static str {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PATHS: OnceLock<Vec<String>> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let paths = PATHS.get_or_init(|| {
        (0..NEW_PATHS).map(|i| format!("/repos/acme/app/issues/{i}/comments")).collect()
    });
    &paths[NEXT.fetch_add(1, Ordering::Relaxed) % NEW_PATHS]
}

fn run() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let store = runtime.block_on(Store::open_sqlite(&dir.path().join("db.sqlite3")))?;
    let engine = PolicyEngine::new()?;
    let workspaces = runtime.block_on(workspaces(&dir, &store, OTHER_WORKSPACES + 1))?;
    // Fill the cache with every workspace's set, the evaluated one last.
    let mut call = Call {
        workspace: WorkspaceId::random(),
        agent: AgentId::random(),
        owner: MemberId::random(),
        credential: CredentialId::random(),
    };
    for &workspace in &workspaces {
        call.workspace = workspace;
        let decision = runtime.block_on(engine.evaluate(&store, &request(call, Case::Allow)))?;
        if !decision.allowed {
            return Err(format!("set-up call was not allowed: {decision:?}").into());
        }
    }
    check_cases(&runtime, &engine, &store, call)?;

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("policy_evaluate");
    for (case, name) in Case::ALL {
        group.bench_function(name, |b| {
            b.iter(|| evaluate(&runtime, &engine, &store, call, case));
        });
    }
    group.finish();
    criterion.final_summary();

    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--bench") && !has("--test") && !has("--list") {
        report(&runtime, &engine, &store, call);
    }
    Ok(())
}

/// One evaluation, request construction included, as the proxy makes it.
fn evaluate(runtime: &Runtime, engine: &PolicyEngine, store: &Store, call: Call, case: Case) {
    let request = request(black_box(call), case);
    let decision = runtime.block_on(engine.evaluate(store, &request));
    drop(black_box(decision));
}

fn request(mut call: Call, case: Case) -> PolicyRequest<'static> {
    let mut path = "/repos/acme/app/issues";
    let (owner, grant) = match case {
        Case::Allow => (Owner::Shared, GrantKind::Standing),
        Case::AllowNewPath => {
            path = new_path();
            (Owner::Shared, GrantKind::Standing)
        }
        Case::AllowNewAgent => {
            call.agent = AgentId::random();
            (Owner::Shared, GrantKind::Standing)
        }
        Case::ApprovalRequired => (Owner::Shared, GrantKind::None),
        Case::Forbid => (Owner::Member(MemberId::from_bytes([7; 16])), GrantKind::SingleUse),
    };
    PolicyRequest {
        workspace: call.workspace,
        agent: call.agent,
        agent_name: "deploy-bot",
        agent_owner: call.owner,
        credential: call.credential,
        credential_name: "github",
        provider: "github",
        credential_owner: owner,
        method: "POST",
        host: "api.github.com",
        path,
        now: NOW,
        grant,
    }
}

/// Makes sure each case decides what its name says, so the numbers measure the intended path.
fn check_cases(
    runtime: &Runtime,
    engine: &PolicyEngine,
    store: &Store,
    call: Call,
) -> Result<(), BoxError> {
    for (case, name) in Case::ALL {
        let d = runtime.block_on(engine.evaluate(store, &request(call, case)))?;
        let expected = match case {
            Case::Allow | Case::AllowNewPath | Case::AllowNewAgent => d.allowed,
            Case::ApprovalRequired => d.approval_required,
            Case::Forbid => !d.allowed && !d.approval_required && !d.policy_ids.is_empty(),
        };
        if !expected || !d.errors.is_empty() {
            return Err(format!("case {name} decided {d:?}").into());
        }
    }
    Ok(())
}

/// `n` workspaces, each with the default policies and [`CUSTOM`].
async fn workspaces(
    dir: &tempfile::TempDir,
    store: &Store,
    n: usize,
) -> Result<Vec<WorkspaceId>, BoxError> {
    // Workspace rows straight into the database: creating them through the API needs device
    // keys and signatures that have nothing to do with what is measured.
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("db.sqlite3"))
        .foreign_keys(true);
    let db = sqlx::SqlitePool::connect_with(options).await?;
    let mut workspaces = Vec::with_capacity(n);
    for _ in 0..n {
        let workspace = WorkspaceId::random();
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES (?1, 'Bench', ?2)")
            .bind(workspace.to_string())
            .bind(i64::try_from(NOW)?)
            .execute(&db)
            .await?;
        for (id, source) in CUSTOM {
            let policy = NewPolicy { id, description: "", source, enabled: true };
            store
                .put_policy(
                    workspace,
                    &DEFAULT_POLICIES,
                    policy,
                    Expected::Anything,
                    MAX_POLICIES,
                    NOW,
                )
                .await?
                .map_err(|e| e.to_string())?;
        }
        workspaces.push(workspace);
    }
    db.close().await;
    Ok(workspaces)
}

/// Median and p99 of single evaluations, timed one by one.
fn report(runtime: &Runtime, engine: &PolicyEngine, store: &Store, call: Call) {
    println!();
    println!(
        "policy evaluation, {} cached workspaces, {REPORT_SAMPLES} samples per case:",
        OTHER_WORKSPACES + 1
    );
    for (case, name) in Case::ALL {
        for _ in 0..1_000 {
            evaluate(runtime, engine, store, call, case);
        }
        let mut micros: Vec<f64> = (0..REPORT_SAMPLES)
            .map(|_| {
                let start = Instant::now();
                evaluate(runtime, engine, store, call, case);
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        micros.sort_by(f64::total_cmp);
        let at = |q: f64| micros.get((q * (micros.len() - 1) as f64) as usize).copied();
        let (p50, p99) = (at(0.5).unwrap_or(f64::NAN), at(0.99).unwrap_or(f64::NAN));
        let verdict = if p50 <= TARGET_P50_MICROS { "ok" } else { "OVER TARGET" };
        println!(
            "  {name:<18} p50 {p50:>7.1} µs   p99 {p99:>7.1} µs   (target p50 <= {TARGET_P50_MICROS} µs: {verdict})"
        );
    }
}
