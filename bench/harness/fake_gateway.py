#!/usr/bin/env python3
"""A stand-in for approval-gateway that speaks just enough of its HTTP contract (SPEC §6, §7)
to exercise bench/run end to end before the real gateway exists. NOT a benchmark target:
`bench/run --gateway-bin bench/harness/fake_gateway.py` checks the harness's plumbing only.

`serve --config PATH` (reads [listen] and [upstream]); `migrate --config PATH` does nothing.
Gated: DELETE /workspaces/{id} with a bearer -> 202 pending (deduplicated per id), or, once
approved through POST /v1/approvals/{id}/decisions on the admin port, forwarded once (200)."""

import http.client
import json
import sys
import threading
import tomllib
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
PENDING, APPROVED, BY_ID = {}, set(), {}


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None

    def log_message(self, *a):
        pass

    def _send(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self):
        c = http.client.HTTPConnection(*self.upstream)
        c.request(self.command, self.path)
        r = c.getresponse()
        body = r.read()
        c.close()
        self._send(r.status, body)

    def do_GET(self):
        self._forward()

    def do_DELETE(self):
        scope = self.path.rsplit("/", 1)[-1]
        if "authorization" not in {k.lower() for k in self.headers}:
            return self._forward()
        with LOCK:
            if scope in APPROVED:
                APPROVED.discard(scope)
                consumed = True
            else:
                consumed = False
                aid = PENDING.setdefault(scope, str(uuid.uuid4()))
                BY_ID[aid] = scope
        if consumed:
            return self._forward()
        self._send(202, json.dumps({"status": "pending_approval", "approval_id": aid,
                                    "scope": scope}).encode())


class Admin(Proxy):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        aid = self.path.split("/")[3]
        with LOCK:
            scope = BY_ID.get(aid)
            if scope is None or PENDING.get(scope) != aid:
                return self._send(409, b"{}")
            del PENDING[scope]
            APPROVED.add(scope)
        self._send(200, json.dumps({"id": aid, "status": "approved"}).encode())


def main():
    args = sys.argv[1:]
    conf = tomllib.load(open(args[args.index("--config") + 1], "rb"))
    if args[0] != "serve":
        return
    host, port = conf["upstream"]["url"].split("//")[1].rsplit(":", 1)
    Proxy.upstream = (host, int(port))
    for cls, key in ((Admin, "admin"), (Proxy, "proxy")):
        h, p = conf["listen"][key].rsplit(":", 1)
        srv = ThreadingHTTPServer((h, int(p)), cls)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
