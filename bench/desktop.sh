#!/usr/bin/env bash
# Desktop benchmark: idle memory (PSS of the app and its WebKit processes) and cold start to an
# interactive window, for the Latchkey app (a workspace on this computer, embedded broker
# running) beside an empty Tauri 2 app built with the same Tauri and profile, measured in the
# same run under Xvfb. Targets: at most 1.3x the empty app, and at most 150 MB in total.
# Usage: bench/desktop.sh [rounds]   (release builds; about 12 minutes the first time)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds="${1:-5}"

# shellcheck source=scripts/lib/tauri_driver.sh
source scripts/lib/tauri_driver.sh

for tool in xvfb-run dbus-run-session gnome-keyring-daemon WebKitWebDriver python3; do
  command -v "$tool" >/dev/null || { echo "desktop bench: $tool is missing" >&2; exit 1; }
done
ensure_tauri_driver
[[ -f ui/dist/index.html ]] || (cd ui && npm run build)
cargo build --locked --release -p latchkey-desktop --bin latchkey-desktop --example empty_app
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export HOME="$work/home" XDG_RUNTIME_DIR="$work/runtime"
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export LATCHKEY_E2E_DRIVER="http://127.0.0.1:$(port)"
export LATCHKEY_PROFILE=bench LATCHKEY_CONFIG_DIR="$work/config" LATCHKEY_DESKTOP_DATA_DIR="$work/data"
export LATCHKEY_DESKTOP_BROKER_LISTEN="127.0.0.1:$(port)" LATCHKEY_DESKTOP_QUIT_ON_CLOSE=1
export LATCHKEY_BENCH_ROUNDS="$rounds" WORK="$work" TARGET="$target"
export TAURI_DRIVER_LIB="$PWD/scripts/lib/tauri_driver.sh"

xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session -- bash -c '
  set -euo pipefail
  printf %s throwaway | gnome-keyring-daemon --unlock --components=secrets >/dev/null
  source "$TAURI_DRIVER_LIB"
  start_tauri_driver "${LATCHKEY_E2E_DRIVER##*:}" "$WORK/driver.log"
  rc=0
  python3 bench/desktop/measure.py "$TARGET/latchkey-desktop" "$TARGET/examples/empty_app" || rc=$?
  stop_tauri_driver
  exit "$rc"
' 2> >(grep -v "dbus-daemon\|SpiRegistry" >&2)
