# shellcheck shell=bash
# tauri-driver for the desktop story and benchmark. Source it; do not execute it.
#
#   ensure_tauri_driver         installs tauri-driver 2 with cargo when it is missing (the newest
#                               on crates.io is a 3.0 alpha; the app is Tauri 2) and exports its
#                               path as TAURI_DRIVER_BIN (call it before switching HOME)
#   start_tauri_driver PORT LOG starts it on 127.0.0.1:PORT in front of WebKitWebDriver, logging
#                               to LOG, and returns once it accepts connections; sets
#                               TAURI_DRIVER_PID. Fails (with the log's end) if it does not answer
#                               within 10 seconds. Call it inside the Xvfb and D-Bus session the
#                               app is to run in: the driver launches the app.
#   stop_tauri_driver           stops the driver start_tauri_driver started, if any
#
# The first requests of a new WebDriver session can still be dropped while the app's window
# loads; the clients retry those (tests/e2e/desktop.py, `Driver.call`, which the benchmark
# imports).

ensure_tauri_driver() {
  if ! command -v tauri-driver >/dev/null 2>&1; then
    echo "installing tauri-driver 2"
    cargo install tauri-driver --locked --version '^2'
  fi
  TAURI_DRIVER_BIN="$(command -v tauri-driver)"
  export TAURI_DRIVER_BIN
}

start_tauri_driver() {
  local port="$1" log="$2" _
  "${TAURI_DRIVER_BIN:-tauri-driver}" --port "$port" --native-driver /usr/bin/WebKitWebDriver >"$log" 2>&1 &
  TAURI_DRIVER_PID=$!
  for _ in $(seq 100); do
    if python3 -c "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 0.2)" \
      "$port" 2>/dev/null; then
      return 0
    fi
    kill -0 "$TAURI_DRIVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "tauri-driver did not answer on port $port; its log:" >&2
  tail -n 20 "$log" >&2 || true
  stop_tauri_driver
  return 1
}

stop_tauri_driver() {
  [[ -n "${TAURI_DRIVER_PID:-}" ]] || return 0
  kill "$TAURI_DRIVER_PID" 2>/dev/null || true
  wait "$TAURI_DRIVER_PID" 2>/dev/null || true
  TAURI_DRIVER_PID=""
}
