#!/usr/bin/env bash
# Story: the OS keychain for real. Runs crates/client's keychain tests against gnome-keyring's
# Secret Service in a private D-Bus session, with a fresh HOME (so no old login keyring and no
# GUI prompt) and a fresh XDG_RUNTIME_DIR, as shared/PLATFORM-NOTES.md describes. The tests
# themselves start further private sessions for a locked keyring, a bus without a Secret
# Service and a daemon that starts late; one more re-runs without a session bus.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

for tool in dbus-run-session dbus-send gnome-keyring-daemon; do
  command -v "$tool" >/dev/null || {
    echo "keychain story: $tool is missing (apt-get install dbus-x11 gnome-keyring libsecret-tools)" >&2
    exit 1
  }
done

# Build with the real HOME (cargo and rustup find their homes through it), then switch.
# `--workspace`, not `-p latchkey-client`: the dependencies keep the features the workspace's
# test run built them with, so nothing is compiled a second time.
cargo test --workspace --test keychain --test secret_service --locked --no-run
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export HOME="$work/home" XDG_RUNTIME_DIR="$work/runtime"
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"

log="$work/keychain-tests.log"
started=$SECONDS
dbus-run-session -- sh -c 'printf %s throwaway | gnome-keyring-daemon --unlock --components=secrets >/dev/null
LATCHKEY_TEST_KEYRING=1 cargo test --workspace --test keychain --test secret_service --locked' 2>&1 | tee "$log"

# Every test must have run against the keyring, none skipped.
if grep -q "skipped: no OS keychain session" "$log"; then
  echo "keychain story: some tests were skipped although a Secret Service was started" >&2
  exit 1
fi
# Both test binaries (keychain, secret_service) ran and passed.
passed=$(grep -Ec "^test result: ok\. [1-9][0-9]* passed; 0 failed" "$log" || true)
if [ "$passed" -ne 2 ]; then
  echo "keychain story: expected two passing test binaries, saw $passed" >&2
  exit 1
fi
echo "keychain story: passed in $((SECONDS - started))s"
