//! A real broker with one agent ready to call one credential, for tests and benchmarks driven
//! from other languages (tests/interop, bench/proxy.sh).
//!
//! ```text
//! LATCHKEY_FIXTURE_SECRET=... cargo run -q -p latchkey-server --example broker_fixture -- \
//!     --upstream http://127.0.0.1:8080 [--provider openai|anthropic|github] \
//!     [--injection bearer|x-api-key] [--secret-env VAR]
//! ```
//!
//! It starts a broker on `127.0.0.1:0` (SQLite in a fresh temporary directory, a freshly
//! generated broker key, the system clock), then acts as the desktop app would: a new admin device
//! creates a workspace (keys generated and wrapped on the device, every request signed per
//! RFC 9421), an agent, and a shared credential named after the provider whose upstream is
//! `--upstream` and whose secret is read from the environment variable `--secret-env` (never from
//! the command line, where other users could read it). It registers a standing grant and issues
//! the matching capability (every method, `/**`, one hour), prints one line of JSON to stdout:
//!
//! ```json
//! {"base_url": "http://127.0.0.1:PORT/p/openai", "agent_token": "lk_...", "capability": "...",
//!  "data_dir": "/tmp/latchkey-fixture-..."}
//! ```
//!
//! and serves until its stdin closes or it gets SIGTERM / Ctrl-C; then it stops and removes the
//! data directory. Logs go to stderr at the level in `LATCHKEY_LOG` (default `warn`). The
//! credential is never printed or logged; the agent token and capability are printed because
//! handing them to the caller is the fixture's purpose.

use std::io::{Read as _, Write as _};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use latchkey_core::capability::{Capability, Claims, Method, MethodSet, PathPattern, Reuse};
use latchkey_core::envelope::Envelope;
use latchkey_core::httpsig::{self, SignedRequestParts};
use latchkey_core::ids::{
    AgentId, CredentialId, DeviceId, GrantId, KeyVersion, MemberId, Owner, WorkspaceId,
};
use latchkey_core::keys::{
    BrokerPublicKey, BrokerSecretKey, DeviceKeys, MemberKey, WorkspaceKey, WrappedKey,
};
use latchkey_core::payload::{CredentialKind, CredentialPayload, Injection};
use latchkey_core::secret::SecretBytes;
use latchkey_server::store::Store;
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// How long the standing grant and its capability last.
const GRANT_LIFETIME_SECS: u64 = 60 * 60;

#[derive(Debug, Parser)]
#[command(about = "A broker with one agent, credential and standing capability, for tests")]
struct Args {
    /// Upstream base URL the credential points at (http only on loopback).
    #[arg(long)]
    upstream: String,
    /// Provider: also the credential's name, so the proxy path is `/p/<provider>`.
    #[arg(long, value_enum, default_value_t = Provider::Openai)]
    provider: Provider,
    /// Where the broker puts the credential upstream; default: the provider's own scheme.
    #[arg(long, value_enum)]
    injection: Option<InjectionArg>,
    /// Name of the environment variable holding the credential's secret.
    #[arg(long, default_value = "LATCHKEY_FIXTURE_SECRET")]
    secret_env: String,
    /// Serve on this many threads, each with a single-threaded runtime of its own, instead of
    /// on the fixture's multi-threaded runtime.
    #[arg(long)]
    serving_threads: Option<std::num::NonZeroUsize>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Provider {
    Openai,
    Anthropic,
    Github,
}

impl Provider {
    fn id(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Github => "github",
        }
    }

    fn default_injection(self) -> InjectionArg {
        match self {
            Provider::Anthropic => InjectionArg::XApiKey,
            Provider::Openai | Provider::Github => InjectionArg::Bearer,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum InjectionArg {
    /// `authorization: Bearer <secret>`.
    Bearer,
    /// `x-api-key: <secret>`.
    XApiKey,
}

impl InjectionArg {
    fn injection(self) -> Injection {
        match self {
            InjectionArg::Bearer => Injection::bearer(),
            InjectionArg::XApiKey => {
                Injection::Header { name: "x-api-key".into(), prefix: String::new() }
            }
        }
    }
}

/// The broker allocates and frees many small buffers per call from two or more threads;
/// mimalloc serves that pattern with less work than glibc's allocator (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    latchkey_server::main_runtime(args.serving_threads)?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let secret = read_secret(&args.secret_env)?;
    let upstream = url::Url::parse(&args.upstream).context("--upstream is not a URL")?;
    let upstream_host = match (upstream.scheme(), upstream.host_str(), upstream.port()) {
        ("http" | "https", Some(host), Some(port)) => format!("{host}:{port}"),
        ("http" | "https", Some(host), None) => host.to_owned(),
        _ => bail!("--upstream must be an http(s) URL with a host"),
    };

    let data_dir = tempfile::Builder::new().prefix("latchkey-fixture-").tempdir()?;
    let store = Store::open_sqlite(&data_dir.path().join("db.sqlite3")).await?;
    let metrics = latchkey_server::Metrics::new();
    let broker = latchkey_server::Broker::new(store.clone(), BrokerSecretKey::generate()?)
        .with_metrics(metrics.clone())
        .with_serving_threads(args.serving_threads);
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metrics_url = format!("http://{}/metrics", metrics_listener.local_addr()?);
    // Ends with the process: the fixture is stopped as a whole.
    tokio::spawn(latchkey_server::serve_metrics(metrics_listener, metrics, std::future::pending()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(latchkey_server::serve(broker, listener, async {
        let _ = stopped.await;
    }));

    let client = Client::new(origin.clone())?;
    let admin = Admin::create_workspace(&client).await?;
    let broker_key = client.broker_key().await?;
    let (agent, token) = admin.create_agent(&client, "fixture-agent").await?;
    let payload = CredentialPayload {
        kind: CredentialKind::ApiKey,
        injection: args.injection.unwrap_or(args.provider.default_injection()).injection(),
        secret,
    };
    let credential = admin
        .create_credential(&client, args.provider.id(), upstream.as_str(), &upstream_host, &payload)
        .await?;
    drop(payload);
    let capability =
        admin.standing_capability(&client, &broker_key, agent, credential, now()).await?;

    let ready = json!({
        "base_url": format!("{origin}/p/{}", args.provider.id()),
        "agent_token": token.as_str(),
        "capability": capability.as_str(),
        "data_dir": data_dir.path(),
        "metrics_url": metrics_url,
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ready}")?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(%origin, provider = args.provider.id(), "broker fixture ready");

    shutdown_requested().await;
    let _ = stop.send(());
    server.await.context("server task")??;
    store.close().await;
    data_dir.close()?;
    Ok(())
}

/// The secret from the environment; its value never appears in an error.
fn read_secret(variable: &str) -> anyhow::Result<SecretBytes> {
    let Some(value) = std::env::var_os(variable) else {
        bail!("set the credential's secret in the environment variable {variable}");
    };
    let value = Zeroizing::new(value.into_encoded_bytes());
    if value.is_empty() {
        bail!("the environment variable {variable} is empty; put the credential's secret in it");
    }
    Ok(SecretBytes::copy_from(&value))
}

/// Completes when stdin reaches end of file, or on SIGTERM or Ctrl-C.
async fn shutdown_requested() {
    let (eof, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    // A plain thread: tokio's stdin would keep the runtime from shutting down while it blocks.
    std::thread::spawn(move || {
        let mut sink = [0_u8; 256];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = eof.send(());
    });
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = stdin_closed => {},
        () = terminate => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The broker's device API, as the desktop app calls it.
struct Client {
    origin: String,
    http: reqwest::Client,
}

impl Client {
    fn new(origin: String) -> anyhow::Result<Self> {
        let http =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(Self { origin, http })
    }

    async fn broker_key(&self) -> anyhow::Result<BrokerPublicKey> {
        let body: Value =
            self.http.get(format!("{}/v1/broker-key", self.origin)).send().await?.json().await?;
        let text = body["public_key"].as_str().context("broker key response without a key")?;
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text)?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|_| anyhow::anyhow!("broker key is not 32 bytes"))?;
        Ok(BrokerPublicKey::from_bytes(bytes))
    }

    /// Sends a request signed by `device` and returns the JSON body of a success.
    async fn signed(
        &self,
        device: &Admin,
        method: &str,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let bytes = serde_json::to_vec(body)?;
        let target = format!("{}{path}", self.origin);
        let headers = [("content-type", "application/json")];
        let parts = SignedRequestParts { method, target_uri: &target, headers: &headers };
        let sig = httpsig::sign(&parts, &bytes, &device.keys.signing, device.id, now(), 60)?;
        let response = self
            .http
            .request(method.parse()?, &target)
            .header("content-type", "application/json")
            .header("content-digest", sig.content_digest)
            .header("signature-input", sig.signature_input)
            .header("signature", sig.signature)
            .body(bytes)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            // Error bodies carry a code and a message, never a submitted secret.
            bail!("{method} {path} answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }
}

/// The first admin's device of a new workspace, holding the workspace key.
struct Admin {
    id: DeviceId,
    keys: DeviceKeys,
    workspace: WorkspaceId,
    workspace_key: WorkspaceKey,
}

impl Admin {
    /// Generates a device, a workspace key and a member key, wraps both keys to the device and
    /// creates the workspace.
    async fn create_workspace(client: &Client) -> anyhow::Result<Self> {
        let (id, workspace, member) =
            (DeviceId::random(), WorkspaceId::random(), MemberId::random());
        let keys = DeviceKeys::generate()?;
        let workspace_key = WorkspaceKey::generate(workspace, KeyVersion::FIRST)?;
        let member_key = MemberKey::generate(workspace, member, KeyVersion::FIRST)?;
        let me = (id, &keys.exchange.public_key());
        let wrapped_wk = WrappedKey::wrap_workspace_key(&workspace_key, me, (id, &keys.signing))?;
        let wrapped_mk = WrappedKey::wrap_member_key(&member_key, me, (id, &keys.signing))?;
        let public = keys.public_keys();
        let admin = Self { id, keys, workspace, workspace_key };
        let body = json!({
            "workspace": {"id": workspace, "name": "Fixture"},
            "member": {"id": member, "name": "Fixture admin"},
            "device": {
                "id": id,
                "name": "Fixture device",
                "signing_key": b64(&public.signing.to_bytes()),
                "exchange_key": b64(&public.exchange.to_bytes()),
            },
            "wrapped_keys": [b64(wrapped_wk.as_bytes()), b64(wrapped_mk.as_bytes())],
        });
        client.signed(&admin, "POST", "/v1/workspaces", &body).await?;
        Ok(admin)
    }

    async fn create_agent(
        &self,
        client: &Client,
        name: &str,
    ) -> anyhow::Result<(AgentId, Zeroizing<String>)> {
        let body = client.signed(self, "POST", "/v1/agents", &json!({"name": name})).await?;
        let id = serde_json::from_value(body["id"].clone())?;
        let token = body["token"].as_str().context("agent response without a token")?;
        Ok((id, Zeroizing::new(token.to_owned())))
    }

    /// A shared credential sealed on this device under the workspace key's record key.
    async fn create_credential(
        &self,
        client: &Client,
        name: &str,
        upstream: &str,
        upstream_host: &str,
        payload: &CredentialPayload,
    ) -> anyhow::Result<CredentialId> {
        let id = CredentialId::random();
        let envelope = Envelope::seal(&self.workspace_key.record_key(id)?, &payload.encode()?)?;
        let body = json!({
            "id": id,
            "name": name,
            "provider": name,
            "upstream_base_url": upstream,
            "allowed_hosts": [upstream_host],
            "owner": "shared",
            "key_version": 1,
            "envelope": b64(envelope.as_bytes()),
        });
        client.signed(self, "POST", "/v1/credentials", &body).await?;
        Ok(id)
    }

    /// Registers a standing grant (every method, every path) and issues its capability.
    async fn standing_capability(
        &self,
        client: &Client,
        broker_key: &BrokerPublicKey,
        agent: AgentId,
        credential: CredentialId,
        now: u64,
    ) -> anyhow::Result<Zeroizing<String>> {
        let grant = GrantId::random();
        let expires = now + GRANT_LIFETIME_SECS;
        let methods: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
        let body = json!({
            "id": grant, "agent": agent, "credential": credential, "methods": methods,
            "path_patterns": ["/**"], "expires_at": expires,
        });
        client.signed(self, "POST", "/v1/grants", &body).await?;
        let claims = Claims {
            workspace: self.workspace,
            agent,
            credential,
            owner: Owner::Shared,
            key_version: KeyVersion::FIRST,
            issuer: self.id,
            methods: MethodSet::of(&Method::ALL).context("every method")?,
            paths: vec![PathPattern::parse("/**")?],
            not_before: now.saturating_sub(5),
            expires,
            reuse: Reuse::Standing { grant },
        };
        let key = self.workspace_key.record_key(credential)?;
        let capability = Capability::issue(claims, &key, &self.keys.signing, broker_key)?;
        Ok(Zeroizing::new(capability.encode()))
    }
}
