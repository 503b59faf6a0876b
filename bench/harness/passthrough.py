"""Part 1: pass-through GET through each target, interleaved A B C D A B C D ...

Per wrk run: requests/s, latency percentiles, proxy CPU time per request (utime+stime delta of
the proxy's process tree / requests), the upstream's CPU per request (the same work for every
target, a sanity check), and the proxy tree's peak RSS/PSS sampled during the run. Instructions
per request come from `perf stat` only where the machine supports the counter (see callgrind.py
for the deterministic fallback)."""

import os
import signal
import subprocess

from . import loadgen, procs, targets
from .setup import log


def perf_supported():
    try:
        out = subprocess.run(["perf", "stat", "-x,", "-e", "instructions", "true"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "<not supported>" not in out.stderr \
        and "<not counted>" not in out.stderr


class PerfStat:
    """`perf stat -e instructions -p PIDS` for the span of a `with` block."""

    def __init__(self, pids, out_path):
        self.pids, self.out_path, self.proc = pids, out_path, None

    def __enter__(self):
        self.proc = subprocess.Popen(
            ["perf", "stat", "-x,", "-e", "instructions", "-o", self.out_path,
             "-p", ",".join(map(str, self.pids))], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)

    def instructions(self):
        try:
            with open(self.out_path) as f:
                for line in f:
                    parts = line.split(",")
                    if len(parts) > 2 and parts[2].startswith("instructions"):
                        return int(parts[0])
        except (OSError, ValueError):
            pass
        return None


def start_targets(ctx):
    """Returns (upstream server, [Target], {name: reason} for targets that could not start)."""
    up = targets.start_upstream(ctx.run_dir, ctx.upstream_bin)
    tgs = [targets.Target("direct", targets.LABELS["direct"], up.port)]
    missing = {}
    ng = targets.nginx_server(ctx.run_dir, up.port, workers=2).start()
    tgs.append(targets.Target("nginx", targets.LABELS["nginx"], ng.port, ng))
    for name, flag in (("gw_off", False), ("gw_on", True)):
        if ctx.gw_bin is None:
            missing[name] = ctx.gw_missing
            continue
        srv = targets.gateway_server(ctx.run_dir, ctx.gw_bin, up.port, flag, ctx.secret)
        try:
            srv.start()
            tgs.append(targets.Target(name, targets.LABELS[name], srv.port, srv))
        except RuntimeError as e:
            missing[name] = str(e)
            log(f"{name} unavailable: {e}")
    return up, tgs, missing


def one_run(ctx, t, up, conns, rep):
    proxy_pids = t.server.pids() if t.server else []
    c0, u0 = procs.cpu_ticks(proxy_pids), procs.cpu_ticks(up.pids())
    perf = None
    if ctx.perf and proxy_pids:
        perf = PerfStat(proxy_pids, os.path.join(ctx.run_dir, f"perf-{t.name}-{conns}-{rep}.txt"))
        perf.__enter__()
    sampler = procs.MemSampler(t.server.proc.pid) if t.server else None
    if sampler:
        sampler.__enter__()
    try:
        r = loadgen.wrk(t.url(), conns, ctx.duration, max_threads=ctx.wrk_threads)
    finally:
        if sampler:
            sampler.__exit__(None, None, None)
        if perf:
            perf.__exit__(None, None, None)
    n = max(r["requests"], 1)
    r["proxy_cpu_us_per_req"] = ((procs.cpu_ticks(proxy_pids) - c0) / procs.CLK_TCK * 1e6 / n
                                 if proxy_pids else None)
    r["upstream_cpu_us_per_req"] = (procs.cpu_ticks(up.pids()) - u0) / procs.CLK_TCK * 1e6 / n
    if sampler:
        r.update({"peak_rss_kb": sampler.peak["rss_kb"], "peak_pss_kb": sampler.peak["pss_kb"]})
    if perf:
        ins = perf.instructions()
        r["perf_instructions_per_req"] = ins / n if ins else None
    r.update({"target": t.name, "conns": conns, "rep": rep})
    return r


def run(ctx):
    up, tgs, missing = start_targets(ctx)
    out = {"targets": {}, "unavailable": missing, "runs": [], "perf_supported": ctx.perf}
    try:
        for t in tgs:
            start = procs.mem_kb(t.server.pids()) if t.server else None
            loadgen.wrk(t.url(), 32, ctx.warmup, max_threads=ctx.wrk_threads)  # warm-up
            mem = procs.mem_kb(t.server.pids()) if t.server else None
            out["targets"][t.name] = {"label": t.label, "idle_mem_at_start": start,
                                      "idle_mem_after_warmup": mem}
        for rep in range(ctx.reps):
            for conns in ctx.conns:
                for t in tgs:
                    r = one_run(ctx, t, up, conns, rep)
                    log(f"pass rep {rep} c={conns} {t.name}: {r['rps']:.0f} req/s "
                        f"p50 {r['lat_us']['p50']}us p99 {r['lat_us']['p99']}us "
                        f"errors {r['errors']}")
                    out["runs"].append(r)
        for t in tgs:
            if t.server:
                out["targets"][t.name]["mem_at_end"] = procs.mem_kb(t.server.pids())
    finally:
        for t in tgs:
            if t.server:
                t.server.stop()
        up.stop()
    return out
