#!/usr/bin/env python3
"""Issue 21's Targets table in one run: each benchmark that measures a row, one after another (never two at
once, so they do not compete for the CPUs), then one JSON document whose `targets` lists every row in the
issue's order: measure, tensorfleet figure, ray figure (or null), ratio, goal, met. Each script's own report
is kept under `runs`, with the load before and after it.

- benchmarks/sweep_bench.py: the 200-trial iris decision-tree sweep vs Ray; the iris random forest seed job vs
  a fresh `python`;
- benchmarks/cluster_bench.py: noop dispatch async vs Ray, sync p50, cold start vs Ray, idle PSS by process;
- benchmarks/scale_sim.py: 10,000 queued jobs on 200 simulated agents (state changes/s, ListJobs page over gRPC
  and HTTP, controller RSS).
Ray is optional (RAY_PYTHON=/path/to/venv-with-ray-and-scikit-learn/bin/python); without it the Ray figures are
null and each row says Ray was skipped. --quick shrinks every size (a smoke run, not the issue's figures).

Usage: RAY_PYTHON=... python benchmarks/targets.py [--quick] [--only sweep,cluster,scale] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_targets import load

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "sweep": ("sweep_bench.py", [], ["--trials", "40", "--forest-runs", "2"]),
    "cluster": ("cluster_bench.py", ["--jobs", "300", "--sequential", "100"], ["--jobs", "60", "--sequential", "20"]),
    "scale": ("scale_sim.py", [], ["--jobs", "1000", "--agents", "40"]),
}
# The order: sweep, dispatch, sync p50, seed job, cold start, idle PSS, then the scale simulation.
ORDER = ("decision-tree sweep", "no-op job dispatch", "sync submit", "random forest", "cold start", "idle PSS")


def run_one(name: str, quick: bool, timeout: float) -> dict[str, Any]:
    script, full, small = SCRIPTS[name]
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(HERE / script), *(small if quick else full)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        return {"failed": f"{script} exited {out.returncode}: {out.stderr[-2000:]}", "wall_s": time.monotonic() - t0}
    report = dict(json.loads(out.stdout))
    report["wall_s"] = round(time.monotonic() - t0, 1)
    return report


def order(row: dict[str, Any]) -> int:
    return next((i for i, key in enumerate(ORDER) if key in row["measure"]), len(ORDER))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every script")
    parser.add_argument("--only", default="sweep,cluster,scale", help="which scripts, comma-separated")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per script")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)} (known: {', '.join(SCRIPTS)})")
    load_before = load()
    runs = {name: run_one(name, args.quick, args.timeout) for name in names}
    rows = sorted((row for report in runs.values() for row in report.get("targets", [])), key=order)
    failed = {name: report["failed"] for name, report in runs.items() if "failed" in report}
    document = {
        "quick": args.quick,
        "load_before": load_before,
        "load_after": load(),
        "targets": rows,
        "met": sum(bool(r["met"]) for r in rows),
        "rows": len(rows),
        **({"failed": failed} if failed else {}),
        "runs": runs,
    }
    text = json.dumps(document, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
