"""An AgentClient's watches on its one Tasks stream (rpc/task_stream_caller.py), over a stand-in for the gRPC call:
what a session refusal, a broken stream and a burst of watches do to the watches, as WatchTask calls would."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.rpc.client import AgentClient
from tensorfleet_agent.rpc.task_stream_caller import rpc_error


class FakeCall:
    """A Tasks call: records what is written, answers what a test puts, or fails as `error` when read."""

    def __init__(
        self, error: grpc.aio.AioRpcError | None = None, write_error: grpc.aio.AioRpcError | None = None
    ) -> None:
        self.write_error = write_error
        self.requests: list[pb.TasksRequest] = []
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self.error = error
        self.metadata: Any = None
        self.cancelled = False

    async def write(self, request: pb.TasksRequest) -> None:
        if self.write_error is not None:
            raise self.write_error
        self.requests.append(request)

    async def read(self) -> Any:
        if self.error is not None:
            raise self.error
        response = await self.responses.get()
        if isinstance(response, Exception):
            raise response
        return response

    def cancel(self) -> None:
        self.cancelled = True

    def answer(self, watch_id: int, seq: int | None = None, end: bool = False, code: int = 0) -> None:
        event = pb.TaskEvent(seq=seq, progress=pb.Progress(fraction=0.5))
        batch = pb.TaskEventBatch(events=[event]) if seq is not None else None
        self.responses.put_nowait(
            pb.TasksResponse(items=[pb.TaskWatchItem(id=watch_id, batch=batch, end=end, code=code, details="why")])
        )


UNAUTHENTICATED = rpc_error(grpc.StatusCode.UNAUTHENTICATED, "this agent only runs work for paired controllers")


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    """An AgentClient whose Tasks calls are FakeCalls handed out in order (client.calls), its sessions numbered."""
    made = AgentClient("127.0.0.1:9")  # never dialled: the calls are stand-ins
    made.trust = object()  # type: ignore[assignment]  # a secure client: a refused session may be renewed
    calls: list[FakeCall] = []
    opened: list[FakeCall] = []
    sessions = iter(range(100))

    async def metadata() -> tuple[tuple[str, str], ...]:
        if not made._session:
            made._session = f"s{next(sessions)}"
        return (("authorization", f"Bearer {made._session}"),)

    def start(md: Any) -> FakeCall:
        call = calls.pop(0)
        call.metadata = md
        opened.append(call)
        return call

    monkeypatch.setattr(made, "session_metadata", metadata)
    monkeypatch.setattr(made, "_open_tasks", start)
    made.calls, made.opened = calls, opened  # type: ignore[attr-defined]
    yield made
    await made.close()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_burst_of_watches_goes_in_one_request_and_each_reads_its_own_items(client: Any) -> None:
    call = FakeCall()
    client.calls.append(call)
    events = [client.watch_task(f"t{i}", after_seq=i) for i in range(5)]
    await settle()
    assert len(call.requests) == 1
    assert [w.request.task_id for w in call.requests[0].watch] == [f"t{i}" for i in range(5)]
    ids = [w.id for w in call.requests[0].watch]
    call.answer(ids[3], seq=9, end=True)
    call.answer(ids[0], end=True, code=grpc.StatusCode.NOT_FOUND.value[0])
    assert [e.seq for e in [e async for e in events[3]]] == [9]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await anext(events[0])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and err.value.details() == "why"
    await events[1].aclose()  # left: an unwatch goes, the task runs on
    await settle()
    assert list(call.requests[-1].unwatch) == [ids[1]]


async def test_a_stream_refused_for_its_session_is_made_again_once_with_a_new_session(client: Any) -> None:
    client.calls.extend([FakeCall(UNAUTHENTICATED), FakeCall()])
    events = client.watch_task("t")
    await settle()
    first, second = client.opened
    assert first.metadata != second.metadata  # renewed
    (watch,) = second.requests[0].watch
    second.answer(watch.id, seq=1, end=True)
    assert [e.seq for e in [e async for e in events]] == [1]


async def test_a_session_refused_twice_is_the_watch_s_answer_not_a_loop(client: Any) -> None:
    client.calls.extend([FakeCall(UNAUTHENTICATED), FakeCall(UNAUTHENTICATED), FakeCall()])
    events = client.watch_task("t")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await anext(events)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(client.opened) == 2


async def test_a_watch_refused_for_an_expired_session_moves_to_a_new_stream_the_others_stay(client: Any) -> None:
    old, new = FakeCall(), FakeCall()
    client.calls.extend([old, new])
    running = client.watch_task("running")
    await settle()
    (w1,) = old.requests[0].watch
    old.answer(w1.id, seq=1)
    assert (await anext(running)).seq == 1
    late = client.watch_task("late")
    await settle()
    (w2,) = old.requests[1].watch
    old.answer(w2.id, end=True, code=grpc.StatusCode.UNAUTHENTICATED.value[0])  # the session expired meanwhile
    await settle()
    (moved,) = new.requests[0].watch
    assert moved.request.task_id == "late" and new.metadata != old.metadata
    new.answer(moved.id, seq=4, end=True)
    old.answer(w1.id, seq=2, end=True)  # the first stream still carries its open watch
    assert [e.seq for e in [e async for e in late]] == [4]
    assert [e.seq for e in [e async for e in running]] == [2]
    await settle()
    assert old.cancelled  # replaced, and its last watch ended: hung up


async def test_a_broken_stream_fails_every_watch_on_it_and_the_next_goes_on_a_new_one(client: Any) -> None:
    broken, fresh = FakeCall(), FakeCall()
    client.calls.extend([broken, fresh])
    a, b = client.watch_task("a"), client.watch_task("b")
    await settle()
    wa, wb = broken.requests[0].watch
    broken.answer(wa.id, seq=1)
    broken.answer(wb.id, seq=1)
    assert (await anext(a)).seq == 1 and (await anext(b)).seq == 1
    broken.responses.put_nowait(rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset"))
    for events in (a, b):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await anext(events)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    client.watch_task("c")
    await settle()
    assert [w.request.task_id for w in fresh.requests[0].watch] == ["c"]


async def test_a_send_the_transport_dropped_fails_the_watches_as_unavailable_not_internal(client: Any) -> None:
    """grpc says INTERNAL ("Internal error from Core") for a write on a stream whose connection went (an agent
    restarting) or that the agent refused as it opened: unanswered watches go once more on a new stream with a new
    session; dropped again, they fail as calls on a broken connection would, UNAVAILABLE, which the controller takes
    as "try again" (an INTERNAL is a refusal: the task would fail)."""
    dropped = rpc_error(grpc.StatusCode.INTERNAL, "Internal error from Core")
    denied = rpc_error(grpc.StatusCode.PERMISSION_DENIED, "this controller's session ended: it was unpaired")
    client.calls.extend([FakeCall(write_error=dropped), FakeCall(write_error=dropped), FakeCall(write_error=denied)])
    first = client.watch_task("a")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await anext(first)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "broke" in str(err.value.details())
    assert len(client.opened) == 2 and client.opened[0].metadata != client.opened[1].metadata  # once, renewed
    third = client.watch_task("c")  # a write refused with the call's own status keeps it
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await anext(third)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_first_send_dropped_as_the_session_is_refused_goes_again_with_a_new_session(client: Any) -> None:
    """The agent refusing a stream's session can end the call while its first request is being sent: grpc then
    reports the send dropped (INTERNAL) and keeps no other status. The watch goes again on a new stream."""
    dropped = rpc_error(grpc.StatusCode.INTERNAL, "Internal error from Core")
    fresh = FakeCall()
    client.calls.extend([FakeCall(write_error=dropped), fresh])
    events = client.watch_task("t")
    await settle()
    assert len(client.opened) == 2 and client.opened[0].metadata != fresh.metadata
    (watch,) = fresh.requests[0].watch
    fresh.answer(watch.id, seq=1, end=True)
    assert [e.seq for e in [e async for e in events]] == [1]
