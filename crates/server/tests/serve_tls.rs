//! The broker serving its API over TLS itself (`--tls-cert`, `--tls-key`): HTTP/2 and HTTP/1.1 by
//! ALPN, device signatures verified against its `https://` origin, agent calls proxied as over
//! plain HTTP, and a listener that a silent or plain-HTTP client cannot hold up.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

mod common;

use std::time::Duration;

use common::TestBroker;
use common::agent_calls::{
    CountingUpstream, agent_get, broker_public_key, create_agent, create_shared_credential,
    register_standing_grant, shared_capability,
};
use latchkey_core::capability::Reuse;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test]
async fn the_api_is_served_over_tls_and_devices_and_agents_use_it_as_over_http() {
    let (broker, ca) = TestBroker::start_tls().await;
    assert!(broker.base.starts_with("https://127.0.0.1:"), "{}", broker.base);
    let health = broker.http.get(broker.url("/healthz")).send().await.expect("https");
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), reqwest::Version::HTTP_2, "HTTP/2 is offered by ALPN");
    let ca_cert = reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap();
    let http1 = reqwest::Client::builder().tls_certs_only([ca_cert]).http1_only().build().unwrap();
    let health = http1.get(broker.url("/healthz")).send().await.expect("https over HTTP/1.1");
    assert_eq!((health.status().as_u16(), health.version()), (200, reqwest::Version::HTTP_11));

    // Devices sign the https:// origin, which the broker takes as its own under TLS.
    let admin = common::workspace_with_admin(&broker).await;
    let (agent, token) = create_agent(&broker, &admin, "tls-bot").await;
    let (upstream, base) = CountingUpstream::start().await;
    let credential =
        create_shared_credential(&broker, &admin, "github", &base, "ghp_servedOverTLS0").await;
    let grant = register_standing_grant(&broker, &admin, agent, credential).await;
    let key = broker_public_key(&broker).await;
    let now = latchkey_server::clock::Clock::now(&*broker.clock);
    let capability =
        shared_capability(&admin, &key, agent, credential, Reuse::Standing { grant }, now);
    let (status, body) =
        TestBroker::send(agent_get(&broker, &token, "github", "/user", &capability)).await;
    assert_eq!(status, 200, "an agent's call goes through the TLS listener: {body}");
    assert_eq!(upstream.hits(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn a_silent_or_plain_http_client_does_not_hold_up_the_tls_listener() {
    let (broker, _ca) = TestBroker::start_tls().await;
    let addr = broker.base.trim_start_matches("https://").to_owned();
    // Connected and silent: its handshake waits in its own task.
    let _silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Plain HTTP on the TLS port: refused in the handshake, the connection closed.
    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the broker closes a connection that does not speak TLS");
    assert!(
        !String::from_utf8_lossy(&answer).contains("200"),
        "nothing is served without TLS: {answer:?}"
    );
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        broker.http.get(broker.url("/healthz")).send(),
    )
    .await
    .expect("a TLS client is served while another sits silent")
    .expect("https");
    assert_eq!(health.status(), 200);
    broker.stop().await;
}
