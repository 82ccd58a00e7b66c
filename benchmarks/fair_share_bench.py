#!/usr/bin/env python3
"""Fair share and quotas (issue 24): what one scheduling pass costs as the queue grows, as JSON.

The pass as placement.py runs it, without the core around it: the queue's per-user FIFO queues merged by the users'
fair-share keys (fair_share.FairQueue), the quota gate (quotas.Gate) and scheduler.plan reading the requests lazily,
placing --free tasks. Reported per queue length: the pass's median time (it should not grow with the queue), and
the worst case for a `queued` quota: the user with the least usage has half the queue and may queue 10; a pass reads
at most quotas.HELD_WALK of their held jobs (each gets its reason), so this should not grow either. And the pass
on a full cluster with one GPU shared by memory with room left (the queue's last job shares it): plan() reads on
from the sharing jobs' own queue (placement.py's `sharing`), so it reads what it places, not the queue; the walk it
did before (every request read) is reported beside it.

Usage: python benchmarks/fair_share_bench.py [--users 5] [--free 20] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tensorfleet_desktop.controller.fair_share import FairQueue, Holdings, UsageBook
from tensorfleet_desktop.controller.quotas import Gate, Quota
from tensorfleet_desktop.controller.scheduler import Capacity, GpuRoom, Request, plan

WL = frozenset({"noop"})
GIB = 1 << 30


def one_pass(queue: FairQueue, users: dict[str, str], quotas: dict[str, Quota], free: int, book: UsageBook) -> float:
    gate = Gate(quotas, Holdings(), lambda u: book.value(u, 0.0), book.half_life)
    held: dict[str, str] = {}

    def requests() -> Any:
        for job_id in queue.order(gate.key, gate.cut):
            user = users[job_id]
            reason = gate.queued_job(user)
            if reason:
                held[job_id] = reason
                continue
            yield Request(job_id=job_id, priority=0, seq_no=0, ranks=(0,), workload="noop", user=user)

    caps = [Capacity(node_id=f"n{i}", name=f"n{i}", free_slots=1, workloads=WL) for i in range(free)]
    started = time.perf_counter()
    placed = plan(requests(), caps, 0.0, 300.0, ordered=True, gate=gate, held=held)
    elapsed = time.perf_counter() - started
    assert len(placed) == free, len(placed)
    return elapsed


def shared_pass(queue: FairQueue, sharing: FairQueue, users: dict[str, str], indexed: bool) -> tuple[float, int]:
    """A pass with no free slot and one GPU shared with 4 GiB left: (its time, the requests it read)."""
    book = UsageBook()
    gate = Gate({}, Holdings(), lambda u: book.value(u, 0.0), book.half_life)
    read = [0]

    def build(job_id: str) -> Request:
        read[0] += 1
        shares = job_id in sharing
        return Request(
            job_id=job_id, priority=0, seq_no=0, ranks=(0,), workload="noop", user=users[job_id], gpus=1,
            gpu_memory=2 * GIB if shares else 0,
        )  # fmt: skip

    caps = [Capacity("g", "g", free_slots=0, workloads=WL, gpus=(GpuRoom(0, 16 * GIB, 4 * GIB, whole=False),))]
    started = time.perf_counter()
    placed = plan(
        (build(j) for j in queue.order(gate.key, gate.cut)),
        caps,
        0.0,
        300.0,
        ordered=True,
        gate=gate,
        sharing=(lambda: (build(j) for j in sharing.order(gate.key, gate.cut))) if indexed else None,
    )
    elapsed = time.perf_counter() - started
    assert len(placed) == 1 and placed[0].gpu == 0, placed
    return elapsed, read[0]


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for queued in (1_000, 10_000, 100_000):
        queue, users = FairQueue(), {}
        book = UsageBook()
        for u in range(1, args.users):
            book.add(f"user{u}", 1e9 * u, 0.0)  # user0 stays first in the merge however much it places
        entries = []
        for i in range(queued):
            user = "user0" if i < queued // 2 else f"user{i % args.users}"  # one user holds half the queue
            users[f"j{i}"] = user
            entries.append((f"j{i}", 0, i, user))
        queue.add_many(entries)
        plain = [one_pass(queue, users, {}, args.free, book) for _ in range(args.repeat)]
        limit = {"user0": Quota("user0", queued=10)}
        held = [one_pass(queue, users, limit, args.free, book) for _ in range(max(3, args.repeat // 4))]
        sharing = FairQueue()
        sharing.add(f"j{queued - 1}", 0, queued - 1, users[f"j{queued - 1}"])  # the last queued job shares a GPU
        shared = [shared_pass(queue, sharing, users, True) for _ in range(args.repeat)]
        walked = [shared_pass(queue, sharing, users, False) for _ in range(max(3, args.repeat // 4))]
        results.append(
            {
                "queued_jobs": queued,
                "pass_ms_p50": round(statistics.median(plain) * 1000, 3),
                "pass_ms_p50_first_user_holds_half_over_queued_quota": round(statistics.median(held) * 1000, 3),
                "full_with_a_shared_gpu_pass_ms_p50": round(statistics.median(t for t, _ in shared) * 1000, 3),
                "full_with_a_shared_gpu_requests_read": shared[0][1],
                "full_with_a_shared_gpu_without_the_sharing_index_pass_ms_p50": round(
                    statistics.median(t for t, _ in walked) * 1000, 3
                ),
                "full_with_a_shared_gpu_without_the_sharing_index_requests_read": walked[0][1],
            }
        )
    return {"users": args.users, "free_slots": args.free, "passes": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--free", type=int, default=20, help="free slots: tasks each pass places")
    parser.add_argument("--repeat", type=int, default=20)
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
