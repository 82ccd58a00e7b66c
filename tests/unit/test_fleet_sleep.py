"""The fleet's power and desk states: OWNER_ACTIVE (online, no work), SLEEPING (it said it would suspend, then went
quiet: not LOST, and remembered across a controller restart), WAKING (a magic packet sent, by the controller or
relayed by an agent on that subnet) and back to ONLINE or, after the timeout, SLEEPING with the reason."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from tensorfleet_agent.core.types import DeskStatus, NetInterface, NodeInfo, Telemetry
from tensorfleet_agent.runtime.wake_on_lan import Subnet
from tensorfleet_desktop.controller import fleet as fleet_module
from tensorfleet_desktop.controller.fleet import AgentRecord, AgentState, Fleet, FleetError


def info(node_id: str, *interfaces: NetInterface, desk: DeskStatus | None = None) -> NodeInfo:
    return NodeInfo(
        1, node_id, node_id, "host", "linux", "3.12", "", "1.5", 4, 1 << 30, 1 << 30, (), ("noop",), 2, 2, "0",
        labels={"room": "b"}, desk=desk, interfaces=interfaces, suspend_when_idle_seconds=60.0,
    )  # fmt: skip


def telemetry(**kw: Any) -> Telemetry:
    return Telemetry(0.0, 1.0, 1, 2, 1 << 30, (), 2, 2, 0, **kw)


ETH = NetInterface("eth0", "02:00:00:00:00:07", "10.77.0.7", 24, "10.77.0.255", True, "flag")


def online(fleet: Fleet, node_id: str, *interfaces: NetInterface) -> AgentRecord:
    record = AgentRecord(node_id, "10.77.0.7:50051", "mdns", node_id, state=AgentState.ONLINE, paired=True)
    record.info = info(node_id, *interfaces)
    fleet.agents[node_id] = record
    fleet._seen(record)
    return record


def test_owner_active_is_online_without_work_and_says_why() -> None:
    fleet = Fleet()
    record = online(fleet, "desk-1")
    assert record.schedulable
    record.telemetry = telemetry(desk=DeskStatus(owner_active=True, reason="keyboard or mouse used 0.2 s ago"))
    assert record.public_state() == "OWNER_ACTIVE" and not record.schedulable
    assert record.to_dict()["error"] == "its owner is using it: keyboard or mouse used 0.2 s ago"
    assert record.to_dict()["desk"]["owner_active"] is True
    record.telemetry = telemetry(desk=DeskStatus(paused=True, reason="paused with `tensorfleet-agent desk pause`"))
    assert record.public_state() == "OWNER_ACTIVE" and record.to_dict()["error"].startswith("paused by its owner")
    record.telemetry = telemetry(desk=DeskStatus(reason="idle for 12 min"))
    assert record.public_state() == "ONLINE" and record.schedulable and record.to_dict()["error"] == ""


async def test_quiet_after_going_to_sleep_is_sleeping_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "sleeping-agents.json"
    fleet = Fleet(sleepers=path)
    fleet.silence_limit = 0.4
    events: list[str] = []
    fleet.subscribe(lambda kind, r: events.append(kind))
    sleepy = online(fleet, "desk-1", ETH)
    sleepy.telemetry = telemetry(going_to_sleep=True)
    plain = online(fleet, "box-2")
    await fleet.start()
    try:
        await asyncio.sleep(0.8)
        assert sleepy.state is AgentState.SLEEPING and sleepy.public_state() == "SLEEPING"
        assert sleepy.to_dict()["error"] == "" and not sleepy.schedulable
        assert plain.state is AgentState.LOST and plain.error == "no telemetry for 0.4s"
        assert events.count("lost") == 2  # the core re-places whatever either had
        fleet.on_mdns("desk-1._tensorfleet._tcp.local.", None)  # its record expires: it stays known
        assert "desk-1" in fleet.agents
    finally:
        await fleet.stop()
    saved = json.loads(path.read_text())
    assert list(saved["sleeping"]) == ["desk-1"]
    assert saved["sleeping"]["desk-1"]["info"]["interfaces"][0]["mac"] == ETH.mac

    again = Fleet(sleepers=path)
    again._connect = _never  # type: ignore[method-assign]  # the machine sleeps: nothing answers
    assert again.restore_sleepers() == 1
    try:
        record = again.agents["desk-1"]
        assert record.state is AgentState.SLEEPING
        assert record.info is not None and record.info.interfaces == (ETH,) and record.info.labels == {"room": "b"}
        [s] = again.sleepers()
        assert s.wakeable and s.capacity.free_slots == 2 and s.capacity.workloads == {"noop"}
        await asyncio.sleep(0.2)  # its supervisor fails to reach it: still SLEEPING, not LOST
        assert record.state is AgentState.SLEEPING and record.error == ""
    finally:
        await again.stop()


async def _never(record: AgentRecord) -> Any:
    raise OSError(113, "No route to host")


async def test_wake_sends_the_packet_then_times_out_to_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(fleet_module, "local_subnets", lambda: [Subnet("br0", "10.77.0.1", 24)])
    monkeypatch.setattr(fleet_module, "send_magic_packet", lambda mac, subnet: sent.append((mac, subnet.broadcast)))
    fleet = Fleet(wake_timeout=0.5)
    record = online(fleet, "desk-1", ETH)
    with pytest.raises(FleetError, match="it is awake"):
        await fleet.wake("desk-1")
    record.state = AgentState.SLEEPING
    await fleet.start()
    try:
        await fleet.wake("desk-1")
        assert sent == [(ETH.mac, "10.77.0.255")]
        assert record.state is AgentState.WAKING and record.last_wake_at > 0
        assert "sent by the controller to 10.77.0.255 on br0" in record.wake_route
        await asyncio.sleep(0.9)
        assert record.state is AgentState.SLEEPING
        assert record.to_dict()["error"] == "did not wake within 0.5 s of the magic packet"
        assert record.wake_count == 0
        await fleet.wake("desk-1")
        fleet._set_state(record, AgentState.ONLINE)  # it answered
        assert record.wake_count == 1 and record.error == "" and record.to_dict()["wake_count"] == 1
    finally:
        await fleet.stop()


class Relay:
    trust = None

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str]] = []

    async def send_wake_packet(self, mac: str, broadcast: str) -> str:
        self.asked.append((mac, broadcast))
        assert self.answer is not None
        return self.answer

    async def close(self) -> None:
        pass


async def test_off_the_subnet_an_online_agent_on_it_relays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet_module, "local_subnets", lambda: [Subnet("eth0", "192.168.1.2", 24)])
    fleet = Fleet()
    record = online(fleet, "desk-1", ETH)
    record.state = AgentState.SLEEPING
    with pytest.raises(FleetError, match=r"no address on the subnet of 10\.77\.0\.255 and no online agent is on it"):
        await fleet.wake("desk-1")
    assert record.state is AgentState.SLEEPING and "no magic packet could be sent" in record.error
    other = NetInterface("eth0", "02:00:00:00:00:08", "10.77.0.8", 24, "10.77.0.255")
    relay = online(fleet, "box-2", other)
    relay.client = Relay("eth0")  # type: ignore[assignment]
    await fleet.wake("desk-1")
    assert relay.client.asked == [(ETH.mac, "10.77.0.255")]  # type: ignore[attr-defined]
    assert record.state is AgentState.WAKING and "relayed by agent box-2" in record.wake_route


async def test_waking_by_hand_needs_a_mac_and_prefers_wol_interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    monkeypatch.setattr(fleet_module, "local_subnets", lambda: [Subnet("br0", "10.77.0.1", 24)])
    monkeypatch.setattr(fleet_module, "send_magic_packet", lambda mac, subnet: sent.append(mac))
    fleet = Fleet()
    bare = online(fleet, "old")
    bare.state = AgentState.LOST
    with pytest.raises(FleetError, match="no network interface with a MAC"):
        await fleet.wake("old")
    unknown = NetInterface("eth1", "02:00:00:00:00:09", "10.77.0.9", 24, "10.77.0.255")  # WoL unknown
    record = online(fleet, "desk-1", unknown)
    record.state = AgentState.SLEEPING
    with pytest.raises(FleetError, match="no interface with Wake-on-LAN on"):
        await fleet.wake("desk-1", wol_only=True)  # on demand: never on a guess
    await fleet.wake("desk-1")  # by hand: tried
    assert sent == [unknown.mac]


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        {"sleeping": []},
        {"sleeping": {}, "wakes": []},
        {"sleeping": {}, "wakes": {"desk-1": 3}},
        {"sleeping": {}, "wakes": {"desk-1": [1, 2, 3]}},
        {"sleeping": {"desk-1": "x", "desk-2": ["info"], "desk-3": {"info": [], "address": "h:1"}}},
        {"sleeping": {"desk-1": {"info": {"gpus": [[1]]}, "address": "h:1"}}, "wakes": {"desk-1": ["a", "b"]}},
    ],
)
def test_a_malformed_sleepers_file_is_ignored_and_never_stops_the_start(tmp_path: Path, body: Any) -> None:
    path = tmp_path / "sleeping-agents.json"
    path.write_text(json.dumps(body))
    fleet = Fleet(sleepers=path)
    assert fleet.restore_sleepers() == 0 and fleet.agents == {}


async def test_a_malformed_wake_count_skips_only_that_count(tmp_path: Path) -> None:
    path = tmp_path / "sleeping-agents.json"
    entry = {"name": "desk-1", "address": "10.77.0.7:50051", "info": dataclasses.asdict(info("desk-1", ETH))}
    path.write_text(json.dumps({"sleeping": {"desk-1": entry}, "wakes": {"desk-1": "bad", "gone": [2, 5.0]}}))
    fleet = Fleet(sleepers=path)
    fleet._connect = _never  # type: ignore[method-assign]
    assert fleet.restore_sleepers() == 1
    try:
        assert fleet.agents["desk-1"].wake_count == 0 and fleet.agents["desk-1"].state is AgentState.SLEEPING
    finally:
        await fleet.stop()


def test_a_pool_agents_pool_is_its_credentials_whatever_it_reports() -> None:
    from tensorfleet_desktop.controller.fleet import pool_bound

    record = AgentRecord("n1", "10.0.0.9:50051", "pool", "n1", pool="a")
    claimed = dataclasses.replace(info("n1"), labels={"pool": "b", "room": "b"}, pool="b")
    bound = pool_bound(record, claimed)
    assert bound.labels == {"pool": "a", "room": "b"} and bound.pool == "a"
    assert pool_bound(AgentRecord("n2", "h:1", "manual"), claimed) is claimed  # not a pool agent: as it says


async def test_adding_as_a_pool_agent_never_takes_over_one_added_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorfleet_agent.core.version import PROTOCOL_VERSION

    class Client:
        def __init__(self, address: str, trust: Any) -> None:
            pass

        async def get_info(self, timeout: float) -> NodeInfo:
            return dataclasses.replace(info("desk-1"), protocol_version=PROTOCOL_VERSION)

        async def close(self) -> None:
            pass

    monkeypatch.setattr(fleet_module, "AgentClient", Client)
    fleet = Fleet()
    fleet.agents["desk-1"] = AgentRecord("desk-1", "10.77.0.7:50051", "manual", "desk-1")
    with pytest.raises(FleetError, match="already in this fleet as a manual agent"):
        await fleet.add("10.77.0.7:50051", "pool", pool="a")
    assert fleet.agents["desk-1"].source == "manual" and fleet.agents["desk-1"].pool == ""
