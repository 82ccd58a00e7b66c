"""The audit log (issue 24): who did what, refusals too, in the store.

Each entry gets the next seq, which keeps increasing across restarts (it starts after the store's last). Both faces
record every call whose rule names an audit action (principals.RULES) through `record`, after the call: ok or
refused, with the refusal's words as the detail."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tensorfleet_desktop.controller.principals import Principal
from tensorfleet_desktop.controller.store.base import JobStore

MAX_DETAIL = 500  # characters of a detail kept (an error's message)
MAX_LIMIT = 10_000


class AuditLog:
    def __init__(self, store: JobStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.seq = 0

    async def load(self) -> None:
        """Continue after the store's last entry (before the first record)."""
        self.seq = max(self.seq, await self.store.last_audit_seq())

    def record(
        self, principal: Principal, action: str, target: str = "", detail: str = "", ok: bool = True
    ) -> dict[str, Any]:
        """Queue one entry (never blocks the loop) and return it."""
        self.seq += 1
        entry = {
            "seq": self.seq,
            "time": self.clock(),
            "user": principal.name,
            "role": principal.role,
            "action": action,
            "target": target[:200],
            "detail": detail[:MAX_DETAIL],
            "ok": ok,
        }
        self.store.append_audit(entry)
        return entry

    async def entries(
        self, user: str = "", action: str = "", since: float = 0.0, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Newest first; what was recorded before this call is included (the store's queue is flushed first)."""
        await self.store.flush()
        return await self.store.audit_entries(user, action, since, min(max(limit, 1), MAX_LIMIT))
