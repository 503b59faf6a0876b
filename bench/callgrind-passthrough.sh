#!/usr/bin/env bash
# Instructions per proxied pass-through request, gateway data plane vs nginx, in one run.
#
# Each proxy runs under `valgrind --tool=callgrind` twice: once answering LOW keep-alive GETs on
# one connection, once answering HIGH; (Ir(HIGH) - Ir(LOW)) / (HIGH - LOW) cancels start-up,
# shutdown and warm-up. The upstream is an unmeasured nginx returning ~100 bytes of JSON.
# Usage: bench/callgrind-passthrough.sh [THREADS]   (gateway threads, default 2)
# Env: LOW (200), HIGH (2200), KEEP=1 keeps the callgrind.out files in $OUT (for callgrind_annotate),
# VARIANTS="name:binary:mode ..." (default "sharded:$GW:sharded multi:$GW:multi"; mode as in
# examples/passthrough.rs) to compare builds, e.g. one built from an older commit.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-2}
LOW=${LOW:-200}
HIGH=${HIGH:-2200}
OUT=${OUT:-$(mktemp -d /tmp/cg-pass.XXXXXX)}
UP_PORT=${UP_PORT:-18180}
NGX_PORT=${NGX_PORT:-18181}
GW_PORT=${GW_PORT:-18182}
for tool in nginx valgrind python3; do
  command -v "$tool" >/dev/null || { apt-get install -y nginx valgrind python3 >/dev/null; break; }
done
GW=${GW:-target/release/examples/passthrough}
[ -x "$GW" ] || cargo build --release --example passthrough

conf() { # template port -> file
  sed -e "s#@DIR@#$OUT#g" -e "s#@PORT@#$2#g" -e "s#@UPSTREAM_PORT@#$UP_PORT#g" "$1" >"$3"
}
wait_port() { for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
client() { # port count: COUNT keep-alive GETs on one connection
  python3 - "$1" "$2" <<'PY'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    c.request("GET", "/workspaces/ws-0123456789?x=1", headers={"Accept": "application/json", "User-Agent": "cg"})
    r = c.getresponse(); r.read()
    if r.status != 200: sys.exit(f"status {r.status}")
PY
}
measure() { # name port count cmd... -> prints total Ir
  local name=$1 port=$2 n=$3; shift 3
  local f="$OUT/callgrind.$name.$n"
  valgrind --tool=callgrind --callgrind-out-file="$f" "$@" >"$OUT/$name.$n.log" 2>&1 &
  local pid=$!
  wait_port "$port"; client "$port" 1; client "$port" "$n"
  kill -TERM "$pid"; wait "$pid" || true
  grep -m1 '^totals:\|^summary:' "$f" | awk '{print $2}'
}

for p in "$UP_PORT" "$NGX_PORT" "$GW_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "port $p is busy" >&2; exit 1; fi
done
mkdir -p "$OUT"
conf bench/nginx-upstream.conf "$UP_PORT" "$OUT/up.conf"
conf bench/nginx-callgrind.conf "$NGX_PORT" "$OUT/ngx.conf"
nginx -c "$OUT/up.conf" -p "$OUT" >/dev/null 2>&1 & UP_PID=$!
trap 'kill $UP_PID 2>/dev/null || true' EXIT
wait_port "$UP_PORT"

VARIANTS=${VARIANTS:-"sharded:$GW:sharded multi:$GW:multi"}
declare -A ir
for round in "$LOW" "$HIGH"; do # interleaved: nginx, then each gateway variant, per round
  ir[nginx.$round]=$(measure nginx "$NGX_PORT" "$round" nginx -c "$OUT/ngx.conf" -p "$OUT")
  for v in $VARIANTS; do
    IFS=: read -r name bin mode <<<"$v"
    ir[$name.$round]=$(measure "$name" "$GW_PORT" "$round" "$bin" "127.0.0.1:$GW_PORT" "http://127.0.0.1:$UP_PORT" "$THREADS" "$mode")
  done
done
per() { echo $(( (ir[$1.$HIGH] - ir[$1.$LOW]) / (HIGH - LOW) )); }
NG=$(per nginx)
printf '{"requests": %d, "gateway_threads": %d, "nginx": {"ir_per_req": %d}' "$((HIGH - LOW))" "$THREADS" "$NG"
for v in $VARIANTS; do
  name=${v%%:*}; n=$(per "$name")
  printf ', "%s": {"ir_per_req": %d, "vs_nginx": %s}' "$name" "$n" "$(python3 -c "print(f'{$n/$NG:.3f}')")"
done
printf '}\n'
[ "${KEEP:-0}" = 1 ] && echo "callgrind files in $OUT" >&2 || rm -rf "$OUT"
