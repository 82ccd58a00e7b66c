"""A real agent with the test-only fake GPU inventory (TENSORFLEET_TEST_FAKE_GPUS): tasks that share a GPU by
memory pack onto one GPU, see it and their share in their environment, and one that uses more than its share is
told so in its log; a whole-GPU task is refused while both GPUs are taken by shares."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from helpers.agents import CLUSTER_TOKEN, AgentProcess
from tensorfleet_agent.core.types import BlobRef, Finished, LogLine, TaskSpec, TaskState
from tensorfleet_agent.rpc.client import AgentClient

pytestmark = pytest.mark.slow

GIB = 1 << 30

# Prints what it was given; with a size argument it pretends to use that much of its GPU (the fake NVML's
# per-process file); runs until the release file exists.
SCRIPT = """
import json, os, sys, time
from pathlib import Path
gpu = os.environ["CUDA_VISIBLE_DEVICES"]
fraction = os.environ.get("TENSORFLEET_GPU_MEMORY_FRACTION")
print("ENV " + json.dumps({"gpu": gpu, "fraction": fraction}), flush=True)
use, release, procs = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
if use:  # the agent's environment (and the fake NVML's settings) never reach a task: the file is named here
    procs.write_text(json.dumps([[int(gpu), os.getpid(), use]]))
while not release.exists():
    time.sleep(0.05)
"""


async def _until_line(client: AgentClient, task_id: str, prefix: str, timeout: float = 20.0) -> str:
    async def find() -> str:
        async for event in client.watch_task(task_id):
            payload = event.payload
            if isinstance(payload, LogLine) and payload.line.startswith(prefix):
                return payload.line
            assert not isinstance(payload, Finished), f"{task_id} ended without {prefix!r}: {payload}"
        raise AssertionError(f"{task_id}: no {prefix!r}")

    return await asyncio.wait_for(find(), timeout)


async def _finished(client: AgentClient, task_id: str) -> Finished:
    async for event in client.watch_task(task_id):
        if isinstance(event.payload, Finished):
            return event.payload
    raise AssertionError(task_id)


async def test_shares_pack_see_their_gpu_and_the_one_over_its_share_is_warned(
    tmp_path: Path, agent_factory: type[AgentProcess]
) -> None:
    procs = tmp_path / "gpu-processes.json"
    env = {
        "TENSORFLEET_CLUSTER_TOKEN": CLUSTER_TOKEN,
        "TENSORFLEET_TEST_FAKE_GPUS": "2x16GiB",
        "TENSORFLEET_TEST_FAKE_GPU_PROCESSES": str(procs),
    }
    agent = agent_factory(tmp_path / "agent", name="fake-gpu-agent", cpu_slots=2, env=env).start()
    assert "TEST ONLY" in agent.logs() and "2 FAKE GPU(s)" in agent.logs()
    script = tmp_path / "share.py"
    script.write_text(SCRIPT)
    release = tmp_path / "release"

    def spec(task_id: str, use: int, share: int, gpus: int = 1) -> TaskSpec:
        params = {"script": "share.py", "args": [str(use), str(release), str(procs)], "sha256": digest}
        return TaskSpec(
            task_id, f"job-{task_id}", "script", params, gpus=gpus, gpu_memory_bytes=share, inputs=(inputs,)
        )

    async with agent.client() as client:
        digest = await client.put_blob(script)
        inputs = BlobRef("share.py", digest)
        accepted = [await client.run_task(spec("a", 0, 6 * GIB))]
        accepted.append(await client.run_task(spec("b", 8 * GIB, 6 * GIB)))  # uses 8 GiB of its 6
        accepted.append(await client.run_task(spec("c", 0, 6 * GIB)))
        # RunTask says which GPU each share went to (the controller counts it there, whatever it planned)
        assert [a.shared_gpu for a in accepted] == [(0, 6 * GIB), (0, 6 * GIB), (1, 6 * GIB)]
        seen = {t: json.loads((await _until_line(client, t, "ENV "))[4:]) for t in ("a", "b", "c")}
        assert seen["a"] == seen["b"] == {"gpu": "0", "fraction": "0.375000"}  # two 6 GiB shares on one 16 GiB
        assert seen["c"] == {"gpu": "1", "fraction": "0.375000"}  # 4 GiB left there: the other GPU
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.run_task(spec("whole", 0, 0))  # both GPUs are shared: no whole one
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        warning = await _until_line(client, "b", "GPU memory over this task's share")
        assert "8GiB of GPU 0" in warning and "2GiB more than the 6GiB" in warning
        async for sample in client.telemetry(0.2):
            gpus = {g.index: g for g in sample.gpus}
            break
        assert (gpus[0].memory_reserved_bytes, gpus[0].shared_tasks, gpus[0].exclusive) == (12 * GIB, 2, False)
        assert (gpus[1].memory_reserved_bytes, gpus[1].shared_tasks) == (6 * GIB, 1)
        assert gpus[0].memory_used_bytes == 8 * GIB and sample.slots_free == 0
        info = await client.get_info()
        assert info.slots_free == 0 and [g.memory_total_bytes for g in info.gpus] == [16 * GIB, 16 * GIB]
        await asyncio.sleep(2.2)  # two more checks while it stays over: said once per crossing, not every check
        release.touch()
        for task_id in ("a", "b", "c"):
            assert (await _finished(client, task_id)).status is TaskState.SUCCEEDED
        lines = [e.payload.line async for e in client.watch_task("b") if isinstance(e.payload, LogLine)]
        assert sum("over this task's share" in line for line in lines) == 1, lines
        procs.unlink()
        release.unlink()
        assert (await client.run_task(spec("whole-2", 0, 0))).shared_gpu is None  # a whole GPU again, uncapped
        whole = json.loads((await _until_line(client, "whole-2", "ENV "))[4:])
        assert whole == {"gpu": "0", "fraction": None}
        release.touch()
        assert (await _finished(client, "whole-2")).status is TaskState.SUCCEEDED
