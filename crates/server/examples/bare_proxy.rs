//! The proxy benchmark's floor (bench/proxy.sh): the broker's HTTP stack with none of its work.
//!
//! An axum server that forwards every request to one upstream through a reqwest client built as
//! the broker builds its own, adding a static `Authorization` header, and streams the answer
//! back: no agent token, capability, policy, audit, decryption or redaction. What this adds over
//! a direct call is what the server and client libraries cost on their own, the part of the
//! broker's added latency no change to Latchkey's checks can remove.
//!
//! `bare_proxy --upstream URL` prints `{"base_url": ...}` once listening on 127.0.0.1.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;

#[derive(Clone)]
struct Upstream {
    client: reqwest::Client,
    base: String,
}

async fn forward(State(upstream): State<Upstream>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    headers.remove(header::HOST);
    headers
        .insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer static-benchmark-secret"));
    let sent = upstream
        .client
        .request(parts.method, format!("{}{path}", upstream.base))
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await;
    match sent {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
                    response = response.header(name, value);
                }
            }
            response
                .body(Body::from_stream(answer.bytes_stream()))
                .unwrap_or_else(|_| Response::new(Body::empty()))
        }
        Err(_) => {
            let mut response = Response::new(Body::from("upstream failed"));
            *response.status_mut() = axum::http::StatusCode::BAD_GATEWAY;
            response
        }
    }
}

/// The broker allocates and frees many small buffers per call from two or more threads;
/// mimalloc serves that pattern with less work than glibc's allocator (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let base = match (args.next().as_deref(), args.next()) {
        (Some("--upstream"), Some(url)) => url.trim_end_matches('/').to_owned(),
        _ => anyhow::bail!("usage: bare_proxy --upstream URL"),
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(120))
        .build()
        .context("building the HTTP client")?;
    let app = axum::Router::new().fallback(forward).with_state(Upstream { client, base });
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{{\"base_url\":\"http://{}\"}}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    axum::serve(listener, app).await?;
    Ok(())
}
