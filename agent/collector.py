"""The cyclic garbage collector of the two long-running daemons (`tensorfleet serve`, the agent).

A full collection holds the GIL while it scans every tracked object: on a controller holding 50,000 jobs, 0.5-0.8 s
of a stopped loop each time, and CPython ran one every 1.5 s while a queue drained, each finding next to nothing (the
jobs, tasks and events are dataclasses without cycles, freed by their reference counts). So a daemon collects
nothing while it starts (`pause`), then `settle` freezes what it loaded (never scanned again, still freed when its
last reference goes) and spaces full collections out. Measured before and after: docs/architecture.md, 'Pauses: the
garbage collector'. Called by the daemons' entry points only: both change the whole process.
"""

from __future__ import annotations

import gc

#: young-generation (generation 1) collections between two full ones; CPython's default is 10. Generation 1 runs
#: every 700 x 10 allocations net of frees, so a full one comes at most every ~700,000, and then only once the objects
#: that survived into the old generation since the last one are a quarter of those it holds (CPython's own rule)
FULL_AFTER = 100


def pause() -> None:
    """No collection until `settle`: the daemon is starting."""
    gc.disable()


def settle() -> None:
    """Freeze what the daemon holds now, space out full collections, collect again (see the module's docstring)."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_AFTER)
    gc.enable()
