"""A controller whose event loop was stalled (a long synchronous step under load) did not read the telemetry its
agents sent meanwhile: the stall is not the agents' silence. Under benchmarks/scale_sim.py's load such a stall
declared every agent LOST at once and re-placed tasks they were still running. Real silence still counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace

from tensorfleet_desktop.controller.fleet import AgentRecord, AgentState, Fleet


async def test_a_stalled_controller_loop_is_not_agent_silence() -> None:
    fleet = Fleet(telemetry_period=1.0)
    fleet.silence_limit = 1.0  # 3 s in production; shorter here to keep the test quick
    record = AgentRecord("n1", "127.0.0.1:1", "manual", "a1", state=AgentState.ONLINE)
    fleet.agents[record.node_id] = record
    lost: list[str] = []
    fleet.subscribe(lambda kind, r: lost.append(r.node_id) if kind == "lost" else None)
    fleet._seen(record)
    await fleet.start()
    try:
        await asyncio.sleep(0.3)
        fleet._seen(record)  # its last telemetry before the stall
        time.sleep(1.5)  # noqa: ASYNC251  # the loop is busy elsewhere: telemetry waits unread in the socket
        await asyncio.sleep(0.3)  # the watchdog wakes first, before the telemetry read meanwhile
        assert record.state is AgentState.ONLINE and not lost, record.error
        await asyncio.sleep(1.2)  # now the agent really says nothing while we listen
        assert record.state is AgentState.LOST and lost == ["n1"]
    finally:
        await fleet.stop()


class _SlowToPair:
    """An agent client whose session takes longer than the silence limit to open (a loaded agent host)."""

    trust = None

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    async def get_info(self, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(node_id=self.node_id, name="a1")

    async def authenticate(self) -> None:
        await asyncio.sleep(1.3)

    async def telemetry(self, period: float) -> AsyncIterator[None]:
        while True:
            await asyncio.sleep(0.6)
            yield None

    async def close(self) -> None:
        pass


async def test_silence_counts_from_online_not_from_before_a_slow_pairing() -> None:
    fleet = Fleet(telemetry_period=0.5)
    fleet.silence_limit = 1.0
    fleet._connect = lambda record: asyncio.sleep(0, _SlowToPair(record.node_id))  # type: ignore[method-assign]
    states: list[str] = []
    online = asyncio.Event()

    def heard(kind: str, record: AgentRecord) -> None:
        if kind in ("added", "lost"):
            states.append(kind)
        if kind == "added":
            online.set()

    fleet.subscribe(heard)
    await fleet.start()
    try:
        fleet._adopt("n1", "127.0.0.1:1", "manual", "a1")
        await asyncio.wait_for(online.wait(), 5)
        await asyncio.sleep(0.5)  # its first telemetry comes 0.6 s after ONLINE, within the limit
        assert states == ["added"], states
    finally:
        await fleet.stop()


async def test_an_agent_answering_on_other_streams_is_not_silent() -> None:
    """On a link saturated by a dataset exchange its telemetry arrives late, but its task events and the blob it
    reads prove it alive; once everything from it stops, it is LOST within the same deadline."""
    fleet = Fleet(telemetry_period=1.0)
    fleet.silence_limit = 1.0
    record = AgentRecord("n1", "127.0.0.1:1", "manual", "a1", state=AgentState.ONLINE)
    fleet.agents[record.node_id] = record
    fleet._seen(record)
    await fleet.start()
    try:
        for _ in range(8):  # 1.6 s without telemetry, a task event or a blob chunk every 0.2 s
            await asyncio.sleep(0.2)
            fleet.heard_from("n1")
        fleet.heard_from("someone-else")  # unknown ids are ignored
        assert record.state is AgentState.ONLINE, record.error
        await asyncio.sleep(1.5)
        assert record.state is AgentState.LOST
        fleet.heard_from("n1")  # a LOST agent comes back by its telemetry only
        assert record.state is AgentState.LOST
    finally:
        await fleet.stop()
