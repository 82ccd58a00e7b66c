"""The one order of a sweep's trials: which of two scored trials is ahead. The controller picks the best trial and
the best-so-far copies by it (controller/trials.ranks_before), and a bundle's worker decides by it which trials'
models can still be kept (task.keeps_files, TaskSpec.trial_files): the two must agree, or the best trial could
have written no model."""

from __future__ import annotations


def ranks_before(a: tuple[float, int], b: tuple[float, int], maximize: bool) -> bool:
    """Whether trial a (score, index) is ahead of trial b: a better score, or the same score and a lower index."""
    if a[0] != b[0]:
        return a[0] > b[0] if maximize else a[0] < b[0]
    return a[1] < b[1]
