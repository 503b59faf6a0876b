"""Part 2: the gated path on SQLite and on Postgres, beside the database alone.

For each repetition, connection count and store (interleaved), against a gateway with the flag on:
  (a) first  — DELETE /workspaces/<new id>: consume attempt + new pending approval -> 202
  (b) dedup  — DELETE /workspaces/<same id>: consume attempt + the existing pending -> 202
  approve    — every approval (a) created is approved through the admin API (not timed as a path)
  (c) consume — DELETE /workspaces/<approved id>: consume + forward + record status -> 200
Then the same statements without the gateway: pgbench (prepared) for Postgres, a Python sqlite3
loop for SQLite, from bench/sql/ (see bench/sql/README.md), at the same concurrency.
"""

import os
import time

from . import dbbase, gated_http, loadgen, targets
from .setup import log

EXPECT = {"first": 202, "dedup": 202, "consume": 200}


def consume_duration(d):
    """(c) consumes what (a) created in `d` seconds (about 1k/s); it consumes at up to ~1.2k/s
    (SQLite), so two thirds of `d` stays within that pool (a run that runs out says so). Was a
    third: at 1 connection the p99 of a 2 s run rested on its 16 slowest answers."""
    return max(1, d * 2 // 3)


def _gateway_run(ctx, gw, mode, conns, prefix, duration, ids_file=None):
    env = {"BENCH_MODE": mode, "BENCH_TOKEN": ctx.gated_token, "BENCH_PREFIX": prefix}
    if ids_file:
        env["BENCH_IDS"] = ids_file
    # One connection per wrk thread, so gated.lua can time each answer (raw_us): pgbench's
    # percentiles are plain ones, wrk's own (lat_us) are corrected for coordinated omission.
    r = loadgen.wrk(f"http://127.0.0.1:{gw.port}/", conns, duration, script="gated.lua",
                    env=env, max_threads=conns)
    ok = r["statuses"].get(str(EXPECT[mode]), 0)
    r["unexpected"] = {k: v for k, v in r["statuses"].items() if k != str(EXPECT[mode])}
    r["ok"] = ok
    r["rps"] = ok / (r["duration_us"] / 1e6)
    lat, r["latency"] = (r["raw_us"], "plain") if r.get("raw_us") else (r["lat_us"], "wrk")
    r["p50_ms"], r["p99_ms"] = lat["p50"] / 1000, lat["p99"] / 1000
    r["p99_wrk_ms"] = r["lat_us"]["p99"] / 1000
    return r


def _one_store(ctx, store, gw, rep, conns, out):
    prefix = f"r{rep}c{conns}{store[0]}{int(time.time()) % 100000}"
    d = ctx.gated_duration
    runs = []
    first = _gateway_run(ctx, gw, "first", conns, prefix, d)
    pairs = first.pop("pairs")
    runs.append(("first", first))
    gated_http.delete(gw.port, f"/workspaces/{prefix}-dedup", ctx.gated_token)
    runs.append(("dedup", _gateway_run(ctx, gw, "dedup", conns, prefix, d)))
    t0 = time.monotonic()
    if gated_http.api_available(gw.admin_port, ctx.approver_token):
        approved, via = gated_http.approve_all(gw.admin_port, pairs, ctx.approver_token), "api"
    else:
        approved = gated_http.approve_cli(ctx.gw_bin, gw.config, gw.env, pairs)
        via = "cli"
    approve_s = time.monotonic() - t0
    ids_file = os.path.join(ctx.run_dir, f"ids-{prefix}.txt")
    with open(ids_file, "w") as f:
        f.write("".join(s + "\n" for s in approved))
    cons = _gateway_run(ctx, gw, "consume", conns, prefix, consume_duration(d), ids_file)
    cons["pool"] = len(approved)
    cons["approve_rate"] = len(approved) / approve_s if approve_s > 0 else None
    cons["approved_via"] = via
    runs.append(("consume", cons))
    for path, r in runs:
        r.pop("pairs", None)
        r.update({"kind": "gateway", "store": store, "path": path, "conns": conns, "rep": rep})
        if r.get("exhausted_threads"):
            r["note"] = "ran out of approved ids: rate is a lower bound"
        log(f"gated {store} {path} rep {rep} c={conns}: {r['rps']:.0f} ops/s "
            f"p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms unexpected {r['unexpected']}")
        out["runs"].append(r)


def run(ctx, notes):
    if ctx.gw_bin is None:
        notes.append(f"gated path not measured: gateway unavailable ({ctx.gw_missing})")
        return None
    ctx.gated_token, ctx.approver_token = gated_http.tokens(ctx.secret)
    out = {"runs": [], "duration_s": ctx.gated_duration, "reps": ctx.gated_reps, "notes_md": [
        f"Gateway with the flag on, wrk with `bench/wrk/gated.lua`, medians of {ctx.gated_reps} "
        f"interleaved repetitions (stores and paths alternate), {ctx.gated_duration} s per run "
        f"((c): {consume_duration(ctx.gated_duration)} s, consuming the approvals (a) created, "
        "approved in between through the admin API, or the operator CLI while the API is not "
        "routed). Database alone: the same statements "
        "(bench/sql/) via `pgbench -M prepared` at the same concurrency, and a Python sqlite3 "
        "loop on one connection as the store's pool has. Rates count only the expected answers "
        "(202 for a/b, 200 for c). Latency: wrk runs one thread per connection (32 threads at 32 "
        "connections, where pgbench runs 2; earlier runs used 2 wrk threads throughout) and "
        "`bench/wrk/gated.lua` times every answer, so p50/p99 are plain percentiles of the "
        "measured answers, as pgbench's log gives. wrk's own p99 is shown beside them: it is "
        "corrected for coordinated omission (wrk adds synthetic samples for every answer slower "
        "than the mean interval), which makes one stall weigh on the tail many times over; "
        "pgbench has no such correction.", ""]}
    up = targets.start_upstream(ctx.run_dir, ctx.upstream_bin, name="gated-upstream")
    pg_db = dbbase.create_db(ctx.pg_url, "gw")
    gws = {}
    try:
        for store, url in (("sqlite", f"sqlite://{ctx.run_dir}/gated-sqlite.db"),
                           ("postgres", f"{ctx.pg_url}/{pg_db}")):
            srv = targets.gateway_server(ctx.run_dir, ctx.gw_bin, up.port, True, ctx.secret,
                                         store_url=url, name=f"gated-{store}")
            try:
                gws[store] = srv.start(timeout=60)
            except RuntimeError as e:
                notes.append(f"gated {store}: gateway did not start: {e}")
        baselines = dbbase.Baselines(ctx, notes)
        for rep in range(ctx.gated_reps):
            for conns in ctx.gated_conns:
                for store, gw in gws.items():
                    try:
                        _one_store(ctx, store, gw, rep, conns, out)
                    except (RuntimeError, OSError) as e:
                        log(f"gated {store} c={conns} failed: {e}")
                        notes.append(f"gated {store} rep {rep} c={conns} failed: {str(e)[:300]}")
                    out["runs"] += baselines.run(store, rep, conns)
        baselines.close()
    finally:
        for srv in gws.values():
            srv.stop()
        up.stop()
        dbbase.drop_db(ctx.pg_url, pg_db)
    return out
