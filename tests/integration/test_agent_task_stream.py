"""A controller's tasks on one AgentService.Tasks stream to a real agent: many at once, each refused or followed on
its own, and a broken stream failing its watches as broken calls would, the next task going on a new one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from helpers.agents import AgentProcess
from tensorfleet_agent.core.types import Finished, TaskSpec, TaskState

pytestmark = pytest.mark.slow


async def test_many_tasks_share_one_stream_and_a_refusal_is_only_its_own(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent", cpu_slots=8).start()  # a slot for each task
    try:
        async with agent.client() as client:

            async def one(i: int) -> TaskState:
                params = {"seconds": "soon"} if i == 5 else {"seconds": 0.2}  # 5: refused by the schema
                _, events = await client.run_and_watch(TaskSpec(f"ts-{i}", "j", "sleep", params), timeout=60)
                ends = [e.payload async for e in events if isinstance(e.payload, Finished)]
                assert len(ends) == 1
                return ends[0].status

            results = await asyncio.gather(*(one(i) for i in range(8)), return_exceptions=True)
            stream = client._tasks
            refused = results.pop(5)
            assert isinstance(refused, grpc.aio.AioRpcError)
            assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT and "seconds" in str(refused.details())
            assert results == [TaskState.SUCCEEDED] * 7
            assert stream is not None and not stream.dead and client._tasks is stream  # all on the one stream
    finally:
        agent.stop()


async def test_a_restarted_agent_fails_the_open_watches_and_the_next_task_takes_a_new_stream(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent", cpu_slots=1).start()
    try:
        async with agent.client() as client:
            _, events = await client.run_and_watch(TaskSpec("long", "j", "sleep", {"seconds": 60}))
            assert (await anext(events)).payload.state is TaskState.ACCEPTED  # type: ignore[union-attr]
            first = client._tasks
            agent.kill()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in events:
                    pass
            assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
            agent.start()  # same port; its sessions are gone: the new stream renews ours
            await asyncio.wait_for(client.channel.channel_ready(), 30)  # as the controller waits for it to be back
            _, events = await client.run_and_watch(TaskSpec("after", "j", "noop"), timeout=30)
            ends = [e.payload async for e in events if isinstance(e.payload, Finished)]
            assert [f.status for f in ends] == [TaskState.SUCCEEDED]
            assert client._tasks is not first and first is not None and first.dead
    finally:
        agent.stop()
