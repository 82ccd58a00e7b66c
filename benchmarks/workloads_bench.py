#!/usr/bin/env python3
"""Workload figures through TensorFleet, side by side with scikit-learn / PyTorch run directly, as JSON.

- forest of 200 trees on make_classification(20000, 40): 2 shards on 2 local agents vs n_jobs=2 and n_jobs=1.
- platform overhead: a ~5 s random-forest fit as a job vs the same fit called directly.
- a 12-trial TPE sweep (svm on wine) on 2 agents vs the same 12 fits run one after another in-process.
- 2-rank DDP vs 1 rank (cnn on digits, one thread per rank): samples/s as reported by the job.

Usage: python benchmarks/workloads_bench.py. mDNS stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ["TENSORFLEET_MDNS_INTERFACES"] = "127.0.0.1"

from helpers.agents import AgentProcess  # noqa: E402
from helpers.controller import ControllerProcess  # noqa: E402
from tensorfleet_desktop.client import Client  # noqa: E402

DATA = {"n_samples": 20000, "n_features": 40, "n_informative": 20, "n_classes": 2, "random_state": 42}


def job_seconds(client: Client, spec: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    t0 = time.monotonic()
    job = client.submit(spec)
    final = client.wait(job["id"], timeout=1800)
    assert final["state"] == "SUCCEEDED", final
    return time.monotonic() - t0, final


def direct_forest(n_jobs: int, trees: int) -> tuple[float, float]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    x, y = make_classification(n_redundant=0, **DATA)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=42, stratify=y)
    t0 = time.monotonic()
    model = RandomForestClassifier(n_estimators=trees, n_jobs=n_jobs, random_state=42).fit(x_train, y_train)
    return time.monotonic() - t0, float(model.score(x_test, y_test))


def direct_sweep(trials: list[dict[str, Any]]) -> float:
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    x, y = load_wine(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=42, stratify=y)
    t0 = time.monotonic()
    for params in trials:
        SVC(**params).fit(x_train, y_train).score(x_test, y_test)
    return time.monotonic() - t0


def main() -> None:
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        agents = [
            AgentProcess(tmp / f"a{i}", name=f"bench-{i}", cpu_slots=1, spare_workers=1).start() for i in range(2)
        ]
        controller = ControllerProcess(tmp / "ctl").start()
        try:
            with Client(controller.address) as client:
                while sum(a["state"] == "ONLINE" and a["paired"] for a in client.agents()) < 2:
                    time.sleep(0.1)
                forest = {
                    "algorithm": "random_forest",
                    "dataset": "make_classification",
                    "dataset_params": DATA,
                    "hyperparameters": {"n_estimators": 200},
                }
                # warm: both agents' spare workers up, the controller's merge code imported
                job_seconds(client, {**forest, "hyperparameters": {"n_estimators": 2}, "num_workers": 2})
                sharded, job = job_seconds(client, {**forest, "num_workers": 2})
                one, acc1 = direct_forest(1, 200)
                two, _ = direct_forest(2, 200)
                out["forest_200_trees"] = {
                    "tensorfleet_2_agents_s": round(sharded, 2),
                    "tensorfleet_accuracy": job["metrics"]["test_accuracy"],
                    "sklearn_n_jobs_2_s": round(two, 2),
                    "sklearn_n_jobs_1_s": round(one, 2),
                    "sklearn_accuracy": acc1,
                    "ratio_vs_n_jobs_2": round(sharded / two, 2),
                }
                trees = max(10, int(200 * 5.0 / max(one, 1e-3)))  # about 5 s of fitting on one core
                direct, _ = direct_forest(1, trees)
                as_job, _ = job_seconds(client, {**forest, "hyperparameters": {"n_estimators": trees}})
                out["overhead_of_a_5s_fit"] = {
                    "trees": trees,
                    "direct_s": round(direct, 2),
                    "job_s": round(as_job, 2),
                    "overhead_s": round(as_job - direct, 2),
                }
                sweep_s, sweep_job = job_seconds(
                    client,
                    {
                        "algorithm": "svm",
                        "dataset": "wine",
                        "sweep": {"params": {"C": "float:0.01:100:log", "kernel": "linear,rbf"}, "trials": 12},
                    },
                )
                trials = [t["params"] for t in client.job(sweep_job["id"])["task_list"]]
                trial_params = [
                    {k: v for k, v in p.items() if k in ("C", "kernel", "gamma", "random_state")} for p in trials
                ]
                sequential = direct_sweep(trial_params)
                out["sweep_12_trials"] = {
                    "tensorfleet_2_agents_s": round(sweep_s, 2),
                    "sequential_in_process_s": round(sequential, 3),
                    "best_test_accuracy": sweep_job["metrics"]["test_accuracy"],
                }
                ddp = {"algorithm": "cnn", "dataset": "digits", "hyperparameters": {"epochs": 3, "batch_size": 32}}
                _, single = job_seconds(client, ddp)
                _, double = job_seconds(client, {**ddp, "num_workers": 2})
                out["ddp_cnn_digits"] = {
                    "one_rank_samples_per_s": round(single["metrics"]["samples_per_s"]),
                    "two_ranks_samples_per_s": round(double["metrics"]["samples_per_s"]),
                }
        finally:
            controller.stop()
            for agent in agents:
                agent.stop()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
