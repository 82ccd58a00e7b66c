"""Slot accounting: one slot per GPU, or N CPU slots on a machine without GPUs."""

from __future__ import annotations

from dataclasses import dataclass

from tensorfleet_agent.core.errors import ResourcesExhausted


@dataclass(frozen=True)
class Slot:
    id: int
    gpu_index: int | None
    threads: int  # CPU threads a task in this slot may use


class SlotPool:
    def __init__(self, cpu_count: int, gpu_indices: list[int], cpu_slots: int | None = None) -> None:
        cpu_count = max(1, cpu_count)
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
