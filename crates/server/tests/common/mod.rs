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

    /// Stops the broker and hands back its data directory for inspection.
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        self.shutdown().await;
        let placeholder = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, placeholder)
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server stopped cleanly");
        }
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

/// A direct connection to the broker's SQLite file, for store-level set-up and for scanning what
/// the broker wrote.
pub async fn database(broker: &TestBroker) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(broker.dir.path().join("db.sqlite3"))
        .foreign_keys(true)
        .busy_timeout(std::time::Duration::from_secs(5));
    sqlx::SqlitePool::connect_with(options).await.expect("open the broker's database")
}

/// Adds a member (`role`: "admin" or "member") with one device to `admin`'s workspace by writing
/// the rows straight into the broker's database: a store-level shortcut around invites for tests
/// of other areas. The device gets the workspace key as `admin`'s device would wrap it (wrapped
/// and opened again here) and a fresh member key at version 1.
pub async fn insert_member(broker: &TestBroker, admin: &TestDevice, role: &str) -> TestDevice {
    let mut device = TestDevice::new(admin.workspace);
    let db = database(broker).await;
    let now = latchkey_server::clock::Clock::now(&*broker.clock) as i64;
    sqlx::query(
        "INSERT INTO members (workspace_id, id, name, role, key_version, created_at)
         VALUES (?1, ?2, 'Grace', ?3, 1, ?4)",
    )
    .bind(admin.workspace.to_string())
    .bind(device.member.to_string())
    .bind(role)
    .bind(now)
    .execute(&db)
    .await
    .expect("insert member");
    insert_device_row(&db, &device, now).await;
    db.close().await;
    let wk = admin.workspace_key.as_ref().expect("the admin holds the workspace key");
    device.workspace_key = Some(pass_workspace_key(wk, admin, &device));
    device.member_key =
        Some(MemberKey::generate(device.workspace, device.member, KeyVersion::FIRST).expect("mk"));
    device
}

/// Adds another device of `sibling`'s member straight into the database; it gets copies of the
/// workspace and member keys `sibling` holds, wrapped by `sibling` and opened again here.
pub async fn insert_device(broker: &TestBroker, sibling: &TestDevice) -> TestDevice {
    let mut device = TestDevice::new(sibling.workspace);
    device.member = sibling.member;
    let db = database(broker).await;
    let now = latchkey_server::clock::Clock::now(&*broker.clock) as i64;
    insert_device_row(&db, &device, now).await;
    db.close().await;
    if let Some(wk) = sibling.workspace_key.as_ref() {
        device.workspace_key = Some(pass_workspace_key(wk, sibling, &device));
    }
    if let Some(mk) = sibling.member_key.as_ref() {
        let exchange = device.keys.exchange.public_key();
        let wrapped = WrappedKey::wrap_member_key(
            mk,
            (device.id, &exchange),
            (sibling.id, &sibling.keys.signing),
        )
        .expect("wrap mk");
        device.member_key = Some(
            wrapped
                .unwrap_member_key(
                    (device.id, &device.keys.exchange),
                    device.workspace,
                    &sibling.keys.signing.verifying_key(),
                )
                .expect("open mk"),
        );
    }
    device
}

async fn insert_device_row(db: &sqlx::SqlitePool, device: &TestDevice, now: i64) {
    let public = device.keys.public_keys();
    sqlx::query(
        "INSERT INTO devices (workspace_id, id, member_id, name, signing_key, exchange_key, created_at)
         VALUES (?1, ?2, ?3, 'Test device', ?4, ?5, ?6)",
    )
    .bind(device.workspace.to_string())
    .bind(device.id.to_string())
    .bind(device.member.to_string())
    .bind(&public.signing.to_bytes()[..])
    .bind(&public.exchange.to_bytes()[..])
    .bind(now)
    .execute(db)
    .await
    .expect("insert device");
}

fn pass_workspace_key(wk: &WorkspaceKey, from: &TestDevice, to: &TestDevice) -> WorkspaceKey {
    let exchange = to.keys.exchange.public_key();
    let wrapped =
        WrappedKey::wrap_workspace_key(wk, (to.id, &exchange), (from.id, &from.keys.signing))
            .expect("wrap wk");
    wrapped
        .unwrap_workspace_key(
            (to.id, &to.keys.exchange),
            to.workspace,
            &from.keys.signing.verifying_key(),
        )
        .expect("open wk")
}

impl TestBroker {
    /// A broker that `build` makes from a store in a fresh data directory (`db.sqlite3`), the
    /// manual clock and that directory, served like [`TestBroker::start`]'s. Installs no log
    /// subscriber, so the caller may capture logs itself.
    pub async fn start_with(
        build: impl FnOnce(Store, Arc<ManualClock>, &std::path::Path) -> Broker,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(&dir.path().join("db.sqlite3")).await.expect("open store");
        let clock = Arc::new(ManualClock::new(T0));
        let broker = build(store, clock.clone(), dir.path());
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
}

/// Serves `metrics` on a fresh loopback port until the test's runtime ends; returns the base URL.
pub async fn serve_metrics(metrics: latchkey_server::Metrics) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(latchkey_server::serve_metrics(listener, metrics, std::future::pending()));
    base
}

/// Log output captured in memory: a `MakeWriter` for a `tracing_subscriber::fmt` subscriber.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
