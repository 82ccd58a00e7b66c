"""A worker keeps the last dataset datasets.load made, and what was derived from it (sklearn_basic's split), for
the job's next task, and drops both together when a task of another job comes (worker._forget_data)."""

from __future__ import annotations

from tensorfleet_agent.runtime import worker
from tensorfleet_agent.workloads import datasets
from tensorfleet_agent.workloads.sklearn_basic import _split


def test_the_split_is_made_once_per_dataset_and_forgotten_with_it() -> None:
    datasets.forget()
    x, y, _features, _classes = datasets.load("iris", {})
    first = _split(x, y, datasets.CLASSIFICATION)
    x2, y2, _features, _classes = datasets.load("iris", {})
    assert x2 is x and _split(x2, y2, datasets.CLASSIFICATION) is first  # a bundled trial's next call
    assert not first[0].flags.writeable
    worker._forget_data()  # another job's task
    x3, y3, _features, _classes = datasets.load("iris", {})
    again = _split(x3, y3, datasets.CLASSIFICATION)
    assert x3 is not x and again is not first and again[4] == first[4]  # made afresh: the same data, the same sha


def test_derived_values_of_other_arrays_are_not_kept() -> None:
    datasets.forget()
    x, y, _features, _classes = datasets.load("iris", {})
    calls: list[int] = []

    def make() -> int:
        calls.append(1)
        return len(calls)

    copy = x.copy()
    assert [datasets.derived(copy, y, "n", make) for _ in range(2)] == [1, 2]
    assert datasets.derived(x, y, "n", lambda: 7) == 7 and datasets.derived(x, y, "n", lambda: 8) == 7
    datasets.forget()
