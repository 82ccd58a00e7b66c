"""Jobs: the table (sort, filter), the submit dialog, and cancel / pause / resume / retry / resubmit."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLineEdit,
    QVBoxLayout,
)

from tensorfleet_desktop.client import TERMINAL
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.formatting import (
    best_metric,
    clock,
    duration,
    job_agents,
    job_duration,
    job_state,
    job_state_color,
    metric_text,
    workload,
)
from tensorfleet_desktop.ui.submit_dialog import SubmitDialog, upload_text
from tensorfleet_desktop.ui.table_model import ROW_ROLE, SORT_ROLE, Column, RowTableModel
from tensorfleet_desktop.ui.view import Notify, View
from tensorfleet_desktop.ui.widgets import ProgressDelegate, action_button, data_table

STATE_FILTERS = ("all", "active", "QUEUED", "PREPARING", "RUNNING", "PAUSED", "SUCCEEDED", "FAILED", "CANCELLED")
ACTIVE = ("QUEUED", "PREPARING", "RUNNING", "PAUSED", "PAUSING")


class JobFilter(QSortFilterProxyModel):
    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.state = "all"
        self.setSortRole(SORT_ROLE)

    def set_filter(self, text: str, state: str) -> None:
        self.text, self.state = text.lower().strip(), state
        self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        job = self.sourceModel().index(source_row, 0, source_parent).data(ROW_ROLE)
        state = job_state(job)  # as the table shows it: PREPARING while a project's tasks prepare
        if self.state == "active" and state not in ACTIVE:
            return False
        if self.state not in ("all", "active") and state != self.state:
            return False
        if not self.text:
            return True
        haystack = " ".join((job["id"], job["name"], workload(job), state, job_agents(job), job["dataset"]))
        return self.text in haystack.lower()


def _progress(job: dict[str, Any]) -> str:
    tasks = job["tasks"]
    return f"{job['progress'] * 100:.0f}%  ({tasks['completed']}/{tasks['total']})"


class JobsView(View):
    title = "Jobs"
    icon = "jobs"
    open_job = Signal(str)

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__(bridge, notify)
        self.workloads: list[dict[str, Any]] = []
        self.agent_names: list[str] = []
        self.dialog: SubmitDialog | None = None
        self.model = RowTableModel(
            [
                Column("Name", lambda j: j["name"], tooltip=lambda j: f"{j['id']}\n{j['error']}".strip()),
                Column("Workload", workload),
                Column("State", job_state, tooltip=lambda j: j["error"], color=job_state_color),
                Column("Progress", _progress, sort=lambda j: j["progress"], extra=lambda j: j["progress"]),
                Column("Agents", job_agents),
                Column("Started", lambda j: clock(j["started_at"]), sort=lambda j: j["started_at"] or 0.0),
                Column(
                    "Duration",
                    lambda j: duration(job_duration(j)),
                    sort=lambda j: job_duration(j) or 0.0,
                ),
                Column("Best metric", metric_text, sort=lambda j: (best_metric(j) or ("", 0.0))[1]),
                Column("Submitted", lambda j: clock(j["created_at"]), sort=lambda j: j["created_at"]),
            ]
        )
        self.proxy = JobFilter()
        self.table, _ = data_table(
            self.model, self.proxy, sort_column=8, descending=True, multi=True, name="jobs_table"
        )
        for column, width in ((0, 220), (3, 150), (4, 140), (5, 140), (7, 170)):
            self.table.setColumnWidth(column, width)
        self._progress_delegate = ProgressDelegate()
        self.table.setItemDelegateForColumn(3, self._progress_delegate)
        self.table.doubleClicked.connect(lambda index: self.open_job.emit(index.data(ROW_ROLE)["id"]))

        self.filter_text = QLineEdit()
        self.filter_text.setObjectName("job_filter")
        self.filter_text.setPlaceholderText("filter by name, workload, agent, dataset…")
        self.filter_state = QComboBox()
        self.filter_state.addItems(list(STATE_FILTERS))
        self.filter_text.textChanged.connect(self._apply_filter)
        self.filter_state.currentIndexChanged.connect(self._apply_filter)

        self.submit_button = action_button("Submit…", "submit a job (parameters from the workload's schema)")
        self.cancel_button = action_button("Cancel", "cancel the selected jobs")
        self.pause_button = action_button("Pause", "checkpoint and stop; resume later")
        self.resume_button = action_button("Resume")
        self.retry_button = action_button("Retry", "run a failed or cancelled job's unfinished tasks again")
        self.resubmit_button = action_button("Resubmit", "submit a copy of the selected job")
        self.open_button = action_button("Details", "curves, tasks, logs and trials of the selected job")
        self.submit_button.clicked.connect(self.open_submit_dialog)
        self.cancel_button.clicked.connect(lambda: self._each("cancel", "cancelled"))
        self.pause_button.clicked.connect(lambda: self._each("pause", "pausing"))
        self.resume_button.clicked.connect(lambda: self._each("resume", "resumed"))
        self.retry_button.clicked.connect(lambda: self._each("retry", "retrying"))
        self.resubmit_button.clicked.connect(lambda: self._each("resubmit", "resubmitted"))
        self.open_button.clicked.connect(self._open_selected)

        bar = QHBoxLayout()
        bar.addWidget(self.submit_button)
        for b in (
            self.cancel_button,
            self.pause_button,
            self.resume_button,
            self.retry_button,
            self.resubmit_button,
            self.open_button,
        ):
            bar.addWidget(b)
        bar.addStretch(1)
        bar.addWidget(self.filter_text, 2)
        bar.addWidget(self.filter_state)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.table, 1)

        self.table.selectionModel().selectionChanged.connect(lambda *_: self._update_buttons())
        bridge.jobs_changed.connect(self.set_jobs)
        bridge.agents_changed.connect(lambda agents: setattr(self, "agent_names", sorted({a["name"] for a in agents})))
        self._update_buttons()

    def set_jobs(self, jobs: list[dict[str, Any]]) -> None:
        self.model.set_rows(jobs)
        self._update_buttons()

    def job(self, job_id: str) -> dict[str, Any] | None:
        position = self.model.find(job_id)
        return self.model.row(position) if position >= 0 else None

    def _apply_filter(self) -> None:
        self.proxy.set_filter(self.filter_text.text(), self.filter_state.currentText())

    def selected(self) -> list[dict[str, Any]]:
        return [index.data(ROW_ROLE) for index in self.table.selectionModel().selectedRows()]

    def select(self, job_id: str) -> None:
        position = self.model.find(job_id)
        if position >= 0:
            index = self.proxy.mapFromSource(self.model.index(position, 0))
            self.table.selectRow(index.row())

    def _update_buttons(self) -> None:
        jobs = self.selected()
        states = {j["state"] for j in jobs}
        self.cancel_button.setEnabled(any(s not in TERMINAL for s in states))
        self.pause_button.setEnabled("RUNNING" in states or "QUEUED" in states)
        self.resume_button.setEnabled("PAUSED" in states)
        self.retry_button.setEnabled(bool(states & {"FAILED", "CANCELLED"}))
        self.resubmit_button.setEnabled(bool(jobs))
        self.open_button.setEnabled(len(jobs) == 1)

    def _open_selected(self) -> None:
        jobs = self.selected()
        if jobs:
            self.open_job.emit(jobs[0]["id"])

    def _each(self, action: str, verb: str) -> None:
        for job in self.selected():
            self.act(action, job["id"], f"{job['name']}: {verb}")

    def act(self, action: str, job_id: str, message: str = "") -> None:
        self.run(lambda c: getattr(c, action)(job_id), message or f"{action} {job_id}", f"{action} {job_id}")

    # ---- submit

    def open_submit_dialog(self) -> None:
        """Fetch the schemas and datasets (off the GUI thread), then show the dialog."""

        def with_datasets(workloads: list[dict[str, Any]]) -> None:
            self.workloads = workloads
            self.run(lambda c: c.datasets(), show, "cannot list datasets")

        def show(datasets: list[dict[str, Any]]) -> None:
            self.dialog = SubmitDialog(
                self.workloads, datasets, self.agent_names, self, run_blocking=self.bridge.run_blocking
            )
            self.dialog.submit_requested.connect(self._submit)
            self.dialog.project_submit_requested.connect(self._submit_project)
            self.dialog.open()

        self.run(lambda c: c.workloads(), with_datasets, "cannot load the workload schemas")

    def _submit(self, spec: dict[str, Any]) -> None:
        dialog = self.dialog
        if dialog is None:
            return

        def done(job: dict[str, Any]) -> None:
            dialog.submit_succeeded(job)
            self.notify(f"submitted {job['name']} ({job['id']})", False)

        self.bridge.call(lambda c: c.submit(spec), done, dialog.submit_failed)

    def _submit_project(self, request: dict[str, Any]) -> None:
        """Snapshot, upload what the controller lacks and submit, all on the bridge's side (the scan in a thread)."""
        dialog = self.dialog
        if dialog is None:
            return

        def done(job: dict[str, Any]) -> None:
            dialog.submit_succeeded(job)
            self.notify(f"submitted {job['name']} ({job['id']}): {upload_text(job['upload'])}", False)

        self.bridge.call(
            lambda c: c.submit_project(
                request["path"],
                request["command"],
                env=request["env"],
                max_project_size=request["max_project_size"],
                **request["fields"],
            ),
            done,
            dialog.submit_failed,
        )
