//! Upstream calls over TLS, end to end over loopback: an HTTPS upstream whose certificate a
//! private certificate authority issued is reached over HTTP/2 once the broker trusts that CA
//! (`--upstream-ca`); a certificate from an authority the broker does not trust, for another host
//! name, or expired, is refused in the handshake, before the request (and the credential in it)
//! is sent, with an answer that says which and what to do, and an audit record of the outcome.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

use crate::common;

use common::agent_calls::{
    CountingUpstream, agent_get, broker_public_key, create_agent, create_shared_credential,
    register_standing_grant, shared_capability,
};
use common::tls::{ServerCert, TestCa};
use common::tls_upstream::{ConnectProxy, TlsUpstream};
use common::{TestBroker, TestDevice, workspace_with_admin};
use latchkey_core::capability::Reuse;
use latchkey_core::ids::AgentId;
use latchkey_server::Broker;
use latchkey_server::config::ProxyUrl;
use latchkey_server::tls::UpstreamRoots;
use serde_json::Value;

const SECRET: &str = "ghp_tlsCANARYsecret0123456789";

/// A broker that trusts `ca` for upstream calls, and in one workspace an admin and an agent.
struct World {
    broker: TestBroker,
    admin: TestDevice,
    agent: AgentId,
    token: String,
}

async fn world(ca: &TestCa) -> World {
    world_through(ca, None).await
}

/// [`world`] with every upstream call going through the HTTP proxy at `proxy`.
async fn world_through(ca: &TestCa, proxy: Option<&str>) -> World {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
    let roots = UpstreamRoots::from_pem(ca.pem().as_bytes()).expect("the CA's PEM is accepted");
    let key = latchkey_core::keys::BrokerSecretKey::generate().expect("broker key");
    let proxy: Option<ProxyUrl> = proxy.map(|url| url.parse().expect("proxy URL"));
    let broker = TestBroker::start_with(|store, clock, _| {
        let broker = Broker::new(store, key).with_clock(clock).with_upstream_roots(roots);
        match proxy {
            Some(proxy) => broker.with_upstream_proxy(proxy),
            None => broker,
        }
    })
    .await;
    let admin = workspace_with_admin(&broker).await;
    let (agent, token) = create_agent(&broker, &admin, "tls-bot").await;
    World { broker, admin, agent, token }
}

impl World {
    /// Registers a credential named `name` for the upstream at `base`, with a standing grant to
    /// the agent; returns a standing capability for it.
    async fn credential(&self, name: &str, base: &str) -> String {
        let credential =
            create_shared_credential(&self.broker, &self.admin, name, base, SECRET).await;
        let grant =
            register_standing_grant(&self.broker, &self.admin, self.agent, credential).await;
        let key = broker_public_key(&self.broker).await;
        let now = latchkey_server::clock::Clock::now(&*self.broker.clock);
        shared_capability(&self.admin, &key, self.agent, credential, Reuse::Standing { grant }, now)
    }

    /// Serves `cert` on a new upstream, registers a credential named `name` for it at `host`
    /// (`localhost` or `127.0.0.1`), and makes the agent's call with a standing capability.
    async fn call(&self, name: &str, host: &str, cert: ServerCert) -> (TlsUpstream, u16, Value) {
        let (upstream, port) = TlsUpstream::start(cert).await;
        let capability = self.credential(name, &format!("https://{host}:{port}")).await;
        let response = agent_get(&self.broker, &self.token, name, "/user", &capability)
            .send()
            .await
            .expect("the broker answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        assert!(!text.contains(SECRET), "the credential never reaches the agent: {text}");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (upstream, status, body)
    }

    /// The `proxy_outcome` record of the call to the credential named `name`, once written.
    async fn outcome(&self, name: &str) -> Value {
        for _ in 0..100 {
            let (status, body) = TestBroker::send(self.broker.signed(
                &self.admin,
                "GET",
                "/v1/audit?kind=proxy_outcome&order=oldest_first&limit=100",
                None,
            ))
            .await;
            assert_eq!(status, 200, "audit query: {body}");
            let found = body["records"].as_array().and_then(|records| {
                records.iter().find(|r| r["record"]["credential_name"] == name).cloned()
            });
            if let Some(record) = found {
                return record["record"].clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("no proxy_outcome record for {name}")
    }
}

#[tokio::test]
async fn an_upstream_under_a_trusted_private_ca_gets_the_credential_over_http2() {
    let ca = TestCa::new("Latchkey Test Private CA");
    let w = world(&ca).await;
    let (upstream, status, body) =
        w.call("internal-api", "localhost", ca.issue(&["localhost"], None)).await;
    assert_eq!(status, 200, "a certificate from a CA given to --upstream-ca is accepted: {body}");
    assert_eq!(body, serde_json::json!({"ok": true}), "the upstream's answer comes back");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "one request reached the upstream: {seen:?}");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {SECRET}").as_str()),
        "the upstream receives the real credential"
    );
    assert_eq!(seen[0].path, "/user");
    assert_eq!(
        seen[0].version,
        hyper::Version::HTTP_2,
        "the broker negotiates HTTP/2 by ALPN when the upstream offers it"
    );
    let outcome = w.outcome("internal-api").await;
    assert_eq!(outcome["upstream_status"], 200, "the outcome is audited: {outcome}");

    // An IP address in the certificate's names serves a base URL with that address.
    let (upstream, status, body) =
        w.call("by-address", "127.0.0.1", ca.issue(&["127.0.0.1"], None)).await;
    assert_eq!(status, 200, "an IP address SAN matches an IP base URL: {body}");
    assert_eq!(upstream.seen().len(), 1);
    w.broker.stop().await;
}

#[tokio::test]
async fn a_certificate_the_broker_refuses_stops_the_call_before_the_credential_is_sent() {
    let trusted = TestCa::new("Latchkey Test Private CA");
    let stranger = TestCa::new("Someone Else's CA");
    let w = world(&trusted).await;
    let cases = [
        (
            "untrusted-issuer",
            stranger.issue(&["localhost"], None),
            "issued by an authority that is not trusted here",
        ),
        ("wrong-host", trusted.issue(&["api.example.com"], None), "not valid for this host name"),
        ("expired", trusted.issue(&["localhost"], Some((2021, 1, 1))), "expired"),
    ];
    for (name, cert, reason) in cases {
        let (upstream, status, body) = w.call(name, "localhost", cert).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (502, Some("upstream_failed")),
            "{name}: a refused certificate fails the call: {body}"
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(reason) && message.contains("--upstream-ca"),
            "{name}: the answer names the problem ({reason}) and the fix, not a retry: {message}"
        );
        assert!(
            upstream.seen().is_empty(),
            "{name}: no request, so no credential, may reach an upstream whose certificate was refused"
        );
        assert!(
            !upstream.handshakes_failed().is_empty(),
            "{name}: the broker reached the upstream and refused it in the TLS handshake"
        );
        let outcome = w.outcome(name).await;
        assert_eq!(
            (outcome["reason_code"].as_str(), outcome.get("upstream_status")),
            (Some("upstream_failed"), None),
            "{name}: the failed call is audited without an upstream status: {outcome}"
        );
    }

    // The broker goes on serving: a good upstream still works after the refusals.
    let (_, status, body) = w.call("good", "localhost", trusted.issue(&["localhost"], None)).await;
    assert_eq!(status, 200, "{body}");
    w.broker.stop().await;
}

#[tokio::test]
async fn without_the_private_ca_its_upstream_is_refused_as_an_unknown_issuer() {
    // The system's trust store does not know a private CA: a broker started without
    // --upstream-ca refuses it (the roots given to a broker are added, never the only ones, so
    // this also shows a public-CA broker is not opened up by a test CA elsewhere).
    let private = TestCa::new("Latchkey Test Private CA");
    let w = world(&TestCa::new("An unrelated CA")).await;
    let (upstream, status, body) =
        w.call("internal-api", "localhost", private.issue(&["localhost"], None)).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("not trusted here"), "{body}");
    assert!(upstream.seen().is_empty());
    w.broker.stop().await;
}

#[tokio::test]
async fn a_server_that_does_not_speak_tls_fails_the_handshake_with_its_own_message() {
    let ca = TestCa::new("Latchkey Test Private CA");
    let w = world(&ca).await;
    // A plain HTTP server behind an https:// base URL (a wrong port in the credential).
    let (plain, base) = CountingUpstream::start().await;
    let capability = w.credential("plain", &base.replace("http://", "https://")).await;
    let (status, body) =
        TestBroker::send(agent_get(&w.broker, &w.token, "plain", "/user", &capability)).await;
    assert_eq!((status, body["code"].as_str()), (502, Some("upstream_failed")), "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("TLS handshake") && message.contains("base URL"),
        "the answer says the handshake failed and where to look: {message}"
    );
    assert_eq!(plain.hits(), 0, "nothing the server could take for a request was sent");
    w.broker.stop().await;
}

#[tokio::test]
async fn through_an_egress_proxy_the_proxy_sees_the_host_and_ciphertext_only() {
    let ca = TestCa::new("Latchkey Test Private CA");
    let (proxy, proxy_url) = ConnectProxy::start().await;
    let w = world_through(&ca, Some(&proxy_url)).await;
    let (upstream, status, body) =
        w.call("internal-api", "localhost", ca.issue(&["localhost"], None)).await;
    assert_eq!(status, 200, "the call goes through the proxy's tunnel: {body}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {SECRET}").as_str()));
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1, "one tunnel: {requests:?}");
    assert!(
        requests[0].starts_with("CONNECT localhost:"),
        "the proxy is asked for a tunnel to the upstream's host: {requests:?}"
    );
    let relayed = proxy.relayed();
    assert!(!relayed.is_empty(), "the call's bytes crossed the proxy");
    assert!(
        !relayed.windows(SECRET.len()).any(|w| w == SECRET.as_bytes())
            && !relayed.windows(5).any(|w| w == b"/user"),
        "inside the tunnel the credential and the path are TLS ciphertext"
    );
    w.broker.stop().await;
}

#[tokio::test]
async fn a_proxy_password_in_the_proxy_url_authenticates_the_tunnel_and_goes_no_further() {
    let ca = TestCa::new("Latchkey Test Private CA");
    let (proxy, proxy_url) = ConnectProxy::start().await;
    let password = "proxyCANARYpass";
    let with_password = proxy_url.replace("http://", &format!("http://egress:{password}@"));
    let w = world_through(&ca, Some(&with_password)).await;
    let (upstream, status, body) =
        w.call("internal-api", "localhost", ca.issue(&["localhost"], None)).await;
    assert_eq!(status, 200, "the authenticated tunnel carries the call: {body}");
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "one tunnel: {heads:?}");
    let authorization = heads[0].lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization").then(|| value.trim().to_owned())
    });
    assert_eq!(
        authorization.as_deref(),
        // base64("egress:proxyCANARYpass")
        Some("Basic ZWdyZXNzOnByb3h5Q0FOQVJZcGFzcw=="),
        "the CONNECT request carries the URL's user and password as Basic credentials: {heads:?}"
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        !format!("{seen:?}").contains(password) && !body.to_string().contains(password),
        "the proxy's password reaches neither the upstream nor the agent"
    );
    w.broker.stop().await;
}

#[tokio::test]
async fn an_https_proxy_is_reached_over_verified_tls_and_the_upstreams_tls_runs_inside() {
    let ca = TestCa::new("Latchkey Test Private CA");
    let (proxy, proxy_url) = ConnectProxy::start_tls(ca.issue(&["localhost"], None)).await;
    assert!(proxy_url.starts_with("https://localhost:"), "{proxy_url}");
    let w = world_through(&ca, Some(&proxy_url)).await;
    let (upstream, status, body) =
        w.call("internal-api", "localhost", ca.issue(&["localhost"], None)).await;
    assert_eq!(status, 200, "the call goes through the TLS proxy's tunnel: {body}");
    assert_eq!(upstream.seen().len(), 1, "the upstream got the call");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1, "the proxy read one CONNECT over its own TLS: {requests:?}");
    assert!(requests[0].starts_with("CONNECT localhost:"), "{requests:?}");
    let relayed = proxy.relayed();
    assert!(
        !relayed.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "even the proxy that terminates its own TLS sees only the upstream's ciphertext"
    );
    w.broker.stop().await;

    // A proxy whose certificate the broker does not trust is never sent the CONNECT.
    let stranger = TestCa::new("Some Other CA");
    let (untrusted, untrusted_url) =
        ConnectProxy::start_tls(stranger.issue(&["localhost"], None)).await;
    let w = world_through(&ca, Some(&untrusted_url)).await;
    let (upstream, status, body) =
        w.call("internal-api", "localhost", ca.issue(&["localhost"], None)).await;
    assert_eq!(status, 502, "an unverified proxy stops the call: {body}");
    assert_eq!(body["code"], "upstream_failed", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("the broker's egress proxy presented")
            && message.contains("not trusted here")
            && message.contains("--upstream-ca"),
        "the message blames the proxy, not the upstream, and says what to do: {message}"
    );
    assert!(untrusted.requests().is_empty(), "nothing was asked of an unverified proxy");
    assert!(upstream.seen().is_empty(), "and nothing reached the upstream");
    w.broker.stop().await;
}
