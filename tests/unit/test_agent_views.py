"""The scheduler's views of the fleet's agents (agent_link.FleetAgents): kept while an agent is unchanged, and
made again as soon as anything the view shows changes (its state, telemetry, info, the attempts held there)."""

from __future__ import annotations

import dataclasses

from tensorfleet_agent.core.types import NodeInfo, Telemetry
from tensorfleet_desktop.controller.agent_link import FleetAgents
from tensorfleet_desktop.controller.fleet import AgentRecord, AgentState, Fleet


def info(slots: int = 2, labels: dict[str, str] | None = None) -> NodeInfo:
    return NodeInfo(
        protocol_version=1,
        node_id="n1",
        name="box",
        hostname="box",
        os="linux",
        python_version="3.11",
        torch_version="",
        sklearn_version="1.5",
        cpu_count=4,
        memory_total_bytes=2**33,
        disk_free_bytes=2**36,
        gpus=(),
        workloads=("noop",),
        slots_total=slots,
        slots_free=slots,
        agent_version="1",
        labels=labels or {},
    )


def telemetry(cpu: float, disk_free: int = 2**36) -> Telemetry:
    return Telemetry(
        time=0.0,
        cpu_percent=cpu,
        memory_used_bytes=0,
        memory_total_bytes=2**33,
        disk_free_bytes=disk_free,
        gpus=(),
        slots_total=2,
        slots_free=2,
        tasks_running=0,
    )


def online_fleet() -> tuple[Fleet, AgentRecord, FleetAgents]:
    fleet = Fleet()
    record = AgentRecord("n1", "127.0.0.1:1", "manual", name="box", state=AgentState.ONLINE, paired=True)
    record.info, record.telemetry = info(), telemetry(5.0)
    fleet.agents[record.node_id] = record
    return fleet, record, FleetAgents(fleet)


def test_an_unchanged_agent_keeps_its_view() -> None:
    _, _, agents = online_fleet()
    first = agents.agent("n1")
    assert first is not None and first.schedulable and first.slots_free == 2
    assert agents.agent("n1") is first
    assert agents.agents() == [first] and agents.agents()[0] is first


def test_every_change_the_view_shows_is_seen() -> None:
    fleet, record, agents = online_fleet()
    before = agents.agent("n1")
    assert before is not None

    agents.hold("n1", "j1-r0-a1")
    held = agents.agent("n1")
    assert held is not None and held.slots_free == 1 and held.placed == {"j1-r0-a1"}
    agents.release("n1", "j1-r0-a1")
    released = agents.agent("n1")
    assert released is not None and released.slots_free == 2 and not released.placed

    record.telemetry = telemetry(80.0)
    assert agents.agents()[0].load == 80.0
    record.telemetry = telemetry(80.0, disk_free=1)  # a full disk: no new tasks
    assert not agents.agents()[0].schedulable
    record.telemetry = telemetry(10.0)
    assert agents.agents()[0].schedulable

    record.info = info(slots=4, labels={"gpu": "a100"})
    changed = agents.agent("n1")
    assert changed is not None and changed.slots_total == 4 and changed.labels == {"gpu": "a100"}

    record.draining = True
    assert not agents.agents()[0].schedulable
    record.draining = False
    record.state = AgentState.LOST
    lost = agents.agent("n1")
    assert lost is not None and not lost.online and not lost.schedulable

    del fleet.agents["n1"]
    assert agents.agent("n1") is None and agents.agents() == []


def test_a_new_record_for_the_same_agent_gets_a_new_view() -> None:
    fleet, record, agents = online_fleet()
    agents.hold("n1", "j1-r0-a1")
    assert agents.agent("n1") is not None
    again = dataclasses.replace(record, placed=set())  # the agent removed and added again
    fleet.agents["n1"] = again
    view = agents.agent("n1")
    assert view is not None and view.slots_free == 2 and not view.placed
