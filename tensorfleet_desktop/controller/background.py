"""The controller's background work (copies, cancels, registrations): kept referenced while it runs, and
cancelled together when the controller stops."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Background:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def idle(self) -> None:
        """Until no background work runs (what a test waits for)."""
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
