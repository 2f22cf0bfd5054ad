//! The proxy benchmark's floor (bench/proxy.sh): the broker's HTTP stack with none of its work.
//!
//! An axum server that forwards every request to one upstream through the broker's own upstream
//! client (`latchkey_server::upstream`), adding a static `Authorization` header, and streams the
//! answer back: no agent token, capability, policy, audit, decryption or redaction. What this adds over
//! a direct call is what the server and client libraries cost on their own, the part of the
//! broker's added latency no change to Latchkey's checks can remove.
//!
//! `bare_proxy --upstream URL` prints `{"base_url": ...}` once listening on 127.0.0.1. With
//! `BARE_PROXY_PER_CORE=N` it serves on N threads, each with a current-thread runtime and an
//! upstream client of its own, all accepting on the one listener, instead of on one
//! multi-threaded runtime as the broker does: the measurement behind "One runtime per core" in
//! docs/benchmarks.md.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use latchkey_server::upstream::UpstreamClient;

#[derive(Clone)]
struct Upstream {
    client: UpstreamClient,
    base: String,
}

async fn forward(State(upstream): State<Upstream>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    headers.remove(header::HOST);
    headers
        .insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer static-benchmark-secret"));
    let Ok(uri) = format!("{}{path}", upstream.base).parse() else {
        return failed("bad upstream URL");
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    match upstream.client.send(request).await {
        Ok(answer) => {
            let (mut answer, body) = answer.into_parts();
            answer.headers.remove(header::TRANSFER_ENCODING);
            answer.headers.remove(header::CONNECTION);
            let mut response = Response::new(Body::new(body));
            *response.status_mut() = answer.status;
            *response.headers_mut() = answer.headers;
            response
        }
        Err(_) => failed("upstream failed"),
    }
}

fn failed(message: &'static str) -> Response {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = axum::http::StatusCode::BAD_GATEWAY;
    response
}

/// The broker allocates and frees many small buffers per call from two or more threads;
/// mimalloc serves that pattern with less work than glibc's allocator (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let base = match (args.next().as_deref(), args.next()) {
        (Some("--upstream"), Some(url)) => url.trim_end_matches('/').to_owned(),
        _ => anyhow::bail!("usage: bare_proxy --upstream URL"),
    };
    let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    listener.set_nonblocking(true)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{{\"base_url\":\"http://{}\"}}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    let per_core: Option<usize> =
        std::env::var("BARE_PROXY_PER_CORE").ok().and_then(|v| v.parse().ok());
    let serve = |listener: std::net::TcpListener, base: String| async move {
        let client = UpstreamClient::new(None, None).context("building the HTTP client")?;
        let app = axum::Router::new().fallback(forward).with_state(Upstream { client, base });
        axum::serve(tokio::net::TcpListener::from_std(listener)?, app).await?;
        anyhow::Ok(())
    };
    match per_core {
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(listener, base)),
        Some(n) => {
            let mut threads = Vec::new();
            for _ in 0..n {
                let (listener, base) = (listener.try_clone()?, base.clone());
                threads.push(std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(serve(listener, base))
                }));
            }
            for thread in threads {
                thread.join().map_err(|_| anyhow::anyhow!("a serving thread panicked"))??;
            }
            Ok(())
        }
    }
}
