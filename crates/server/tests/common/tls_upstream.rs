//! An HTTPS upstream on 127.0.0.1 speaking HTTP/2 and HTTP/1.1 (chosen by ALPN) that records
//! every request it receives, with a certificate from `tests/support/tls.rs`.

use std::sync::{Arc, Mutex};

use hyper::body::Incoming;

use super::tls::ServerCert;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub version: hyper::Version,
    pub path: String,
    pub authorization: Option<String>,
}

/// The HTTPS upstream: answers `200 {"ok":true}` to every request and records it.
#[derive(Clone, Default)]
pub struct TlsUpstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    handshakes_failed: Arc<Mutex<Vec<String>>>,
}

impl TlsUpstream {
    /// Serves with `cert` on a fresh 127.0.0.1 port until the test's runtime ends; returns the
    /// upstream and its port.
    pub async fn start(cert: ServerCert) -> (Self, u16) {
        let acceptor = cert.acceptor();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let upstream = Self::default();
        let server = upstream.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let server = server.clone();
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            server.handshakes_failed.lock().expect("lock").push(e.to_string());
                            return;
                        }
                    };
                    let seen = Arc::clone(&server.seen);
                    let service = hyper::service::service_fn(move |request| {
                        let seen = Arc::clone(&seen);
                        async move { Ok::<_, std::convert::Infallible>(answer(&seen, &request)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        (upstream, port)
    }

    /// Every request that reached the upstream, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The upstream's own account of each handshake that failed.
    pub fn handshakes_failed(&self) -> Vec<String> {
        self.handshakes_failed.lock().expect("lock").clone()
    }
}

fn answer(seen: &Mutex<Vec<Seen>>, request: &hyper::Request<Incoming>) -> hyper::Response<String> {
    seen.lock().expect("lock").push(Seen {
        version: request.version(),
        path: request.uri().path().to_owned(),
        authorization: request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    let mut response = hyper::Response::new(r#"{"ok":true}"#.to_owned());
    response
        .headers_mut()
        .insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    response
}
