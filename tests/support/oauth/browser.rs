//! A test "browser": plays the person signing in over plain HTTP. It follows redirects by
//! hand with its own cookie jar, fills oidc-provider's development login and consent forms
//! (or clicks Cancel), and delivers the redirect to the loopback callback, reporting what
//! happened on a channel.

use std::collections::HashMap;

use latchkey_client::oauth::{BrowserLauncher, OAuthError};
use reqwest::StatusCode;
use tokio::sync::mpsc;
use url::Url;

/// How the person behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Person {
    /// Signs in and consents; the callback is delivered as the server sent it.
    SignsIn,
    /// Signs in at another server (same client id, same path): the authorization request is
    /// sent to `origin` instead of the server the client chose.
    SignsInAt(Url),
    /// Clicks Cancel at the provider.
    Cancels,
    /// Signs in; a copy of the callback with a forged state and a request for another path
    /// arrive first, then the real callback.
    ForgedStateFirst,
    /// Signs in; only a copy of the callback with a forged state is delivered.
    OnlyForgedState,
    /// Signs in but does not deliver the callback: it is reported instead.
    KeepsCallback,
    /// Never signs in.
    Idles,
}

/// What the browser did.
#[derive(Debug)]
pub(crate) enum Event {
    /// The client asked to open this URL.
    Opened(Url),
    /// A request reached the loopback listener and got this status.
    Delivered { url: Url, status: StatusCode },
    /// The callback the server redirected to, not delivered ([`Person::KeepsCallback`]).
    Kept(Url),
    /// The sign-in could not be completed.
    Failed(String),
}

/// The browser, and the receiving end of its reports.
pub(crate) struct TestBrowser {
    person: Person,
    events: mpsc::UnboundedSender<Event>,
}

impl TestBrowser {
    pub(crate) fn new(person: Person) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (events, receiver) = mpsc::unbounded_channel();
        (Self { person, events }, receiver)
    }
}

impl BrowserLauncher for TestBrowser {
    fn open(&self, url: &Url) -> Result<(), OAuthError> {
        let _ = self.events.send(Event::Opened(url.clone()));
        let person = self.person.clone();
        let events = self.events.clone();
        let url = url.clone();
        tokio::spawn(async move {
            if let Err(why) = act(person, url, &events).await {
                let _ = events.send(Event::Failed(why));
            }
        });
        Ok(())
    }
}

async fn act(
    person: Person,
    mut url: Url,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    if person == Person::Idles {
        return Ok(());
    }
    if let Person::SignsInAt(origin) = &person {
        url.set_port(origin.port()).map_err(|()| "no port")?;
        url.set_host(origin.host_str()).map_err(|e| e.to_string())?;
    }
    let redirect_uri = url
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .ok_or("no redirect_uri in the authorization URL")?;
    let callback = sign_in(url, &redirect_uri, person == Person::Cancels).await?;
    match person {
        Person::KeepsCallback => {
            let _ = events.send(Event::Kept(callback));
        }
        Person::ForgedStateFirst | Person::OnlyForgedState => {
            let mut forged = callback.clone();
            let pairs: Vec<(String, String)> = callback
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "state" { "forged".to_owned() } else { v.into_owned() };
                    (k.into_owned(), v)
                })
                .collect();
            forged.query_pairs_mut().clear().extend_pairs(pairs);
            deliver(forged, events).await?;
            let mut elsewhere = callback.clone();
            elsewhere.set_path("/favicon.ico");
            elsewhere.set_query(None);
            deliver(elsewhere, events).await?;
            if person == Person::ForgedStateFirst {
                deliver(callback, events).await?;
            }
        }
        _ => deliver(callback, events).await?,
    }
    Ok(())
}

/// Sends one request to the loopback listener and reports its status.
async fn deliver(url: Url, events: &mpsc::UnboundedSender<Event>) -> Result<(), String> {
    let response = reqwest::get(url.clone()).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let page = response.text().await.map_err(|e| e.to_string())?;
    // The page must not echo the request: no code or state in it.
    for (name, value) in url.query_pairs() {
        if name == "code" || name == "state" {
            assert!(!page.contains(value.as_ref()), "the callback page echoes the {name}");
        }
    }
    let _ = events.send(Event::Delivered { url, status });
    Ok(())
}

/// Follows redirects and forms from `start` until the server redirects to `redirect_uri`;
/// returns that callback URL.
async fn sign_in(start: Url, redirect_uri: &str, cancel: bool) -> Result<Url, String> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let mut jar: HashMap<String, String> = HashMap::new();
    let mut request = http.get(start);
    for _ in 0..20 {
        let cookies: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let response = request
            .header(reqwest::header::COOKIE, cookies.join("; "))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        for set in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let set = set.to_str().map_err(|e| e.to_string())?;
            let pair = set.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                jar.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        let here = response.url().clone();
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or("a redirect without Location")?;
            let next = here.join(location).map_err(|e| e.to_string())?;
            if next.as_str().starts_with(redirect_uri) {
                return Ok(next);
            }
            request = http.get(next);
            continue;
        }
        let page = response.text().await.map_err(|e| e.to_string())?;
        if status != StatusCode::OK {
            return Err(format!("the provider answered {status}: {page}"));
        }
        if cancel {
            let abort = attribute_before(&page, "/abort\"", "href=\"").ok_or("no Cancel link")?;
            request = http.get(here.join(&abort).map_err(|e| e.to_string())?);
            continue;
        }
        let action = attribute_after(&page, "action=\"").ok_or("no form on the page")?;
        let prompt = attribute_after(&page, "name=\"prompt\" value=\"").ok_or("no prompt")?;
        let mut form = vec![("prompt", prompt.clone())];
        if prompt == "login" {
            form.push(("login", "alice".to_owned()));
            form.push(("password", "any".to_owned()));
        }
        request = http.post(here.join(&action).map_err(|e| e.to_string())?).form(&form);
    }
    Err("too many steps to sign in".to_owned())
}

/// The value of an attribute that starts right after `marker`, up to the closing quote.
fn attribute_after(page: &str, marker: &str) -> Option<String> {
    let start = page.find(marker)? + marker.len();
    let end = page[start..].find('"')? + start;
    Some(page[start..end].replace("&amp;", "&"))
}

/// The attribute value ending with `suffix` (without its closing quote), whose opening is the
/// last `opening` before it.
fn attribute_before(page: &str, suffix: &str, opening: &str) -> Option<String> {
    let end = page.find(suffix)? + suffix.len() - 1;
    let start = page[..end].rfind(opening)? + opening.len();
    Some(page[start..end].replace("&amp;", "&"))
}
