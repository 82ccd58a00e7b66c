"""A controller whose event loop was stalled (a long synchronous step under load) did not read the telemetry its
agents sent meanwhile: the stall is not the agents' silence. Under benchmarks/scale_sim.py's load such a stall
declared every agent LOST at once and re-placed tasks they were still running. Real silence still counts."""

from __future__ import annotations

import asyncio
import time

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
