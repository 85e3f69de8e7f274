#!/usr/bin/env python3
"""Per-kernel time breakdown from an ncu CSV (gpu__time_duration.sum).

Usage: ncu --clock-control none --metrics gpu__time_duration.sum --csv \
           --print-units base PROGRAM ... > ncu.csv
       python3 scripts/ncu-breakdown.py ncu.csv [--skip N] [--per K]

Prints, per kernel name (template arguments cut), the launch count, total
and mean microseconds and the share of the total, largest first. --skip
drops the first N launches (prefill, warm-up); --per divides the totals by
K (e.g. the decode steps profiled) to give time per token. ncu runs the
kernels one at a time, so the sum is the GPU time with no overlap and no
launch gaps: a lower bound on a graph replay's step time.
"""
import csv
import sys
from collections import defaultdict


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    path, skip, per = args[0], 0, 1
    if "--skip" in args:
        skip = int(args[args.index("--skip") + 1])
    if "--per" in args:
        per = int(args[args.index("--per") + 1])
    rows = []
    with open(path, newline="") as f:
        lines = [ln for ln in f if ln.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        v = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "ns")
        ns = v * {"ns": 1, "nsecond": 1, "us": 1e3, "usecond": 1e3, "ms": 1e6, "msecond": 1e6}.get(unit, 1)
        name = r["Kernel Name"].split("(")[0].split("<")[0]
        rows.append((name, ns, r.get("Grid Size", ""), r.get("Block Size", "")))
    rows = rows[skip:]
    agg = defaultdict(lambda: [0, 0.0, set()])
    for name, ns, grid, block in rows:
        a = agg[name]
        a[0] += 1
        a[1] += ns
        a[2].add(grid)
    total = sum(a[1] for a in agg.values()) or 1.0
    print(f"{len(rows)} launches, {total / 1e3 / per:.1f} us per unit (--per {per})")
    print("| kernel | launches/unit | us/unit | mean us | share | grids |")
    print("|---|---|---|---|---|---|")
    for name, (n, ns, grids) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        g = ",".join(sorted(grids)[:3])
        print(f"| {name} | {n / per:.1f} | {ns / 1e3 / per:.1f} | {ns / 1e3 / n:.2f} | {100 * ns / total:.1f}% | {g} |")


if __name__ == "__main__":
    main()
