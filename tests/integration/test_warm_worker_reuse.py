"""Warm workers across jobs (docs/architecture.md, "Warm workers"): a built-in diagnostic or scikit-learn task's
worker serves the next task of its family, whatever its job; one that failed, was cancelled, ran a script or left
a process is never reused; and what a task leaves in its worker's process does not reach the next task."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from tensorfleet_agent.core.types import BlobRef, Finished, StateChanged, TaskEvent, TaskSpec, TaskState
from tensorfleet_agent.rpc.client import AgentClient
from tensorfleet_agent.runtime.process import WorkerProcess

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]


async def _run(client: AgentClient, spec: TaskSpec) -> tuple[int, TaskState, list[TaskEvent]]:
    """The task's worker pid (its RUNNING says it), its end and its events."""
    await client.run_task(spec)
    events = [e async for e in client.watch_task(spec.task_id)]
    (running,) = [e for e in events if isinstance(e.payload, StateChanged) and e.payload.state is TaskState.RUNNING]
    assert isinstance(running.payload, StateChanged)
    end = events[-1].payload
    assert isinstance(end, Finished)
    return int(running.payload.message.split()[-1]), end.status, events


async def test_a_warm_worker_serves_other_jobs_only_after_a_clean_success(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory(tmp_path / "agent", cpu_slots=1).start()
    script = tmp_path / "hello.py"
    script.write_text("print('hello')\n")
    async with agent.client() as client:
        digest = await client.put_blob(script)
        first, end, _ = await _run(client, TaskSpec("n1", "job-1", "noop"))
        assert end is TaskState.SUCCEEDED
        second, end, _ = await _run(client, TaskSpec("n2", "job-2", "noop"))
        assert (second, end) == (first, TaskState.SUCCEEDED), "another job's noop: the same warm worker"

        params = {"script": "hello.py", "args": [], "sha256": digest}
        spec = TaskSpec("s1", "job-3", "script", params, inputs=(BlobRef("hello.py", digest),))
        scripted, end, _ = await _run(client, spec)
        assert end is TaskState.SUCCEEDED and scripted != first, "a script never gets a shared worker"
        third, _, _ = await _run(client, TaskSpec("n3", "job-4", "noop"))
        assert third == first, "nor leaves one: the noops' worker is still the warm one"

        failing, end, _ = await _run(client, TaskSpec("f1", "job-5", "fail", {"mode": "exception"}))
        assert (failing, end) == (first, TaskState.FAILED)
        after_failure, end, _ = await _run(client, TaskSpec("n4", "job-6", "noop"))
        assert end is TaskState.SUCCEEDED and after_failure != first, "a worker whose task failed is not reused"

        await client.run_task(TaskSpec("c1", "job-7", "sleep", {"seconds": 30}))
        async for event in client.watch_task("c1"):
            if isinstance(event.payload, StateChanged) and event.payload.state is TaskState.RUNNING:
                cancelled = int(event.payload.message.split()[-1])
                break
        assert cancelled == after_failure
        await client.cancel_task("c1", "enough")
        after_cancel, end, _ = await _run(client, TaskSpec("n5", "job-8", "noop"))
        assert end is TaskState.SUCCEEDED and after_cancel != cancelled, "a cancelled task's worker is killed"


async def test_what_a_task_leaves_in_its_worker_does_not_reach_the_next_task(tmp_path: Path) -> None:
    """One worker, two tasks of two jobs, as the executor sends them: the second finds its own environment, not
    the variables the first set or its dataset dir; scikit-learn's default config; fresh global random states; the
    default warning filters."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = "1"
    worker = await WorkerProcess.spawn(env, str(tmp_path))
    found: list[str] = []
    worker.on_output = lambda _stream, line: found.append(line)
    try:
        for job, entry, dataset_dir in (("job-1", "leave", str(tmp_path)), ("job-2", "look", "")):
            task_dir = tmp_path / job
            spec = {"task_id": job, "job_id": job, "workload": "x", "params": {}}
            worker.send(
                {
                    "op": "run",
                    "entry": f"helpers.leaving_state:{entry}",
                    "spec": spec,
                    "task_dir": str(task_dir),
                    "blobs_dir": str(tmp_path / "blobs"),
                    "dataset_dir": dataset_dir,
                    "gpu_memory_fraction": "",
                }
            )
            messages: list[dict[str, object]] = []
            while not any(m.get("t") == "done" for m in messages):
                batch = await worker.next_messages(timeout=60)
                assert batch, "the worker said nothing"
                messages += batch
            (done,) = [m for m in messages if m.get("t") == "done"]
            assert done.get("ok") is True, done
            found += [str(m["line"]) for m in messages if m.get("t") == "log"]
    finally:
        await worker.close()
    (line,) = [line for line in found if line.startswith("{")]
    seen = ast.literal_eval(line)
    assert seen == {
        "left": None,
        "omp": "1",
        "dataset_dir": None,
        "job": "job-2",
        "spec_job": "job-2",
        "assume_finite": False,
        "numpy_draw_is_the_seeded_one": False,
        "random_draw_is_the_seeded_one": False,
        "cwd": str(tmp_path / "job-2"),
    }
    assert not any("UserWarning" in line and "Traceback" in line for line in found)
