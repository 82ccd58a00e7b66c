#!/usr/bin/env python3
"""Slurm pool figures on a real Slurm on 127.0.0.1 (munged + slurmctld + slurmd, tests/helpers/slurm.py), as JSON.

Each round starts from zero allocations, submits one `noop` job naming a pool (max_nodes 1), and measures:
- queue -> first task running: the job's created_at to its started_at, through a fresh allocation (sbatch,
  Slurm starting it, the agent starting, JoinCluster, pairing, placement, the task starting);
- of which allocation pending: squeue's submit_time -> start_time (Slurm's own, 1 s resolution);
- last task's end -> allocation released: the job's finished_at to squeue no longer listing the allocation
  (polled every 0.1 s); it includes the pool's idle timeout, reported beside it, and the time beyond it.

Usage: python benchmarks/slurm_bench.py [--rounds 3] [--idle-timeout 3]. Needs Debian's slurmctld, slurmd,
slurm-client and munge installed (not root-only). mDNS stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TENSORFLEET_MDNS_INTERFACES", "127.0.0.1")

from helpers.controller import ControllerProcess  # noqa: E402
from helpers.slurm import SlurmCluster, missing  # noqa: E402
from tensorfleet_agent._generated import controller_pb2 as cpb  # noqa: E402
from tensorfleet_agent._generated import controller_pb2_grpc as cpb_grpc  # noqa: E402


def _wait(predicate: object, timeout: float, what: str, step: float = 0.1) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise SystemExit(f"slurm_bench: timed out waiting for {what}")


def _round(slurm: SlurmCluster, stub: cpb_grpc.ControllerServiceStub, auth: list[tuple[str, str]]) -> dict[str, float]:
    _wait(lambda: slurm.jobs() == [], 60, "zero allocations before the round")
    spec = {"algorithm": "noop", "pool": "bench", "name": "bench"}
    job_id = stub.SubmitJob(cpb.SubmitJobRequest(spec_json=json.dumps(spec), submitter="bench"), metadata=auth).id
    seen: dict[str, float] = {}

    def finished() -> bool:
        for alloc in slurm.jobs():
            seen.setdefault(alloc, time.time())
        state = stub.GetJob(cpb.JobRef(job_id=job_id), metadata=auth).state
        if state in (cpb.JOB_STATE_FAILED, cpb.JOB_STATE_CANCELLED):
            raise SystemExit(f"slurm_bench: the job ended {cpb.JobState.Name(state)}")
        return state == cpb.JOB_STATE_SUCCEEDED

    _wait(finished, 120, "the job to succeed through the pool")
    job = stub.GetJob(cpb.JobRef(job_id=job_id), metadata=auth)
    (alloc,) = seen
    row = json.loads(slurm.run("squeue", "--json", "--jobs", alloc))["jobs"]
    pending = float(row[0]["start_time"] - row[0]["submit_time"]) if row else float("nan")
    _wait(lambda: alloc not in slurm.jobs(), 120, "the allocation to be released")
    released = time.time()
    return {
        "queue_to_first_task_running_s": round(job.started_at - job.created_at, 3),
        "allocation_pending_s": pending,
        "last_task_end_to_release_s": round(released - job.finished_at, 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--idle-timeout", type=float, default=3.0, help="the pool's idle timeout, seconds (default 3)")
    args = p.parse_args()
    absent = missing()
    if absent:
        print(json.dumps({"error": f"Slurm is not installed: missing {', '.join(absent)}"}))
        return 2
    with tempfile.TemporaryDirectory(prefix="slurm-bench-") as tmp:
        base = Path(tmp)
        slurm = SlurmCluster(base / "slurm").start()
        controller = ControllerProcess(base / "controller")
        controller.env = {**controller.env, **slurm.env, "TENSORFLEET_POOL_DATA_ROOT": str(base / "nodes")}
        try:
            controller.start()
            token = (controller.data_dir / "client.token").read_text().strip()
            auth = [("authorization", f"Bearer {token}")]
            with grpc.insecure_channel(controller.address) as channel:
                stub = cpb_grpc.ControllerServiceStub(channel)
                pool = cpb.Pool(name="bench", partition="debug", max_nodes=1, idle_timeout_seconds=args.idle_timeout)
                stub.AddPool(pool, metadata=auth)
                rounds = [_round(slurm, stub, auth) for _ in range(args.rounds)]
        finally:
            controller.stop()
            slurm.stop()
    summary = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(
        json.dumps(
            {
                "rounds": rounds,
                "median": summary,
                "idle_timeout_s": args.idle_timeout,
                "release_beyond_idle_timeout_s": round(summary["last_task_end_to_release_s"] - args.idle_timeout, 3),
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg()[0],
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
