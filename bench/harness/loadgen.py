"""Load generators: wrk (time-bounded, with a Lua reporter) and a raw keep-alive client
(count-bounded, deterministic, for callgrind)."""

import json
import os
import socket
import subprocess

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRK_DIR = os.path.join(HERE, "wrk")


def wrk_threads(conns, max_threads):
    return max(1, min(conns, max_threads))


def wrk(url, conns, duration, script="report.lua", env=None, max_threads=2, timeout_s=10):
    """Run wrk for `duration` seconds; returns the parsed BENCH_JSON dict plus `rps`."""
    threads = wrk_threads(conns, max_threads)
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s",
           "--timeout", f"{timeout_s}s", "--latency", "-s", os.path.join(WRK_DIR, script), url]
    run_env = dict(os.environ, BENCH_THREADS=str(threads), BENCH_CONNS=str(conns), **(env or {}))
    out = subprocess.run(cmd, capture_output=True, text=True, env=run_env,
                         timeout=duration + timeout_s + 30, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            res = json.loads(line[len("BENCH_JSON "):])
            res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
            res["wrk_threads"] = threads
            return res
    raise RuntimeError(f"wrk gave no result (rc {out.returncode}): {out.stderr[-500:]}")


def _read_response(sock, buf):
    """Read one HTTP/1.1 response with Content-Length; returns (status, leftover buffer)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before headers")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for h in lines[1:]:
        k, _, v = h.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return status, rest[length:]


def fixed_requests(port, path, count, conns=1, timeout=120):
    """Send exactly `count` GETs over `conns` keep-alive connections, in lock-step rounds
    (one request on every connection, then every response), so each run of the same count
    does the same work. Returns the status counts."""
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: bench\r\n\r\n".encode()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=timeout) for _ in range(conns)]
    bufs = [b""] * conns
    statuses = {}
    sent = 0
    try:
        while sent < count:
            batch = min(conns, count - sent)
            for s in socks[:batch]:
                s.sendall(req)
            for i in range(batch):
                st, bufs[i] = _read_response(socks[i], bufs[i])
                statuses[st] = statuses.get(st, 0) + 1
            sent += batch
    finally:
        for s in socks:
            s.close()
    return statuses
