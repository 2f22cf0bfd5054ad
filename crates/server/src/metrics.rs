//! Prometheus metrics, served on their own listener ([`serve_metrics`]), never on the API port.
//!
//! Names and labels are stable and documented in `docs/operations.md`. Every label value comes
//! from a small fixed set (an error code, `ok`, a decision): no label ever carries a token, a
//! credential or its name, a path or an id, so the metrics can neither leak a secret nor grow
//! without bound.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `latchkey_proxy_requests_total` | counter | `decision` (`allowed`, `denied`), `code` (an error code or `ok`) |
//! | `latchkey_proxy_upstream_seconds` | histogram | |
//! | `latchkey_proxy_checks_seconds` | histogram | |
//! | `latchkey_proxy_audit_wait_seconds` | histogram | |
//! | `latchkey_device_requests_total` | counter | `code` (an error code or `ok`) |
//! | `latchkey_audit_appends_total` | counter | |
//! | `latchkey_audit_transactions_total` | counter | |
//! | `latchkey_audit_failures_total` | counter | |
//! | `latchkey_audit_commit_seconds_total` | counter | |
//! | `latchkey_build_info` | info | `version` |

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;

use crate::ServerError;
use crate::audit::AuditLog;
use crate::error::ErrorCode;

/// Content type of the exposition (OpenMetrics text, which Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The broker's metrics: cheap to clone, shared by the broker that records them and the listener
/// that serves them.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    proxy_requests: Family<ProxyLabels, Counter>,
    proxy_upstream: Histogram,
    proxy_checks: Histogram,
    proxy_audit_wait: Histogram,
    device_requests: Family<CodeLabels, Counter>,
    tls_handshakes: Family<HandshakeLabels, Counter>,
    approval_streams: Gauge,
    audit: Arc<AuditCollector>,
}

/// One open approval event stream, counted in `latchkey_approval_streams` until dropped.
#[derive(Debug)]
pub(crate) struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    result: &'static str,
}

/// How a TLS handshake on the API listener ended, for `latchkey_tls_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// Completed; the connection is served.
    Completed,
    /// Refused or broken off (not TLS, no common protocol, a client that rejects the
    /// certificate).
    Failed,
    /// Not completed within the limit.
    TimedOut,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabels {
    decision: &'static str,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// How a proxied call ended, for `latchkey_proxy_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyDecision {
    /// Every check passed and the call was forwarded (it may still have failed upstream).
    Allowed,
    /// A check refused the call; nothing was decrypted or forwarded.
    Denied,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let proxy_requests = Family::<ProxyLabels, Counter>::default();
        registry.register(
            "latchkey_proxy_requests",
            "Agent calls to the proxy, by decision and by error code (ok when the call was forwarded and answered)",
            proxy_requests.clone(),
        );
        // 5 ms to about 20 s.
        let proxy_upstream = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        registry.register_with_unit(
            "latchkey_proxy_upstream",
            "Time from opening a capability to the upstream's response headers (an OAuth refresh included)",
            Unit::Seconds,
            proxy_upstream.clone(),
        );
        // The broker's own share of a call, 10 us to about 1.3 s.
        let proxy_checks = Histogram::new(exponential_buckets(0.000_01, 2.0, 18));
        registry.register_with_unit(
            "latchkey_proxy_checks",
            "Time from receiving an agent call to the decision to forward it (token, credential, host, capability, policy); refused calls and calls held for an approval are not counted",
            Unit::Seconds,
            proxy_checks.clone(),
        );
        let proxy_audit_wait = Histogram::new(exponential_buckets(0.000_01, 2.0, 18));
        registry.register_with_unit(
            "latchkey_proxy_audit_wait",
            "Time an allowed call waited for its attempt record to commit, before anything was decrypted",
            Unit::Seconds,
            proxy_audit_wait.clone(),
        );
        let device_requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "latchkey_device_requests",
            "Signed device requests, by error code of the answer (ok for success)",
            device_requests.clone(),
        );
        let tls_handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "latchkey_tls_handshakes",
            "TLS handshakes on the API listener (with --tls-cert), by result: completed, failed (not TLS, no common protocol, the client refused the certificate) or timed_out",
            tls_handshakes.clone(),
        );
        let approval_streams = Gauge::default();
        registry.register(
            "latchkey_approval_streams",
            "Devices' approval event streams open now",
            approval_streams.clone(),
        );
        let audit = Arc::new(AuditCollector::default());
        registry.register_collector(Box::new(Arc::clone(&audit)));
        registry.register(
            "latchkey_build",
            "The broker's version",
            Info::new(VersionLabels { version: env!("CARGO_PKG_VERSION") }),
        );
        // The success series exist from the start, so a dashboard's rate is 0 rather than absent
        // on an idle broker. Other series appear with their first occurrence.
        let ok = "ok".to_owned();
        proxy_requests
            .get_or_create(&ProxyLabels { decision: "allowed", code: ok.clone() })
            .inc_by(0);
        device_requests.get_or_create(&CodeLabels { code: ok }).inc_by(0);
        Self {
            inner: Arc::new(Inner {
                registry,
                proxy_requests,
                proxy_upstream,
                proxy_checks,
                proxy_audit_wait,
                device_requests,
                tls_handshakes,
                approval_streams,
                audit,
            }),
        }
    }

    /// The exposition text, as `GET /metrics` serves it.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // INVARIANT: encoding into a String cannot fail (fmt::Write for String is infallible);
        // the only errors come from a collector, and ours write through the same encoder.
        if let Err(error) =
            prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)
        {
            tracing::error!(%error, "could not encode the metrics");
        }
        text
    }

    /// Counts one proxied call.
    pub(crate) fn proxy_request(&self, decision: ProxyDecision, code: Option<ErrorCode>) {
        let decision = match decision {
            ProxyDecision::Allowed => "allowed",
            ProxyDecision::Denied => "denied",
        };
        let labels = ProxyLabels {
            decision,
            code: code.map_or_else(|| "ok".to_owned(), ErrorCode::spelling),
        };
        self.inner.proxy_requests.get_or_create(&labels).inc();
    }

    /// Records how long the upstream took to answer.
    pub(crate) fn upstream_time(&self, elapsed: Duration) {
        self.inner.proxy_upstream.observe(elapsed.as_secs_f64());
    }

    /// Records how long a call's checks took, up to its decision.
    pub(crate) fn checks_time(&self, elapsed: Duration) {
        self.inner.proxy_checks.observe(elapsed.as_secs_f64());
    }

    /// Records how long an allowed call waited for its attempt record.
    pub(crate) fn audit_wait(&self, elapsed: Duration) {
        self.inner.proxy_audit_wait.observe(elapsed.as_secs_f64());
    }

    /// Counts an approval event stream as open until the returned guard is dropped.
    pub(crate) fn approval_stream(&self) -> OpenStream {
        self.inner.approval_streams.inc();
        OpenStream(self.inner.approval_streams.clone())
    }

    /// Counts one signed device request by the code of its answer.
    pub(crate) fn device_request(&self, code: Option<ErrorCode>) {
        let labels = CodeLabels { code: code.map_or_else(|| "ok".to_owned(), ErrorCode::spelling) };
        self.inner.device_requests.get_or_create(&labels).inc();
    }

    /// Counts one TLS handshake on the API listener.
    pub(crate) fn tls_handshake(&self, result: Handshake) {
        let result = match result {
            Handshake::Completed => "completed",
            Handshake::Failed => "failed",
            Handshake::TimedOut => "timed_out",
        };
        self.inner.tls_handshakes.get_or_create(&HandshakeLabels { result }).inc();
    }

    /// Reports `audit`'s counters from now on (replacing any earlier log's).
    pub(crate) fn observe_audit(&self, audit: &AuditLog) {
        *self.inner.audit.log.lock().unwrap_or_else(PoisonError::into_inner) = Some(audit.clone());
    }
}

/// Reads the audit writer's counters at scrape time.
#[derive(Debug, Default)]
struct AuditCollector {
    log: Mutex<Option<AuditLog>>,
}

impl Collector for AuditCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(AuditLog::stats)
            .unwrap_or_default();
        let counters = [
            ("latchkey_audit_appends", "Audit records committed", stats.records),
            ("latchkey_audit_transactions", "Audit transactions committed", stats.transactions),
            (
                "latchkey_audit_failures",
                "Audit transactions that failed (each failed every append in it)",
                stats.failed_transactions,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let commit = ConstCounter::new(stats.commit_time.as_secs_f64());
        let metric = encoder.encode_descriptor(
            "latchkey_audit_commit",
            "Time spent in audit transactions, failed ones included",
            Some(&Unit::Seconds),
            commit.metric_type(),
        )?;
        commit.encode(metric)?;
        Ok(())
    }
}

/// Serves `GET /metrics` from `metrics` on `listener` until `shutdown` completes. Bind it to an
/// address only the monitoring system reaches; it is never served on the API listener.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = Router::new()
        .route("/metrics", get(exposition))
        .fallback(|| async { (StatusCode::NOT_FOUND, "only /metrics is served here\n") })
        .with_state(metrics);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

async fn exposition(State(metrics): State<Metrics>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_from_the_start_with_its_stable_name() {
        let metrics = Metrics::new();
        let text = metrics.render();
        for name in [
            "latchkey_proxy_requests_total{decision=\"allowed\",code=\"ok\"} 0",
            "latchkey_proxy_upstream_seconds_count 0",
            "latchkey_proxy_checks_seconds_count 0",
            "latchkey_proxy_audit_wait_seconds_count 0",
            "latchkey_device_requests_total{code=\"ok\"} 0",
            "latchkey_audit_appends_total 0",
            "latchkey_audit_transactions_total 0",
            "latchkey_audit_failures_total 0",
            "latchkey_audit_commit_seconds_total 0",
            "latchkey_build_info{version=\"",
        ] {
            assert!(text.contains(name), "missing {name:?} in:\n{text}");
        }
    }

    #[test]
    fn counters_carry_only_the_decision_and_the_code() {
        let metrics = Metrics::new();
        metrics.proxy_request(ProxyDecision::Denied, Some(ErrorCode::PolicyDenied));
        metrics.proxy_request(ProxyDecision::Allowed, None);
        metrics.proxy_request(ProxyDecision::Allowed, None);
        metrics.device_request(Some(ErrorCode::ReplayedRequest));
        let text = metrics.render();
        assert!(
            text.contains(
                "latchkey_proxy_requests_total{decision=\"denied\",code=\"policy_denied\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("latchkey_proxy_requests_total{decision=\"allowed\",code=\"ok\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("latchkey_device_requests_total{code=\"replayed_request\"} 1"),
            "{text}"
        );
    }
}
