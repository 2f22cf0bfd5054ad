# shellcheck shell=bash
# A throwaway PostgreSQL cluster for tests, from the Debian package. Source it; do not execute it.
#
#   start_throwaway_postgres   initdb + start on a free loopback port, as a non-root user
#                              (`postgres` when called as root); exports
#                              LATCHKEY_TEST_POSTGRES_URL (a superuser URL the tests use to create
#                              one database and one unprivileged service role per test) and
#                              registers the cluster's removal on exit.
#
# The cluster lives in a temporary directory, listens on 127.0.0.1 only (plus a socket in that
# directory) and trusts local connections: it holds nothing but test data and is deleted with
# the directory when the calling script exits.

# shellcheck source=exit_trap.sh
source "$(dirname "${BASH_SOURCE[0]}")/exit_trap.sh"

_pg_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x "$dir/initdb" ]] && { echo "$dir"; return 0; }
  done
  return 1
}

_pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs a command as the cluster's owner: `postgres` when we are root (initdb refuses root),
# ourselves otherwise.
_pg_as_owner() {
  if [[ "$(id -u)" == "0" ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

_LATCHKEY_PG_DIR=""
_LATCHKEY_PG_BIN=""

stop_throwaway_postgres() {
  if [[ -n "$_LATCHKEY_PG_DIR" && -d "$_LATCHKEY_PG_DIR" ]]; then
    _pg_as_owner "$_LATCHKEY_PG_BIN/pg_ctl" -D "$_LATCHKEY_PG_DIR/data" -m immediate stop \
      >/dev/null 2>&1 || true
    rm -rf "$_LATCHKEY_PG_DIR"
  fi
  _LATCHKEY_PG_DIR=""
}

start_throwaway_postgres() {
  _LATCHKEY_PG_BIN="$(_pg_bindir)" ||
    die "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)"
  _LATCHKEY_PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/latchkey-pg.XXXXXX")"
  if [[ "$(id -u)" == "0" ]]; then
    chown postgres "$_LATCHKEY_PG_DIR"
  fi
  chain_exit_trap stop_throwaway_postgres

  local port
  port="$(_pg_free_port)"
  _pg_as_owner "$_LATCHKEY_PG_BIN/initdb" -D "$_LATCHKEY_PG_DIR/data" -A trust -U postgres \
    -E UTF8 --no-sync >"$_LATCHKEY_PG_DIR/initdb.log" 2>&1 ||
    { cat "$_LATCHKEY_PG_DIR/initdb.log" >&2; die "initdb failed"; }
  # fsync off: a test cluster trades durability for speed; the broker's own durability
  # guarantees are tested on SQLite, whose commit path is the embedded default.
  _pg_as_owner "$_LATCHKEY_PG_BIN/pg_ctl" -D "$_LATCHKEY_PG_DIR/data" -w -l "$_LATCHKEY_PG_DIR/log" \
    -o "-p $port -k $_LATCHKEY_PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400" \
    start >/dev/null ||
    { cat "$_LATCHKEY_PG_DIR/log" >&2; die "the throwaway PostgreSQL cluster did not start"; }
  export LATCHKEY_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "throwaway PostgreSQL $("$_LATCHKEY_PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}
