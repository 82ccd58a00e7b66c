"""Desk mode on a real agent: an Xvfb display's input (xdotool) drives the owner's idle time; the running task is
handed back within 2 s of the first input event (from the task's end event time), RunTask is refused while the owner
is active, it lends again after --desk-idle; another program on the (fake) GPU means the owner uses it; the owner's
`tensorfleet-agent desk status|pause|resume`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from helpers.mdns_txt import mdns_says
from helpers.waiting import wait_until
from helpers.xvfb import HELPERS, Xvfb, missing_tools
from tensorfleet_agent.core.types import ExitCause, Finished, TaskSpec, TaskState
from tensorfleet_agent.rpc.client import AgentClient
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow
HANDBACK = 2.0  # the deadline (p95): GPU and CPU free this long after the first input event
MARGIN = 0.5  # a loaded test machine


@pytest.fixture
def xvfb() -> Iterator[Xvfb]:
    why = missing_tools()
    if why:
        pytest.skip(why)
    display = Xvfb()
    yield display
    display.stop()


async def _desk(client: AgentClient, want: str, timeout: float = 15.0) -> str:
    """Wait until the agent's desk state is `want` (lending, owner_active, paused); returns its reason."""

    async def wait() -> str:
        async for sample in client.telemetry(0.1):
            desk = sample.desk
            assert desk is not None
            state = "paused" if desk.paused else "owner_active" if desk.owner_active else "lending"
            if state == want:
                return desk.reason
        raise AssertionError("telemetry ended")

    return await asyncio.wait_for(wait(), timeout)


async def _end(client: AgentClient, task_id: str) -> tuple[Finished, float]:
    async for event in client.watch_task(task_id):
        if isinstance(event.payload, Finished):
            return event.payload, event.time
    raise AssertionError("no end")


def _desk_cli(agent: AgentProcess, *args: str) -> dict[str, object]:
    cmd = [sys.executable, "-m", "tensorfleet_agent", "desk", *args, "--json", "--data-dir", str(agent.data_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


async def test_owner_input_hands_the_machine_back_within_2s(
    agent_factory: type[AgentProcess], tmp_path: Path, xvfb: Xvfb
) -> None:
    gpu_procs = tmp_path / "gpu-processes.json"
    agent = agent_factory(
        tmp_path / "a",
        extra_args=["--desk", "--desk-idle", "1s", "--desk-display", xvfb.display, "--desk-cpu-percent", "100"],
        env={
            **AgentProcess(tmp_path).env,
            "PYTHONPATH": os.pathsep.join([str(HELPERS / "fake_nvml"), os.environ.get("PYTHONPATH", "")]),
            "TENSORFLEET_FAKE_GPUS": "1",
            "TENSORFLEET_FAKE_GPU_PROCESSES": str(gpu_procs),
        },
    ).start()
    async with agent.client() as client:
        info = await client.get_info()
        assert info.desk is not None and info.desk.idle_threshold_seconds == 1.0
        assert (await _desk(client, "lending")).startswith("lending: no keyboard or mouse input for")
        await client.run_task(TaskSpec("t1", "j1", "sleep", {"seconds": 60}))
        async for event in client.watch_task("t1"):
            if "worker pid" in str(event.payload):
                break
        t0 = xvfb.input()
        fin, ended = await asyncio.wait_for(_end(client, "t1"), 10)
        assert (fin.status, fin.exit_cause) == (TaskState.CANCELLED, ExitCause.PREEMPTED)
        assert fin.error.startswith("the workstation's owner is back: keyboard or mouse used")
        assert ended - t0 <= HANDBACK + MARGIN, f"handed back {ended - t0:.2f}s after the input"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.run_task(TaskSpec("t2", "j2", "noop", {}))
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "not lent now (desk mode): keyboard or mouse used" in str(refused.value.details())
        await _desk(client, "lending")  # idle for --desk-idle again

        # another program holds 1 GiB of the GPU: the owner uses it
        gpu_procs.write_text(json.dumps([[0, os.getpid(), 2**30]]))
        reason = await _desk(client, "owner_active")
        assert "of GPU 0" in reason and f"pid {os.getpid()}" in reason
        await mdns_says(agent, "desk", "owner_active")
        gpu_procs.unlink()
        await _desk(client, "lending")

        # the owner's own control: pause = don't lend now
        answer = await asyncio.to_thread(_desk_cli, agent, "pause")
        assert answer["state"] == "paused" and answer["paused"] is True
        assert (await _desk(client, "paused")).startswith("paused by the owner")
        await mdns_says(agent, "desk", "paused")
        assert (await asyncio.to_thread(_desk_cli, agent, "status"))["state"] == "paused"
        assert (await asyncio.to_thread(_desk_cli, agent, "resume"))["paused"] is False
        await _desk(client, "lending")
        await mdns_says(agent, "desk", "lending")


def test_a_job_handed_back_is_queued_again_and_finishes_without_a_failure(
    agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess], tmp_path: Path, xvfb: Xvfb
) -> None:
    """The whole path on real processes: the desk agent preempts, the controller re-queues (no retry spent), the
    agent refuses work while the owner is active, lends again after --desk-idle, and the job succeeds there."""
    agent = agent_factory(
        tmp_path / "desk",
        cpu_slots=1,
        extra_args=["--desk", "--desk-idle", "1s", "--desk-display", xvfb.display, "--desk-cpu-percent", "100"],
    )
    controller = controller_factory(tmp_path / "controller")
    agent.spawn()
    controller.spawn()
    agent.wait_ready()
    controller.wait_ready()
    with Client(controller.address) as client:
        wait_until(lambda: sum(a["state"] == "ONLINE" for a in client.agents()) == 1, 20, "the desk agent online")
        job = client.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 2}, "max_retries": 0})
        wait_until(lambda: client.job(job["id"])["task_list"][0]["state"] == "RUNNING", 30, "running")
        xvfb.input()
        final = client.wait(job["id"], timeout=60)
        assert final["state"] == "SUCCEEDED", final
        task = final["task_list"][0]
        assert task["failures"] == 0 and task["replacements"] == 0 and task["attempt"] == 2, task
        history = [e.get("message", "") for e in client.watch(job["id"])]
        assert any(m.startswith("preempted: the workstation's owner is back: keyboard or mouse used") for m in history)
