//! The broker serving its API over TLS itself (`--tls-cert`, `--tls-key`): HTTP/2 and HTTP/1.1 by
//! ALPN, device signatures verified against its `https://` origin, agent calls proxied as over
//! plain HTTP, a listener that a silent or plain-HTTP client cannot hold up, and the binary
//! taking a renewed certificate on SIGHUP.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

use crate::common;

use std::time::Duration;

use common::TestBroker;
use common::agent_calls::{
    CountingUpstream, agent_get, broker_public_key, create_agent, create_shared_credential,
    register_standing_grant, shared_capability,
};
use common::process::BrokerProcess;
use latchkey_core::capability::Reuse;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test]
async fn the_api_is_served_over_tls_and_devices_and_agents_use_it_as_over_http() {
    for threads in [None, std::num::NonZeroUsize::new(2)] {
        api_served_over_tls(threads).await;
    }
}

/// One broker serving on `threads` (`None`: the test's runtime) over TLS: HTTP/2 and HTTP/1.1,
/// a device's signed requests and an agent's call.
async fn api_served_over_tls(threads: Option<std::num::NonZeroUsize>) {
    let (broker, ca) = TestBroker::start_tls_serving_on(threads).await;
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

/// The `latchkey-server` binary with TLS files in `dir`, and its metrics listener.
struct Binary {
    process: BrokerProcess,
    base: String,
    metrics: String,
}

impl Binary {
    fn start(dir: &std::path::Path) -> Self {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (port, metrics) = (free().port(), free());
        let path = |name: &str| dir.join(name).display().to_string();
        let process = BrokerProcess::start(
            &dir.join("data"),
            &[
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics-listen",
                &metrics.to_string(),
                "--tls-cert",
                &path("cert.pem"),
                "--tls-key",
                &path("key.pem"),
            ],
        );
        Self {
            process,
            base: format!("https://localhost:{port}"),
            metrics: format!("http://{metrics}/metrics"),
        }
    }

    /// The value of the `latchkey_tls_handshakes_total` series for `result`.
    async fn handshakes(&self, result: &str) -> f64 {
        let text = reqwest::get(&self.metrics).await.unwrap().text().await.unwrap();
        let series = format!("latchkey_tls_handshakes_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    /// GET /healthz on a new connection from a client that trusts `ca` alone.
    async fn health(&self, ca: &common::tls::TestCa) -> Result<u16, reqwest::Error> {
        let ca = reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap();
        let client = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
        client.get(format!("{}/healthz", self.base)).send().await.map(|r| r.status().as_u16())
    }
}

#[tokio::test]
async fn the_binary_takes_a_renewed_certificate_on_sighup_and_keeps_the_old_one_over_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let install = |ca: &common::tls::TestCa| {
        let (chain, key) = ca.issue(&["localhost"], None).pem();
        std::fs::write(dir.path().join("cert.pem"), chain).unwrap();
        let key_file = dir.path().join("key.pem");
        std::fs::write(&key_file, key).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    };
    let first = common::tls::TestCa::new("First CA");
    install(&first);
    let broker = Binary::start(dir.path());
    let mut up = false;
    for _ in 0..200 {
        if broker.health(&first).await.ok() == Some(200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the broker serves TLS: {}", broker.process.log_text());

    // A renewal gone wrong: the key file no longer holds a key.
    std::fs::write(dir.path().join("key.pem"), "not a key\n").unwrap();
    broker.process.hang_up_and_await(&["TLS certificate not reloaded"]);
    assert_eq!(broker.health(&first).await.ok(), Some(200), "the previous certificate is kept");

    let second = common::tls::TestCa::new("Second CA");
    install(&second);
    broker.process.hang_up_and_await(&["TLS certificate and key reloaded"]);
    assert_eq!(broker.health(&second).await.ok(), Some(200), "new connections get the renewal");
    assert!(broker.health(&first).await.is_err(), "and no longer the old certificate");
    assert!(
        broker.handshakes("completed").await >= 3.0 && broker.handshakes("failed").await >= 1.0,
        "handshakes are counted by result, the refused certificate as failed: completed {}, failed {}",
        broker.handshakes("completed").await,
        broker.handshakes("failed").await,
    );
}
