"""Review fixes of the job detail (issue 22): no leaked watch stream, replay end without clocks, exports that say
when they fail, scalar metrics with retried reports, the Tasks/Artifacts row menus, an escaped header.

Widget- and bridge-level, with fake clients and hand-made job dicts: no cluster needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from tensorfleet_desktop.ui.bridge import Bridge


class SlowClosingClient:
    """A client whose event streams never end by themselves and take a moment to close when cancelled, like a
    gRPC stream: the window in which a second watch_job used to slip past the first."""

    def __init__(self) -> None:
        self.open_streams: set[str] = set()

    async def watch_messages(self, job_id: str, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        self.open_streams.add(job_id)
        try:
            await asyncio.Event().wait()
            yield {}  # never reached
        finally:
            await asyncio.sleep(0.05)
            self.open_streams.discard(job_id)

    async def close(self) -> None:
        return None


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    b = Bridge("127.0.0.1:1", autostart=False)
    fake = SlowClosingClient()
    b._client = fake  # type: ignore[assignment]
    b._thread.start()  # the asyncio thread only: no supervision, so the fake client stays
    yield b
    b.stop()


def watch_tasks(b: Bridge) -> list[asyncio.Task[Any]]:
    async def probe() -> list[asyncio.Task[Any]]:
        await asyncio.sleep(0.3)  # every follow submitted before has run and the streams it cancelled closed
        return [t for t in asyncio.all_tasks() if "_watch_events" in repr(t.get_coro()) and not t.done()]

    return asyncio.run_coroutine_threadsafe(probe(), b._loop).result(5)


def test_opening_jobs_in_quick_succession_leaves_no_watch_running(bridge: Bridge) -> None:
    for job_id in ("A", "B", "C"):
        bridge.watch_job(job_id)
    assert len(watch_tasks(bridge)) == 1  # only the last job opened is followed
    assert bridge._client.open_streams == {"C"}  # type: ignore[union-attr]
    for job_id in ("A", "B", "C", None):
        bridge.watch_job(job_id)
    assert watch_tasks(bridge) == []
    assert bridge._client.open_streams == set()  # type: ignore[union-attr]
