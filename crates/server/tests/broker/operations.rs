//! The broker's operational surface: Prometheus metrics on their own listener, the OpenAPI
//! document (served, and committed as docs/openapi.json), and the request log.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

use crate::common;

use common::{LogCapture, TestBroker, sample, scrape, workspace_with_admin};
use latchkey_core::keys::BrokerSecretKey;
use latchkey_server::{Broker, Metrics};
use serde_json::{Value, json};

/// A broker whose metrics are served on a second loopback listener.
async fn broker_with_metrics() -> (TestBroker, String) {
    let metrics = Metrics::new();
    let scrape = common::serve_metrics(metrics.clone()).await;
    let broker = TestBroker::start_with(|store, clock, _| {
        Broker::new(store, BrokerSecretKey::generate().expect("broker key"))
            .with_clock(clock)
            .with_metrics(metrics)
    })
    .await;
    (broker, scrape)
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_and_never_on_the_api_port() {
    let (broker, metrics) = broker_with_metrics().await;
    let (status, body) = TestBroker::send(broker.http.get(broker.url("/metrics"))).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "no metrics on the API");

    let text = scrape(&metrics).await;
    assert!(
        text.contains(&format!(
            "latchkey_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "build info: {text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "a complete OpenMetrics exposition");
    let other = reqwest::get(format!("{metrics}/healthz")).await.unwrap();
    assert_eq!(other.status(), 404, "the metrics listener serves only /metrics");
    broker.stop().await;
}

#[tokio::test]
async fn device_and_proxy_requests_are_counted_by_code_without_ids_in_any_label() {
    let (broker, metrics) = broker_with_metrics().await;
    let before = scrape(&metrics).await;
    assert_eq!(sample(&before, "latchkey_device_requests_total{code=\"ok\"}"), 0.0);

    let admin = workspace_with_admin(&broker).await;
    let (status, agent) = TestBroker::send(broker.signed(
        &admin,
        "POST",
        "/v1/agents",
        Some(&json!({"name": "ci-bot"})),
    ))
    .await;
    assert_eq!(status, 201, "{agent}");
    // The same signed request twice: the second is a replay.
    let me = broker.signed(&admin, "GET", "/v1/me", None);
    let again = me.try_clone().expect("clonable request");
    assert_eq!(TestBroker::send(me).await.0, 200);
    assert_eq!(TestBroker::send(again).await.0, 401, "a replay is refused");
    let (status, _) = TestBroker::send(broker.http.get(broker.url("/v1/me"))).await;
    assert_eq!(status, 401, "an unsigned device request is refused");
    // Agent calls: an unknown token, and a known one without a capability.
    let (status, _) = TestBroker::send(
        broker.http.get(broker.url("/p/github/user")).bearer_auth("lk_not_a_real_token"),
    )
    .await;
    assert_eq!(status, 401);
    let token = agent["token"].as_str().expect("token");
    let (status, body) =
        TestBroker::send(broker.http.get(broker.url("/p/github/user")).bearer_auth(token)).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "no such credential");
    // Public endpoints are not device requests.
    assert_eq!(TestBroker::send(broker.http.get(broker.url("/healthz"))).await.0, 200);

    let text = scrape(&metrics).await;
    let count = |series: &str| sample(&text, series);
    assert_eq!(
        count("latchkey_device_requests_total{code=\"ok\"}"),
        3.0,
        "workspace creation, agent creation, /v1/me: {text}"
    );
    assert_eq!(count("latchkey_device_requests_total{code=\"replayed_request\"}"), 1.0, "{text}");
    assert_eq!(count("latchkey_device_requests_total{code=\"signature_invalid\"}"), 1.0, "{text}");
    assert_eq!(
        count("latchkey_proxy_requests_total{decision=\"denied\",code=\"unknown_token\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        count("latchkey_proxy_requests_total{decision=\"denied\",code=\"not_found\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        count("latchkey_proxy_requests_total{decision=\"allowed\",code=\"ok\"}"),
        0.0,
        "nothing was forwarded"
    );
    assert_eq!(count("latchkey_proxy_upstream_seconds_count"), 0.0, "no upstream was called");
    assert!(
        count("latchkey_audit_appends_total") >= 1.0
            && count("latchkey_audit_transactions_total") >= 1.0,
        "the agent's creation was audited: {text}"
    );
    assert_eq!(count("latchkey_audit_failures_total"), 0.0, "{text}");
    assert!(
        count("latchkey_audit_commit_seconds_total") > 0.0,
        "the audit transactions' time is measured: {text}"
    );
    assert_eq!(
        (
            count("latchkey_proxy_checks_seconds_count"),
            count("latchkey_proxy_audit_wait_seconds_count")
        ),
        (0.0, 0.0),
        "refused calls reach neither the decision's end nor the audit wait: {text}"
    );

    // No label carries an id, a token, a name or a path.
    for needle in [
        admin.workspace.to_string(),
        admin.id.to_string(),
        agent["id"].as_str().unwrap().to_owned(),
        token.to_owned(),
        "github".to_owned(),
        "/user".to_owned(),
        "/v1/".to_owned(),
    ] {
        assert!(!text.contains(&needle), "the metrics must not contain {needle:?}:\n{text}");
    }
    broker.stop().await;
}

#[tokio::test]
async fn the_openapi_document_is_served_and_the_committed_copy_is_current() {
    let broker = TestBroker::start().await;
    let response = broker.http.get(broker.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served = response.text().await.unwrap();
    let document: Value = serde_json::from_str(&served).expect("the document is JSON");
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{document}");
    broker.stop().await;

    let committed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let expected = format!("{served}\n");
    if std::env::var_os("LATCHKEY_UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed, &expected).expect("write docs/openapi.json");
        return;
    }
    let current = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        current == expected,
        "docs/openapi.json is stale: the API changed. Regenerate it with\n    \
         LATCHKEY_UPDATE_OPENAPI=1 cargo test -p latchkey-server --test broker \
         operations::the_openapi_document_is_served_and_the_committed_copy_is_current\nand \
         commit the result."
    );
}

/// One operation of the OpenAPI document.
struct Operation<'a> {
    /// Its path template, such as `/v1/agents/{id}`.
    path: &'a str,
    /// The template with its parameters filled in, to send a request to.
    concrete: String,
    /// Its method, lower case as the document spells it.
    method: &'a str,
    operation: &'a Value,
}

/// Every operation `document` describes.
fn operations_of(document: &Value) -> Vec<Operation<'_>> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        let concrete = path
            .replace("{id}", "0190a5b2-7c4e-7d1a-9a41-5b3f2e8c6d10")
            .replace("{credential}", "github")
            .replace("{path}", "user");
        for (method, operation) in item.as_object().expect("path item") {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                let concrete = concrete.clone();
                operations.push(Operation { path, concrete, method, operation });
            }
        }
    }
    operations
}

/// Whether the operation takes a device's signature.
fn is_signed(operation: &Value) -> bool {
    operation["security"]
        .as_array()
        .is_some_and(|s| s.iter().any(|r| r.get("device_signature").is_some()))
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_documents_its_errors() {
    let broker = TestBroker::start().await;
    let (_, document) = TestBroker::send(broker.http.get(broker.url("/openapi.json"))).await;
    let mut operations = 0;
    let mut ids = std::collections::HashSet::new();
    for Operation { path, concrete, method, operation } in operations_of(&document) {
        operations += 1;
        assert!(
            operation["operationId"].is_string() && operation["summary"].is_string(),
            "{method} {path} has an id and a summary"
        );
        assert!(
            ids.insert(operation["operationId"].to_string()),
            "{method} {path}: operation ids are unique"
        );
        let signed = is_signed(operation);
        if signed {
            assert!(
                operation["responses"]["401"].is_object(),
                "{method} {path} documents the signature errors"
            );
        }
        let response = broker
            .http
            .request(method.to_uppercase().parse().unwrap(), broker.url(&concrete))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("no such endpoint") && !body.contains("does not accept that method"),
            "{method} {path} is documented but not routed: {status} {body}"
        );
        if signed {
            assert_eq!(status, 401, "{method} {path} without a signature: {body}");
        }
    }
    assert!(operations >= 35, "every area is documented ({operations} operations)");
    broker.stop().await;
}

#[tokio::test]
async fn every_signed_operation_refuses_a_malformed_body_with_a_specific_error_and_changes_nothing()
{
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let listings = ["/v1/members", "/v1/agents", "/v1/credentials", "/v1/policies", "/v1/invites"];
    let mut before = Vec::new();
    for path in listings {
        before.push(TestBroker::send(broker.signed(&admin, "GET", path, None)).await);
    }
    let (_, document) = TestBroker::send(broker.http.get(broker.url("/openapi.json"))).await;
    // Bodies no endpoint accepts whatever its fields: not JSON, cut short, not UTF-8, a JSON
    // value that is not an object, nesting past the parser's depth limit. An object is left
    // out: one of unknown fields is a valid body for an endpoint whose fields are all optional.
    let deep = format!("{}{}", "[".repeat(4096), "]".repeat(4096));
    let bodies: [(&[u8], &str); 7] = [
        (b"not json", "not JSON"),
        (b"{\"name\": \"acme\", ", "cut short"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"42", "a number"),
        (b"\"lkcanary-body-value\"", "a string"),
        (b"true", "a boolean"),
        (deep.as_bytes(), "nested 4096 deep"),
    ];
    let mut checked = 0;
    for Operation { path, concrete, method, operation } in operations_of(&document) {
        if !is_signed(operation) || !operation["requestBody"].is_object() {
            continue;
        }
        checked += 1;
        let method = method.to_uppercase();
        for (body, what) in bodies {
            let request = broker.signed_bytes(&admin, &method, &concrete, body);
            let (status, response) = TestBroker::send(request).await;
            assert_eq!(
                (status, response["code"].as_str()),
                (400, Some("bad_request")),
                "{method} {path} with a body {what} is refused as malformed: {response}"
            );
            let message = response["message"].as_str().unwrap_or_default();
            assert!(
                message.starts_with("invalid JSON body"),
                "{method} {path} says what is wrong with a body {what}: {message}"
            );
            assert!(
                !message.contains("lkcanary"),
                "{method} {path} never echoes what was sent: {message}"
            );
        }
    }
    assert!(checked >= 16, "every operation with a body is covered ({checked})");
    for (path, earlier) in listings.into_iter().zip(before) {
        let now = TestBroker::send(broker.signed(&admin, "GET", path, None)).await;
        assert_eq!(now, earlier, "{path}: the refused bodies changed nothing");
    }
    let (status, me) = TestBroker::send(broker.signed(&admin, "GET", "/v1/me", None)).await;
    assert_eq!(status, 200, "the broker and the device keep working: {me}");
    broker.stop().await;
}

#[tokio::test]
async fn an_unknown_endpoint_points_to_the_openapi_document() {
    let broker = TestBroker::start().await;
    let (status, body) = TestBroker::send(broker.http.get(broker.url("/v2/nothing"))).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert!(body["message"].as_str().unwrap().contains("/openapi.json"), "{body}");
    broker.stop().await;
}

#[tokio::test]
async fn each_request_is_logged_with_its_route_template_never_its_path_query_or_headers() {
    let logs = LogCapture::default();
    // This test's runtime is single-threaded, so the broker's tasks log through this capture.
    let _guard = logs.install();
    let broker = TestBroker::start_with(|store, clock, _| {
        Broker::new(store, BrokerSecretKey::generate().expect("broker key")).with_clock(clock)
    })
    .await;
    let admin = workspace_with_admin(&broker).await;
    let secret_query = "api_key=sk-QUERYsecret000";
    let (status, _) = TestBroker::send(
        broker
            .http
            .get(broker.url(&format!("/p/github/repos/acme/private-repo?{secret_query}")))
            .bearer_auth("lk_HEADERsecret0000")
            .header("x-custom", "HEADERvalue0000"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) =
        TestBroker::send(broker.http.get(broker.url("/v2/UNROUTEDpath?token=QUERYsecret111")))
            .await;
    assert_eq!(status, 404);
    let device_path = format!("/v1/devices/{}", admin.id);
    assert_eq!(TestBroker::send(broker.signed(&admin, "GET", &device_path, None)).await.0, 200);
    broker.stop().await;

    let text = logs.text();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "latchkey_server::request")
        .collect();
    let find = |route: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["route"] == route)
            .unwrap_or_else(|| panic!("a request line for {route} in:\n{text}"))
    };
    let proxied = find("/p/{*rest}");
    assert_eq!(proxied["level"], "INFO");
    assert_eq!(proxied["fields"]["method"], "GET");
    assert_eq!(proxied["fields"]["status"], 401);
    assert_eq!(proxied["fields"]["code"], "unknown_token");
    assert!(proxied["fields"]["latency_ms"].is_u64(), "{proxied}");
    let device = find("/v1/devices/{id}");
    assert_eq!(
        (device["fields"]["status"].as_u64(), device["fields"]["code"].as_str()),
        (Some(200), Some("ok"))
    );
    find("/v1/workspaces");
    assert_eq!(find("(no route)")["fields"]["code"], "not_found");

    for needle in
        ["private-repo", "UNROUTEDpath", "QUERYsecret", "HEADERsecret", "HEADERvalue", "signature="]
    {
        assert!(!text.contains(needle), "the log must not contain {needle:?}:\n{text}");
    }
    let request_lines = lines.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
    assert!(
        !request_lines.contains(&admin.id.to_string()),
        "request lines name the route template, not the id in the path:\n{request_lines}"
    );
}

#[tokio::test]
async fn an_approval_stream_ends_when_its_device_goes_away() {
    let (broker, metrics) = broker_with_metrics().await;
    let admin = workspace_with_admin(&broker).await;
    // A member with no agents: no approval signal is ever one this device may see, so only
    // noticing the device went away can end its stream.
    let member = common::insert_member(&broker, &admin, "member").await;
    let streams = |text: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix("latchkey_approval_streams "))
            .and_then(|n| n.trim().parse().ok())
    };
    assert_eq!(streams(&scrape(&metrics).await), Some(0), "none open at the start");
    let stream = common::ApprovalStream::open(&broker, &member).await;
    assert_eq!(streams(&scrape(&metrics).await), Some(1), "the member's stream is open");
    drop(stream);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let open = streams(&scrape(&metrics).await);
        if open == Some(0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a stream whose device went away must end, not wait for a signal: {open:?} open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    broker.stop().await;
}
