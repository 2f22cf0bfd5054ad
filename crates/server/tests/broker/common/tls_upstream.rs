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

/// An HTTP proxy on 127.0.0.1 (plain, or behind TLS) that answers `CONNECT host:port` by
/// tunnelling to it, and refuses anything else; it records each request head and every byte it
/// relays (inside its own TLS, if any).
#[derive(Clone, Default)]
pub struct ConnectProxy {
    requests: Arc<Mutex<Vec<String>>>,
    heads: Arc<Mutex<Vec<String>>>,
    relayed: Arc<Mutex<Vec<u8>>>,
}

impl ConnectProxy {
    /// Serves plain HTTP until the test's runtime ends; returns the proxy and its URL.
    pub async fn start() -> (Self, String) {
        Self::serve(None).await
    }

    /// Serves over TLS with `cert` (an `https://` proxy) until the test's runtime ends; returns
    /// the proxy and its URL, named `localhost`.
    pub async fn start_tls(cert: ServerCert) -> (Self, String) {
        Self::serve(Some(cert.acceptor())).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let proxy = Self::default();
        let server = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = server.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => server.tunnel(client).await,
                        Some(acceptor) => {
                            if let Ok(client) = acceptor.accept(client).await {
                                server.tunnel(client).await;
                            }
                        }
                    }
                });
            }
        });
        (proxy, url)
    }

    /// Reads one request head from `client`; a `CONNECT` is answered by relaying both ways to
    /// its target.
    async fn tunnel<S>(&self, mut client: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match client.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let line = head.lines().next().unwrap_or_default().to_owned();
        self.requests.lock().expect("lock").push(line.clone());
        self.heads.lock().expect("lock").push(head.clone());
        let target = match line.split(' ').collect::<Vec<_>>()[..] {
            ["CONNECT", target, _] => target.to_owned(),
            _ => {
                let _ = client.write_all(b"HTTP/1.1 405 CONNECT only\r\n\r\n").await;
                return;
            }
        };
        let Ok(upstream) = tokio::net::TcpStream::connect(&target).await else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
            return;
        };
        if client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await.is_err() {
            return;
        }
        let (client_read, client_write) = tokio::io::split(client);
        let (upstream_read, upstream_write) = upstream.into_split();
        tokio::join!(
            self.relay(client_read, upstream_write),
            self.relay(upstream_read, client_write)
        );
    }

    async fn relay<R, W>(&self, mut from: R, mut to: W)
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut buffer = [0_u8; 16 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.relayed.lock().expect("lock").extend_from_slice(&buffer[..n]);
                    if to.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown().await;
    }

    /// The request line of every request it received.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }

    /// The whole head (request line and headers) of every request it received.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }

    /// Every byte it relayed, both ways.
    pub fn relayed(&self) -> Vec<u8> {
        self.relayed.lock().expect("lock").clone()
    }
}
