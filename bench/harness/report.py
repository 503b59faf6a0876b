"""docs/benchmarks.md and its PNG chart from one run's JSON."""

import os

from .stats import med, ratio, summarize_runs
from .targets import LABELS

ORDER = ["direct", "nginx", "gw_off", "gw_on"]


def _fmt(s, scale=1.0, digits=0):
    if s is None:
        return "—"
    f = f"{{:,.{digits}f}}"
    m = f.format(s["median"] * scale)
    if s["n"] > 1:
        return f"{m} ({f.format(s['min'] * scale)}–{f.format(s['max'] * scale)})"
    return m


def _r(x, digits=2):
    return "—" if x is None else f"{x:.{digits}f}×"


def passthrough_section(pt, labels):
    summ = summarize_runs(pt["runs"])
    conns_list = sorted({k[1] for k in summ})
    lines = []
    for c in conns_list:
        ng = summ.get(("nginx", c), {})
        dr = summ.get(("direct", c), {})
        lines += [f"### {c} connection{'s' if c > 1 else ''}", "",
                  "| target | req/s | p50 ms | p99 ms | proxy CPU µs/req | peak RSS MiB (PSS) "
                  "| req/s vs nginx | p99 vs nginx | CPU/req vs nginx | req/s vs direct | errors |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for t in ORDER:
            s = summ.get((t, c))
            if s is None:
                continue
            rss = _fmt(s["peak_rss_kb"], 1 / 1024, 1)
            if s["peak_pss_kb"]:
                rss += f" ({_fmt(s['peak_pss_kb'], 1 / 1024, 1).split(' ')[0]})"
            lines.append(
                f"| {labels.get(t, t)} | {_fmt(s['rps'])} | {_fmt(s['p50_ms'], 1, 2)} "
                f"| {_fmt(s['p99_ms'], 1, 2)} | {_fmt(s['proxy_cpu_us'], 1, 1)} | {rss} "
                f"| {_r(ratio(med(s['rps']), med(ng.get('rps'))))} "
                f"| {_r(ratio(med(s['p99_ms']), med(ng.get('p99_ms'))))} "
                f"| {_r(ratio(med(s['proxy_cpu_us']), med(ng.get('proxy_cpu_us'))))} "
                f"| {_r(ratio(med(s['rps']), med(dr.get('rps'))))} | {s['errors']} |")
        lines.append("")
    lines += ["Idle memory of each proxy (sum over its processes; PSS splits shared pages):", "",
              "| target | RSS MiB at start | RSS MiB after warm-up | PSS MiB after warm-up |",
              "|---|---|---|---|"]
    for t in ORDER:
        info = pt["targets"].get(t, {})
        m, s0 = info.get("idle_mem_after_warmup"), info.get("idle_mem_at_start")
        if m:
            lines.append(f"| {labels.get(t, t)} | {s0['rss_kb'] / 1024 if s0 else 0:.1f} "
                         f"| {m['rss_kb'] / 1024:.1f} | {m['pss_kb'] / 1024:.1f} |")
    lines.append("")
    return lines, summ


def callgrind_section(cg, labels):
    if not cg or not cg.get("results"):
        return ["Not measured in this run.", ""], {}
    per = {(r["target"], r["conns"]): r.get("ir_per_req") for r in cg["results"]}
    lines = [f"valgrind callgrind, {cg['requests']} requests after {cg['warmup']} warm-up, "
             "minus an idle run (same start, warm-up and connections, 0 requests). nginx runs as "
             "one process here (`master_process off`); the others as in the table above.", "",
             "| target | connections | instructions/request | vs nginx |", "|---|---|---|---|"]
    for r in cg["results"]:
        if "error" in r:
            lines.append(f"| {labels.get(r['target'], r['target'])} | {r['conns']} "
                         f"| failed: {r['error'][:80]} | — |")
            continue
        ng = per.get(("nginx", r["conns"]))
        lines.append(f"| {labels.get(r['target'], r['target'])} | {r['conns']} "
                     f"| {r['ir_per_req']:,.0f} | {_r(ratio(r['ir_per_req'], ng))} |")
    lines.append("")
    return lines, per


def syscalls_section(sc, labels):
    if not sc or not sc.get("results"):
        return ["Not measured in this run.", ""]
    lines = [f"strace -f -c, {sc['requests']} requests minus an idle run: the kernel-side work "
             "that callgrind (user space only) cannot see. futex/epoll_wait counts depend on how "
             "requests batch, and strace slows everything, so read them as indications.", "",
             "| target | connections | syscalls/request | vs nginx | breakdown |",
             "|---|---|---|---|---|"]
    tot = {(r["target"], r["conns"]): r.get("total_per_req") for r in sc["results"]}
    for r in sc["results"]:
        name = labels.get(r["target"], r["target"])
        if "error" in r:
            lines.append(f"| {name} | {r['conns']} | failed: {r['error'][:80]} | — | — |")
            continue
        top = sorted(r["per_req"].items(), key=lambda kv: -kv[1])[:6]
        lines.append(f"| {name} | {r['conns']} | {r['total_per_req']:.2f} "
                     f"| {_r(ratio(r['total_per_req'], tot.get(('nginx', r['conns']))))} "
                     f"| {', '.join(f'{k} {v:.2f}' for k, v in top)} |")
    lines.append("")
    return lines


def chart(pt_summ, gated_summ, path, labels):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conns = sorted({k[1] for k in pt_summ})
    tnames = [t for t in ORDER if any((t, c) in pt_summ for c in conns)]
    panels = [("req/s", "rps", 1), ("p99 latency (ms)", "p99_ms", 1)]
    ncols = 2 + (1 if gated_summ else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4.2))
    width = 0.8 / max(len(tnames), 1)
    for ax, (title, key, scale) in zip(axes, panels):
        for i, t in enumerate(tnames):
            xs, ys, lo, hi = [], [], [], []
            for j, c in enumerate(conns):
                s = pt_summ.get((t, c), {}).get(key)
                if s is None:
                    continue
                xs.append(j + i * width)
                ys.append(s["median"] * scale)
                lo.append((s["median"] - s["min"]) * scale)
                hi.append((s["max"] - s["median"]) * scale)
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=labels.get(t, t))
        ax.set_xticks([j + width * (len(tnames) - 1) / 2 for j in range(len(conns))])
        ax.set_xticklabels([f"{c} conn" for c in conns])
        ax.set_title(f"pass-through {title}")
    if tnames:
        axes[0].legend(fontsize=7)
    if gated_summ:
        gated_panel(axes[2], gated_summ)
    fig.suptitle("median of interleaved repetitions; whiskers = min–max", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gated_panel(ax, gs):
    keys = sorted(gs)
    names = [f"{k[0]} {k[1]} c{k[2]}" for k in keys]
    gw = [med(gs[k]["gateway"]["rps"]) or 0 for k in keys]
    db = [med(gs[k].get("db", {}).get("rps")) or 0 for k in keys]
    xs = range(len(keys))
    ax.barh([x + 0.2 for x in xs], gw, 0.4, label="gateway")
    ax.barh([x - 0.2 for x in xs], db, 0.4, label="database alone")
    ax.set_yticks(list(xs))
    ax.set_yticklabels(names, fontsize=6)
    ax.set_title("gated path ops/s")
    ax.legend(fontsize=7)


def write(result, docs_dir, png_name="benchmarks.png"):
    from . import gated_report
    labels = dict(LABELS)
    pt_lines, pt_summ = passthrough_section(result["passthrough"], labels)
    cg_lines, cg_per = callgrind_section(result.get("callgrind"), labels)
    g_lines, g_summ = gated_report.section(result.get("gated"))
    targets = gated_report.targets_table(pt_summ, cg_per, g_summ, result)
    chart(pt_summ, g_summ, os.path.join(docs_dir, png_name), labels)
    meta = result["meta"]
    lines = ["# Benchmarks", "",
             "Generated by `bench/run` (issue 5): the gateway, nginx and the bare upstream side "
             "by side in one run, targets interleaved A B C D A B C D…, medians of "
             f"{meta['reps']} repetitions with the spread (min–max) in brackets. Absolute "
             "numbers drift between runs on these shared 2-core machines; the ratios within "
             "one run are what count.", "",
             f"Run: {meta['started']} · commit `{meta['commit']}` · {meta['machine']} · "
             f"{meta['tools']} · {meta['duration_s']} s per wrk run · "
             f"wall time {meta['wall_s']:.0f} s{' · SMOKE (not a measurement)' if meta['smoke'] else ''}",
             "", f"![throughput and p99]({png_name})", "",
             "## Targets from issue 5", "", *targets, "",
             "## Pass-through GET of a 100-byte JSON body", "", *pt_lines,
             "## Instructions per request", "",
             f"`perf stat -e instructions`: {'used' if result['passthrough']['perf_supported'] else 'not supported on this machine (<not supported>), so instructions come from callgrind'}.",
             "Callgrind counts user-space instructions only (it cannot see the kernel); "
             "kernel work shows in the CPU µs/request above and the system calls below.",
             "", *cg_lines,
             "## System calls per request", "", *syscalls_section(result.get("syscalls"), labels),
             "## Gated path", "", *g_lines,
             "## Not reached / not measured", ""]
    notes = result.get("notes", [])
    for t, why in result["passthrough"].get("unavailable", {}).items():
        notes.append(f"`{t}` did not run: {why}")
    lines += [f"- {n}" for n in notes] or ["- nothing"]
    # The hand-written reading of the numbers (kept in bench/, so regenerating keeps it).
    analysis = os.path.join(os.path.dirname(os.path.dirname(__file__)), "analysis.md")
    if os.path.exists(analysis):
        with open(analysis) as f:
            lines += ["", f.read().rstrip()]
    lines += ["", "## How to run", "",
              "```", "bench/run            # full run (~30 min); writes bench/out/*.json, this file and the PNG",
              "bench/run --smoke    # < 2 min: one short repetition of each pass-through target",
              "bench/run --help     # durations, repetitions, parts, an existing gateway binary",
              "bench/run --parts pass,callgrind --gateway-bin target/release/approval-gateway",
              "bench/run --report bench/out/<time>.json   # rewrite this file from a recorded run",
              "```", ""]
    with open(os.path.join(docs_dir, "benchmarks.md"), "w") as f:
        f.write("\n".join(lines))
