//! Test harness: a broker on a loopback port, and devices that sign their requests as the
//! desktop app and CLI do.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "shared by several test binaries, each using a subset; a panic is the failure report"
)]

pub mod agent_calls;
pub mod process;
#[path = "../../../../../tests/support/tls.rs"]
pub mod tls;
pub mod tls_upstream;

use std::sync::Arc;

use latchkey_core::httpsig::{self, SignedRequestParts};
use latchkey_core::ids::{DeviceId, KeyVersion, MemberId, WorkspaceId};
use latchkey_core::keys::{BrokerSecretKey, DeviceKeys, MemberKey, WorkspaceKey, WrappedKey};
use latchkey_server::Broker;
use latchkey_server::clock::ManualClock;
use latchkey_server::store::Store;
use serde_json::{Value, json};

/// A broker serving on 127.0.0.1 with its own temporary data directory, its own database (SQLite
/// in the data directory, or a fresh PostgreSQL database: see [`TestDatabase`]) and a manual
/// clock.
pub struct TestBroker {
    pub base: String,
    /// The origin device requests are signed for: `base`, or for a replica (see
    /// [`TestBroker::start_replica`]) the first broker's, as a load balancer's would be shared.
    pub public_origin: String,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    pub db: TestDatabase,
    pub http: reqwest::Client,
    /// The broker key's text form, as its key file holds it; known when [`TestBroker::start`]
    /// generated it.
    broker_key: Option<String>,
    /// Whether [`TestBroker::stop`] drops the database (a replica leaves it to the first broker).
    owns_database: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A fixed starting time for tests: 2027-01-15T08:00:00Z.
pub const T0: u64 = 1_800_000_000;

impl TestBroker {
    pub async fn start() -> Self {
        // Server logs go to the test's captured output, shown when a test fails.
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
        let key = BrokerSecretKey::generate().expect("broker key");
        let key_text = key.expose_secret_text().to_string();
        let mut broker =
            Self::start_with(|store, clock, _| Broker::new(store, key).with_clock(clock)).await;
        broker.broker_key = Some(key_text);
        broker
    }

    /// A second broker replica on this broker's PostgreSQL database: its own store (opened as
    /// the service role, without migrating, as a replica started after the first would), its
    /// own listener, the same broker key (as if read from the same key file), the same manual
    /// clock, and this broker's public origin, as two replicas behind one load balancer share
    /// theirs. Stop it before this broker: [`TestBroker::stop`] on the first drops the database.
    pub async fn start_replica(&self) -> Self {
        let TestDatabase::Postgres(pg) = &self.db else {
            panic!("replicas share a PostgreSQL database; SQLite serves one broker per file")
        };
        self.start_replica_via(&pg.service_url).await
    }

    /// [`TestBroker::start_replica`] connecting as the service role at `service_url`: the same
    /// database reached another way (through a forwarder the test controls, say).
    pub async fn start_replica_via(&self, service_url: &str) -> Self {
        let TestDatabase::Postgres(pg) = &self.db else {
            panic!("replicas share a PostgreSQL database; SQLite serves one broker per file")
        };
        let key_text = self.broker_key.as_deref().expect(
            "a replica needs the first broker's key: start that one with TestBroker::start",
        );
        let key = BrokerSecretKey::from_secret_text(key_text).expect("broker key text");
        let store = Store::open_postgres(service_url, None).await.expect("open the store");
        let broker = Broker::new(store, key)
            .with_clock(self.clock.clone())
            .with_public_origin(self.public_origin.clone());
        let mut replica = Self::serve(
            broker,
            self.clock.clone(),
            tempfile::tempdir().expect("temp dir"),
            TestDatabase::Postgres(pg.clone()),
        )
        .await;
        replica.public_origin = self.public_origin.clone();
        replica.broker_key = self.broker_key.clone();
        replica.owns_database = false;
        replica
    }

    /// A broker serving its API over TLS itself, with a certificate for `127.0.0.1` and
    /// `localhost` from a test CA; its `http` client trusts that CA alone, and its base URL (and
    /// so the origin devices sign) is `https://127.0.0.1:{port}`, the broker's default origin
    /// under TLS.
    pub async fn start_tls() -> (Self, tls::TestCa) {
        Self::start_tls_serving_on(None).await
    }

    /// [`TestBroker::start_tls`] serving on `threads` threads of their own (see
    /// [`Broker::with_serving_threads`]).
    pub async fn start_tls_serving_on(
        threads: Option<std::num::NonZeroUsize>,
    ) -> (Self, tls::TestCa) {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
        let ca = tls::TestCa::new("Latchkey Test Server CA");
        let cert = ca.issue(&["127.0.0.1", "localhost"], None);
        let (chain, key) = cert.pem();
        let server_tls =
            latchkey_server::tls::ServerTls::from_pem(chain.as_bytes(), key.as_bytes())
                .expect("tls");
        let key = BrokerSecretKey::generate().expect("broker key");
        let key_text = key.expose_secret_text().to_string();
        let mut broker = Self::start_with(|store, clock, _| {
            Broker::new(store, key)
                .with_clock(clock)
                .with_tls(server_tls)
                .with_serving_threads(threads)
        })
        .await;
        broker.base = broker.base.replace("http://", "https://");
        broker.public_origin = broker.base.clone();
        broker.broker_key = Some(key_text);
        let ca_cert = reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("CA");
        broker.http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .tls_certs_only([ca_cert])
            .build()
            .expect("https client");
        (broker, ca)
    }

    /// Serves `broker` on a fresh loopback port.
    async fn serve(
        broker: Broker,
        clock: Arc<ManualClock>,
        dir: tempfile::TempDir,
        db: TestDatabase,
    ) -> Self {
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
        Self {
            public_origin: base.clone(),
            base,
            clock,
            dir,
            db,
            http,
            broker_key: None,
            owns_database: true,
            stop: Some(stop),
            task: Some(task),
        }
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
        let origins = (self.base.as_str(), self.public_origin.as_str());
        signed_request(&self.http, origins, device, method, path, body, self.clock.now_secs())
    }

    /// A request signed by `device` at the broker's current time, with `body` sent as JSON
    /// whatever its bytes are (to send malformed bodies that pass the signature check).
    pub fn signed_bytes(
        &self,
        device: &TestDevice,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> reqwest::RequestBuilder {
        let origins = (self.base.as_str(), self.public_origin.as_str());
        signed_raw_request(
            &self.http,
            origins,
            device,
            (method, path),
            Some(body),
            self.clock.now_secs(),
        )
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

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server stopped cleanly");
        }
    }

    /// Stops the broker and drops its PostgreSQL database (a SQLite file goes with the
    /// temporary directory); a replica leaves the database to the first broker.
    pub async fn stop(mut self) {
        self.shutdown().await;
        if self.owns_database {
            self.db.drop_database().await;
        }
    }

    /// Stops the broker, then returns what its database holds at rest (as
    /// [`TestBroker::stored_bytes`]) and removes the database.
    pub async fn stop_and_scan(mut self) -> Vec<(String, Vec<u8>)> {
        self.shutdown().await;
        let bytes = self.stored_bytes().await;
        self.db.drop_database().await;
        bytes
    }

    /// Another store on this broker's database, as a second broker replica would open it.
    pub async fn store(&self) -> Store {
        self.db.open(self.dir.path()).await
    }

    /// Everything the broker's database holds at rest, for leak scans: on SQLite the data
    /// directory's files (database, -wal, -shm and the rest), on PostgreSQL every table's
    /// contents, byte columns raw.
    pub async fn stored_bytes(&self) -> Vec<(String, Vec<u8>)> {
        self.db.stored_bytes(self.dir.path()).await
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

/// A direct, privileged connection to the broker's database, for store-level set-up and for
/// reading what the broker wrote: the SQLite file itself, or PostgreSQL as a superuser (which
/// row-level security does not bind). Statements use `$N` placeholders, which both accept.
pub async fn database(broker: &TestBroker) -> sqlx::AnyPool {
    broker.db.privileged(broker.dir.path()).await
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
         VALUES ($1, $2, 'Grace', $3, 1, $4)",
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

async fn insert_device_row(db: &sqlx::AnyPool, device: &TestDevice, now: i64) {
    let public = device.keys.public_keys();
    sqlx::query(
        "INSERT INTO devices (workspace_id, id, member_id, name, signing_key, exchange_key, created_at)
         VALUES ($1, $2, $3, 'Test device', $4, $5, $6)",
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
    /// A broker that `build` makes from a store on a fresh database (see [`TestDatabase`]), the
    /// manual clock and a fresh data directory, served like [`TestBroker::start`]'s. Installs no
    /// log subscriber, so the caller may capture logs itself.
    pub async fn start_with(
        build: impl FnOnce(Store, Arc<ManualClock>, &std::path::Path) -> Broker,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = TestDatabase::create().await;
        let store = db.open_and_migrate(dir.path()).await;
        let clock = Arc::new(ManualClock::new(T0));
        let broker = build(store, clock.clone(), dir.path());
        Self::serve(broker, clock, dir, db).await
    }
}

/// An answer: status, `Retry-After` (if any) and JSON body (`null` when empty).
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Answer {
    /// Reads `response` whole.
    pub async fn of(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ASCII Retry-After").to_owned());
        let text = response.text().await.expect("body");
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        Self { status, retry_after, body }
    }
}

/// A request to `base` + `path` signed by `device` for `origin` + `path` at `now` (Unix seconds),
/// as [`TestBroker::signed`] makes them; for a broker that is not a [`TestBroker`].
pub fn signed_request(
    http: &reqwest::Client,
    (base, origin): (&str, &str),
    device: &TestDevice,
    method: &str,
    path: &str,
    body: Option<&Value>,
    now: u64,
) -> reqwest::RequestBuilder {
    let bytes = body.map(|b| serde_json::to_vec(b).expect("json"));
    signed_raw_request(http, (base, origin), device, (method, path), bytes.as_deref(), now)
}

/// [`signed_request`] with the body's bytes as given, sent as `application/json`.
fn signed_raw_request(
    http: &reqwest::Client,
    (base, origin): (&str, &str),
    device: &TestDevice,
    (method, path): (&str, &str),
    body: Option<&[u8]>,
    now: u64,
) -> reqwest::RequestBuilder {
    let signed_for = format!("{origin}{path}");
    let headers: Vec<(&str, &str)> =
        if body.is_some() { vec![("content-type", "application/json")] } else { Vec::new() };
    let parts = SignedRequestParts { method, target_uri: &signed_for, headers: &headers };
    let sig =
        httpsig::sign(&parts, body.unwrap_or_default(), &device.keys.signing, device.id, now, 60)
            .expect("sign");
    let mut request = http
        .request(method.parse().expect("method"), format!("{base}{path}"))
        .header("content-digest", sig.content_digest)
        .header("signature-input", sig.signature_input)
        .header("signature", sig.signature);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_vec());
    }
    request
}

/// Serves `metrics` on a fresh loopback port until the test's runtime ends; returns the base URL.
pub async fn serve_metrics(metrics: latchkey_server::Metrics) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(latchkey_server::serve_metrics(listener, metrics, std::future::pending()));
    base
}

/// The metrics exposition served at `base` (see [`serve_metrics`]).
pub async fn scrape(base: &str) -> String {
    let response = reqwest::get(format!("{base}/metrics")).await.expect("metrics listener answers");
    assert_eq!(response.status(), 200, "GET /metrics on the metrics listener");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    response.text().await.expect("body")
}

/// The value of the sample line that starts with `series` (name and labels), 0 if absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Log output captured in memory: a `MakeWriter` for a `tracing_subscriber::fmt` subscriber.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }

    /// Makes this capture the current thread's log output (JSON lines, INFO and above) until the
    /// guard drops. On a single-threaded test runtime the broker's tasks log through it too.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(self.clone())
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(subscriber)
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

/// The database a test broker runs on, chosen by the environment:
///
/// * `LATCHKEY_TEST_BACKEND` unset or `sqlite`: `db.sqlite3` in the broker's data directory.
/// * `LATCHKEY_TEST_BACKEND=postgres` with `LATCHKEY_TEST_POSTGRES_URL`, a superuser URL of a
///   throwaway cluster (`scripts/test` starts one): per test a fresh database owned by a fresh
///   owner role, and a fresh unprivileged service role the broker connects as, as in production
///   (docs/operations.md). [`TestBroker::stop`] drops the database.
#[derive(Clone)]
pub enum TestDatabase {
    Sqlite,
    Postgres(PgTestDatabase),
}

/// One test's PostgreSQL database and roles.
#[derive(Clone)]
pub struct PgTestDatabase {
    /// The cluster's superuser URL (database `postgres`).
    pub admin_url: String,
    /// Database name, also the prefix of the two role names.
    pub name: String,
    /// The schema owner: runs migrations.
    pub owner_url: String,
    /// The service role the broker connects as.
    pub service_url: String,
    /// The superuser on this test's database.
    pub superuser_url: String,
}

/// Whether the tests run on PostgreSQL.
pub fn postgres_backend() -> bool {
    match std::env::var("LATCHKEY_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("LATCHKEY_TEST_BACKEND={other}: expected sqlite or postgres"),
    }
}

async fn any_pool(url: &str, connections: u32) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(connections)
        .connect(url)
        .await
        .expect("connect to the test database")
}

impl TestDatabase {
    /// A fresh, empty database on the backend the environment selects.
    pub async fn create() -> Self {
        if !postgres_backend() {
            return Self::Sqlite;
        }
        let admin_url = std::env::var("LATCHKEY_TEST_POSTGRES_URL").expect(
            "LATCHKEY_TEST_BACKEND=postgres needs LATCHKEY_TEST_POSTGRES_URL, a superuser URL of a \
             throwaway cluster (scripts/test starts one)",
        );
        let name = format!("lk_{}", WorkspaceId::random().to_string().replace('-', ""));
        let admin = any_pool(&admin_url, 1).await;
        for statement in [
            format!("CREATE ROLE {name}_owner LOGIN"),
            format!("CREATE ROLE {name}_svc LOGIN"),
            format!("CREATE DATABASE {name} OWNER {name}_owner"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&admin)
                .await
                .expect("create the test database and roles");
        }
        admin.close().await;
        let with = |user: &str| {
            let mut url = url::Url::parse(&admin_url).expect("LATCHKEY_TEST_POSTGRES_URL parses");
            url.set_username(user).expect("a URL with a host");
            url.set_password(None).expect("a URL with a host");
            url.set_path(&name);
            url.to_string()
        };
        let mut superuser_url = url::Url::parse(&admin_url).expect("URL");
        superuser_url.set_path(&name);
        Self::Postgres(PgTestDatabase {
            owner_url: with(&format!("{name}_owner")),
            service_url: with(&format!("{name}_svc")),
            superuser_url: superuser_url.to_string(),
            admin_url,
            name,
        })
    }

    /// The broker's store, migrating first (as the owner role, on PostgreSQL).
    pub async fn open_and_migrate(&self, dir: &std::path::Path) -> Store {
        match self {
            Self::Sqlite => Store::open_sqlite(&dir.join("db.sqlite3")).await,
            Self::Postgres(pg) => Store::open_postgres(&pg.service_url, Some(&pg.owner_url)).await,
        }
        .expect("open and migrate the store")
    }

    /// Another store on the migrated database, as the service role.
    pub async fn open(&self, dir: &std::path::Path) -> Store {
        match self {
            Self::Sqlite => Store::open_sqlite(&dir.join("db.sqlite3")).await,
            Self::Postgres(pg) => Store::open_postgres(&pg.service_url, None).await,
        }
        .expect("open the store")
    }

    /// A privileged pool: the SQLite file, or the superuser on this test's database.
    pub async fn privileged(&self, dir: &std::path::Path) -> sqlx::AnyPool {
        match self {
            Self::Sqlite => {
                let path = dir.join("db.sqlite3");
                any_pool(&format!("sqlite://{}", path.display()), 2).await
            }
            Self::Postgres(pg) => any_pool(&pg.superuser_url, 2).await,
        }
    }

    /// See [`TestBroker::stored_bytes`].
    pub async fn stored_bytes(&self, dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
        let Self::Postgres(pg) = self else { return files_in(dir) };
        let db = any_pool(&pg.superuser_url, 1).await;
        let columns: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text, data_type::text
             FROM information_schema.columns WHERE table_schema = 'public'
             ORDER BY table_name, ordinal_position",
        )
        .fetch_all(&db)
        .await
        .expect("list columns");
        let mut tables: Vec<(String, Vec<u8>)> = Vec::new();
        for (table, column, data_type) in columns {
            let expression = if data_type == "bytea" {
                format!("\"{column}\"")
            } else {
                format!("convert_to(\"{column}\"::text, 'UTF8')")
            };
            let values: Vec<Option<Vec<u8>>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT {expression} FROM \"{table}\""
            )))
            .fetch_all(&db)
            .await
            .expect("read a column");
            if tables.last().is_none_or(|(name, _)| *name != table) {
                tables.push((table.clone(), Vec::new()));
            }
            let (_, bytes) = tables.last_mut().expect("pushed above");
            for value in values.into_iter().flatten() {
                bytes.extend_from_slice(&value);
                bytes.push(b'\n');
            }
        }
        db.close().await;
        let mut contents = files_in(dir);
        contents.extend(tables);
        contents
    }

    /// Drops this test's PostgreSQL database and roles (nothing on SQLite).
    pub async fn drop_database(&self) {
        let Self::Postgres(pg) = self else { return };
        let admin = any_pool(&pg.admin_url, 1).await;
        let name = &pg.name;
        for statement in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("DROP ROLE IF EXISTS {name}_svc"),
            format!("DROP ROLE IF EXISTS {name}_owner"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&admin)
                .await
                .expect("drop the test database and roles");
        }
        admin.close().await;
    }
}

/// Every file of a directory with its contents. SQLite removes its -wal and -shm files as the
/// last connection closes, after checkpointing them into the main file: a file gone by the time
/// it is read is skipped.
pub fn files_in(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("data dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type().expect("type");
        if kind.is_dir() {
            // The audit journal's segments, and anything else kept beside the database.
            files.extend(
                files_in(&entry.path())
                    .into_iter()
                    .map(|(file, bytes)| (format!("{name}/{file}"), bytes)),
            );
        } else if kind.is_file() {
            match std::fs::read(entry.path()) {
                Ok(bytes) => files.push((name, bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("cannot read {name}: {e}"),
            }
        }
    }
    files
}

/// A device's approval stream (`GET /v1/approvals/events`), read one `approval` event at a time.
pub struct ApprovalStream {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl ApprovalStream {
    /// Opens `device`'s stream on `broker`.
    pub async fn open(broker: &TestBroker, device: &TestDevice) -> Self {
        let response = broker
            .signed(device, "GET", "/v1/approvals/events", None)
            .send()
            .await
            .expect("the broker answers");
        assert_eq!(response.status().as_u16(), 200, "the approval stream opens");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "server-sent events, which any HTTP client can read"
        );
        Self { body: Box::pin(response.bytes_stream()), buffer: String::new() }
    }

    /// The next `approval` event's data, within 10 seconds.
    pub async fn next(&mut self) -> Value {
        loop {
            let (event, data) = self.next_event().await;
            if event == "approval" {
                return serde_json::from_str(&data).expect("event data is JSON");
            }
        }
    }

    /// The next event of any kind, as its name and data, within 10 seconds (comments skipped).
    pub async fn next_event(&mut self) -> (String, String) {
        use futures_util::StreamExt as _;
        let read = async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let field = |name: &str| -> Vec<&str> {
                        block.lines().filter_map(|l| l.strip_prefix(name)).collect()
                    };
                    if let Some(event) = field("event: ").first() {
                        return (event.to_string(), field("data: ").join("\n"));
                    }
                    continue;
                }
                let chunk = self.body.next().await.expect("the stream stays open").expect("chunk");
                self.buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .expect("an event arrives")
    }
}
