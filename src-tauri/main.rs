//! The Latchkey desktop app: the window, the tray and, for a workspace on this computer, the
//! embedded broker.

// No console window next to the app on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() -> anyhow::Result<()> {
    latchkey_desktop::run()
}
