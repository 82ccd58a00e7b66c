"""--suspend-when-idle on a real agent: it announces going_to_sleep in its telemetry before the suspend command runs,
the command freezes it (SIGSTOP, as the simulated LAN does), and once resumed it is awake with its idle clock
restarted; GetInfo reports its interfaces for Wake-on-LAN (bad flags: tests/unit/test_power.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from helpers.agents import AgentProcess
from helpers.mdns_txt import mdns_says
from tensorfleet_agent.core.types import TaskSpec

pytestmark = pytest.mark.slow


def _freezer(tmp_path: Path) -> Path:
    """A suspend command that records when it ran and, a second later, freezes the agent, as a real suspend
    would (which takes a moment too)."""
    script = tmp_path / "freeze.sh"
    script.write_text(
        f'#!/bin/sh\ndate +%s.%N >> {tmp_path / "suspends"}\nsleep 1\nkill -STOP "$TENSORFLEET_AGENT_PID"\n'
    )
    script.chmod(0o755)
    return script


async def test_announce_suspend_freeze_and_resume(agent_factory: type[AgentProcess], tmp_path: Path) -> None:
    marks = tmp_path / "suspends"
    agent = agent_factory(
        tmp_path / "a",
        extra_args=["--suspend-when-idle", "1s", "--suspend-command", str(_freezer(tmp_path)), "--wol", "all"],
    ).start()
    assert agent.proc is not None
    async with agent.client() as client:
        info = await client.get_info()
        assert info.suspend_when_idle_seconds == 1.0
        assert info.interfaces and all(i.wake_on_lan_source == "flag" for i in info.interfaces)
        # A task keeps it awake: its idle clock starts when the task ends.
        await client.run_task(TaskSpec("t1", "j", "sleep", {"seconds": 1}))
        announced = 0.0
        async for sample in client.telemetry(0.2):
            if sample.going_to_sleep:
                announced = time.time()
                break
            assert not marks.exists(), "suspended without announcing it first"
        await mdns_says(agent, "power", "sleeping", tries=4)  # on mDNS too, while the command starts
        (task,) = await client.list_tasks(include_finished=True)
        assert task.finished_at > 0 and announced - task.finished_at >= 0.9  # idle since the task's end
    for _ in range(100):
        if marks.exists() and psutil.Process(agent.proc.pid).status() == psutil.STATUS_STOPPED:
            break
        await asyncio.sleep(0.05)
    assert psutil.Process(agent.proc.pid).status() == psutil.STATUS_STOPPED
    assert float(marks.read_text().split()[0]) >= announced - 0.05  # the announcement came first
    os.kill(agent.proc.pid, signal.SIGCONT)  # the machine resumes
    async with agent.client() as client:
        first = await anext(aiter(client.telemetry(0.2)))
        assert not first.going_to_sleep
        # a task now is accepted and keeps it awake: no second suspend, and mDNS says power=awake again
        await client.run_task(TaskSpec("t2", "j", "sleep", {"seconds": 1.5}))
        await mdns_says(agent, "power", "awake", tries=4)
        assert len(marks.read_text().split()) == 1
    os.kill(agent.proc.pid, signal.SIGCONT)  # idle again since: it may have suspended (frozen) itself once more
