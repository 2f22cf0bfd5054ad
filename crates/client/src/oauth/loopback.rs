//! The loopback redirect (RFC 8252 section 7.3): a minimal HTTP/1.1 listener on
//! `127.0.0.1:<ephemeral>` that waits for the one callback carrying this flow's state.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use latchkey_core::pkce::OAuthState;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use url::Url;
use zeroize::Zeroizing;

use super::token::AuthorizationCode;
use super::{OAuthError, sanitize_code};

/// The callback path on the loopback listener.
pub(super) const CALLBACK_PATH: &str = "/callback";
/// Longest request head read from one connection.
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// How long one connection may take to send its request head.
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 32;

/// A redirect URI on a loopback address: `http://127.0.0.1:{port}/callback` (or `[::1]`). It
/// cannot be built for any other address, so the authorization response can only come back to
/// this machine.
#[derive(Clone, PartialEq, Eq)]
pub struct LoopbackRedirect(Url);

impl LoopbackRedirect {
    /// The redirect URI for a listener bound at `addr`; refuses an address that is not
    /// loopback (RFC 8252 section 8.3) and port 0.
    pub fn new(addr: SocketAddr) -> Result<Self, OAuthError> {
        if !addr.ip().is_loopback() {
            return Err(OAuthError::NotLoopback(addr.ip()));
        }
        if addr.port() == 0 {
            return Err(OAuthError::Listener(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "port 0 is not a listening port",
            )));
        }
        let host = match addr.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        Url::parse(&format!("http://{host}:{}{CALLBACK_PATH}", addr.port()))
            .map(Self)
            .map_err(|e| OAuthError::Listener(std::io::Error::other(e)))
    }

    /// The URI.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The URI as the `redirect_uri` parameter.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for LoopbackRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LoopbackRedirect").field(&self.0.as_str()).finish()
    }
}

impl fmt::Display for LoopbackRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// What the callback must carry.
pub(super) struct Expected {
    pub(super) state: OAuthState,
    /// The issuer the request went to, when known.
    pub(super) issuer: Option<String>,
    /// The server promised `iss` in every response.
    pub(super) iss_required: bool,
}

/// Serves `listener` until a request carries `expected.state`, and returns what it said. Every
/// other request gets an error page and is otherwise ignored. The caller drops the listener
/// (closing the port) when this returns, and bounds it with the flow's timeout.
pub(super) async fn serve(
    listener: &TcpListener,
    expected: Arc<Expected>,
) -> Result<AuthorizationCode, OAuthError> {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) if connections.len() < MAX_CONNECTIONS => {
                    connections.spawn(answer(socket, Arc::clone(&expected)));
                }
                Ok(_) => {} // dropped: too many open connections
                Err(e) if transient(&e) => {}
                Err(e) => return Err(OAuthError::Listener(e)),
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Ok(Verdict::Final(outcome)) = joined {
                    return outcome;
                }
            }
        }
    }
}

fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

/// What one request means for the flow.
enum Verdict {
    /// Not this flow's callback: answered, otherwise ignored.
    Ignore(Page),
    /// This flow's callback: the flow ends with it.
    Final(Result<AuthorizationCode, OAuthError>),
}

/// The fixed pages the listener answers with. None echoes anything from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    SignedIn,
    Refused,
    Unverified,
    NotThisSignIn,
    NotFound,
}

impl Page {
    fn status(self) -> &'static str {
        match self {
            Page::SignedIn | Page::Refused => "200 OK",
            Page::Unverified | Page::NotThisSignIn => "400 Bad Request",
            Page::NotFound => "404 Not Found",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Page::SignedIn => "Signed in. You can close this tab and return to Latchkey.",
            Page::Refused => {
                "The sign-in was cancelled or refused. You can close this tab; Latchkey says what to do next."
            }
            Page::Unverified => {
                "This sign-in answer could not be verified and was refused. Return to Latchkey and sign in again."
            }
            Page::NotThisSignIn => {
                "This is not the sign-in Latchkey is waiting for. If you are signing in, finish it in the tab Latchkey opened."
            }
            Page::NotFound => "Not found.",
        }
    }
}

impl Verdict {
    fn page(&self) -> Page {
        match self {
            Verdict::Ignore(page) => *page,
            Verdict::Final(Ok(_)) => Page::SignedIn,
            Verdict::Final(Err(OAuthError::Denied { .. })) => Page::Refused,
            Verdict::Final(Err(_)) => Page::Unverified,
        }
    }
}

/// Reads one request head, judges it, answers with its page, closes.
async fn answer(mut socket: TcpStream, expected: Arc<Expected>) -> Verdict {
    let head = tokio::time::timeout(REQUEST_HEAD_TIMEOUT, read_head(&mut socket)).await;
    let verdict = match head {
        Ok(head) => judge(&head, &expected),
        Err(_) => Verdict::Ignore(Page::NotFound),
    };
    let page = verdict.page();
    let body = format!(
        "<!doctype html>\n<html lang=en><meta charset=utf-8><title>Latchkey</title><p>{}</p></html>\n",
        page.text()
    );
    let response = format!(
        "HTTP/1.1 {}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nreferrer-policy: no-referrer\r\ncache-control: no-store\r\ncontent-security-policy: default-src 'none'; frame-ancestors 'none'\r\nx-content-type-options: nosniff\r\nx-frame-options: DENY\r\nconnection: close\r\n\r\n{body}",
        page.status(),
        body.len()
    );
    // The browser may have gone; the verdict stands either way.
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
    verdict
}

/// The request head, up to the blank line, at most [`MAX_REQUEST_HEAD_BYTES`].
async fn read_head(socket: &mut TcpStream) -> Zeroizing<Vec<u8>> {
    let mut head = Zeroizing::new(Vec::new());
    let mut buf = Zeroizing::new([0_u8; 2048]);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD_BYTES {
        match socket.read(&mut buf[..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
}

/// What a request head means for the flow; see the module docs of `oauth`.
fn judge(head: &[u8], expected: &Expected) -> Verdict {
    let line = head.split(|b| *b == b'\r' || *b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else { return Verdict::Ignore(Page::NotFound) };
    let mut words = line.split(' ');
    let (Some("GET"), Some(target)) = (words.next(), words.next()) else {
        return Verdict::Ignore(Page::NotFound);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != CALLBACK_PATH {
        return Verdict::Ignore(Page::NotFound);
    }
    let Some(params) = CallbackParams::parse(query) else {
        return Verdict::Ignore(Page::NotThisSignIn);
    };
    if !params.state.as_deref().is_some_and(|s| expected.state.matches(s)) {
        return Verdict::Ignore(Page::NotThisSignIn);
    }
    // This flow's state: the answer to our request, final from here on. RFC 9207 applies to
    // error answers too, so the issuer is checked first.
    if let Some(issuer) = &expected.issuer {
        match &params.iss {
            Some(iss) if iss != issuer => {
                return Verdict::Final(Err(OAuthError::IssuerMixUp { expected: issuer.clone() }));
            }
            None if expected.iss_required => {
                return Verdict::Final(Err(OAuthError::IssuerMissing { expected: issuer.clone() }));
            }
            _ => {}
        }
    }
    Verdict::Final(match (params.error, params.code) {
        (Some(error), _) => Err(OAuthError::Denied { error: sanitize_code(&error) }),
        (None, Some(code)) if !code.is_empty() => Ok(AuthorizationCode::from_zeroizing(code)),
        (None, _) => Err(OAuthError::MalformedCallback),
    })
}

/// The callback's parameters. Each may appear once (RFC 6749 section 3.1); a repeated one makes
/// the request unusable.
#[derive(Default)]
struct CallbackParams {
    code: Option<Zeroizing<String>>,
    state: Option<Zeroizing<String>>,
    iss: Option<String>,
    error: Option<String>,
}

impl CallbackParams {
    fn parse(query: &str) -> Option<Self> {
        let mut params = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = Zeroizing::new(value.into_owned());
            let repeated = match name.as_ref() {
                "code" => params.code.replace(value).is_some(),
                "state" => params.state.replace(value).is_some(),
                "iss" => params.iss.replace(value.to_string()).is_some(),
                "error" => params.error.replace(value.to_string()).is_some(),
                _ => false,
            };
            if repeated {
                return None;
            }
        }
        Some(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(issuer: Option<&str>, iss_required: bool) -> Expected {
        Expected {
            state: OAuthState::generate().unwrap(),
            issuer: issuer.map(str::to_owned),
            iss_required,
        }
    }

    fn get(target: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").into_bytes()
    }

    fn enc(v: &str) -> String {
        url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
    }

    #[test]
    fn only_loopback_redirects_can_be_built() {
        let v4 = LoopbackRedirect::new("127.0.0.1:5000".parse().unwrap()).unwrap();
        assert_eq!(v4.as_str(), "http://127.0.0.1:5000/callback");
        let v6 = LoopbackRedirect::new("[::1]:5000".parse().unwrap()).unwrap();
        assert_eq!(v6.as_str(), "http://[::1]:5000/callback");
        for bad in ["192.0.2.1:5000", "0.0.0.0:5000", "[::]:5000", "[::ffff:127.0.0.1]:5000"] {
            assert!(
                matches!(
                    LoopbackRedirect::new(bad.parse().unwrap()),
                    Err(OAuthError::NotLoopback(_))
                ),
                "{bad} is not loopback"
            );
        }
        assert!(LoopbackRedirect::new("127.0.0.1:0".parse().unwrap()).is_err(), "port 0");
    }

    #[test]
    fn requests_without_this_flows_state_are_ignored() {
        let e = expected(Some("https://as.example"), true);
        let state = enc(e.state.as_str());
        for (head, page) in [
            (get("/favicon.ico"), Page::NotFound),
            (get(&format!("/other?code=c&state={state}")), Page::NotFound),
            (
                format!("POST /callback?code=c&state={state} HTTP/1.1\r\n\r\n").into_bytes(),
                Page::NotFound,
            ),
            (get("/callback?code=c"), Page::NotThisSignIn),
            (get("/callback?code=c&state=forged"), Page::NotThisSignIn),
            (get(&format!("/callback?code=c&state={state}&state=forged")), Page::NotThisSignIn),
            (b"\xff\xfe".to_vec(), Page::NotFound),
            (Vec::new(), Page::NotFound),
        ] {
            match judge(&head, &e) {
                Verdict::Ignore(p) => assert_eq!(p, page, "{}", String::from_utf8_lossy(&head)),
                Verdict::Final(_) => {
                    panic!("{} must not end the flow", String::from_utf8_lossy(&head))
                }
            }
        }
    }

    #[test]
    fn this_flows_state_ends_the_flow_with_what_the_callback_said() {
        let issuer = "https://as.example";
        let e = expected(Some(issuer), true);
        let state = enc(e.state.as_str());
        let iss = enc(issuer);
        let code = judge(&get(&format!("/callback?code=abc&state={state}&iss={iss}")), &e);
        assert!(matches!(code, Verdict::Final(Ok(ref c)) if c.expose_secret() == "abc"));
        let denied =
            judge(&get(&format!("/callback?error=access_denied%0A&state={state}&iss={iss}")), &e);
        assert!(
            matches!(denied, Verdict::Final(Err(OAuthError::Denied { ref error })) if error == "access_denied")
        );
        let mixed = judge(
            &get(&format!("/callback?code=abc&state={state}&iss=https%3A%2F%2Fother.example")),
            &e,
        );
        assert!(matches!(mixed, Verdict::Final(Err(OAuthError::IssuerMixUp { .. }))));
        let missing = judge(&get(&format!("/callback?code=abc&state={state}")), &e);
        assert!(matches!(missing, Verdict::Final(Err(OAuthError::IssuerMissing { .. }))));
        let empty = judge(&get(&format!("/callback?state={state}&iss={iss}")), &e);
        assert!(matches!(empty, Verdict::Final(Err(OAuthError::MalformedCallback))));
        assert_eq!(mixed.page(), Page::Unverified);
    }

    #[test]
    fn without_a_promise_iss_may_be_missing_and_without_a_known_issuer_it_is_not_compared() {
        let e = expected(Some("https://as.example"), false);
        let state = enc(e.state.as_str());
        assert!(matches!(
            judge(&get(&format!("/callback?code=a&state={state}")), &e),
            Verdict::Final(Ok(_))
        ));
        let e = expected(None, false);
        let state = enc(e.state.as_str());
        let head = get(&format!("/callback?code=a&state={state}&iss=https%3A%2F%2Fx.example"));
        assert!(matches!(judge(&head, &e), Verdict::Final(Ok(_))));
    }
}
