# shellcheck shell=bash
# The PostgreSQL-backed brokers of bench/proxy.sh. Source it after proxy.sh has defined `root`,
# `work`, `pids`, `die`, `free_port`, `target_dir`, `upstream_port`, LATCHKEY_BENCH_SECRET and
# its EXIT trap (the cluster's removal is chained onto it); do not execute it.
#
#   pg_brokers_available   0 when the PostgreSQL server binaries are installed; otherwise
#                          prints why the PostgreSQL rows are skipped and returns 1
#   pg_brokers_start       starts a throwaway cluster (scripts/lib/postgres.sh, removed on
#                          exit), an owner role, an unprivileged service role and a database;
#                          two latchkey-server replicas on that database sharing one data
#                          directory (so one broker key: a capability sealed to the broker opens
#                          on both), and an nginx round-robin balancer in front of both. Then it
#                          provisions a workspace, a credential pointing at the benchmark
#                          upstream, an agent and a standing grant with the CLI, as a member's
#                          device would, and sets:
#                            pg1_url      one replica, called directly
#                            pg2_url      both replicas, through the balancer
#                            pg_token     the agent's token
#                            pg_capability  the grant's capability

# shellcheck source=../../scripts/lib/postgres.sh
source "$root/scripts/lib/postgres.sh"

pg_brokers_available() {
  if ! _pg_bindir >/dev/null; then
    echo "PostgreSQL server binaries not found under /usr/lib/postgresql: the broker-pg rows" \
      "are skipped (apt-get install postgresql to measure them)" >&2
    return 1
  fi
  if [[ ! -x "$(_pg_bindir)/psql" ]]; then
    echo "psql not found beside initdb: the broker-pg rows are skipped" \
      "(apt-get install postgresql-client)" >&2
    return 1
  fi
  if [[ "$(id -u)" == "0" ]] && ! id postgres >/dev/null 2>&1; then
    echo "running as root without a postgres user to run the cluster as: the broker-pg rows" \
      "are skipped" >&2
    return 1
  fi
  return 0
}

# _pg_wait_ready PORT LOG: waits up to 20 s for a replica's /readyz.
_pg_wait_ready() {
  local port="$1" log="$2"
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$log" >&2
  die "the PostgreSQL-backed broker on port $port did not become ready"
}

# _pg_latchkey ARGS...: the CLI as the benchmark's admin device (a throwaway profile whose keys
# live in a passphrase-encrypted file in the work directory), with JSON output.
_pg_latchkey() {
  LATCHKEY_CONFIG_DIR="$work/cli" LATCHKEY_PROFILE=bench LATCHKEY_KEY_STORE=file \
    LATCHKEY_KEYSTORE_PASSPHRASE="$_pg_keystore_passphrase" \
    "$target_dir/release/latchkey" --json "$@"
}

_pg_json_field() { python3 -c "import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1:]: v=v[k]
print(v)" "$@"; }

pg_brokers_start() {
  start_throwaway_postgres >&2
  local superuser_url="$LATCHKEY_TEST_POSTGRES_URL"
  local hostport="${superuser_url#postgres://postgres@}"
  hostport="${hostport%%/*}"
  "$_LATCHKEY_PG_BIN/psql" -q -v ON_ERROR_STOP=1 "$superuser_url" >/dev/null <<'SQL'
CREATE ROLE latchkey_bench_owner LOGIN;
CREATE ROLE latchkey_bench LOGIN;
CREATE DATABASE latchkey_bench OWNER latchkey_bench_owner;
SQL
  local service_url="postgres://latchkey_bench@$hostport/latchkey_bench"
  local owner_url="postgres://latchkey_bench_owner@$hostport/latchkey_bench"

  # Two replicas, one data directory: the first creates the broker key file and migrates as the
  # owner, the second starts on the migrated schema and reads the same key.
  mkdir -p "$work/pg-broker"
  local port_a port_b lb_port
  port_a="$(free_port)"
  port_b="$(free_port)"
  lb_port="$(free_port)"
  LATCHKEY_LOG=error "$target_dir/release/latchkey-server" --listen "127.0.0.1:$port_a" \
    --metrics-listen off --data-dir "$work/pg-broker" \
    --database-url "$service_url" --migrate-database-url "$owner_url" \
    >"$work/pg-broker-a.log" 2>&1 &
  pids+=($!)
  _pg_wait_ready "$port_a" "$work/pg-broker-a.log"
  LATCHKEY_LOG=error "$target_dir/release/latchkey-server" --listen "127.0.0.1:$port_b" \
    --metrics-listen off --data-dir "$work/pg-broker" --database-url "$service_url" \
    >"$work/pg-broker-b.log" 2>&1 &
  pids+=($!)
  _pg_wait_ready "$port_b" "$work/pg-broker-b.log"

  # The balancer: its own nginx (one worker, like the peer), round robin over both replicas with
  # kept-alive upstream connections.
  mkdir -p "$work/lb"
  cat >"$work/lb/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $work/lb/nginx.pid;
error_log $work/lb/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/lb/body; proxy_temp_path $work/lb/proxy;
  fastcgi_temp_path $work/lb/fastcgi; uwsgi_temp_path $work/lb/uwsgi; scgi_temp_path $work/lb/scgi;
  upstream brokers {
    server 127.0.0.1:$port_a;
    server 127.0.0.1:$port_b;
    keepalive 32;
  }
  server {
    listen 127.0.0.1:$lb_port;
    location / {
      proxy_pass http://brokers;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
    }
  }
}
CONF
  nginx -c "$work/lb/nginx.conf" -p "$work/lb"

  # Provisioning, as a member would: against one replica (both serve the same database).
  _pg_keystore_passphrase="bench-keystore-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  local broker="http://127.0.0.1:$port_a" agent
  _pg_latchkey workspace create --broker "$broker" --name Bench --member-name "Bench admin" \
    >/dev/null
  printf '%s\n' "$LATCHKEY_BENCH_SECRET" | _pg_latchkey credential add --name github \
    --provider custom-api-key --base-url "http://127.0.0.1:$upstream_port" \
    --allow-host "127.0.0.1:$upstream_port" --header Authorization --prefix "Bearer " \
    --key-stdin >/dev/null
  agent="$(_pg_latchkey agent create bench-agent)"
  pg_token="$(_pg_json_field token <<<"$agent")"
  local grant
  grant="$(_pg_latchkey grant create --agent "$(_pg_json_field agent id <<<"$agent")" \
    --credential github --method get --path '/**' --for 1h)"
  pg_capability="$(_pg_json_field capability <<<"$grant")"
  pg1_url="$broker/p/github/bench"
  pg2_url="http://127.0.0.1:$lb_port/p/github/bench"
}
