"""Small HTTP helpers for the gated part: tokens, one request, approving many approvals."""

import http.client
import json
import threading
import time


def tokens(secret):
    """(gated caller token, approver token), HS256 with the run's secret, valid 6 h."""
    import jwt
    exp = int(time.time()) + 6 * 3600
    gated = jwt.encode({"sub": "bench-agent", "org_token_id": "tok-bench", "exp": exp},
                       secret, algorithm="HS256")
    approver = jwt.encode({"sub": "bench-operator", "cp_session_actor": "bench-operator",
                           "exp": exp}, secret, algorithm="HS256")
    return gated, approver


def delete(port, path, token):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("DELETE", path, headers={"Authorization": f"Bearer {token}"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def approve_cli(gw_bin, config, env, pairs, threads=4, limit=3000):
    """The operator CLI (`approvals approve ID --as NAME`), for when the admin API is absent:
    one process per approval, `threads` at a time, at most `limit` approvals."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    def one(p):
        scope, _, aid = p.partition(" ")
        r = subprocess.run([gw_bin, "approvals", "approve", aid, "--as", "bench-operator",
                            "--config", config], env=env, capture_output=True, timeout=60,
                           check=False)
        return scope if r.returncode == 0 else None

    with ThreadPoolExecutor(threads) as ex:
        done = [s for s in ex.map(one, pairs[:limit]) if s]
    if pairs and not done:
        raise RuntimeError("approving through the CLI failed")
    return done


def api_available(admin_port, token):
    """Is POST /v1/approvals/{id}/decisions routed? (404 for an unknown id has a problem body;
    a missing route answers 404 too, so probe GET /v1/approvals instead.)"""
    c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    try:
        c.request("GET", "/v1/approvals?limit=1", headers={"Authorization": f"Bearer {token}"})
        r = c.getresponse()
        r.read()
        return r.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        c.close()


def approve_all(admin_port, pairs, token, threads=4):
    """pairs: "scope approval_id" strings. Approves each; returns the scopes now approved."""
    body = json.dumps({"decision": "approve", "comment": "bench"})
    hdrs = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    done, lock = [], threading.Lock()
    errors = []

    def worker(chunk):
        c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=30)
        for p in chunk:
            scope, _, aid = p.partition(" ")
            try:
                c.request("POST", f"/v1/approvals/{aid}/decisions", body=body, headers=hdrs)
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    with lock:
                        done.append(scope)
                else:
                    errors.append(r.status)
            except (OSError, http.client.HTTPException) as e:
                errors.append(str(e))
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=30)
        c.close()

    ts = [threading.Thread(target=worker, args=(pairs[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors and not done:
        raise RuntimeError(f"approving failed: {errors[:5]}")
    return done
