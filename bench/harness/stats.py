"""Medians and spread of repeated runs."""

import statistics


def spread(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def summarize_runs(runs, key_fields=("target", "conns")):
    """Group wrk run dicts and reduce each metric to median/min/max."""
    groups = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in key_fields), []).append(r)
    out = {}
    for key, rs in groups.items():
        out[key] = {
            "rps": spread([r["rps"] for r in rs]),
            "p50_ms": spread([r["lat_us"]["p50"] / 1000 for r in rs]),
            "p99_ms": spread([r["lat_us"]["p99"] / 1000 for r in rs]),
            "errors": sum(sum(r["errors"].values()) for r in rs),
            "proxy_cpu_us": spread([r.get("proxy_cpu_us_per_req") for r in rs]),
            "upstream_cpu_us": spread([r.get("upstream_cpu_us_per_req") for r in rs]),
            "peak_rss_kb": spread([r.get("peak_rss_kb") for r in rs]),
            "peak_pss_kb": spread([r.get("peak_pss_kb") for r in rs]),
            "perf_ins": spread([r.get("perf_instructions_per_req") for r in rs]),
        }
    return out


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def med(s):
    return None if s is None else s["median"]
