"""Instructions per request, deterministically, with valgrind's callgrind (used because
`perf stat -e instructions` is <not supported> on these machines' virtual CPUs).

For each target the proxy runs under callgrind twice: warm-up W requests then N=0, and warm-up W
then N requests, both over the same number of keep-alive connections in lock-step rounds. The
difference of the two totals divided by N is the proxy's cost per request, free of startup,
warm-up and shutdown. nginx runs as one process (`master_process off`, one worker); the gateway
and the bare upstream run as they are (callgrind serialises their threads)."""

import os

from . import loadgen, procs, targets
from .setup import log

VALGRIND = ["valgrind", "--tool=callgrind", "--dump-instr=no", "--compress-strings=no"]
STRACE = ["strace", "-f", "-c", "-U", "calls,errors,name"]


def _total_ir(path):
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def _syscalls(path):
    """strace -c summary -> {syscall: calls}."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit() and parts[-1] != "total":
                out[parts[-1]] = int(parts[0])
    return out


def _server(ctx, name, up_port, out_file, tool="callgrind"):
    wrap = ((*VALGRIND, f"--callgrind-out-file={out_file}") if tool == "callgrind"
            else (*STRACE, "-o", out_file))
    run_dir = os.path.join(ctx.run_dir, "callgrind")
    os.makedirs(run_dir, exist_ok=True)
    if name == "nginx":
        return targets.nginx_server(run_dir, up_port, workers=0, name="cg-nginx", wrap=wrap)
    if name == "direct":
        port = procs.free_port()
        return procs.Server("cg-direct", [*wrap, ctx.upstream_bin, "--listen",
                                          f"127.0.0.1:{port}", "--threads", "2"],
                            port, os.path.join(run_dir, "cg-direct.log"))
    return targets.gateway_server(run_dir, ctx.gw_bin, up_port, name == "gw_on", ctx.secret,
                                  name=f"cg-{name}", wrap=wrap)


def measure(ctx, name, up_port, conns, count, tool="callgrind"):
    """One run under `tool`: start, warm-up, `count` requests, stop. callgrind: total
    instructions; strace: {syscall: calls}."""
    out_file = os.path.join(ctx.run_dir, "callgrind", f"{name}-c{conns}-n{count}.{tool}")
    srv = _server(ctx, name, up_port, out_file, tool)
    srv.start(timeout=120)
    try:
        st = loadgen.fixed_requests(srv.port, targets.PASS_PATH, ctx.cg_warmup, conns)
        st2 = loadgen.fixed_requests(srv.port, targets.PASS_PATH, count, conns)
    finally:
        srv.stop(timeout=120, traced=tool == "strace")
    bad = {k: v for d in (st, st2) for k, v in d.items() if k != 200}
    if bad:
        raise RuntimeError(f"{name}: non-200 answers under {tool}: {bad}")
    return _total_ir(out_file) if tool == "callgrind" else _syscalls(out_file)


def syscalls(ctx, available):
    """System calls per request (strace -f -c, N requests minus an idle run): the kernel-side
    work callgrind cannot see (callgrind counts user-space instructions only). Timing-sensitive
    calls (futex, epoll_wait) vary with how requests batch; the rest is stable."""
    up = targets.start_upstream(ctx.run_dir, ctx.upstream_bin, name="st-upstream")
    out = {"requests": ctx.cg_requests, "results": []}
    try:
        for conns in ctx.cg_conns:
            for name in ("direct", "nginx", "gw_off", "gw_on"):
                if name not in available:
                    continue
                try:
                    base = measure(ctx, name, up.port, conns, 0, "strace")
                    full = measure(ctx, name, up.port, conns, ctx.cg_requests, "strace")
                except (RuntimeError, OSError) as e:
                    out["results"].append({"target": name, "conns": conns, "error": str(e)})
                    continue
                per = {k: (v - base.get(k, 0)) / ctx.cg_requests for k, v in full.items()}
                per = {k: round(v, 3) for k, v in per.items() if v >= 0.005}
                total = sum(per.values())
                log(f"strace {name} c={conns}: {total:.2f} syscalls/request")
                out["results"].append({"target": name, "conns": conns, "per_req": per,
                                       "total_per_req": total})
    finally:
        up.stop()
    return out


def run(ctx, available):
    """available: names of pass-through targets that started in part 1."""
    up = targets.start_upstream(ctx.run_dir, ctx.upstream_bin, name="cg-upstream")
    out = {"requests": ctx.cg_requests, "warmup": ctx.cg_warmup, "results": []}
    try:
        for conns in ctx.cg_conns:
            for name in ("direct", "nginx", "gw_off", "gw_on"):
                if name not in available:
                    continue
                try:
                    base = measure(ctx, name, up.port, conns, 0)
                    full = measure(ctx, name, up.port, conns, ctx.cg_requests)
                except (RuntimeError, OSError) as e:
                    log(f"callgrind {name} c={conns} failed: {e}")
                    out["results"].append({"target": name, "conns": conns, "error": str(e)})
                    continue
                per = (full - base) / ctx.cg_requests
                log(f"callgrind {name} c={conns}: {per:,.0f} instructions/request")
                out["results"].append({"target": name, "conns": conns, "ir_idle": base,
                                       "ir_total": full, "ir_per_req": per})
    finally:
        up.stop()
    return out
