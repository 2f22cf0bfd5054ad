#!/usr/bin/env bash
# Proxy overhead benchmark: one run on loopback, three paths to the same upstream.
#
#   direct  wrk -> upstream (nginx returning a static JSON body)
#   nginx   wrk -> nginx injecting a static Authorization header -> upstream
#   broker  wrk -> latchkey-server with a standing capability -> upstream
#
# Each is loaded with wrk at 1 and 16 connections. Printed: p50 latency and requests/s per path,
# the latency each proxy adds over direct, and the broker/nginx ratios against the targets:
# broker-added p50 <= 2.5x nginx-added p50, broker throughput >= 0.5x nginx's.
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
  [[ -f "$work/nginx.pid" ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

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

echo "building the broker (release)..." >&2
cargo build -q --release --locked -p latchkey-server --example broker_fixture
export LATCHKEY_BENCH_SECRET="bench-secret-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
mkfifo "$work/fixture.in"
LATCHKEY_LOG=error target/release/examples/broker_fixture \
  --upstream "http://127.0.0.1:$upstream_port" --provider github --injection bearer \
  --secret-env LATCHKEY_BENCH_SECRET <"$work/fixture.in" >"$work/fixture.json" &
pids+=($!)
exec 3>"$work/fixture.in" # keeps the fixture's stdin open until this script exits
for _ in $(seq 1 100); do [[ -s "$work/fixture.json" ]] && break; sleep 0.1; done
[[ -s "$work/fixture.json" ]] || { echo "the broker fixture did not start" >&2; exit 1; }
field() { python3 -c "import json,sys; print(json.load(open('$work/fixture.json'))['$1'])"; }
broker_url="$(field base_url)/bench"
token="$(field agent_token)"
capability="$(field capability)"

# One warm-up request each, so connection setup is not measured.
curl -fsS "http://127.0.0.1:$upstream_port/bench" >/dev/null
curl -fsS "http://127.0.0.1:$nginx_port/bench" >/dev/null
curl -fsS -H "authorization: Bearer $token" -H "latchkey-capability: $capability" "$broker_url" >/dev/null

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

printf '\n%-8s %5s %12s %12s\n' path conns "p50 (us)" "req/s"
declare -A p50 rps
for conns in 1 16; do
  read -r p50["direct-$conns"] rps["direct-$conns"] < <(run direct "$conns" "http://127.0.0.1:$upstream_port/bench")
  read -r p50["nginx-$conns"] rps["nginx-$conns"] < <(run nginx "$conns" "http://127.0.0.1:$nginx_port/bench")
  read -r p50["broker-$conns"] rps["broker-$conns"] < <(run broker "$conns" "$broker_url" \
    -H "authorization: Bearer $token" -H "latchkey-capability: $capability")
  for path in direct nginx broker; do
    printf '%-8s %5s %12s %12s\n' "$path" "$conns" "${p50[$path-$conns]}" "${rps[$path-$conns]}"
  done
done

echo
python3 - "${p50[direct-1]}" "${p50[nginx-1]}" "${p50[broker-1]}" "${rps[nginx-16]}" "${rps[broker-16]}" <<'PY'
import sys
direct, nginx, broker, nginx_rps, broker_rps = map(float, sys.argv[1:])
nginx_added, broker_added = nginx - direct, broker - direct
latency_ratio = broker_added / nginx_added if nginx_added > 0 else float("inf")
throughput_ratio = broker_rps / nginx_rps
print(f"added p50 at 1 connection: nginx {nginx_added:.1f} us, broker {broker_added:.1f} us")
print(f"broker/nginx added latency: {latency_ratio:.2f}x (target <= 2.5x) {'ok' if latency_ratio <= 2.5 else 'ABOVE TARGET'}")
print(f"broker/nginx throughput at 16 connections: {throughput_ratio:.2f}x (target >= 0.5x) {'ok' if throughput_ratio >= 0.5 else 'BELOW TARGET'}")
PY
