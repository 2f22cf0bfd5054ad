//! Real authorization servers for the OAuth tests, run with node from `tests/oauth/` at the
//! repository root: `strict.mjs` (oidc-provider) and `lenient.mjs` (oauth2-mock-server). Each
//! prints one JSON line when it listens; the process is killed when its handle drops.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// A running authorization server.
pub(crate) struct AuthServer {
    /// Its issuer identifier, e.g. `http://127.0.0.1:41234`.
    pub(crate) issuer: String,
    /// The client id registered there (the strict server registers one native client).
    pub(crate) client_id: String,
    _process: Child,
}

#[derive(Deserialize)]
struct Ready {
    issuer: String,
    client_id: Option<String>,
}

/// oidc-provider: PKCE S256 required, single-use codes, registered redirect URIs (any loopback
/// port), refresh token rotation with reuse detection, `iss` in responses, revocation.
pub(crate) async fn strict() -> AuthServer {
    spawn("strict.mjs", &[]).await
}

/// oauth2-mock-server, which accepts nearly anything; `flags` choose its quirks (see the
/// script's header).
pub(crate) async fn lenient(flags: &[&str]) -> AuthServer {
    spawn("lenient.mjs", flags).await
}

impl AuthServer {
    /// What the lenient server's authorization and token endpoints were sent.
    pub(crate) async fn received(&self) -> serde_json::Value {
        reqwest::get(format!("{}/received", self.issuer))
            .await
            .expect("the lenient server answers /received")
            .json()
            .await
            .expect("/received is JSON")
    }
}

async fn spawn(script: &str, flags: &[&str]) -> AuthServer {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oauth");
    assert!(
        dir.join("node_modules").is_dir(),
        "tests/oauth/node_modules is missing: run `npm ci` in tests/oauth (CI installs it) so the \
         OAuth tests have their authorization servers"
    );
    let mut process = Command::new("node")
        .arg(script)
        .args(flags)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (install Node.js 20 or later)");
    let mut stdout = BufReader::new(process.stdout.take().expect("stdout is piped"));
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        let mut stderr = String::new();
        if let Some(mut pipe) = process.stderr.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), pipe.read_to_string(&mut stderr))
                .await;
        }
        panic!("node {script} did not report that it listens: {stderr}");
    }
    // Both pipes are drained so that the server never blocks on a full one or dies writing to
    // a closed one; what it says goes to the test's captured output (shown when a test fails).
    tokio::spawn(forward(script.to_owned(), stdout));
    if let Some(stderr) = process.stderr.take() {
        tokio::spawn(forward(script.to_owned(), BufReader::new(stderr)));
    }
    let ready: Ready = serde_json::from_str(&line).expect("the ready line is JSON");
    AuthServer {
        issuer: ready.issuer,
        client_id: ready.client_id.unwrap_or_else(|| "latchkey-test".to_owned()),
        _process: process,
    }
}

async fn forward(script: String, pipe: impl tokio::io::AsyncBufRead + Unpin) {
    let mut lines = pipe.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("[{script}] {line}");
    }
}
