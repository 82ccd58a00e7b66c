#!/usr/bin/env python3
"""Many lightweight simulated agents in one process, for the scale simulation (benchmarks/scale_sim.py).

Each is the real agent daemon (its own identity, TLS, pairing by cluster token, the real AgentService
on its own loopback port, the real journal and telemetry) except that tasks do not start a worker
process: a task sleeps for its `seconds` parameter (`sleep` workload; others end at once) inside the
daemon and succeeds. So the controller sees N real agents over gRPC at the cost of one process.

Each agent records when it accepted and finished tasks; on SIGTERM the process writes them as JSON to
--report and exits. Not mDNS-advertised: the benchmark adds the agents by address.

Usage: python benchmarks/fake_agents.py --count 50 --dir DIR --ready FILE --report FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from tensorfleet_agent import daemon as daemon_module
from tensorfleet_agent.core.types import ExitCause, Finished, StateChanged, TaskState
from tensorfleet_agent.runtime.executor import Executor, _Running

TIMES: dict[str, dict[str, list[float]]] = {}  # data dir -> accepted / finished wall times


class SimulatedExecutor(Executor):
    """The real executor (slots, journal, idempotent RunTask, cancel), with the worker process simulated."""

    async def _run(self, running: _Running) -> None:
        spec = running.spec
        times = TIMES.setdefault(str(self.config.data_dir), {"accepted": [], "finished": []})
        times["accepted"].append(time.time())
        status, cause, error = TaskState.SUCCEEDED, ExitCause.COMPLETED, ""
        try:
            self._append(running, StateChanged(TaskState.RUNNING, "simulated worker"))
            seconds = float(spec.params.get("seconds", 0.0)) if spec.workload == "sleep" else 0.0
            try:
                await asyncio.wait_for(running.killed.wait(), seconds)
                status, cause, error = TaskState.CANCELLED, running.kill_cause, running.kill_message
            except TimeoutError:
                pass
        finally:
            self.journal.append(spec.task_id, Finished(status, cause, error, time.monotonic() - running.started))
            getattr(running, "going", asyncio.Event()).set()  # as the real _run's end does
            self._running.pop(spec.task_id, None)
            self.slots.release(running.slots)
            gangs = getattr(self, "gangs", None)
            if gangs is not None:
                gangs.finished(spec.job_id, spec.attempt, spec.local_rank)
            self.blobs.unpin(ref.sha256 for ref in spec.inputs)
            self._gauge()
            times["finished"].append(time.time())


async def main(args: argparse.Namespace) -> None:
    daemon_module.Executor = SimulatedExecutor  # type: ignore[misc]
    daemons = []
    for i in range(args.count):
        config = daemon_module.AgentConfig(
            data_dir=args.dir / f"{args.prefix}{i:03d}",
            host="127.0.0.1",
            port=0,
            name=f"{args.prefix}{i:03d}",
            interfaces=["127.0.0.1"],
            advertise=False,
            cpu_slots=args.slots,
            spare_workers=0,
            cluster_token=os.environ["TENSORFLEET_CLUSTER_TOKEN"],
        )
        agent = daemon_module.AgentDaemon(config)
        await agent.start()
        daemons.append(agent)
    # written whole under another name, then renamed: the benchmark reads it as soon as the name exists (a direct
    # write was once read empty, and the scale simulation failed)
    partial = args.ready.with_name(args.ready.name + ".partial")
    partial.write_text(json.dumps({"pid": os.getpid(), "addresses": [f"127.0.0.1:{d.port}" for d in daemons]}))
    os.replace(partial, args.ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    report: dict[str, Any] = {name: times for name, times in TIMES.items()}
    args.report.write_text(json.dumps(report))
    await asyncio.gather(*(d.stop(drain=False) for d in daemons), return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--prefix", default="sim-", help="agent names: PREFIX000, PREFIX001, ...")
    parser.add_argument("--nice", type=int, default=0, help="run at this niceness (before any thread starts)")
    parsed = parser.parse_args()
    if parsed.nice:
        os.nice(parsed.nice)
    asyncio.run(main(parsed))
