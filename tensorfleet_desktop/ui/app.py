"""`tensorfleet` / `tensorfleet gui`: open the window; connect to the controller or start one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from tensorfleet_desktop.client import controller_address
from tensorfleet_desktop.controller.app import default_data_dir
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.main_window import APP_ICON, MainWindow
from tensorfleet_desktop.ui.settings_view import app_settings


def create_application(argv: list[str] | None = None) -> QApplication:
    existing = QApplication.instance()
    if isinstance(existing, QApplication):
        return existing
    app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setOrganizationName("TensorFleet")
    app.setApplicationName("tensorfleet")
    app.setApplicationDisplayName("TensorFleet")
    app.setDesktopFileName("tensorfleet")
    app.setStyle("Fusion")
    return app


def build_window(
    address: str | None = None,
    data_dir: Path | None = None,
    autostart: bool = True,
    poll_interval: float = 1.0,
) -> MainWindow:
    """The window and its bridge, not yet started: `window.bridge.start()` connects."""
    prefs = app_settings()
    chosen = address or os.environ.get("TENSORFLEET_CONTROLLER") or str(prefs.value("controller", "") or "")
    period = float(prefs.value("telemetry_period", 1.0))  # type: ignore[arg-type]
    bridge = Bridge(
        controller_address(chosen or None),
        autostart=autostart,
        data_dir=data_dir,
        serve_args=("--telemetry-period", f"{period:g}"),
        poll_interval=poll_interval,
    )
    window = MainWindow(bridge, data_dir or default_data_dir())
    window.apply_theme(str(prefs.value("theme", "system")))
    return window


def run(address: str | None = None, data_dir: Path | None = None, autostart: bool = True) -> int:
    app = create_application()
    app.setWindowIcon(QIcon(APP_ICON))
    window = build_window(address, data_dir, autostart)
    window.show()
    window.bridge.start()
    code = app.exec()
    window.bridge.stop()
    return int(code)
