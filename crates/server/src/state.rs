//! What every request handler shares.

use std::sync::Arc;

use latchkey_core::keys::BrokerSecretKey;

use crate::clock::{Clock, SystemClock};
use crate::store::Store;

/// A configured broker, ready to be served by [`crate::serve`].
#[derive(Debug)]
pub struct Broker {
    pub(crate) store: Store,
    pub(crate) broker_key: BrokerSecretKey,
    pub(crate) clock: Arc<dyn Clock>,
    /// Origin (scheme, host, port) devices use to reach this broker; the `@target-uri` of every
    /// device signature is checked against it. `None`: taken from the listener's address.
    pub(crate) public_origin: Option<String>,
    /// Who may create workspaces; `None`: as [`crate::creation::CreationMode::default_for`]
    /// says for the listener and the public origin.
    pub(crate) workspace_creation: Option<crate::creation::WorkspaceCreation>,
    /// Where the broker counts what it does; served by [`crate::serve_metrics`] if the caller
    /// wants them scraped.
    pub(crate) metrics: crate::metrics::Metrics,
    /// How long the proxy holds a call that waits for a member's approval (zero: never hold,
    /// answer `approval_required` at once).
    pub(crate) approval_timeout: std::time::Duration,
    /// Certificate authorities trusted for upstream calls besides the system's.
    pub(crate) upstream_roots: Option<crate::tls::UpstreamRoots>,
    /// The HTTP proxy for upstream calls; `None`: the standard proxy variables apply.
    pub(crate) upstream_proxy: Option<crate::config::ProxyUrl>,
    /// TLS on the API listener; `None`: plain HTTP (loopback, or behind a TLS-terminating
    /// load balancer).
    pub(crate) tls: Option<crate::tls::ServerTls>,
    /// Injected audit journal write failures (tests only).
    pub(crate) journal_faults: Option<crate::audit::JournalFaults>,
    /// How many signed requests one enrolled device may send; `None`: no limit.
    pub(crate) device_rate_limit: Option<crate::rate_limit::DeviceRateLimit>,
    /// How many threads serve requests, each with a single-threaded runtime of its own; `None`:
    /// requests are served on the runtime that calls [`crate::serve`].
    pub(crate) serving_threads: Option<std::num::NonZeroUsize>,
}

impl Broker {
    /// A broker over `store` with `broker_key`, the system clock, and the listener's address as
    /// its public origin.
    pub fn new(store: Store, broker_key: BrokerSecretKey) -> Self {
        Self {
            store,
            broker_key,
            clock: Arc::new(SystemClock),
            public_origin: None,
            workspace_creation: None,
            metrics: crate::metrics::Metrics::new(),
            approval_timeout: crate::approvals::DEFAULT_TIMEOUT,
            serving_threads: None,
            upstream_roots: None,
            upstream_proxy: None,
            tls: None,
            journal_faults: None,
            device_rate_limit: Some(crate::rate_limit::DeviceRateLimit::DEFAULT),
        }
    }

    /// Holds calls that need an approval for at most `timeout` (zero: never hold them).
    pub fn with_approval_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.approval_timeout = timeout;
        self
    }

    /// Limits each enrolled device's signed requests to `limit` (a token bucket per device, in
    /// this process's memory) instead of [`crate::rate_limit::DeviceRateLimit::DEFAULT`];
    /// `None` lifts the limit.
    pub fn with_device_rate_limit(
        mut self,
        limit: Option<crate::rate_limit::DeviceRateLimit>,
    ) -> Self {
        self.device_rate_limit = limit;
        self
    }

    /// Serves requests on `threads` threads of their own, each running a single-threaded
    /// runtime that accepts from the one listener, instead of on the caller's runtime. A call is
    /// then handled, and its upstream connection driven, on one thread from start to end, with
    /// no hand-off between a multi-threaded runtime's workers (docs/benchmarks.md, "One runtime
    /// per core"). Background work (the audit writer, the approvals listener) stays on the
    /// caller's runtime, which [`crate::main_runtime`] builds to fit.
    pub fn with_serving_threads(mut self, threads: Option<std::num::NonZeroUsize>) -> Self {
        self.serving_threads = threads;
        self
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the public origin, e.g. `https://latchkey.example.com` behind a reverse proxy.
    pub fn with_public_origin(mut self, origin: impl Into<String>) -> Self {
        self.public_origin = Some(origin.into().trim_end_matches('/').to_owned());
        self
    }

    /// Answers workspace creations as `creation` says, instead of by the default for the
    /// listener's address (open on loopback, closed elsewhere).
    pub fn with_workspace_creation(mut self, creation: crate::creation::WorkspaceCreation) -> Self {
        self.workspace_creation = Some(creation);
        self
    }

    /// Trusts `roots` for upstream calls (APIs and token endpoints) in addition to the system's
    /// certificate authorities, for APIs behind a private CA.
    pub fn with_upstream_roots(mut self, roots: crate::tls::UpstreamRoots) -> Self {
        self.upstream_roots = Some(roots);
        self
    }

    /// Sends every upstream call (APIs and token endpoints) through the HTTP proxy at `proxy`:
    /// CONNECT tunnels for https upstreams, so the proxy sees host names and ciphertext only.
    pub fn with_upstream_proxy(mut self, proxy: crate::config::ProxyUrl) -> Self {
        self.upstream_proxy = Some(proxy);
        self
    }

    /// Serves the API over TLS with `tls` (HTTP/2 and HTTP/1.1). Without a public origin the
    /// broker's is then `https://` and the listener's address.
    pub fn with_tls(mut self, tls: crate::tls::ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Makes the audit journal's writes fail as `faults` says, to test the fail-closed paths.
    /// Not for production use.
    #[doc(hidden)]
    pub fn with_journal_faults(mut self, faults: crate::audit::JournalFaults) -> Self {
        self.journal_faults = Some(faults);
        self
    }

    /// Records metrics into `metrics` (pass a clone to [`crate::serve_metrics`] to expose them)
    /// instead of a private registry nobody reads.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }
}

/// Shared state of a running broker.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) broker_key: BrokerSecretKey,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) public_origin: String,
    /// Who may create workspaces.
    pub(crate) workspace_creation: crate::creation::WorkspaceCreation,
    /// Each workspace's Cedar policies, compiled and cached.
    pub(crate) policies: crate::policy::PolicyEngine,
    /// The audit log's writer.
    pub(crate) audit: crate::audit::AuditLog,
    /// The HTTP client for upstream APIs and token endpoints: never follows redirects.
    pub(crate) upstream: crate::upstream::UpstreamClient,
    /// Serialises OAuth refreshes per credential.
    pub(crate) refresh_locks: crate::proxy::RefreshLocks,
    /// Request and audit counters.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Held calls and the news about them.
    pub(crate) approvals: Arc<crate::approvals::Approvals>,
    /// How many refused requests each device had recorded this minute.
    pub(crate) refusals: crate::api::RefusalBudget,
    /// How many more signed requests each enrolled device may send now.
    pub(crate) device_budgets: crate::rate_limit::DeviceBudgets,
    /// The runtime [`crate::serve`] was called on, which outlives every request: work a request
    /// leaves behind (an abandoned approval's expiry) runs there, not on a serving thread's
    /// runtime that may stop first.
    pub(crate) background: tokio::runtime::Handle,
}

impl AppState {
    pub(crate) fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The broker's clock in Unix milliseconds.
    pub(crate) fn now_millis(&self) -> u64 {
        self.clock.now_millis()
    }
}

/// The state handle handlers receive.
pub(crate) type SharedState = Arc<AppState>;
