"""The one interface every owner-activity signal implements, and what a reading says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Reading:
    """One look at a signal. `idle_seconds`: seconds since the owner's last input (input signals only; None for
    the others); `busy`: a sentence when the signal says the owner uses the machine now (GPU, CPU), else ""."""

    idle_seconds: float | None = None
    busy: str = ""


class ActivitySignal(Protocol):
    """A source of owner activity. `read` blocks (X11 round trip, a subprocess, NVML, psutil): the monitor calls
    it in a thread. It returns None while the source is unavailable (no display, no logind session)."""

    name: str
    period: float  # seconds between reads: ~0.1 for input (the 2 s hand-back), ~1 for load

    def read(self) -> Reading | None: ...

    def close(self) -> None: ...
