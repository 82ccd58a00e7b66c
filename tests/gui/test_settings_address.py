"""Settings checks a controller address before saving it, off the GUI thread, and says what it found; a window
pointed at an address where nothing answers starts nothing and offers a retry (pytest-qt, offscreen)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from PySide6.QtCore import Qt

from helpers.controller import ControllerProcess
from helpers.servers import free_port
from tensorfleet_desktop.local_cluster import check_address
from tensorfleet_desktop.ui.app import build_window, create_application
from tensorfleet_desktop.ui.main_window import MainWindow
from tensorfleet_desktop.ui.settings_view import app_settings

pytestmark = pytest.mark.slow


@pytest.fixture
def window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MainWindow]:
    """A window pointed at an address where nothing answers; it may start a controller only at another one."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # QSettings away from the user's
    monkeypatch.delenv("TENSORFLEET_CONTROLLER", raising=False)
    create_application()
    app_settings().remove("controller")  # Qt keeps the first settings path of the process: start clean
    nowhere = f"127.0.0.1:{free_port()}"
    win = build_window(nowhere, data_dir=tmp_path / "data", local_address=f"127.0.0.1:{free_port()}")
    win.show()
    win.bridge.start()
    yield win
    win.close()
    app_settings().remove("controller")


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The threads the address checks ran on."""
    threads: list[int] = []

    def recorded(address: str, timeout: float = 3.0) -> Any:
        threads.append(threading.get_ident())
        return check_address(address, timeout=0.5)

    monkeypatch.setattr("tensorfleet_desktop.ui.settings_view.check_address", recorded)
    return threads


def connect(qtbot: Any, win: MainWindow, address: str) -> str:
    view = win.settings
    win.show_view(view)
    view.address.setText(address)
    qtbot.mouseClick(view.connect_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "checking" not in view.check_result.text(), timeout=15_000)
    return view.check_result.text()


def test_a_window_pointed_where_nothing_answers_starts_nothing_and_offers_a_retry(
    qtbot: Any, window: MainWindow, tmp_path: Path
) -> None:
    qtbot.waitUntil(lambda: window.banner.isVisibleTo(window), timeout=15_000)
    text = window.banner.label.text()
    assert window.bridge.address in text and "connection refused" in text and "Settings" in text
    assert window.retry_button.isVisibleTo(window)
    assert window.bridge.started_pid == 0 and not (tmp_path / "data").exists()  # no controller, no data dir
    qtbot.mouseClick(window.retry_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "connection refused" in window.banner.label.text(), timeout=15_000)
    assert window.bridge.started_pid == 0


def test_settings_refuses_to_save_an_address_where_nothing_listens(
    qtbot: Any, window: MainWindow, checks: list[int]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    said = connect(qtbot, window, address)
    assert address in said and "connection refused" in said and "Not saved" in said
    assert app_settings().value("controller", "") == ""
    assert window.settings.use_anyway_button.isVisibleTo(window)
    assert checks and threading.get_ident() not in checks  # the GUI thread never waited on the network
    qtbot.mouseClick(window.settings.use_anyway_button, Qt.MouseButton.LeftButton)
    assert app_settings().value("controller", "") == address  # the user insisted


def test_settings_says_when_an_address_times_out(qtbot: Any, window: MainWindow, checks: list[int]) -> None:
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        said = connect(qtbot, window, address)
    finally:
        silent.close()
    assert address in said and "does not answer within 0.5 s" in said and "Not saved" in said
    assert app_settings().value("controller", "") == ""


def test_settings_saves_an_address_where_a_controller_answers(
    qtbot: Any, window: MainWindow, checks: list[int], controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    controller = controller_factory(tmp_path / "controller", extra_args=["--no-mdns"]).start()
    said = connect(qtbot, window, controller.address)
    assert "answering" in said
    assert app_settings().value("controller", "") == controller.address
    # `online` is set on the asyncio thread before the queued `connected` signal reaches the window: wait for both
    qtbot.waitUntil(
        lambda: (
            window.bridge.online
            and window.bridge.address == controller.address
            and not window.banner.isVisibleTo(window)
        ),
        timeout=15_000,
    )
    assert window.connection_label.text() == f"connected to the controller on {controller.address}"
