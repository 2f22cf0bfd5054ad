//! Keeps the tray, the window and the notifications current: follows the broker's approval
//! stream (reconnecting with backoff), and turns tray clicks into actions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_client::api::{ApprovalEvent, ApprovalStatus};
use tauri::image::Image;
use tauri::menu::{CheckMenuItem, IsMenuItem, Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Emitter as _, Manager as _, Runtime};
use tauri_plugin_notification::NotificationExt as _;

use crate::backend::Backend as _;
use crate::events::{self, ApprovalsChanged, Navigate};
use crate::live::Live;
use crate::tray::{MenuEntry, TrayAction, TrayModel, TrayState, with_badge};
use crate::view::Approval;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a computer that is not set up yet looks again.
const SET_UP_POLL: Duration = Duration::from_secs(2);

/// Whether closing the window leaves the app running in the tray (the default); set
/// `LATCHKEY_DESKTOP_QUIT_ON_CLOSE=1` to quit instead.
pub fn keeps_running_in_tray() -> bool {
    std::env::var("LATCHKEY_DESKTOP_QUIT_ON_CLOSE").map_or(true, |v| v != "1")
}

/// Whether closing the window hides it (the app lives on in the tray) rather than quitting: only
/// when that is wanted, the icon was installed and a tray host shows it. Without a host the icon
/// is nowhere to be seen, and a hidden window could never be shown again. `host_present` is
/// asked last, and only if the rest holds.
pub fn close_hides_window(
    keep_running: bool,
    tray_installed: bool,
    host_present: impl FnOnce() -> bool,
) -> bool {
    keep_running && tray_installed && host_present()
}

/// The well-known name of the tray host on the session bus (the StatusNotifierItem protocol the
/// appindicator icon speaks).
#[cfg(target_os = "linux")]
pub const TRAY_HOST: &str = "org.kde.StatusNotifierWatcher";

/// Whether a tray host runs now. On Linux: whether [`TRAY_HOST`] has an owner on the session bus
/// (GNOME without an AppIndicator extension has none). Elsewhere the system tray is always there.
pub fn tray_host_present() -> bool {
    #[cfg(target_os = "linux")]
    {
        use webkit2gtk::gio;
        match gio::bus_get_sync(gio::BusType::Session, gio::Cancellable::NONE) {
            Ok(bus) => tray_host_on(&bus),
            Err(error) => {
                tracing::info!(%error, "no session bus, so no tray host");
                false
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    true
}

/// Whether [`TRAY_HOST`] has an owner on `bus`; a bus that does not answer within a second has
/// none.
#[cfg(target_os = "linux")]
pub fn tray_host_on(bus: &webkit2gtk::gio::DBusConnection) -> bool {
    use webkit2gtk::gio;
    use webkit2gtk::glib::{ToVariant as _, VariantTy};
    let answer = bus.call_sync(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "NameHasOwner",
        Some(&(TRAY_HOST,).to_variant()),
        VariantTy::new("(b)").ok(),
        gio::DBusCallFlags::NONE,
        1000,
        gio::Cancellable::NONE,
    );
    match answer {
        Ok(reply) => reply.get::<(bool,)>().is_some_and(|(owned,)| owned),
        Err(error) => {
            tracing::info!(%error, "the session bus did not say whether a tray host runs");
            false
        }
    }
}

/// The tray icon and the state it shows.
#[derive(Clone)]
pub struct Tray {
    app: AppHandle,
    icon: TrayIcon,
    base: Arc<(Vec<u8>, u32, u32)>,
    state: Arc<Mutex<TrayState>>,
    /// What the tray shows now: an update that changes nothing visible does not rebuild the
    /// menu (a rebuilt menu gets new item ids on the bus, which a click in flight would miss).
    shown: Arc<Mutex<Option<TrayModel>>>,
}

impl std::fmt::Debug for Tray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tray").finish_non_exhaustive()
    }
}

impl Tray {
    /// Puts the icon in the tray with the menu of a computer that is not set up yet.
    pub fn install(app: &AppHandle) -> tauri::Result<Self> {
        let image = Image::from_bytes(include_bytes!("../icons/32x32.png"))?;
        let base = Arc::new((image.rgba().to_vec(), image.width(), image.height()));
        let icon = TrayIconBuilder::with_id("latchkey")
            .icon(image)
            .tooltip("Latchkey")
            .show_menu_on_left_click(true)
            .on_menu_event(|app, event| on_menu(app, event.id().as_ref()))
            .build(app)?;
        let tray = Self {
            app: app.clone(),
            icon,
            base,
            state: Arc::new(Mutex::new(TrayState::default())),
            shown: Arc::new(Mutex::new(None)),
        };
        app.manage(tray.clone());
        tray.apply();
        Ok(tray)
    }

    /// Changes the state and redraws.
    pub fn update(&self, change: impl FnOnce(&mut TrayState)) {
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut state);
        }
        self.apply();
    }

    fn paused(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).paused
    }

    /// Changes the state and redraws even if the model is unchanged: a check item the person
    /// clicked has toggled itself, whatever the model says.
    fn redraw(&self, change: impl FnOnce(&mut TrayState)) {
        change(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.shown.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.apply();
    }

    /// Redraws the tray from its state, if that changes what it shows.
    fn apply(&self) {
        let model = TrayModel::build(&self.state.lock().unwrap_or_else(|p| p.into_inner()));
        // Held while drawing, so two updates draw one after the other.
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        if !needs_redraw(shown.as_ref(), &model) {
            return;
        }
        match self.show(&model) {
            Ok(()) => *shown = Some(model),
            Err(error) => {
                // Drawn again at the next update, whatever it changes.
                *shown = None;
                tracing::warn!(%error, "the tray could not be updated");
            }
        }
    }

    fn show(&self, model: &TrayModel) -> tauri::Result<()> {
        let app = &self.app;
        let mut items: Vec<Box<dyn IsMenuItem<tauri::Wry>>> = Vec::new();
        for entry in &model.items {
            items.push(match entry {
                MenuEntry::Item { id, label, enabled } => {
                    Box::new(MenuItem::with_id(app, id, label, *enabled, None::<&str>)?)
                }
                MenuEntry::Check { id, label, checked } => {
                    Box::new(CheckMenuItem::with_id(app, id, label, true, *checked, None::<&str>)?)
                }
                MenuEntry::Separator => Box::new(PredefinedMenuItem::separator(app)?),
            });
        }
        let refs: Vec<&dyn IsMenuItem<tauri::Wry>> = items.iter().map(|i| i.as_ref()).collect();
        self.icon.set_menu(Some(Menu::with_items(app, &refs)?))?;
        self.icon.set_tooltip(Some(&model.tooltip))?;
        self.icon.set_title(model.title.as_deref())?;
        let (rgba, width, height) = self.base.as_ref();
        let pixels = if model.badge { with_badge(rgba, *width, *height) } else { rgba.clone() };
        self.icon.set_icon(Some(Image::new_owned(pixels, *width, *height)))?;
        Ok(())
    }
}

fn show_window<R: Runtime>(app: &AppHandle<R>, navigate: Option<Navigate>) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.show();
        let _ = window.unminimize();
        let _ = window.set_focus();
    }
    if let Some(navigate) = navigate {
        let _ = app.emit(events::NAVIGATE, navigate);
    }
}

fn on_menu(app: &AppHandle, id: &str) {
    let Some(action) = TrayAction::from_id(id) else { return };
    match action {
        TrayAction::Open => show_window(app, None),
        TrayAction::ShowApprovals => {
            show_window(app, Some(Navigate { screen: "approvals", approval_id: None }));
        }
        TrayAction::ShowApproval(id) => {
            show_window(app, Some(Navigate { screen: "approvals", approval_id: Some(id) }));
        }
        TrayAction::TogglePause => {
            let (Some(tray), Some(live)) = (app.try_state::<Tray>(), app.try_state::<Arc<Live>>())
            else {
                return;
            };
            let (tray, live, app) = (tray.inner().clone(), Arc::clone(&live), app.clone());
            tauri::async_runtime::spawn(async move {
                let wanted = !tray.paused();
                match live.set_paused(wanted).await {
                    Ok(status) => {
                        tray.redraw(|s| s.paused = status.paused);
                        events::status_changed(&app, &status);
                    }
                    Err(error) => {
                        tracing::warn!(code = %error.code, "pause from the tray failed");
                        notify(&app, "Latchkey could not pause agents", &error.message);
                        // The check item toggled itself: put it back.
                        tray.redraw(|_| {});
                    }
                }
            });
        }
        TrayAction::Quit => app.exit(0),
    }
}

fn notify(app: &AppHandle, title: &str, body: &str) {
    if let Err(error) = app.notification().builder().title(title).body(body).show() {
        tracing::debug!(%error, "no notification shown");
    }
}

/// How often the app refreshes OAuth connections that expire soon.
const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// Keeps this member's OAuth connections fresh while the app runs: every minute, each token
/// expiring within 5 minutes is refreshed on this device (rotation stored atomically), and a
/// connection the provider refuses is marked "reconnect needed" and announced once.
pub fn spawn_refresher(app: AppHandle, live: Arc<Live>) {
    tauri::async_runtime::spawn(async move {
        let mut announced = HashSet::new();
        loop {
            tokio::time::sleep(REFRESH_EVERY).await;
            if !live.is_set_up() || live.is_locked() {
                continue;
            }
            let Ok(store) = live.key_store().await else { continue };
            let reports = match latchkey_client::refresh::refresh_all(
                live.profile(),
                &store,
                latchkey_client::refresh::DEFAULT_BUFFER,
            )
            .await
            {
                Ok(reports) => reports,
                Err(error) => {
                    tracing::info!(%error, "connections not refreshed this round");
                    continue;
                }
            };
            let mut refused = Vec::new();
            for report in reports {
                use latchkey_client::refresh::RefreshReport;
                match report {
                    RefreshReport::Refreshed { credential, .. } => {
                        tracing::info!(credential = %credential.id, "connection refreshed");
                    }
                    RefreshReport::ReconnectNeeded { credential } => refused.push(credential),
                    RefreshReport::Failed { credential, reason } => {
                        tracing::warn!(credential = %credential.id, %reason, "refresh failed");
                    }
                    _ => {}
                }
            }
            let ids: Vec<_> = refused.iter().map(|c| c.id).collect();
            let news = newly_refused(&mut announced, &ids);
            for credential in refused.iter().filter(|c| news.contains(&c.id)) {
                notify(
                    &app,
                    "A connection needs you",
                    &format!(
                        "{} was refused by its provider: reconnect it in Latchkey",
                        credential.name
                    ),
                );
            }
        }
    });
}

/// The connections refused this round that were not refused in the round before, to announce;
/// `announced` becomes this round's. A connection reconnected since (so not refused for a round)
/// is announced again when it is refused again, days later or not.
fn newly_refused<T: Copy + Eq + std::hash::Hash>(
    announced: &mut HashSet<T>,
    refused: &[T],
) -> Vec<T> {
    let news = refused.iter().filter(|id| !announced.contains(id)).copied().collect();
    *announced = refused.iter().copied().collect();
    news
}

/// Follows the approval stream for as long as the app runs.
pub fn spawn(app: AppHandle, live: Arc<Live>, tray: Option<Tray>) {
    tauri::async_runtime::spawn(async move {
        if let Err(error) = live.start_if_local().await {
            tracing::error!(code = %error.code, message = %error.message, "embedded broker");
        }
        let mut notified = HashSet::new();
        let mut backoff = Duration::from_secs(1);
        loop {
            if !live.is_set_up() || live.is_locked() {
                // Unlocking or setting up a workspace here says so at once; the poll covers a
                // profile set up by another process (the CLI).
                tokio::select! {
                    () = tokio::time::sleep(SET_UP_POLL) => {}
                    () = live.ready() => {}
                }
                continue;
            }
            match follow(&app, &live, tray.as_ref(), &mut notified).await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(message) => {
                    tracing::info!(%message, retry_in = ?backoff, "approval stream interrupted");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    });
}

/// One connection to the stream: a snapshot of the pending requests, then every change.
async fn follow(
    app: &AppHandle,
    live: &Live,
    tray: Option<&Tray>,
    notified: &mut HashSet<String>,
) -> Result<(), String> {
    let client = live.client().await.map_err(|e| e.message)?;
    let mut stream = client.approval_events().await.map_err(|e| e.to_string())?;
    let paused = client.pause_state().await.map_err(|e| e.to_string())?.paused;
    let mut pending = pending_now(live).await?;
    publish(app, tray, &pending, Some(paused), notified);
    // Agents' names, read again only for an agent not seen yet: a burst of held calls costs the
    // device's request budget nothing beyond the first.
    let mut names = HashMap::new();
    let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
    loop {
        let next = tokio::select! {
            next = stream.next() => next.map_err(|e| e.to_string())?,
            _ = sweep.tick() => {
                // A request past its deadline whose end the stream never told (its broker
                // stopped, a notification was lost) leaves the tray and the count.
                if drop_expired(&mut pending, crate::live::unix_now()) {
                    publish(app, tray, &pending, None, notified);
                }
                continue;
            }
            () = live.locked() => {
                publish(app, tray, &BTreeMap::new(), None, notified);
                // Not a failure: the loop waits for the unlock, with no backoff after it.
                tracing::info!("locked: the approval stream waits for the keychain");
                return Ok(());
            }
        };
        match next {
            None => return Ok(()),
            Some(ApprovalEvent::Approval(info)) => {
                let id = info.id.to_string();
                if info.status == ApprovalStatus::Pending {
                    if !names.contains_key(&info.agent.to_string()) {
                        names = live.agent_names_or_ids().await;
                    }
                    pending.insert(id, Approval::new(&info, &names));
                } else {
                    pending.remove(&id);
                }
            }
            Some(_) => pending = pending_now(live).await?,
        }
        publish(app, tray, &pending, None, notified);
    }
}

/// The pending requests, by id.
async fn pending_now(live: &Live) -> Result<BTreeMap<String, Approval>, String> {
    let listed = live.approvals(false).await.map_err(|e| e.message)?;
    Ok(listed.into_iter().map(|a| (a.id.clone(), a)).collect())
}

/// Shows `pending` in the tray and the window, and notifies each request once.
fn publish(
    app: &AppHandle,
    tray: Option<&Tray>,
    pending: &BTreeMap<String, Approval>,
    paused: Option<bool>,
    notified: &mut HashSet<String>,
) {
    let (oldest_first, new) = pending_update(pending, notified);
    for approval in &new {
        let _ = app.emit(events::APPROVAL_REQUESTED, approval);
        notify(app, "An agent asks for approval", &crate::tray::summary(approval));
    }
    let count = oldest_first.len();
    let _ = app.emit(events::APPROVALS_CHANGED, ApprovalsChanged { pending: count });
    if let Some(tray) = tray {
        tray.update(|s| {
            s.set_up = true;
            s.pending = oldest_first;
            if let Some(paused) = paused {
                s.paused = paused;
            }
        });
    }
}

/// Whether the tray must be drawn again to show `next`.
fn needs_redraw(shown: Option<&TrayModel>, next: &TrayModel) -> bool {
    shown != Some(next)
}

/// How often requests past their deadline are dropped from the tray.
const EXPIRY_SWEEP: Duration = Duration::from_secs(15);

/// How far this computer's clock may run ahead of the broker's before a request that can still
/// be answered leaves the tray: deadlines are the broker's, the sweep reads this clock.
const CLOCK_GRACE_SECS: u64 = 5 * 60;

/// Drops the requests whose deadline passed more than [`CLOCK_GRACE_SECS`] ago; whether any was.
fn drop_expired(pending: &mut BTreeMap<String, Approval>, now: u64) -> bool {
    let before = pending.len();
    pending.retain(|_, a| a.expires_at.saturating_add(CLOCK_GRACE_SECS) >= now);
    pending.len() != before
}

/// The pending requests this device may answer oldest first, and those not announced before
/// (now marked announced): the tray, its count and the notifications are for those; a member's
/// agents' calls that an admin answers are on the Approvals screen only. Answered or expired
/// requests are forgotten, so a reconnect's snapshot announces nothing twice and a request's id
/// is never announced again.
fn pending_update(
    pending: &BTreeMap<String, Approval>,
    notified: &mut HashSet<String>,
) -> (Vec<Approval>, Vec<Approval>) {
    let mut oldest_first: Vec<Approval> =
        pending.values().filter(|a| a.answerable).cloned().collect();
    oldest_first.sort_by_key(|a| a.created_at);
    let new = oldest_first.iter().filter(|a| notified.insert(a.id.clone())).cloned().collect();
    notified.retain(|id| pending.contains_key(id));
    (oldest_first, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tray_is_drawn_again_only_when_what_it_shows_changes() {
        let idle = TrayModel::build(&TrayState { set_up: true, ..TrayState::default() });
        assert!(needs_redraw(None, &idle), "nothing is drawn yet");
        assert!(!needs_redraw(Some(&idle), &idle.clone()), "the same menu, icon and text");
        let waiting = TrayModel::build(&TrayState {
            set_up: true,
            pending: vec![approval("a1", 1)],
            ..TrayState::default()
        });
        assert!(needs_redraw(Some(&idle), &waiting), "a request came in");
        let paused =
            TrayModel::build(&TrayState { set_up: true, paused: true, ..TrayState::default() });
        assert!(needs_redraw(Some(&idle), &paused), "the pause switch changed");
    }

    #[test]
    fn closing_the_window_hides_it_only_where_a_tray_host_can_show_it_again() {
        assert!(close_hides_window(true, true, || true), "the app lives in the tray");
        assert!(
            !close_hides_window(true, true, || false),
            "without a tray host nothing could show a hidden window again: closing quits"
        );
        assert!(!close_hides_window(true, false, || true), "no icon was installed");
        assert!(!close_hides_window(false, true, || true), "LATCHKEY_DESKTOP_QUIT_ON_CLOSE=1");
        assert!(
            !close_hides_window(false, true, || panic!("asked")),
            "the bus is not asked when the answer is already known"
        );
    }

    /// A private session bus (`dbus-daemon`, as `dbus-run-session` starts it), stopped on drop.
    #[cfg(target_os = "linux")]
    struct PrivateBus(std::process::Child, String);

    #[cfg(target_os = "linux")]
    impl PrivateBus {
        fn start() -> Self {
            use std::io::BufRead as _;
            let mut child = std::process::Command::new("dbus-daemon")
                .args(["--session", "--nofork", "--print-address"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("dbus-daemon runs (Debian: dbus, see scripts/lib/packages.txt)");
            let mut address = String::new();
            let stdout = child.stdout.take().expect("piped");
            std::io::BufReader::new(stdout).read_line(&mut address).expect("an address");
            Self(child, address.trim().to_owned())
        }

        fn connect(&self) -> webkit2gtk::gio::DBusConnection {
            use webkit2gtk::gio;
            gio::DBusConnection::for_address_sync(
                &self.1,
                gio::DBusConnectionFlags::AUTHENTICATION_CLIENT
                    | gio::DBusConnectionFlags::MESSAGE_BUS_CONNECTION,
                None,
                gio::Cancellable::NONE,
            )
            .expect("a connection to the private bus")
        }
    }

    #[cfg(target_os = "linux")]
    impl Drop for PrivateBus {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_tray_host_is_present_once_the_watcher_name_has_an_owner() {
        use webkit2gtk::gio;
        use webkit2gtk::glib::{ToVariant as _, VariantTy};
        let bus = PrivateBus::start();
        let app = bus.connect();
        assert!(!tray_host_on(&app), "a bare session bus has no tray host");
        let host = bus.connect();
        let bus_call = |method: &str, args: webkit2gtk::glib::Variant| {
            host.call_sync(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                method,
                Some(&args),
                VariantTy::new("(u)").ok(),
                gio::DBusCallFlags::NONE,
                5000,
                gio::Cancellable::NONE,
            )
            .unwrap_or_else(|error| panic!("{method}: {error}"))
            .get::<(u32,)>()
        };
        // DO_NOT_QUEUE (4); 1: the primary owner.
        assert_eq!(bus_call("RequestName", (TRAY_HOST, 4u32).to_variant()), Some((1,)));
        assert!(tray_host_on(&app), "the watcher's name has an owner");
        // 1: released.
        assert_eq!(bus_call("ReleaseName", (TRAY_HOST,).to_variant()), Some((1,)));
        assert!(!tray_host_on(&app), "the host left: no tray host again");
    }

    fn approval(id: &str, created_at: u64) -> Approval {
        Approval {
            id: id.to_owned(),
            status: "pending",
            agent: "a".to_owned(),
            agent_name: "bot".to_owned(),
            credential: "c".to_owned(),
            credential_name: "github".to_owned(),
            method: "GET".to_owned(),
            host: "api.github.com".to_owned(),
            path: "/".to_owned(),
            query_keys: vec![],
            body_size: None,
            policy_ids: vec![],
            created_at,
            expires_at: created_at + 120,
            answered_at: None,
            answered_by: None,
            answerable: true,
        }
    }

    fn map(items: &[Approval]) -> BTreeMap<String, Approval> {
        items.iter().map(|a| (a.id.clone(), a.clone())).collect()
    }

    #[test]
    fn a_request_past_its_deadline_leaves_the_tray_though_the_stream_never_said_so() {
        // Created at 100 and 200: deadlines 220 and 320, by the broker's clock.
        let mut pending = map(&[approval("old", 100), approval("new", 200)]);
        let grace = CLOCK_GRACE_SECS;
        assert!(!drop_expired(&mut pending, 221), "a clock a little ahead drops nothing");
        assert!(!drop_expired(&mut pending, 220 + grace), "nor one ahead by the whole grace");
        assert!(drop_expired(&mut pending, 221 + grace), "past that, the request goes");
        assert_eq!(pending.keys().collect::<Vec<_>>(), ["new"], "the other stays");
        assert!(!drop_expired(&mut pending, 221 + grace), "nothing more to drop: no redraw");
    }

    #[test]
    fn a_connection_refused_again_after_a_reconnect_is_announced_again() {
        let mut announced = HashSet::new();
        let none: [u32; 0] = [];
        assert_eq!(newly_refused(&mut announced, &[7_u32, 8]), [7, 8], "first refusals: news");
        assert_eq!(newly_refused(&mut announced, &[7, 8]), none, "still refused: announced once");
        assert_eq!(newly_refused(&mut announced, &[8]), none, "7 reconnected, 8 still refused");
        assert_eq!(newly_refused(&mut announced, &[7, 8]), [7], "7 refused again: news again");
    }

    #[test]
    fn each_request_is_announced_once_even_across_a_reconnects_snapshot() {
        let mut notified = HashSet::new();
        let (listed, new) =
            pending_update(&map(&[approval("b", 20), approval("a", 10)]), &mut notified);
        assert_eq!(
            listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"],
            "the tray lists the oldest request first"
        );
        assert_eq!(new.len(), 2, "both are new");
        let (_, again) =
            pending_update(&map(&[approval("a", 10), approval("b", 20)]), &mut notified);
        assert!(again.is_empty(), "a reconnect's snapshot must not notify the same requests again");
        let (_, third) =
            pending_update(&map(&[approval("b", 20), approval("c", 30)]), &mut notified);
        assert_eq!(third.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["c"]);
        assert!(!notified.contains("a"), "an answered request is forgotten");
    }

    #[test]
    fn a_call_an_admin_answers_is_neither_in_the_tray_nor_announced() {
        let mut notified = HashSet::new();
        let theirs = Approval { answerable: false, ..approval("x", 5) };
        let (listed, new) = pending_update(&map(&[theirs, approval("a", 10)]), &mut notified);
        assert_eq!(
            listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["a"],
            "the tray and its count are requests this device can answer"
        );
        assert_eq!(new.len(), 1, "no notification asks for an answer this device cannot give");
    }
}
