"""The desk-mode tray icon against a real agent in desk mode (its control socket): it shows whether the machine is
lent, pauses and resumes lending from its menu, and says so when no agent answers — never blocking the GUI thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from tensorfleet_agent.core.types import DeskStatus
from tensorfleet_agent.desk.control import DeskControl
from tensorfleet_desktop.ui.desk_tray import STATES, DeskTray


class FakeDesk:
    """The agent's side of the socket, served by the real DeskControl on its own asyncio loop."""

    def __init__(self, data_dir: Path) -> None:
        self.paused = False
        self.ops: list[bool] = []
        self.loop = asyncio.new_event_loop()
        self.control = DeskControl(data_dir, self.status, self.set_paused)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.control.start(), self.loop).result(5)

    def status(self) -> DeskStatus:
        reason = "lending paused by the owner" if self.paused else "keyboard or mouse idle for 12 min"
        return DeskStatus(owner_active=False, paused=self.paused, reason=reason)

    def set_paused(self, paused: bool) -> None:
        self.ops.append(paused)
        self.paused = paused

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.control.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[FakeDesk]:
    fake = FakeDesk(tmp_path)
    yield fake
    fake.stop()


def test_the_tray_shows_lending_and_pauses_and_resumes_it(qtbot: QtBot, desk: FakeDesk, tmp_path: Path) -> None:
    tray = DeskTray(tmp_path)
    tray.start()
    try:
        qtbot.waitUntil(lambda: tray.state == "lending", timeout=5000)
        assert tray.headline.text() == STATES["lending"][1] and "idle for 12 min" in tray.why.text()
        assert tray.toggle.isEnabled() and tray.toggle.text() == "Pause lending"
        tray.toggle.trigger()
        qtbot.waitUntil(lambda: tray.state == "paused", timeout=5000)
        assert desk.ops == [True] and tray.toggle.text() == "Resume lending"
        assert "paused by the owner" in tray.icon.toolTip()
        tray.toggle.trigger()
        qtbot.waitUntil(lambda: tray.state == "lending", timeout=5000)
        assert desk.ops == [True, False]
    finally:
        tray.stop()


def test_without_an_agent_the_tray_says_so_and_offers_nothing(qtbot: QtBot, tmp_path: Path) -> None:
    tray = DeskTray(tmp_path / "no-agent-here")
    tray.start()
    try:
        qtbot.waitUntil(lambda: tray.state == "unreachable", timeout=5000)
        assert tray.headline.text() == STATES["unreachable"][1]
        assert not tray.toggle.isEnabled()
    finally:
        tray.stop()
