"""The main window: a view list on the left, the views, a banner for a lost controller, notifications."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QSize
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence, QResizeEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QSystemTrayIcon,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_desktop.ui import _resources_rc  # noqa: F401 - registers the compiled icons
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.datasets_view import DatasetsView
from tensorfleet_desktop.ui.fleet_view import FleetView
from tensorfleet_desktop.ui.job_detail import JobDetailView
from tensorfleet_desktop.ui.jobs_view import JobsView
from tensorfleet_desktop.ui.models_view import ModelsView
from tensorfleet_desktop.ui.plots import configure_pyqtgraph
from tensorfleet_desktop.ui.settings_view import SettingsView, apply_theme
from tensorfleet_desktop.ui.view import View
from tensorfleet_desktop.ui.widgets import Banner, Toast

APP_ICON = ":/tensorfleet/icons/tensorfleet.svg"


def icon(name: str) -> QIcon:
    return QIcon(f":/tensorfleet/icons/{name}.svg")


class MainWindow(QMainWindow):
    def __init__(self, bridge: Bridge, data_dir: Path) -> None:
        super().__init__()
        self.bridge = bridge
        self.notifications: list[str] = []  # every job-end notification shown (tray or toast)
        self.setWindowTitle("TensorFleet")
        self.setWindowIcon(QIcon(APP_ICON))
        self.resize(1280, 800)

        notify = self.notify
        self.fleet = FleetView(bridge, notify)
        self.jobs = JobsView(bridge, notify)
        self.detail = JobDetailView(bridge, notify)
        self.models = ModelsView(bridge, notify)
        self.datasets = DatasetsView(bridge, notify)
        self.settings = SettingsView(bridge, notify, data_dir)
        self.views: list[View] = [self.fleet, self.jobs, self.detail, self.models, self.datasets, self.settings]

        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.nav.setIconSize(QSize(22, 22))
        self.nav.setFixedWidth(160)
        self.stack = QStackedWidget()
        for view in self.views:
            self.nav.addItem(QListWidgetItem(icon(view.icon), view.title))
            self.stack.addWidget(view)
        self.nav.currentRowChanged.connect(self._switch)

        self.banner = Banner()
        self.retry_button = QPushButton("Retry")
        self.retry_button.setObjectName("retry")
        self.retry_button.clicked.connect(self.retry)
        banner_row = self.banner.layout()
        assert banner_row is not None
        banner_row.addWidget(self.retry_button)
        self._ever_connected = False
        body = QWidget()
        row = QVBoxLayout(body)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self.banner)
        content = QWidget()
        columns = QHBoxLayout(content)
        columns.addWidget(self.nav)
        columns.addWidget(self.stack, 1)
        row.addWidget(content, 1)
        self.setCentralWidget(body)

        self.connection_label = QLabel("connecting…")
        self.statusBar().addPermanentWidget(self.connection_label)

        self.tray: QSystemTrayIcon | None = None
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.tray = QSystemTrayIcon(QIcon(APP_ICON), self)
            self.tray.setToolTip("TensorFleet")
            self.tray.show()

        self._build_menus()
        self.jobs.open_job.connect(self.show_job)
        self.models.open_job.connect(self.show_job)
        bridge.connected.connect(self._connected)
        bridge.disconnected.connect(self._disconnected)
        bridge.job_finished.connect(self._job_finished)
        bridge.failed.connect(lambda message: self.notify(message, True))
        self.nav.setCurrentRow(1)

    # ---- menus and navigation

    def _build_menus(self) -> None:
        app_menu = self.menuBar().addMenu("&TensorFleet")
        quit_action = QAction("&Quit (the cluster keeps running)", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        stop_action = QAction("Quit and &stop the cluster", self)
        stop_action.triggered.connect(self.quit_and_stop)
        app_menu.addAction(quit_action)
        app_menu.addAction(stop_action)
        view_menu = self.menuBar().addMenu("&View")
        for i, view in enumerate(self.views):
            action = QAction(icon(view.icon), view.title, self)
            action.setShortcut(QKeySequence(f"Ctrl+{i + 1}"))
            action.triggered.connect(lambda _checked=False, i=i: self.nav.setCurrentRow(i))
            view_menu.addAction(action)
        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("About TensorFleet", self)
        about.triggered.connect(self._about)
        help_menu.addAction(about)

    def _switch(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        self.views[row].activated()

    def show_view(self, view: View) -> None:
        self.nav.setCurrentRow(self.views.index(view))

    def show_job(self, job_id: str) -> None:
        self.detail.open_job(job_id)
        self.show_view(self.detail)

    def _about(self) -> None:
        from tensorfleet_agent import AGENT_VERSION

        QMessageBox.about(
            self,
            "About TensorFleet",
            f"TensorFleet {AGENT_VERSION}\nTrain ML models on the machines you already have.\n"
            f"Controller: {self.bridge.address}",
        )

    # ---- connection and notifications

    def _connected(self, info: dict[str, Any]) -> None:
        self._ever_connected = True
        self.banner.hide()
        self.connection_label.setText(info["message"])

    def _disconnected(self, why: str) -> None:
        if self._ever_connected:
            self.banner.show_message(f"Lost the controller at {self.bridge.address}: {why}. Reconnecting…")
        else:  # never connected: say what was found (nothing started behind the user's back)
            self.banner.show_message(f"Not connected: {why}")
        self.connection_label.setText("disconnected")

    def retry(self) -> None:
        """Try the controller address again, starting the local controller if that is now allowed."""
        self.banner.show_message(f"Connecting to {self.bridge.address}…")
        self.bridge.reconnect(self.bridge.address)

    def notify(self, message: str, error: bool = False) -> None:
        self.statusBar().showMessage(message, 10_000)
        if error:
            self.toast(message)

    def toast(self, message: str) -> None:
        Toast(self, message)

    def _job_finished(self, job: dict[str, Any]) -> None:
        from tensorfleet_desktop.ui.formatting import metric_text

        detail = metric_text(job) or job["error"]
        message = f"{job['name']} {job['state'].lower()}" + (f": {detail}" if detail else "")
        self.notifications.append(message)
        if self.tray is not None and self.tray.supportsMessages():
            self.tray.showMessage("TensorFleet", message, QIcon(APP_ICON), 8000)
        else:
            self.toast(message)

    # ---- theme and shutdown

    def apply_theme(self, theme: str) -> None:
        dark = apply_theme(theme)
        configure_pyqtgraph(dark)
        for plot in self.findChildren(pg.PlotWidget):
            plot.setBackground("#1e1e1e" if dark else "w")

    def quit_and_stop(self) -> None:
        def stopped(_result: object) -> None:
            self.notify("stopped the cluster", False)
            self.close()

        def failed(error: str) -> None:
            self.notify(error, True)
            self.close()

        self.bridge.call(lambda c: c.shutdown(), stopped, failed)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        for toast in self.findChildren(Toast):
            toast.place()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.bridge.stop()
        if self.tray is not None:
            self.tray.hide()
        event.accept()
