//! The Latchkey desktop app's thin Tauri shell.
//!
//! - [`commands`]: what the UI invokes, each a few lines over the [`backend::Backend`];
//! - [`live`]: the backend over the client library (keys in the OS keychain) and, for a workspace
//!   on this computer, the [`embedded`] broker;
//! - [`tray`]: the tray's menu model, built from the pending approvals and the pause switch;
//! - [`watch`]: follows the broker's approval stream to keep the tray, the window and the
//!   notifications current;
//! - [`view`] and [`error`]: what the UI is shown (metadata only) and the one `{code, message}`
//!   error shape.

pub mod backend;
pub mod commands;
#[cfg(test)]
mod commands_tests;
pub mod embedded;
pub mod error;
pub mod events;
pub mod live;
pub mod templates;
pub mod tray;
pub mod view;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use latchkey_client::oauth::{BrowserLauncher, CommandBrowser, SystemBrowser};
use latchkey_client::profile::{Profile, ProfileName};
use tauri::Manager as _;

use crate::commands::Shell;
use crate::live::{Live, Settings};

/// The handlers of every command, in one place for the app and its tests.
#[macro_export]
macro_rules! command_handlers {
    () => {
        tauri::generate_handler![
            $crate::commands::app_status,
            $crate::commands::create_workspace,
            $crate::commands::join_workspace,
            $crate::commands::finish_join,
            $crate::commands::list_providers,
            $crate::commands::list_integrations,
            $crate::commands::add_api_key,
            $crate::commands::connect_oauth,
            $crate::commands::reconnect,
            $crate::commands::cancel_connect,
            $crate::commands::disconnect,
            $crate::commands::set_integration_account,
            $crate::commands::list_agents,
            $crate::commands::create_agent,
            $crate::commands::regenerate_agent,
            $crate::commands::revoke_agent,
            $crate::commands::create_grant,
            $crate::commands::revoke_grant,
            $crate::commands::list_approvals,
            $crate::commands::approve_once,
            $crate::commands::approve_for,
            $crate::commands::deny,
            $crate::commands::list_policies,
            $crate::commands::policy_templates,
            $crate::commands::save_policy,
            $crate::commands::delete_policy,
            $crate::commands::check_call,
            $crate::commands::check_inject,
            $crate::commands::list_audit,
            $crate::commands::verify_audit,
            $crate::commands::export_audit,
            $crate::commands::list_members,
            $crate::commands::create_invite,
            $crate::commands::create_device_invite,
            $crate::commands::list_invites,
            $crate::commands::revoke_invite,
            $crate::commands::admit_device,
            $crate::commands::remove_member,
            $crate::commands::remove_device,
            $crate::commands::rotate_keys,
            $crate::commands::export_recovery_kit,
            $crate::commands::import_recovery_kit,
            $crate::commands::set_paused,
            $crate::commands::set_broker_ca,
            $crate::commands::lock,
            $crate::commands::unlock,
            $crate::commands::open_external,
        ]
    };
}

/// Where this run keeps its profile and broker, from the environment (for tests and
/// development profiles) or the platform's defaults.
fn settings(app: &tauri::App) -> anyhow::Result<Settings> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let name: ProfileName = var("LATCHKEY_PROFILE").unwrap_or_default().parse()?;
    let profile = match var("LATCHKEY_CONFIG_DIR") {
        Some(dir) => Profile::new(name.clone(), dir),
        None => Profile::in_platform_config_dir(name.clone())?,
    };
    let data_dir = match var("LATCHKEY_DESKTOP_DATA_DIR") {
        Some(dir) => dir.into(),
        None => app.path().app_data_dir().context("no data directory for the app")?,
    };
    let listen = var("LATCHKEY_DESKTOP_BROKER_LISTEN")
        .unwrap_or_else(|| embedded::DEFAULT_LISTEN.to_owned());
    let broker_listen: SocketAddr =
        listen.parse().with_context(|| format!("LATCHKEY_DESKTOP_BROKER_LISTEN={listen:?}"))?;
    anyhow::ensure!(
        broker_listen.ip().is_loopback(),
        "the embedded broker listens on loopback only, not {broker_listen}"
    );
    Ok(Settings {
        profile,
        broker_dir: data_dir.join("broker").join(name.file_stem()),
        broker_listen,
    })
}

/// Renders the UI without GPU compositing on Linux: WebKitGTK's accelerated compositing costs
/// 60-80 MB in the web process (measured by bench/desktop.sh) and buys nothing for a page of
/// forms and lists. `LATCHKEY_DESKTOP_GPU=1` keeps it.
fn lighten_web_view(app: &tauri::App) {
    #[cfg(target_os = "linux")]
    if std::env::var("LATCHKEY_DESKTOP_GPU").map_or(true, |v| v != "1")
        && let Some(window) = app.get_webview_window("main")
    {
        let applied = window.with_webview(|webview| {
            use webkit2gtk::{HardwareAccelerationPolicy, SettingsExt as _, WebViewExt as _};
            if let Some(settings) = webview.inner().settings() {
                settings.set_hardware_acceleration_policy(HardwareAccelerationPolicy::Never);
            }
        });
        if let Err(error) = applied {
            tracing::debug!(%error, "web view settings unchanged");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = app;
}

/// Runs the app until the person quits it.
pub fn run() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();

    let app = tauri::Builder::default()
        .plugin(tauri_plugin_notification::init())
        .invoke_handler(command_handlers!())
        .setup(|app| {
            // LATCHKEY_BROWSER names another browser, as $BROWSER does for other tools.
            let browser: Arc<dyn BrowserLauncher> = match CommandBrowser::from_env() {
                Some(chosen) => Arc::new(chosen),
                None => Arc::new(SystemBrowser),
            };
            let live = Arc::new(Live::new(settings(app)?, browser));
            app.manage(Shell { backend: live.clone() });
            app.manage(live.clone());
            let warming = live.clone();
            tauri::async_runtime::spawn(async move { warming.warm_up().await });
            lighten_web_view(app);
            // No tray host (or no appindicator library): the app still works, from its window.
            let tray = match watch::Tray::install(app.handle()) {
                Ok(tray) => Some(tray),
                Err(error) => {
                    tracing::warn!(%error, "no tray icon; closing the window quits the app");
                    None
                }
            };
            watch::spawn_refresher(app.handle().clone(), live.clone());
            watch::spawn(app.handle().clone(), live, tray);
            Ok(())
        })
        .on_window_event(|window, event| {
            // The app lives in the tray: closing the window hides it; Quit is in the tray menu.
            // Where no tray host shows the icon, closing quits: nothing could show the window.
            if let tauri::WindowEvent::CloseRequested { api, .. } = event {
                let installed = window.app_handle().try_state::<watch::Tray>().is_some();
                let keep = watch::keeps_running_in_tray();
                if watch::close_hides_window(keep, installed, watch::tray_host_present) {
                    api.prevent_close();
                    let _ = window.hide();
                } else if keep && installed {
                    tracing::info!("no tray host shows the icon: closing the window quits the app");
                }
            }
        })
        .build(tauri::generate_context!())
        .context("cannot start the desktop app")?;
    app.run(|handle, event| {
        if let tauri::RunEvent::Exit = event
            && let Some(live) = handle.try_state::<Arc<Live>>()
        {
            let live = Arc::clone(&live);
            tauri::async_runtime::block_on(async move { live.shutdown().await });
        }
    });
    Ok(())
}
