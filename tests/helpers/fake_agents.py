"""An in-process AgentPort: agents that live in the test, run nothing, and send the events the test makes them
send. With FakeClock and a store on a temp dir the controller core runs in milliseconds, no process, no socket."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tensorfleet_agent.core.types import (
    EnvironmentReady,
    EventPayload,
    Finished,
    StateChanged,
    TaskEvent,
    TaskSpec,
    TaskState,
)
from tensorfleet_desktop.controller.errors import AgentBusy, AgentCallError, TaskUnknown
from tensorfleet_desktop.controller.ports import AgentListener, AgentView, GpuView

HAS_BLOBS_LIMIT = 10_000  # sha256s one HasBlobs call may ask about (as the agent's service)


class FakeClock:
    """Time that moves only when the test (or a back-off's sleep) moves it."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeTask:
    spec: TaskSpec
    events: list[TaskEvent] = field(default_factory=list)
    cancelled: str = ""  # the reason, once the controller cancelled it
    checkpoint_grace: float = 0.0

    @property
    def ended(self) -> bool:
        return any(isinstance(e.payload, Finished) for e in self.events)


@dataclass
class FakeAgent:
    node_id: str
    slots: int = 1
    workloads: frozenset[str] = frozenset(
        {"noop", "sleep", "fail", "emit", "torch_mlp", "script", "decision_tree", "project"}
    )
    labels: dict[str, str] = field(default_factory=dict)
    online: bool = True
    refuse: str = ""  # run_task refuses with this (AgentBusy) while set
    refuse_maybe_done: bool = False  # ... as a timed-out call that may have been carried out
    reported_free: int | None = None  # free slots by its own telemetry (FakeAgents.telemetry)
    tasks: dict[str, FakeTask] = field(default_factory=dict)
    placed: set[str] = field(default_factory=set)
    blobs: set[str] = field(default_factory=set)
    generation: int = 0  # bumped when its connection breaks: open event streams end
    gpus: tuple[GpuView, ...] = ()  # its GPUs as its last telemetry said (FakeAgents.gpu_telemetry)
    shares_on: int | None = None  # RunTask puts a task sharing a GPU on this GPU and says so (None: says nothing)


class FakeAgents:
    """AgentPort over FakeAgents. Every call and every event wakes `wait()`ers."""

    def __init__(self) -> None:
        self.fleet: dict[str, FakeAgent] = {}
        self.calls: list[tuple[str, str, str]] = []  # (call, node id, attempt)
        self.has_blobs_calls: list[tuple[str, int]] = []  # (node id, how many sha256s asked about)
        self.pushed: list[tuple[str, str]] = []  # (node id, sha256) of every blob sent with put_blob / put_bytes
        # journaled by a cancelled task before its Finished (a project's outputs, collected as it ends)
        self.on_cancel: list[EventPayload] = []
        self.preempted: dict[str, tuple[str, float]] = {}  # attempt -> (reason, checkpoint grace) of preempt()
        self._listeners: list[AgentListener] = []
        self._changed = asyncio.Condition()

    # ---- the test's side

    def add(self, node_id: str, slots: int = 1, **labels: str) -> FakeAgent:
        agent = self.fleet[node_id] = FakeAgent(node_id, slots, labels=labels)
        self._emit("added", node_id)
        return agent

    def lose(self, node_id: str) -> None:
        agent = self.fleet[node_id]
        agent.online, agent.generation = False, agent.generation + 1
        self._notify()
        self._emit("lost", node_id)

    def back(self, node_id: str) -> None:
        self.fleet[node_id].online = True
        self._emit("back", node_id)

    def telemetry(self, node_id: str, slots_free: int) -> None:
        """The agent's telemetry arrives, counting `slots_free` free slots by its own reckoning."""
        self.fleet[node_id].reported_free = slots_free
        self._emit("telemetry", node_id)

    def gpu_telemetry(self, node_id: str, *gpus: GpuView) -> None:
        """The agent's GPUs as its telemetry reports them now (memory, shares, held whole)."""
        self.fleet[node_id].gpus = gpus
        self._emit("telemetry", node_id)

    def task(self, attempt: str) -> FakeTask:
        return next(a.tasks[attempt] for a in self.fleet.values() if attempt in a.tasks)

    def send(self, attempt: str, *payloads: EventPayload) -> None:
        """The attempt's agent journals these events (the controller's watcher receives them)."""
        task = self.task(attempt)
        for payload in payloads:
            task.events.append(TaskEvent(attempt, len(task.events) + 1, time.time(), payload))
        self._notify()

    def send_trial(self, attempt: str, trial: int, *payloads: EventPayload) -> None:
        """Events of a trial riding in the attempt's bundle (TaskSpec.trials): tagged with its index."""
        task = self.task(attempt)
        for payload in payloads:
            task.events.append(TaskEvent(attempt, len(task.events) + 1, time.time(), payload, trial))
        self._notify()

    def finish(self, attempt: str, status: TaskState = TaskState.SUCCEEDED, cause: str = "", error: str = "") -> None:
        self.send(attempt, Finished(status, cause or status.value.lower(), error))

    def running(self) -> list[str]:
        """Attempts started and neither ended nor cancelled, in the order they were started."""
        return [a for _, node, a in self.calls if _ == "run" and not self._over(node, a)]

    def _over(self, node: str, attempt: str) -> bool:
        task = self.fleet[node].tasks.get(attempt)
        return task is None or task.ended or bool(task.cancelled)

    async def wait(self, predicate: Callable[[], bool], timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    def _notify(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    def _emit(self, kind: str, node_id: str) -> None:
        for listener in list(self._listeners):
            listener(kind, node_id)

    # ---- AgentPort

    def agents(self) -> list[AgentView]:
        return [self._view(a) for a in self.fleet.values()]

    def agent(self, node_id: str) -> AgentView | None:
        agent = self.fleet.get(node_id)
        return self._view(agent) if agent is not None else None

    def _view(self, a: FakeAgent) -> AgentView:
        return AgentView(
            node_id=a.node_id,
            name=a.node_id,
            address=f"10.0.0.{len(a.node_id)}:50051",
            connected=a.online,
            online=a.online,
            schedulable=a.online,
            slots_free=max(0, a.slots - len(a.placed)),
            slots_total=a.slots,
            reported_slots_free=a.reported_free,
            gpu_slots=len(a.gpus),
            gpus=a.gpus,
            labels=dict(a.labels),
            workloads=a.workloads,
            placed=frozenset(a.placed),
        )

    def subscribe(self, listener: AgentListener) -> None:
        self._listeners.append(listener)

    def hold(self, node_id: str, attempt: str) -> None:
        self.fleet[node_id].placed.add(attempt)

    def release(self, node_id: str, attempt: str) -> None:
        if node_id in self.fleet:
            self.fleet[node_id].placed.discard(attempt)
            self._notify()

    def _online(self, node_id: str) -> FakeAgent:
        agent = self.fleet.get(node_id)
        if agent is None or not agent.online:
            raise AgentBusy("agent has no connection")
        return agent

    async def run_task(self, node_id: str, spec: TaskSpec) -> tuple[int, int] | None:
        agent = self._online(node_id)
        if agent.refuse:
            self.calls.append(("refused", node_id, spec.task_id))
            self._notify()
            raise AgentBusy(agent.refuse, maybe_done=agent.refuse_maybe_done)
        missing = [ref.name for ref in spec.inputs if ref.sha256 not in agent.blobs]
        if missing:  # what a real agent refuses: RunTask names inputs it does not hold
            raise AgentCallError(f"inputs not on the agent: {', '.join(missing)}")
        self.calls.append(("run", node_id, spec.task_id))
        agent.tasks[spec.task_id] = FakeTask(spec)
        # A project task lays out its files and builds its env first: the test says when it is ready (`ready`).
        first = TaskState.PREPARING if spec.workload == "project" else TaskState.RUNNING
        self.send(spec.task_id, StateChanged(first))
        if agent.shares_on is not None and spec.gpu_memory_bytes:  # the agent's own best fit chose this GPU
            return agent.shares_on, spec.gpu_memory_bytes
        return None

    async def run_and_watch(
        self, node_id: str, spec: TaskSpec
    ) -> tuple[tuple[int, int] | None, AsyncGenerator[TaskEvent, None]]:
        """As the agent's WatchTask with `run`: RunTask (which a test may override), then its events from the first."""
        shared = await self.run_task(node_id, spec)
        return shared, self.watch_task(node_id, spec.task_id, 0)

    def ready(self, attempt: str, environment: EnvironmentReady) -> None:
        """A PREPARING project task's env is ready and its command starts."""
        self.send(attempt, environment, StateChanged(TaskState.RUNNING))

    async def watch_task(self, node_id: str, attempt: str, after_seq: int) -> AsyncGenerator[TaskEvent, None]:
        agent = self._online(node_id)
        task = agent.tasks.get(attempt)
        if task is None:
            raise TaskUnknown(f"no task {attempt}")
        generation, sent = agent.generation, after_seq
        while True:
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._news, agent, task, sent, generation))
            if agent.generation != generation:
                raise AgentBusy("connection lost")
            for event in task.events[sent:]:
                sent = event.seq
                yield event

    @staticmethod
    def _news(agent: FakeAgent, task: FakeTask, sent: int, generation: int) -> bool:
        return len(task.events) > sent or agent.generation != generation

    async def cancel_task(self, node_id: str, attempt: str, reason: str, checkpoint_grace: float = 0.0) -> None:
        agent = self._online(node_id)
        self.calls.append(("cancel", node_id, attempt))
        task = agent.tasks.get(attempt)
        if task is not None and not task.ended:
            task.cancelled, task.checkpoint_grace = reason, checkpoint_grace
            if not checkpoint_grace:  # a pause's checkpoint-and-stop ends when the test says
                self.send(attempt, *self.on_cancel)
                self.finish(attempt, TaskState.CANCELLED, "cancelled", reason)
        self._notify()

    async def preempt(self, node_id: str, attempt: str, reason: str, checkpoint_grace: float) -> None:
        """As the agent's Executor.preempt, save that the task ends when the test says (`finish` it PREEMPTED):
        the call and its reason are recorded (`preempted`)."""
        self._online(node_id)
        self.calls.append(("preempt", node_id, attempt))
        self.preempted[attempt] = (reason, checkpoint_grace)
        self._notify()

    async def list_tasks(self, node_id: str) -> list[tuple[str, str]]:
        agent = self._online(node_id)
        return [(a, t.spec.job_id) for a, t in agent.tasks.items() if not t.ended]

    async def has_blobs(self, node_id: str, digests: Sequence[str]) -> set[str]:
        agent = self._online(node_id)
        if len(digests) > HAS_BLOBS_LIMIT:  # the agent's own limit
            raise AgentCallError(f"HasBlobs: {len(digests)} sha256s, at most {HAS_BLOBS_LIMIT} per call")
        self.has_blobs_calls.append((node_id, len(digests)))
        return agent.blobs & set(digests)

    async def put_blob(self, node_id: str, path: Path, sha256: str) -> None:
        agent = self._online(node_id)
        if not await asyncio.to_thread(path.is_file):
            raise FileNotFoundError(path)
        if path.name != sha256:  # a real agent hashes what arrives and refuses a mismatch
            raise AgentCallError(f"blob announced as {sha256} is {path.name}")
        agent.blobs.add(sha256)
        self.pushed.append((node_id, sha256))

    async def put_bytes(self, node_id: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self._online(node_id).blobs.add(digest)
        self.pushed.append((node_id, digest))
        return digest

    async def fetch_blob(self, node_id: str, sha256: str, size: int, url: str) -> None:
        self._online(node_id).blobs.add(sha256)

    async def push_blob(self, node_id: str, sha256: str, url: str) -> None:
        raise AgentBusy("no object store here")

    async def get_blob(self, node_id: str, sha256: str, dest: Path) -> None:
        raise AgentBusy("this fake keeps no file contents")
