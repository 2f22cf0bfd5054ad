# shellcheck shell=bash
# Shared by ./scripts/run and ./scripts/test. Source it; do not execute it.
#
# Provides: stage banners with timings, a failure message naming the stage,
# system package installation (list in scripts/lib/packages.txt), npm
# dependencies from lockfiles, and tool version printing.

LATCHKEY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LATCHKEY_PACKAGES_FILE="$LATCHKEY_ROOT/scripts/lib/packages.txt"
export LATCHKEY_ROOT

# Non-interactive everywhere: CI has no stdin.
export DEBIAN_FRONTEND=noninteractive
if [[ "${CI:-}" == "true" ]]; then
  export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
  export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
  export NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false NPM_CONFIG_UPDATE_NOTIFIER=false
fi

# The project builds with rustup's toolchain. The other-systems stage installs Debian's rustc-web
# (for its standard library sources) into /usr/bin; keep it from shadowing rustup's proxies.
if [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
  PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
  export PATH
fi

# --- timing and stages ------------------------------------------------------

_now_ms() {
  if [[ -n "${EPOCHREALTIME:-}" ]]; then
    local t="${EPOCHREALTIME//[!0-9]/}"
    echo $((10#$t / 1000))
  else
    echo $((SECONDS * 1000))
  fi
}

_fmt_ms() {
  local ms=$1
  printf '%d.%ds' $((ms / 1000)) $(((ms % 1000) / 100))
}

_SCRIPT_NAME="$(basename "$0")"
_SCRIPT_START_MS="$(_now_ms)"
_STAGE_NAME=""
_STAGE_START_MS=0
_STAGE_SUMMARY=()

_end_stage() {
  if [[ -n "$_STAGE_NAME" ]]; then
    local took=$(($(_now_ms) - _STAGE_START_MS))
    _STAGE_SUMMARY+=("$(printf '  %-34s %s' "$_STAGE_NAME" "$(_fmt_ms "$took")")")
    _STAGE_NAME=""
  fi
}

# stage NAME: close the previous stage (recording its time) and print a banner.
stage() {
  _end_stage
  _STAGE_NAME="$1"
  _STAGE_START_MS="$(_now_ms)"
  printf '\n==> [%s] %s\n' "$_SCRIPT_NAME" "$_STAGE_NAME"
}

# Called on exit: on failure, name the stage that failed; always print timings.
_on_exit() {
  local status=$?
  local failed="$_STAGE_NAME"
  _end_stage
  local total=$(($(_now_ms) - _SCRIPT_START_MS))
  if ((${#_STAGE_SUMMARY[@]} > 0)); then
    printf '\n==> [%s] stage times\n' "$_SCRIPT_NAME"
    printf '%s\n' "${_STAGE_SUMMARY[@]}"
  fi
  if ((status != 0)); then
    printf '\n==> [%s] FAILED in stage "%s" (exit %d) after %s; disk: %s\n' \
      "$_SCRIPT_NAME" "${failed:-setup}" "$status" "$(_fmt_ms "$total")" \
      "$(free_build_disk)" >&2
  else
    printf '\n==> [%s] OK, total %s\n' "$_SCRIPT_NAME" "$(_fmt_ms "$total")"
  fi
}
trap _on_exit EXIT

# shellcheck source=exit_trap.sh
source "$LATCHKEY_ROOT/scripts/lib/exit_trap.sh"

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# --- tool versions ------------------------------------------------------------

print_versions() {
  local tool
  for tool in rustc cargo node npm python3; do
    if have "$tool"; then
      printf '  %-8s %s\n' "$tool" "$("$tool" --version 2>&1 | head -n 1)"
    else
      printf '  %-8s (not installed)\n' "$tool"
    fi
  done
  if cargo nextest --version >/dev/null 2>&1; then
    printf '  %-8s %s\n' nextest "$(cargo nextest --version 2>&1 | head -n 1)"
  else
    printf '  %-8s (not installed; using cargo test)\n' nextest
  fi
  printf '  %-8s %s\n' disk "$(free_build_disk)"
}

# Free space where the build goes, printed with the tool versions and on failure.
free_build_disk() {
  local dir="${CARGO_TARGET_DIR:-$LATCHKEY_ROOT/target}"
  while [[ ! -d "$dir" ]]; do dir="$(dirname "$dir")"; done
  printf '%s free for %s\n' "$(df -h --output=avail "$dir" | tail -n 1 | tr -d ' ')" \
    "${CARGO_TARGET_DIR:-target/}"
}

# --- system packages ------------------------------------------------------------

# Package names from a list (packages.txt unless one is named), comments and blank lines removed.
required_packages() {
  sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "${1:-$LATCHKEY_PACKAGES_FILE}"
}

# Install missing system packages (from packages.txt, or the list file given). A warm machine
# never touches apt.
# As root: apt-get update + install only what is missing.
# Otherwise: list what is missing, print the command, and fail.
ensure_system_packages() {
  local -a wanted missing=()
  mapfile -t wanted < <(required_packages "${1:-}")

  if ! have dpkg-query; then
    printf 'warning: dpkg-query not found (not Debian?); make sure these are installed:\n  %s\n' \
      "${wanted[*]}" >&2
    return 0
  fi

  local pkg status
  for pkg in "${wanted[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == "installed" ]] || missing+=("$pkg")
  done

  if ((${#missing[@]} == 0)); then
    echo "all ${#wanted[@]} system packages present"
    return 0
  fi

  echo "missing system packages: ${missing[*]}"
  if [[ "$(id -u)" != "0" ]]; then
    printf 'not running as root: install them with\n\n' >&2
    printf '  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends %s\n\n' \
      "${missing[*]}" >&2
    die "missing system packages"
  fi

  # A private TMPDIR: dpkg otherwise sometimes finds its temporary .deb files gone.
  local apt_tmp
  apt_tmp="$(mktemp -d)"
  TMPDIR="$apt_tmp" apt-get update -q </dev/null
  TMPDIR="$apt_tmp" apt-get install -y -q --no-install-recommends \
    -o Dpkg::Use-Pty=0 "${missing[@]}" </dev/null
  rm -rf "$apt_tmp"
}

# --- npm dependencies ---------------------------------------------------------

# Directories with a package.json that this project builds: the repo root, ui/, and every
# test project under tests/ (Octokit through the broker, the OAuth authorization servers the
# client is tested against), found rather than listed so a new one cannot be forgotten.
npm_projects() {
  local dir
  for dir in "$LATCHKEY_ROOT" "$LATCHKEY_ROOT/ui"; do
    [[ -f "$dir/package.json" ]] && echo "$dir"
  done
  find "$LATCHKEY_ROOT/tests" -name node_modules -prune -o -name package.json -printf '%h\n' |
    sort
  return 0
}

# `npm ci` from the lockfile in each npm project, skipped when node_modules was
# installed from the same lockfile already.
ensure_npm_packages() {
  local dir stamp lock_hash any=0
  while read -r dir; do
    [[ -n "$dir" ]] || continue
    any=1
    [[ -f "$dir/package-lock.json" ]] ||
      die "$dir/package.json has no package-lock.json: run 'npm install' there and commit the lockfile"
    have npm || die "npm is required for $dir (install Node 20 and npm)"
    stamp="$dir/node_modules/.latchkey-lock.sha256"
    lock_hash="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$lock_hash" ]]; then
      echo "npm packages in ${dir#"$LATCHKEY_ROOT"/} up to date"
    else
      (cd "$dir" && npm ci --no-audit --no-fund </dev/null)
      mkdir -p "$dir/node_modules"
      echo "$lock_hash" >"$stamp"
    fi
  done < <(npm_projects)
  ((any)) || echo "no package.json: no npm packages needed"
}

# Run an npm script in each npm project that defines it (e.g. "build", "test").
run_npm_script() {
  local script="$1" dir ran=0
  while read -r dir; do
    [[ -n "$dir" ]] || continue
    if (cd "$dir" && node -e 'process.exit(require("./package.json").scripts?.[process.argv[1]] ? 0 : 1)' "$script"); then
      (cd "$dir" && npm run "$script" </dev/null)
      ran=1
    fi
  done < <(npm_projects)
  ((ran)) || echo "no npm project defines a \"$script\" script: skipped"
}
