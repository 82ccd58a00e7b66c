"""Idle suspend's logic in-process: durations, ethtool's answer, --wol, and the suspend's cancel/refuse rules."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from tensorfleet_agent.__main__ import _power
from tensorfleet_agent.core.errors import ResourcesExhausted
from tensorfleet_agent.runtime.interfaces import WolFlag, list_interfaces, parse_ethtool
from tensorfleet_agent.runtime.power import IdleSuspender, PowerState, parse_command, parse_duration

ETHTOOL = """Settings for eth0:
\tSupported ports: [ TP ]
\tSupports Wake-on: pumbg
\tWake-on: {value}
\tLink detected: yes
"""


def test_durations() -> None:
    assert parse_duration("90s", "x") == 90
    assert parse_duration("30m", "x") == 1800
    assert parse_duration("1h30m", "x") == 5400
    assert parse_duration("1.5", "x") == 1.5
    assert parse_duration("250ms", "x") == 0.25
    for bad in ("", "abc", "10 parsecs", "-5s", "1h garbage"):
        with pytest.raises(ValueError, match="--suspend-when-idle must be a duration"):
            parse_duration(bad, "--suspend-when-idle")


def test_command_must_exist() -> None:
    assert parse_command("true --flag 'a b'") == ("true", "--flag", "a b")
    with pytest.raises(ValueError, match="not an executable"):
        parse_command("no-such-suspender-xyz now")
    with pytest.raises(ValueError, match="is empty"):
        parse_command("  ")


@pytest.mark.parametrize(
    ("idle", "command", "message"),
    [
        ("0s", None, "--suspend-when-idle must be longer than 0"),
        ("5m", "no-such-cmd-xyz", "'no-such-cmd-xyz' is not an executable"),
        (None, "true", "--suspend-command needs --suspend-when-idle"),
    ],
)
def test_power_flags(idle: str | None, command: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _power(idle, command)
    assert _power("90s", "true now") == (90.0, ("true", "now"))
    assert _power(None, None)[0] == 0.0


def test_ethtool_wake_on_line() -> None:
    assert parse_ethtool(ETHTOOL.format(value="g")) is True
    assert parse_ethtool(ETHTOOL.format(value="d")) is False  # "Supports Wake-on: pumbg" is not the setting
    assert parse_ethtool("Settings for lo:\n\tLink detected: yes\n") is None


def test_wol_flag_and_interfaces() -> None:
    assert WolFlag.parse("all").covers("eth9")
    assert WolFlag.parse("eth0, eth1").covers("eth1") and not WolFlag.parse("eth0").covers("eth1")
    with pytest.raises(ValueError, match="not both"):
        WolFlag.parse("all,eth0")
    found = list_interfaces(WolFlag(all=True))
    assert all(i.name != "lo" and i.mac.count(":") == 5 for i in found)
    assert all(i.wake_on_lan and i.wake_on_lan_source == "flag" for i in found)
    plain = {i.name: i for i in list_interfaces(None, {i.name: True for i in found[:1]})}
    for i in found[:1]:
        assert plain[i.name].wake_on_lan and plain[i.name].wake_on_lan_source == "ethtool"
    for i in found[1:]:
        assert not plain[i.name].wake_on_lan and plain[i.name].wake_on_lan_source == ""


def _marker_command(tmp_path: Path, seconds: float) -> tuple[str, ...]:
    code = f"import pathlib,time; pathlib.Path({str(tmp_path / 'suspended')!r}).touch(); time.sleep({seconds})"
    return (sys.executable, "-c", code)


async def test_a_task_arriving_while_announcing_cancels_the_suspend(tmp_path: Path) -> None:
    power = IdleSuspender(0.2, _marker_command(tmp_path, 0), busy=lambda: False)
    power.telemetry_period(1.0)  # a controller streams every second: the announcement waits for its sample
    power.start()
    try:
        for _ in range(100):
            if power.state is PowerState.ANNOUNCING:
                break
            await asyncio.sleep(0.02)
        assert power.going_to_sleep
        power.task_arriving()
        await asyncio.sleep(0.1)
        assert power.state is PowerState.AWAKE and not (tmp_path / "suspended").exists()
        assert power.suspends == 0
    finally:
        await power.stop()


async def test_suspend_runs_after_announcing_and_refuses_tasks_meanwhile(tmp_path: Path) -> None:
    changes: list[bool] = []
    power = IdleSuspender(0.2, _marker_command(tmp_path, 0.5), busy=lambda: False)
    power._on_change = lambda: changes.append(power.going_to_sleep)
    power.telemetry_period(0.2)
    power.start()
    try:
        for _ in range(100):
            if power.state is PowerState.ANNOUNCING:
                break
            await asyncio.sleep(0.02)
        power.telemetry_sent(True)  # the controller got a sample that says so
        for _ in range(100):
            if (tmp_path / "suspended").exists():
                break
            await asyncio.sleep(0.02)
        assert power.state is PowerState.SUSPENDING
        with pytest.raises(ResourcesExhausted, match="suspending"):
            power.task_arriving()
        for _ in range(100):
            if power.state is PowerState.AWAKE:
                break
            await asyncio.sleep(0.02)
        assert power.state is PowerState.AWAKE and power.suspends == 1
        assert changes[:2] == [True, False]  # announced (mDNS power=sleeping), then awake again
    finally:
        await power.stop()


def test_the_broadcast_is_the_subnets_even_when_the_kernel_reports_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """A veth set up with `ip addr add 10.77.0.5/24` (no `brd`) reports its own address as broadcast: a magic packet
    sent there would reach no one."""
    from types import SimpleNamespace

    import psutil

    link = SimpleNamespace(family=psutil.AF_LINK, address="02:00:0a:4d:00:05", netmask=None, broadcast=None)
    inet = SimpleNamespace(family=socket.AF_INET, address="10.77.0.5", netmask="255.255.255.0", broadcast="10.77.0.5")
    monkeypatch.setattr(psutil, "net_if_addrs", lambda: {"veth0": [link, inet]})
    monkeypatch.setattr(psutil, "net_if_stats", lambda: {})
    (veth,) = list_interfaces()
    assert (veth.ipv4, veth.prefix_length, veth.broadcast) == ("10.77.0.5", 24, "10.77.0.255")
