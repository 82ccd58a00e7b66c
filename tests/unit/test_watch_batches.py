"""WatchJob's grouping of live events: the first after a quiet spell is not held back, a burst goes out together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from tensorfleet_desktop.controller.service import _batches

WINDOW = 0.2


async def _feed(queue: asyncio.Queue[int | None]) -> AsyncIterator[int]:
    while (item := await queue.get()) is not None:
        yield item


async def test_a_line_after_a_quiet_spell_goes_out_at_once_and_a_burst_after_it_together() -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    groups = _batches(_feed(queue), 100, WINDOW)
    first = asyncio.ensure_future(anext(groups))
    start = loop.time()
    await queue.put(1)  # the job's first line: nothing was sent for longer than the window
    assert await asyncio.wait_for(first, WINDOW / 2) == [1], "the first live item waited for the coalescing window"
    assert loop.time() - start < WINDOW / 2
    second = asyncio.ensure_future(anext(groups))
    for n in range(2, 7):  # a burst right behind it, a point every 20 ms: held for the window, sent as one
        await queue.put(n)
        await asyncio.sleep(0.02)
    assert await second == [2, 3, 4, 5, 6]
    await queue.put(None)
    assert [group async for group in groups] == []
