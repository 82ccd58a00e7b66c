#!/usr/bin/env python3
"""Small fits through TensorFleet beside Ray and a fresh `python`, as JSON (issue 21's sweep and seed-job rows).

- sweep: a --trials (200) trial random-search sweep of `decision_tree` on iris (max_depth int:1:10,
  min_samples_split int:2:20) on 2 local agents of 1 CPU slot each, submit -> SUCCEEDED; then Ray runs the same
  fits (the parameter sets TensorFleet's trials drew, read back from the job) as one task each on num_cpus=2
  (benchmarks/ray_peer.py sweep), twice: Ray's figure is the second run, its workers warm with scikit-learn
  imported (the first run is reported beside it). Ratio = Ray seconds / TensorFleet seconds (goal >= 1). The
  test accuracy of each trial is compared with Ray's for the same parameters, so both sides did the same fits.
- seed job: the README's iris random forest (`random_forest` on `iris`, model_name iris-rf), submit -> SUCCEEDED
  on the warm cluster (median of --forest-runs; each agent first ran one, pinned to it, so that every run finds its
  agent warm wherever it lands: each agent's first scikit-learn task imports it, ~1.2 s, reported as
  forest_first_runs_s), against `python -c "import sklearn...; fit"` in a fresh process
  fitting the same forest on the same split (median wall time). Ratio = TensorFleet / fresh python (goal <= 0.5).
The cluster is warmed with one noop job first; Ray runs after the TensorFleet processes stopped, so the two
never share the CPUs. Ray is optional: RAY_PYTHON=/path/to/venv-with-ray-and-scikit-learn/bin/python.

The sweep's CPU is reported by process (controller, agent daemons, their fork servers and workers) and per trial,
and its wall time split into the fixed start (submit -> first trial running), the trials, and the fixed end (the
last trial's end -> SUCCEEDED). --profile DIR samples those processes with py-spy during the sweep.

Usage: RAY_PYTHON=... python benchmarks/sweep_bench.py [--trials 200] [--forest-runs 3] [--profile DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ["TENSORFLEET_MDNS_INTERFACES"] = "127.0.0.1"

from bench_targets import load, ratio, row  # noqa: E402
from profiling import Profiler, cpu_delta, tree_cpu  # noqa: E402

from helpers.agents import AgentProcess  # noqa: E402
from helpers.controller import ControllerProcess  # noqa: E402
from tensorfleet_desktop.client import Client  # noqa: E402

SWEEP_PARAMS = {"max_depth": "int:1:10", "min_samples_split": "int:2:20"}
FOREST = {"name": "iris-random-forest", "algorithm": "random_forest", "dataset": "iris", "model_name": "iris-rf"}
FRESH_FOREST = (
    "from sklearn.datasets import load_iris\n"
    "from sklearn.ensemble import RandomForestClassifier\n"
    "from sklearn.model_selection import train_test_split\n"
    "x, y = load_iris(return_X_y=True)\n"
    "a, b, c, d = train_test_split(x, y, test_size=0.2, random_state=42, stratify=y)\n"
    "print(RandomForestClassifier(n_estimators=100, random_state=42, n_jobs=1).fit(a, c).score(b, d))\n"
)


def tree_params(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameters as DecisionTreeClassifier takes them (the workload's own keys only)."""
    from sklearn.tree import DecisionTreeClassifier

    known = DecisionTreeClassifier().get_params()
    return {k: v for k, v in params.items() if k in known}


def timed_job(client: Client, spec: dict[str, Any], timeout: float) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    job = client.submit(spec)
    final = client.wait(job["id"], timeout=timeout)
    elapsed = time.perf_counter() - t0
    assert final["state"] == "SUCCEEDED", {k: final[k] for k in ("id", "state", "error")}
    return elapsed, final


def tensorfleet_side(trials: int, forest_runs: int, profile: Path | None = None, per_task: int = 0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tensorfleet-sweep-bench-") as tmp:
        root = Path(tmp)
        agents = [AgentProcess(root / f"a{i}", name=f"bench-{i}", cpu_slots=1, spare_workers=1) for i in range(2)]
        for agent in agents:
            agent.spawn()
        for agent in agents:
            agent.wait_ready(60)
        controller = ControllerProcess(root / "controller").start()
        try:
            with Client(controller.address, timeout=60) as client:
                while sum(a["state"] == "ONLINE" and a["paired"] for a in client.agents()) < 2:
                    time.sleep(0.1)
                timed_job(client, {"algorithm": "noop"}, 120)  # warm
                first = [  # each agent's first scikit-learn task (its fork server imports the library)
                    timed_job(client, {**FOREST, "constraints": {"on": [agent.name]}}, 300)[0] for agent in agents
                ]
                forest = [timed_job(client, FOREST, 300)[0] for _ in range(forest_runs)]
                spec = {
                    "name": "iris-tree-sweep",
                    "algorithm": "decision_tree",
                    "dataset": "iris",
                    "sweep": {"params": SWEEP_PARAMS, "search": "random", "trials": trials}
                    | ({"trials_per_task": per_task} if per_task else {}),
                }
                pids = {"controller": controller.proc.pid if controller.proc is not None else 0}
                pids.update({f"agent{i}": a.proc.pid for i, a in enumerate(agents) if a.proc is not None})
                with Profiler(profile, pids):  # py-spy attached before the sweep starts, stopped after it
                    cpu0 = {name: tree_cpu(pid) for name, pid in pids.items()}
                    sweep_s, job = timed_job(client, spec, 1800)
                cpu = {name: cpu_delta(cpu0[name], tree_cpu(pid)) for name, pid in pids.items()}
        finally:
            controller.stop()
            for agent in agents:
                agent.stop()
    tasks = sorted(job["task_list"], key=lambda t: t["index"])
    agents_cpu = sum(v["self"] for k, v in cpu.items() if k.startswith("agent"))
    workers_cpu = sum(v["children"] for k, v in cpu.items() if k.startswith("agent"))
    started = [t["started_at"] for t in tasks if t.get("started_at")]
    # a slot's time between one trial's end and its next trial's start (1 slot per agent), as the controller stamped
    # them (its clock when it ingests each): a bundle's change, or two trials' events in two batches
    gaps: list[float] = []
    for node in {t["node_id"] for t in tasks}:
        mine = sorted((t for t in tasks if t["node_id"] == node and t.get("started_at")), key=lambda t: t["started_at"])
        gaps += [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(mine)]
    ended = [t["finished_at"] for t in tasks if t.get("finished_at")]
    return {
        "forest_first_runs_s": [round(s, 3) for s in first],
        "forest_runs_s": [round(s, 3) for s in forest],
        "forest_s": round(statistics.median(forest), 3),
        "sweep_s": round(sweep_s, 3),
        "sweep_controller_cpu_s": cpu["controller"]["self"],  # the controller's user+system CPU during the sweep
        "sweep_agents_cpu_s": round(agents_cpu, 3),  # the two agent daemons' own
        "sweep_workers_cpu_s": round(workers_cpu, 3),  # their fork servers and workers (the trials' own work)
        "sweep_cpu_ms_per_trial": round(1000 * (cpu["controller"]["self"] + agents_cpu + workers_cpu) / len(tasks), 2),
        # wall: submit -> first trial started, first start -> last trial's end, last end -> job finished
        "sweep_fixed_start_s": round(min(started) - job["created_at"], 3) if started else None,
        "sweep_trials_span_s": round(max(ended) - min(started), 3) if started and ended else None,
        "sweep_fixed_end_s": round(job["finished_at"] - max(ended), 3) if ended else None,
        # the slots' time between trials as the controller saw it: the largest gaps over 5 ms, and all summed
        "sweep_slot_gaps_s": [round(g, 3) for g in sorted(gaps, reverse=True)[:8] if g > 0.005],
        "sweep_slot_idle_s": round(sum(g for g in gaps if g > 0), 3),
        "sweep_job_created_to_finished_s": round(job["finished_at"] - job["created_at"], 3),
        "sweep_trials": len(tasks),
        "sweep_trials_per_s": round(len(tasks) / sweep_s, 1),
        "trial_params": [tree_params(t["params"] or {}) for t in tasks],
        "trial_scores": [t["metrics"].get("test_accuracy") for t in tasks],
    }


def fresh_python(runs: int) -> dict[str, Any]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", FRESH_FOREST], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return {"runs_s": [round(s, 3) for s in times], "median_s": round(statistics.median(times), 3)}


def ray_sweep(trial_params: list[dict[str, Any]]) -> dict[str, Any]:
    python = os.environ.get("RAY_PYTHON")
    if not python:
        return {"skipped": "set RAY_PYTHON to an interpreter with Ray and scikit-learn installed to compare"}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(trial_params, fh)
    try:
        out = subprocess.run(
            [python, str(ROOT / "benchmarks" / "ray_peer.py"), "sweep", fh.name],
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        os.unlink(fh.name)
    if out.returncode != 0:
        return {"skipped": f"ray_peer.py sweep failed: {out.stderr[-800:]}"}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--trials", type=int, default=200, help="trials of the decision-tree sweep")
    parser.add_argument("--forest-runs", type=int, default=3, help="iris random forest jobs (and fresh fits)")
    parser.add_argument("--profile", type=Path, help="sample the sweep's processes with py-spy into this folder")
    parser.add_argument("--trials-per-task", type=int, default=0, help="the sweep's trials_per_task (0: its default)")
    args = parser.parse_args()
    load_before = load()
    ours = tensorfleet_side(args.trials, args.forest_runs, args.profile, args.trials_per_task)
    fresh = fresh_python(args.forest_runs)
    ray = ray_sweep(ours["trial_params"])
    ray_s = ray.get("sweep_s")
    if "scores" in ray:
        pairs = zip(ray.pop("scores"), ours["trial_scores"], strict=True)
        ray["same_scores_as_tensorfleet"] = sum(a == b for a, b in pairs)
    sweep_ratio = ratio(ray_s, ours["sweep_s"])
    forest_ratio = ratio(ours["forest_s"], fresh["median_s"])
    targets = [
        row(
            f"{args.trials}-trial iris decision-tree sweep on 2 local agents vs {args.trials} Ray tasks on 2 CPUs",
            "s",
            ours["sweep_s"],
            ray_s,
            goal=">= 1x (Ray s / TensorFleet s)",
            at_least=1.0,
            ratio_value=sweep_ratio,
            note="" if ray_s is not None else ray.get("skipped", ""),
        ),
        row(
            "iris random forest seed job, submit->SUCCEEDED on a warm cluster, vs a fresh `python` fitting it",
            "s",
            ours["forest_s"],
            None,
            goal="<= 0.5x (TensorFleet s / fresh python s)",
            at_most=0.5,
            ratio_value=forest_ratio,
            peer="fresh python process",
            peer_figure=fresh["median_s"],
        ),
    ]
    report = {
        "load_before": load_before,
        "load_after": load(),
        "tensorfleet": {k: v for k, v in ours.items() if k not in ("trial_params", "trial_scores")},
        "fresh_python_forest": fresh,
        "ray": ray,
        "targets": targets,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
