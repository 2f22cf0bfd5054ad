//! The `latchkey` binary end to end: help and error output against committed snapshots, and a
//! story against a real broker on loopback with the encrypted-file key store (so no keychain
//! is needed): workspace, API key from stdin, agent, grant, an agent call through the broker,
//! listings as JSON, revocation and a recovery kit.
//!
//! Snapshots live in `tests/snapshots/`; after an intended change of the text, rewrite them with
//! `LATCHKEY_UPDATE_SNAPSHOTS=1 cargo test -p latchkey-cli --test cli`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

#[allow(dead_code, reason = "shared with the client's OAuth tests, which use all of it")]
#[path = "../../../tests/support/oauth/browser.rs"]
mod browser;
#[allow(dead_code, reason = "shared with the client's OAuth tests, which use all of it")]
#[path = "../../../tests/support/oauth/servers.rs"]
mod servers;
#[path = "../../../tests/support/tls.rs"]
mod tls;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use latchkey_core::creation::CreationToken;
use latchkey_core::keys::BrokerSecretKey;
use latchkey_server::Broker;
use latchkey_server::creation::WorkspaceCreation;
use latchkey_server::store::Store;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const API_KEY: &str = "sk-cli-canary-7d1e93a0b25c";
const KEYSTORE_PASSPHRASE: &str = "key file passphrase for tests";
const RECOVERY_PASSPHRASE: &str = "recovery passphrase for tests";

/// One machine's `latchkey`: its own configuration directory and encrypted key file.
struct Latchkey {
    dir: tempfile::TempDir,
}

impl Latchkey {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LATCHKEY_CONFIG_DIR", self.dir.path())
            .env("LATCHKEY_PROFILE", "test")
            .env("LATCHKEY_KEY_STORE", "file")
            .env("LATCHKEY_KEYSTORE_PASSPHRASE", KEYSTORE_PASSPHRASE)
            .env("LATCHKEY_RECOVERY_PASSPHRASE", RECOVERY_PASSPHRASE)
            .stdin(Stdio::null());
        // A Windows process without these cannot start Winsock or find its temporary directory.
        #[cfg(windows)]
        for name in ["SYSTEMROOT", "WINDIR", "TEMP", "TMP"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
    }

    /// Runs and returns (exit code, stdout, stderr).
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        finish(self.command(args), stdin).await
    }

    /// Runs a command that must succeed with `--json` and parses its output.
    async fn json(&self, args: &[&str], stdin: Option<&str>) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (code, out, err) = self.run(&all, stdin).await;
        assert_eq!(code, 0, "latchkey {args:?} failed: {err}");
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("latchkey {args:?}: not JSON ({e}): {out}"))
    }

    /// `credential add NAME --provider custom-api-key` for `base_url` on `host`, the key from
    /// stdin.
    async fn add_custom_key(&self, name: &str, base_url: &str, host: &str, key: &str) -> Value {
        let add = ["credential", "add", "--name", name, "--provider", "custom-api-key"];
        let target = ["--base-url", base_url, "--allow-host", host, "--key-stdin"];
        self.json(&[&add[..], &target[..]].concat(), Some(key)).await
    }
}

/// Runs `command` off the test's runtime (which serves the broker meanwhile), feeding it
/// `stdin`; returns (exit code, stdout, stderr).
async fn finish(mut command: Command, stdin: Option<&str>) -> (i32, String, String) {
    let stdin = stdin.map(str::to_owned);
    let output: Output = tokio::task::spawn_blocking(move || {
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = spawn(command.stdout(Stdio::piped()).stderr(Stdio::piped()));
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Starts `command`. Under Wine, on a loaded machine, `CreateProcess` now and then fails with
/// `ERROR_INTERNAL_ERROR` (1359) before the program runs at all; nothing has happened then, so
/// that one error is retried a few times. Any other failure, or the same one five times, fails
/// the test.
fn spawn(command: &mut Command) -> std::process::Child {
    const ERROR_INTERNAL_ERROR: i32 = 1359;
    let mut attempt: u64 = 1;
    loop {
        match command.spawn() {
            Ok(child) => return child,
            Err(e)
                if cfg!(windows)
                    && e.raw_os_error() == Some(ERROR_INTERNAL_ERROR)
                    && attempt < 5 =>
            {
                eprintln!(
                    "starting {:?} failed ({e}), attempt {attempt}: retrying",
                    command.get_program()
                );
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(200 * attempt));
            }
            Err(e) => panic!("cannot start {:?}: {e}", command.get_program()),
        }
    }
}

async fn start_broker() -> (String, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
    start_broker_creating(WorkspaceCreation::Open).await
}

/// A broker that answers workspace creations as `creation` says, as a team server's operator
/// configures it.
async fn start_broker_creating(
    creation: WorkspaceCreation,
) -> (String, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
    start_broker_with(|broker| broker.with_workspace_creation(creation)).await
}

/// A broker as `configure` sets it up from the defaults, on a loopback port.
async fn start_broker_with(
    configure: impl FnOnce(Broker) -> Broker,
) -> (String, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("db.sqlite3")).await.unwrap();
    let broker = configure(Broker::new(store, BrokerSecretKey::generate().unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(latchkey_server::serve(broker, listener, async {
        let _ = stopped.await;
    }));
    (url, dir, stop)
}

/// How a team server's TLS is terminated.
#[derive(Clone, Copy, Debug)]
enum TeamTls {
    /// By a load balancer in front of the broker (here a byte-copying TLS terminator).
    Terminator,
    /// By the broker itself (`--tls-cert`, `--tls-key`).
    Native,
}

/// A broker on 127.0.0.1 reached as `https://localhost:{port}` with a certificate a private CA
/// issued, its TLS terminated as `how` says. Returns that URL, the CA's PEM, and what keeps the
/// broker alive.
async fn start_tls_broker(
    how: TeamTls,
) -> (String, String, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
    let ca = tls::TestCa::new("Acme Internal CA");
    let cert = ca.issue(&["localhost"], None);
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://localhost:{}", front.local_addr().unwrap().port());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("db.sqlite3")).await.unwrap();
    // Devices sign the origin they reach, not the address the broker's socket has.
    let broker =
        Broker::new(store, BrokerSecretKey::generate().unwrap()).with_public_origin(url.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    match how {
        TeamTls::Native => {
            let (chain, key) = cert.pem();
            let tls = latchkey_server::tls::ServerTls::from_pem(chain.as_bytes(), key.as_bytes())
                .unwrap();
            tokio::spawn(latchkey_server::serve(broker.with_tls(tls), front, stopped));
        }
        TeamTls::Terminator => {
            let acceptor = cert.acceptor();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let backend = listener.local_addr().unwrap();
            tokio::spawn(latchkey_server::serve(broker, listener, stopped));
            tokio::spawn(async move {
                while let Ok((socket, _)) = front.accept().await {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(socket).await else { return };
                        let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        }
    }
    (url, ca.pem(), dir, stop)
}

/// A loopback upstream that answers 200 and keeps each request's head.
async fn upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0_u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                record.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (base, seen)
}

fn snapshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(format!("{name}.txt"))
}

/// Compares `actual` with the committed snapshot `name` (or rewrites it on request).
fn assert_snapshot(name: &str, actual: &str) {
    let path = snapshot_path(name);
    if std::env::var_os("LATCHKEY_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("no snapshot {}: run with LATCHKEY_UPDATE_SNAPSHOTS=1 and review it", path.display())
    });
    assert_eq!(
        actual, expected,
        "the output of {name} changed; if intended, rewrite with LATCHKEY_UPDATE_SNAPSHOTS=1"
    );
}

#[tokio::test]
async fn help_reads_like_a_tour_and_matches_its_snapshots() {
    let latchkey = Latchkey::new();
    let (code, top, _) = latchkey.run(&["--help"], None).await;
    assert_eq!(code, 0);
    for must in ["A first session", "Exit codes", "workspace", "credential", "agent", "grant"] {
        assert!(top.contains(must), "--help must mention {must:?}");
    }
    assert_snapshot("help", &top);
    for noun in [
        "workspace",
        "invite",
        "device",
        "member",
        "credential",
        "connect",
        "disconnect",
        "agent",
        "grant",
        "capability",
        "approvals",
        "policy",
        "recovery",
        "provider",
        "rotate",
        "audit",
        "run",
        "proxy",
    ] {
        let (code, text, _) = latchkey.run(&[noun, "--help"], None).await;
        assert_eq!(code, 0, "{noun} --help");
        assert_snapshot(&format!("help-{noun}"), &text);
    }
    let (code, text, _) = latchkey.run(&["workspace", "create", "--help"], None).await;
    assert_eq!(code, 0, "workspace create --help");
    assert_snapshot("help-workspace-create", &text);
    let (code, text, _) = latchkey.run(&["credential", "refresh", "--help"], None).await;
    assert_eq!(code, 0, "credential refresh --help");
    assert_snapshot("help-credential-refresh", &text);
    let (code, script, _) = latchkey.run(&["completions", "bash"], None).await;
    assert_eq!(code, 0);
    assert!(script.contains("latchkey"), "bash completions name the command");
}

#[tokio::test]
async fn errors_are_one_line_with_a_hint_and_a_documented_exit_code() {
    let latchkey = Latchkey::new();
    let (code, _, err) = latchkey.run(&["workspace", "show"], None).await;
    assert_eq!(code, 3, "a profile that is not set up is `not found`: {err}");
    // One snapshot for every system: Windows joins the path with a backslash.
    let err = err
        .replace(&latchkey.dir.path().display().to_string(), "<config dir>")
        .replace("<config dir>\\", "<config dir>/");
    assert_snapshot("error-not-set-up", &err);

    let (code, _, err) = latchkey
        .run(
            &[
                "workspace",
                "create",
                "--broker",
                "http://127.0.0.1:9",
                "--name",
                "A",
                "--member-name",
                "B",
            ],
            None,
        )
        .await;
    assert_eq!(code, 5, "an unreachable broker has its own exit code: {err}");
    // The transport's own words (after "error sending request") vary by platform.
    let cut = err.find("error sending request").map_or(err.len(), |i| i + 21);
    let hint = err.find("\nhint:").unwrap_or(err.len());
    assert_snapshot(
        "error-broker-unreachable",
        &format!("{}: <transport detail>{}", &err[..cut], &err[hint..]),
    );
    assert_eq!(err.lines().count(), 2, "one error line and one hint: {err}");

    let (code, _, err) = latchkey.run(&["--profile", "other", "credential", "list"], None).await;
    assert_eq!(code, 3, "listing in a profile that is not set up is `not found`: {err}");
    assert!(err.contains("profile `other` is not set up"), "--profile wins over the env: {err}");

    let (code, _, err) = latchkey.run(&["--profile", "Bad Name!", "workspace", "show"], None).await;
    assert_eq!(code, 1, "an invalid profile name is refused: {err}");
    assert_snapshot("error-bad-profile", &err);

    // A value that cannot be what its argument names is a usage error, refused while the
    // command line is read: before any profile, key store or broker is opened.
    let (code, _, err) = latchkey.run(&["agent", "revoke", "not-an-id"], None).await;
    assert_eq!(
        code, 2,
        "a malformed id is a usage error, refused before anything is opened: {err}"
    );
    assert_snapshot("error-bad-id", &err);
    let some_agent = "0f8e1c2d-0000-4000-8000-000000000000";
    let grant = |method: &'static str, duration: &'static str| {
        ["grant", "create", "--agent", some_agent, "--credential", "x", "--method", method]
            .into_iter()
            .chain(["--path", "/**", "--for", duration])
            .collect::<Vec<_>>()
    };
    let (code, _, err) = latchkey.run(&grant("GET", "8 hours"), None).await;
    assert_eq!(code, 2, "a malformed --for is a usage error: {err}");
    assert_snapshot("error-bad-duration", &err);
    let (code, _, err) = latchkey.run(&grant("FETCH", "8h"), None).await;
    assert_eq!(code, 2, "an unknown --method is a usage error: {err}");
    assert_snapshot("error-bad-method", &err);
    for (args, why) in [
        (&["audit", "list", "--agent", "notuuid"][..], "a malformed --agent filter"),
        (&["grant", "list", "--agent", "notuuid"][..], "a malformed --agent filter of grants"),
        (&["approvals", "deny", "nope"][..], "a malformed approval id"),
        (&["device", "receive-keys", "--from", "nope"][..], "a malformed fingerprint"),
        (&["policy", "remove", "check"][..], "a name that is not a policy id"),
        (&["invite", "create", "--for", "8d"][..], "an invite longer than the broker keeps one"),
        (&["invite", "create", "--for", "30s"][..], "an invite too short to read out"),
        (
            &["proxy", "--agent", some_agent, "--credential", "c", "--for", "soon"][..],
            "a bad --for",
        ),
        (
            &["proxy", "--agent", some_agent, "--credential", "c", "--method", "BREW"][..],
            "a bad --method",
        ),
        (
            &["run", "--agent", "nope", "--credential", "c", "--", "true"][..],
            "a malformed agent id",
        ),
    ] {
        let (code, _, err) = latchkey.run(args, None).await;
        assert_eq!(code, 2, "{why} is a usage error (exit code 2), not a failure: {err}");
        assert!(err.starts_with("error: invalid value"), "{why}: clap names the value: {err}");
    }
    let (code, _, err) = latchkey
        .run(
            &[
                "workspace",
                "join",
                "--broker",
                "http://127.0.0.1:9",
                "--member-name",
                "B",
                "--code-stdin",
            ],
            Some("not an invite code"),
        )
        .await;
    assert_eq!(code, 2, "a malformed invite code is a usage error: {err}");
    assert_snapshot("error-bad-invite-code", &err);

    let (code, _, err) = latchkey.run(&["grant", "create", "--agent", "x"], None).await;
    assert_eq!(code, 2, "a usage error is exit code 2: {err}");
    let (code, _, err) = latchkey
        .run(&["credential", "add", "--name", "x", "--provider", "openai", "--key", "k"], None)
        .await;
    assert_eq!(code, 2, "there is no flag that takes a key on the command line: {err}");

    let (code, _, err) = latchkey
        .run(
            &[
                "workspace",
                "create",
                "--broker",
                "ftp://example.com",
                "--name",
                "A",
                "--member-name",
                "B",
            ],
            None,
        )
        .await;
    assert_eq!(code, 2, "a bad URL is a usage error, refused before anything is created: {err}");
    assert!(err.contains("--broker"), "the message names the flag: {err}");
}

#[tokio::test]
async fn a_team_server_behind_tls_is_used_once_its_ca_is_trusted_and_a_refusal_says_why() {
    team_server_over_tls(TeamTls::Terminator).await;
}

#[tokio::test]
async fn a_team_server_serving_tls_itself_is_used_the_same_way() {
    team_server_over_tls(TeamTls::Native).await;
}

async fn team_server_over_tls(how: TeamTls) {
    let (broker, ca_pem, _broker_dir, stop) = start_tls_broker(how).await;
    let ada = Latchkey::new();
    let create =
        ["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"];

    // The private CA is not in this computer's trust store.
    let (code, _, err) = ada.run(&create, None).await;
    assert_eq!(code, 5, "a refused certificate is a broker that cannot be used: {err}");
    assert_snapshot("error-broker-certificate", &err.replace(&broker, "https://localhost:<port>"));
    let (code, _, err) = ada.run(&["workspace", "show"], None).await;
    assert_eq!(code, 3, "nothing was set up with a broker whose certificate was refused: {err}");

    // A plain-HTTP broker behind an https:// URL: the handshake itself fails.
    let (plain, _plain_dir, plain_stop) = start_broker().await;
    let misdialled = plain.replace("http://", "https://");
    let (code, _, err) = ada
        .run(
            &["workspace", "create", "--broker", &misdialled, "--name", "A", "--member-name", "B"],
            None,
        )
        .await;
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("TLS handshake") && err.contains("scheme and port"),
        "a server that does not speak TLS is named as such: {err}"
    );
    let _ = plain_stop.send(());

    // A LATCHKEY_BROKER_CA file that cannot be used stops the command before any connection.
    let ca_file = ada.dir.path().join("acme-ca.pem");
    let not_a_bundle = ada.dir.path().join("notes.txt");
    std::fs::write(&not_a_bundle, "the CA is on the wiki\n").unwrap();
    let mut command = ada.command(&create);
    command.env("LATCHKEY_BROKER_CA", &not_a_bundle);
    let (code, _, err) = finish(command, None).await;
    assert_eq!(code, 2, "a broker CA file that cannot be used is a usage error: {err}");
    assert!(
        err.contains("LATCHKEY_BROKER_CA names")
            && err.contains("notes.txt")
            && err.contains("no certificate found"),
        "the variable, the file and the problem are named: {err}"
    );

    // Trusted through LATCHKEY_BROKER_CA (the system's trust store would do the same), the
    // team server works: every signed request crosses the terminator and verifies at the broker.
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let trusting = |args: &[&str]| {
        let mut command = ada.command(&[&["--json"], args].concat());
        command.env("LATCHKEY_BROKER_CA", &ca_file);
        finish(command, None)
    };
    let (code, out, err) = trusting(&create).await;
    assert_eq!(code, 0, "with the CA trusted the workspace is created: {err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let (code, _, err) = trusting(&["agent", "create", "ci-bot"]).await;
    assert_eq!(code, 0, "signed requests verify at the broker behind the terminator: {err}");
    let (code, out, err) = trusting(&["workspace", "show"]).await;
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["workspace"], created["workspace"], "{shown}");
    assert_eq!(shown["broker_ca"], Value::Null, "the variable's CA is not kept in the profile");

    // Trusted in the profile instead (--broker-ca), with no variable set: kept for every
    // later command, shown by its fingerprint, replaced only by authorities the broker is
    // reachable with.
    let bea = Latchkey::new();
    let bea_create = [&create[..], &["--broker-ca", ca_file.to_str().unwrap()]].concat();
    let mut refused =
        bea.command(&[&create[..], &["--broker-ca", not_a_bundle.to_str().unwrap()]].concat());
    refused.env("LATCHKEY_BROKER_CA", &ca_file);
    let (code, _, err) = finish(refused, None).await;
    assert_eq!(code, 2, "an unusable --broker-ca file is a usage error, variable or not: {err}");
    assert!(
        err.contains("notes.txt cannot be used: no certificate found") && err.contains("hint:"),
        "the file and the problem are named: {err}"
    );
    let (code, _, err) = bea.run(&bea_create, None).await;
    assert_eq!(code, 0, "with --broker-ca the workspace is created: {err}");
    let (code, _, err) = bea.run(&["agent", "create", "ci-bot"], None).await;
    assert_eq!(code, 0, "later commands trust the profile's CA, no variable needed: {err}");
    // The local agent proxy of `run` is a client of its own: it trusts the profile's CA too.
    let (upstream_base, seen) = upstream().await;
    let host = upstream_base.trim_start_matches("http://").to_owned();
    bea.add_custom_key("models", &upstream_base, &host, API_KEY).await;
    let agent = bea.json(&["agent", "create", "runner"], None).await;
    let script = "import os, urllib.request\n\
        req = urllib.request.Request(os.environ['LATCHKEY_MODELS_URL'] + '/v1/models', \
        headers={'Authorization': 'Bearer ' + os.environ['LATCHKEY_AGENT_TOKEN']})\n\
        print(urllib.request.urlopen(req).status)\n";
    let agent_id = agent["agent"]["id"].as_str().unwrap();
    let run = ["run", "--agent", agent_id, "--credential", "models", "--", "python3", "-c", script];
    let mut command = bea.command(&run);
    command.env("LATCHKEY_AGENT_TOKEN", agent["token"].as_str().unwrap());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "200",
        "the call went through the local proxy to the TLS broker: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "and reached the upstream once");
    let ca_fingerprint = latchkey_core::tls::TrustAnchors::from_pem(ca_pem.as_bytes())
        .unwrap()
        .sha256_fingerprints();
    let shown = |out: &str| serde_json::from_str::<Value>(out).unwrap()["broker_ca"].clone();
    let (code, out, err) = bea.run(&["--json", "workspace", "show"], None).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(shown(&out), serde_json::json!(ca_fingerprint), "the kept CA, by fingerprint");

    let (code, _, err) = bea.run(&["workspace", "broker-ca", "--clear"], None).await;
    assert_eq!(code, 5, "the system's authorities alone cannot reach this broker: {err}");
    assert!(
        err.contains("not trusted here"),
        "the broker's certificate refusal is the reason: {err}"
    );
    let (code, _, err) =
        bea.run(&["workspace", "broker-ca", not_a_bundle.to_str().unwrap()], None).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no certificate found"), "{err}");
    let (code, out, err) = bea.run(&["--json", "workspace", "show"], None).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(shown(&out), serde_json::json!(ca_fingerprint), "refused changes leave the CA kept");
    let (code, out, err) =
        bea.run(&["--json", "workspace", "broker-ca", ca_file.to_str().unwrap()], None).await;
    assert_eq!(code, 0, "authorities the broker answers with are accepted: {err}");
    assert_eq!(shown(&out), serde_json::json!(ca_fingerprint), "{out}");

    // What a joining device needs: the PEM to pass on, named in the invite.
    let (code, out, err) = bea.run(&["workspace", "broker-ca", "--print"], None).await;
    assert_eq!(code, 0, "{err}");
    let printed = latchkey_core::tls::TrustAnchors::from_pem(out.as_bytes())
        .expect("--print writes PEM another device can use");
    assert_eq!(printed.sha256_fingerprints(), ca_fingerprint, "the same authority");
    let (code, out, err) = bea.run(&["--json", "invite", "create"], None).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(shown(&out), serde_json::json!(ca_fingerprint), "the invite names it: {out}");
    let (code, out, err) = bea.run(&["invite", "create"], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("latchkey workspace broker-ca --print"),
        "and says how to pass it on: {out}"
    );
    let (code, _, err) = trusting(&["workspace", "broker-ca", "--print"]).await;
    assert_eq!(code, 3, "a profile without its own authority has nothing to print: {err}");
    let _ = stop.send(());
}

const CREATION_TOKEN: &str = "lkct-cli-canary-Qx7Mz2Rv9Lp4Wn8Ks3Jd6Hb1";

/// Every file under `dir`, recursively, with its contents.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
        }
    }
    files
}

#[tokio::test]
async fn a_team_server_creates_a_workspace_only_with_its_creation_token_never_taken_from_argv() {
    let token = CreationToken::parse(CREATION_TOKEN).unwrap();
    let (broker, broker_dir, _stop) =
        start_broker_creating(WorkspaceCreation::with_token(&token)).await;
    let create = [
        "workspace",
        "create",
        "--broker",
        broker.as_str(),
        "--name",
        "Acme",
        "--member-name",
        "Ada",
    ];
    let with_stdin = [&create[..], &["--creation-token-stdin"]].concat();
    let ada = Latchkey::new();
    let mut transcript = String::new();

    let (code, out, err) = ada.run(&create, None).await;
    transcript.push_str(&format!("{out}{err}"));
    assert_eq!(code, 4, "a creation the broker refuses is exit 4: {err}");
    assert!(
        err.contains("creates workspaces only with its creation token")
            && err.contains("hint: set LATCHKEY_CREATION_TOKEN, or pass --creation-token"),
        "the error says what is missing and the hint how to give it: {err}"
    );

    let mut wrong = ada.command(&create);
    wrong.env("LATCHKEY_CREATION_TOKEN", "lkct-cli-wrong-0000000000000000000000");
    let (code, out, err) = finish(wrong, None).await;
    transcript.push_str(&format!("{out}{err}"));
    assert_eq!(code, 4, "a wrong token from the environment is refused by the broker: {err}");
    assert!(
        err.contains("refused the creation token") && err.contains("hint: check the token"),
        "{err}"
    );
    assert!(!err.contains("lkct-cli-wrong"), "the error never repeats the token: {err}");

    let (code, _, err) = ada.run(&with_stdin, Some("two words\n")).await;
    assert_eq!(code, 2, "a token that cannot be one is a usage error, before the broker: {err}");
    assert!(!err.contains("two words"), "and it is not echoed: {err}");
    let (code, _, err) =
        ada.run(&[&create[..], &["--creation-token", CREATION_TOKEN]].concat(), None).await;
    assert_eq!(code, 2, "no flag takes the token on the command line: {err}");
    let (code, _, err) = ada.run(&[&create[..], &["--creation-token"]].concat(), None).await;
    assert_eq!(code, 1, "the hidden prompt needs a terminal: {err}");
    assert!(err.contains("set LATCHKEY_CREATION_TOKEN"), "and says what else works: {err}");
    let (code, _, _) = ada.run(&["workspace", "show"], None).await;
    assert_eq!(code, 3, "no refused creation set the profile up");

    let mut right = ada.command(&create);
    right.env("LATCHKEY_CREATION_TOKEN", CREATION_TOKEN);
    let (code, out, err) = finish(right, None).await;
    transcript.push_str(&format!("{out}{err}"));
    assert_eq!(code, 0, "the operator's token from the environment creates it: {err}");
    assert!(out.contains("Created workspace Acme"), "{out}");

    let bea = Latchkey::new();
    let (code, out, err) = bea.run(&with_stdin, Some(&format!("{CREATION_TOKEN}\n"))).await;
    transcript.push_str(&format!("{out}{err}"));
    assert_eq!(code, 0, "or from standard input, with its newline: {err}");

    assert!(!transcript.contains(CREATION_TOKEN), "no output shows the token: {transcript}");
    for dir in [ada.dir.path(), bea.dir.path(), broker_dir.path()] {
        for (path, bytes) in files_under(dir) {
            assert!(
                !bytes.windows(CREATION_TOKEN.len()).any(|w| w == CREATION_TOKEN.as_bytes()),
                "{} must not hold the creation token",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn a_closed_team_server_sends_the_cli_to_join_with_an_invite() {
    let (broker, _dir, _stop) = start_broker_creating(WorkspaceCreation::Closed).await;
    let ada = Latchkey::new();
    let mut create = ada.command(&[
        "workspace",
        "create",
        "--broker",
        &broker,
        "--name",
        "Acme",
        "--member-name",
        "Ada",
    ]);
    create.env("LATCHKEY_CREATION_TOKEN", CREATION_TOKEN);
    let (code, _, err) = finish(create, None).await;
    assert_eq!(code, 4, "refused by the broker: {err}");
    assert!(
        err.contains("does not create workspaces")
            && err.contains("hint: join a workspace with `latchkey workspace join`"),
        "the way in that remains: {err}"
    );
}

#[tokio::test]
async fn a_creation_the_broker_refuses_at_a_limit_exits_4_with_the_brokers_message() {
    let (broker, broker_dir, _stop) = start_broker().await;
    let ada = Latchkey::new();
    let created = ada
        .json(
            &["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"],
            None,
        )
        .await;
    // The workspace's pending invites, filled to the broker's limit straight in its database.
    let limit = latchkey_server::store::members::MAX_PENDING_INVITES;
    let file =
        sqlx::sqlite::SqliteConnectOptions::new().filename(broker_dir.path().join("db.sqlite3"));
    let db = sqlx::SqlitePool::connect_with(file).await.unwrap();
    let now = i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
    )
    .unwrap();
    for i in 0..limit {
        sqlx::query(
            "INSERT INTO invites (workspace_id, code_hash, role, created_by, created_at, expires_at, id)
             VALUES ($1, $2, 'member', $3, $4, $5, $6)",
        )
        .bind(created["workspace"].as_str().unwrap())
        .bind(<sha2::Sha256 as sha2::Digest>::digest(format!("invite {i}")).to_vec())
        .bind(created["device"].as_str().unwrap())
        .bind(now)
        .bind(now + 86_400)
        .bind(latchkey_core::ids::InviteId::random().to_string())
        .execute(&db)
        .await
        .unwrap();
    }
    db.close().await;

    let (code, out, err) = ada.run(&["invite", "create"], None).await;
    assert_eq!(code, 4, "a refusal by the broker is exit 4, whatever the reason: {err}");
    assert!(out.is_empty(), "no code is printed for an invite that was not made: {out}");
    assert!(
        err.starts_with("error: ")
            && err.contains("(limit_reached)")
            && err.contains(&format!("at most {limit} pending invites"))
            && err.contains("latchkey invite revoke ID"),
        "the broker's code and its message, which names the limit and the way under it: {err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: the message says what to do: {err}");
}

#[tokio::test]
async fn a_device_over_the_brokers_rate_limit_exits_4_saying_how_long_to_wait() {
    // One request at once, one a second: `invite list` sends two at once when there is an
    // invite to list (the invites, then the members who made them).
    let limit = latchkey_server::rate_limit::DeviceRateLimit::new(1, 1).unwrap();
    let (broker, _dir, _stop) =
        start_broker_with(|broker| broker.with_device_rate_limit(Some(limit))).await;
    let ada = Latchkey::new();
    let create = ["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name"];
    ada.json(&[&create[..], &["Ada"]].concat(), None).await;
    ada.json(&["invite", "create"], None).await;

    let (code, out, err) = ada.run(&["invite", "list"], None).await;
    assert_eq!(code, 4, "a refusal by the broker: {err}");
    assert!(out.is_empty(), "nothing listed from a half-answered command: {out}");
    assert!(
        err.starts_with("error: ")
            && err.contains("(rate_limited)")
            && err.contains("wait 1 second and try again")
            && err.contains("an admin should remove the device"),
        "the wait, from the broker's Retry-After, and what to do if nobody sent them: {err}"
    );
    assert!(
        err.contains("hint: an admin removes a device with `latchkey device remove ID`"),
        "the command that does it: {err}"
    );
}

#[tokio::test]
async fn connect_refuses_what_it_cannot_connect_before_anything_is_opened() {
    // No profile is set up: each refusal comes before the key store or the network.
    let latchkey = Latchkey::new();
    let (code, _, err) = latchkey.run(&["connect", "openai", "--client-id", "x"], None).await;
    assert_eq!(code, 1, "{err}");
    assert_snapshot("error-connect-api-key-provider", &err);
    let (code, _, err) = latchkey.run(&["connect", "nope"], None).await;
    assert_eq!(code, 3, "an unknown provider is `not found`: {err}");
    assert_snapshot("error-connect-unknown-provider", &err);
    let (code, _, err) = latchkey.run(&["connect", "github"], None).await;
    assert_eq!(code, 1, "{err}");
    assert_snapshot("error-connect-no-client-id", &err);
    let (code, _, err) = latchkey
        .run(
            &["connect", "custom-oauth2", "--client-id", "x", "--base-url", "https://a.test"],
            None,
        )
        .await;
    assert_eq!(code, 1, "{err}");
    assert_snapshot("error-connect-no-endpoints", &err);
    let (code, _, err) = latchkey
        .run(&["connect", "github", "--client-id", "x", "--issuer", "https://evil.test"], None)
        .await;
    assert_eq!(code, 1, "a catalog provider's endpoints cannot be moved: {err}");
    assert!(err.contains("only for custom-oauth2"), "{err}");
    let (code, _, err) = latchkey
        .run(&["connect", "custom-oauth2", "--authorize-url", "https://a.test/auth"], None)
        .await;
    assert_eq!(code, 2, "--authorize-url without --token-url is a usage error: {err}");
    // Zendesk's endpoints live on each account: they are asked for, and taken on its host only.
    let zendesk = ["connect", "zendesk", "--client-id", "x", "--base-url"];
    let base = "https://acme.zendesk.com/api/v2";
    let (code, _, err) = latchkey.run(&[&zendesk[..], &[base]].concat(), None).await;
    assert_eq!(code, 1, "{err}");
    assert_snapshot("error-connect-zendesk-no-endpoints", &err);
    let elsewhere = [
        base,
        "--authorize-url",
        "https://evil.test/oauth/authorizations/new",
        "--token-url",
        "https://acme.zendesk.com/oauth/tokens",
    ];
    let (code, _, err) = latchkey.run(&[&zendesk[..], &elsewhere].concat(), None).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("https://evil.test/oauth/authorizations/new is not on your account's host"),
        "an endpoint off the account's host is refused before any sign-in: {err}"
    );
    let (code, _, err) = latchkey.run(&["connect", "github", "--client-secret", "s"], None).await;
    assert_eq!(code, 2, "there is no flag that takes a client secret: {err}");
    let (code, _, err) = latchkey.run(&["disconnect", "idp"], None).await;
    assert_eq!(code, 3, "disconnect in a profile that is not set up: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_sets_up_an_agent_from_the_terminal_and_its_call_goes_through_the_broker() {
    let (broker, _broker_dir, stop) = start_broker().await;
    let (upstream_base, seen) = upstream().await;
    let host = upstream_base.trim_start_matches("http://").to_owned();
    let ada = Latchkey::new();

    let created = ada
        .json(
            &["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"],
            None,
        )
        .await;
    assert!(
        created["fingerprint"].as_str().is_some_and(|f| !f.is_empty()),
        "creation shows the fingerprint to compare: {created}"
    );
    let shown = ada.json(&["workspace", "show"], None).await;
    assert_eq!(shown["workspace"], created["workspace"]);
    assert_eq!(shown["fingerprint"], created["fingerprint"], "show repeats the fingerprint");

    let stored = ada
        .json(
            &[
                "credential",
                "add",
                "--name",
                "openai",
                "--provider",
                "custom-api-key",
                "--base-url",
                &upstream_base,
                "--allow-host",
                &host,
                "--header",
                "Authorization",
                "--prefix",
                "Bearer ",
                "--key-stdin",
            ],
            Some(&format!("{API_KEY}\n")),
        )
        .await;
    assert_eq!(stored["name"], "openai");
    assert_eq!(stored["status"], "active");
    // A catalog provider needs no URLs: the catalog has its base URL, hosts and header.
    let real = ada
        .json(
            &["credential", "add", "--name", "openai-real", "--provider", "openai", "--key-stdin"],
            Some(API_KEY),
        )
        .await;
    assert_eq!(real["upstream_base_url"], "https://api.openai.com");
    assert_eq!(real["allowed_hosts"], serde_json::json!(["api.openai.com"]));
    let (code, _, err) = ada
        .run(
            &[
                "credential",
                "add",
                "--name",
                "moved",
                "--provider",
                "openai",
                "--base-url",
                "https://attacker.example",
                "--key-stdin",
            ],
            Some(API_KEY),
        )
        .await;
    assert_eq!(code, 1, "a catalog provider's base URL cannot be moved: {err}");
    let (code, _, err) = ada
        .run(
            &["credential", "add", "--name", "x", "--provider", "nope", "--key-stdin"],
            Some(API_KEY),
        )
        .await;
    assert_eq!(code, 3, "an unknown provider is `not found`: {err}");
    assert!(err.contains("latchkey provider list"), "{err}");
    let (code, _, err) = ada
        .run(
            &["credential", "add", "--name", "gh", "--provider", "github", "--key-stdin"],
            Some(API_KEY),
        )
        .await;
    assert_eq!(code, 1, "OAuth providers are not API keys: {err}");
    assert!(err.contains("OAuth"), "{err}");
    assert!(!err.contains(API_KEY), "no error repeats the key: {err}");
    let found = ada.json(&["provider", "list", "git"], None).await;
    assert_eq!(found[0]["id"], "github", "provider search: {found}");
    ada.json(&["credential", "remove", "openai-real"], None).await;

    let listed = ada.json(&["credential", "list"], None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert!(!listed.to_string().contains(API_KEY), "listings never carry the key");

    let agent = ada.json(&["agent", "create", "ci-bot"], None).await;
    let agent_id = agent["agent"]["id"].as_str().unwrap().to_owned();
    let token = agent["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("lk_"), "the agent token is shown once");

    let grant = ada
        .json(
            &[
                "grant",
                "create",
                "--agent",
                &agent_id,
                "--credential",
                "openai",
                "--method",
                "get",
                "--path",
                "/v1/**",
                "--for",
                "1h",
            ],
            None,
        )
        .await;
    let capability = grant["capability"].as_str().unwrap().to_owned();
    let grant_id = grant["grant"]["id"].as_str().unwrap().to_owned();

    // The agent's call: token and capability only.
    let http = reqwest::Client::new();
    let call = || {
        http.get(format!("{broker}/p/openai/v1/models"))
            .bearer_auth(&token)
            .header("latchkey-capability", &capability)
            .send()
    };
    assert_eq!(call().await.unwrap().status(), 200, "the granted call goes through");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(
            seen[0].contains(&format!("Bearer {API_KEY}"))
                || seen[0].contains(&format!("bearer {API_KEY}")),
            "the upstream receives the real key: {}",
            seen[0]
        );
    }
    let agents = ada.json(&["agent", "list"], None).await;
    assert!(agents[0]["last_used_at"].is_u64(), "the agent's use is listed: {agents}");
    let grants = ada.json(&["grant", "list", "--agent", &agent_id], None).await;
    assert_eq!(grants[0]["id"], grant_id.as_str());

    // The audit log shows the call and verifies, on the broker and on this device.
    let records =
        ada.json(&["audit", "list", "--credential", "openai", "--decision", "allowed"], None).await;
    assert!(
        records.as_array().unwrap().iter().any(|r| r["record"]["kind"] == "proxy_attempt"),
        "the allowed call is audited: {records}"
    );
    let verified = ada.json(&["audit", "verify"], None).await;
    assert_eq!(verified["broker"]["ok"], true, "{verified}");
    assert_eq!(verified["local"]["ok"], true, "{verified}");
    assert_eq!(
        verified["local"]["head"], verified["broker"]["head"],
        "both checks agree on the head"
    );
    // The device keeps the verified head; a later log that no longer holds it is refused, though
    // it would chain soundly on its own (records removed from the end, or a rewritten history).
    let anchor_file = ada.dir.path().join("test.audit-anchor");
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&anchor_file).unwrap())
        .expect("the device keeps the head it verified");
    assert_eq!(
        (&kept["seq"], &kept["hash"]),
        (&verified["local"]["records"], &verified["local"]["head"]),
        "the anchor is the verified head"
    );
    let again = ada.json(&["audit", "verify"], None).await;
    assert_eq!(again["anchor"]["seq"], kept["seq"], "the next check is made against it: {again}");
    assert_eq!(again["local"]["checked_from"], 1, "a full check reads from the first record");
    let quick = ada.json(&["audit", "verify", "--since-anchor"], None).await;
    let head = quick["local"]["records"].as_u64().expect("the chain's length");
    let from = again["local"]["records"].as_u64().expect("the previous head");
    assert_eq!(
        (quick["local"]["checked_from"].as_u64(), quick["local"]["checked"].as_u64()),
        (Some(from), Some(head - from + 1)),
        "--since-anchor reads from the anchored record to the head, nothing before: {quick}"
    );
    let (code, text, _) = ada.run(&["audit", "verify", "--since-anchor"], None).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("without --since-anchor re-reads every record"), "{text}");
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&anchor_file).unwrap())
        .expect("the anchor moved on to the head");
    for (field, value, says) in [
        ("seq", serde_json::json!(1_000_000), "removed from its end"),
        ("hash", serde_json::json!("ab".repeat(32)), "the log was rewritten"),
    ] {
        let mut moved = kept.clone();
        moved[field] = value;
        std::fs::write(&anchor_file, moved.to_string()).unwrap();
        for verify in [&["audit", "verify"][..], &["audit", "verify", "--since-anchor"]] {
            let (code, out, err) = ada.run(verify, None).await;
            assert_eq!(code, 1, "a log that lost the anchored record does not verify: {out} {err}");
            assert!(out.contains(says), "{verify:?} says what happened ({says}): {out}");
            let still: Value =
                serde_json::from_str(&std::fs::read_to_string(&anchor_file).unwrap())
                    .expect("an anchor");
            assert_eq!(still, moved, "a failed check never moves the anchor");
        }
    }
    std::fs::write(&anchor_file, "not an anchor").unwrap();
    let (code, _, err) = ada.run(&["audit", "verify"], None).await;
    assert_eq!(code, 1, "an unreadable anchor is an error, not a fresh start: {err}");
    assert!(err.contains("move it away"), "the error says how to start over: {err}");
    std::fs::write(&anchor_file, kept.to_string()).unwrap();
    let csv = ada.dir.path().join("audit.csv");
    ada.json(&["audit", "export", "--format", "csv", "--out", &csv.display().to_string()], None)
        .await;
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    assert!(csv_text.starts_with("seq,at_ms,kind,"), "a CSV with its header row");
    assert!(!csv_text.contains(API_KEY) && !csv_text.contains(&token), "no secret in the export");
    let again = ["audit", "export", "--out", &csv.display().to_string()];
    let (code, _, err) = ada.run(&again, None).await;
    assert_eq!(code, 1, "an export never writes over a file: {err}");
    assert!(err.contains("must be a new file"), "{err}");
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), csv_text, "the first export is intact");

    // Text output is for people, and still never shows the key.
    let (code, text, _) = ada.run(&["credential", "list"], None).await;
    assert_eq!(code, 0);
    assert!(text.contains("openai") && !text.contains(API_KEY), "{text}");
    let (code, shown, _) = ada.run(&["credential", "show", "openai"], None).await;
    assert_eq!(code, 0);
    assert!(shown.contains("status         active"), "{shown}");
    assert!(
        text.contains(" active ") && !text.contains("Active"),
        "the listing words a status as `credential show` does, not as a Rust name: {text}"
    );

    // A recovery kit, never overwriting a file.
    let kit = ada.dir.path().join("kit.txt");
    let kit_arg = kit.display().to_string();
    ada.json(&["recovery", "export", "--out", &kit_arg], None).await;
    let kit_text = std::fs::read_to_string(&kit).unwrap();
    assert!(kit_text.starts_with("LATCHKEY RECOVERY KIT v1"));
    #[cfg(unix)]
    for (file, what) in [(&kit, "a recovery kit"), (&csv, "an audit export")] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{what} is readable by its owner alone, not {mode:o}");
    }
    let (code, _, err) = ada.run(&["recovery", "export", "--out", &kit_arg], None).await;
    assert_eq!(code, 1, "an existing kit file is never overwritten: {err}");
    let again = ada.json(&["recovery", "import", &kit_arg], None).await;
    assert_eq!(again["already_present"], 2, "importing its own kit changes nothing");

    // Revocation is enforced at the next call.
    ada.json(&["grant", "revoke", &grant_id], None).await;
    assert_eq!(call().await.unwrap().status(), 403, "a revoked grant's capability is refused");
    let (code, _, err) = ada.run(&["credential", "remove", "nothing"], None).await;
    assert_eq!(code, 3, "removing an unknown credential is `not found`: {err}");
    ada.json(&["credential", "remove", "openai"], None).await;
    ada.json(&["agent", "revoke", &agent_id], None).await;
    assert_eq!(call().await.unwrap().status(), 401, "a revoked agent is refused");
    assert_eq!(seen.lock().unwrap().len(), 1, "refused calls never reach the upstream");

    // A wrong key-file passphrase is a key store error, and says so.
    let (code, _, err) = {
        let mut command = ada.command(&["workspace", "show"]);
        command.env("LATCHKEY_KEYSTORE_PASSPHRASE", "not the passphrase");
        finish(command, None).await
    };
    assert_eq!(code, 6, "a wrong passphrase is a key store failure: {err}");
    assert!(!err.contains("not the passphrase"), "the passphrase is never echoed: {err}");
    let _ = stop.send(());
}

/// Rotation is killed (SIGKILL) at spread-out points, again and again; after every kill each
/// credential still opens under exactly the one version the broker has for it, with a key this
/// device holds, and a final run finishes whatever was interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_killed_at_any_point_leaves_every_credential_readable_under_one_version() {
    use latchkey_client::keychain::{EncryptedFileStore, SharedKeyStore};
    use latchkey_client::profile::{Profile, ProfileName};
    use latchkey_core::payload::CredentialPayload;

    let (broker, _broker_dir, stop) = start_broker().await;
    let ada = Latchkey::new();
    ada.json(
        &["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"],
        None,
    )
    .await;
    let names = ["alpha", "beta", "gamma", "delta"];
    for name in names {
        ada.json(
            &[
                "credential",
                "add",
                "--name",
                name,
                "--provider",
                "custom-api-key",
                "--base-url",
                "https://api.example.com",
                "--allow-host",
                "api.example.com",
                "--header",
                "x-api-key",
                "--key-stdin",
            ],
            Some(&format!("key-of-{name}")),
        )
        .await;
    }

    let profile = Profile::new(ProfileName::named("test").unwrap(), ada.dir.path());
    let check = |round: usize| {
        let profile = profile.clone();
        async move {
            let store: SharedKeyStore = std::sync::Arc::new(
                EncryptedFileStore::open(
                    profile.key_file_path(),
                    profile.name(),
                    latchkey_core::secret::SecretBytes::copy_from(KEYSTORE_PASSPHRASE.as_bytes()),
                )
                .unwrap_or_else(|e| panic!("round {round}: the key file must survive a kill: {e}")),
            );
            let client = latchkey_client::workspace::broker_client(&profile, &store).await.unwrap();
            let config = profile.load_config().unwrap();
            let mut versions = std::collections::BTreeSet::new();
            for credential in client.credentials().await.unwrap() {
                let (version, envelope) = client.credential_envelope(credential.id).await.unwrap();
                versions.insert(version);
                let key = store
                    .load_workspace_key(config.workspace, version)
                    .unwrap_or_else(|e| panic!("round {round}: no key for version {version}: {e}"))
                    .record_key(credential.id)
                    .unwrap();
                let plaintext = envelope.open(&key).unwrap_or_else(|_| {
                    panic!("round {round}: {} does not open under {version}", credential.name)
                });
                let payload = CredentialPayload::decode(plaintext.expose_secret()).unwrap();
                assert_eq!(
                    payload.secret.expose_secret(),
                    format!("key-of-{}", credential.name).as_bytes(),
                    "round {round}: {} keeps its secret",
                    credential.name
                );
            }
            assert_eq!(
                versions.len(),
                1,
                "round {round}: all shared credentials at one version: {versions:?}"
            );
            versions.into_iter().next().unwrap()
        }
    };

    // Kill points spread over one whole run: a timed, uninterrupted rotation gives its length,
    // and the kills land at 1/16 steps of it (plus a little past the end), so they fall before
    // the key file opens, while keys are derived, while re-sealing and around the commit on a
    // fast machine and a slow one alike.
    let started = std::time::Instant::now();
    ada.json(&["rotate"], None).await;
    let full = started.elapsed();
    let delays: Vec<std::time::Duration> = (1..=18).map(|k| full * k / 16).collect();
    let mut last = check(0).await;
    for (round, delay) in delays.into_iter().enumerate() {
        let mut child =
            spawn(ada.command(&["--json", "rotate"]).stdout(Stdio::null()).stderr(Stdio::null()));
        tokio::time::sleep(delay).await;
        // SIGKILL; the child may have finished already, which is also a valid point.
        let _ = child.kill();
        let _ = tokio::task::spawn_blocking(move || child.wait()).await.unwrap();
        let now = check(round + 1).await;
        assert!(now == last || now == last.next().unwrap(), "round {round}: one step at most");
        last = now;
    }
    // A run to the end finishes anything interrupted and leaves everything readable.
    let done = ada.json(&["rotate"], None).await;
    let final_version = check(99).await;
    assert_eq!(
        done["to"].as_u64(),
        Some(u64::from(final_version.get())),
        "the final run ends at the broker's version"
    );
    let _ = stop.send(());
}

/// `latchkey run`: the command reaches the upstream through a private local proxy with only the
/// agent token; its exit status comes back; the grants made for it are revoked afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_gives_a_command_a_local_proxy_for_its_lifetime_and_passes_its_exit_status() {
    let (broker, _broker_dir, stop) = start_broker().await;
    let (upstream_base, seen) = upstream().await;
    let host = upstream_base.trim_start_matches("http://").to_owned();
    let ada = Latchkey::new();
    ada.json(
        &["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"],
        None,
    )
    .await;
    ada.add_custom_key("models", &upstream_base, &host, API_KEY).await;
    let agent = ada.json(&["agent", "create", "runner"], None).await;
    let agent_id = agent["agent"]["id"].as_str().unwrap().to_owned();
    let token = agent["token"].as_str().unwrap().to_owned();

    let script = "import os, sys, urllib.request\n\
        url = os.environ['LATCHKEY_MODELS_URL'] + '/v1/models'\n\
        req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + os.environ['LATCHKEY_AGENT_TOKEN']})\n\
        print(urllib.request.urlopen(req).status)\n\
        sys.exit(7)\n";
    let mut command = ada.command(&[
        "run",
        "--agent",
        &agent_id,
        "--credential",
        "models",
        "--method",
        "GET",
        "--",
        "python3",
        "-c",
        script,
    ]);
    command.env("LATCHKEY_AGENT_TOKEN", &token);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(7),
        "the command's exit status is passed through: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "200", "the command's call went through");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].contains(API_KEY), "the upstream received the real key");
        assert!(!seen[0].contains(&token), "and never the agent token");
    }
    let in_force = ada.json(&["grant", "list", "--agent", &agent_id], None).await;
    assert_eq!(in_force, serde_json::json!([]), "the run's grant ended with it");
    let grants = ada.json(&["grant", "list", "--agent", &agent_id, "--all"], None).await;
    let grants = grants.as_array().unwrap();
    assert_eq!(grants.len(), 1, "one grant was made for the run");
    assert!(grants[0]["revoked_at"].is_u64(), "and revoked when it ended: {grants:?}");

    let (code, _, err) =
        ada.run(&["run", "--agent", &agent_id, "--credential", "models", "--", "true"], None).await;
    assert_eq!(code, 1, "without LATCHKEY_AGENT_TOKEN, run refuses: {err}");
    assert!(err.contains("LATCHKEY_AGENT_TOKEN"), "{err}");

    // A proxy whose port is taken stops before it grants anything.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let (code, _, err) = ada
        .run(&["proxy", "--agent", &agent_id, "--credential", "models", "--listen", &listen], None)
        .await;
    assert_eq!(code, 1, "a proxy that cannot listen fails: {err}");
    assert!(err.contains("cannot listen"), "and says why: {err}");
    let live = ada.json(&["grant", "list", "--agent", &agent_id], None).await;
    assert_eq!(live, serde_json::json!([]), "a proxy that never started leaves no live grant");
    drop(taken);
    let _ = stop.send(());
}

/// Replaces what changes from run to run in a JSON output: ids become `<id-N>` (numbered by
/// first appearance, so relations between fields stay visible), fingerprints `<fingerprint>`,
/// times (`*_at` fields) `<time>`, loopback ports `<port>`.
fn redact(value: &Value) -> String {
    fn walk(value: &Value, key: &str, ids: &mut Vec<String>) -> Value {
        match value {
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), walk(v, k, ids))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| walk(v, key, ids)).collect()),
            Value::Number(_) if key.ends_with("_at") => Value::String("<time>".into()),
            Value::String(text) if is_uuid(text) => {
                let n = ids.iter().position(|i| i == text).unwrap_or_else(|| {
                    ids.push(text.clone());
                    ids.len() - 1
                });
                Value::String(format!("<id-{}>", n + 1))
            }
            Value::String(text) if is_fingerprint(text) => Value::String("<fingerprint>".into()),
            Value::String(text) if text.contains("127.0.0.1:") => {
                let start = text.find("127.0.0.1:").unwrap() + 10;
                let end = text[start..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(text.len(), |e| start + e);
                Value::String(format!("{}<port>{}", &text[..start], &text[end..]))
            }
            other => other.clone(),
        }
    }
    fn is_uuid(text: &str) -> bool {
        text.len() == 36
            && text.char_indices().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() }
            })
    }
    fn is_fingerprint(text: &str) -> bool {
        let groups: Vec<&str> = text.split('-').collect();
        groups.len() == 6
            && groups.iter().all(|g| g.len() == 4 && g.chars().all(|c| c.is_ascii_alphanumeric()))
    }
    let mut ids = Vec::new();
    let mut text = serde_json::to_string_pretty(&walk(value, "", &mut ids)).unwrap();
    text.push('\n');
    text
}

/// A second member joins from the terminal and is admitted after both fingerprints are
/// compared; with the workspace key she received she issues a single-use capability her agent
/// calls with. Policies are set, checked and refused with Cedar's problems; the listings'
/// `--json` output matches committed snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joins_is_admitted_and_the_listings_match_their_json_snapshots() {
    let (broker, _broker_dir, stop) = start_broker().await;
    let (upstream_base, seen) = upstream().await;
    let host = upstream_base.trim_start_matches("http://").to_owned();
    let ada = Latchkey::new();
    ada.json(
        &["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"],
        None,
    )
    .await;

    // Grace joins with the code Ada reads out; each side checks the other's fingerprint.
    let invite = ada.json(&["invite", "create"], None).await;
    let code = invite["code"].as_str().unwrap().to_owned();
    let grace = Latchkey::new();
    let join = [
        "workspace",
        "join",
        "--broker",
        &broker,
        "--member-name",
        "Grace",
        "--device-name",
        "grace-laptop",
        "--code-stdin",
    ];
    let joined = grace.json(&join, Some(&code)).await;
    let grace_device = joined["device"].as_str().unwrap().to_owned();
    let grace_member = joined["member"].as_str().unwrap().to_owned();
    let grace_fingerprint = joined["fingerprint"].as_str().unwrap().to_owned();
    let (code_again, _, err) = grace.run(&join, Some(&code)).await;
    assert_ne!(code_again, 0, "a profile joins once: {err}");

    let wrong = "0000-0000-0000-0000-0000-0000";
    let (code, _, err) =
        ada.run(&["device", "admit", &grace_device, "--fingerprint", wrong], None).await;
    assert_eq!(code, 1, "a fingerprint that does not match shares nothing: {err}");
    assert!(err.contains("does not match"), "{err}");
    let admitted = ada
        .json(&["device", "admit", &grace_device, "--fingerprint", &grace_fingerprint], None)
        .await;
    assert_eq!(admitted["keys"], serde_json::json!(["workspace"]));
    let ada_fingerprint = admitted["fingerprint"].as_str().unwrap().to_owned();
    let received = grace.json(&["device", "receive-keys", "--from", &ada_fingerprint], None).await;
    assert_eq!(received["workspace_keys"], serde_json::json!([1]), "{received}");

    // A spare invite Ada thinks better of: listed by id (never with its code), revoked, refused.
    let spare = ada.json(&["invite", "create", "--role", "admin", "--for", "2h"], None).await;
    let (spare_id, spare_code) =
        (spare["id"].as_str().unwrap().to_owned(), spare["code"].as_str().unwrap().to_owned());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let lasts = spare["expires_at"].as_u64().unwrap() - now;
    assert!((7000..=7200).contains(&lasts), "--for 2h asks the broker for two hours: {lasts} s");
    let listed = ada.json(&["invite", "list"], None).await;
    assert!(!listed.to_string().contains(&spare_code), "a listing never shows a code: {listed}");
    assert_snapshot("json-invite-list", &redact(&listed));
    let (code, text, err) = ada.run(&["invite", "list"], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        text.starts_with(&spare_id)
            && text.contains("a new admin")
            && text.contains("by Ada")
            && text.contains("expires in 1 h 59 min") | text.contains("expires in 2 h 0 min"),
        "one line: the id, what it admits, who made it, how long it lasts: {text}"
    );
    assert_eq!(grace.json(&["invite", "list"], None).await, serde_json::json!([]), "not hers");
    let (code, _, err) = grace.run(&["invite", "revoke", &spare_id], None).await;
    assert_eq!(code, 4, "a member cannot revoke an admin's invite: {err}");
    assert!(err.contains("(forbidden)"), "{err}");
    let (code, text, err) = ada.run(&["audit", "list", "--kind", "request_refused"], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        text.lines().count() == 1 && text.contains("DELETE /v1/invites/{id}"),
        "the refusal is on the chain with the route Grace's device tried, no host: {text}"
    );
    let revoked = ada.json(&["invite", "revoke", &spare_id], None).await;
    assert_eq!(revoked, serde_json::json!({"revoked": spare_id}));
    let (code, _, err) = ada.run(&["invite", "revoke", &spare_id], None).await;
    assert_eq!(code, 3, "revoking twice finds no pending invite: {err}");
    assert!(err.contains("(not_found)") && err.contains("no pending invite"), "{err}");
    let (code, _, err) = ada.run(&["invite", "revoke", &spare_code], None).await;
    assert_eq!(code, 2, "a code is not an invite id: {err}");
    let late = Latchkey::new();
    let late_join = ["workspace", "join", "--broker", &broker, "--member-name", "Mallory"];
    let (code, _, err) =
        late.run(&[&late_join[..], &["--code-stdin"]].concat(), Some(&spare_code)).await;
    assert_eq!(code, 4, "a revoked code admits no one: {err}");
    assert!(err.contains("(invite_invalid)"), "{err}");

    // A shared credential, looked at and changed from the terminal.
    ada.add_custom_key("models", &upstream_base, "localhost", API_KEY).await;
    let updated = ada.json(&["credential", "update", "models", "--allow-host", &host], None).await;
    assert_eq!(updated["allowed_hosts"], serde_json::json!([host]), "{updated}");
    assert_eq!(updated["revision"], 2);
    let disabled = ada.json(&["credential", "disable", "models"], None).await;
    assert_eq!(disabled["status"], "disabled");
    let enabled = ada.json(&["credential", "enable", "models"], None).await;
    assert_eq!(enabled["status"], "active");
    let shown = grace.json(&["credential", "show", "models"], None).await;
    assert_eq!(shown["revision"], 4, "every member sees the shared credential: {shown}");
    let named = ["credential", "update", "models", "--account", "ops@acme.example"];
    assert_eq!(ada.json(&named, None).await["account"], "ops@acme.example");
    let (code, text, _) = grace.run(&["credential", "show", "models"], None).await;
    assert_eq!(code, 0);
    assert!(
        text.contains("\naccount        ops@acme.example\n"),
        "every member sees whose account the credential acts as: {text}"
    );
    let unnamed = ada.json(&["credential", "update", "models", "--no-account"], None).await;
    assert_eq!(unnamed["account"], serde_json::Value::Null, "{unnamed}");
    let (code, _, err) = ada.run(&["credential", "update", "models"], None).await;
    assert_eq!(code, 1, "an update needs something to change: {err}");
    let (code, _, err) = ada.run(&["credential", "show", "nothing"], None).await;
    assert_eq!(code, 3, "an unknown credential is `not found`: {err}");

    // Grace's agent makes one call with a single-use capability her device issued.
    let agent = grace.json(&["agent", "create", "grace-bot"], None).await;
    let agent_id = agent["agent"]["id"].as_str().unwrap().to_owned();
    let issue = [
        "capability",
        "issue",
        "--agent",
        &agent_id,
        "--credential",
        "models",
        "--method",
        "get",
        "--path",
        "/v1/models",
    ];
    let capability = grace.json(&issue, None).await["capability"].as_str().unwrap().to_owned();
    let renewed = grace.json(&["agent", "regenerate", &agent_id], None).await;
    let token = renewed["token"].as_str().unwrap().to_owned();
    assert_ne!(token, agent["token"].as_str().unwrap(), "a new token");
    let http = reqwest::Client::new();
    let call = || {
        http.get(format!("{broker}/p/models/v1/models"))
            .bearer_auth(&token)
            .header("latchkey-capability", &capability)
            .send()
    };
    assert_eq!(call().await.unwrap().status(), 200, "the single-use call goes through");
    assert_eq!(call().await.unwrap().status(), 403, "and only once");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].contains(API_KEY) && !seen[0].contains(&token), "{}", seen[0]);
    }
    let mut long = issue.to_vec();
    long.extend(["--for", "1h"]);
    let (code, _, err) = grace.run(&long, None).await;
    assert_eq!(code, 1, "a single-use capability lasts minutes: {err}");
    assert!(err.contains("15 minutes"), "{err}");

    // Pausing all agents: Ada pauses, Grace (a member who did not pause) may not resume.
    let (code, text, _) = ada.run(&["agent", "pause-status"], None).await;
    assert_eq!(code, 0);
    assert!(text.contains("not paused"), "the status says nothing is paused: {text}");
    let paused = ada.json(&["agent", "pause"], None).await;
    assert_eq!(paused["paused"], true, "{paused}");
    assert!(paused["paused_by_member"].is_string() && paused["paused_at"].is_u64(), "{paused}");
    let fresh = grace.json(&issue, None).await["capability"].as_str().unwrap().to_owned();
    let call = || {
        http.get(format!("{broker}/p/models/v1/models"))
            .bearer_auth(&token)
            .header("latchkey-capability", &fresh)
            .send()
    };
    let refused = call().await.unwrap();
    assert_eq!(refused.status(), 403, "the agent's call is refused while paused");
    assert!(refused.text().await.unwrap().contains("agents_paused"));
    assert_eq!(seen.lock().unwrap().len(), 1, "a refused call never reaches the upstream");
    let (code, _, err) = grace.run(&["agent", "resume"], None).await;
    assert_eq!(code, 4, "a member who did not pause is refused by the broker: {err}");
    assert!(err.contains("resume_not_allowed"), "and told why: {err}");
    let (code, text, _) = grace.run(&["agent", "pause-status"], None).await;
    assert_eq!(code, 0);
    assert!(
        text.contains("are paused") && text.contains("latchkey agent resume"),
        "the status says who may resume and how: {text}"
    );
    let (code, text, err) = ada.run(&["agent", "resume"], None).await;
    assert_eq!(code, 0, "the admin who paused resumes: {err}");
    assert!(text.contains("not paused"), "{text}");
    assert_eq!(
        call().await.unwrap().status(),
        200,
        "the call refused while paused spent nothing: its single-use capability works now"
    );

    // Grace's agent calls without a capability: held for an admin (the credential is shared).
    // Grace sees why her agent waits, but it is not hers to answer.
    let held =
        tokio::spawn(http.get(format!("{broker}/p/models/v1/models")).bearer_auth(&token).send());
    let mut listed = Value::Null;
    for _ in 0..100 {
        listed = grace.json(&["approvals", "list"], None).await;
        if listed.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(listed[0]["answerable"], false, "Grace's device lists her agent's call: {listed}");
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let (code, text, _) = grace.run(&["approvals", "list"], None).await;
    assert_eq!(code, 0);
    assert!(text.contains("your agent; an admin answers"), "says who answers: {text}");
    let (code, _, err) = grace.run(&["approvals", "approve", &id], None).await;
    assert_eq!(code, 4, "a member cannot approve a shared credential's call: {err}");
    assert!(err.contains("an admin answers it"), "and is told who can: {err}");
    let for_ada = ada.json(&["approvals", "list"], None).await;
    assert_eq!(for_ada[0]["answerable"], true, "the admin answers it: {for_ada}");
    ada.json(&["approvals", "deny", &id], None).await;
    assert_eq!(held.await.unwrap().unwrap().status(), 403, "the admin's answer decides");
    assert_eq!(seen.lock().unwrap().len(), 2, "the denied call never reached the upstream");

    // Policies: set, check, refuse with Cedar's problems, remove.
    let policy_file = ada.dir.path().join("no-deletes.cedar");
    std::fs::write(
        &policy_file,
        "forbid (principal, action == Latchkey::Action::\"DELETE\", resource);\n",
    )
    .unwrap();
    let policy_path = policy_file.display().to_string();
    let set = ada
        .json(
            &[
                "policy",
                "set",
                "no-deletes",
                "--file",
                &policy_path,
                "--description",
                "Nothing is ever deleted.",
            ],
            None,
        )
        .await;
    assert_eq!(set["created"], true, "{set}");
    let revision = set["policy"]["revision"].as_u64().expect("the saved policy's revision");
    let shown = ada.json(&["policy", "show", "no-deletes"], None).await;
    assert_eq!(shown["revision"].as_u64(), Some(revision), "show reads what set saved: {shown}");
    let (code, out, err) = ada.run(&["policy", "show", "no-deletes"], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!(
            "no-deletes: revision {revision}, enabled\nNothing is ever deleted.\n\nforbid ("
        )) && out.contains("Latchkey::Action::\"DELETE\""),
        "show prints the revision, state, description, then the Cedar text: {out}"
    );
    let (code, _, err) = ada.run(&["policy", "show", "no-such-policy"], None).await;
    assert_eq!(code, 3, "showing an unknown policy is not found: {err}");
    let conditional = |revision: u64| {
        let (ada, policy_path) = (&ada, &policy_path);
        async move {
            let revision = revision.to_string();
            let args = [
                "policy",
                "set",
                "no-deletes",
                "--file",
                policy_path.as_str(),
                "--description",
                "Nothing is ever deleted.",
                "--if-revision",
                revision.as_str(),
            ];
            ada.run(&args, None).await
        }
    };
    let (code, _, err) = conditional(0).await;
    assert_eq!(code, 4, "--if-revision 0 creates only, and the id is taken: {err}");
    assert!(err.contains("already exists"), "the refusal says why: {err}");
    let (code, out, err) = conditional(revision).await;
    assert_eq!(code, 0, "the revision read is current, so the edit lands: {err}");
    assert!(out.starts_with("Replaced policy no-deletes (revision "), "{out}");
    let (code, _, err) = conditional(revision).await;
    assert_eq!(code, 4, "the same revision again is stale now: {err}");
    assert!(err.contains("changed since you read revision"), "the refusal says why: {err}");
    let (code, _, err) = ada
        .run(&["policy", "remove", "no-deletes", "--if-revision", &revision.to_string()], None)
        .await;
    assert_eq!(code, 4, "a stale removal is refused: {err}");
    let (code, _, err) =
        ada.run(&["policy", "remove", "no-deletes", "--if-revision", "0"], None).await;
    assert_eq!(code, 2, "revision 0 names no policy to remove, a usage error: {err}");
    let check = |method: &'static str| {
        let agent_id = agent_id.clone();
        let ada = &ada;
        async move {
            ada.json(
                &[
                    "policy",
                    "check",
                    "--agent",
                    &agent_id,
                    "--credential",
                    "models",
                    "--method",
                    method,
                    "--path",
                    "/v1/models",
                ],
                None,
            )
            .await
        }
    };
    let denied = check("delete").await;
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["policies"], serde_json::json!(["no-deletes"]));
    assert_eq!(check("get").await["decision"], "allow");
    let (code, _, err) = grace.run(&["policy", "set", "mine", "--file", &policy_path], None).await;
    assert_eq!(code, 4, "members do not set policies: {err}");
    let broken = ada.dir.path().join("broken.cedar");
    std::fs::write(&broken, "permit (principal, action, resource)\nwhen { resource.nope };\n")
        .unwrap();
    let (code, _, err) =
        ada.run(&["policy", "set", "broken", "--file", &broken.display().to_string()], None).await;
    assert_eq!(code, 4, "a policy that does not validate is refused by the broker: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines[0].starts_with("error: the broker refused the policy (1 problem)"), "{err}");
    assert!(lines[1].starts_with("  line 2, column "), "each problem with its position: {err}");
    assert!(lines.last().unwrap().starts_with("hint: "), "{err}");
    let (code, _, err) = ada.run(&["policy", "set", "check", "--file", &policy_path], None).await;
    assert_eq!(code, 2, "`check` is not a policy id, a usage error: {err}");

    // Members, roles, and listings as JSON.
    let role = ada.json(&["member", "role", &grace_member, "admin"], None).await;
    assert_eq!(role["role"], "admin");
    ada.json(&["member", "role", &grace_member, "member"], None).await;
    let grant = ada
        .json(
            &[
                "grant",
                "create",
                "--agent",
                &agent_id,
                "--credential",
                "models",
                "--method",
                "GET",
                "--path",
                "/v1/**",
                "--for",
                "1h",
            ],
            None,
        )
        .await;
    assert!(grant["capability"].is_string());
    for (name, args) in [
        ("json-member-list", &["member", "list"][..]),
        ("json-device-list", &["device", "list"][..]),
        ("json-credential-list", &["credential", "list"][..]),
        ("json-agent-list", &["agent", "list"][..]),
        ("json-grant-list", &["grant", "list"][..]),
        ("json-policy-list", &["policy", "list"][..]),
    ] {
        let value = ada.json(args, None).await;
        assert!(!value.to_string().contains(API_KEY), "{name}: no listing carries the key");
        assert_snapshot(name, &redact(&value));
    }
    ada.json(&["policy", "remove", "no-deletes"], None).await;
    let (code, _, err) = ada.run(&["policy", "remove", "no-deletes"], None).await;
    assert_eq!(code, 3, "removing a policy twice: {err}");

    // Removing Grace's device: it is refused from then on, and the workspace key it held is
    // rotated at once (by default, as DESIGN.md asks).
    let before = ada.json(&["workspace", "show"], None).await;
    let removal = ada.json(&["device", "remove", &grace_device], None).await;
    assert_eq!(removal["removal"]["rotation_recommended"], true, "{removal}");
    let rotations = removal["rotations"].as_array().cloned().unwrap_or_default();
    assert_eq!(rotations.len(), 1, "the admin rotates the workspace key: {removal}");
    assert_eq!(rotations[0]["scope"], "workspace");
    assert_eq!(rotations[0]["credentials"], 1, "the shared credential is re-sealed: {removal}");
    let after = ada.json(&["workspace", "show"], None).await;
    assert_ne!(
        before["workspace_key_version"], after["workspace_key_version"],
        "the key the removed device held is no longer current: {before} {after}"
    );
    let (code, _, err) = grace.run(&["agent", "list"], None).await;
    assert_eq!(code, 4, "a removed device is refused: {err}");
    let (code, text, err) =
        ada.run(&["member", "remove", &grace_member, "--no-rotate"], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("Removed member") && text.contains("Not rotated (--no-rotate)"),
        "skipping the rotation says what stays current and how to rotate: {text}"
    );
    let verified = ada.json(&["audit", "verify"], None).await;
    assert_eq!(verified["local"]["ok"], true, "{verified}");
    let changes = ada.json(&["audit", "list", "--kind", "policy_changed"], None).await;
    assert_eq!(
        changes.as_array().map(Vec::len),
        Some(3),
        "set, replaced at its revision and removed; the refused changes left none: {changes}"
    );
    let _ = stop.send(());
}

/// An agent's call without a capability is held by the broker; the member answers it from the
/// terminal: approve once, approve for a window, deny. Answering twice is refused (exit code 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_calls_are_listed_approved_and_denied_from_the_terminal() {
    let (broker, _broker_dir, stop) = start_broker().await;
    let (upstream_base, seen) = upstream().await;
    let host = upstream_base.trim_start_matches("http://").to_owned();
    let ada = Latchkey::new();
    ada.json(
        &["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"],
        None,
    )
    .await;
    ada.add_custom_key("api", &upstream_base, &host, API_KEY).await;
    let agent = ada.json(&["agent", "create", "ci-bot"], None).await;
    let token = agent["token"].as_str().unwrap().to_owned();

    // The agent's call with its token only, in the background: the broker holds it.
    let held = |path: &str| {
        let request =
            reqwest::Client::new().get(format!("{broker}/p/api{path}")).bearer_auth(&token);
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let capability = response.headers().get("latchkey-capability").cloned();
            (response.status().as_u16(), capability, response.text().await.unwrap())
        })
    };
    // The one pending approval's id, once the broker lists it.
    let latchkey = &ada;
    let pending_id = move || async move {
        for _ in 0..100 {
            let listed = latchkey.json(&["approvals", "list"], None).await;
            if let Some(first) = listed.as_array().and_then(|a| a.first()) {
                return first["id"].as_str().unwrap().to_owned();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no approval was listed within 10 seconds");
    };

    let (code, text, _) = ada.run(&["approvals", "list"], None).await;
    assert_eq!(code, 0);
    assert!(text.contains("No calls are waiting"), "an empty listing says so: {text}");

    // Approve once.
    let call = held("/v1/models?limit=5");
    let id = pending_id().await;
    let (code, text, _) = ada.run(&["approvals", "list"], None).await;
    assert_eq!(code, 0);
    assert!(
        text.contains(&id)
            && text.contains("GET")
            && text.contains("/v1/models")
            && text.contains("ci-bot"),
        "the text listing shows the call and the agent's name: {text}"
    );
    let answered = ada.json(&["approvals", "approve", &id], None).await;
    assert_eq!(answered["status"], "approved", "{answered}");
    let (status, capability, body) = call.await.unwrap();
    assert_eq!(status, 200, "the approved call went on: {body}");
    assert!(capability.is_none(), "approving once hands nothing back");
    assert_eq!(seen.lock().unwrap().len(), 1);
    let (code, _, err) = ada.run(&["approvals", "deny", &id], None).await;
    assert_eq!(code, 4, "answering twice is refused by the broker: {err}");
    assert!(err.contains("was already approved"), "and says how it ended: {err}");

    // Approve for a window: the agent gets a capability for its next calls.
    let call = held("/v1/models");
    let id = pending_id().await;
    let (code, _, err) =
        ada.run(&["approvals", "approve", &id, "--for", "1h", "--path", "/admin/**"], None).await;
    assert_eq!(code, 1, "a pattern that misses the held path is refused: {err}");
    let approved =
        ada.json(&["approvals", "approve", &id, "--for", "1h", "--path", "/v1/**"], None).await;
    assert_eq!(approved["approval"]["status"], "approved", "{approved}");
    assert_eq!(approved["grant"]["path_patterns"], serde_json::json!(["/v1/**"]), "{approved}");
    let (status, capability, body) = call.await.unwrap();
    assert_eq!(status, 200, "the held call went on: {body}");
    let capability = capability.expect("the agent receives a standing capability");
    let next = reqwest::Client::new()
        .get(format!("{broker}/p/api/v1/files"))
        .bearer_auth(&token)
        .header("latchkey-capability", capability)
        .header("prefer", "wait=0")
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 200, "the window's pattern covers the next call");
    assert_eq!(seen.lock().unwrap().len(), 3);

    // Deny.
    let call = held("/v1/models");
    let id = pending_id().await;
    let (code, text, _) = ada.run(&["approvals", "deny", &id], None).await;
    assert_eq!(code, 0);
    assert!(text.contains("Denied GET"), "{text}");
    let (status, _, body) = call.await.unwrap();
    assert_eq!(status, 403, "the denied call is refused: {body}");
    assert!(body.contains("approval_denied"), "{body}");
    assert_eq!(seen.lock().unwrap().len(), 3, "a denied call never reaches the upstream");

    let all = ada.json(&["approvals", "list", "--all"], None).await;
    let mut statuses: Vec<&str> =
        all.as_array().unwrap().iter().map(|a| a["status"].as_str().unwrap()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["approved", "approved", "denied"], "all three answers are kept: {all}");
    assert!(!all.to_string().contains(API_KEY), "listings never carry the key");

    let (code, _, err) =
        ada.run(&["approvals", "approve", "0f8e1c2d-0000-4000-8000-000000000000"], None).await;
    assert_eq!(code, 3, "an unknown approval is `not found`: {err}");
    let (code, _, err) = ada.run(&["approvals", "approve", "nope"], None).await;
    assert_eq!(code, 2, "a malformed id is a usage error, refused before anything is sent: {err}");
    let _ = stop.send(());
}

/// A long-running `latchkey` (`approvals watch`): its stdin to answer prompts, its stdout and
/// stderr collected as they come.
struct Running {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

impl Running {
    fn start(latchkey: &Latchkey, args: &[&str]) -> Self {
        let mut command = tokio::process::Command::from(latchkey.command(args));
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let collect = |mut from: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let into = Arc::clone(&text);
            tokio::spawn(async move {
                let mut buf = [0_u8; 4096];
                while let Ok(n) = from.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            text
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Self { child, stdin, out, err }
    }

    /// Waits until `stream` (stdout or stderr) holds `needle` at or after byte `from`; returns
    /// the text from `from` to the end of the needle's first occurrence.
    async fn until(&self, stdout: bool, from: usize, needle: &str, why: &str) -> String {
        let stream = if stdout { &self.out } else { &self.err };
        for _ in 0..300 {
            {
                let text = stream.lock().unwrap();
                if let Some(at) = text.get(from..).and_then(|t| t.find(needle)) {
                    return text[from..from + at + needle.len()].to_owned();
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "{why}: {needle:?} did not appear within 30 seconds\nstdout: {}\nstderr: {}",
            self.out.lock().unwrap(),
            self.err.lock().unwrap()
        );
    }

    async fn answer(&mut self, line: &str) {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }
}

/// A workspace whose admin Ada stored a shared API key for a loopback upstream, and an agent
/// `ci-bot` without a grant, so that each of its calls is held for approval. Returns Ada, the
/// agent's token and what the upstream received.
async fn approval_world(broker: &str) -> (Latchkey, String, Arc<Mutex<Vec<String>>>) {
    let (upstream_base, seen) = upstream().await;
    let host = upstream_base.trim_start_matches("http://").to_owned();
    let ada = Latchkey::new();
    ada.json(
        &["workspace", "create", "--broker", broker, "--name", "Acme", "--member-name", "Ada"],
        None,
    )
    .await;
    ada.add_custom_key("api", &upstream_base, &host, API_KEY).await;
    let agent = ada.json(&["agent", "create", "ci-bot"], None).await;
    (ada, agent["token"].as_str().unwrap().to_owned(), seen)
}

/// `approvals watch --prompt` reads its answers from a pipe as from a terminal: each held call
/// is shown in full (but never a query value) and the answer decides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_prompt_shows_a_held_call_in_full_and_the_answer_decides_it() {
    const QUERY_VALUE: &str = "cursor-value-3f9a1c";
    let (broker, _broker_dir, stop) = start_broker().await;
    let (ada, token, seen) = approval_world(&broker).await;
    let held = |path: &str, body: &'static str| {
        let request = reqwest::Client::new()
            .post(format!("{broker}/p/api{path}"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body);
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    };

    let (code, _, err) = ada.run(&["--json", "approvals", "watch", "--prompt"], None).await;
    assert_eq!(code, 1, "asking and printing JSON lines exclude each other: {err}");
    assert!(err.contains("use one or the other"), "and the error says so: {err}");

    let mut watch = Running::start(&ada, &["approvals", "watch", "--prompt"]);
    watch.until(false, 0, "Watching for calls", "the watch starts").await;

    // Approve once.
    let body = r#"{"model":"small"}"#;
    let call = held(&format!("/v1/chat?limit=5&cursor={QUERY_VALUE}"), body);
    let prompt = watch
        .until(
            true,
            0,
            "Approve [o]nce, for an [h]our, [d]eny, [s]kip? ",
            "a held call is asked about",
        )
        .await;
    for (shown, why) in [
        ("ci-bot", "the agent's name"),
        ("credential  api", "the credential (the integration the call uses)"),
        ("call        POST 127.0.0.1/v1/chat", "the method, the upstream host and the path"),
        ("limit, cursor (names only)", "the query's parameter names, in order"),
        (&format!("{} bytes", body.len()), "the body's declared size"),
        (
            "why held    no grant covers it; once approved, policy permit-granted-calls allows it",
            "why it was held, and the policy that allows the call once approved",
        ),
    ] {
        assert!(prompt.contains(shown), "the prompt shows {why} ({shown:?}):\n{prompt}");
    }
    assert!(!prompt.contains(QUERY_VALUE), "a query value never reaches the prompt:\n{prompt}");
    assert!(!prompt.contains("small"), "nor does the body:\n{prompt}");
    watch.answer("o").await;
    let (status, text) = call.await.unwrap();
    assert_eq!(status, 200, "approving once lets the held call through: {text}");
    let from = watch.until(true, 0, "Approved once.", "the answer is confirmed").await.len();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "the upstream received the approved call once: {seen:?}");
        assert!(seen[0].starts_with("POST /v1/chat?"), "as the agent made it: {}", seen[0]);
    }

    // Deny.
    let call = held("/v1/chat", "{}");
    watch.until(true, from, "[s]kip? ", "the next held call is asked about").await;
    watch.answer("d").await;
    let (status, text) = call.await.unwrap();
    assert_eq!(status, 403, "denying refuses the held call: {text}");
    assert!(text.contains("approval_denied"), "with the documented code: {text}");
    let from = from + watch.until(true, from, "Denied.", "the denial is confirmed").await.len();
    assert_eq!(seen.lock().unwrap().len(), 1, "a denied call never reaches the upstream");

    // An agent cannot write to the approver's terminal: query names with escape sequences
    // (clear the screen, move the cursor home) or a right-to-left override are shown escaped.
    let call = held("/v1/chat?%1B%5B2J%1B%5BHinnocent=1&%E2%80%AEtxt.exe=2", "{}");
    let prompt = watch.until(true, from, "[s]kip? ", "the disguised call is asked about").await;
    assert!(
        !prompt.contains('\u{1b}') && !prompt.contains('\u{202e}'),
        "no control character the agent chose reaches the terminal:\n{prompt:?}"
    );
    assert!(
        prompt.contains("\\u{1b}[2J\\u{1b}[Hinnocent, \\u{202e}txt.exe (names only)"),
        "they are shown, escaped, for the approver to see:\n{prompt}"
    );
    watch.answer("d").await;
    let (status, text) = call.await.unwrap();
    assert_eq!(status, 403, "the disguised call is denied: {text}");
    let (code, listed, _) = ada.run(&["approvals", "list", "--all"], None).await;
    assert_eq!(code, 0);
    assert!(!listed.contains('\u{1b}'), "nor does the listing carry one: {listed:?}");
    assert!(
        watch.child.try_wait().unwrap().is_none(),
        "the watch goes on after answering: {}",
        watch.err.lock().unwrap()
    );
    let _ = stop.send(());
}

/// A stream silent past its read timeout counts as broken: `approvals watch` says so on stderr,
/// opens it again and goes on showing held calls. (The broker's keep-alives come every 15
/// seconds, so a two-second timeout makes the real broker look silent.) A broker that ends the
/// stream on purpose ends the watch instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_reconnects_when_the_stream_goes_silent_and_says_so() {
    let (broker, _broker_dir, stop) = start_broker().await;
    let (ada, token, _seen) = approval_world(&broker).await;
    let mut watch = Running::start(&ada, &["approvals", "watch", "--read-timeout-ms", "2000"]);
    watch.until(false, 0, "Watching for calls", "the watch starts").await;
    let broke = watch
        .until(false, 0, "reconnecting in 1s.", "a silent stream is reported, not waited on")
        .await;
    assert!(
        broke.contains(
            "sent nothing on the approval stream for 2s: the connection is treated as lost"
        ),
        "the message says what happened: {broke}"
    );
    watch.until(false, 0, "Reconnected; watching again.", "the stream is opened again").await;
    assert!(
        watch.child.try_wait().is_ok_and(|status| status.is_none()),
        "the watch goes on: {}",
        watch.err.lock().unwrap()
    );

    let call =
        reqwest::Client::new().get(format!("{broker}/p/api/v1/models")).bearer_auth(&token).send();
    let call = tokio::spawn(call);
    watch
        .until(
            true,
            0,
            "pending  GET 127.0.0.1/v1/models",
            "a call held after reconnecting is shown",
        )
        .await;

    // A broker that ends the stream on purpose (shutting down) ends the watch, saying so.
    let _ = stop.send(());
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), watch.child.wait())
        .await
        .expect("the watch ends when the broker ends the stream")
        .unwrap();
    assert!(!status.success(), "as a failure: {status}");
    // The process may have exited before its last words were read from the pipe.
    watch
        .until(
            false,
            0,
            "the broker ended the approval stream",
            "and says why instead of reconnecting forever",
        )
        .await;
    drop(call);
}

/// A `latchkey connect` run in the background: the sign-in URL it prints on stderr is handed
/// to a test browser playing `person`; returns (exit code, stdout, stderr).
async fn connect_as(
    latchkey: &Latchkey,
    args: &[&str],
    person: browser::Person,
) -> (i32, String, String) {
    use latchkey_client::oauth::BrowserLauncher as _;
    use tokio::io::AsyncBufReadExt as _;

    let mut command = tokio::process::Command::from(latchkey.command(args));
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reading = tokio::spawn(async move {
        let mut text = String::new();
        stdout.read_to_string(&mut text).await.unwrap();
        text
    });
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut err = String::new();
    let (test_browser, mut events) = browser::TestBrowser::new(person);
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.starts_with("http") {
            test_browser.open(&line.parse().unwrap()).unwrap();
        }
        err.push_str(&line);
        err.push('\n');
    }
    drop(test_browser);
    while let Some(event) = events.recv().await {
        if let browser::Event::Failed(why) = event {
            panic!("the test browser could not sign in: {why}");
        }
    }
    let status = child.wait().await.unwrap();
    (status.code().unwrap_or(-1), reading.await.unwrap(), err)
}

/// The access and refresh tokens of a stored OAuth credential, opened the way only this
/// device can: with its key file and the workspace key.
async fn stored_tokens(latchkey: &Latchkey, id: &str) -> (String, String) {
    use latchkey_client::keychain::EncryptedFileStore;
    use latchkey_client::profile::{Profile, ProfileName};
    use latchkey_core::payload::{CredentialKind, CredentialPayload};

    let profile = Profile::new(ProfileName::named("test").unwrap(), latchkey.dir.path());
    let store: latchkey_client::keychain::SharedKeyStore = Arc::new(
        EncryptedFileStore::open(
            profile.key_file_path(),
            profile.name(),
            latchkey_core::secret::SecretBytes::copy_from(KEYSTORE_PASSPHRASE.as_bytes()),
        )
        .unwrap(),
    );
    let config = profile.load_config().unwrap();
    let client = latchkey_client::workspace::broker_client(&profile, &store).await.unwrap();
    let id: latchkey_core::ids::CredentialId = id.parse().unwrap();
    let (version, envelope) = client.credential_envelope(id).await.unwrap();
    let key = store.load_workspace_key(config.workspace, version).unwrap();
    let plaintext = envelope.open(&key.record_key(id).unwrap()).unwrap();
    let payload = CredentialPayload::decode(plaintext.expose_secret()).unwrap();
    let CredentialKind::OAuth { refresh: Some(refresh), .. } = payload.kind else {
        panic!("an OAuth credential with refresh data");
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    (text(payload.secret.expose_secret()), text(refresh.refresh_token.expose_secret()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_signs_in_at_a_strict_provider_and_disconnect_revokes_before_deleting() {
    use latchkey_client::oauth::{OAuthClient, OAuthEndpoints, OAuthError, OAuthHttp, refresh};

    let (broker, _broker_dir, stop) = start_broker().await;
    let server = servers::strict().await;
    let ada = Latchkey::new();
    ada.json(
        &["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"],
        None,
    )
    .await;
    let connect_args = |name: &'static str, timeout: &'static str| {
        vec![
            "--json".to_owned(),
            "connect".to_owned(),
            "custom-oauth2".to_owned(),
            "--name".to_owned(),
            name.to_owned(),
            "--issuer".to_owned(),
            server.issuer.clone(),
            "--base-url".to_owned(),
            "http://127.0.0.1:9/api".to_owned(),
            "--client-id".to_owned(),
            server.client_id.clone(),
            "--scope".to_owned(),
            "openid".to_owned(),
            "--scope".to_owned(),
            "offline_access".to_owned(),
            "--no-browser".to_owned(),
            "--timeout".to_owned(),
            timeout.to_owned(),
        ]
    };

    // Signed in and consented: the credential is stored, and listed.
    let args = connect_args("idp", "60");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = connect_as(&ada, &argv, browser::Person::SignsIn).await;
    assert_eq!(code, 0, "connect failed: {err}");
    assert!(err.contains("code_challenge_method=S256"), "the sign-in URL is printed: {err}");
    let connected: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(connected["name"], "idp");
    assert_eq!(connected["provider"], "custom-oauth2");
    assert_eq!(connected["status"], "active");
    assert_eq!(connected["allowed_hosts"], serde_json::json!(["127.0.0.1:9"]));
    assert_eq!(connected["account"], "alice", "the ID token's subject names the account");
    let (code, text, _) = ada.run(&["credential", "list"], None).await;
    assert_eq!(code, 0);
    let row = text.lines().find(|l| l.starts_with("idp ")).unwrap_or_default();
    assert!(row.contains(" alice "), "the listing shows whose account it is: {text}");
    let listed = ada.json(&["credential", "list"], None).await;
    assert!(
        listed.as_array().unwrap().iter().any(|c| c["name"] == "idp"),
        "the connection is listed: {listed}"
    );
    let (access, refresh_token) = stored_tokens(&ada, connected["id"].as_str().unwrap()).await;
    assert!(!out.contains(&access) && !err.contains(&access), "no token is printed");
    assert!(!out.contains(&refresh_token) && !err.contains(&refresh_token));
    let metadata: Value =
        reqwest::get(format!("{}/.well-known/openid-configuration", server.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let userinfo = metadata["userinfo_endpoint"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let me = |token: String| http.get(&userinfo).bearer_auth(token).send();
    assert_eq!(me(access.clone()).await.unwrap().status(), 200, "the stored access token works");

    // Reconnect: a new sign-in replaces the tokens in place; the client id comes from the
    // sealed refresh data, the credential keeps its id (so its grants and audit history).
    let (code, out, err) = connect_as(
        &ada,
        &["--json", "reconnect", "idp", "--no-browser", "--timeout", "60"],
        browser::Person::SignsIn,
    )
    .await;
    assert_eq!(code, 0, "reconnect failed: {err}");
    let reconnected: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reconnected["id"], connected["id"], "reconnecting keeps the credential's id");
    assert_eq!(reconnected["status"], "active");
    let (new_access, new_refresh) = stored_tokens(&ada, connected["id"].as_str().unwrap()).await;
    assert_ne!(new_access, access, "the access token was replaced");
    assert_ne!(new_refresh, refresh_token, "the refresh token was replaced");
    assert!(!out.contains(&new_access) && !err.contains(&new_access), "no token is printed");
    assert_eq!(me(new_access.clone()).await.unwrap().status(), 200, "the new token works");
    let (access, refresh_token) = (new_access, new_refresh);

    // Cancelled at the provider, or nobody signs in: typed errors, nothing stored.
    let args = connect_args("denied", "60");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = connect_as(
        &ada,
        &[
            "connect",
            "custom-oauth2",
            "--name",
            "idp",
            "--issuer",
            &server.issuer,
            "--base-url",
            "http://127.0.0.1:9/api",
            "--client-id",
            "x",
        ],
        browser::Person::Idles,
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("named \"idp\" exists already"), "checked before the sign-in: {err}");
    assert!(!err.contains("http://127.0.0.1"), "no sign-in URL was printed: {err}");
    let (code, _, err) = connect_as(&ada, &argv, browser::Person::Cancels).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refused the authorization (access_denied)"), "{err}");
    let args = connect_args("late", "2");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = connect_as(&ada, &argv, browser::Person::Idles).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not completed within 2 s"), "{err}");

    // An API key has nothing to revoke: disconnect points to `credential remove`.
    ada.json(
        &["credential", "add", "--name", "key", "--provider", "openai", "--key-stdin"],
        Some(API_KEY),
    )
    .await;
    let (code, _, err) = ada.run(&["disconnect", "key"], None).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("latchkey credential remove"), "{err}");
    let (code, _, err) = ada.run(&["reconnect", "key", "--no-browser"], None).await;
    assert_eq!(code, 1, "an API key has no sign-in to repeat: {err}");
    assert!(err.contains("not an OAuth"), "{err}");
    ada.json(&["credential", "remove", "key"], None).await;

    // Disconnect: revoked at the provider, then deleted.
    let gone = ada.json(&["disconnect", "idp"], None).await;
    assert_eq!(gone["revocation"], "revoked");
    assert_eq!(gone["deleted"], connected["id"]);
    let listed = ada.json(&["credential", "list"], None).await;
    assert_eq!(listed, serde_json::json!([]), "only idp was ever stored: {listed}");
    assert_eq!(me(access).await.unwrap().status(), 401, "the access token is revoked");
    let endpoints = OAuthEndpoints {
        authorize: format!("{}/auth", server.issuer).parse().unwrap(),
        token: format!("{}/token", server.issuer).parse().unwrap(),
        revocation: None,
        issuer: None,
    };
    let refused = refresh(
        &OAuthHttp::new().unwrap(),
        &endpoints,
        &OAuthClient::public(&server.client_id, Vec::new()),
        &latchkey_core::secret::SecretBytes::copy_from(refresh_token.as_bytes()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, OAuthError::ReconnectNeeded),
        "refresh after revocation: {refused:?}"
    );

    // A provider that cannot be reached: nothing deleted unless forced.
    let args = connect_args("idp2", "60");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = connect_as(&ada, &argv, browser::Person::SignsIn).await;
    assert_eq!(code, 0, "{err}");
    drop(server);
    let (code, _, err) = ada.run(&["disconnect", "idp2"], None).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("could not be revoked") && err.contains("--force"), "{err}");
    let listed = ada.json(&["credential", "list"], None).await;
    assert_eq!(listed[0]["name"], "idp2", "a failed revocation deletes nothing");
    let forced = ada.json(&["disconnect", "idp2", "--force"], None).await;
    assert_eq!(forced["revocation"], "failed");
    assert_eq!(ada.json(&["credential", "list"], None).await, serde_json::json!([]));
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_refresh_rotates_on_the_device_and_a_refused_grant_needs_a_reconnect() {
    use latchkey_client::oauth::{OAuthClient, OAuthEndpoints, OAuthError, OAuthHttp, refresh};

    let (broker, _broker_dir, stop) = start_broker().await;
    let server = servers::strict().await;
    let ada = Latchkey::new();
    ada.json(
        &["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"],
        None,
    )
    .await;
    let (code, out, err) = connect_as(
        &ada,
        &[
            "--json",
            "connect",
            "custom-oauth2",
            "--name",
            "idp",
            "--issuer",
            &server.issuer,
            "--base-url",
            "http://127.0.0.1:9/api",
            "--client-id",
            &server.client_id,
            "--scope",
            "openid",
            "--scope",
            "offline_access",
            "--no-browser",
            "--timeout",
            "60",
        ],
        browser::Person::SignsIn,
    )
    .await;
    assert_eq!(code, 0, "connect failed: {err}");
    let connected: Value = serde_json::from_str(&out).unwrap();
    let id = connected["id"].as_str().unwrap().to_owned();
    let (access, refresh_token) = stored_tokens(&ada, &id).await;

    // An hour-long token is fresh; nothing is written.
    let (code, out, err) = ada.run(&["credential", "refresh", "idp"], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("idp is fresh; its token expires in"), "{out}");
    assert_eq!(stored_tokens(&ada, &id).await, (access.clone(), refresh_token.clone()));

    // Forced: the rotated pair is stored; nothing secret is printed.
    let (code, out, err) =
        ada.run(&["--json", "credential", "refresh", "idp", "--force"], None).await;
    assert_eq!(code, 0, "{err}");
    let refreshed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(refreshed["action"], "refreshed", "{refreshed}");
    assert_eq!(refreshed["credential"]["id"], connected["id"]);
    assert_eq!(
        refreshed["credential"]["revision"].as_u64(),
        connected["revision"].as_u64().map(|r| r + 1),
        "one swap: {refreshed}"
    );
    let (new_access, new_refresh) = stored_tokens(&ada, &id).await;
    assert_ne!(new_access, access, "a new access token is stored");
    assert_ne!(new_refresh, refresh_token, "the rotated refresh token is stored");
    for secret in [&access, &refresh_token, &new_access, &new_refresh] {
        assert!(
            !out.contains(secret.as_str()) && !err.contains(secret.as_str()),
            "no token printed"
        );
    }

    // --all lists each OAuth connection; API keys are left out, and refuse by name.
    ada.json(
        &["credential", "add", "--name", "key", "--provider", "openai", "--key-stdin"],
        Some(API_KEY),
    )
    .await;
    let all = ada.json(&["credential", "refresh", "--all"], None).await;
    assert_eq!(all.as_array().map(Vec::len), Some(1), "only idp: {all}");
    assert_eq!(all[0]["outcome"], "fresh", "{all}");
    let (code, _, err) = ada.run(&["credential", "refresh", "key"], None).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("API key: there is nothing to refresh"), "{err}");
    let (code, _, err) = ada.run(&["credential", "refresh", "nope"], None).await;
    assert_eq!(code, 3, "an unknown credential is `not found`: {err}");
    let (code, _, err) = ada.run(&["credential", "refresh"], None).await;
    assert_eq!(code, 2, "a name or --all is required: {err}");

    // The old refresh token, presented again, makes the strict provider revoke the grant.
    let endpoints = OAuthEndpoints {
        authorize: format!("{}/auth", server.issuer).parse().unwrap(),
        token: format!("{}/token", server.issuer).parse().unwrap(),
        revocation: None,
        issuer: None,
    };
    let reused = refresh(
        &OAuthHttp::new().unwrap(),
        &endpoints,
        &OAuthClient::public(&server.client_id, Vec::new()),
        &latchkey_core::secret::SecretBytes::copy_from(refresh_token.as_bytes()),
    )
    .await;
    assert!(matches!(reused, Err(OAuthError::ReconnectNeeded)), "rotated out: {reused:?}");

    // Refused: exit 1, the credential is marked, and the message says how to get out of it.
    let (code, _, err) = ada.run(&["credential", "refresh", "idp", "--force"], None).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("reconnect needed") && err.contains("latchkey reconnect idp"), "{err}");
    assert!(!err.contains(&new_refresh), "no token printed");
    let listed = ada.json(&["credential", "show", "idp"], None).await;
    assert_eq!(listed["status"], "reconnect_needed", "{listed}");
    let (code, out, err) = ada.run(&["--json", "credential", "refresh", "--all"], None).await;
    assert_eq!(code, 1, "a connection needing a reconnect fails --all: {err}");
    let all: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(all[0]["outcome"], "reconnect_needed", "every outcome is printed first: {all}");
    assert!(err.contains("1 of 1 connections"), "{err}");
    let _ = stop.send(());
}

/// `LATCHKEY_BROWSER` names the program that opens the sign-in link, as for the desktop app.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_opens_the_sign_in_link_with_the_browser_latchkey_browser_names() {
    use std::os::unix::fs::PermissionsExt as _;

    let (broker, _broker_dir, stop) = start_broker().await;
    let ada = Latchkey::new();
    ada.json(
        &["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"],
        None,
    )
    .await;
    let opened = ada.dir.path().join("opened.txt");
    let program = ada.dir.path().join("browser.sh");
    std::fs::write(&program, format!("#!/bin/sh\nprintf '%s' \"$1\" > '{}'\n", opened.display()))
        .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut command = ada.command(&[
        "connect",
        "custom-oauth2",
        "--name",
        "idp",
        "--base-url",
        "http://127.0.0.1:9/api",
        "--authorize-url",
        "http://127.0.0.1:9/authorize",
        "--token-url",
        "http://127.0.0.1:9/token",
        "--client-id",
        "cli-test",
        "--timeout",
        "2",
    ]);
    command.env("LATCHKEY_BROWSER", &program);
    let (code, _, err) = finish(command, None).await;
    assert_eq!(code, 1, "nobody signs in, so the sign-in times out: {err}");
    let url = std::fs::read_to_string(&opened)
        .unwrap_or_else(|e| panic!("the program LATCHKEY_BROWSER names was not run ({e}): {err}"));
    assert!(
        url.starts_with("http://127.0.0.1:9/authorize?") && url.contains("code_challenge="),
        "it was given the sign-in link: {url}"
    );
    assert!(err.contains(&url), "the link is printed as well: {err}");
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_an_answer_from_another_authorization_server() {
    let (broker, _broker_dir, stop) = start_broker().await;
    // Its authorization responses name another issuer (RFC 9207): a possible mix-up attack.
    let server = servers::lenient(&["--iss=other"]).await;
    let ada = Latchkey::new();
    ada.json(
        &["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"],
        None,
    )
    .await;
    let (code, out, err) = connect_as(
        &ada,
        &[
            "connect",
            "custom-oauth2",
            "--name",
            "mixed",
            "--issuer",
            &server.issuer,
            "--base-url",
            "http://127.0.0.1:9/api",
            "--client-id",
            "latchkey-test",
            "--no-browser",
            "--timeout",
            "60",
        ],
        browser::Person::SignsIn,
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "nothing is reported as connected: {out}");
    assert!(err.contains("from another authorization server"), "{err}");
    assert_eq!(ada.json(&["credential", "list"], None).await, serde_json::json!([]));
    let _ = stop.send(());
}

/// Log output captured in memory, for the canary scan of the broker's logs.
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
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

/// The child of `run --inject` in these tests: writes the SHA-256 of each named variable (or
/// `unset`) and whether the key file's passphrase reached it, one per line, to the file named
/// first, then exits with the code given second. It never prints a value, and the test never
/// puts one in a command line.
const INJECT_CHILD: &str = "import hashlib, os, sys\n\
    out, code, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]\n\
    lines = [hashlib.sha256(os.environ[n].encode()).hexdigest() if n in os.environ else 'unset' for n in names]\n\
    lines.append('passphrase ' + ('present' if 'LATCHKEY_KEYSTORE_PASSPHRASE' in os.environ else 'absent'))\n\
    open(out, 'w').write('\\n'.join(lines))\n\
    sys.exit(code)\n";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_injects_a_permitted_credential_into_the_command_only_and_passes_its_exit_status() {
    const MODELS_KEY: &str = "sk-INJECTmodels-canary-1b7f02e9";
    const OPENAI_KEY: &str = "sk-INJECTopenai-canary-8c4d51aa";
    let logs = LogCapture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .try_init()
        .expect("the only log subscriber of this test's process");
    let (broker, broker_dir, stop) = start_broker().await;
    let ada = Latchkey::new();
    let work = tempfile::tempdir().unwrap();
    let out_file = work.path().join("child.txt");
    let out_path = out_file.display().to_string();
    ada.json(
        &["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"],
        None,
    )
    .await;
    ada.add_custom_key("models", "https://models.example", "models.example", MODELS_KEY).await;
    ada.json(
        &["credential", "add", "--name", "oa", "--provider", "openai", "--key-stdin"],
        Some(OPENAI_KEY),
    )
    .await;
    let agent = ada.json(&["agent", "create", "runner"], None).await;
    let agent_id = agent["agent"]["id"].as_str().unwrap().to_owned();
    let token = agent["token"].as_str().unwrap().to_owned();
    let mut transcript = String::new();
    let run = |args: Vec<String>| {
        let mut command = ada.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        command.env("LATCHKEY_AGENT_TOKEN", &token);
        async move {
            let output =
                tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
            (
                output.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    let child = |injects: &[&str], exit: &str, names: &[&str]| -> Vec<String> {
        let mut args = vec!["run".to_owned(), "--agent".to_owned(), agent_id.clone()];
        for inject in injects {
            args.extend(["--inject".to_owned(), (*inject).to_owned()]);
        }
        args.extend(["--", "python3", "-c", INJECT_CHILD, &out_path, exit].map(str::to_owned));
        args.extend(names.iter().map(|n| (*n).to_owned()));
        args
    };

    // Denied by default: a clear refusal, and the command never runs.
    let (code, out, err) = run(child(&["models=MODELS_KEY"], "0", &["MODELS_KEY"])).await;
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 4, "a refusal by the broker exits 4: {err}");
    assert!(err.contains("policy_denied") && err.contains("inject"), "says why: {err}");
    assert!(!out_file.exists(), "the command never ran");
    let (code, out, _) = ada
        .run(&["policy", "check", "--agent", &agent_id, "--credential", "models", "--inject"], None)
        .await;
    assert_eq!((code, out.contains("denied")), (0, true), "the tester agrees: {out}");

    // A provider without a usual variable needs one named; nothing is asked before that.
    let (code, _, err) = run(child(&["models"], "0", &[])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--inject models=ENV_VAR"), "says how to name one: {err}");
    assert!(!out_file.exists(), "the command never ran");

    let policy = work.path().join("inject.cedar");
    std::fs::write(
        &policy,
        "permit (principal, action == Latchkey::Action::\"inject\", resource)\nwhen { context.lifetime <= 3600 && context.command == \"python3\" };\n",
    )
    .unwrap();
    ada.json(&["policy", "set", "python-injects", "--file", &policy.display().to_string()], None)
        .await;

    // Allowed: each value reaches the command's environment, under its name or the provider's.
    let (code, out, err) =
        run(child(&["models=MODELS_KEY", "oa"], "7", &["MODELS_KEY", "OPENAI_API_KEY"])).await;
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 7, "the command's exit status is passed through: {err}");
    let seen = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        [sha256_hex(MODELS_KEY).as_str(), &sha256_hex(OPENAI_KEY), "passphrase absent"],
        "the command saw both values (by their hashes), and never the key file's passphrase"
    );
    assert!(err.contains("MODELS_KEY") && err.contains("OPENAI_API_KEY"), "named: {err}");
    assert!(err.contains("cannot take it back"), "and what that gives up: {err}");
    std::fs::remove_file(&out_file).unwrap();

    // Killed by a signal: 128 + N, as a shell says.
    let mut killed = vec!["run", "--agent", &agent_id, "--inject", "models=MODELS_KEY", "--"]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    killed.extend(
        ["python3", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]
            .map(str::to_owned),
    );
    let (code, out, err) = run(killed).await;
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 143, "SIGTERM is 128 + 15: {err}");

    // The lifetime runs out: the command is stopped.
    let mut long =
        vec!["run", "--agent", &agent_id, "--inject", "models=MODELS_KEY", "--ttl", "2s", "--"]
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
    long.extend(["python3", "-c", "import time; time.sleep(60)"].map(str::to_owned));
    let started = std::time::Instant::now();
    let (code, out, err) = run(long).await;
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 143, "stopped with SIGTERM when the lifetime ran out: {err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "not left to run");
    assert!(err.contains("ran out"), "says so: {err}");

    // A paused workspace releases nothing.
    ada.json(&["agent", "pause"], None).await;
    let (code, out, err) = run(child(&["models=MODELS_KEY"], "0", &["MODELS_KEY"])).await;
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("agents_paused"), "{err}");
    assert!(!out_file.exists(), "the command never ran");
    ada.json(&["agent", "resume"], None).await;

    // One audit record per release, none per call; every refusal too.
    let released = ada.json(&["audit", "list", "--kind", "inject_released"], None).await;
    let released = released.as_array().unwrap();
    assert_eq!(released.len(), 4, "models and oa, then models twice: {released:?}");
    assert!(
        released.iter().all(|r| r["record"]["command"] == "python3"
            && r["record"]["agent"] == serde_json::json!(agent_id)),
        "each names the command and the agent: {released:?}"
    );
    let denied = ada.json(&["audit", "list", "--kind", "inject_denied"], None).await;
    assert_eq!(denied.as_array().unwrap().len(), 2, "the policy and the pause: {denied}");

    // The canary scan: no value in this process's output, the broker's logs or its database.
    let _ = stop.send(());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let log_text = logs.text();
    assert!(
        log_text.contains("credential released for an inject"),
        "the capture holds the broker's logs (positive control)"
    );
    for (what, text) in
        [("the CLI's output", transcript.as_str()), ("the broker's logs", &log_text)]
    {
        for canary in [MODELS_KEY, OPENAI_KEY] {
            assert!(!text.contains(canary), "{what} must never hold an injected value");
        }
    }
    for entry in std::fs::read_dir(broker_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        for canary in [MODELS_KEY, OPENAI_KEY] {
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "{} must never hold an injected value",
                path.display()
            );
        }
    }
}

/// The desktop app and `latchkey credential refresh` on one machine are two processes of one
/// device: without the broker's refresh lease both could present the same refresh token, and
/// the strict provider would revoke the grant for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_refreshing_one_connection_at_once_leave_the_grant_alive() {
    let (broker, _broker_dir, stop) = start_broker().await;
    let server = servers::strict().await;
    let ada = Latchkey::new();
    ada.json(
        &["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"],
        None,
    )
    .await;
    let (code, out, err) = connect_as(
        &ada,
        &[
            "--json",
            "connect",
            "custom-oauth2",
            "--name",
            "idp",
            "--issuer",
            &server.issuer,
            "--base-url",
            "http://127.0.0.1:9/api",
            "--client-id",
            &server.client_id,
            "--scope",
            "openid",
            "--scope",
            "offline_access",
            "--no-browser",
            "--timeout",
            "60",
        ],
        browser::Person::SignsIn,
    )
    .await;
    assert_eq!(code, 0, "connect failed: {err}");
    let connected: Value = serde_json::from_str(&out).unwrap();
    let id = connected["id"].as_str().unwrap().to_owned();
    let (_, before) = stored_tokens(&ada, &id).await;

    let args = ["--json", "credential", "refresh", "idp", "--force"];
    let (first, second) = tokio::join!(ada.run(&args, None), ada.run(&args, None));
    let mut actions = Vec::new();
    for (code, out, err) in [first, second] {
        assert_eq!(code, 0, "neither process fails (a revoked grant would): {err}");
        let outcome: Value = serde_json::from_str(&out).unwrap();
        actions.push(outcome["action"].as_str().unwrap().to_owned());
    }
    actions.sort();
    assert!(
        actions == ["refreshed", "refreshed_elsewhere"] || actions == ["refreshed", "refreshed"],
        "one refreshed while the other waited and kept its result (or they ran one after the \
         other): {actions:?}"
    );
    let (_, after) = stored_tokens(&ada, &id).await;
    assert_ne!(after, before, "the refresh token was rotated");
    let shown = ada.json(&["credential", "show", "idp"], None).await;
    assert_eq!(shown["status"], "active", "the grant was not revoked: {shown}");
    let again = ada.json(&args[1..], None).await;
    assert_eq!(again["action"], "refreshed", "the stored refresh token is the live one: {again}");
    let _ = stop.send(());
}

/// A broker with a workspace, the API keys `models` and `search` (variables `MODELS_KEY` and
/// `SEARCH_KEY` for `--inject`), an agent, and `policy` (Cedar) as the one inject permit.
/// Returns the machine, the agent's id and token, and the broker's stop switch.
async fn inject_world(
    policy: &str,
) -> (Latchkey, String, String, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
    let (broker, broker_dir, stop) = start_broker().await;
    let ada = Latchkey::new();
    ada.json(
        &["workspace", "create", "--broker", &broker, "--name", "Acme", "--member-name", "Ada"],
        None,
    )
    .await;
    for (name, key) in
        [("models", "sk-models-key-for-inject"), ("search", "sk-search-key-for-inject")]
    {
        ada.add_custom_key(
            name,
            &format!("https://{name}.example"),
            &format!("{name}.example"),
            key,
        )
        .await;
    }
    let agent = ada.json(&["agent", "create", "runner"], None).await;
    let agent_id = agent["agent"]["id"].as_str().unwrap().to_owned();
    let token = agent["token"].as_str().unwrap().to_owned();
    let file = ada.dir.path().join("inject.cedar");
    std::fs::write(&file, policy).unwrap();
    ada.json(&["policy", "set", "injects", "--file", &file.display().to_string()], None).await;
    (ada, agent_id, token, broker_dir, stop)
}

/// A workspace policy that permits injecting into commands run as `sh`.
#[cfg(target_os = "linux")]
const INJECT_FROM_SH: &str = "permit (principal, action == Latchkey::Action::\"inject\", resource)\nwhen { context.command == \"sh\" };\n";

/// A workspace policy that permits injecting into any command.
const INJECT_INTO_ANY_COMMAND: &str =
    "permit (principal, action == Latchkey::Action::\"inject\", resource);\n";

/// Makes the test below, run again by `latchkey run` as the command, play a command with a
/// background process: `parent:<dir>` starts this test binary again as `child:<dir>` and waits;
/// `child:<dir>` writes a rising counter to `<dir>/heartbeat` every 50 ms until it is stopped.
const RUN_HELPER: &str = "LATCHKEY_RUN_HELPER";
const BACKGROUND_TEST: &str =
    "run_stops_a_background_process_of_the_command_when_the_lifetime_runs_out_on_any_system";

fn this_test_again(test: &str) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.args([test, "--exact", "--nocapture", "--test-threads=1"]);
    command
}

/// No shell and no Unix tools: this test binary plays the command, so the test runs on Windows
/// too, where the command's job object is what stops the background process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_a_background_process_of_the_command_when_the_lifetime_runs_out_on_any_system() {
    if let Ok(mode) = std::env::var(RUN_HELPER) {
        if let Some(dir) = mode.strip_prefix("parent:") {
            let mut background = this_test_again(BACKGROUND_TEST)
                .env(RUN_HELPER, format!("child:{dir}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // The background process never ends: this runs until it is stopped.
            let _ = background.wait();
        } else if let Some(dir) = mode.strip_prefix("child:") {
            for beat in 0_u64.. {
                std::fs::write(Path::new(dir).join("heartbeat"), beat.to_string()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        return;
    }
    let (ada, agent_id, token, _broker_dir, stop) = inject_world(INJECT_INTO_ANY_COMMAND).await;
    let work = tempfile::tempdir().unwrap();
    let program = std::env::current_exe().unwrap();
    let mut command = injected_into(
        &ada,
        &agent_id,
        &token,
        "3s",
        &[program.to_str().unwrap(), BACKGROUND_TEST, "--exact", "--nocapture", "--test-threads=1"],
    );
    command.env(RUN_HELPER, format!("parent:{}", work.path().display()));
    // Output to a file, not a pipe: on Windows a survivor would inherit a pipe's handle and keep
    // a reader waiting, where the heartbeat below says what happened.
    let err_file = work.path().join("run.err");
    command.stdout(Stdio::null()).stderr(std::fs::File::create(&err_file).unwrap());
    let started = std::time::Instant::now();
    tokio::task::spawn_blocking(move || command.status().unwrap()).await.unwrap();
    let err = std::fs::read_to_string(&err_file).unwrap();
    assert!(err.contains("lifetime (3s) ran out: stopping"), "the lifetime ended the run: {err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "not left to run: {err}");

    let heartbeat = work.path().join("heartbeat");
    assert!(heartbeat.exists(), "the background process had started: {err}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = std::fs::read_to_string(&heartbeat).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let after = std::fs::read_to_string(&heartbeat).unwrap();
    assert_eq!(
        before, after,
        "a process the command started in the background holds the injected credential in its \
         environment too: it must not outlive the lifetime (its heartbeat goes on)"
    );
    let _ = stop.send(());
}

/// Whether process `pid` still runs (a zombie, waiting only to be reaped, does not).
#[cfg(target_os = "linux")]
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_what_the_command_started_too_when_the_lifetime_runs_out() {
    let (ada, agent_id, token, _broker_dir, stop) = inject_world(INJECT_FROM_SH).await;
    let work = tempfile::tempdir().unwrap();
    let pid_file = work.path().join("grandchild.pid");
    let script = format!("sleep 300 & echo $! > '{}'; wait", pid_file.display());
    let (code, err, took) = run_injected(&ada, &agent_id, &token, "2s", &script).await;
    assert_eq!(code, Some(143), "stopped with SIGTERM: {err}");
    assert!(took < std::time::Duration::from_secs(30), "not left to run: {err}");
    let grandchild = read_pid(&pid_file);
    // Reaping an orphan can lag its death a little.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while running(grandchild) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        !running(grandchild),
        "a process the command started in the background holds the injected credential in its \
         environment too: it must not outlive the lifetime (pid {grandchild} still runs)"
    );
    let _ = stop.send(());
}

/// Whether process `pid` is gone from `/proc` altogether (a zombie is still listed), waiting a
/// little: an orphan reaped by init can lag its death.
#[cfg(target_os = "linux")]
async fn gone(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    true
}

/// A shell line that starts, in the background, a daemon in a session of its own (`setsid`),
/// which writes its pid to `pid_file` and runs `body`; `fork_twice` starts it from a subshell
/// that exits at once, as a daemon detaches, so it is re-parented. Like a daemon it lets go of
/// stdin, stdout and stderr, so latchkey's output ends when latchkey exits.
#[cfg(target_os = "linux")]
fn daemon(pid_file: &Path, body: &str, fork_twice: bool) -> String {
    let start = format!(
        "setsid sh -c 'echo $$ > {}; {body}' </dev/null >/dev/null 2>&1 &",
        pid_file.display()
    );
    if fork_twice { format!("( {start} )") } else { start }
}

/// `latchkey run` of `script` under `sh -c` with models injected, `--ttl ttl`.
#[cfg(target_os = "linux")]
fn injected(ada: &Latchkey, agent_id: &str, token: &str, ttl: &str, script: &str) -> Command {
    injected_into(ada, agent_id, token, ttl, &["sh", "-c", script])
}

/// `latchkey run` of `program` (and its arguments) with models injected, `--ttl ttl`.
fn injected_into(
    ada: &Latchkey,
    agent_id: &str,
    token: &str,
    ttl: &str,
    program: &[&str],
) -> Command {
    let mut args =
        vec!["run", "--agent", agent_id, "--inject", "models=MODELS_KEY", "--ttl", ttl, "--"];
    args.extend_from_slice(program);
    let mut command = ada.command(&args);
    command.env("LATCHKEY_AGENT_TOKEN", token);
    command
}

/// Runs [`injected`]; returns the exit code, stderr and how long it took.
#[cfg(target_os = "linux")]
async fn run_injected(
    ada: &Latchkey,
    agent_id: &str,
    token: &str,
    ttl: &str,
    script: &str,
) -> (Option<i32>, String, std::time::Duration) {
    let mut command = injected(ada, agent_id, token, ttl, script);
    let started = std::time::Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), err, started.elapsed())
}

#[cfg(target_os = "linux")]
fn read_pid(file: &Path) -> u32 {
    std::fs::read_to_string(file).unwrap().trim().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_processes_that_left_the_group_when_the_lifetime_runs_out() {
    let (ada, agent_id, token, _broker_dir, stop) = inject_world(INJECT_FROM_SH).await;
    let work = tempfile::tempdir().unwrap();
    let (session, detached) = (work.path().join("session.pid"), work.path().join("detached.pid"));
    let script = format!(
        "{}\n{}\nwhile [ ! -s '{}' ] || [ ! -s '{}' ]; do sleep 0.1; done; sleep 60",
        daemon(&session, "exec sleep 300", false),
        daemon(&detached, "exec sleep 300", true),
        session.display(),
        detached.display()
    );
    let (code, err, took) = run_injected(&ada, &agent_id, &token, "2s", &script).await;
    assert_eq!(code, Some(143), "the command was stopped with SIGTERM: {err}");
    assert!(took < std::time::Duration::from_secs(30), "not left to run: {err}");
    for (file, what) in [
        (&session, "a child that called setsid (a session and process group of its own)"),
        (&detached, "a daemon that forked twice and called setsid (re-parented away)"),
    ] {
        let pid = read_pid(file);
        assert!(
            gone(pid).await,
            "{what} inherited the injected credential and is out of the command's process \
             group, so stopping the group misses it: latchkey must find it as its descendant \
             (child subreaper), stop it when the lifetime runs out and reap it, yet pid {pid} \
             is still in /proc"
        );
    }
    let _ = stop.send(());
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_command_leaves_behind_is_stopped_when_it_exits_before_the_lifetime() {
    let (ada, agent_id, token, _broker_dir, stop) = inject_world(INJECT_FROM_SH).await;
    let work = tempfile::tempdir().unwrap();
    let (background, detached, stubborn) = (
        work.path().join("background.pid"),
        work.path().join("detached.pid"),
        work.path().join("stubborn.pid"),
    );
    let script = format!(
        "sleep 300 </dev/null >/dev/null 2>&1 & echo $! > '{}'\n{}\n{}\nwhile [ ! -s '{}' ] || [ ! -s '{}' ]; do sleep 0.1; done",
        background.display(),
        daemon(&detached, "exec sleep 300", true),
        // Bounded, so that it ends even where latchkey fails to stop it.
        daemon(&stubborn, "trap \"\" TERM; for i in $(seq 300); do sleep 1; done", true),
        detached.display(),
        stubborn.display()
    );
    let mut latchkey = injected(&ada, &agent_id, &token, "1h", &script)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    // The detached daemon is stopped as soon as the command exits, while the one that ignores
    // SIGTERM keeps latchkey waiting out the grace: its child by then, it must have reaped it.
    let reaped_by_latchkey = loop {
        let exited = latchkey.try_wait().unwrap().is_some();
        let pid = std::fs::read_to_string(&detached).ok().and_then(|t| t.trim().parse().ok());
        if pid.is_some_and(|pid: u32| !Path::new(&format!("/proc/{pid}")).exists()) {
            break !exited;
        }
        if exited || started.elapsed() > std::time::Duration::from_secs(40) {
            break false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let output =
        tokio::task::spawn_blocking(move || latchkey.wait_with_output().unwrap()).await.unwrap();
    let (code, err, took) = (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    );
    assert!(
        reaped_by_latchkey,
        "a detached daemon is re-parented to latchkey (its subreaper), so once stopped it is a \
         zombie until latchkey waits for it: latchkey must reap it, not leave it to init when it \
         exits: {err}"
    );
    assert_eq!(code, Some(0), "the command's own exit status: {err}");
    assert!(
        took < std::time::Duration::from_secs(40),
        "latchkey stops what was left behind instead of waiting out the hour: {err}"
    );
    assert!(err.contains("left processes behind"), "says what it stops: {err}");
    for (file, what) in [
        (&background, "a background process in the command's group"),
        (&detached, "a detached daemon (double fork, setsid)"),
        (&stubborn, "a detached daemon that ignores SIGTERM (SIGKILL after the grace)"),
    ] {
        let pid = read_pid(file);
        assert!(
            gone(pid).await,
            "{what} holds the injected credential: once the command exits, nothing it started \
             may keep it (it would outlive the lifetime, which no one enforces after latchkey \
             returns), yet pid {pid} is still in /proc"
        );
    }
    let _ = stop.send(());
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_main_thread_exited_is_stopped_with_the_rest() {
    let (ada, agent_id, token, _broker_dir, stop) = inject_world(INJECT_FROM_SH).await;
    let work = tempfile::tempdir().unwrap();
    let (pid_file, ready, program) =
        (work.path().join("daemon.pid"), work.path().join("ready"), work.path().join("daemon.py"));
    // The main thread leaves with `pthread_exit`, so /proc shows the process as a zombie while
    // its other thread runs on; that thread says so once the leader is gone.
    std::fs::write(
        &program,
        format!(
            "import ctypes, os, threading, time\n\
             def run():\n    \
                 while open('/proc/self/stat').read().rsplit(')', 1)[1].split()[0] != 'Z':\n        \
                     time.sleep(0.02)\n    \
                 open({ready:?}, 'w').write('ready')\n    \
                 time.sleep(300)\n\
             threading.Thread(target=run).start()\n\
             ctypes.CDLL(None).pthread_exit(None)\n",
            ready = ready.display().to_string()
        ),
    )
    .unwrap();
    let script = format!(
        "{}\nwhile [ ! -s '{}' ]; do sleep 0.1; done",
        daemon(&pid_file, &format!("exec python3 {}", program.display()), true),
        ready.display()
    );
    let (code, err, took) = run_injected(&ada, &agent_id, &token, "1h", &script).await;
    assert_eq!(code, Some(0), "the command's own exit status: {err}");
    assert!(took < std::time::Duration::from_secs(40), "not left to run: {err}");
    let pid = read_pid(&pid_file);
    assert!(
        gone(pid).await,
        "a daemon whose main thread exited looks like a zombie in /proc/PID/stat, yet its other \
         threads run with the injected credential: latchkey must stop it like any process the \
         command left behind, yet pid {pid} is still in /proc ({err})"
    );
    let _ = stop.send(());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_to_latchkey_run_reaches_the_command_and_its_status_is_passed_on() {
    let (ada, agent_id, token, _broker_dir, stop) = inject_world(
        "permit (principal, action == Latchkey::Action::\"inject\", resource)\nwhen { context.command == \"sleep\" };\n",
    )
    .await;
    let mut command = ada.command(&[
        "run",
        "--agent",
        &agent_id,
        "--inject",
        "models=MODELS_KEY",
        "--",
        "sleep",
        "60",
    ]);
    command.env("LATCHKEY_AGENT_TOKEN", &token).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    // The release note on stderr comes just before the command starts.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(line.contains("MODELS_KEY"), "released: {line}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let killed =
        Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success();
    assert!(killed, "kill -INT latchkey");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "the command runs in a process group of its own, so a Ctrl-C or `kill -INT` meant for \
         `latchkey run` must be passed on to it, and its death by SIGINT reported as 128 + 2"
    );
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_releases_nothing_when_any_inject_is_refused() {
    let (ada, agent_id, token, _broker_dir, stop) = inject_world(
        "permit (principal, action == Latchkey::Action::\"inject\", resource)\nwhen { resource.name == \"models\" };\n",
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("ran");
    let script = format!("touch '{}'", marker.display());
    let mut command = ada.command(&[
        "run",
        "--agent",
        &agent_id,
        "--inject",
        "models=MODELS_KEY",
        "--inject",
        "search=SEARCH_KEY",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    command.env("LATCHKEY_AGENT_TOKEN", &token);
    let (code, _, err) = finish(command, None).await;
    assert_eq!(code, 4, "a refusal by the broker exits 4: {err}");
    assert!(err.contains("policy_denied") && err.contains("search"), "says which: {err}");
    assert!(!err.contains("MODELS_KEY"), "no release is announced: {err}");
    assert!(!marker.exists(), "the command never ran");

    let released = ada.json(&["audit", "list", "--kind", "inject_released"], None).await;
    assert_eq!(
        released,
        serde_json::json!([]),
        "models was permitted, but the command could not run without search, so the audit log \
         must not say models was released: a release on record is a credential someone holds"
    );
    let denied = ada.json(&["audit", "list", "--kind", "inject_denied"], None).await;
    let mut reasons: Vec<(String, String)> = denied
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let record = &r["record"];
            (
                record["credential_name"].as_str().unwrap().to_owned(),
                record["reason_code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("models".to_owned(), "another_credential_refused".to_owned()),
            ("search".to_owned(), "policy_denied".to_owned())
        ],
        "each credential's record says why it was not released: {denied}"
    );
    let _ = stop.send(());
}

/// Drives an interactive bash on a pseudo-terminal (python3's `pty`): arguments are the
/// `latchkey` binary and the agent id. Each step waits for what a person would wait for, and
/// the transcript goes to stdout; a step that never comes ends it with exit status 1.
#[cfg(target_os = "linux")]
const TERMINAL_SESSION: &str = r#"import os, pty, select, sys, time
exe, agent = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.execvp('bash', ['bash', '--norc', '--noprofile', '-i'])
seen, at = b'', 0
def expect(text, secs=20):
    global seen, at
    end = time.time() + secs
    while seen.find(text.encode(), at) < 0:
        if time.time() > end:
            sys.stdout.write(seen.decode(errors='replace') + '\n(never saw ' + repr(text) + ')\n')
            sys.exit(1)
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            seen += os.read(fd, 4096)
    at = seen.find(text.encode(), at) + len(text)
def send(text):
    os.write(fd, text.encode())
run = exe + ' run --agent ' + agent + ' --inject models=MODELS_KEY -- '
send("PS1='rea''dy> '\n"); expect('ready> ')
send(run + "sh -c 'read line; echo got:$line'\n"); expect('audit record')
send('hello\n'); expect('got:hello'); expect('ready> ')
send('echo fir""st=$?\n'); expect('first=0')
send(run + 'sleep 60\n'); expect('for sleep')
time.sleep(0.5)
send('\x1a'); expect('Stopped'); expect('ready> ')
send('echo ba""ck\n'); expect('back')
send('fg\n'); expect('sleep 60')
time.sleep(0.5)
send('\x03'); expect('ready> ')
send('echo sec""ond=$?\n'); expect('second=')
expect('ready> ')
send('exit\n')
sys.stdout.write(seen.decode(errors='replace'))
"#;

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_command_keeps_the_terminal_for_reads_ctrl_z_and_ctrl_c() {
    let (ada, agent_id, token, _broker_dir, stop) =
        inject_world("permit (principal, action == Latchkey::Action::\"inject\", resource);\n")
            .await;
    let mut command = Command::new("python3");
    command
        .args(["-c", TERMINAL_SESSION, env!("CARGO_BIN_EXE_latchkey"), &agent_id])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LATCHKEY_CONFIG_DIR", ada.dir.path())
        .env("LATCHKEY_PROFILE", "test")
        .env("LATCHKEY_KEY_STORE", "file")
        .env("LATCHKEY_KEYSTORE_PASSPHRASE", KEYSTORE_PASSPHRASE)
        .env("LATCHKEY_AGENT_TOKEN", &token)
        .env("HISTFILE", "/dev/null")
        .env("TERM", "dumb")
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let transcript = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the command runs in a process group of its own, so latchkey must hand it the terminal \
         (or a read stops it with SIGTTIN), let Ctrl-Z stop the job as the shell sees it, and \
         pass Ctrl-C on after `fg`: {transcript}"
    );
    assert!(transcript.contains("second=130"), "Ctrl-C ended it: 128 + 2: {transcript}");
    let _ = stop.send(());
}
