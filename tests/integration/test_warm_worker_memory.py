"""A warm worker shared by a family (scikit-learn) serves another job's task: the previous job's data must not
stay resident in it and count against the next task's memory limit (a real agent, one slot)."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from helpers.agents import AgentProcess
from tensorfleet_agent.core.types import Finished, StateChanged, TaskSpec, TaskState
from tensorfleet_agent.rpc.client import AgentClient

pytestmark = pytest.mark.slow


async def run(client: AgentClient, spec: TaskSpec) -> tuple[int, Finished]:
    """The task's worker pid and its end."""
    await client.run_task(spec)
    events = [e async for e in client.watch_task(spec.task_id)]
    pid = next(
        int(e.payload.message.split()[-1])
        for e in events
        if isinstance(e.payload, StateChanged) and e.payload.message.startswith("worker pid")
    )
    end = events[-1].payload
    assert isinstance(end, Finished)
    return pid, end


async def test_a_big_dataset_of_one_job_does_not_fail_the_next_job_s_memory_limit(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent", cpu_slots=1).start()
    try:
        async with agent.client() as client:
            big = {"n_samples": 300_000, "n_features": 100, "n_informative": 5}
            spec = TaskSpec(
                "a1", "job-A", "decision_tree", {"max_depth": 1}, dataset="make_classification", dataset_params=big
            )
            pid_a, end = await run(client, spec)
            assert end.status is TaskState.SUCCEEDED, end
            held = psutil.Process(pid_a).memory_info().rss  # parked warm, with job A's ~240 MB of arrays kept
            limit = held - (150 << 20)  # what a fresh worker's digits forest fits in easily
            for task_id, job in (("b1", "job-B"), ("c1", "job-C")):
                _, end = await run(
                    client, TaskSpec(task_id, job, "random_forest", {}, dataset="digits", memory_limit_bytes=limit)
                )
                assert end.status is TaskState.SUCCEEDED, f"{job} was charged job A's memory: {end}"
    finally:
        agent.stop()
