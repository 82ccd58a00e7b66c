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
