"""`tensorfleet` / `tensorfleet gui`: open the window; connect to the controller or start one."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from tensorfleet_desktop.client import DEFAULT_CONTROLLER, controller_address
from tensorfleet_desktop.controller.settings import default_data_dir
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.main_window import APP_ICON, MainWindow
from tensorfleet_desktop.ui.settings_view import app_settings
from tensorfleet_desktop.ui.widgets import install_wheel_guard


def create_application(argv: list[str] | None = None) -> QApplication:
    existing = QApplication.instance()
    if isinstance(existing, QApplication):
        install_wheel_guard(existing)  # idempotent; tests' applications get it too
        return existing
    app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setOrganizationName("TensorFleet")
    app.setApplicationName("tensorfleet")
    app.setApplicationDisplayName("TensorFleet")
    app.setDesktopFileName("tensorfleet")
    app.setStyle("Fusion")
    install_wheel_guard(app)  # the wheel never changes a spin box, combo box or slider without focus
    return app


def build_window(
    address: str | None = None,
    data_dir: Path | None = None,
    autostart: bool = True,
    local_address: str = DEFAULT_CONTROLLER,
) -> MainWindow:
    """The window and its bridge, not yet started: `window.bridge.start()` connects. A controller is started
    only at `local_address`, when nothing answers there and the data dir is free."""
    prefs = app_settings()
    chosen = address or os.environ.get("TENSORFLEET_CONTROLLER") or str(prefs.value("controller", "") or "")
    period = float(prefs.value("telemetry_period", 1.0))  # type: ignore[arg-type]
    bridge = Bridge(
        controller_address(chosen or None),
        autostart=autostart,
        data_dir=data_dir,
        serve_args=("--telemetry-period", f"{period:g}"),
        local_address=local_address,
    )
    window = MainWindow(bridge, data_dir or default_data_dir())
    window.apply_theme(str(prefs.value("theme", "system")))
    return window


def run(
    address: str | None = None,
    data_dir: Path | None = None,
    autostart: bool = True,
    screenshot: Path | None = None,
    on_jobs: bool = False,
) -> int:
    """`on_jobs`: open on the Jobs view (the demo's jobs are already there), not the last or the welcome view."""
    app = create_application()
    app.setWindowIcon(QIcon(APP_ICON))
    window = build_window(address, data_dir, autostart)
    if on_jobs:
        window.show_view(window.jobs)
    window.show()
    window.bridge.start()
    if screenshot is not None:
        _photograph_when_ready(app, window, screenshot)
    code = app.exec()
    window.shutdown()  # quit without a close (Ctrl+C, app.exit): the same order as closeEvent's
    return int(code)


def _photograph_when_ready(app: QApplication, window: MainWindow, path: Path, timeout: float = 60.0) -> None:
    """Smoke tests of packaged builds: save the window once it shows the fleet, then quit (3 if it never did)."""
    deadline = time.monotonic() + timeout
    timer = QTimer(window)

    def check() -> None:
        ready = window.bridge.online and bool(window.fleet.model.rows)
        if ready or time.monotonic() > deadline:
            timer.stop()
            window.show_view(window.fleet)
            app.processEvents()
            window.grab().save(str(path))
            app.exit(0 if ready else 3)

    timer.timeout.connect(check)
    timer.start(250)
