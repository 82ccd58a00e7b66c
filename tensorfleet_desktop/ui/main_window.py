"""The main window: a view list on the left, the views, a banner for a lost controller, notifications, the
window-wide shortcuts (Ctrl+N, Ctrl+F, Del, F5, F1) and the empty tables' what-to-do-next placeholders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, QTimer
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

import tensorfleet_desktop.ui._resources_rc  # noqa: F401 - registers the compiled icons
from tensorfleet_desktop.ui import theme
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.datasets_view import DatasetsView
from tensorfleet_desktop.ui.fleet_view import FleetView
from tensorfleet_desktop.ui.job_detail import JobDetailView
from tensorfleet_desktop.ui.jobs_view import JobsView
from tensorfleet_desktop.ui.models_view import ModelsView
from tensorfleet_desktop.ui.settings_view import SettingsView
from tensorfleet_desktop.ui.submit_dialog import SubmitDialog
from tensorfleet_desktop.ui.view import EmptyState, View, attach_empty_state
from tensorfleet_desktop.ui.welcome_view import WelcomeView, first_run, mark_seen
from tensorfleet_desktop.ui.widgets import Banner, Toast

APP_ICON = ":/tensorfleet/icons/tensorfleet.svg"
NO_JOBS = "No jobs yet.\nSubmit one (Ctrl+N), or run the demo jobs to see the cluster at work."
NO_AGENTS = (
    "No agents yet.\nRun tensorfleet-agent on a machine of this LAN: the controller finds it over mDNS.\n"
    "One mDNS cannot see (another subnet): Add… its HOST:PORT."
)


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
        self.welcome = WelcomeView(bridge, notify)
        self.views: list[View] = [
            self.fleet,
            self.jobs,
            self.detail,
            self.models,
            self.datasets,
            self.settings,
            self.welcome,  # last: Ctrl+1… keep their views
        ]

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
        self.empty_states: dict[str, EmptyState] = {
            "jobs": attach_empty_state(
                self.jobs.table,
                NO_JOBS,
                [("Submit…", self.submit_job), ("Run the demo jobs", self.welcome.run_demo)],
            ),
            "fleet": attach_empty_state(
                self.fleet.table,
                NO_AGENTS,
                [("Add…", self.fleet.add_agent), ("How to start agents", lambda: self.show_view(self.welcome))],
            ),
        }
        self.jobs.open_job.connect(self.show_job)
        self.models.open_job.connect(self.show_job)
        self.jobs.compare_jobs.connect(self.compare_jobs)  # the experiments table's multi-select
        self.datasets.use_in_job.connect(self.submit_job)
        self.datasets.builtins_changed.connect(self.welcome.set_datasets)
        self.welcome.demo_submitted.connect(lambda _jobs: self.show_view(self.jobs))
        self.welcome.open_fleet.connect(lambda: self.show_view(self.fleet))
        self.welcome.add_agent.connect(self._add_agent)
        self.welcome.open_settings.connect(lambda: self.show_view(self.settings))
        bridge.connected.connect(self._connected)
        bridge.disconnected.connect(self._disconnected)
        bridge.job_finished.connect(self._job_finished)
        bridge.failed.connect(lambda message: self.notify(message, True))
        if first_run():  # the very first start explains what was found; later ones open on the jobs
            mark_seen()
            self.show_view(self.welcome)
        else:
            self.show_view(self.jobs)

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
        view_menu.addSeparator()
        self._action(view_menu, "&Filter…", QKeySequence.StandardKey.Find, self.focus_filter)
        self._action(view_menu, "&Refresh", QKeySequence.StandardKey.Refresh, self.refresh)
        jobs_menu = self.menuBar().addMenu("&Jobs")
        self.submit_action = self._action(jobs_menu, "&Submit…", QKeySequence.StandardKey.New, self.submit_job)
        self.cancel_action = self._action(jobs_menu, "&Cancel selected…", QKeySequence.StandardKey.Delete, self.delete)
        self.cancel_action.setStatusTip("Jobs: cancel the selected jobs; Models and Datasets: delete (asks first)")
        jobs_menu.addAction(self.welcome.demo_button.text(), self.welcome.run_demo)
        help_menu = self.menuBar().addMenu("&Help")
        self.welcome_action = self._action(
            help_menu, "&Welcome", QKeySequence.StandardKey.HelpContents, lambda: self.show_view(self.welcome)
        )
        about = QAction("About TensorFleet", self)
        about.triggered.connect(self._about)
        help_menu.addAction(about)

    def _action(self, menu: Any, text: str, keys: QKeySequence.StandardKey, slot: Any) -> QAction:
        action = QAction(text, self)
        action.setShortcut(QKeySequence(keys))
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        return action

    def _switch(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        self.views[row].activated()

    def show_view(self, view: View) -> None:
        self.nav.setCurrentRow(self.views.index(view))

    def current_view(self) -> View:
        return self.views[self.stack.currentIndex()]

    def show_job(self, job_id: str) -> None:
        self.detail.open_job(job_id)
        self.show_view(self.detail)

    def compare_jobs(self, job_ids: list[str]) -> None:
        """The jobs selected in the experiments table, side by side in the detail view's Compare tab."""
        self.detail.compare_panel.compare(job_ids)
        self.detail.tabs.setCurrentWidget(self.detail.compare_panel)
        self.show_view(self.detail)

    # ---- shortcuts (menu actions, so they are discoverable)

    def submit_job(self, dataset: str = "") -> None:
        """Ctrl+N: the submit dialog on the Jobs view (with `dataset`, a built-in's name or NAME:VERSION, chosen:
        Datasets → Use in a new job…)."""
        self.show_view(self.jobs)
        before = self.jobs.dialog
        self.jobs.open_submit_dialog()
        if dataset:
            self._choose_dataset_when_open(before, dataset)

    def _choose_dataset_when_open(self, before: SubmitDialog | None, dataset: str, tries: int = 200) -> None:
        """The dialog opens once the schemas arrived (off the GUI thread): then pick a workload offering the
        dataset, and the dataset."""
        dialog = self.jobs.dialog
        if dialog is None or dialog is before:
            if tries > 0:
                QTimer.singleShot(50, lambda: self._choose_dataset_when_open(before, dataset, tries - 1))
            return
        if dialog.dataset.findData(dataset) < 0:
            workload = dialog.workload_for(dataset)
            if workload is not None:
                dialog.select_workload(workload)
        dialog.select_dataset(dataset)

    def focus_filter(self) -> None:
        """Ctrl+F: the current view's filter field (Jobs, Models, Datasets)."""
        self.current_view().focus_filter()

    def refresh(self) -> None:
        """F5: the current view asks the controller again."""
        self.current_view().refresh()

    def delete(self) -> None:
        """Del: cancel the selected jobs on the Jobs view, delete the selected model version or dataset; every
        one asks first. Nothing happens without a selection (Del in a text field stays the text field's)."""
        view = self.current_view()
        if view is self.jobs:
            if self.jobs.table.hasFocus() or self.jobs.selected():
                self.jobs.confirm_cancel_selected()  # asks, then cancels
        elif view is self.models:
            self.models.ask_delete()
        elif view is self.datasets:
            self.datasets.ask_delete()

    def _add_agent(self) -> None:
        self.show_view(self.fleet)
        self.fleet.add_agent()

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

    def apply_theme(self, name: str) -> None:
        """The Settings choice: Fusion with a real light or dark palette, the plots recoloured to match."""
        theme.restyle_plots(self, theme.apply(name))

    def shutdown(self) -> None:
        """Stop what could still talk to the controller, then the bridge, so QApplication exits with no timer
        firing into a stopped loop and no asyncio task left pending (idempotent: closeEvent and app.run call it)."""
        for timer in self.findChildren(QTimer):  # plot flushes, views' polls, live clocks
            timer.stop()
        self.bridge.stop()

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
        self.shutdown()
        if self.tray is not None:
            self.tray.hide()
        event.accept()
