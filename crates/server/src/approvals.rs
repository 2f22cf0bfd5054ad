//! Live approvals: the proxy holds a call that policy would allow once a member approves it,
//! tells the devices that may answer, and goes on when one does.
//!
//! The database is the authority (see [`crate::store::approvals`]): a held call is a `pending`
//! row, and an answer or the holder's timeout moves it out of `pending` exactly once. This module
//! only carries the news: `Signal`s go to the holders and device streams of this broker and, on
//! PostgreSQL, through `NOTIFY latchkey_approvals` to every replica (each replica listens and
//! re-delivers locally, its own notifications included). A holder does not depend on the news
//! arriving: it re-reads its row at least every `POLL` (one second), so a lost notification
//! costs at most that much delay, never a wrong outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use latchkey_core::ids::{AgentId, ApprovalId, WorkspaceId};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};

use crate::store::{Backend, Store, StoreError};

/// How long a call is held when the broker's configuration says nothing.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// A holder re-reads its row at least this often, whatever notifications say.
pub(crate) const POLL: Duration = Duration::from_secs(1);
/// Calls of one agent a broker holds at once; more are refused (`too_many_waiting`), so an agent
/// (or a stolen token) cannot bury the members' queue or tie up the broker.
pub const MAX_HELD_PER_AGENT: usize = 16;
/// The PostgreSQL channel replicas tell each other on.
const CHANNEL: &str = "latchkey_approvals";

/// What happened to an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SignalKind {
    /// A call is being held; devices that may answer should ask their member.
    Requested,
    /// It was approved, denied or expired.
    Resolved,
    /// The workspace's agents were paused: the holder lets its call go (`agents_paused`).
    /// Not shown to devices: the expiry that follows is.
    Paused,
}

/// News about one approval (no details: receivers read the row, scoped to its workspace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Signal {
    pub(crate) workspace: WorkspaceId,
    pub(crate) id: ApprovalId,
    pub(crate) kind: SignalKind,
}

/// The approvals hub of one broker.
#[derive(Debug)]
pub(crate) struct Approvals {
    /// How long a call is held at most.
    pub(crate) timeout: Duration,
    /// Holders on this broker, by approval, with the agent whose call each holds.
    waiters: Mutex<HashMap<ApprovalId, (AgentId, Arc<Notify>)>>,
    /// Every signal, for the device streams on this broker.
    events: broadcast::Sender<Signal>,
    /// Counts the times signals may have been lost: the PostgreSQL listener's connection broke
    /// and was made again, and what was sent meanwhile never arrives. Device streams then tell
    /// their devices to list again.
    gaps: tokio::sync::watch::Sender<u64>,
    /// Set when the broker begins to shut down: streams end, held calls are let go.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Approvals {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            waiters: Mutex::default(),
            events: broadcast::channel(1024).0,
            gaps: tokio::sync::watch::channel(0).0,
            closing: tokio::sync::watch::channel(false).0,
        }
    }

    /// The broker is shutting down: device streams end, held calls end (retryable), the
    /// listener stops. Graceful shutdown waits for open requests, so none of them may outlive
    /// this.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
        for (_, notify) in self.lock().values() {
            notify.notify_one();
        }
    }

    /// Whether [`Approvals::close`] was called.
    pub(crate) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Resolves once the broker begins to shut down.
    pub(crate) async fn closed(&self) {
        let mut closing = self.closing.subscribe();
        // An error means the sender is gone, which is a shutdown too.
        let _ = closing.wait_for(|closing| *closing).await;
    }

    /// Registers a holder for `id`, a call of `agent`, before anyone can answer it, so no answer
    /// is missed; `None` if this broker already holds [`MAX_HELD_PER_AGENT`] calls of `agent`.
    /// The registration ends when the returned guard drops.
    pub(crate) fn wait_for(self: &Arc<Self>, id: ApprovalId, agent: AgentId) -> Option<Waiter> {
        let notify = Arc::new(Notify::new());
        let mut waiters = self.lock();
        if waiters.values().filter(|(a, _)| *a == agent).count() >= MAX_HELD_PER_AGENT {
            return None;
        }
        waiters.insert(id, (agent, Arc::clone(&notify)));
        Some(Waiter { hub: Arc::clone(self), id, notify })
    }

    /// A receiver of every signal from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.events.subscribe()
    }

    /// Changes when signals may have been lost (see `gaps`); subscribe with the signals.
    pub(crate) fn gaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.gaps.subscribe()
    }

    /// Tells every replica (on SQLite: this broker) about `signal`.
    pub(crate) async fn publish(&self, store: &Store, signal: Signal) -> Result<(), StoreError> {
        match store.backend() {
            Backend::Postgres => {
                let payload = serde_json::to_string(&signal)
                    .map_err(|e| StoreError::Corrupt(format!("unencodable signal: {e}")))?;
                store.notify(CHANNEL, &payload).await
            }
            _ => {
                self.deliver(signal);
                Ok(())
            }
        }
    }

    /// Hands `signal` to this broker's holder of the approval and to its device streams.
    pub(crate) fn deliver(&self, signal: Signal) {
        if let Some((_, notify)) = self.lock().get(&signal.id) {
            // A stored permit: a holder that is between two reads still sees it.
            notify.notify_one();
        }
        // No stream listening is fine.
        let _ = self.events.send(signal);
    }

    /// On PostgreSQL, listens for other replicas' signals (and this one's) until the broker
    /// stops. Reconnects after a lost connection; holders poll meanwhile.
    pub(crate) fn spawn_listener(self: &Arc<Self>, store: &Store) {
        let Some(url) = store.listen_url() else { return };
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            let listen = async {
                let mut resumed = false;
                loop {
                    if let Err(error) = hub.listen(&url, resumed).await {
                        tracing::warn!(%error, "approval notifications interrupted; reconnecting");
                    }
                    resumed = true;
                    tokio::time::sleep(POLL).await;
                }
            };
            tokio::select! {
                () = listen => {}
                () = hub.closed() => {}
            }
        });
    }

    /// Listens until an error; `resumed`: after an earlier connection broke, so what was sent
    /// in between is lost (a gap, once listening again).
    async fn listen(&self, url: &str, resumed: bool) -> Result<(), sqlx::Error> {
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        if resumed {
            self.gaps.send_modify(|gaps| *gaps += 1);
        }
        loop {
            // `None`: the connection broke; the next call makes it again, and listens again.
            let Some(notification) = listener.try_recv().await? else {
                tracing::info!("approval notifications resumed after a lost connection");
                self.gaps.send_modify(|gaps| *gaps += 1);
                continue;
            };
            match serde_json::from_str::<Signal>(notification.payload()) {
                Ok(signal) => self.deliver(signal),
                Err(error) => tracing::warn!(%error, "ignored a malformed approval notification"),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ApprovalId, (AgentId, Arc<Notify>)>> {
        // The map stays consistent whatever a panicking holder did: entries are whole.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A holder's registration; removed when dropped.
#[derive(Debug)]
pub(crate) struct Waiter {
    hub: Arc<Approvals>,
    id: ApprovalId,
    notify: Arc<Notify>,
}

impl Waiter {
    /// Waits for a signal about this approval, or `at_most`, whichever comes first.
    pub(crate) async fn next(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.notify.notified()).await;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.hub.lock().remove(&self.id);
    }
}

/// The parameter names of a query string, in order, without their values.
pub(crate) fn query_keys(query: Option<&str>) -> Vec<String> {
    query
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).map(|(k, _)| k.into_owned()).collect())
        .unwrap_or_default()
}

/// How long the agent asked to wait at most, from an RFC 7240 `Prefer: wait=N` header.
pub(crate) fn preferred_wait(headers: &axum::http::HeaderMap) -> Option<Duration> {
    headers
        .get_all(axum::http::header::HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|p| p.trim().strip_prefix("wait="))
        .find_map(|n| n.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keys_keep_names_and_drop_values() {
        assert_eq!(
            query_keys(Some("q=secret&per_page=5&q=again&flag")),
            ["q", "per_page", "q", "flag"],
            "names in order, values never"
        );
        assert!(query_keys(None).is_empty());
    }

    #[test]
    fn prefer_wait_is_read_from_any_preference_list() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(preferred_wait(&headers), None);
        headers.insert("prefer", "respond-async, wait=5".parse().expect("header"));
        assert_eq!(preferred_wait(&headers), Some(Duration::from_secs(5)));
        headers.insert("prefer", "wait=soon".parse().expect("header"));
        assert_eq!(preferred_wait(&headers), None, "a malformed wait is ignored, not guessed");
    }
}
