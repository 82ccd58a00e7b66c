"""Each task's reproducibility line (the worker's package versions, the seeds): the worker says its versions in its
hello, and the agent logs the line with RUNNING, once per task, also for a warm worker's next task and for a
spawned worker (--no-fork-server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from tensorfleet_agent.core.types import Finished, LogLine, StateChanged, TaskSpec, TaskState

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("extra", [[], ["--no-fork-server"]], ids=["forked", "spawned"])
async def test_every_task_logs_its_versions_and_seeds_right_after_running(tmp_path: Path, extra: list[str]) -> None:
    agent = AgentProcess(tmp_path / "agent", cpu_slots=1, extra_args=extra).start()
    try:
        async with agent.client() as client:
            for i in range(3):  # the first task's worker, then the same warm worker again
                seen = []
                spec = TaskSpec(f"repro{i}", f"job{i}", "noop", {})
                await client.run_task(spec)
                async for event in client.watch_task(spec.task_id):
                    seen.append(event.payload)
                    if isinstance(event.payload, Finished):
                        break
                assert isinstance(seen[-1], Finished) and seen[-1].status is TaskState.SUCCEEDED
                assert isinstance(seen[1], StateChanged) and seen[1].state is TaskState.RUNNING
                lines = [p.line for p in seen if isinstance(p, LogLine) and p.stream == "agent"]
                assert len(lines) == 1 and seen[2] == LogLine("agent", lines[0])
                versions = json.loads(lines[0].split("versions ", 1)[1].split(" seeds ", 1)[0])
                assert versions["python"] and "tensorfleet" in versions
                assert " seeds {} " in lines[0] and lines[0].endswith("attempt 0")
    finally:
        agent.stop()
