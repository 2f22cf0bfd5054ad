//! A real broker (`latchkey-server`) on a loopback port with its own database, and devices that
//! each have their own profile directory and key store, as separate machines would.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "shared by several test binaries, each using a subset; a panic is the failure report"
)]

use std::sync::Arc;
use std::time::Duration;

use latchkey_client::api::{BrokerClient, BrokerUrl};
use latchkey_client::keychain::{EncryptedFileStore, SharedKeyStore};
use latchkey_client::profile::{Profile, ProfileName};
use latchkey_client::workspace::{broker_client, create_workspace};
use latchkey_core::keys::BrokerSecretKey;
use latchkey_core::secret::SecretBytes;
use latchkey_server::Broker;
use latchkey_server::store::Store;

/// A broker serving on 127.0.0.1 with the system clock (clients sign with the real time).
pub struct TestBroker {
    pub url: BrokerUrl,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestBroker {
    /// A broker open to workspace creation, as one on loopback is by default.
    pub async fn start() -> Self {
        Self::start_creating(latchkey_server::creation::WorkspaceCreation::Open).await
    }

    /// A broker that answers workspace creations as `creation` says, as a team server's
    /// operator configures it.
    pub async fn start_creating(creation: latchkey_server::creation::WorkspaceCreation) -> Self {
        Self::start_with(|broker| broker.with_workspace_creation(creation)).await
    }

    /// A broker open to workspace creation that answers each device `per_second` requests a
    /// second after a burst of `burst`.
    pub async fn start_rate_limited(per_second: u32, burst: u32) -> Self {
        let limit = latchkey_server::rate_limit::DeviceRateLimit::new(per_second, burst)
            .expect("a valid rate limit");
        Self::start_with(|broker| {
            broker
                .with_workspace_creation(latchkey_server::creation::WorkspaceCreation::Open)
                .with_device_rate_limit(Some(limit))
        })
        .await
    }

    /// A broker as `configure` sets it up from the defaults (open to workspace creation only if
    /// `configure` says so).
    pub async fn start_with(configure: impl FnOnce(Broker) -> Broker) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(&dir.path().join("db.sqlite3")).await.expect("open store");
        let broker =
            configure(Broker::new(store, BrokerSecretKey::generate().expect("broker key")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("local addr"))
            .parse()
            .expect("loopback URL");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            latchkey_server::serve(broker, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("server ran");
        });
        Self { url, dir, stop: Some(stop), task: Some(task) }
    }

    /// A direct connection to the broker's database: how these tests play a malicious broker.
    pub async fn database(&self) -> sqlx::SqlitePool {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(self.dir.path().join("db.sqlite3"))
            .busy_timeout(std::time::Duration::from_secs(5));
        sqlx::SqlitePool::connect_with(options).await.expect("open the broker's database")
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

/// One machine: a profile in its own directory and its own encrypted-file key store (the real
/// store, at its real Argon2id parameters; the OS keychain is covered by tests/keychain.rs).
pub struct Machine {
    pub profile: Profile,
    pub store: SharedKeyStore,
    _dir: tempfile::TempDir,
}

impl Machine {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let profile = Profile::new(ProfileName::named(name).expect("profile name"), dir.path());
        let store = EncryptedFileStore::create(
            profile.key_file_path(),
            profile.name(),
            SecretBytes::copy_from(b"test passphrase for this machine"),
        )
        .expect("create the key file");
        Self { profile, store: Arc::new(store), _dir: dir }
    }
}

/// Ada's machine, after she created the workspace "Acme" on `broker` from her laptop, and her
/// signed client for it.
pub async fn ada_founds_acme(broker: &TestBroker) -> (Machine, BrokerClient) {
    let ada = Machine::new("ada");
    create_workspace(&ada.profile, &ada.store, &broker.url, "Acme", "Ada", "laptop", None)
        .await
        .expect("the workspace is created");
    let client = broker_client(&ada.profile, &ada.store).await.expect("a signed client");
    (ada, client)
}

/// Whether these tests may use the OS keychain of this session (`LATCHKEY_TEST_KEYRING=1`);
/// prints why not otherwise. They write throwaway entries into the running user's keychain, so
/// they never do so unasked.
pub fn os_keychain_session() -> bool {
    use std::io::Write as _;
    if std::env::var("LATCHKEY_TEST_KEYRING").as_deref() == Ok("1") {
        return true;
    }
    let how = if cfg!(any(target_os = "macos", target_os = "windows")) {
        "set LATCHKEY_TEST_KEYRING=1 to let them write throwaway entries into this user's keychain"
    } else {
        "run tests/stories/keychain.sh, or set LATCHKEY_TEST_KEYRING=1 inside a D-Bus session \
         with an unlocked gnome-keyring"
    };
    // Straight to stderr, past the test harness's capture, so the skip is visible.
    let _ = writeln!(std::io::stderr(), "skipped: no OS keychain session ({how})");
    false
}

/// A profile no earlier or concurrent run uses.
pub fn fresh_profile() -> ProfileName {
    let suffix: [u8; 6] = latchkey_core::random::array().expect("system randomness");
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    ProfileName::named(&format!("test-{hex}")).expect("a valid profile name")
}

/// No rendering of `key` (text, hex, base64, a Rust byte list) appears in `text`.
pub fn assert_no_key_material(text: &str, key: &[u8; 32]) {
    use base64::Engine as _;
    let hex: String = key[..12].iter().map(|b| format!("{b:02x}")).collect();
    let renderings = [
        String::from_utf8_lossy(&key[..12]).into_owned(),
        hex.clone(),
        hex.to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(&key[..12]),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key[..12]),
        format!("{:?}", &key[..6]).trim_matches(['[', ']']).to_owned(),
    ];
    for rendering in renderings {
        assert!(!text.contains(&rendering), "key material ({rendering}) in: {text}");
    }
}

/// A loopback upstream that answers `200 {"ok":true}` to everything and keeps each request's
/// head, so a test can check which credential it received.
pub async fn upstream() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
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
                record.lock().expect("lock").push(String::from_utf8_lossy(&head).into_owned());
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}")
                    .await;
            });
        }
    });
    (base, seen)
}

/// A fake broker on loopback that answers one request with a body of no stated length (an event
/// stream, an export): each `(pause, text)` written after its pause, then silence with the
/// connection held open until the test ends. Returns a client for it, as any device would sign.
pub async fn scripted_broker(script: Vec<(Duration, String)>) -> BrokerClient {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0_u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client sent its whole request");
            head.extend_from_slice(&buf[..n]);
        }
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n")
            .await
            .unwrap();
        for (pause, text) in script {
            tokio::time::sleep(pause).await;
            socket.write_all(text.as_bytes()).await.unwrap();
            socket.flush().await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(socket);
    });
    let signing = latchkey_core::keys::DeviceSigningKey::generate().unwrap();
    BrokerClient::new(
        url.parse::<latchkey_client::api::BrokerUrl>().unwrap(),
        latchkey_core::ids::DeviceId::random(),
        signing,
    )
    .unwrap()
}
