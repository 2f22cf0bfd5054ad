//! Who may create a workspace: anyone who reaches an open broker, only the holders of the
//! creation token on a broker in `token` mode, nobody on a closed one. Refusals carry their own
//! code and a message that says what to do, write nothing (not even the signature's nonce), and
//! joining with an invite works whatever the mode. The binary picks the mode from its settings
//! and says at startup which one it runs with. A token file read again (on SIGHUP, in the binary)
//! replaces the token from the next creation on, and one that cannot be used changes nothing.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers at the end of this file are test code too; a panic is the failure report"
)]

use crate::common;

use std::path::Path;

use common::process::BrokerProcess;
use common::{LogCapture, TestBroker, TestDevice, database};
use latchkey_core::creation::CreationToken;
use latchkey_core::ids::WorkspaceId;
use latchkey_core::keys::{BrokerSecretKey, WrappedKey};
use latchkey_server::Broker;
use latchkey_server::creation::{CreationTokenFile, CreationTokenFileError, WorkspaceCreation};
use serde_json::{Value, json};
use sha2::Digest as _;

const TOKEN: &str = "lkct-9fQ2x7Lm4Rz8Vb1Nw6Hs3Jd5Kt0Pg-token";
/// The token that replaces [`TOKEN`] in its file.
const NEW_TOKEN: &str = "Wd3+Rk8qTz1/Ls6vNb0xHj4pYc7mGf2aQe5uKo9i=";

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
// Reloading the token file
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_reloaded_token_file_creates_with_the_new_token_and_refuses_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creation-token");
    write_token_file(&path, &format!("{TOKEN}\n"), 0o600);
    let file = CreationTokenFile::read(&path).unwrap();
    let broker = broker_with(WorkspaceCreation::TokenFile(file.clone())).await;
    assert_eq!(create_new(&broker, TOKEN).await, (201, None));

    write_token_file(&path, &format!("{NEW_TOKEN}\n"), 0o600);
    assert_eq!(
        create_new(&broker, NEW_TOKEN).await,
        invalid(),
        "a replaced file changes nothing until it is read again"
    );
    assert_eq!(create_new(&broker, TOKEN).await, (201, None));

    file.reload().unwrap();
    assert_eq!(
        create_new(&broker, TOKEN).await,
        invalid(),
        "the old token is refused from the first creation after the reload"
    );
    assert_eq!(create_new(&broker, NEW_TOKEN).await, (201, None), "the new token creates");
    assert_eq!(rows(&broker, "workspaces").await, 3);
    broker.stop().await;
}

#[tokio::test]
async fn a_token_file_that_cannot_be_used_on_reload_leaves_the_previous_token_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creation-token");
    let named = path.display().to_string();
    write_token_file(&path, &format!("{TOKEN}\n"), 0o600);
    let file = CreationTokenFile::read(&path).unwrap();
    let broker = broker_with(WorkspaceCreation::TokenFile(file.clone())).await;
    let kept = |new: &'static str| {
        let broker = &broker;
        async move {
            assert_eq!(
                create_new(broker, new).await,
                invalid(),
                "the refused file's token does not create"
            );
            assert_eq!(
                create_new(broker, TOKEN).await,
                (201, None),
                "the previous token still does"
            );
        }
    };
    let mut messages = Vec::new();

    #[cfg(unix)]
    {
        write_token_file(&path, &format!("{NEW_TOKEN}\n"), 0o640);
        let error = file.reload().unwrap_err();
        assert!(
            matches!(error, CreationTokenFileError::NotPrivate { mode: 0o640, .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&named)
                && message.contains("readable by other users")
                && message.contains("chmod 600"),
            "a token others can read is refused, as at startup: {message}"
        );
        kept(NEW_TOKEN).await;
        messages.push(message);
    }

    let short = &NEW_TOKEN[..20];
    write_token_file(&path, &format!("{short}\n"), 0o600);
    let error = file.reload().unwrap_err();
    assert!(matches!(error, CreationTokenFileError::TooShort { length: 20, .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&named) && message.contains("fewer than the 32"),
        "a guessable token is refused, as at startup: {message}"
    );
    kept(short).await;
    messages.push(message);

    write_token_file(&path, &format!("{NEW_TOKEN}\n{TOKEN}\n"), 0o600);
    let error = file.reload().unwrap_err();
    assert!(matches!(error, CreationTokenFileError::Malformed { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&named) && message.contains("visible ASCII"), "one token: {message}");
    kept(NEW_TOKEN).await;
    messages.push(message);

    // A file far larger than any token (a log written to the wrong path, say) is read only so far.
    write_token_file(&path, &format!("{NEW_TOKEN}\n{}", " ".repeat(70 * 1024)), 0o600);
    let error = file.reload().unwrap_err();
    assert!(matches!(error, CreationTokenFileError::Malformed { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&named) && message.contains("at most 1024"), "{message}");
    kept(NEW_TOKEN).await;
    messages.push(message);

    std::fs::remove_file(&path).unwrap();
    let error = file.reload().unwrap_err();
    assert!(matches!(error, CreationTokenFileError::Unreadable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&named) && message.contains("cannot read it"), "{message}");
    assert_eq!(create_new(&broker, TOKEN).await, (201, None), "a missing file keeps the token");
    messages.push(message);

    for message in messages {
        assert!(
            !message.contains(&TOKEN[5..25]) && !message.contains(&NEW_TOKEN[..12]),
            "no error quotes a token: {message}"
        );
    }

    write_token_file(&path, &format!("{NEW_TOKEN}\n"), 0o600);
    file.reload().unwrap();
    assert_eq!(create_new(&broker, NEW_TOKEN).await, (201, None), "a good file is taken again");
    assert_eq!(create_new(&broker, TOKEN).await, invalid());
    broker.stop().await;
}

#[tokio::test]
async fn reloads_log_the_file_and_the_outcome_but_never_a_token_or_its_digest() {
    // The test runtime has one thread: the broker's request handlers log through the capture
    // too, so the refusals of the tokens sent are checked as well.
    let logs = LogCapture::default();
    let _guard = logs.install();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creation-token");
    write_token_file(&path, &format!("{TOKEN}\n"), 0o600);
    let file = CreationTokenFile::read(&path).unwrap();
    let broker = broker_with(WorkspaceCreation::TokenFile(file.clone())).await;

    write_token_file(&path, &format!("{NEW_TOKEN}\n"), 0o600);
    file.reload().unwrap();
    #[cfg(unix)]
    {
        write_token_file(&path, &format!("{TOKEN}\n"), 0o644);
        file.reload().unwrap_err();
    }
    write_token_file(&path, &format!("{}\n", &TOKEN[..31]), 0o600);
    file.reload().unwrap_err();
    write_token_file(&path, &format!("{TOKEN} {NEW_TOKEN}\n"), 0o600);
    file.reload().unwrap_err();
    std::fs::remove_file(&path).unwrap();
    file.reload().unwrap_err();
    assert_eq!(create_new(&broker, TOKEN).await.0, 403);
    assert_eq!(create_new(&broker, NEW_TOKEN).await.0, 201);
    broker.stop().await;

    let text = logs.text();
    let lines: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let with = |message: &str| {
        lines.iter().filter(|line| line["fields"]["message"] == message).collect::<Vec<_>>()
    };
    let reloaded = with("workspace creation token reloaded");
    assert_eq!(reloaded.len(), 1, "{text}");
    assert_eq!(reloaded[0]["level"], "INFO");
    assert_eq!(reloaded[0]["fields"]["file"], path.display().to_string(), "names the file");
    let refused =
        with("workspace creation token not reloaded; the previous token is still in force");
    assert_eq!(refused.len(), if cfg!(unix) { 4 } else { 3 }, "one line per failed reload: {text}");
    for line in refused {
        assert_eq!(line["level"], "ERROR");
        let error = line["fields"]["error"].as_str().unwrap();
        assert!(error.contains(&path.display().to_string()), "names the file: {error}");
    }
    for token in [TOKEN, NEW_TOKEN] {
        for part in token.as_bytes().windows(12) {
            let part = std::str::from_utf8(part).unwrap();
            assert!(!text.contains(part), "the log holds part of a token ({part}): {text}");
        }
        let digest = sha2::Sha256::new()
            .chain_update(b"latchkey creation token v1\0")
            .chain_update(token.as_bytes())
            .finalize();
        use base64::Engine as _;
        for shown in [
            hex::encode(digest),
            hex::encode_upper(digest),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest),
        ] {
            assert!(!text.contains(&shown[..16]), "the log holds the token's digest: {text}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

#[test]
fn the_binary_says_which_mode_it_runs_with_and_how_to_open_a_closed_one() {
    let dir = tempfile::tempdir().unwrap();
    let closed = BrokerProcess::start(&dir.path().join("closed"), &["--listen", "0.0.0.0:0"]);
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
    let by_token = BrokerProcess::start(
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

    let open = BrokerProcess::start(&dir.path().join("open"), &["--listen", "127.0.0.1:0"]);
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

#[tokio::test]
async fn the_binary_reads_its_token_file_again_on_sighup_and_keeps_the_token_over_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creation-token");
    write_token_file(&path, &format!("{TOKEN}\n"), 0o600);
    let named = path.display().to_string();
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &["--listen", "127.0.0.1:0", "--log-format", "json", "--creation-token-file", &named],
    );
    let base = format!("http://{}", broker.listening());
    let http = reqwest::Client::new();
    assert_eq!(create_on(&http, &base, TOKEN).await, (201, None));

    write_token_file(&path, &format!("{NEW_TOKEN}\n"), 0o644);
    let logged = broker.hang_up_and_await(&["workspace creation token not reloaded"]);
    assert!(logged.contains(&named) && logged.contains("readable by other users"), "{logged}");
    assert_eq!(create_on(&http, &base, NEW_TOKEN).await, invalid());
    assert_eq!(create_on(&http, &base, TOKEN).await, (201, None), "the broker goes on serving");

    write_token_file(&path, &format!("{NEW_TOKEN}\n"), 0o600);
    broker.hang_up_and_await(&["workspace creation token reloaded"]);
    assert_eq!(create_on(&http, &base, TOKEN).await, invalid());
    assert_eq!(create_on(&http, &base, NEW_TOKEN).await, (201, None));

    let log = broker.stop();
    for token in [TOKEN, NEW_TOKEN] {
        assert!(!log.contains(&token[5..25]), "the token is not logged: {log}");
    }
}

#[tokio::test]
async fn a_sighup_to_a_broker_with_nothing_to_reload_leaves_it_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &["--listen", "127.0.0.1:0", "--log-format", "json"],
    );
    let base = format!("http://{}", broker.listening());
    broker.hang_up_and_await(&["nothing to reload"]);
    broker.hang_up_and_await(&["nothing to reload"]);
    let health = reqwest::get(format!("{base}/healthz")).await.expect("still listening");
    assert_eq!(health.status(), 200, "a reload (systemctl reload) never stops a broker");
    broker.stop();
}

#[cfg(unix)]
#[tokio::test]
async fn a_token_file_that_blocks_its_reader_holds_up_neither_the_broker_nor_later_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creation-token");
    write_token_file(&path, &format!("{TOKEN}\n"), 0o600);
    let named = path.display().to_string();
    // One worker thread: a reload that blocked a worker would stop the broker outright.
    let broker = BrokerProcess::start_with_env(
        &dir.path().join("data"),
        &["--listen", "127.0.0.1:0", "--log-format", "json", "--creation-token-file", &named],
        &[("TOKIO_WORKER_THREADS", "1")],
    );
    let base = format!("http://{}", broker.listening());
    let http =
        reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build().unwrap();

    // A named pipe nobody writes to: opening it for reading waits for a writer.
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo").args(["-m", "600"]).arg(&path).status();
    assert!(made.unwrap().success(), "mkfifo makes the pipe");
    broker.hang_up_and_await(&["creation token reload is still waiting for its file"]);
    assert_eq!(
        create_on(&http, &base, TOKEN).await,
        (201, None),
        "the broker serves, under the previous token, while the reload waits"
    );

    // Once something writes the pipe, the reload finishes with what was written.
    std::fs::write(&path, format!("{NEW_TOKEN}\n")).unwrap();
    broker.wait_for("workspace creation token reloaded");
    assert_eq!(create_on(&http, &base, TOKEN).await, invalid());
    assert_eq!(create_on(&http, &base, NEW_TOKEN).await, (201, None));

    // And the next SIGHUP is heard again.
    std::fs::remove_file(&path).unwrap();
    write_token_file(&path, &format!("{TOKEN}\n"), 0o600);
    broker.hang_up_and_await(&["workspace creation token reloaded"]);
    assert_eq!(create_on(&http, &base, TOKEN).await, (201, None));

    // A reload still waiting for its pipe does not keep the broker from stopping.
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo").args(["-m", "600"]).arg(&path).status();
    assert!(made.unwrap().success(), "mkfifo makes the pipe");
    broker.hang_up_and_await(&["creation token reload is still waiting for its file"]);
    let mut broker = broker;
    assert!(broker.terminate_and_wait(), "SIGTERM stops a broker whose reload is stuck");
    let log = broker.stop();
    assert!(log.contains("latchkey-server stopped"), "it stopped cleanly: {log}");
}

#[tokio::test]
async fn the_binary_on_serving_threads_serves_reloads_on_sighup_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creation-token");
    write_token_file(&path, &format!("{TOKEN}\n"), 0o600);
    let named = path.display().to_string();
    // Requests on two threads of their own; signals, reloads and the audit writer on the
    // single-threaded main runtime.
    let mut broker = BrokerProcess::start(
        &dir.path().join("data"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--creation-token-file",
            &named,
            "--serving-threads",
            "2",
        ],
    );
    let ready = broker.wait_for("latchkey-server ready");
    assert!(ready.contains(r#""serving_threads":"2""#), "the log says how it serves: {ready}");
    let base = format!("http://{}", broker.listening());
    let http =
        reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build().unwrap();
    assert_eq!(create_on(&http, &base, TOKEN).await, (201, None));

    write_token_file(&path, &format!("{NEW_TOKEN}\n"), 0o600);
    broker.hang_up_and_await(&["workspace creation token reloaded"]);
    assert_eq!(create_on(&http, &base, TOKEN).await, invalid(), "the old token is gone");
    assert_eq!(create_on(&http, &base, NEW_TOKEN).await, (201, None));

    assert!(broker.terminate_and_wait(), "SIGTERM stops a broker on serving threads");
    let log = broker.stop();
    assert!(log.contains("latchkey-server stopped"), "it stopped cleanly: {log}");
}

#[tokio::test]
async fn one_sighup_reloads_the_certificate_and_the_token_file_each_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, token) =
        (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("token"));
    let install = |ca: &common::tls::TestCa| {
        let (chain, private) = ca.issue(&["127.0.0.1"], None).pem();
        std::fs::write(&cert, chain).unwrap();
        write_token_file(&key, &private, 0o600);
    };
    let first = common::tls::TestCa::new("First CA");
    install(&first);
    write_token_file(&token, &format!("{TOKEN}\n"), 0o600);
    let path = |file: &Path| file.display().to_string();
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--tls-cert",
            &path(&cert),
            "--tls-key",
            &path(&key),
            "--creation-token-file",
            &path(&token),
        ],
    );
    let base = format!("https://{}", broker.listening());
    let trusting = |ca: &common::tls::TestCa| {
        let ca = reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap();
        reqwest::Client::builder().tls_certs_only([ca]).build().unwrap()
    };
    assert_eq!(create_on(&trusting(&first), &base, TOKEN).await, (201, None));

    // A broken key file does not keep the new token out.
    write_token_file(&key, "not a key\n", 0o600);
    write_token_file(&token, &format!("{NEW_TOKEN}\n"), 0o600);
    broker
        .hang_up_and_await(&["TLS certificate not reloaded", "workspace creation token reloaded"]);
    let client = trusting(&first);
    assert_eq!(create_on(&client, &base, NEW_TOKEN).await, (201, None), "the old certificate");
    assert_eq!(create_on(&client, &base, TOKEN).await, invalid());

    // A bad token file does not keep the renewed certificate out.
    let second = common::tls::TestCa::new("Second CA");
    install(&second);
    write_token_file(&token, "short\n", 0o600);
    broker.hang_up_and_await(&[
        "TLS certificate and key reloaded",
        "workspace creation token not reloaded",
    ]);
    let client = trusting(&second);
    assert_eq!(create_on(&client, &base, NEW_TOKEN).await, (201, None), "the new certificate");
    assert_eq!(create_on(&client, &base, "short").await, invalid());
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Writes `contents` to `path` with permissions `mode` the way an operator replaces a secret
/// file: a new file, renamed over the old one.
fn write_token_file(path: &Path, contents: &str, mode: u32) {
    let fresh = path.with_extension("new");
    std::fs::write(&fresh, contents).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
    std::fs::rename(&fresh, path).unwrap();
}

/// What [`create_new`] and [`create_on`] return for a token that is not the broker's.
fn invalid() -> (u16, Option<String>) {
    (403, Some("creation_token_invalid".to_owned()))
}

/// Creates a workspace with `token` from a new device; returns the status and the refusal's
/// code, if any.
async fn create_new(broker: &TestBroker, token: &str) -> (u16, Option<String>) {
    let (status, body) =
        create(broker, &mut TestDevice::new(WorkspaceId::random()), Some(token)).await;
    (status, body["code"].as_str().map(str::to_owned))
}

/// As [`create_new`], on the binary serving at `base`, signed at the system's time.
async fn create_on(http: &reqwest::Client, base: &str, token: &str) -> (u16, Option<String>) {
    let mut device = TestDevice::new(WorkspaceId::random());
    let mut body = device.create_workspace_body("Acme");
    body["creation_token"] = json!(token);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let request = common::signed_request(
        http,
        (base, base),
        &device,
        "POST",
        "/v1/workspaces",
        Some(&body),
        now.as_secs(),
    );
    let (status, body) = TestBroker::send(request).await;
    (status, body["code"].as_str().map(str::to_owned))
}

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
