//! The Latchkey desktop app's entry point.
//!
//! The Tauri shell (commands over the client library, tray, error mapping) lives in this
//! directory and is built by the root package, next to `tauri.conf.json`. Until the client
//! library it adapts exists, this binary only says so.

use std::process::ExitCode;

fn main() -> ExitCode {
    #[allow(clippy::print_stderr, reason = "the binary's only output, for a person at a terminal")]
    {
        eprintln!(
            "The Latchkey desktop app is not part of this build yet. \
             Run ./scripts/run to start the broker (latchkey-server)."
        );
    }
    ExitCode::from(2)
}
