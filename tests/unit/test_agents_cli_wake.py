"""`tensorfleet agents`: the power and desk states, MAC and Wake-on-LAN, wake-ups (list, show, --json), and `agents
wake AGENT` asking the controller for a magic packet."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.agents import agents

ETH = {
    "name": "eth0", "mac": "02:00:00:00:00:07", "ipv4": "10.77.0.7", "prefix_length": 24,
    "broadcast": "10.77.0.255", "wake_on_lan": True, "wake_on_lan_source": "ethtool",
}  # fmt: skip
DESK = {
    "owner_active": True, "paused": False, "reason": "keyboard or mouse used 0.2 s ago", "since": 1.0,
    "idle_seconds": 0.2, "idle_threshold_seconds": 600.0, "schedule": "19:00-08:00",
}  # fmt: skip


def agent(name: str, state: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": f"{name}-id".ljust(64, "0"), "name": name, "address": "10.77.0.7:50051", "state": state,
        "source": "mdns", "paired": True, "slots_total": 2, "slots_free": 2, "gpus": 0, "labels": {},
        "last_seen": 1.0, "state_since": 1.0, "fingerprint": "ab" * 32, "cluster_id": "", "error": "",
        "cpu_percent": 0.0, "desk": None, "interfaces": [], "wake_count": 0, "last_wake_at": 0.0,
    }  # fmt: skip
    return base | fields


class FakeClient:
    def __init__(self) -> None:
        self.woken: list[str] = []
        self.listed = [
            agent("desk-1", "OWNER_ACTIVE", desk=DESK, interfaces=[ETH], error="its owner is using it: keyboard"),
            agent("box-2", "SLEEPING", interfaces=[ETH], wake_count=2, last_wake_at=5.0),
        ]

    def agents(self, all: bool = False) -> list[dict[str, Any]]:
        return self.listed

    def wake_agent(self, ref: str) -> dict[str, Any]:
        self.woken.append(ref)
        return self.listed[1] | {"state": "WAKING", "last_wake_at": 9.0}


def args(action: str | None, **kw: Any) -> argparse.Namespace:
    return argparse.Namespace(agents_command=action, json=kw.pop("json", False), csv=False, all=False, **kw)


def test_list_shows_power_states_wol_and_wake_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert agents(FakeClient(), args(None)) == exit_codes.OK  # type: ignore[arg-type]
    captured = capsys.readouterr()
    assert "OWNER_ACTIVE" in captured.out and "SLEEPING" in captured.out and "WOL" in captured.out
    assert "its owner is using it" in captured.err
    assert agents(FakeClient(), args(None, json=True)) == exit_codes.OK  # type: ignore[arg-type]
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["desk"]["owner_active"] is True and rows[1]["wake_count"] == 2
    assert rows[1]["interfaces"][0]["mac"] == "02:00:00:00:00:07"


def test_show_says_desk_mode_interfaces_and_wake_ups(capsys: pytest.CaptureFixture[str]) -> None:
    assert agents(FakeClient(), args("show", agent="desk-1")) == exit_codes.OK  # type: ignore[arg-type]
    text = capsys.readouterr().out
    assert "desk mode: not lending: keyboard or mouse used 0.2 s ago, hours 19:00-08:00" in text
    assert "interface eth0: 02:00:00:00:00:07, 10.77.0.7/24, Wake-on-LAN on (ethtool)" in text
    assert agents(FakeClient(), args("show", agent="box-2", json=True)) == exit_codes.OK  # type: ignore[arg-type]
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "SLEEPING" and shown["wake_count"] == 2


def test_wake_asks_the_controller_and_says_waking(capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient()
    assert agents(client, args("wake", agent="box-2")) == exit_codes.OK  # type: ignore[arg-type]
    assert client.woken == ["box-2"]
    said = capsys.readouterr().out
    assert said.startswith("wake: box-2") and said.strip().endswith("WAKING")
    assert agents(client, args("wake", agent="box-2", json=True)) == exit_codes.OK  # type: ignore[arg-type]
    assert json.loads(capsys.readouterr().out)["last_wake_at"] == 9.0
