"""AgentService.Tasks on the agent's side (rpc/task_stream_agent.py), without gRPC: each watch's messages reach the
caller as WatchTask's would, a watch's failure ends only that watch, and what is ready goes out together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.core.errors import NotFound, ValidationError
from tensorfleet_agent.rpc.task_stream_agent import TaskStream, item


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    code = grpc.StatusCode.NOT_FOUND if isinstance(exc, NotFound) else grpc.StatusCode.INTERNAL
    return code, str(exc)


def batch(seq: int) -> bytes:
    return pb.TaskEventBatch(events=[pb.TaskEvent(seq=seq)]).SerializeToString()


class Requests:
    """The caller's side of the stream: requests put in, closed when it is done."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[pb.TasksRequest | None] = asyncio.Queue()

    def send(self, watch: dict[int, str] | None = None, unwatch: tuple[int, ...] = ()) -> None:
        watches = [pb.TaskWatch(id=i, request=pb.WatchTaskRequest(task_id=t)) for i, t in (watch or {}).items()]
        self.queue.put_nowait(pb.TasksRequest(watch=watches, unwatch=unwatch))

    def close(self) -> None:
        self.queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[pb.TasksRequest]:
        while (request := await self.queue.get()) is not None:
            yield request


def parse(responses: list[bytes]) -> list[list[pb.TaskWatchItem]]:
    return [list(pb.TasksResponse.FromString(r).items) for r in responses]


def test_an_item_is_a_tasks_response_around_the_batch_s_own_bytes() -> None:
    data = batch(7) + pb.TaskEventBatch(accepted=pb.RunTaskResponse(task_id="t")).SerializeToString()
    raw = item(300, data) + item(2**40, end=True, code=5, details="no task here: ünïcode")
    first, second = pb.TasksResponse.FromString(raw).items
    assert first.id == 300 and first.batch.events[0].seq == 7 and first.batch.accepted.task_id == "t"
    assert not first.end and first.code == 0
    assert second.id == 2**40 and not second.HasField("batch") and second.end
    assert (second.code, second.details) == (5, "no task here: ünïcode")


async def test_watches_are_answered_each_in_order_and_a_failure_ends_only_its_own() -> None:
    async def watch(request: pb.WatchTaskRequest) -> AsyncIterator[bytes]:
        if request.task_id == "gone":
            raise NotFound("no task 'gone' on this agent")
        for seq in (1, 2, 3):
            yield batch(seq)
            await asyncio.sleep(0)

    requests = Requests()
    requests.send({1: "a", 2: "gone", 3: "b"})
    requests.close()
    out = [r async for r in TaskStream(watch, status_of, lambda: True).serve(requests)]  # ends once all have ended
    items = [i for response in parse(out) for i in response]
    by_id: dict[int, list[pb.TaskWatchItem]] = {}
    for i in items:
        by_id.setdefault(i.id, []).append(i)
    for wid in (1, 3):
        assert [e.seq for i in by_id[wid] if i.HasField("batch") for e in i.batch.events] == [1, 2, 3]
        assert [i.end for i in by_id[wid]] == [False, False, False, True] and by_id[wid][-1].code == 0
    (refused,) = by_id[2]
    assert refused.end and refused.code == grpc.StatusCode.NOT_FOUND.value[0] and "'gone'" in refused.details
    assert len(out) < len(items)  # items ready together went out in one response


async def test_an_unwatch_stops_following_without_an_end_and_the_rest_go_on() -> None:
    stopped = asyncio.Event()

    async def watch(request: pb.WatchTaskRequest) -> AsyncIterator[bytes]:
        try:
            yield batch(1)
            await asyncio.sleep(3600)  # a task that runs on
        finally:
            stopped.set()

    requests = Requests()
    stream = TaskStream(watch, status_of, lambda: True).serve(requests)
    requests.send({1: "long"})
    assert [i.id for i in parse([await anext(stream)])[0]] == [1]
    requests.send(unwatch=(1, 99))  # 99: unknown, ignored
    await asyncio.wait_for(stopped.wait(), 5)
    requests.close()
    assert [r async for r in stream] == []  # nothing more for it, not even an end; then the stream ends


async def test_a_session_that_ended_gets_new_watches_refused_as_unauthenticated() -> None:
    calls: list[str] = []

    async def watch(request: pb.WatchTaskRequest) -> AsyncIterator[bytes]:
        calls.append(request.task_id)
        yield batch(1)

    requests = Requests()
    requests.send({1: "t"})
    requests.close()
    out = [r async for r in TaskStream(watch, status_of, lambda: False).serve(requests)]
    ((refused,),) = parse(out)
    assert refused.end and refused.code == grpc.StatusCode.UNAUTHENTICATED.value[0] and "session" in refused.details
    assert calls == []


async def test_a_watch_id_used_twice_ends_the_stream_naming_it() -> None:
    async def watch(request: pb.WatchTaskRequest) -> AsyncIterator[bytes]:
        await asyncio.sleep(3600)
        yield b""

    requests = Requests()
    requests.send({4: "a"})
    requests.send({4: "b"})
    with pytest.raises(ValidationError, match=r"watch\.id.*4"):
        async for _ in TaskStream(watch, status_of, lambda: True).serve(requests):
            pass
