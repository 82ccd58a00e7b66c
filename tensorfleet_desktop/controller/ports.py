"""What the controller core needs from the world outside it: agents to run tasks on, and a clock.

The core talks to agents only through `AgentPort`; the gRPC fleet implements it (agent_link.py) and the
in-process tests implement it with a fake. Calls raise the core's own errors (errors.py), never gRPC's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tensorfleet_agent.core.types import TaskEvent, TaskSpec

#: Below this much free space in its data dir an agent gets no new tasks, and the controller takes no new job:
#: they would fail writing their journal, datasets, checkpoints or results (running tasks go on).
MIN_FREE_DISK_BYTES = 64 * 2**20

#: (kind, node id): kind is "added", "back", "paired", "lost", "removed" or "telemetry".
AgentListener = Callable[[str, str], None]


@dataclass(frozen=True)
class GpuView:
    """One GPU of an agent: its memory (NVML) and what the agent's slots say about it, by its last telemetry."""

    index: int
    total_memory: int
    used_memory: int = 0  # NVML: every process on it, the tasks sharing it included
    reserved_memory: int = 0  # promised to the tasks sharing it by memory
    shared_tasks: int = 0
    exclusive: bool = False  # a task holds it whole


@dataclass(frozen=True)
class AgentView:
    """One agent as the scheduler sees it at one moment."""

    node_id: str
    name: str
    address: str  # host:port; rank 0 of a gang hosts the rendezvous on its host
    connected: bool  # the controller holds a connection to it (it may be LOST meanwhile)
    online: bool  # connected and ONLINE: its attempts can be watched and cancelled
    schedulable: bool  # online, paired, not draining, not stopping, room on its disk
    slots_free: int  # its slots less the attempts we hold there
    slots_total: int = 0  # 0: not known
    reported_slots_free: int | None = None  # free slots by its own last telemetry (None: none heard yet)
    gpu_slots: int = 0
    gpu_free_memory: int = 0
    load: float = 0.0  # cpu percent
    labels: dict[str, str] = field(default_factory=dict)
    workloads: frozenset[str] = frozenset()
    sklearn_version: str = ""
    placed: frozenset[str] = frozenset()  # our attempts it holds a slot for
    fingerprint: str = ""  # its pinned TLS certificate's (a reader checks a peer against it); "" with --insecure
    gpus: tuple[GpuView, ...] = ()  # per GPU, for packing tasks that share one by memory


#: (reader node id, content ids, seconds valid, job id) -> (a serialized PeerTicket, its signature by the
#: controller's identity key): what a reader shows the peers it fetches dataset blobs from (issue 20).
TicketMaker = Callable[[str, list[str], float, str], tuple[bytes, bytes]]


class AgentPort(Protocol):
    """The agents, by node id. Every call may raise AgentBusy, TaskUnknown or AgentCallError."""

    def agents(self) -> list[AgentView]: ...

    def agent(self, node_id: str) -> AgentView | None:
        """None: no such agent is known (any more)."""
        ...

    def subscribe(self, listener: AgentListener) -> None: ...

    def hold(self, node_id: str, attempt: str) -> None:
        """Count a slot of the agent as ours for this attempt (until released)."""
        ...

    def release(self, node_id: str, attempt: str) -> None: ...

    async def run_and_watch(
        self, node_id: str, spec: TaskSpec
    ) -> tuple[tuple[int, int] | None, AsyncGenerator[TaskEvent, None]]:
        """Start the task there and follow it, in one call: for a task sharing a GPU by memory, (the GPU the agent put
        it on, the bytes promised there), else None (also from an agent that does not say); and the task's events
        from its first (what watch_task(node_id, spec.task_id, 0) would give, without a second call)."""
        ...

    def watch_task(self, node_id: str, attempt: str, after_seq: int) -> AsyncIterator[TaskEvent]: ...

    async def cancel_task(self, node_id: str, attempt: str, reason: str, checkpoint_grace: float = 0.0) -> None: ...

    async def preempt(self, node_id: str, attempt: str, reason: str, checkpoint_grace: float) -> None:
        """Take the attempt's room for a more important job: a workload that can checkpoint saves one and stops
        (killed after the grace), another is stopped now; it ends CANCELLED with exit cause `preempted`."""
        ...

    async def list_tasks(self, node_id: str) -> list[tuple[str, str]]:
        """(attempt, job id) of every task the agent runs now."""
        ...

    async def has_blobs(self, node_id: str, digests: Sequence[str]) -> set[str]: ...

    async def put_blob(self, node_id: str, path: Path, sha256: str) -> None:
        """Send the blob stored at `path` (its content hashes to `sha256`; the agent checks) to an agent that lacks
        it (the caller asked HasBlobs first)."""
        ...

    async def put_bytes(self, node_id: str, data: bytes) -> str:
        """The data's sha256 (the name it has on the agent)."""
        ...

    async def fetch_blob(self, node_id: str, sha256: str, size: int, url: str) -> None:
        """The agent downloads the blob itself (from the object store)."""
        ...

    async def push_blob(self, node_id: str, sha256: str, url: str) -> None:
        """The agent uploads the blob itself (to the object store)."""
        ...

    async def get_blob(self, node_id: str, sha256: str, dest: Path) -> None:
        """Copy the blob from the agent into `dest` (checked against its sha256)."""
        ...


class Clock(Protocol):
    """Wall time, monotonic time and sleeping: a test's clock makes a back-off take no time."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
