"""The gated-path table and the issue-5 targets table for docs/benchmarks.md."""

from .stats import med, ratio, spread

PATHS = {"first": "(a) first call → new pending, 202",
         "dedup": "(b) retry of a pending request → same pending, 202",
         "consume": "(c) approved → consume and forward, 200"}


def summarize(gated):
    """{(store, path, conns): {"gateway": {...}, "db": {...}}} from raw gated runs."""
    out = {}
    for r in gated.get("runs", []):
        if r.get("rps") is None:
            continue
        key = (r["store"], r["path"], r["conns"])
        slot = out.setdefault(key, {}).setdefault(r["kind"], [])
        slot.append(r)
    for key, kinds in out.items():
        for kind, rs in kinds.items():
            # Percentiles from one kind only: a gateway run falls back to wrk's corrected ones
            # (latency "wrk") only when gated.lua timed nothing; such runs join no median of
            # plain ones. pgbench's (db) are plain.
            plain = [r for r in rs if kind == "db" or r.get("latency") == "plain"]
            lat = plain or rs
            kinds[kind] = {"rps": spread([r["rps"] for r in rs]),
                           "p50_ms": spread([r["p50_ms"] for r in lat]),
                           "p99_ms": spread([r["p99_ms"] for r in lat]),
                           "latency": "plain" if plain else "wrk",
                           "p99_wrk_ms": spread([r["p99_wrk_ms"] for r in rs
                                                 if r.get("p99_wrk_ms") is not None]),
                           "what": rs[0].get("what", "")}
    return {k: v for k, v in out.items() if "gateway" in v}


def _f(s, digits=0):
    if s is None:
        return "—"
    f = f"{{:,.{digits}f}}"
    if s["n"] > 1:
        return f"{f.format(s['median'])} ({f.format(s['min'])}–{f.format(s['max'])})"
    return f.format(s["median"])


def section(gated):
    if not gated:
        return ["Not measured in this run.", ""], {}
    summ = summarize(gated)
    lines = list(gated.get("notes_md", []))
    lines += ["| store | path | conns | gateway ops/s | p50 ms | p99 ms | p99 ms, wrk (CO-corrected) "
              "| database alone ops/s | db p99 ms | gateway/db rate | gateway/db p99 |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (store, path, conns), v in sorted(summ.items(), key=_order):
        g, d = v["gateway"], v.get("db", {})
        lines.append(
            f"| {store} | {PATHS.get(path, path)} | {conns} | {_f(g['rps'])} "
            f"| {_f(g['p50_ms'], 2)}{_wrk_mark(g)} | {_f(g['p99_ms'], 2)}{_wrk_mark(g)} "
            f"| {_f(g.get('p99_wrk_ms'), 2)} "
            f"| {_f(d.get('rps'))} "
            f"| {_f(d.get('p99_ms'), 2)} "
            f"| {_r(ratio(med(g['rps']), med(d.get('rps'))))} "
            f"| {_r(ratio(med(g['p99_ms']), med(d.get('p99_ms'))))} |")
    if any(v["gateway"].get("latency") == "wrk" for v in summ.values()):
        lines += ["", "† wrk's corrected percentiles: gated.lua timed no answer in these runs."]
    lines.append("")
    return lines, summ


def _wrk_mark(g):
    return " †" if g.get("latency") == "wrk" else ""


def _order(item):
    (store, path, conns), _ = item
    return (store, list(PATHS).index(path) if path in PATHS else 9, conns)


def _r(x):
    return "—" if x is None else f"{x:.2f}×"


def _verdict(value, ok):
    if value is None:
        return "not measured"
    return "**met**" if ok else "**not met**"


def _row(target, reached, value, ok):
    return f"| {target} | {reached} | {_verdict(value, ok)} |"


def targets_table(pt, cg, gs, result):
    rows = ["| target | reached (same run) | verdict |", "|---|---|---|"]
    for gw in ("gw_off", "gw_on"):
        for c in sorted({k[1] for k in cg}):
            x = ratio(cg.get((gw, c)), cg.get(("nginx", c)))
            rows.append(_row(f"{gw}: instructions/request ≤ 1.0× nginx ({c} conn)",
                             _r(x), x, x is not None and x <= 1.0))
        x = ratio(med(pt.get((gw, 32), {}).get("rps")), med(pt.get(("nginx", 32), {}).get("rps")))
        rows.append(_row(f"{gw}: req/s at 32 conns ≥ 1.0× nginx", _r(x), x,
                         x is not None and x >= 1.0))
        for c in (1, 32):
            x = ratio(med(pt.get((gw, c), {}).get("p99_ms")),
                      med(pt.get(("nginx", c), {}).get("p99_ms")))
            rows.append(_row(f"{gw}: p99 ≤ nginx's ({c} conn)", _r(x), x,
                             x is not None and x <= 1.0))
    for c in sorted({k[1] for k in cg}):
        x = ratio(cg.get(("gw_on", c)), cg.get(("gw_off", c)))
        rows.append(_row(f"flag on, not matched: instructions within 5% of flag off ({c} conn)",
                         _r(x), x, x is not None and x <= 1.05))
    x = ratio(med(pt.get(("gw_off", 32), {}).get("rps")), med(pt.get(("gw_on", 32), {}).get("rps")))
    rows.append(_row("flag on, not matched: req/s at 32 conns within 5% of flag off "
                     "(off/on)", _r(x), x, x is not None and x <= 1.05))
    rows += _gated_rows(gs)
    rows += _rss_rows(result)
    return rows


def _gated_rows(gs):
    rows = []
    for path, floor in (("dedup", 0.7), ("consume", 0.5)):
        for c in sorted({k[2] for k in gs if k[0] == "postgres" and k[1] == path}) or [32]:
            v = gs.get(("postgres", path, c), {})
            x = ratio(med(v.get("gateway", {}).get("rps")), med(v.get("db", {}).get("rps")))
            rows.append(_row(f"Postgres {path}: rate ≥ {floor}× pgbench prepared ({c} conn)",
                             _r(x), x, x is not None and x >= floor))
    for path in ("first", "dedup", "consume"):
        for c in (1, 4):
            v = gs.get(("postgres", path, c), {})
            g = v.get("gateway", {})
            # Plain percentiles of the timed answers, as pgbench's (since 2026-12-02; earlier
            # runs judged wrk's coordinated-omission-corrected p99); wrk's are not judged.
            p = med(g.get("p99_ms")) if g.get("latency") == "plain" else None
            rows.append(_row(f"Postgres {path}: p99 (plain) ≤ 5 ms at {c} conn",
                             "—" if p is None else f"{p:.2f} ms", p, p is not None and p <= 5))
        v = gs.get(("postgres", path, 32), {})
        g = v.get("gateway", {})
        x = ratio(med(g.get("p99_ms")) if g.get("latency") == "plain" else None,
                  med(v.get("db", {}).get("p99_ms")))
        rows.append(_row(f"Postgres {path}: p99 (plain) ≤ 1.5× pgbench p99 at 32 conns", _r(x), x,
                         x is not None and x <= 1.5))
    return rows


def _rss_rows(result):
    rows = []
    pt = result["passthrough"]
    for gw in ("gw_off", "gw_on"):
        idle = pt["targets"].get(gw, {}).get("idle_mem_after_warmup")
        v = None if idle is None else idle["rss_kb"] / 1024
        rows.append(_row(f"{gw}: idle RSS ≤ 20 MiB", "—" if v is None else f"{v:.1f} MiB",
                         v, v is not None and v <= 20))
        peaks = [r.get("peak_rss_kb") for r in pt["runs"]
                 if r["target"] == gw and r["conns"] == 32 and r.get("peak_rss_kb")]
        v = max(peaks) / 1024 if peaks else None
        rows.append(_row(f"{gw}: RSS under 32-conn load ≤ 50 MiB (max over runs)",
                         "—" if v is None else f"{v:.1f} MiB", v, v is not None and v <= 50))
    return rows
