//! Serving accepted connections: the HTTP/1.1 and HTTP/2 server of every listener (plain, TLS,
//! each serving thread's), with the bounds `axum::serve` does not set.
//!
//! - A client must send a request's head within [`HEADER_READ_TIMEOUT`] of the connection
//!   starting to wait for one (HTTP/1.1): a connection that trickles a head, or sends nothing,
//!   is closed, and so is a keep-alive connection idle that long.
//! - HTTP/2 connections are pinged when idle and closed when the peer stops answering.
//! - TCP keepalive and, on Linux, a limit on unacknowledged data ([`keep_alive`]) close a
//!   connection whose peer vanished without closing it.
//!
//! Shutdown stops accepting, lets each connection finish the requests it has begun, and waits
//! for them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::Notify;
use tower_service::Service as _;

/// How long a connection waiting for a request's head may wait for all of it (HTTP/1.1).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How often an idle HTTP/2 connection is pinged, and how long its peer has to answer.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(60);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `app` on every connection `listener` accepts until `shutdown` completes; then
/// finishes the requests begun.
pub(crate) async fn serve<L>(
    listener: L,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: Listener<Addr = SocketAddr>,
{
    serve_within(listener, app, shutdown, HEADER_READ_TIMEOUT).await;
}

/// [`serve`], closing connections that wait longer than `header_read_timeout` for a head.
async fn serve_within<L>(
    mut listener: L,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    header_read_timeout: Duration,
) where
    L: Listener<Addr = SocketAddr>,
{
    let builder = builder(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let first_request = Arc::new(Notify::new());
        let requested = Arc::clone(&first_request);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            requested.notify_one();
            let mut request = request.map(Body::new);
            // The peer's address, as `ConnectInfo`, for the handlers and the access log.
            request.extensions_mut().insert(ConnectInfo(peer));
            // A router is always ready; a clone is a reference count.
            app.clone().call(request)
        });
        let connection =
            builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            // Before its first request the connection is still choosing between HTTP/1.1 and
            // HTTP/2, which has no timeout of its own: a client that sends nothing, or too
            // little to tell, is dropped here.
            let ended = tokio::select! {
                ended = connection.as_mut() => Some(ended),
                () = first_request.notified() => None,
                () = tokio::time::sleep(header_read_timeout) => {
                    tracing::trace!(%peer, "no request within the header read timeout");
                    return;
                }
            };
            let ended = match ended {
                Some(ended) => ended,
                None => connection.await,
            };
            if let Err(error) = ended {
                tracing::trace!(%peer, %error, "a connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The HTTP server's settings for each connection.
fn builder(header_read_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    builder
}

/// Idle time after which the kernel starts probing a connection whose peer went silent.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between probes; after [`KEEPALIVE_PROBES`] unanswered ones the connection is closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
#[cfg(not(windows))]
const KEEPALIVE_PROBES: u32 = 4;
/// How long data the broker sent may stay unacknowledged before the connection is closed
/// (Linux): keepalive probes wait while data is in flight, and an event stream's keep-alives
/// always are, so a vanished device's stream is found by this instead.
#[cfg(any(target_os = "linux", target_os = "android"))]
const UNACKNOWLEDGED_LIMIT: Duration = Duration::from_secs(120);

/// Turns TCP keepalive on for an accepted connection: a client that vanished without closing
/// (a laptop put to sleep, a network that changed) holds an idle keep-alive connection, its file
/// descriptor and its task until the kernel finds the peer gone, about two minutes after it went
/// silent, instead of for good; on Linux, a connection whose sent data goes unacknowledged for
/// two minutes (an event stream to a vanished device) is closed too. A socket that refuses an
/// option is served anyway.
pub(crate) fn keep_alive(tcp: &tokio::net::TcpStream) {
    let socket = socket2::SockRef::from(tcp);
    let probes =
        socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_INTERVAL);
    #[cfg(not(windows))]
    let probes = probes.with_retries(KEEPALIVE_PROBES);
    if let Err(error) = socket.set_tcp_keepalive(&probes) {
        tracing::debug!(%error, "could not turn TCP keepalive on for a connection");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(error) = socket.set_tcp_user_timeout(Some(UNACKNOWLEDGED_LIMIT)) {
        tracing::debug!(%error, "could not bound a connection's unacknowledged data");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves a router answering `GET /` with its caller's address and `GET /slow` after 300 ms,
    /// on loopback, with a header read timeout of `timeout`; its address and the way to stop it.
    async fn server(timeout: Duration) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let app = axum::Router::new()
            .route(
                "/",
                axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    peer.to_string()
                }),
            )
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "finished"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_within(listener, app, async move { drop(stopped.await) }, timeout));
        (address, stop)
    }

    /// Whether the server closed `client`'s connection within `within` (reads to the end).
    async fn closed_within(client: &mut tokio::net::TcpStream, within: Duration) -> bool {
        use tokio::io::AsyncReadExt as _;
        let mut sink = Vec::new();
        tokio::time::timeout(within, client.read_to_end(&mut sink)).await.is_ok()
    }

    #[tokio::test]
    async fn a_client_that_trickles_a_head_or_stays_idle_is_disconnected_and_others_are_served() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let timeout = Duration::from_millis(300);
        let (address, _stop) = server(timeout).await;

        let mut silent = tokio::net::TcpStream::connect(address).await.expect("connected");
        let mut trickling = tokio::net::TcpStream::connect(address).await.expect("connected");
        trickling.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n").await.expect("half a head");
        for (name, client) in [("silent", &mut silent), ("trickling", &mut trickling)] {
            assert!(
                closed_within(client, Duration::from_secs(5)).await,
                "a {name} client's connection is closed after the header read timeout"
            );
        }

        let mut client = tokio::net::TcpStream::connect(address).await.expect("connected");
        let local = client.local_addr().expect("its address");
        client.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.expect("a request");
        let mut answer = vec![0_u8; 4096];
        let read = client.read(&mut answer).await.expect("an answer");
        let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&local.to_string()), "the handler sees its peer: {answer}");
        assert!(
            closed_within(&mut client, Duration::from_secs(5)).await,
            "a keep-alive connection left idle after its answer is closed after the timeout too"
        );
    }

    #[tokio::test]
    async fn shutdown_lets_a_begun_request_finish_closes_idle_connections_and_accepts_no_more() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (address, stop) = server(HEADER_READ_TIMEOUT).await;
        let mut idle = tokio::net::TcpStream::connect(address).await.expect("connected");
        // A keep-alive connection with one request answered: idle, so shutdown closes it.
        idle.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.expect("a request");
        let mut head = [0_u8; 12];
        idle.read_exact(&mut head).await.expect("answered");
        assert_eq!(&head, b"HTTP/1.1 200");
        let mut begun = tokio::net::TcpStream::connect(address).await.expect("connected");
        begun.write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n").await.expect("a request");
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(()).expect("the server runs");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), begun.read_to_string(&mut answer))
            .await
            .expect("the begun request is answered, then its connection closed")
            .expect("readable");
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("finished"), "{answer}");
        assert!(
            closed_within(&mut idle, Duration::from_secs(5)).await,
            "an idle connection is closed at shutdown rather than kept open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = tokio::net::TcpStream::connect(address).await;
        assert!(refused.is_err(), "the listener is closed: {refused:?}");
    }

    #[tokio::test]
    async fn an_accepted_connection_gets_tcp_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        let _client = tokio::net::TcpStream::connect(address).await.expect("connected");
        let (accepted, _) = listener.accept().await.expect("accepted");
        let socket = socket2::SockRef::from(&accepted);
        assert!(!socket.keepalive().expect("readable"), "off until the broker turns it on");
        keep_alive(&accepted);
        assert!(socket.keepalive().expect("readable"), "a vanished client is found");
        #[cfg(target_os = "linux")]
        {
            assert_eq!(socket.tcp_keepalive_time().expect("readable"), KEEPALIVE_IDLE);
            assert_eq!(socket.tcp_keepalive_interval().expect("readable"), KEEPALIVE_INTERVAL);
            assert_eq!(socket.tcp_keepalive_retries().expect("readable"), KEEPALIVE_PROBES);
            assert_eq!(
                socket.tcp_user_timeout().expect("readable"),
                Some(UNACKNOWLEDGED_LIMIT),
                "a stream to a vanished device, always holding data in flight, is closed too"
            );
        }
    }
}
