"""Issue 23 in the Fleet view: OWNER_ACTIVE, SLEEPING and WAKING agents in their own colours with the reason in the
state's tooltip (desk reason, MAC and Wake-on-LAN), and a Wake action, offered only for an agent that may sleep
and has a MAC, that goes through the bridge's thread (the window never waits on the network). pytest-qt,
offscreen, no cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from helpers.servers import free_port
from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_desktop.ui.app import build_window
from tensorfleet_desktop.ui.fleet_view import POWER_COLORS
from tensorfleet_desktop.ui.main_window import MainWindow
from tensorfleet_desktop.wire import agent_from_pb

ETH = pb.NetInterface(
    name="eth0", mac="02:00:00:00:00:07", ipv4="10.77.0.7", prefix_length=24, broadcast="10.77.0.255",
    wake_on_lan=True, wake_on_lan_source="ethtool",
)  # fmt: skip


def agent(n: int, state: int, **fields: Any) -> dict[str, Any]:
    msg = cpb.Agent(
        id=f"{n:02d}" + "cd" * 15, name=f"desk-{n}", address=f"10.77.0.{n}:50051", state=state,
        source=cpb.AGENT_SOURCE_MDNS, paired=True, slots_total=2, slots_free=2, **fields,
    )  # fmt: skip
    return agent_from_pb(msg)


@pytest.fixture
def window(qtbot: Any, tmp_path: Path) -> Iterator[MainWindow]:
    win = build_window(f"127.0.0.1:{free_port()}", data_dir=tmp_path / "data", autostart=False)
    qtbot.addWidget(win)
    win.show()
    win.show_view(win.fleet)
    yield win
    win.close()


def test_power_states_have_colours_reasons_and_a_wake_action(qtbot: Any, window: MainWindow) -> None:
    fleet = window.fleet
    owner = agent(
        1, cpb.AGENT_STATE_OWNER_ACTIVE, error="its owner is using it: keyboard or mouse used 0.2 s ago",
        desk=pb.DeskStatus(owner_active=True, reason="keyboard or mouse used 0.2 s ago"), interfaces=[ETH],
    )  # fmt: skip
    asleep = agent(2, cpb.AGENT_STATE_SLEEPING, interfaces=[ETH], wake_count=3, last_wake_at=1.0)
    no_mac = agent(3, cpb.AGENT_STATE_SLEEPING)
    fleet.set_agents([owner, asleep, no_mac])
    state_col = fleet.column["State"]

    def cell(row: dict[str, Any], role: Qt.ItemDataRole) -> Any:
        return fleet.model.index(fleet.model.find(row["id"]), state_col).data(role)

    assert cell(owner, Qt.ItemDataRole.DisplayRole) == "OWNER_ACTIVE"
    assert "keyboard or mouse used 0.2 s ago" in cell(owner, Qt.ItemDataRole.ToolTipRole)
    tip = cell(asleep, Qt.ItemDataRole.ToolTipRole)
    assert "Wake sends it a magic packet" in tip and "eth0 02:00:00:00:00:07: Wake-on-LAN on" in tip
    assert "woken 3 time(s)" in tip
    shown = [QColor(cell(r, Qt.ItemDataRole.ForegroundRole)).name() for r in (owner, asleep)]
    assert shown == [POWER_COLORS["OWNER_ACTIVE"], POWER_COLORS["SLEEPING"]]

    def select(row: dict[str, Any]) -> None:
        fleet.table.selectRow(fleet.proxy.mapFromSource(fleet.model.index(fleet.model.find(row["id"]), 0)).row())

    select(owner)
    assert not fleet.wake_button.isEnabled()  # awake: nothing to wake
    assert "Wake" not in [a.text() for a in fleet._row_actions([owner]) if a]
    select(no_mac)
    assert not fleet.wake_button.isEnabled()  # no MAC known: no packet to send
    select(asleep)
    assert fleet.wake_button.isEnabled()
    first = fleet._row_actions([asleep])[0]
    assert first is not None and first.text() == "Wake"

    calls: list[Any] = []
    fleet.bridge.call = lambda fn, ok, err: calls.append((fn, ok, err))  # type: ignore[method-assign]
    fleet.wake_button.click()
    [(fn, _ok, _err)] = calls  # handed to the bridge's thread, not run here

    class Client:
        woken: list[str] = []

        def wake_agent(self, agent_id: str) -> dict[str, Any]:
            self.woken.append(agent_id)
            return dict(asleep, state="WAKING")

    result = fn(Client())
    assert Client.woken == [asleep["id"]] and result["state"] == "WAKING"
