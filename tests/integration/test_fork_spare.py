"""The fork server's spare children (runtime/forking.py): the next task's worker is forked ahead, per environment
of the last one, and handed out ready; one that does not fit is ended and a fresh child forked instead."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psutil
import pytest

from tensorfleet_agent.runtime.forking import ForkServer

pytestmark = pytest.mark.slow


def _env(threads: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": threads}


async def _children(server: ForkServer, count: int, gone: set[int] = set()) -> set[int]:  # noqa: B006
    """The fork server's live children once there are `count` of them, none of `gone` (a spare forks in the
    background, a misfit ends in the background)."""
    for _ in range(200):
        alive = {p.pid for p in psutil.Process(server.pid).children() if p.status() != psutil.STATUS_ZOMBIE}
        if len(alive) == count and alive.isdisjoint(gone):
            return alive
        await asyncio.sleep(0.05)
    raise AssertionError(f"the fork server never had {count} children")


async def _ends(worker: object) -> None:
    worker.send({"op": "exit"})  # type: ignore[attr-defined]
    await worker.wait()  # type: ignore[attr-defined]


async def test_the_next_task_gets_the_child_forked_ahead_for_its_environment(tmp_path: Path) -> None:
    server = await ForkServer.start(_env("1"), str(tmp_path))
    try:
        first = await server.fork(_env("1"), str(tmp_path))
        spare = (await _children(server, 2)) - {first.pid}  # forked ahead, waiting with no task
        assert len(spare) == 1
        assert server.busy  # the first worker's task
        await _ends(first)
        await _children(server, 1)
        assert not server.busy, "a spare child is no running task: the fork server counts as idle"

        second = await server.fork(_env("1"), str(tmp_path))
        assert {second.pid} == spare, "the same environment: the spare is handed out"
        kept = (await _children(server, 2)) - {second.pid}
        await _ends(second)

        other = await server.fork(_env("2"), str(tmp_path))  # another slot's caps: a child forked now
        assert other.pid not in kept
        assert kept < await _children(server, 3)  # the first environment's spare stays, the second gets one
        await _ends(other)
        again = await server.fork(_env("1"), str(tmp_path))
        assert {again.pid} == kept, "a task of the first environment after one of the second still finds its spare"
        await _ends(again)

        spares = await _children(server, 2)  # one per environment
        warmed = await server.fork(_env("1"), str(tmp_path), warm=["json"])  # a family imported since: not taken
        assert warmed.pid not in spares
        await _ends(warmed)
        for _ in range(200):  # the misfit ends; the second environment's stays; the first gets one with the family
            now = await _children(server, 2)
            if len(now & spares) == 1:
                break
            await asyncio.sleep(0.05)
        assert len(now & spares) == 1
        await asyncio.wait_for(server.retire(), 10)  # not held up by the spares, which die with it
    finally:
        await server.close()
    assert not server.alive
