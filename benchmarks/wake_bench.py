"""Queue -> task running after a Wake-on-LAN wake-up, on the simulated LAN (issue 23).

A controller on one namespace, a "sleeping host" on another (tests/helpers/lan_sleepy.py): its agent suspends after
`--idle` without work by freezing itself (SIGSTOP), and a listener standing in for its NIC resumes it (SIGCONT) on a
valid magic packet for its MAC. Each round waits until the controller shows the agent SLEEPING, submits a `noop` job
and times, from the submit: the magic packet (the agent's last_wake_at; the waking source acts once a job has waited
1 s, on the scheduler's 0.5 s tick), the agent ONLINE again, and the task RUNNING (its started_at). A real machine
adds its own resume time (seconds) to the packet -> online step; everything else is what is measured here.

Needs root (network namespaces); traffic never leaves them. Prints one JSON document. Usage:
    sudo .venv/bin/python benchmarks/wake_bench.py [--rounds 5] [--idle 2s]
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ["TENSORFLEET_MDNS_INTERFACES"] = "127.0.0.1"  # each daemon is given its namespace's address instead

from helpers.lan import Lan, lan_unavailable_reason  # noqa: E402
from helpers.lan_sleepy import start_sleepy_host  # noqa: E402


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 3),
        "max": round(ordered[-1], 3),
        "min": round(ordered[0], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle", default="2s", help="the agent's --suspend-when-idle")
    args = parser.parse_args()
    reason = lan_unavailable_reason()
    if reason is not None:
        print(json.dumps({"skipped": reason}))
        return 1
    lan = Lan(["ctl", "desk"], prefix=f"tfw{os.getpid() % 100000}").build()
    rounds: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="wake-bench-") as tmp:
            host = start_sleepy_host(lan, Path(tmp), "desk", args.idle, 30.0)
            try:
                client = host.cluster.client
                for _ in range(args.rounds):
                    host.sleeping(timeout=60)
                    submitted = time.time()
                    job = client.submit({"algorithm": "noop", "max_retries": 0})
                    final = client.wait(job["id"], timeout=120)
                    if final["state"] != "SUCCEEDED":
                        raise RuntimeError(f"job {job['id']} ended {final['state']}: {final.get('error')}")
                    agent = host.record()
                    if agent["last_wake_at"] < submitted:
                        raise RuntimeError(f"job {job['id']} ran without a wake-up: {agent}")
                    task = final["task_list"][0]
                    rounds.append(
                        {
                            "magic_packet_s": round(agent["last_wake_at"] - submitted, 3),
                            "task_running_s": round(task["started_at"] - submitted, 3),
                            "wake_count": agent["wake_count"],
                        }
                    )
                    print(f"round {len(rounds)}: {rounds[-1]}", file=sys.stderr)
            finally:
                host.stop()
    finally:
        lan.teardown()
    print(
        json.dumps(
            {
                "benchmark": "wake_bench",
                "rounds": rounds,
                "queue_to_magic_packet_s": summary([r["magic_packet_s"] for r in rounds]),
                "queue_to_task_running_s": summary([r["task_running_s"] for r in rounds]),
                "idle": args.idle,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
