//! Test harness: a broker on a loopback port, and devices that sign their requests as the
//! desktop app and CLI do.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "shared by several test binaries, each using a subset; a panic is the failure report"
)]

use std::sync::Arc;

use latchkey_core::httpsig::{self, SignedRequestParts};
use latchkey_core::ids::{DeviceId, KeyVersion, MemberId, WorkspaceId};
use latchkey_core::keys::{BrokerSecretKey, DeviceKeys, MemberKey, WorkspaceKey, WrappedKey};
use latchkey_server::Broker;
use latchkey_server::clock::ManualClock;
use latchkey_server::store::Store;
use serde_json::{Value, json};

/// A broker serving on 127.0.0.1 with its own temporary data directory and a manual clock.
pub struct TestBroker {
    pub base: String,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A fixed starting time for tests: 2027-01-15T08:00:00Z.
pub const T0: u64 = 1_800_000_000;

impl TestBroker {
    pub async fn start() -> Self {
        // Server logs go to the test's captured output, shown when a test fails.
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(&dir.path().join("db.sqlite3")).await.expect("open store");
        let clock = Arc::new(ManualClock::new(T0));
        let broker = Broker::new(store, BrokerSecretKey::generate().expect("broker key"))
            .with_clock(clock.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            latchkey_server::serve(broker, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("server ran");
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        Self { base, clock, dir, http, stop: Some(stop), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request signed by `device` at the broker's current time.
    pub fn signed(
        &self,
        device: &TestDevice,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::RequestBuilder {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("json")).unwrap_or_default();
        let target = self.url(path);
        let headers: Vec<(&str, &str)> =
            if body.is_some() { vec![("content-type", "application/json")] } else { Vec::new() };
        let parts = SignedRequestParts { method, target_uri: &target, headers: &headers };
        let sig = httpsig::sign(
            &parts,
            &bytes,
            &device.keys.signing,
            device.id,
            self.clock.now_secs(),
            60,
        )
        .expect("sign");
        let mut request = self
            .http
            .request(method.parse().expect("method"), target)
            .header("content-digest", sig.content_digest)
            .header("signature-input", sig.signature_input)
            .header("signature", sig.signature);
        if body.is_some() {
            request = request.header("content-type", "application/json").body(bytes);
        }
        request
    }

    /// Sends a request and returns the status and JSON body.
    pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("request reaches the broker");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        (status, body)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server stopped cleanly");
        }
    }
}

trait NowSecs {
    fn now_secs(&self) -> u64;
}

impl NowSecs for ManualClock {
    fn now_secs(&self) -> u64 {
        latchkey_server::clock::Clock::now(self)
    }
}

/// A member's device with its keys, as the desktop app would hold them in the keychain.
pub struct TestDevice {
    pub id: DeviceId,
    pub keys: DeviceKeys,
    pub workspace: WorkspaceId,
    pub member: MemberId,
    pub workspace_key: Option<WorkspaceKey>,
    pub member_key: Option<MemberKey>,
}

impl TestDevice {
    /// A brand-new device of a new member of `workspace`, holding no workspace key yet.
    pub fn new(workspace: WorkspaceId) -> Self {
        Self {
            id: DeviceId::random(),
            keys: DeviceKeys::generate().expect("device keys"),
            workspace,
            member: MemberId::random(),
            workspace_key: None,
            member_key: None,
        }
    }

    /// The registration JSON of this device.
    pub fn registration(&self, name: &str) -> Value {
        let public = self.keys.public_keys();
        json!({
            "id": self.id,
            "name": name,
            "signing_key": b64(&public.signing.to_bytes()),
            "exchange_key": b64(&public.exchange.to_bytes()),
        })
    }

    /// The body of `POST /v1/workspaces` for a new workspace created on this device, which
    /// generates the workspace key and its member key and wraps both to itself.
    pub fn create_workspace_body(&mut self, name: &str) -> Value {
        let wk = WorkspaceKey::generate(self.workspace, KeyVersion::FIRST).expect("wk");
        let mk = MemberKey::generate(self.workspace, self.member, KeyVersion::FIRST).expect("mk");
        let me = (self.id, &self.keys.exchange.public_key());
        let wrapped_wk = WrappedKey::wrap_workspace_key(&wk, me, (self.id, &self.keys.signing))
            .expect("wrap wk");
        let wrapped_mk =
            WrappedKey::wrap_member_key(&mk, me, (self.id, &self.keys.signing)).expect("wrap mk");
        self.workspace_key = Some(wk);
        self.member_key = Some(mk);
        json!({
            "workspace": {"id": self.workspace, "name": name},
            "member": {"id": self.member, "name": "Ada"},
            "device": self.registration("Ada's laptop"),
            "wrapped_keys": [b64(wrapped_wk.as_bytes()), b64(wrapped_mk.as_bytes())],
        })
    }
}

/// A workspace created on a fresh broker, with its first admin device.
pub async fn workspace_with_admin(broker: &TestBroker) -> TestDevice {
    let mut admin = TestDevice::new(WorkspaceId::random());
    let body = admin.create_workspace_body("Acme");
    let (status, response) =
        TestBroker::send(broker.signed(&admin, "POST", "/v1/workspaces", Some(&body))).await;
    assert_eq!(status, 201, "workspace creation must succeed: {response}");
    admin
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
