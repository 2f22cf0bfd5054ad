//! The service starts on a loopback port, reports health and readiness, publishes its key, and
//! answers unknown routes in the one error shape.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

use crate::common;

use latchkey_core::keys::BrokerSecretKey;
use serde_json::Value;

struct Running {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
    _db: common::TestDatabase,
    public_key: [u8; 32],
}

async fn start() -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = common::TestDatabase::create().await;
    let store = db.open_and_migrate(dir.path()).await;
    let key = BrokerSecretKey::generate().expect("broker key");
    let public_key = key.public_key().to_bytes();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        latchkey_server::serve(latchkey_server::Broker::new(store, key), listener, async {
            let _ = stopped.await;
        })
        .await
        .expect("server ran");
    });
    Running { base, stop: Some(stop), task, _dir: dir, _db: db, public_key }
}

impl Running {
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::get(format!("{}{path}", self.base)).await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("server task finished cleanly");
    }
}

#[tokio::test]
async fn health_and_readiness_answer_once_the_database_is_open() {
    let server = start().await;
    assert_eq!(server.get("/healthz").await, (200, serde_json::json!({"status": "ok"})));
    assert_eq!(server.get("/readyz").await, (200, serde_json::json!({"status": "ready"})));
    server.stop().await;
}

#[tokio::test]
async fn the_broker_public_key_is_published_for_sealing_capabilities() {
    use base64::Engine as _;
    let server = start().await;
    let (status, body) = server.get("/v1/broker-key").await;
    assert_eq!(status, 200);
    let published = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body["public_key"].as_str().expect("public_key is a string"))
        .expect("base64url");
    assert_eq!(
        published, server.public_key,
        "the published key must be the configured key's public half"
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_one_error_shape() {
    let server = start().await;
    let (status, body) = server.get("/no/such/thing").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found", "clients branch on the code: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a message for people: {body}"
    );

    let response = reqwest::Client::new()
        .delete(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 405);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["code"], "method_not_allowed", "{body}");
    server.stop().await;
}

#[tokio::test]
async fn reopening_the_database_keeps_it_and_reapplies_no_migration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = common::TestDatabase::create().await;
    let first = db.open_and_migrate(dir.path()).await;
    first.close().await;
    // Migrating again finds every migration applied (and, on PostgreSQL, grants converge).
    let second = db.open_and_migrate(dir.path()).await;
    second.ping().await.expect("database answers");
    second.close().await;
    db.drop_database().await;
}
