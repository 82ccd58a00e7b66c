"""Agent restarts, graceful drain, and workers that die with the daemon."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import psutil
import pytest

from helpers.agents import AgentProcess
from helpers.grpc_probe import health_status
from helpers.waiting import eventually
from tensorfleet_agent.core.types import Finished, StateChanged, TaskSpec, TaskState
from tensorfleet_agent.discovery.browse import AgentBrowser
from tensorfleet_agent.rpc.client import AgentClient

pytestmark = pytest.mark.slow


async def _running_pid(client: AgentClient, task_id: str) -> int:
    async for event in client.watch_task(task_id):
        p = event.payload
        if isinstance(p, StateChanged) and p.state is TaskState.RUNNING:
            return int(p.message.rsplit(" ", 1)[1])
    raise AssertionError("task never ran")


async def _draining(client: AgentClient) -> bool:
    return (await client.get_info()).draining


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


async def test_restart_keeps_journals_and_fails_orphans(agent_factory: type[AgentProcess], tmp_path: Path) -> None:
    agent = agent_factory(tmp_path / "a").start()
    async with agent.client() as client:
        await client.run_task(TaskSpec("done", "j", "emit", {"points": 20}))
        done_events = [e async for e in client.watch_task("done")]
        await client.run_task(TaskSpec("orphan", "j", "sleep", {"seconds": 60}))
        worker = await _running_pid(client, "orphan")
    node_id = agent.info["node_id"]
    agent.kill()  # SIGKILL: no drain, no goodbye
    assert _gone(worker, 5), "the worker outlived its agent"

    agent.start()
    assert agent.info["node_id"] == node_id  # identity is stable across restarts
    async with agent.client() as client:
        tasks = {t.task_id: t for t in await client.list_tasks(include_finished=True)}
        assert tasks["done"].state is TaskState.SUCCEEDED
        assert (tasks["orphan"].state, tasks["orphan"].exit_cause) == (TaskState.FAILED, "agent_restarted")
        replay = [e async for e in client.watch_task("done")]
        assert replay == done_events
        orphan = [e async for e in client.watch_task("orphan")]
        assert [e.seq for e in orphan] == list(range(1, len(orphan) + 1))
        end = orphan[-1].payload
        assert isinstance(end, Finished) and end.exit_cause == "agent_restarted"
        assert (await client.get_info()).slots_free == 2


async def test_sigterm_drains_running_tasks_and_says_goodbye(agent_factory: type[AgentProcess], tmp_path: Path) -> None:
    agent = agent_factory(tmp_path / "d", extra_args=["--drain-timeout", "20"]).start()
    removed = asyncio.Event()
    seen = asyncio.Event()

    def on_change(_name: str, found: object) -> None:
        (seen if found is not None else removed).set()

    browser = AgentBrowser(["127.0.0.1"], on_change)
    await browser.start()
    try:
        await asyncio.wait_for(seen.wait(), 10)
        async with agent.client() as client:
            await client.run_task(TaskSpec("finish-me", "j", "sleep", {"seconds": 1.5}))
            await _running_pid(client, "finish-me")
            assert await health_status(client.channel, "tensorfleet.v1.AgentService") == "SERVING"
            assert agent.proc is not None
            agent.proc.send_signal(15)
            await eventually(lambda: _draining(client), 10, "the agent draining")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.run_task(TaskSpec("too-late", "j", "noop"))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert refused.value.details() == "the agent is draining and accepts no new tasks"
            # probes and load balancers see the drain while the running task still finishes
            assert await health_status(client.channel) == "NOT_SERVING"
            assert await health_status(client.channel, "tensorfleet.v1.AgentService") == "NOT_SERVING"
            events = [e async for e in client.watch_task("finish-me")]
        end = events[-1].payload
        assert isinstance(end, Finished) and end.status is TaskState.SUCCEEDED
        assert await asyncio.to_thread(agent.proc.wait, 20) == 0
        await asyncio.wait_for(removed.wait(), 5)  # mDNS goodbye
    finally:
        await browser.stop()


async def test_drain_timeout_cancels_and_exits_zero(agent_factory: type[AgentProcess], tmp_path: Path) -> None:
    agent = agent_factory(tmp_path / "t", extra_args=["--drain-timeout", "0.5"]).start()
    async with agent.client() as client:
        await client.run_task(TaskSpec("too-long", "j", "sleep", {"seconds": 60}))
        worker = await _running_pid(client, "too-long")
        assert agent.terminate(timeout=20) == 0
    assert _gone(worker, 3)
    agent.start()
    async with agent.client() as client:
        events = [e async for e in client.watch_task("too-long")]
    end = events[-1].payload
    assert isinstance(end, Finished) and (end.status, end.exit_cause) == (TaskState.FAILED, "drain_timeout")


async def test_workers_run_in_their_own_process_group_with_capped_threads(agent: AgentProcess) -> None:
    async with agent.client() as client:
        await client.run_task(TaskSpec("pg", "j", "sleep", {"seconds": 30}))
        pid = await _running_pid(client, "pg")
        proc = psutil.Process(pid)
        env = proc.environ()
        assert os.getpgid(pid) == pid != os.getpgid(agent.proc.pid)  # type: ignore[union-attr]
        parent = proc.parent()  # the agent's fork server (the agent's child), or the agent with --no-fork-server
        assert parent is not None and agent.proc.pid in (parent.pid, parent.ppid())  # type: ignore[union-attr]
        assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
        assert env["CUDA_VISIBLE_DEVICES"] == ""
        await client.cancel_task("pg")
    assert _gone(pid, 3)
