#!/usr/bin/env bash
# Story: the desktop app end to end, for real. The app (debug build, the UI from ui/dist) runs
# under Xvfb in a private D-Bus session with an unlocked gnome-keyring and a fresh HOME, driven
# through WebDriver (tauri-driver + WebKitWebDriver) by tests/e2e/desktop.py, with its embedded
# broker on a free loopback port, oidc-provider (strict) as the OAuth server and a scripted
# browser (tests/e2e/browser.py, via LATCHKEY_BROWSER) that signs in over HTTP. A second device
# joins with the real `latchkey` CLI (its own profile and configuration, the same keychain).
# Before the app starts, tests/e2e/desktop_hosts.py puts a tray host (StatusNotifierWatcher) and a
# notification server on the private bus, so the real tray icon, its menu and the notifications
# are checked over D-Bus, and closing the window leaves the app in the tray as on a desktop (and,
# once the story stops the tray host, quits it).
# Then a second phase (tests/e2e/desktop_team.py): the app, on a profile of its own, creates a
# workspace on a real `latchkey-server` serving TLS with a certificate from a private authority
# the story makes with openssl, refused until the authority's PEM is pasted; and on a third
# profile joins another workspace there, which an admin at the terminal made and admits.
# Screenshots of every screen are kept in target/e2e-screenshots/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"

# shellcheck source=scripts/lib/tauri_driver.sh
source scripts/lib/tauri_driver.sh

for tool in xvfb-run dbus-run-session gnome-keyring-daemon WebKitWebDriver node python3 openssl; do
  command -v "$tool" >/dev/null || {
    echo "desktop story: $tool is missing (see scripts/lib/packages.txt)" >&2
    exit 1
  }
done
ensure_tauri_driver
# The tray host and notification server need PyGObject: the system's python3-gi, which a python3
# earlier on PATH (a pyenv or venv one) may not see.
hosts_python=""
for candidate in python3 /usr/bin/python3; do
  if "$candidate" -c 'from gi.repository import Gio' 2>/dev/null; then
    hosts_python="$(command -v "$candidate")"
    break
  fi
done
[[ -n "$hosts_python" ]] || {
  echo "desktop story: no python3 with PyGObject (python3-gi, see scripts/lib/packages.txt)" >&2
  exit 1
}
[[ -f ui/dist/index.html ]] || {
  echo "desktop story: ui/dist is missing: run the UI build (npm run build in ui/)" >&2
  exit 1
}

# Build with the real HOME (cargo and rustup find their homes through it), then switch.
cargo build -p latchkey-desktop -p latchkey-cli -p latchkey-server --locked
app="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/latchkey-desktop"
shots="$(dirname "$app")/../e2e-screenshots"
rm -rf "$shots"
mkdir -p "$shots"
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -n "${LATCHKEY_E2E_KEEP:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT
export HOME="$work/home" XDG_RUNTIME_DIR="$work/runtime"
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# oidc-provider prints {"issuer", "client_id"} once it accepts connections; it runs until its
# standard input closes.
mkfifo "$work/oidc.in"
node tests/oauth/strict.mjs <"$work/oidc.in" >"$work/oidc.out" 2>"$work/oidc.err" &
pids+=($!)
exec 9>"$work/oidc.in"
for _ in $(seq 100); do [[ -s "$work/oidc.out" ]] && break; sleep 0.1; done
[[ -s "$work/oidc.out" ]] || { echo "desktop story: oidc-provider did not start" >&2; cat "$work/oidc.err" >&2; exit 1; }
read -r issuer client_id < <(python3 -c 'import json,sys; d=json.loads(sys.stdin.readline()); print(d["issuer"], d["client_id"])' <"$work/oidc.out")

# The team server of the second phase: a private certificate authority no system trusts, a
# certificate it issued for localhost, and the real broker serving TLS with it.
team="$work/team"
mkdir -p "$team"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=Acme E2E Private CA" -keyout "$team/ca.key" -out "$team/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$team/server.key" -out "$team/server.csr" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:localhost" "basicConstraints=CA:FALSE" \
  "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature" >"$team/server.ext"
openssl x509 -req -days 2 -in "$team/server.csr" -CA "$team/ca.pem" -CAkey "$team/ca.key" \
  -CAcreateserial -extfile "$team/server.ext" -out "$team/server.pem" 2>/dev/null
chmod 600 "$team/server.key" "$team/ca.key"
# Another authority, which did not issue the server's certificate: the app must refuse it.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=Other E2E CA" -keyout "$team/other-ca.key" -out "$team/other-ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
team_port="$(free_port)"
team_url="https://localhost:$team_port"
LATCHKEY_LOG=warn "$(dirname "$app")/latchkey-server" --listen "127.0.0.1:$team_port" \
  --metrics-listen "127.0.0.1:$(free_port)" --data-dir "$team/data" --public-origin "$team_url" \
  --tls-cert "$team/server.pem" --tls-key "$team/server.key" >"$work/team-server.log" 2>&1 &
pids+=($!)
export LATCHKEY_E2E_TEAM_URL="$team_url" LATCHKEY_E2E_TEAM_CA="$team/ca.pem"
export LATCHKEY_E2E_OTHER_CA="$team/other-ca.pem"
LATCHKEY_E2E_TEAM_CA_FINGERPRINT="$(openssl x509 -in "$team/ca.pem" -noout -fingerprint -sha256 | cut -d= -f2)"
export LATCHKEY_E2E_TEAM_CA_FINGERPRINT
export LATCHKEY_E2E_TEAM_SCAN="$work/config:$work/team-data:$work/team-join-data:$work/ops-config:$work/mia-config:$team/data:$work/team-app.log:$work/team-join-app.log:$work/team-server.log"
export LATCHKEY_E2E_TEAM_BROKER_LISTEN="127.0.0.1:$(free_port)" LATCHKEY_E2E_OPS_CONFIG="$work/ops-config"
export LATCHKEY_E2E_TEAM_JOIN_BROKER_LISTEN="127.0.0.1:$(free_port)" LATCHKEY_E2E_MIA_CONFIG="$work/mia-config"

export LATCHKEY_E2E_APP="$app" LATCHKEY_E2E_CLI="$(dirname "$app")/latchkey"
export LATCHKEY_E2E_CLI_CONFIG="$work/cli-config"
export LATCHKEY_E2E_ISSUER="$issuer" LATCHKEY_E2E_CLIENT_ID="$client_id"
export LATCHKEY_E2E_SCREENSHOTS="$shots"
export LATCHKEY_E2E_DRIVER="http://127.0.0.1:$(free_port)"
export LATCHKEY_PROFILE=e2e LATCHKEY_CONFIG_DIR="$work/config"
export LATCHKEY_DESKTOP_DATA_DIR="$work/data" LATCHKEY_DESKTOP_EXPORT_DIR="$work/exports"
export LATCHKEY_DESKTOP_BROKER_LISTEN="127.0.0.1:$(free_port)"
export LATCHKEY_E2E_HOSTS_PYTHON="$hosts_python" LATCHKEY_E2E_NOTIFICATIONS="$work/notifications.jsonl"
export LATCHKEY_BROWSER="$root/tests/e2e/browser.py" LATCHKEY_E2E_BROWSER_LOG="$work/browser.log"
export LATCHKEY_LOG=info
export LATCHKEY_E2E_SCAN="$work/config:$work/cli-config:$work/data:$work/exports:$work/app.log:$work/home:$work/notifications.jsonl"
export WORK="$work" TAURI_DRIVER_LIB="$root/scripts/lib/tauri_driver.sh"

started=$SECONDS
status=0
xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session -- bash -c '
  set -euo pipefail
  printf %s throwaway | gnome-keyring-daemon --unlock --components=secrets >/dev/null
  # The tray host and the notification server, before the app: its icon registers at start.
  "$LATCHKEY_E2E_HOSTS_PYTHON" tests/e2e/desktop_hosts.py serve "$LATCHKEY_E2E_NOTIFICATIONS" \
    "$WORK/hosts.ready" 2>"$WORK/hosts.log" &
  hosts=$!
  export LATCHKEY_E2E_HOSTS_PID="$hosts"
  trap "kill $hosts 2>/dev/null || true" EXIT
  for _ in $(seq 100); do
    [[ -e "$WORK/hosts.ready" ]] && break
    kill -0 "$hosts" 2>/dev/null || break
    sleep 0.1
  done
  [[ -e "$WORK/hosts.ready" ]] || {
    echo "desktop story: the tray host and notification server did not start" >&2
    cat "$WORK/hosts.log" >&2
    exit 1
  }
  source "$TAURI_DRIVER_LIB"
  start_tauri_driver "${LATCHKEY_E2E_DRIVER##*:}" "$WORK/app.log"
  rc=0
  python3 tests/e2e/desktop.py || rc=$?
  stop_tauri_driver
  ((rc == 0)) || exit "$rc"
  # The second phase: the app on a profile of its own, against the TLS team server.
  export LATCHKEY_PROFILE=e2e-team LATCHKEY_DESKTOP_DATA_DIR="$WORK/team-data"
  export LATCHKEY_DESKTOP_BROKER_LISTEN="$LATCHKEY_E2E_TEAM_BROKER_LISTEN"
  start_tauri_driver "${LATCHKEY_E2E_DRIVER##*:}" "$WORK/team-app.log"
  python3 tests/e2e/desktop_team.py create || rc=$?
  stop_tauri_driver
  ((rc == 0)) || exit "$rc"
  # Then a new member joins a second workspace on that server from the app, on a third profile.
  export LATCHKEY_PROFILE=e2e-team-join LATCHKEY_DESKTOP_DATA_DIR="$WORK/team-join-data"
  export LATCHKEY_DESKTOP_BROKER_LISTEN="$LATCHKEY_E2E_TEAM_JOIN_BROKER_LISTEN"
  start_tauri_driver "${LATCHKEY_E2E_DRIVER##*:}" "$WORK/team-join-app.log"
  python3 tests/e2e/desktop_team.py join || rc=$?
  stop_tauri_driver
  exit "$rc"
' || status=$?

if ((status != 0)); then
  echo "desktop story: failed; the app's log (last 60 lines):" >&2
  tail -n 60 "$work/app.log" >&2 || true
  for log in team-app team-join-app; do
    [[ -s "$work/$log.log" ]] || continue
    echo "desktop story: the app's log in the team phase, $log.log (last 40 lines):" >&2
    tail -n 40 "$work/$log.log" >&2
  done
  if [[ -s "$work/team-app.log" ]]; then
    echo "the team server's log (last 20 lines):" >&2
    tail -n 20 "$work/team-server.log" >&2 || true
  fi
  [[ -f "$work/browser.log" ]] && { echo "scripted browser:" >&2; cat "$work/browser.log" >&2; }
  [[ -s "$work/hosts.log" ]] && { echo "tray host and notification server:" >&2; cat "$work/hosts.log" >&2; }
  exit "$status"
fi
echo "desktop story: passed in $((SECONDS - started))s"
