"""Jobs: the experiments table (metric and hyperparameter columns, column filters, groups), the submit dialog,
compare, and cancel (after a confirmation) / pause / resume / retry / resubmit."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, QPoint, Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QMouseEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLineEdit,
    QMenu,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

from tensorfleet_desktop.client import TERMINAL
from tensorfleet_desktop.ui.bridge import JOB_LIST_LIMIT, Bridge
from tensorfleet_desktop.ui.experiments import (
    GROUP_KEY,
    GROUP_MODES,
    ColumnChoice,
    FilterError,
    JobFilter,
    JobsModel,
    header_width,
    parse_filter,
)
from tensorfleet_desktop.ui.settings_view import app_settings
from tensorfleet_desktop.ui.submit_dialog import SubmitDialog, upload_text
from tensorfleet_desktop.ui.table_model import ROW_ROLE
from tensorfleet_desktop.ui.view import Notify, View
from tensorfleet_desktop.ui.widgets import ProgressDelegate, action_button, add_row_menu, data_table, menu_action

__all__ = ["JobFilter", "JobsView"]

STATE_FILTERS = ("all", "active", "QUEUED", "PREPARING", "RUNNING", "PAUSED", "SUCCEEDED", "FAILED", "CANCELLED")
# The default columns (these, 4 metrics and 4 hyperparameters sized to their names) fit ~1100 px of table.
WIDTHS = {
    "name": 170,
    "workload": 116,
    "state": 92,
    "progress": 100,
    "duration": 64,
    "agents": 140,
    "started": 80,
    "best": 160,
    "submitted": 84,
    "tags": 140,
}
BAD_FILTER_STYLE = "QLineEdit { border: 1px solid #d1242f; color: #d1242f; }"


class ChecklistMenu(QMenu):
    """A menu of check boxes that stays open while the user ticks several."""

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        action = self.actionAt(event.position().toPoint())
        if action is not None and action.isCheckable() and action.isEnabled():
            action.trigger()
            return
        super().mouseReleaseEvent(event)


class JobsView(View):
    title = "Jobs"
    icon = "jobs"
    open_job = Signal(str)
    compare_jobs = Signal(list)  # job ids (2 or more) for the job detail's Compare tab

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__(bridge, notify)
        self.workloads: list[dict[str, Any]] = []
        self.agent_names: list[str] = []
        self.dialog: SubmitDialog | None = None
        self.choice = ColumnChoice()
        self.model = JobsModel(self.choice.visible())
        self.proxy = JobFilter()
        self.table, _ = data_table(self.model, self.proxy, sort_column=0, multi=True, name="jobs_table")
        self.choice.width_of = self._default_width  # the header's font sizes the default metric columns
        self._progress_delegate = ProgressDelegate()
        self._sort_by("submitted", Qt.SortOrder.DescendingOrder)
        self._size_columns({})
        self.table.doubleClicked.connect(self._double_clicked)
        add_row_menu(self.table, self._row_actions)
        header = self.table.horizontalHeader()
        header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        header.customContextMenuRequested.connect(lambda position: self._popup_columns(header.mapToGlobal(position)))
        for signal in (
            self.proxy.layoutChanged,
            self.proxy.rowsInserted,
            self.proxy.rowsRemoved,
            self.proxy.modelReset,
        ):
            signal.connect(self._span_headers)

        self.filter_text = QLineEdit()
        self.filter_text.setObjectName("job_filter")
        self.filter_text.setPlaceholderText("filter by name, workload, agent, dataset, group, tag…")
        self.filter_text.setClearButtonEnabled(True)
        self.filter_columns = QLineEdit()
        self.filter_columns.setObjectName("column_filter")
        self.filter_columns.setPlaceholderText("columns: test_accuracy>0.9 algorithm=random_forest n_estimators<=100")
        self.filter_columns.setClearButtonEnabled(True)
        self.filter_columns.setToolTip(self._filter_help)
        self.filter_error = ""
        self.filter_state = QComboBox()
        self.filter_state.addItems(list(STATE_FILTERS))
        self.mine = QCheckBox("Mine")  # who "I" am comes with the connection (GetInfo's caller), never asked here
        self.mine.setObjectName("mine_toggle")
        self.mine.setEnabled(False)
        self.mine.setToolTip("only the jobs you submitted (known once connected)")
        self.user = ""
        self.group_by = QComboBox()
        self.group_by.setObjectName("group_by")
        for mode in GROUP_MODES:
            self.group_by.addItem(f"Group: {mode}", mode)
        saved = str(app_settings().value(GROUP_KEY, "none"))
        self.group_by.setCurrentIndex(max(0, self.group_by.findData(saved)))
        self.model.set_grouping(str(self.group_by.currentData()))
        self.columns_button = QPushButton("Columns…")
        self.columns_button.setObjectName("columns_button")
        self.columns_button.setToolTip("choose the metric, hyperparameter and other columns (saved for you)")
        self.columns_button.clicked.connect(
            lambda: self._popup_columns(self.columns_button.mapToGlobal(QPoint(0, self.columns_button.height())))
        )
        self.filter_text.textChanged.connect(self._apply_filter)
        self.filter_columns.textChanged.connect(self._apply_filter)
        self.filter_state.currentIndexChanged.connect(self._apply_filter)
        self.mine.toggled.connect(self._apply_filter)
        self.group_by.currentIndexChanged.connect(self._group_changed)

        self.submit_button = action_button("Submit…", "submit a job (parameters from the workload's schema)")
        self.cancel_button = action_button("Cancel…", "cancel the selected jobs (asks first)")
        self.pause_button = action_button("Pause", "checkpoint and stop; resume later")
        self.resume_button = action_button("Resume")
        self.retry_button = action_button("Retry", "run a failed or cancelled job's unfinished tasks again")
        self.resubmit_button = action_button("Resubmit", "submit a copy of the selected job")
        self.open_button = action_button("Details", "curves, tasks, logs and trials of the selected job")
        self.compare_button = action_button("Compare", "the selected jobs' metrics and curves side by side")
        self.submit_button.clicked.connect(self.open_submit_dialog)
        self.cancel_button.clicked.connect(self.confirm_cancel_selected)
        self.pause_button.clicked.connect(lambda: self._each("pause", "pausing"))
        self.resume_button.clicked.connect(lambda: self._each("resume", "resumed"))
        self.retry_button.clicked.connect(lambda: self._each("retry", "retrying"))
        self.resubmit_button.clicked.connect(lambda: self._each("resubmit", "resubmitted"))
        self.open_button.clicked.connect(self._open_selected)
        self.compare_button.clicked.connect(self._compare_selected)

        bar = QHBoxLayout()
        bar.addWidget(self.submit_button)
        for b in (
            self.cancel_button,
            self.pause_button,
            self.resume_button,
            self.retry_button,
            self.resubmit_button,
            self.open_button,
            self.compare_button,
        ):
            bar.addWidget(b)
        bar.addStretch(1)
        bar.addWidget(self.group_by)
        bar.addWidget(self.columns_button)
        filters = QHBoxLayout()
        filters.addWidget(self.filter_text, 2)
        filters.addWidget(self.filter_columns, 3)
        filters.addWidget(self.filter_state)
        filters.addWidget(self.mine)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addLayout(filters)
        layout.addWidget(self.table, 1)

        self.table.selectionModel().selectionChanged.connect(lambda *_: self._update_buttons())
        bridge.jobs_changed.connect(self.set_jobs)
        bridge.connected.connect(self.learn_user)
        bridge.agents_changed.connect(lambda agents: setattr(self, "agent_names", sorted({a["name"] for a in agents})))
        self._update_buttons()

    def set_jobs(self, jobs: list[dict[str, Any]]) -> None:
        if self.choice.discover(jobs):  # columns first: on the first list the reset finds no rows to redo
            self._show_columns()
            if self.filter_error:  # a key it did not know may exist now
                self._apply_filter()
        self.model.set_rows(jobs)
        self._update_buttons()

    def learn_user(self, connection: dict[str, Any]) -> None:
        """Who the controller takes this window for (GetInfo's caller, delivered with the connection): "Mine"
        keeps that user's jobs."""
        caller = (connection.get("info") or {}).get("caller") or {}
        self.user = str(caller.get("name", ""))
        self.mine.setEnabled(bool(self.user))
        role = f", {caller['role']}" if caller.get("role") else ""
        self.mine.setToolTip(
            f"only the jobs you submitted (as {self.user}{role})" if self.user else "the controller does not know you"
        )
        self._apply_filter()

    def job(self, job_id: str) -> dict[str, Any] | None:
        position = self.model.find(job_id)
        return self.model.row(position) if position >= 0 else None

    def refresh(self) -> None:
        self.run(lambda c: c.jobs(limit=JOB_LIST_LIMIT), self.set_jobs, "cannot list the jobs")

    def focus_filter(self) -> None:
        self.filter_text.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.filter_text.selectAll()

    # ---- filter, columns, groups

    def _apply_filter(self) -> None:
        try:
            conditions = parse_filter(self.filter_columns.text(), self.choice.metrics, self.choice.params)
            self.filter_error = ""
        except FilterError as exc:
            conditions, self.filter_error = [], str(exc)  # a bad expression filters nothing (and says why)
        self.filter_columns.setStyleSheet(BAD_FILTER_STYLE if self.filter_error else "")
        self.filter_columns.setToolTip(self.filter_error or self._filter_help)
        mine = self.user if self.mine.isChecked() and self.mine.isEnabled() else ""
        self.proxy.set_filter(self.filter_text.text(), self.filter_state.currentText(), conditions, mine)
        self._span_headers()

    @property
    def _filter_help(self) -> str:
        return (
            "KEY OP VALUE terms, all of which must hold (separate them with spaces or commas). KEY: a metric, "
            "a hyperparameter, name, state, algorithm, dataset, group, tag, agent. OP: = != < <= > >= ~ "
            "(~ contains; = on text takes * and ? wildcards)."
        )

    def column_menu(self) -> QMenu:
        """Every column (base, metrics, hyperparameters) with a check box; a change is saved for the user."""
        menu = ChecklistMenu(self)
        menu.setObjectName("column_menu")
        shown = {c.id for c in self.model.columns}
        section = ""
        for group, column in self.choice.available():
            if group != section:
                menu.addSection(group)
                section = group
            action = QAction(column.title, menu)
            action.setCheckable(True)
            action.setChecked(column.id in shown)
            action.setData(column.id)
            if column.header_tip:
                action.setToolTip(column.header_tip)
            action.toggled.connect(lambda checked, key=column.id: self.set_column_visible(key, checked))
            menu.addAction(action)
        menu.addSeparator()
        reset = menu_action("Reset to the default columns", self.reset_columns, self.choice.chosen is not None)
        reset.setParent(menu)  # the menu does not own what it is given
        menu.addAction(reset)
        return menu

    def _popup_columns(self, where: QPoint) -> None:
        menu = self.column_menu()
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        menu.popup(where)

    def set_column_visible(self, key: str, shown: bool) -> None:
        self.choice.set_visible(key, shown)
        self._show_columns()

    def reset_columns(self) -> None:
        self.choice.reset()
        self._show_columns()

    def _show_columns(self) -> None:
        """Swap in the chosen columns, keeping the sort, the selection and the widths the user gave."""
        columns = self.choice.visible()
        if [c.id for c in columns] == [c.id for c in self.model.columns]:
            return
        header = self.table.horizontalHeader()
        widths = {c.id: header.sectionSize(i) for i, c in enumerate(self.model.columns)}
        if header.stretchLastSection() and self.model.columns:  # stretched to the table's edge: not a user's width
            widths.pop(self.model.columns[-1].id, None)
        sort_at = self.proxy.sortColumn()
        sort_key = self.model.columns[sort_at].id if 0 <= sort_at < len(self.model.columns) else "submitted"
        order = self.proxy.sortOrder()
        chosen = [job["id"] for job in self.selected()]
        self.model.set_columns(columns)
        self._size_columns(widths)
        if not self._sort_by(sort_key, order):
            self._sort_by("submitted", Qt.SortOrder.DescendingOrder)
        for job_id in chosen:
            self.select(job_id, add=True)
        self._span_headers()

    def _default_width(self, key: str) -> int:
        if key in WIDTHS:
            return WIDTHS[key]
        if ":" in key:
            return header_width(self.table.horizontalHeader(), key.split(":", 1)[1])
        return self.table.horizontalHeader().defaultSectionSize()

    def _size_columns(self, widths: dict[str, int]) -> None:
        header = self.table.horizontalHeader()
        for at, column in enumerate(self.model.columns):
            width = widths.get(column.id) or WIDTHS.get(column.id)
            if width is None and ":" in column.id:  # a metric or hyperparameter: its name shows whole
                width = header_width(header, column.title)
            if width:
                self.table.setColumnWidth(at, width)
            delegate = self._progress_delegate if column.id == "progress" else self.table.itemDelegate()
            self.table.setItemDelegateForColumn(at, delegate)  # per index: a moved column must not keep the bar

    def _sort_by(self, key: str, order: Qt.SortOrder) -> bool:
        at = next((i for i, c in enumerate(self.model.columns) if c.id == key), -1)
        if at < 0:
            return False
        self.table.sortByColumn(at, order)
        return True

    def _group_changed(self) -> None:
        mode = str(self.group_by.currentData())
        app_settings().setValue(GROUP_KEY, mode)
        self.model.set_grouping(mode)
        self.proxy.invalidate()
        self._span_headers()

    def _span_headers(self, *_args: object) -> None:
        """Group headers span the table's width (spans are per view row: redone after each sort or filter)."""
        self.table.clearSpans()
        columns = self.proxy.columnCount()
        if columns < 2:
            return
        first = len(self.model.rows)
        for at in range(len(self.model.headers)):
            row = self.proxy.mapFromSource(self.model.index(first + at, 0)).row()
            if row >= 0:  # -1: filtered out
                self.table.setSpan(row, 0, 1, columns)

    # ---- selection and actions

    def selected(self) -> list[dict[str, Any]]:
        rows = (index.data(ROW_ROLE) for index in self.table.selectionModel().selectedRows())
        return [job for job in rows if job is not None]

    def select(self, job_id: str, add: bool = False) -> None:
        position = self.model.find(job_id)
        if position < 0:
            return
        index = self.proxy.mapFromSource(self.model.index(position, 0))
        if not index.isValid():
            return
        if add:
            flags = self.table.selectionModel().SelectionFlag
            self.table.selectionModel().select(index, flags.Select | flags.Rows)
        else:
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
        self.compare_button.setEnabled(len(jobs) >= 2)

    def _row_actions(self, rows: list[Any]) -> list[QAction | None]:
        jobs = [job for job in rows if job is not None]
        states = {j["state"] for j in jobs}
        return [
            menu_action("Open details", self._open_selected, len(jobs) == 1),
            menu_action(
                f"Compare {len(jobs)} jobs" if len(jobs) >= 2 else "Compare", self._compare_selected, len(jobs) >= 2
            ),
            None,
            menu_action("Cancel…", self.confirm_cancel_selected, any(s not in TERMINAL for s in states)),
            menu_action("Pause", lambda: self._each("pause", "pausing"), bool(states & {"RUNNING", "QUEUED"})),
            menu_action("Resume", lambda: self._each("resume", "resumed"), "PAUSED" in states),
            menu_action("Retry", lambda: self._each("retry", "retrying"), bool(states & {"FAILED", "CANCELLED"})),
            menu_action("Resubmit", lambda: self._each("resubmit", "resubmitted"), bool(jobs)),
            None,
            menu_action("Copy job id" if len(jobs) < 2 else "Copy job ids", self.copy_ids, bool(jobs)),
        ]

    def _double_clicked(self, index: QModelIndex) -> None:
        job = index.data(ROW_ROLE)
        if job is not None:
            self.open_job.emit(job["id"])

    def _open_selected(self) -> None:
        jobs = self.selected()
        if jobs:
            self.open_job.emit(jobs[0]["id"])

    def _compare_selected(self) -> None:
        jobs = self.selected()
        if len(jobs) >= 2:
            self.compare_jobs.emit([job["id"] for job in jobs])

    def copy_ids(self) -> None:
        QGuiApplication.clipboard().setText("\n".join(job["id"] for job in self.selected()))

    def confirm_cancel_selected(self) -> None:
        """Del and the Cancel button: name the jobs, cancel only on Yes."""
        jobs = [job for job in self.selected() if job["state"] not in TERMINAL]
        if not jobs:
            return
        names = "\n".join(f"  {job['name']} ({job['id']})" for job in jobs[:10])
        more = f"\n  … and {len(jobs) - 10} more" if len(jobs) > 10 else ""
        answer = QMessageBox.question(
            self,
            "Cancel jobs",
            f"Cancel {len(jobs)} job{'' if len(jobs) == 1 else 's'}? Their running tasks are stopped.\n\n{names}{more}",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        for job in jobs:
            self.act("cancel", job["id"], f"{job['name']}: cancelled")

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
