"""Slot accounting: one slot per GPU, or N CPU slots on a machine without GPUs.

A GPU slot is either free, held whole (a GPU task, or a CPU task on a machine whose slots are its GPUs), or shared:
tasks that asked for a share of its memory (TaskSpec.gpu_memory_bytes) join it while their promises fit in the GPU's
total less what other processes use there. A shared slot counts as one slot in use (slots_free), whatever the
number of tasks on it; its tasks each get the slot's thread caps (they share those cores, as they share the GPU)."""

from __future__ import annotations

from dataclasses import dataclass

from tensorfleet_agent.core.errors import ResourcesExhausted
from tensorfleet_agent.core.sizes import format_size


@dataclass(frozen=True)
class Slot:
    id: int
    gpu_index: int | None
    threads: int  # CPU threads a task in this slot may use


@dataclass
class _Shared:
    """The tasks sharing one GPU slot by memory."""

    reserved: int = 0  # bytes promised to them
    tasks: int = 0


@dataclass(frozen=True)
class GpuUse:
    """What the slots say about one GPU (telemetry's memory_reserved_bytes, shared_tasks, exclusive)."""

    reserved: int
    shared_tasks: int
    exclusive: bool


class SlotPool:
    def __init__(
        self,
        cpu_count: int,
        gpu_indices: list[int],
        cpu_slots: int | None = None,
        gpu_memory: dict[int, int] | None = None,
    ) -> None:
        cpu_count = max(1, cpu_count)
        self.gpu_memory = dict(gpu_memory or {})  # GPU index -> its memory in bytes (NVML's total)
        self._shared: dict[int, _Shared] = {}  # slot id -> its shared tasks (such a slot is not in _free)
        if gpu_indices and cpu_slots is None:
            count = len(gpu_indices)
            gpus: list[int | None] = list(gpu_indices)
        else:
            count = cpu_slots if cpu_slots is not None else default_cpu_slots(cpu_count)
            if count < 1:
                raise ValueError(f"--cpu-slots must be >= 1, got {count}")
            gpus = [None] * count
            for i, index in enumerate(gpu_indices[:count]):
                gpus[i] = index
        threads = max(1, cpu_count // count)
        self.slots = tuple(Slot(i, gpus[i], threads) for i in range(count))
        self._free = set(range(count))

    @property
    def total(self) -> int:
        return len(self.slots)

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def gpu_slots(self) -> int:
        return sum(1 for s in self.slots if s.gpu_index is not None)

    def acquire(self, gpus: int) -> tuple[Slot, ...]:
        """Take the slots a task needs: `gpus` GPU slots, or one slot for a CPU task."""
        if gpus < 0:
            raise ValueError("gpus must be >= 0")
        if gpus > self.gpu_slots:
            raise ResourcesExhausted(f"task wants {gpus} GPU(s); this agent has {self.gpu_slots}")
        if gpus == 0:
            # CPU tasks prefer slots without a GPU so GPU slots stay free for GPU work.
            free = sorted(self._free, key=lambda i: (self.slots[i].gpu_index is not None, i))
            chosen = free[:1]
            wanted = 1
        else:
            chosen = sorted(i for i in self._free if self.slots[i].gpu_index is not None)[:gpus]
            wanted = gpus
        if len(chosen) < wanted:
            raise ResourcesExhausted(
                f"no free slot fits: task wants {wanted} slot(s){' with GPUs' if gpus else ''}, "
                f"{self.free} of {self.total} free"
            )
        self._free.difference_update(chosen)
        return tuple(self.slots[i] for i in chosen)

    def release(self, slots: tuple[Slot, ...]) -> None:
        self._free.update(s.id for s in slots)

    def acquire_share(
        self,
        memory: int,
        others: dict[int, int],
        ours: dict[int, int] | None = None,
        avoid: frozenset[int] = frozenset(),
    ) -> Slot:
        """A GPU slot for a task that shares its GPU, promised `memory` bytes: the fullest GPU where it still fits
        (best fit, so large requests still find an emptier GPU), among the free GPU slots and those shared already.
        `others`: GPU index -> bytes that processes other than this agent's tasks use there (NVML); `ours`: what
        this agent's own processes use there: a GPU's room is its total less others' use and the larger of what
        its sharing tasks were promised and what they use (a task over its share takes memory that is not there).
        `avoid`: GPU indexes it may not go to (another rank of its gang shares them: NCCL wants one GPU per rank)."""
        if memory <= 0:
            raise ValueError("a GPU share must be > 0 bytes")
        ours = ours or {}
        best: tuple[int, Slot] | None = None
        rooms = []
        for slot in self.slots:
            if slot.gpu_index is None:
                continue
            shared = self._shared.get(slot.id)
            if shared is None and slot.id not in self._free:
                rooms.append(f"GPU {slot.gpu_index}: held whole")
                continue
            if slot.gpu_index in avoid:
                rooms.append(f"GPU {slot.gpu_index}: another rank of this gang shares it")
                continue
            room = self.gpu_memory.get(slot.gpu_index, 0) - others.get(slot.gpu_index, 0)
            room -= max(shared.reserved if shared is not None else 0, ours.get(slot.gpu_index, 0))
            rooms.append(f"GPU {slot.gpu_index}: {format_size(max(0, room))} unpromised")
            if room >= memory and (best is None or room < best[0]):
                best = (room, slot)
        if best is None:
            raise ResourcesExhausted(
                f"no GPU has {format_size(memory)} of memory to share: {'; '.join(rooms) or 'this agent has no GPU'}"
            )
        slot = best[1]
        self._free.discard(slot.id)
        shared = self._shared.setdefault(slot.id, _Shared())
        shared.reserved += memory
        shared.tasks += 1
        return slot

    def release_share(self, slot: Slot, memory: int) -> None:
        """A sharing task ended: the GPU's slot is free again once its last sharing task has."""
        shared = self._shared.get(slot.id)
        if shared is None:
            return
        shared.reserved -= memory
        shared.tasks -= 1
        if shared.tasks <= 0:
            del self._shared[slot.id]
            self._free.add(slot.id)

    def gpu_use(self) -> dict[int, GpuUse]:
        """GPU index -> what is promised on it, how many tasks share it, whether a task holds it whole."""
        out = {}
        for slot in self.slots:
            if slot.gpu_index is None:
                continue
            shared = self._shared.get(slot.id)
            if shared is not None:
                out[slot.gpu_index] = GpuUse(shared.reserved, shared.tasks, False)
            else:
                out[slot.gpu_index] = GpuUse(0, 0, slot.id not in self._free)
        return out


def default_cpu_slots(cpu_count: int) -> int:
    return max(1, cpu_count // 4)


@dataclass
class _Gang:
    chunks: list[tuple[Slot, ...] | None]  # per local rank; None: released (never claimed)
    claimed: set[int]
    done: set[int]


class GangSlots:
    """The GPU slots of a job's ranks that share this agent, chosen together, as torchrun and Ray Train do: every
    rank of the group sees the union of the group's GPUs in CUDA_VISIBLE_DEVICES, in local-rank order, so
    cuda:LOCAL_RANK is the rank's own GPU (with several GPUs per rank, its own are LOCAL_RANK*gpus onwards).

    The first rank of a group to arrive reserves the whole group's GPUs; each rank then takes its own share and
    gives it back when it ends. Shares no rank claimed are given back once a rank of the group ends, or when a
    newer attempt of the job arrives."""

    def __init__(self, pool: SlotPool) -> None:
        self.pool = pool
        self._gangs: dict[tuple[str, int], _Gang] = {}

    def acquire(
        self, job_id: str, attempt: int, local_rank: int, local_world_size: int, gpus: int
    ) -> tuple[tuple[Slot, ...], tuple[int, ...]]:
        """(this rank's slots, the GPU indices it sees, in order)."""
        if gpus == 0 or local_world_size <= 1 or not 0 <= local_rank < local_world_size:
            return self._alone(gpus)
        key = (job_id, attempt)
        for older in [k for k in self._gangs if k[0] == job_id and k != key]:
            self._release_unclaimed(self._gangs.pop(older))
        gang = self._gangs.get(key)
        if gang is None:
            try:
                taken = self.pool.acquire(gpus * local_world_size)
            except ResourcesExhausted:  # the group's GPUs are not all free: this rank alone, as before
                return self._alone(gpus)
            gang = _Gang([taken[i * gpus : (i + 1) * gpus] for i in range(local_world_size)], set(), set())
            self._gangs[key] = gang
        mine = gang.chunks[local_rank] if len(gang.chunks) == local_world_size else None
        if mine is None or local_rank in gang.claimed:
            return self._alone(gpus)
        gang.claimed.add(local_rank)
        visible = tuple(s.gpu_index for chunk in gang.chunks if chunk is not None for s in chunk)
        return mine, tuple(i for i in visible if i is not None)

    def finished(self, job_id: str, attempt: int, local_rank: int) -> None:
        """A rank ended (its own slots are given back by the caller): free the shares nobody claimed."""
        key = (job_id, attempt)
        gang = self._gangs.get(key)
        if gang is None or local_rank not in gang.claimed:
            return
        gang.done.add(local_rank)
        self._release_unclaimed(gang)
        if gang.done >= gang.claimed:
            del self._gangs[key]

    def _release_unclaimed(self, gang: _Gang) -> None:
        for index, chunk in enumerate(gang.chunks):
            if chunk is not None and index not in gang.claimed:
                self.pool.release(chunk)
                gang.chunks[index] = None

    def _alone(self, gpus: int) -> tuple[tuple[Slot, ...], tuple[int, ...]]:
        slots = self.pool.acquire(gpus)
        return slots, tuple(s.gpu_index for s in slots if s.gpu_index is not None)
