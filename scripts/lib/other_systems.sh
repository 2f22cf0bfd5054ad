# shellcheck shell=bash
# Latchkey's macOS and Windows builds, checked on Linux. Source it after common.sh; do not
# execute it. Used by the "other systems" stage of ./scripts/test.
#
# The rustup toolchain has only Linux's standard library and cannot fetch others, so these builds
# use Debian's rustc-web with its standard library sources (rust-web-src) and `-Z build-std`
# (RUSTC_BOOTSTRAP=1 lets a stable compiler take it). Packages: packages-other-systems.txt.
#
# - macOS (x86_64-apple-darwin): `cargo check` of latchkey-client, latchkey-cli,
#   latchkey-server and the desktop app, so the login-keychain store and every macOS `cfg`
#   compile. Without Apple's
#   SDK no C can be compiled for macOS: dependencies' C parts get empty objects from
#   empty-object-cc, harmless since nothing is linked. Nothing here runs on macOS.
# - Windows (x86_64-pc-windows-gnu, linked with MinGW): latchkey-client's unit tests and its
#   keychain tests are built and run under Wine, the keychain tests against Wine's Credential
#   Manager (advapi32's Cred* functions, the API the Windows store calls) and an embedded broker
#   on SQLite for the workspace flow; then the CLI's end-to-end tests that need nothing from
#   Linux (WINDOWS_CLI_TESTS) drive `latchkey.exe` against a broker, and the desktop shell's
#   unit tests (commands over a fake client on Tauri's mock runtime, the tray model) run, also
#   under Wine. No WebView2 exists under Wine, so the app itself is built but never opened.

# The CLI tests (crates/cli/tests/cli.rs) run under Wine. Left out: OAuth (the test servers are
# Node.js programs), `latchkey run` with a Python or shell child, the Unix process-lifetime
# tests, and the TLS team-server tests: Wine's chain engine answers the untrusted CA with a
# revocation-check failure, and refuses the chain-engine settings the platform verifier uses
# for LATCHKEY_BROKER_CA's extra authorities (E_INVALIDARG, where Windows 7 and later take
# them), so the client cannot even be built with the test CA trusted.
WINDOWS_CLI_TESTS=(
  help_reads_like_a_tour_and_matches_its_snapshots
  errors_are_one_line_with_a_hint_and_a_documented_exit_code
  connect_refuses_what_it_cannot_connect_before_anything_is_opened
  a_member_sets_up_an_agent_from_the_terminal_and_its_call_goes_through_the_broker
  a_member_joins_is_admitted_and_the_listings_match_their_json_snapshots
  held_calls_are_listed_approved_and_denied_from_the_terminal
  the_watch_prompt_shows_a_held_call_in_full_and_the_answer_decides_it
  the_watch_reconnects_when_the_stream_goes_silent_and_says_so
  rotation_killed_at_any_point_leaves_every_credential_readable_under_one_version
  run_releases_nothing_when_any_inject_is_refused
  run_stops_a_background_process_of_the_command_when_the_lifetime_runs_out_on_any_system
)

_OTHER_SYSTEMS_TARGET_DIR="${CARGO_TARGET_DIR:-$LATCHKEY_ROOT/target}/other-systems"
_BUILD_STD="std,panic_abort,panic_unwind,test"

# Debian's cargo and rustc (by absolute path: rustup's stay first on PATH) with build-std.
_debian_cargo() {
  local subcommand="$1"
  shift
  RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
    /usr/bin/cargo "$subcommand" -Z build-std="$_BUILD_STD" --locked \
    --target-dir "$_OTHER_SYSTEMS_TARGET_DIR" "$@"
}

other_systems_check_macos() {
  local target=x86_64-apple-darwin cc="$LATCHKEY_ROOT/scripts/lib/empty-object-cc"
  CC_x86_64_apple_darwin="$cc" CXX_x86_64_apple_darwin="$cc" AR_x86_64_apple_darwin=ar \
    _debian_cargo check --target "$target" \
    -p latchkey-client -p latchkey-cli -p latchkey-server -p latchkey-desktop
  echo "macOS ($target): latchkey-client, latchkey-cli, latchkey-server and the desktop app compile"
}

# Builds the Windows test executables and runs them under Wine in a throwaway prefix.
other_systems_test_windows() {
  local target=x86_64-pc-windows-gnu
  local -a executables
  mapfile -t executables < <(
    CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc \
      _debian_cargo test --no-run --message-format=json --target "$target" \
      -p latchkey-client -p latchkey-cli -p latchkey-desktop --lib --test keychain --test cli |
      python3 -c 'import json, sys
for line in sys.stdin:
    message = json.loads(line)
    reason = message.get("reason")
    if reason == "compiler-message" and message["message"]["level"] in ("error", "warning"):
        # JSON output hides the compiler diagnostics; without this a failed build says nothing.
        sys.stderr.write(message["message"]["rendered"])
    elif (reason == "compiler-artifact" and message.get("executable")
            and message["profile"]["test"]):
        print(message["executable"])'
  )
  ((${#executables[@]} == 4)) || die "expected four Windows test executables, got: ${executables[*]}"

  # Rust's std needs bcryptprimitives.dll (Windows 10+), which Wine 8 lacks: a stand-in that
  # forwards to BCryptGenRandom (tests/support/wine) goes into the prefix's system32 below.
  local dll="$_OTHER_SYSTEMS_TARGET_DIR/bcryptprimitives.dll"
  x86_64-w64-mingw32-gcc -shared -O2 -o "$dll" \
    "$LATCHKEY_ROOT/tests/support/wine/bcryptprimitives.c" \
    "$LATCHKEY_ROOT/tests/support/wine/bcryptprimitives.def" -lbcrypt

  # In a subshell, so the throwaway prefix is removed (and its wineserver stopped) however
  # the runs end.
  (
    prefix="$(mktemp -d)"
    trap 'WINEPREFIX="$prefix/wine" wineserver -k 2>/dev/null; rm -rf "$prefix"' EXIT
    export WINEPREFIX="$prefix/wine" WINEDEBUG=-all
    wineboot --init >/dev/null 2>&1 || true
    # The desktop tests load WebView2's loader (webview2-com-sys leaves it in the target dir)
    # but never a webview.
    cp "$dll" "$_OTHER_SYSTEMS_TARGET_DIR/$target/debug/WebView2Loader.dll" \
      "$WINEPREFIX/drive_c/windows/system32/"
    for exe in "${executables[@]}"; do
      name="$(basename "$exe")"
      selection=()
      if [[ "$name" == cli-* ]]; then
        selection=(--exact "${WINDOWS_CLI_TESTS[@]}")
      fi
      echo "--- under Wine: $name ${selection[*]}"
      LATCHKEY_TEST_KEYRING=1 timeout 900 wine "$exe" --test-threads=2 "${selection[@]}" 2>&1 |
        tee "$prefix/tests.log" || die "Windows tests failed under Wine: $name"
      grep -Eq '^test result: ok\. [1-9][0-9]* passed; 0 failed' "$prefix/tests.log" ||
        die "Windows tests did not report success: $name"
      if ((${#selection[@]} > 0)) &&
        ! grep -Eq "^test result: ok\. ${#WINDOWS_CLI_TESTS[@]} passed" "$prefix/tests.log"; then
        die "not every test of WINDOWS_CLI_TESTS ran (renamed?): $name"
      fi
      if grep -q "skipped: no OS keychain session" "$prefix/tests.log"; then
        die "Windows keychain tests were skipped: $name"
      fi
    done
  )
  echo "Windows ($target): the client's unit and keychain tests, ${#WINDOWS_CLI_TESTS[@]} CLI tests and the desktop shell's unit tests pass under Wine $(wine --version 2>/dev/null)"
}
