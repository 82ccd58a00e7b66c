"""WatchTask with `run` answers with the acceptance and the events its journal has committed by then in one
message; a journal that cannot commit in time does not hold the acceptance back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.core.types import StateChanged, TaskEvent, TaskSpec, TaskState
from tensorfleet_agent.core.version import PROTOCOL_VERSION
from tensorfleet_agent.rpc import convert, service
from tensorfleet_agent.rpc.service import AgentServicer


class _Executor:
    """What WatchTask asks of the executor: the task is taken, and its journal commits when `committed` is set."""

    def __init__(self) -> None:
        self.committed = asyncio.Event()
        self.started: list[str] = []

    async def run_task(self, spec: TaskSpec) -> tuple[int, ...]:
        self.started.append(spec.task_id)
        return (0,)

    def shared_gpu(self, spec: TaskSpec, slot_ids: tuple[int, ...]) -> None:
        return None

    async def watch(self, task_id: str, after_seq: int) -> AsyncIterator[bytes]:
        await self.committed.wait()
        events = [
            TaskEvent(task_id, 1, 1.0, StateChanged(TaskState.ACCEPTED, "slots [0]")),
            TaskEvent(task_id, 2, 1.1, StateChanged(TaskState.RUNNING, "")),
        ]
        for event in events[after_seq:]:
            yield convert.event_record(event)


class _Context:
    async def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")


def _request(task_id: str) -> pb.WatchTaskRequest:
    spec = convert.task_spec_to_pb(TaskSpec(task_id, "j", "noop"))
    return pb.WatchTaskRequest(task_id=task_id, run=pb.RunTaskRequest(protocol_version=PROTOCOL_VERSION, spec=spec))


def _servicer(executor: _Executor) -> AgentServicer:
    return AgentServicer(executor, blobs=None, sampler=None, node_info=lambda: None)  # type: ignore[arg-type]


async def test_the_acceptance_carries_the_events_committed_with_it() -> None:
    executor = _Executor()
    executor.committed.set()
    stream = _servicer(executor).WatchTask(_request("t1"), _Context())
    messages = [pb.TaskEventBatch.FromString(m) async for m in stream]
    first = messages[0]
    assert first.accepted.task_id == "t1" and list(first.accepted.slot_ids) == [0]
    assert [e.seq for e in first.events] == [1]  # ACCEPTED rides with the acceptance: no message of its own
    assert [e.seq for m in messages for e in m.events] == [1, 2]  # then the rest, none twice
    assert not any(m.HasField("accepted") for m in messages[1:])


async def test_a_journal_that_cannot_commit_in_time_lets_the_acceptance_go_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "FIRST_EVENTS_WAIT", 0.05)
    executor = _Executor()
    stream = _servicer(executor).WatchTask(_request("t2"), _Context())
    first = pb.TaskEventBatch.FromString(await asyncio.wait_for(anext(stream), 5))
    assert first.accepted.task_id == "t2" and list(first.events) == []
    assert executor.started == ["t2"]  # started once: the wait is not a second RunTask
    executor.committed.set()
    rest = [pb.TaskEventBatch.FromString(m) async for m in stream]
    assert [e.seq for m in rest for e in m.events] == [1, 2]  # from the first event: nothing lost by the wait
