//! Who may create a workspace: anyone who reaches an open broker, only the holders of the
//! creation token on a broker in `token` mode, nobody on a closed one. Refusals carry their own
//! code and a message that says what to do, write nothing (not even the signature's nonce), and
//! joining with an invite works whatever the mode. The binary picks the mode from its settings
//! and says at startup which one it runs with.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers at the end of this file are test code too; a panic is the failure report"
)]

use crate::common;

use common::{TestBroker, TestDevice, database};
use latchkey_core::creation::CreationToken;
use latchkey_core::ids::WorkspaceId;
use latchkey_core::keys::{BrokerSecretKey, WrappedKey};
use latchkey_server::Broker;
use latchkey_server::creation::WorkspaceCreation;
use serde_json::{Value, json};

const TOKEN: &str = "lkct-9fQ2x7Lm4Rz8Vb1Nw6Hs3Jd5Kt0Pg-token";

/// A broker answering creations as `creation` says.
async fn broker_with(creation: WorkspaceCreation) -> TestBroker {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
    let key = BrokerSecretKey::generate().unwrap();
    TestBroker::start_with(|store, clock, _| {
        Broker::new(store, key).with_clock(clock).with_workspace_creation(creation)
    })
    .await
}

fn by_token() -> WorkspaceCreation {
    WorkspaceCreation::with_token(&CreationToken::parse(TOKEN).unwrap())
}

/// `POST /v1/workspaces` for a new workspace on `device`, with `token` in the body if given.
async fn create(broker: &TestBroker, device: &mut TestDevice, token: Option<&str>) -> (u16, Value) {
    let mut body = device.create_workspace_body("Acme");
    if let Some(token) = token {
        body["creation_token"] = json!(token);
    }
    TestBroker::send(broker.signed(device, "POST", "/v1/workspaces", Some(&body))).await
}

/// How many rows `table` has.
async fn rows(broker: &TestBroker, table: &str) -> i64 {
    let db = database(broker).await;
    let count: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&db)
            .await
            .unwrap();
    db.close().await;
    count
}

#[tokio::test]
async fn a_loopback_broker_is_open_by_default_and_ignores_a_token() {
    let broker = TestBroker::start().await;
    let (status, body) = create(&broker, &mut TestDevice::new(WorkspaceId::random()), None).await;
    assert_eq!(status, 201, "a loopback test broker is open by default: {body}");
    let (status, body) =
        create(&broker, &mut TestDevice::new(WorkspaceId::random()), Some("whatever")).await;
    assert_eq!(status, 201, "an open broker has no token to check, so it ignores one: {body}");
    broker.stop().await;
}

#[tokio::test]
async fn a_token_broker_creates_a_workspace_only_with_its_token_and_a_refusal_writes_nothing() {
    let broker = broker_with(by_token()).await;
    let mut device = TestDevice::new(WorkspaceId::random());

    let (status, body) = create(&broker, &mut device, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("creation_token_required")),
        "no token, no workspace: {body}"
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("operator") && message.contains("creation_token"),
        "the message says whom to ask and where the token goes: {message}"
    );

    for wrong in ["lkct-0000000000000000000000000000000-token", "", "two words", &TOKEN[1..]] {
        let (status, body) = create(&broker, &mut device, Some(wrong)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("creation_token_invalid")),
            "{wrong:?} is not the token: {body}"
        );
        assert!(
            wrong.is_empty() || !body.to_string().contains(wrong),
            "the refusal never repeats what was sent: {body}"
        );
        assert!(body["message"].as_str().unwrap().contains("operator"), "{body}");
    }
    let (status, body) = create(&broker, &mut device, Some(&TOKEN.to_uppercase())).await;
    assert_eq!(body["code"], "creation_token_invalid", "letter case counts: {status} {body}");

    assert_eq!(rows(&broker, "workspaces").await, 0, "no refused creation made a workspace");
    assert_eq!(
        rows(&broker, "seen_nonces").await,
        0,
        "a refusal comes before the signature's nonce is recorded: anonymous callers cannot fill \
         the database with refused creations"
    );

    let (status, body) = create(&broker, &mut device, Some(TOKEN)).await;
    assert_eq!(status, 201, "the operator's token creates the workspace: {body}");
    let (status, me) = TestBroker::send(broker.signed(&device, "GET", "/v1/me", None)).await;
    assert_eq!((status, me["role"].as_str()), (200, Some("admin")), "{me}");
    let (status, body) =
        create(&broker, &mut TestDevice::new(WorkspaceId::random()), Some(&format!("{TOKEN}\n")))
            .await;
    assert_eq!(status, 201, "the token may carry the newline of the file it came from: {body}");
    broker.stop().await;
}

#[tokio::test]
async fn a_closed_broker_creates_no_workspace_even_with_a_token() {
    let broker = broker_with(WorkspaceCreation::Closed).await;
    for token in [None, Some(TOKEN)] {
        let (status, body) =
            create(&broker, &mut TestDevice::new(WorkspaceId::random()), token).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("workspace_creation_closed")),
            "closed means closed, token or not: {body}"
        );
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("invite") && message.contains("operator"),
            "the message points at the way in that remains: {message}"
        );
    }
    assert_eq!(rows(&broker, "workspaces").await, 0);
    assert_eq!(rows(&broker, "seen_nonces").await, 0, "a refusal writes nothing");
    broker.stop().await;
}

#[tokio::test]
async fn joining_with_an_invite_needs_no_creation_token_on_a_token_or_closed_broker() {
    // Token mode: the admin creates with the token; the newcomer joins without it.
    let broker = broker_with(by_token()).await;
    let mut admin = TestDevice::new(WorkspaceId::random());
    let (status, body) = create(&broker, &mut admin, Some(TOKEN)).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = invite_and_join(&broker, &admin).await;
    assert_eq!(status, 201, "an invite is all a joining device needs: {body}");
    broker.stop().await;

    // Closed: the workspace was made by the operator's own means (here, straight in the store).
    let broker = broker_with(WorkspaceCreation::Closed).await;
    let admin = workspace_in_store(&broker).await;
    let (status, body) = invite_and_join(&broker, &admin).await;
    assert_eq!(status, 201, "a closed broker still admits invited devices: {body}");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

#[test]
fn the_binary_says_which_mode_it_runs_with_and_how_to_open_a_closed_one() {
    let dir = tempfile::tempdir().unwrap();
    let closed = Binary::start(&dir.path().join("closed"), &["--listen", "0.0.0.0:0"]);
    let ready = closed.wait_for("latchkey-server ready");
    assert!(ready.contains("workspace_creation") && ready.contains("closed"), "{ready}");
    let advice = closed.wait_for("workspace creation is closed");
    assert!(
        advice.contains("--creation-token-file") && advice.contains("--workspace-creation open"),
        "a broker closed by default says how to open it: {advice}"
    );
    closed.stop();

    let token_file = dir.path().join("creation-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let token_file = token_file.display().to_string();
    let by_token = Binary::start(
        &dir.path().join("token"),
        &["--listen", "0.0.0.0:0", "--creation-token-file", &token_file],
    );
    let ready = by_token.wait_for("latchkey-server ready");
    assert!(ready.contains("workspace_creation") && ready.contains("token"), "{ready}");
    let log = by_token.stop();
    assert!(!log.contains(&TOKEN[5..25]), "the token is not logged: {log}");
    assert!(
        !log.contains("workspace creation is closed"),
        "a broker with a token needs no advice on opening: {log}"
    );

    let open = Binary::start(&dir.path().join("open"), &["--listen", "127.0.0.1:0"]);
    let ready = open.wait_for("latchkey-server ready");
    assert!(ready.contains("workspace_creation") && ready.contains("open"), "{ready}");
    let log = open.stop();
    assert!(!log.contains("workspace creation is closed"), "{log}");
}

#[test]
fn the_binary_refuses_token_mode_without_a_token_file_and_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey-server"))
        .args(["--workspace-creation", "token", "--metrics-listen", "off"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("LATCHKEY_CONFIG")
        .env_remove("LATCHKEY_CREATION_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the broker must not start without the token");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--creation-token-file"), "says what to give: {stderr}");
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Has `admin` invite a new member and a fresh device join with the code; returns the join's
/// answer.
async fn invite_and_join(broker: &TestBroker, admin: &TestDevice) -> (u16, Value) {
    let (status, invite) = TestBroker::send(broker.signed(
        admin,
        "POST",
        "/v1/invites",
        Some(&json!({"role": "member"})),
    ))
    .await;
    assert_eq!(status, 201, "{invite}");
    let newcomer = TestDevice::new(admin.workspace);
    let body = json!({
        "code": invite["code"],
        "member": {"id": newcomer.member, "name": "Grace"},
        "device": newcomer.registration("laptop"),
    });
    TestBroker::send(broker.signed(&newcomer, "POST", "/v1/join", Some(&body))).await
}

/// A workspace written through a second store on the broker's database, around the API.
async fn workspace_in_store(broker: &TestBroker) -> TestDevice {
    let mut admin = TestDevice::new(WorkspaceId::random());
    let body = admin.create_workspace_body("Acme");
    let wrapped = |i: usize| {
        let text = body["wrapped_keys"][i].as_str().unwrap();
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).unwrap();
        WrappedKey::parse(&bytes).unwrap()
    };
    let public = admin.keys.public_keys();
    let store = broker.store().await;
    store
        .create_workspace(latchkey_server::store::workspaces::NewWorkspace {
            workspace: admin.workspace,
            workspace_name: "Acme".into(),
            member: admin.member,
            member_name: "Ada".into(),
            device: admin.id,
            device_name: "laptop".into(),
            signing_key: public.signing.to_bytes(),
            exchange_key: public.exchange.to_bytes(),
            wrapped_keys: [wrapped(0), wrapped(1)],
            now: latchkey_server::clock::Clock::now(&*broker.clock),
        })
        .await
        .unwrap()
        .unwrap();
    store.close().await;
    admin
}

/// The `latchkey-server` binary with its data in `data`, its stderr collected.
struct Binary {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Binary {
    fn start(data: &std::path::Path, args: &[&str]) -> Self {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey-server"))
            .args(args)
            .args(["--metrics-listen", "off"])
            .arg("--data-dir")
            .arg(data)
            .env_remove("LATCHKEY_CONFIG")
            .env_remove("LATCHKEY_WORKSPACE_CREATION")
            .env_remove("LATCHKEY_CREATION_TOKEN_FILE")
            .env("LATCHKEY_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("latchkey-server starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = std::sync::Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Self { child, log, reader: Some(reader) }
    }

    /// The first line holding `needle`, within 20 seconds.
    fn wait_for(&self, needle: &str) -> String {
        for _ in 0..400 {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("no {needle:?} in the log: {}", self.log.lock().unwrap().join("\n"));
    }

    /// Stops the broker and returns everything it logged.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
