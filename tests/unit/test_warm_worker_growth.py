"""A warm worker that grew (executor._lean, docs/architecture.md "Warm workers"): a built-in task's worker is
parked for the next job's task only while its resident memory stays within _REUSE_GROWTH of what it held after
its first task, since the next job's memory limit counts all of it."""

from __future__ import annotations

from tensorfleet_agent.runtime import executor
from tensorfleet_agent.runtime.executor import Executor


class _Worker:
    """What _lean reads of a worker: its own RSS now, and the one it had after its first task."""

    def __init__(self, *rss: int) -> None:
        self._rss = list(rss)
        self.first_rss = 0

    def own_rss(self) -> int:
        return self._rss.pop(0)


def test_a_worker_is_parked_again_only_while_it_has_not_grown() -> None:
    base = 120 << 20
    worker = _Worker(base, base + (10 << 20), base + executor._REUSE_GROWTH + 1)
    assert Executor._lean(worker)  # type: ignore[arg-type]  # its first task: what it holds is its measure
    assert worker.first_rss == base
    assert Executor._lean(worker)  # type: ignore[arg-type]  # 10 MiB more: kept
    assert not Executor._lean(worker)  # type: ignore[arg-type]  # past the growth allowed: retired


def test_a_worker_already_gone_is_not_parked() -> None:
    assert not Executor._lean(_Worker(0))  # type: ignore[arg-type]
