"""`tensorfleet` with no command opens the window; without the desktop extra or a display it says what to do."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from tensorfleet_desktop import cli


def test_no_command_means_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr("tensorfleet_desktop.cli.gui.run", lambda args: seen.append(args) or 0)
    assert cli.main([]) == 0
    assert seen and seen[0].command == "gui"


def test_gui_takes_the_controller_address_before_or_after_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr("tensorfleet_desktop.cli.gui.run", lambda args: seen.append(args) or 0)
    assert cli.main(["gui", "--controller", "127.0.0.1:50060"]) == 0
    assert cli.main(["--controller", "127.0.0.1:50070", "gui"]) == 0
    assert cli.main(["gui"]) == 0
    assert [args.controller for args in seen] == ["127.0.0.1:50060", "127.0.0.1:50070", None]


def test_without_the_desktop_extra_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "PySide6" else real(name, *a))
    assert cli.main(["gui"]) == 2
    assert "pip install 'tensorfleet[desktop]'" in capsys.readouterr().err


def test_without_a_display_it_points_at_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert cli.main(["gui"]) == 2
    assert "no display" in capsys.readouterr().err
