//! The local agent proxy: a loopback HTTP server that local agents call instead of the broker.
//!
//! An agent on this machine sends its ordinary request, with its own agent token, to
//! `http://127.0.0.1:<port>/p/<credential>/<path>`. The proxy adds the capability this device
//! issued for that credential (a standing grant made when the proxy started) and forwards the
//! request to the broker unchanged otherwise; the broker's answer (the upstream's, or a refusal)
//! comes back as is. The agent never holds a capability, a key or a credential: only its token,
//! which the broker still checks, with policy and audit, on every call.
//!
//! The proxy listens on loopback only, does not follow redirects, streams bodies both ways and
//! drops hop-by-hop headers. A request for a credential it holds no capability for is answered
//! `403` with the broker's error shape, without reaching the broker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse as _, Response};

use crate::access::CapabilityText;
use crate::api::{BrokerEndpoint, BrokerUrl};

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The local proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalProxyError {
    /// Only loopback addresses are served.
    #[error("the local proxy listens on loopback only, not {0}")]
    NotLoopback(SocketAddr),
    /// Binding or serving failed.
    #[error("the local proxy could not listen: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP client could not be built.
    #[error("the local proxy could not set up its HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
    /// The extra certificate authorities for the broker cannot be used.
    #[error(transparent)]
    BrokerCa(#[from] crate::api::BrokerCaError),
}

struct Shared {
    broker: BrokerUrl,
    capabilities: HashMap<String, CapabilityText>,
    http: reqwest::Client,
}

/// A running local proxy; stops when dropped or on [`LocalProxy::stop`].
#[derive(Debug)]
pub struct LocalProxy {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalProxy {
    /// Serves on `listener` (which must be bound to a loopback address), forwarding to `broker`
    /// with the capability of each credential name in `capabilities`.
    pub fn start(
        listener: tokio::net::TcpListener,
        broker: impl Into<BrokerEndpoint>,
        capabilities: HashMap<String, CapabilityText>,
    ) -> Result<Self, LocalProxyError> {
        let broker = broker.into();
        let address = listener.local_addr()?;
        if !address.ip().is_loopback() {
            return Err(LocalProxyError::NotLoopback(address));
        }
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10));
        let http = crate::api::trusting_broker_anchors(builder, broker.authorities())?
            .build()
            .map_err(LocalProxyError::Setup)?;
        let shared = Arc::new(Shared { broker: broker.url().clone(), capabilities, http });
        let app = axum::Router::new().fallback(forward).with_state(shared);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the local proxy stopped");
            }
        });
        Ok(Self { address, stop: Some(stop), task })
    }

    /// Where local agents send their calls: `http://<address>`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting calls and waits for the server to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for LocalProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let credential = path.strip_prefix("/p/").and_then(|rest| rest.split('/').next()).unwrap_or("");
    let Some(capability) = shared.capabilities.get(credential) else {
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this local proxy holds no grant for that credential: call /p/<credential>/... with a credential it was started for",
        );
    };
    let target = match request.uri().query() {
        Some(query) => shared.broker.join(&format!("{path}?{query}")),
        None => shared.broker.join(&path),
    };
    let (parts, body) = request.into_parts();
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name.as_str() != "latchkey-capability" {
            headers.append(name.clone(), value.clone());
        }
    }
    match capability.expose_secret().parse() {
        Ok(value) => {
            headers.insert(HeaderName::from_static("latchkey-capability"), value);
        }
        Err(_) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "a capability is unusable",
            );
        }
    }
    let sent = shared
        .http
        .request(parts.method, target)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await;
    match sent {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                if !HOP_BY_HOP.contains(&name.as_str()) {
                    response = response.header(name, value);
                }
            }
            response.body(Body::from_stream(answer.bytes_stream())).unwrap_or_else(|_| {
                refuse(StatusCode::BAD_GATEWAY, "upstream_failed", "bad answer")
            })
        }
        Err(_) => refuse(
            StatusCode::BAD_GATEWAY,
            "broker_unreachable",
            "the local proxy could not reach the broker; check that it is running",
        ),
    }
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({"code": code, "message": message}))).into_response()
}
