# shellcheck shell=bash
# Latchkey's macOS and Windows builds, checked on Linux. Source it after common.sh; do not
# execute it. Used by the "other systems" stage of ./scripts/test.
#
# The rustup toolchain has only Linux's standard library and cannot fetch others, so these builds
# use Debian's rustc-web with its standard library sources (rust-web-src) and `-Z build-std`
# (RUSTC_BOOTSTRAP=1 lets a stable compiler take it). Packages: packages-other-systems.txt.
#
# - macOS (x86_64-apple-darwin): `cargo check` of latchkey-client, latchkey-cli and
#   latchkey-server, so the login-keychain store and every macOS `cfg` compile. Without Apple's
#   SDK no C can be compiled for macOS: dependencies' C parts get empty objects from
#   empty-object-cc, harmless since nothing is linked. Nothing here runs on macOS.
# - Windows (x86_64-pc-windows-gnu, linked with MinGW): latchkey-client's unit tests and its
#   keychain tests are built and run under Wine, the keychain tests against Wine's Credential
#   Manager (advapi32's Cred* functions, the API the Windows store calls) and an embedded broker
#   on SQLite for the workspace flow.

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
    -p latchkey-client -p latchkey-cli -p latchkey-server
  echo "macOS ($target): latchkey-client, latchkey-cli and latchkey-server compile"
}

# Builds the Windows test executables and runs them under Wine in a throwaway prefix.
other_systems_test_windows() {
  local target=x86_64-pc-windows-gnu
  local -a executables
  mapfile -t executables < <(
    CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc \
      _debian_cargo test --no-run --message-format=json --target "$target" \
      -p latchkey-client --lib --test keychain |
      python3 -c 'import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable"):
        print(message["executable"])'
  )
  ((${#executables[@]} == 2)) || die "expected two Windows test executables, got: ${executables[*]}"

  # Rust's std needs bcryptprimitives.dll (Windows 10+), which Wine 8 lacks: a stand-in that
  # forwards to BCryptGenRandom goes next to the executables (tests/support/wine).
  local dll_dir
  dll_dir="$(dirname "${executables[0]}")"
  x86_64-w64-mingw32-gcc -shared -O2 -o "$dll_dir/bcryptprimitives.dll" \
    "$LATCHKEY_ROOT/tests/support/wine/bcryptprimitives.c" \
    "$LATCHKEY_ROOT/tests/support/wine/bcryptprimitives.def" -lbcrypt

  # In a subshell, so the throwaway prefix is removed (and its wineserver stopped) however
  # the runs end.
  (
    prefix="$(mktemp -d)"
    trap 'WINEPREFIX="$prefix/wine" wineserver -k 2>/dev/null; rm -rf "$prefix"' EXIT
    export WINEPREFIX="$prefix/wine" WINEDEBUG=-all
    wineboot --init >/dev/null 2>&1 || true
    for exe in "${executables[@]}"; do
      name="$(basename "$exe")"
      echo "--- under Wine: $name"
      LATCHKEY_TEST_KEYRING=1 timeout 600 wine "$exe" --test-threads=2 2>&1 |
        tee "$prefix/tests.log" || die "Windows tests failed under Wine: $name"
      grep -Eq '^test result: ok\. [1-9][0-9]* passed; 0 failed' "$prefix/tests.log" ||
        die "Windows tests did not report success: $name"
      if grep -q "skipped: no OS keychain session" "$prefix/tests.log"; then
        die "Windows keychain tests were skipped: $name"
      fi
    done
  )
  echo "Windows ($target): latchkey-client's unit and keychain tests pass under Wine $(wine --version 2>/dev/null)"
}
