#!/usr/bin/env bash
# Real-browser test of the approver web inbox (issue 3): builds and starts the gateway with the
# gate on, a throwaway SQLite store and a trivial upstream, mints an approver token and a gated
# token, then drives headless Debian chromium through sign-in -> live pending approval -> approve
# -> forwarded retry (tests/browser/inbox.test.js), then the inbox signed in by a session cookie
# that a fake control plane recognises (the `http` token source, issue 16). Screenshot:
# target/browser/inbox.png.
#
# Installs what is missing (chromium via apt, playwright-core via npm ci). Everything binds
# 127.0.0.1 on free ports, every wait is bounded, and every process started here is stopped on
# exit. Usage: bash tests/browser/run.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tests/browser"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
SCREENSHOT=${SCREENSHOT:-$ROOT/target/browser/inbox.png}
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/approval-gateway"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/inbox-browser.XXXXXX")
PIDS=()
cleanup() {
  local rc=$?
  [ -f "$WORK/gateway.pid" ] && PIDS+=("$(cat "$WORK/gateway.pid")")
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do # the gateway may not be our child (restarted): poll, bounded
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    for log in "$WORK"/*.log; do
      [ -f "$log" ] && { echo "--- $(basename "$log") (last 40 lines)"; tail -n 40 "$log"; }
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[browser] $*"; }

# --- dependencies -------------------------------------------------------------------------------
if [ ! -x "$CHROMIUM" ]; then
  log "installing chromium (apt)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if [ ! -f "$HERE/node_modules/playwright-core/package.json" ]; then
  log "installing playwright-core (npm ci)"
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
fi

log "building the gateway"
(cd "$ROOT" && cargo build --quiet --bin approval-gateway)

# --- ports, secret, tokens ----------------------------------------------------------------------
# Four free ports at once (all bound together, so they are distinct).
read -r PROXY_PORT ADMIN_PORT UPSTREAM_PORT CP_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
ADMIN_URL="http://127.0.0.1:$ADMIN_PORT"
PROXY_URL="http://127.0.0.1:$PROXY_PORT"

GATEWAY_JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export GATEWAY_JWT_SECRET

# HS256 by hand (stdlib only): header.payload.signature, iat/exp added.
mint() {
  python3 - "$1" <<'PY'
import base64, hashlib, hmac, json, os, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
claims = json.loads(sys.argv[1])
now = int(time.time())
claims.setdefault("iat", now)
claims.setdefault("exp", now + 900)
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps(claims).encode())
key = os.environ["GATEWAY_JWT_SECRET"].encode()
sig = b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
PY
}
APPROVER_NAME="alice@example.com"
APPROVER_TOKEN=$(mint "{\"sub\":\"$APPROVER_NAME\",\"cp_session_actor\":\"$APPROVER_NAME\"}")
GATED_TOKEN=$(mint '{"sub":"agent-7","org_token_id":"tok-agent-7"}')

# --- upstream: answers every method with 200 and echoes what it got -----------------------------
cat >"$WORK/upstream.py" <<'PY'
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"method": self.command, "path": self.path,
                           "approval_id": self.headers.get("Approval-Id")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer
    def log_message(self, fmt, *args):
        sys.stderr.write("upstream: " + (fmt % args) + "\n")

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
PY
python3 "$WORK/upstream.py" "$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)

# --- fake control plane: the session check of the cookie-session token source -----------------
# Cookie `session=$SESSION_COOKIE` -> 200 a member (user $SESSION_USER); anything else -> 401.
SESSION_COOKIE=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
SESSION_USER="bob@example.com"
cat >"$WORK/cp.py" <<'PY'
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COOKIE, USER = sys.argv[2], sys.argv[3]

class Cp(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        member = self.path.startswith("/cp/auth/tenant-member") \
            and self.headers.get("Cookie") == f"session={COOKIE}"
        body = json.dumps({"member": True, "user_id": USER} if member else {"member": False}).encode()
        self.send_response(200 if member else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        sys.stderr.write("cp: " + (fmt % args) + "\n")

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Cp).serve_forever()
PY
python3 "$WORK/cp.py" "$CP_PORT" "$SESSION_COOKIE" "$SESSION_USER" >"$WORK/cp.log" 2>&1 &
PIDS+=($!)

# --- gateway config: the shipped callers, a cookie session, two of the Molecule routes ---------
cat >"$WORK/gateway.toml" <<TOML
[listen]
proxy = "127.0.0.1:$PROXY_PORT"
admin = "127.0.0.1:$ADMIN_PORT"

[upstream]
url = "http://127.0.0.1:$UPSTREAM_PORT"
connect_timeout = "2s"
request_timeout = "10s"

[store]
url = "sqlite://$WORK/approvals.db"

[gate]
pending_ttl = "24h"
approval_ttl = "1h"
max_body_bytes = 1048576
retry_after = "5s"
public_admin_url = "$ADMIN_URL"
approvals_required = 1

[jwt]
algorithms = ["HS256"]
hs_secret_env = "GATEWAY_JWT_SECRET"
leeway = "30s"
subject_claim = "sub"

# The control plane's cookie session (as in config/molecule.toml, against the fake above).
[[token_sources]]
name = "cp-session"
kind = "http"
url = "http://127.0.0.1:$CP_PORT/cp/auth/tenant-member?slug=acme"
forward_headers = ["Cookie"]
timeout = "2s"
cache_ttl = "30s"
negative_cache_ttl = "5s"
when = { claim = "member", equals = true }
subject_field = "user_id"
claims = { cp_session = true }

[[callers]]
name = "platform-agent"
when = { claim = "org_token_id", present = true }
gated = true

[[callers]]
name = "operator"
when = { claim = "cp_session_actor", present = true }
approver = true

[[callers]]
name = "cp-session"
when = { claim = "cp_session", equals = true }
approver = true

[[routes]]
action = "delete_workspace"
method = "DELETE"
path = "/workspaces/{id}"
scope = "{path.id}"
reason = "delete workspace {path.id}"
context = { workspace_id = "{path.id}" }

[[routes]]
action = "secret_delete"
method = "DELETE"
path = "/workspaces/{id}/secrets/{key}"
scope = "{path.id}"
reason = "delete secret {path.key}"
context = { workspace_id = "{path.id}", key = "{path.key}" }
TOML

# (Re)start the gateway: a script, because the browser test restarts it too (to prove the inbox's
# event stream reconnects). The pid lives in a file so cleanup stops whichever process is current.
cat >"$WORK/gateway.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
if [ -f "$WORK/gateway.pid" ]; then
  old=\$(cat "$WORK/gateway.pid")
  kill "\$old" 2>/dev/null || true
  for _ in \$(seq 100); do kill -0 "\$old" 2>/dev/null || break; sleep 0.1; done
  kill -9 "\$old" 2>/dev/null || true
fi
# Env overrides would beat the file: make sure none leaks in from the caller's environment.
env -u GATEWAY_LISTEN -u GATEWAY_ADMIN_LISTEN -u GATEWAY_UPSTREAM -u DATABASE_URL -u GATEWAY_CONFIG \\
  MOLECULE_PLATFORM_APPROVAL_GATE=1 RUST_LOG="\${RUST_LOG:-info}" \\
  "$BIN" serve --config "$WORK/gateway.toml" </dev/null >>"$WORK/gateway.log" 2>&1 &
pid=\$!
echo "\$pid" >"$WORK/gateway.pid"
for _ in \$(seq 150); do
  curl --noproxy '*' -fsS -o /dev/null --max-time 2 "$ADMIN_URL/readyz" 2>/dev/null && exit 0
  kill -0 "\$pid" 2>/dev/null || { echo "the gateway exited early" >&2; exit 1; }
  sleep 0.2
done
echo "the gateway was not ready after 30s" >&2
exit 1
SH
chmod +x "$WORK/gateway.sh"

log "starting the gateway (proxy :$PROXY_PORT, admin :$ADMIN_PORT, upstream :$UPSTREAM_PORT)"
"$WORK/gateway.sh"

wait_ready() { # url, what
  local deadline=$((SECONDS + 30))
  until curl --noproxy '*' -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { log "$2 not ready after 30s"; return 1; }
    sleep 0.2
  done
}
wait_ready "http://127.0.0.1:$UPSTREAM_PORT/" "upstream"
deadline=$((SECONDS + 30)) # the control plane answers 401 without a cookie: any answer will do
until curl --noproxy '*' -sS -o /dev/null --max-time 2 "http://127.0.0.1:$CP_PORT/" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || { log "control plane not ready after 30s"; exit 1; }
  sleep 0.2
done
code=$(curl --noproxy '*' -sS -o /dev/null -w '%{http_code}' --max-time 5 \
  -H "Cookie: session=$SESSION_COOKIE" "$ADMIN_URL/v1/approvals?status=pending")
[ "$code" = 200 ] || { log "the session cookie should be recognised, got $code"; exit 1; }

# --- sanity through the proxy with curl, then the browser ---------------------------------------
code=$(curl --noproxy '*' -sS -o /dev/null -w '%{http_code}' --max-time 5 \
  -H "Authorization: Bearer $GATED_TOKEN" "$PROXY_URL/workspaces/ws-browser-0")
[ "$code" = 200 ] || { log "a non-destructive GET should pass through, got $code"; exit 1; }

log "running the browser test"
ADMIN_URL="$ADMIN_URL" PROXY_URL="$PROXY_URL" APPROVER_TOKEN="$APPROVER_TOKEN" \
  APPROVER_NAME="$APPROVER_NAME" GATED_TOKEN="$GATED_TOKEN" SCREENSHOT="$SCREENSHOT" \
  SESSION_COOKIE="$SESSION_COOKIE" SESSION_USER="$SESSION_USER" \
  CHROMIUM="$CHROMIUM" RESTART_GATEWAY="$WORK/gateway.sh" timeout 180 node "$HERE/inbox.test.js"
log "ok; screenshot at ${SCREENSHOT#"$ROOT"/}"
