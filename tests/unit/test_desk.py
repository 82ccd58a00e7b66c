"""Desk mode's decisions in-process: fake signals of the same interface (input idle, another program's GPU memory
through a fake GPU reader, CPU), the lending hours, logind's idle hint, the owner's control socket."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from tensorfleet_agent.core.errors import ResourcesExhausted
from tensorfleet_agent.desk.control import DeskControl, ask
from tensorfleet_agent.desk.cpu_use import CpuUse
from tensorfleet_agent.desk.gpu_use import GpuUse, gpu_busy
from tensorfleet_agent.desk.logind import LogindIdle, parse_idle_hint
from tensorfleet_agent.desk.monitor import PAUSED, DeskConfig, DeskMonitor
from tensorfleet_agent.desk.schedule import Hours
from tensorfleet_agent.desk.signals import Reading

NOON = datetime(2026, 12, 7, 12, 0)
MIB = 2**20


class FakeSignal:
    def __init__(self, name: str, reading: Reading | None) -> None:
        self.name, self.period, self.reading = name, 0.01, reading

    def read(self) -> Reading | None:
        return self.reading

    def close(self) -> None:
        pass


class FakeGpuReader:
    def __init__(self) -> None:
        self.procs: list[tuple[int, int, int]] = []

    def processes(self) -> list[tuple[int, int, int]]:
        return self.procs


class Harness:
    def __init__(self, config: DeskConfig, *signals: FakeSignal) -> None:
        self.running = 0
        self.preempted: list[tuple[str, float]] = []
        self.changes = 0
        self.monitor = DeskMonitor(config, list(signals), self.preempt, lambda: self.running, self.changed)
        self.monitor._last_busy = -1e9  # quiet since long before the test

    def preempt(self, reason: str, grace: float) -> list[str]:
        self.preempted.append((reason, grace))
        return ["t"] * self.running

    def changed(self) -> None:
        self.changes += 1

    def read(self, now: float = 1000.0, wall: datetime = NOON) -> None:
        for signal in self.monitor.signals:
            self.monitor._readings[signal.name] = signal.read()
        self.monitor.evaluate(now, wall)


def test_owner_input_hands_back_and_idleness_lends_again() -> None:
    x11 = FakeSignal("x11", Reading(idle_seconds=700))
    h = Harness(DeskConfig(idle_seconds=600), x11)
    h.read()
    assert h.monitor.lending and h.monitor.state() == "lending"
    assert h.monitor.status().reason == "lending: no keyboard or mouse input for 12 min"
    h.monitor.check_lending()
    h.running = 2
    x11.reading = Reading(idle_seconds=0.2)  # the owner touched the mouse
    h.read()
    status = h.monitor.status()
    assert not h.monitor.lending and status.owner_active and h.monitor.state() == "owner_active"
    assert status.reason.startswith("keyboard or mouse used 0.2 s ago")
    ((reason, grace),) = h.preempted
    assert reason.startswith("the workstation's owner is back: keyboard or mouse used 0.2 s ago") and grace < 1
    with pytest.raises(ResourcesExhausted, match="not lent now \\(desk mode\\): keyboard or mouse used"):
        h.monitor.check_lending()
    x11.reading = Reading(idle_seconds=601)
    h.read()
    assert h.monitor.lending and h.changes == 3  # lending, owner back, lending again


def test_other_programs_on_the_gpu_or_cpu_mean_the_owner_uses_it() -> None:
    reader = FakeGpuReader()
    ours = {100, 101}
    gpu = GpuUse(reader, 512 * MIB, lambda: ours)
    assert gpu.read() == Reading(busy="")
    reader.procs = [(0, 100, 4000 * MIB)]  # the agent's own task: not the owner
    assert gpu.read() == Reading(busy="")
    reader.procs = [(0, 100, 4000 * MIB), (1, 999999, 300 * MIB), (1, 999998, 300 * MIB)]
    assert "other programs use 600 MiB of GPU 1" in gpu_busy(reader.procs, ours, 512 * MIB)

    gpu_signal = FakeSignal("gpu", gpu.read())
    h = Harness(DeskConfig(idle_seconds=60), gpu_signal)
    h.read(now=1000)
    assert not h.monitor.lending and "GPU 1" in h.monitor.status().reason
    assert h.monitor.status().idle_seconds == -1  # no desktop session seen
    gpu_signal.reading = Reading()
    h.read(now=1030)
    assert not h.monitor.lending and "lends after 60 s quiet" in h.monitor.status().reason
    h.read(now=1061)
    assert h.monitor.lending


async def test_a_failed_decision_is_logged_and_polling_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    x11 = FakeSignal("x11", Reading(idle_seconds=700))
    h = Harness(DeskConfig(idle_seconds=600), x11)
    calls = 0

    def failing_preempt(reason: str, grace: float) -> list[str]:
        nonlocal calls
        calls += 1
        raise RuntimeError("preempt_all broke")

    h.monitor._preempt_all = failing_preempt
    h.running = 1
    x11.reading = Reading(idle_seconds=0.1)  # the owner is back: every evaluate() hands back, and fails
    h.monitor.start()
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if calls >= 3:
                break
        assert calls >= 3  # the poll kept going after the first failure
        assert "desk mode: deciding after reading x11 failed" in caplog.text
        x11.reading = Reading(idle_seconds=5)
        await asyncio.sleep(0.05)
        assert h.monitor._readings["x11"] == Reading(idle_seconds=5)  # not frozen
    finally:
        await h.monitor.stop()  # does not re-raise


async def test_stop_survives_a_poll_task_that_died() -> None:
    h = Harness(DeskConfig(idle_seconds=600), FakeSignal("x11", Reading(idle_seconds=700)))

    async def died() -> None:
        raise RuntimeError("boom")

    h.monitor._tasks.append(asyncio.create_task(died()))
    await asyncio.sleep(0)
    await h.monitor.stop()


class FakeProcs:
    """psutil's view for CpuUse: the processes (create time, own and reaped children's CPU seconds) and the whole
    machine's CPU percent since the last read."""

    def __init__(self) -> None:
        self.procs: dict[int, tuple[float, float, float]] = {}
        self.total = 0.0

    def process(self, pid: int) -> SimpleNamespace:
        if pid not in self.procs:
            raise psutil.NoSuchProcess(pid)

        def cpu_times() -> SimpleNamespace:
            if pid not in self.procs:
                raise psutil.NoSuchProcess(pid)
            _created, own, kids = self.procs[pid]
            return SimpleNamespace(user=own, system=0.0, children_user=kids, children_system=0.0)

        return SimpleNamespace(pid=pid, create_time=lambda: self.procs[pid][0], cpu_times=cpu_times)


def test_the_agents_new_and_short_lived_processes_are_not_the_owners(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeProcs()
    monkeypatch.setattr(psutil, "Process", fake.process)
    monkeypatch.setattr(psutil, "cpu_percent", lambda _interval=None: fake.total)
    clock = SimpleNamespace(mono=0.0, wall=1000.0)
    ours = {1}
    fake.procs[1] = (10.0, 100.0, 0.0)  # the agent, up for a while
    cpu = CpuUse(25.0, lambda: set(ours), lambda: clock.mono, lambda: clock.wall)
    cpu._cores = 4  # 1 s of one core: 25 % of the machine

    def read(total: float) -> Reading | None:
        clock.mono += 1.0
        clock.wall += 1.0
        fake.total = total
        return cpu.read()

    # A task starts (a torch import, DataLoader workers): 1.8 s of CPU in its first second, first seen now.
    fake.procs[1] = (10.0, 100.2, 0.0)
    fake.procs[2] = (1000.2, 1.8, 0.0)
    ours.add(2)
    assert read(50.0) == Reading()
    # It exits (1 s more) and a uv run of 1.5 s comes and goes between two reads; the agent reaps both.
    del fake.procs[2]
    ours.discard(2)
    fake.procs[1] = (10.0, 100.3, 1.5 + 2.8)
    assert read(68.0) == Reading()  # (0.1 + 1.0 + 1.5) s of 4 cores: 65 % is the agent's
    # A process that joined the agent's tree but started long ago: its earlier CPU is not this interval's.
    fake.procs[3] = (500.0, 400.0, 0.0)
    ours.add(3)
    assert read(60.0) == Reading(busy="other programs use 60% of the CPU (threshold 25%)")
    # The owner's own program: the agent idle, the machine 40 % busy.
    fake.procs[3] = (500.0, 400.0, 0.0)
    assert read(40.0) == Reading(busy="other programs use 40% of the CPU (threshold 25%)")
    assert read(10.0) == Reading()


def test_hours_pause_and_schedule() -> None:
    night = Hours.parse("19:00-08:00")
    assert night.contains(datetime(2026, 1, 1, 23, 0)) and night.contains(datetime(2026, 1, 1, 7, 59))
    assert not night.contains(NOON) and Hours.parse("09:00-17:30").contains(NOON)
    for bad in ("7pm-8am", "19:00-19:00", "25:00-08:00"):
        with pytest.raises(ValueError, match="--desk-hours"):
            Hours.parse(bad)
    x11 = FakeSignal("x11", Reading(idle_seconds=3600))
    h = Harness(DeskConfig(idle_seconds=60, hours=night), x11)
    h.read(wall=NOON)
    assert not h.monitor.lending and h.monitor.status().reason == "outside the lending hours 19:00-08:00"
    h.read(wall=datetime(2026, 1, 1, 22, 0))
    assert h.monitor.lending and h.monitor.status().schedule == "19:00-08:00"
    h.running = 1
    status = h.monitor.set_paused(True)
    assert status.paused and not status.owner_active and status.reason == PAUSED and h.monitor.state() == "paused"
    assert h.preempted and h.preempted[-1][0].endswith(PAUSED)


def test_logind_idle_hint() -> None:
    assert parse_idle_hint("IdleHint=no\nIdleSinceHint=0\n", 100.0) == Reading(idle_seconds=0.0)
    assert parse_idle_hint("IdleHint=yes\nIdleSinceHint=40000000\n", 100.0) == Reading(idle_seconds=60.0)
    assert parse_idle_hint("Unknown property\n", 100.0) is None


def test_logind_signal_reads_loginctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LogindIdle through a fake `loginctl` of the same interface (no systemd here)."""
    fake = tmp_path / "loginctl"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = show-seat ]; then echo 7; exit 0; fi\n'
        '[ "$2" = 7 ] || { echo "no session $2" >&2; exit 1; }\n'
        "echo IdleHint=yes; echo IdleSinceHint=$(( $(date +%s) - 30 ))000000\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("XDG_SESSION_ID", raising=False)
    reading = LogindIdle().read()
    assert reading is not None and reading.idle_seconds is not None and 29 <= reading.idle_seconds <= 32
    assert LogindIdle("8").read() is None  # loginctl refused: unavailable, not a crash


async def test_control_socket_is_the_owners_only(tmp_path: Path) -> None:
    h = Harness(DeskConfig(idle_seconds=60), FakeSignal("x11", Reading(idle_seconds=3600)))
    h.read()
    control = DeskControl(tmp_path, h.monitor.status, h.monitor.set_paused)
    await control.start()
    try:
        assert (control.path.stat().st_mode & 0o777) == 0o600
        answer = await asyncio.to_thread(ask, tmp_path, "pause")
        assert answer["state"] == "paused" and answer["paused"] is True and h.monitor.paused
        answer = await asyncio.to_thread(ask, tmp_path, "resume")
        assert answer["state"] == "lending" and not h.monitor.paused
        assert "unknown op" in (await asyncio.to_thread(ask, tmp_path, "explode"))["error"]
    finally:
        await control.stop()
    assert not control.path.exists()
