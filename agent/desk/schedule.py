"""--desk-hours: the hours a workstation may lend itself, e.g. 19:00-08:00 (across midnight)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_HOURS = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)-([01]?\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True)
class Hours:
    text: str
    start: int  # minutes after midnight
    end: int

    @classmethod
    def parse(cls, text: str) -> Hours:
        match = _HOURS.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"--desk-hours must look like 19:00-08:00 (HH:MM-HH:MM, local time), got {text!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if (h1, m1) == (h2, m2):
            raise ValueError(f"--desk-hours {text!r} is empty: start and end are the same time")
        return cls(text.strip(), h1 * 60 + m1, h2 * 60 + m2)

    def contains(self, when: datetime) -> bool:
        minute = when.hour * 60 + when.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end
