//! The peer of the desktop benchmark: an empty Tauri 2 app (one window, a static page, no
//! commands, no tray), built with the same Tauri and profile as the Latchkey app.

fn main() {
    let built = tauri::Builder::default()
        .build(tauri::generate_context!("bench/desktop/empty/tauri.conf.json"));
    match built {
        Ok(app) => app.run(|_, _| {}),
        Err(error) => {
            #[allow(clippy::print_stderr, reason = "the benchmark peer's only output")]
            {
                eprintln!("the empty app cannot start: {error}");
            }
            std::process::exit(1);
        }
    }
}
