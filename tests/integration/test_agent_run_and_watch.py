"""WatchTask with `run`: a real agent starts the task and streams its events in the one call the controller makes
to send a task (RunTask's checks and refusals unchanged)."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator

import grpc
import pytest

from helpers.agents import AgentProcess
from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.core.types import BlobRef, Finished, StateChanged, TaskSpec, TaskState
from tensorfleet_agent.core.version import PROTOCOL_VERSION
from tensorfleet_agent.rpc import convert

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    started = AgentProcess(tmp_path_factory.mktemp("runwatch") / "agent").start()
    yield started
    started.stop()


async def test_the_task_starts_and_its_events_follow_in_one_call(agent: AgentProcess) -> None:
    async with agent.client() as client:
        accepted, events = await client.run_and_watch(TaskSpec("rw-emit", "j", "emit", {"points": 50}))
        seen = [e async for e in events]
        assert accepted.slot_ids and all(0 <= s < 2 for s in accepted.slot_ids)
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))  # from the first, none twice
        states = [e.payload.state for e in seen if isinstance(e.payload, StateChanged)]
        assert states[:2] == [TaskState.ACCEPTED, TaskState.RUNNING]
        end = seen[-1].payload
        assert isinstance(end, Finished) and end.status is TaskState.SUCCEEDED
        # the same spec again is the same task (RunTask is idempotent): its acceptance again, its journal replayed
        again, replay = await client.run_and_watch(TaskSpec("rw-emit", "j", "emit", {"points": 50}))
        assert again.slot_ids == accepted.slot_ids
        assert [e.seq for e in [e async for e in replay]] == [e.seq for e in seen]


async def test_a_refusal_is_the_call_s_status_as_run_task_s(agent: AgentProcess) -> None:
    async with agent.client() as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.run_and_watch(TaskSpec("rw-bad", "j", "sleep", {"seconds": "soon"}))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "seconds" in str(err.value.details())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.run_and_watch(TaskSpec("rw-noinput", "j", "noop", inputs=(BlobRef("x", "e" * 64),)))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "PutBlob" in str(err.value.details())
        # the watched id and the started one must agree: nothing is started otherwise
        run = pb.RunTaskRequest(
            protocol_version=PROTOCOL_VERSION, spec=convert.task_spec_to_pb(TaskSpec("rw-other", "j", "noop"))
        )
        request = pb.WatchTaskRequest(task_id="rw-mine", run=run)
        metadata = await client.session_metadata()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in client.stub.WatchTask(request, metadata=metadata):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "run.spec.task_id" in str(err.value.details())
        assert "rw-other" not in {t.task_id for t in await client.list_tasks(include_finished=True)}


async def test_closing_the_stream_leaves_the_task_running(agent: AgentProcess) -> None:
    async with agent.client() as client:
        _, events = await client.run_and_watch(TaskSpec("rw-sleep", "j", "sleep", {"seconds": 1.0}))
        first = await anext(events)
        assert isinstance(first.payload, StateChanged) and first.payload.state is TaskState.ACCEPTED
        await events.aclose()  # the controller stops following; the task is not cancelled
        rest = [e async for e in client.watch_task("rw-sleep")]
        end = rest[-1].payload
        assert isinstance(end, Finished) and end.status is TaskState.SUCCEEDED


async def test_a_stream_dropped_at_the_task_s_end_ends_by_itself_not_unwatched(agent: AgentProcess) -> None:
    """The controller stops reading at a task's end event and drops its events: the watch is not left (an unwatch
    message for nothing) but ends as the agent ends it, and nothing is left for the loop to finalize."""
    loop = asyncio.get_running_loop()
    finalized: list[object] = []
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(hooks.firstiter, lambda agen: (finalized.append(agen), loop.call_soon(agen.aclose)))
    try:
        async with agent.client() as client:
            _, events = await client.run_and_watch(TaskSpec("rw-drop", "j", "noop"))
            async for event in events:
                if isinstance(event.payload, Finished):
                    break
            watch = events._watch
            unwatched: list[object] = []
            watch.stream.unwatch = unwatched.append  # type: ignore[method-assign]
            del events, event
            gc.collect()
            for _ in range(200):
                if watch.ended:
                    break
                await asyncio.sleep(0.01)
            assert watch.ended and unwatched == []
            assert not watch.stream.dead  # the stream stays open for the next task
    finally:
        sys.set_asyncgen_hooks(*hooks)
    assert finalized == []
