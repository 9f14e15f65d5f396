#!/usr/bin/env python3
"""Markdown tables from the JSON lines that bench/matrix.sh collects.

    python3 bench/summarize.py matrix|growth|jti RESULTS.jsonl

matrix: per cell (server, store, token alg, DPoP) the peak tokens/s over the concurrency sweep,
the lowest concurrency reaching 90 % of that peak and its p99, the crypto ceiling (medians
measured by segl-load on the server's CPU before and after each run) and the ratios
tokens-per-server-CPU-second / ceiling and tokens/s / ceiling at the peak, the server's RSS
(idle after start, peak VmHWM over the sweep), and Segl / peer tokens/s at the same
concurrency, alg and DPoP. Then the targets of issue 8, met or not.
"""
import json
import statistics
import sys

MIB = 1024.0


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fmt(v, spec, dash="-"):
    return dash if v is None else format(v, spec)


def cells(rows):
    """Groups the sweep rows by cell; returns {key: {"runs": {c: row}, "summary": row}}."""
    out = {}
    for r in rows:
        if r.get("summary") not in (None, "cell"):
            continue
        key = (r["server"], r["store"], r["alg"], r["dpop_mode"])
        cell = out.setdefault(key, {"runs": {}, "summary": None})
        if r.get("summary") == "cell":
            cell["summary"] = r
        else:
            cell["runs"][r["concurrency"]] = r
    return out


def analyse(cell):
    runs = cell["runs"]
    if not runs:
        return None
    peak_c = max(runs, key=lambda c: runs[c]["tokens_per_s"])
    peak = runs[peak_c]["tokens_per_s"]
    c90 = min(c for c in runs if runs[c]["tokens_per_s"] >= 0.9 * peak)
    ceilings = [r["ceiling_tokens_per_core_s"] for r in runs.values() if r.get("ceiling_tokens_per_core_s")]
    ceiling = statistics.median(ceilings) if ceilings else None
    pr = runs[peak_c]
    us = pr.get("server_cpu_us_per_token")
    s = cell["summary"] or {}
    hwm = s.get("hwm_kb") or max((r.get("server_hwm_kb") or 0) for r in runs.values())
    return {
        "peak": peak,
        "peak_c": peak_c,
        "c90": c90,
        "p99_c90": runs[c90]["p99_ms"],
        # The cell's ceiling: the median over its runs (each run measured it twice).
        "ceiling": ceiling,
        "ratio_cpu": (1e6 / us) / ceiling if ceiling and us else None,
        "ratio_wall": peak / ceiling if ceiling else None,
        "peak_row": pr,
        "idle_mib": (s.get("idle_rss_kb") or runs[peak_c].get("idle_rss_kb") or 0) / MIB,
        "hwm_mib": hwm / MIB,
        "errors": sum(r["errors"] for r in runs.values()),
    }


def matrix(rows):
    by_cell = cells(rows)
    results = {k: analyse(v) for k, v in by_cell.items()}
    print()
    print("Ceiling: the median over the cell's runs; ratios at the peak use it.")
    print()
    print("| server | store | token alg | DPoP | ceiling tok/s/core (µs: assertion + proof + sign) "
          "| peak tok/s (c) | server CPU µs/token at peak | ratio per CPU-s at peak | ratio tok/s at peak "
          "| c at 90 % | p99 ms there | RSS idle MiB | RSS peak MiB | Segl/peer at peak c | errors |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(by_cell, key=lambda k: (k[0] != "segl", k[1], k[2], k[3])):
        a = results[key]
        if a is None:
            continue
        server, store, alg, dpop = key
        r = a["peak_row"]
        parts = "-"
        costs = [min(x[f] for x in (run.get("ceiling_before"), run.get("ceiling_after")) if x)
                 for run in by_cell[key]["runs"].values()
                 for f in ("assertion_verify_us", "proof_verify_us", "token_sign_us")
                 if run.get("ceiling_before") or run.get("ceiling_after")]
        if costs:
            med = [statistics.median(costs[i::3]) for i in range(3)]
            parts = "%.0f + %.0f + %.0f" % tuple(med)
        peer_ratio = "-"
        if server == "segl":
            peer = by_cell.get(("peer", "memory", alg, dpop))
            if peer and a["peak_c"] in peer["runs"]:
                peer_ratio = "%.2f" % (a["peak"] / peer["runs"][a["peak_c"]]["tokens_per_s"])
        print("| %s | %s | %s | %s | %s (%s) | %.0f (%d) | %s | %s | %s | %d | %.2f | %.1f | %.1f | %s | %d |" % (
            "Segl" if server == "segl" else "oidc-provider " + str(r.get("peer_version", "")),
            store, alg, dpop,
            fmt(a["ceiling"], ".0f"), parts,
            a["peak"], a["peak_c"],
            fmt(r.get("server_cpu_us_per_token"), ".0f"),
            fmt(None if a["ratio_cpu"] is None else 100 * a["ratio_cpu"], ".1f") + " %",
            fmt(None if a["ratio_wall"] is None else 100 * a["ratio_wall"], ".1f") + " %",
            a["c90"], a["p99_c90"], a["idle_mib"], a["hwm_mib"], peer_ratio, a["errors"]))

    # Segl / peer at every concurrency.
    segl_keys = sorted(k for k in by_cell if k[0] == "segl")
    peer_cells = {(k[2], k[3]): v for k, v in by_cell.items() if k[0] == "peer"}
    if peer_cells:
        print()
        print("Segl tokens/s ÷ peer tokens/s at the same concurrency, token alg and DPoP:")
        print()
        concs = sorted({c for v in by_cell.values() for c in v["runs"]})
        print("| store | token alg | DPoP | " + " | ".join("c=%d" % c for c in concs) + " |")
        print("|---|---|---|" + "---:|" * len(concs))
        for k in segl_keys:
            peer = peer_cells.get((k[2], k[3]))
            if not peer:
                continue
            vals = []
            for c in concs:
                s, p = by_cell[k]["runs"].get(c), peer["runs"].get(c)
                vals.append("%.2f" % (s["tokens_per_s"] / p["tokens_per_s"]) if s and p and p["tokens_per_s"] else "-")
            print("| %s | %s | %s | %s |" % (k[1], k[2], k[3], " | ".join(vals)))

    # Full sweep, compact.
    print()
    print("Sweep (tokens/s, p99 ms, server CPU %, ratio per CPU-s) per concurrency:")
    print()
    concs = sorted({c for v in by_cell.values() for c in v["runs"]})
    print("| server | store | alg | DPoP | " + " | ".join("c=%d" % c for c in concs) + " |")
    print("|---|---|---|---|" + "---|" * len(concs))
    for key in sorted(by_cell, key=lambda k: (k[0] != "segl", k[1], k[2], k[3])):
        runs = by_cell[key]["runs"]
        vals = []
        for c in concs:
            r = runs.get(c)
            if not r:
                vals.append("-")
                continue
            vals.append("%.0f / %.1f / %s / %s" % (
                r["tokens_per_s"], r["p99_ms"],
                fmt(None if r.get("server_cpu_util") is None else 100 * r["server_cpu_util"], ".0f"),
                fmt(None if r.get("ratio_cpu") is None else 100 * r["ratio_cpu"], ".0f") + "%"))
        print("| %s | %s | %s | %s | %s |" % (key[0], key[1], key[2], key[3], " | ".join(vals)))

    # Targets.
    print()
    print("Targets (issue 8; ratios at the peak concurrency, DPoP with nonces on):")
    print()
    goals = [("sqlite", "RS256", 0.85), ("sqlite", "ES256", 0.70),
             ("postgres", "RS256", 0.80), ("postgres", "ES256", 0.55)]
    for store, alg, goal in goals:
        a = results.get(("segl", store, alg, "on"))
        if not a:
            continue
        rc, rw = a["ratio_cpu"], a["ratio_wall"]
        print("- %s, %s, DPoP: ≥ %d %% of the ceiling: per server CPU-second %s %%, in tokens/s %s %% — %s" % (
            store, alg, round(goal * 100), fmt(None if rc is None else rc * 100, ".1f"),
            fmt(None if rw is None else rw * 100, ".1f"),
            "met" if rc is not None and rc >= goal else "NOT met"))
    for key in sorted(k for k in by_cell if k[0] == "segl"):
        a = results[key]
        ok = a["p99_c90"] < 10.0
        print("- %s %s DPoP %s: p99 < 10 ms at c=%d (90 %% of peak): %.2f ms — %s; RSS idle < 40 MiB: %.1f — %s; peak < 100 MiB: %.1f — %s" % (
            key[1], key[2], key[3], a["c90"], a["p99_c90"], "met" if ok else "NOT met",
            a["idle_mib"], "met" if a["idle_mib"] < 40 else "NOT met",
            a["hwm_mib"], "met" if a["hwm_mib"] < 100 else "NOT met"))


def growth(rows):
    print("| clients | config MB | start-up s | RSS idle MiB | tokens/s | server CPU µs/token | p99 ms | RSS peak MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.get("summary") != "growth":
            continue
        if not r.get("ready"):
            print("| %d | %d | not ready after %.0f s | - | - | - | - | %.1f |" % (
                r["clients"], r["config_mb"], r["elapsed_s"], r["hwm_kb"] / MIB))
            continue
        print("| %d | %d | %.2f | %.1f | %.0f | %s | %.2f | %.1f |" % (
            r["clients"], r["config_mb"], r["startup_s"], r["idle_rss_kb"] / MIB, r["tokens_per_s"],
            fmt(r.get("server_cpu_us_per_token"), ".0f"), r["p99_ms"], r["hwm_kb"] / MIB))


def jti(rows):
    print("| jti rows at start | DB MB | tokens/s | server CPU µs/token | p99 ms | ratio per CPU-s | expired rows left | purged after s | rows at end | RSS peak MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.get("summary") != "jti":
            continue
        print("| %d | %d | %.0f | %s | %.2f | %s | %s | %s | %d | %.1f |" % (
            r["rows_before"], r["db_mb"], r["tokens_per_s"], fmt(r.get("server_cpu_us_per_token"), ".0f"),
            r["p99_ms"], fmt(None if r.get("ratio_cpu") is None else 100 * r["ratio_cpu"], ".1f") + " %",
            "-" if r["expired_left"] < 0 else r["expired_left"],
            "-" if r["purged_after_s"] < 0 else r["purged_after_s"],
            r["rows_after"], r["hwm_kb"] / MIB))


def main():
    mode, path = sys.argv[1], sys.argv[2]
    rows = load(path)
    {"matrix": matrix, "growth": growth, "jti": jti}[mode](rows)


if __name__ == "__main__":
    main()
