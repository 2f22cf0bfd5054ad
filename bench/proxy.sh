#!/usr/bin/env bash
# Proxy overhead benchmark: one run on loopback, eight paths to the same upstream.
#
#   direct         wrk -> upstream (nginx returning a static JSON body)
#   nginx          wrk -> nginx injecting a static Authorization header -> upstream
#   floor          wrk -> the broker's HTTP stack alone (axum server, the broker's upstream
#                  client, same runtime) adding a static header -> upstream: no token, capability, policy,
#                  audit, decryption or redaction (crates/server/examples/bare_proxy.rs)
#   floor-per-core the floor served by one current-thread runtime (and upstream client) per
#                  core instead of one multi-threaded runtime: what that serving model is worth
#   broker-sqlite  wrk -> latchkey-server (SQLite) with a standing capability -> upstream
#   broker-per-core the same broker serving on one thread per core, each with a current-thread
#                  runtime (`--serving-threads`), instead of one multi-threaded runtime
#   broker-pg-1    wrk -> latchkey-server on PostgreSQL, one replica -> upstream
#   broker-pg-2    wrk -> nginx round robin -> two latchkey-server replicas on the same
#                  PostgreSQL database -> upstream
#
# Each is loaded with wrk at 1 and 16 connections. Printed: p50 latency and requests/s per path,
# the latency each proxy adds over direct, and the broker/nginx ratios against the targets:
# broker-added p50 <= 2.5x nginx-added p50, broker throughput >= 0.5x nginx's. The floor's own
# ratios say how much of that the HTTP libraries take before Latchkey does any work.
#
# PostgreSQL runs as a throwaway cluster (scripts/lib/postgres.sh: fsync off) removed on exit;
# without the postgresql package the broker-pg rows are skipped and the rest still runs.
#
# Usage: bench/proxy.sh [seconds per run, default 10]
set -euo pipefail

duration="${1:-10}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

for tool in nginx wrk; do
  command -v "$tool" >/dev/null || { echo "bench/proxy.sh needs $tool (apt-get install nginx wrk)" >&2; exit 1; }
done

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  local pidfile
  for pidfile in "$work/nginx.pid" "$work/lb/nginx.pid"; do
    [[ -f "$pidfile" ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
die() { echo "bench/proxy.sh: $*" >&2; exit 1; }
target_dir="${CARGO_TARGET_DIR:-$root/target}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
upstream_port="$(free_port)"
nginx_port="$(free_port)"

cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/body; proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi; uwsgi_temp_path $work/uwsgi; scgi_temp_path $work/scgi;
  upstream api { server 127.0.0.1:$upstream_port; keepalive 32; }
  server {
    listen 127.0.0.1:$upstream_port;
    location / { default_type application/json; return 200 '{"ok":true}'; }
  }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer static-benchmark-secret";
    }
  }
}
CONF
nginx -c "$work/nginx.conf" -p "$work"

# shellcheck source=lib/postgres_brokers.sh
source "$root/bench/lib/postgres_brokers.sh"
with_pg=0
pg_brokers_available && with_pg=1

echo "building the broker (release)..." >&2
if ((with_pg)); then
  cargo build -q --release --locked -p latchkey-server -p latchkey-cli \
    --bin latchkey-server --bin latchkey --example broker_fixture --example bare_proxy
else
  cargo build -q --release --locked -p latchkey-server --example broker_fixture --example bare_proxy
fi
"$target_dir/release/examples/bare_proxy" --upstream "http://127.0.0.1:$upstream_port" >"$work/floor.json" &
pids+=($!)
BARE_PROXY_PER_CORE="$(nproc)" "$target_dir/release/examples/bare_proxy" \
  --upstream "http://127.0.0.1:$upstream_port" >"$work/floor-per-core.json" &
pids+=($!)
export LATCHKEY_BENCH_SECRET="bench-secret-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
# start_fixture NAME [fixture args...]: a broker with a workspace, an agent and a standing
# capability, described in $work/NAME.json; its stdin stays open until this script exits.
start_fixture() {
  local name="$1"; shift
  mkfifo "$work/$name.in"
  LATCHKEY_LOG=error "$target_dir/release/examples/broker_fixture" \
    --upstream "http://127.0.0.1:$upstream_port" --provider github --injection bearer \
    --secret-env LATCHKEY_BENCH_SECRET "$@" <"$work/$name.in" >"$work/$name.json" &
  pids+=($!)
  local fd
  exec {fd}>"$work/$name.in"
  for _ in $(seq 1 100); do [[ -s "$work/$name.json" ]] && break; sleep 0.1; done
  [[ -s "$work/$name.json" ]] || { echo "the broker fixture $name did not start" >&2; exit 1; }
}
start_fixture fixture
start_fixture fixture-per-core --serving-threads "$(nproc)"
field() { python3 -c "import json,sys; print(json.load(open('$work/${2:-fixture}.json'))['$1'])"; }
broker_url="$(field base_url)/bench"
per_core_url="$(field base_url fixture-per-core)/bench"
per_core_token="$(field agent_token fixture-per-core)"
per_core_capability="$(field capability fixture-per-core)"
for _ in $(seq 1 100); do [[ -s "$work/floor.json" ]] && break; sleep 0.1; done
floor_url="$(python3 -c "import json; print(json.load(open('$work/floor.json'))['base_url'])")/bench"
for _ in $(seq 1 100); do [[ -s "$work/floor-per-core.json" ]] && break; sleep 0.1; done
floor_pc_url="$(python3 -c "import json; print(json.load(open('$work/floor-per-core.json'))['base_url'])")/bench"
token="$(field agent_token)"
capability="$(field capability)"
metrics_url="$(field metrics_url)"

paths=(direct nginx floor floor-per-core broker-sqlite broker-per-core)
if ((with_pg)); then
  echo "starting PostgreSQL and two PostgreSQL-backed brokers..." >&2
  pg_brokers_start
  paths+=(broker-pg-1 broker-pg-2)
fi

# One warm-up request each, so connection setup is not measured.
curl -fsS "http://127.0.0.1:$upstream_port/bench" >/dev/null
curl -fsS "http://127.0.0.1:$nginx_port/bench" >/dev/null
curl -fsS "$floor_url" >/dev/null
curl -fsS "$floor_pc_url" >/dev/null
curl -fsS -H "authorization: Bearer $token" -H "latchkey-capability: $capability" "$broker_url" >/dev/null
for _ in $(seq 1 "$(nproc)"); do # each serving thread warms its upstream connection
  curl -fsS -H "authorization: Bearer $per_core_token" -H "latchkey-capability: $per_core_capability" \
    "$per_core_url" >/dev/null
done
if ((with_pg)); then
  curl -fsS -H "authorization: Bearer $pg_token" -H "latchkey-capability: $pg_capability" \
    "$pg1_url" >/dev/null
  for _ in 1 2 3 4; do # round robin: every replica warms its connections and read cache
    curl -fsS -H "authorization: Bearer $pg_token" -H "latchkey-capability: $pg_capability" \
      "$pg2_url" >/dev/null
  done
fi

# run NAME CONNECTIONS URL [wrk header args...] -> "p50_us rps"
run() {
  local name="$1" conns="$2" url="$3"; shift 3
  local threads=1; [[ "$conns" -gt 1 ]] && threads=2
  local out
  out="$(wrk -t"$threads" -c"$conns" -d"${duration}s" --latency "$@" "$url")"
  local p50 rps
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  rps="$(awk '$1=="Requests/sec:" {print $2}' <<<"$out")"
  local non2xx
  non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  [[ -z "$non2xx" ]] || { echo "$name: $non2xx non-2xx responses; the benchmark is invalid" >&2; exit 1; }
  python3 - "$p50" "$rps" <<'PY'
import sys
v, rps = sys.argv[1], float(sys.argv[2])
scale = {"us": 1, "ms": 1000, "s": 1_000_000}
unit = next(u for u in ("us", "ms", "s") if v.endswith(u))
print(f"{float(v[:-len(unit)]) * scale[unit]:.1f} {rps:.0f}")
PY
}

printf '\n%-15s %5s %12s %12s\n' path conns "p50 (us)" "req/s"
declare -A p50 rps
for conns in 1 16; do
  read -r p50["direct-$conns"] rps["direct-$conns"] < <(run direct "$conns" "http://127.0.0.1:$upstream_port/bench")
  read -r p50["nginx-$conns"] rps["nginx-$conns"] < <(run nginx "$conns" "http://127.0.0.1:$nginx_port/bench")
  read -r p50["floor-$conns"] rps["floor-$conns"] < <(run floor "$conns" "$floor_url")
  read -r p50["floor-per-core-$conns"] rps["floor-per-core-$conns"] < <(run floor-per-core "$conns" "$floor_pc_url")
  [[ "$conns" == 1 ]] && curl -fsS "$metrics_url" >"$work/metrics.before"
  read -r p50["broker-sqlite-$conns"] rps["broker-sqlite-$conns"] < <(run broker-sqlite "$conns" "$broker_url" \
    -H "authorization: Bearer $token" -H "latchkey-capability: $capability")
  [[ "$conns" == 1 ]] && curl -fsS "$metrics_url" >"$work/metrics.after"
  read -r p50["broker-per-core-$conns"] rps["broker-per-core-$conns"] < <(run broker-per-core "$conns" "$per_core_url" \
    -H "authorization: Bearer $per_core_token" -H "latchkey-capability: $per_core_capability")
  if ((with_pg)); then
    read -r p50["broker-pg-1-$conns"] rps["broker-pg-1-$conns"] < <(run broker-pg-1 "$conns" "$pg1_url" \
      -H "authorization: Bearer $pg_token" -H "latchkey-capability: $pg_capability")
    read -r p50["broker-pg-2-$conns"] rps["broker-pg-2-$conns"] < <(run broker-pg-2 "$conns" "$pg2_url" \
      -H "authorization: Bearer $pg_token" -H "latchkey-capability: $pg_capability")
  fi
  for path in "${paths[@]}"; do
    printf '%-15s %5s %12s %12s\n' "$path" "$conns" "${p50[$path-$conns]}" "${rps[$path-$conns]}"
  done
done
((with_pg)) || echo "broker-pg-1 and broker-pg-2 skipped: PostgreSQL is not installed (see above)"

# Where the SQLite broker's time went in the 1-connection run, from its own metrics (means over
# the run): the checks up to the decision, the wait for the attempt's audit record (the call is
# not made before it commits), and the upstream call; the audit transactions' own mean.
python3 - "$work/metrics.before" "$work/metrics.after" <<'PY'
import sys
def read(path):
    values = {}
    for line in open(path):
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values
before, after = read(sys.argv[1]), read(sys.argv[2])
delta = lambda name: after.get(name, 0.0) - before.get(name, 0.0)
def mean_us(sum_name, count_name):
    count = delta(count_name)
    return delta(sum_name) / count * 1e6 if count else float("nan")
parts = [
    ("checks", mean_us("latchkey_proxy_checks_seconds_sum", "latchkey_proxy_checks_seconds_count")),
    ("audit wait", mean_us("latchkey_proxy_audit_wait_seconds_sum", "latchkey_proxy_audit_wait_seconds_count")),
    ("upstream", mean_us("latchkey_proxy_upstream_seconds_sum", "latchkey_proxy_upstream_seconds_count")),
]
commit = mean_us("latchkey_audit_commit_seconds_total", "latchkey_audit_transactions_total")
print("\nbroker-sqlite at 1 connection, mean per call: "
      + ", ".join(f"{name} {value:.1f} us" for name, value in parts)
      + f"; one audit transaction {commit:.1f} us")
PY

echo
ratio_args=()
for path in "${paths[@]}"; do ratio_args+=("$path" "${p50[$path-1]}" "${rps[$path-16]}"); done
python3 - "${ratio_args[@]}" <<'PY'
import sys
args = sys.argv[1:]
rows = {args[i]: (float(args[i + 1]), float(args[i + 2])) for i in range(0, len(args), 3)}
direct = rows["direct"][0]
nginx, nginx_rps = rows["nginx"]
nginx_added = nginx - direct
brokers = [name for name in rows if name.startswith("broker")]
added = {name: rows[name][0] - direct for name in brokers + ["floor"]}
print(f"added p50 at 1 connection: nginx {nginx_added:.1f} us, "
      + ", ".join(f"{name} {added[name]:.1f} us" for name in ["floor"] + brokers))
floor_latency = added["floor"] / nginx_added if nginx_added > 0 else float("inf")
print(f"floor/nginx added latency: {floor_latency:.2f}x, throughput at 16 connections: "
      f"{rows['floor'][1] / nginx_rps:.2f}x (the HTTP libraries alone, before any of the broker's work)")
print(f"floor-per-core/nginx throughput at 16 connections: {rows['floor-per-core'][1] / nginx_rps:.2f}x "
      f"(the same, one current-thread runtime per core; floor-per-core/floor "
      f"{rows['floor-per-core'][1] / rows['floor'][1]:.2f}x)")
for name in brokers:
    latency_ratio = added[name] / nginx_added if nginx_added > 0 else float("inf")
    throughput_ratio = rows[name][1] / nginx_rps
    print(f"{name}/nginx added latency: {latency_ratio:.2f}x (target <= 2.5x) {'ok' if latency_ratio <= 2.5 else 'ABOVE TARGET'}")
    print(f"{name}/nginx throughput at 16 connections: {throughput_ratio:.2f}x (target >= 0.5x) {'ok' if throughput_ratio >= 0.5 else 'BELOW TARGET'}")
sqlite_p50, sqlite_rps = rows["broker-sqlite"]
print(f"broker-sqlite/floor: added latency {added['broker-sqlite'] / added['floor']:.2f}x, "
      f"throughput at 16 connections {sqlite_rps / rows['floor'][1]:.2f}x (the broker's own work)")
for name in brokers:
    if name != "broker-sqlite":
        print(f"{name}/broker-sqlite: p50 at 1 connection {rows[name][0] / sqlite_p50:.2f}x, "
              f"throughput at 16 connections {rows[name][1] / sqlite_rps:.2f}x")
PY
