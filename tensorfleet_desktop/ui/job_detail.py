"""Job detail: live curves of every reported metric, tasks, logs with search, artifacts, sweep trials, comparison,
and a project job's code and environments.

History and live events come from the bridge as JobBatches (numpy chunks, log lines, other events), so opening a
finished 200-trial sweep is a few appends, not 100k slots. The header ticks (elapsed, ETA) while the job runs and
the view is shown; the Sweep tab is filled once per job and then only while it is the current tab.
"""

from __future__ import annotations

import csv
import gc
import html
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QGuiApplication, QHideEvent, QPalette, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_desktop.client import TERMINAL
from tensorfleet_desktop.display import printable
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.compare_panel import ComparePanel
from tensorfleet_desktop.ui.curves_panel import CurvesPanel
from tensorfleet_desktop.ui.formatting import (
    clock,
    duration,
    environment_text,
    human_bytes,
    job_duration,
    job_state,
    job_state_color,
    metric_text,
    short_values,
    state_color,
    workload,
)
from tensorfleet_desktop.ui.job_history import JobBatch, SeriesChunk, merge_chunks
from tensorfleet_desktop.ui.plots import drawing as plots_drawing
from tensorfleet_desktop.ui.project_panel import ProjectPanel
from tensorfleet_desktop.ui.sweep_panel import SweepPanel, top_trials
from tensorfleet_desktop.ui.table_model import ROW_ROLE, Column, RowTableModel
from tensorfleet_desktop.ui.theme import error_color
from tensorfleet_desktop.ui.view import Notify, View
from tensorfleet_desktop.ui.widgets import ProgressDelegate, action_button, add_row_menu, data_table, menu_action

# The feeder's next step comes this much later, never in the same turn of the event loop: a step that makes a pane
# or adds curves is followed by a repaint, and the two in one turn were one stall of 20-25 ms (gui_bench)
FEED_WAIT_MS = 4
LOADING_CAP_MS = 2000  # a running job's replay is held back at most this long after it is opened
LOG_SEARCH_DELAY_MS = 200  # the log search runs this long after the last keystroke
LOG_SHOWN = 20_000  # the log view keeps the newest lines that match; every line stays in log_lines


def eta_text(job: dict[str, Any], now: float) -> str:
    """Time left at the rate progress has gone so far; a guess only once 5 % is done."""
    elapsed, progress = job_duration(job, now), float(job.get("progress") or 0.0)
    if elapsed is None or not 0.05 < progress < 1.0:
        return "ETA —"
    return f"ETA {duration(elapsed * (1.0 - progress) / progress)}"


def _env_text(task: dict[str, Any]) -> str:
    if task.get("state") == "PREPARING" and not task.get("environment"):
        return "preparing…"
    return environment_text(task.get("environment"))


def _env_tooltip(task: dict[str, Any]) -> str:
    env = task.get("environment")
    if not env:
        return "laying out the project's files and building its env" if task.get("state") == "PREPARING" else ""
    facts = ["key " + (env["key"] or "(none: the agent's own Python)"), f"from {env.get('source') or '-'}"]
    if env.get("python"):
        facts.append(f"Python {env['python']}")
    facts.append(
        f"{env.get('files', 0)} files, {human_bytes(env.get('bytes', 0))} laid out in "
        f"{float(env.get('materialize_seconds') or 0.0):.2f} s"
    )
    return "\n".join(facts)


_HEADER_KEYS = ("state", "progress", "tasks", "started_at", "finished_at", "metrics", "error", "waiting", "name")


_frozen = False


def _freeze_startup_objects() -> None:
    """Keep the collector's full passes off what the app made at start (modules, classes, Qt and pyqtgraph's
    objects: they live as long as the app). A full pass over them took 90 ms of the GUI thread when it fell
    while a sweep opened; gc.freeze() leaves them out of every later pass. Once per process."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()


class JobDetailView(View):
    title = "Job detail"
    icon = "detail"

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__(bridge, notify)
        _freeze_startup_objects()
        self.job_id = ""
        self.job: dict[str, Any] | None = None
        self.known_jobs: list[dict[str, Any]] = []
        self.multi_task = False
        self.metric_points = 0
        self.last_seq = 0  # the last event seq applied: batches of one watch follow on without overlap
        self.loading = False  # replaying the job's history: its points are held back until it is all in
        self._held: list[SeriesChunk] = []
        self._feed: list[list[SeriesChunk]] = []  # chunks waiting for the curves, one metric per event-loop turn
        self._needs_pane: list[bool | None] = []  # whether each of _feed makes a plot (None: not known yet)
        self.trial: int | None = None  # a sweep trial shown alone in the Curves tab (from the Sweep tab)
        self._sweep_shown_for = ""  # the job whose trials the Sweep tab has shown at least once
        self.log_lines: list[tuple[int, str, str]] = []
        self.header = QLabel("Open a job from the Jobs view (double-click, or Details).")
        self.header.setObjectName("job_header")
        self.header.setWordWrap(True)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.export_button = action_button("Export metrics CSV…")
        self.export_button.clicked.connect(self.choose_export)
        top = QHBoxLayout()
        top.addWidget(self.header, 1)
        top.addWidget(self.export_button)

        self.curves = CurvesPanel()
        self.trial_label = QLabel()
        self.trial_back = QPushButton()
        self.trial_back.setObjectName("trial_back")
        self.trial_back.clicked.connect(self.show_top_trials)
        self.trial_bar = QWidget()
        bar = QHBoxLayout(self.trial_bar)
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.trial_label)
        bar.addWidget(self.trial_back)
        bar.addStretch(1)
        self.trial_bar.setVisible(False)
        self.curves_tab = QWidget()
        curves_layout = QVBoxLayout(self.curves_tab)
        curves_layout.setContentsMargins(0, 0, 0, 0)
        curves_layout.addWidget(self.trial_bar)
        curves_layout.addWidget(self.curves, 1)

        # tasks
        self._tasks_model = RowTableModel(
            [
                Column("Task", lambda t: str(t["index"]), sort=lambda t: t["index"]),
                Column("State", lambda t: t["state"], color=state_color),
                Column("Agent", lambda t: t["agent"]),
                Column("Attempt", lambda t: str(t["attempt"]), sort=lambda t: t["attempt"]),
                Column(
                    "Progress",
                    lambda t: f"{t['progress'] * 100:.0f}%",
                    sort=lambda t: t["progress"],
                    extra=lambda t: t["progress"],
                ),
                Column("Exit", lambda t: t["exit_cause"]),
                Column("Environment", _env_text, tooltip=_env_tooltip),
                Column("Params", lambda t: short_values(t["params"])),
                Column("Metrics", lambda t: short_values(t["metrics"])),
                Column("Started", lambda t: clock(t["started_at"]), sort=lambda t: t["started_at"] or 0.0),
                Column("Duration", lambda t: duration(job_duration(t))),
                Column("Error", lambda t: t["error"], tooltip=lambda t: t["error"]),
            ],
            key=lambda t: str(t["index"]),
        )
        self._tasks_rows: list[dict[str, Any]] | None = None  # the shown job's tasks, for the table once shown
        self._log_tasks: list[int] = []  # the shown job's task indexes, for the log filter once the Logs tab shows
        self._tasks_table, _ = data_table(self._tasks_model)
        self._progress_delegate = ProgressDelegate()
        self._tasks_table.setItemDelegateForColumn(4, self._progress_delegate)
        self._tasks_table.setColumnWidth(6, 320)  # Environment: source · key prefix · cache hit / built in
        add_row_menu(self._tasks_table, self.task_actions)

        # logs
        self.logs = QPlainTextEdit()
        self.logs.setObjectName("logs")
        self.logs.setReadOnly(True)
        self.logs.setMaximumBlockCount(LOG_SHOWN)
        self.log_search = QLineEdit()
        self.log_search.setObjectName("log_search")
        self.log_search.setPlaceholderText("search the logs…")
        self._log_typing = QTimer(self)  # a search re-scans every log line: once the typing pauses, not per key
        self._log_typing.setSingleShot(True)
        self._log_typing.setInterval(LOG_SEARCH_DELAY_MS)
        self._log_typing.timeout.connect(self._render_logs)
        self.log_search.textChanged.connect(lambda _text: self._log_typing.start())
        self.log_task = QComboBox()
        self.log_task.addItem("all tasks", -1)
        self.log_task.currentIndexChanged.connect(self._render_logs)
        self.logs_tab = logs = QWidget()
        logs_layout = QVBoxLayout(logs)
        row = QHBoxLayout()
        row.addWidget(self.log_search, 1)
        row.addWidget(self.log_task)
        logs_layout.addLayout(row)
        logs_layout.addWidget(self.logs, 1)

        # artifacts: the files the job's tasks saved, each downloadable (sha256 checked)
        self.artifacts_model = RowTableModel(
            [
                Column("Name", lambda a: printable(a["name"]), tooltip=lambda a: printable(a["name"])),
                Column("Kind", lambda a: f"{a['kind']} (step {a['step']})" if a["kind"] == "checkpoint" else a["kind"]),
                Column(
                    "Task",
                    lambda a: "controller" if a["task_index"] < 0 else str(a["task_index"]),
                    sort=lambda a: a["task_index"],
                ),
                Column("Size", lambda a: human_bytes(a["size"]), sort=lambda a: a["size"]),
                Column("SHA256", lambda a: a["sha256"][:16], tooltip=lambda a: a["sha256"]),
                Column("Created", lambda a: clock(a["created_at"]), sort=lambda a: a["created_at"] or 0.0),
                Column(
                    "Attempt",  # a project's outputs are saved by every attempt: which one this is
                    lambda a: str(a.get("attempt") or "-"),
                    sort=lambda a: a.get("attempt") or 0,
                ),
            ],
            key=lambda a: f"{a['task_index']}:{a.get('attempt', 0)}:{a['name']}:{a['sha256']}",
        )
        self.artifacts_table, _ = data_table(self.artifacts_model, name="artifacts")
        self.artifacts_table.doubleClicked.connect(lambda _index: self.choose_artifact_download())
        add_row_menu(self.artifacts_table, self.artifact_actions)
        self.download_artifact_button = action_button("Download…", "save the selected artifact (sha256 checked)")
        self.download_artifact_button.clicked.connect(self.choose_artifact_download)
        self.artifacts_tab = QWidget()
        artifacts_layout = QVBoxLayout(self.artifacts_tab)
        row = QHBoxLayout()
        row.addWidget(QLabel("Files the job's tasks saved; they stay on the controller after the agents go."), 1)
        row.addWidget(self.download_artifact_button)
        artifacts_layout.addLayout(row)
        artifacts_layout.addWidget(self.artifacts_table, 1)

        self.sweep = SweepPanel()
        self.sweep.top_k_changed.connect(lambda _k: self.show_top_trials())
        self.sweep.show_trial.connect(self.show_trial)
        self.compare_panel = ComparePanel(self.run, notify)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.curves_tab, "Curves")
        self.tabs.addTab(self._tasks_table, "Tasks")
        self.tabs.addTab(logs, "Logs")
        self.tabs.addTab(self.artifacts_tab, "Artifacts")
        self.project_panel = ProjectPanel()
        self.tabs.addTab(self.project_panel, "Project")
        self.tabs.addTab(self.sweep, "Sweep")
        self.tabs.addTab(self.compare_panel, "Compare")
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.tabs, 1)
        self.tabs.currentChanged.connect(self._tab_changed)

        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(400)
        self._refresh_timer.timeout.connect(self.refresh)
        self._quiet = QTimer(self)  # a history that stops arriving is all there is
        self._quiet.setSingleShot(True)
        self._quiet.setInterval(1000)
        self._quiet.timeout.connect(lambda: self._set_loading(False))
        # A running job's history has no end event to wait for, and its event times are the controller's clock
        # (which may be far from this machine's): after LOADING_CAP_MS what is held goes to the curves anyway.
        self._loading_cap = QTimer(self)
        self._loading_cap.setSingleShot(True)
        self._loading_cap.setInterval(LOADING_CAP_MS)
        self._loading_cap.timeout.connect(lambda: self._set_loading(False))
        self._feeder = QTimer(self)
        self._feeder.setSingleShot(True)
        self._feeder.setInterval(0)
        self._feeder.timeout.connect(self._feed_one)
        self._tick = QTimer(self)  # the header's elapsed and ETA, while the job runs and the view is shown
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._render_header)
        bridge.job_batch.connect(self.on_batch)
        bridge.jobs_changed.connect(self._jobs_changed)

    # ---- opening a job

    def open_job(self, job_id: str) -> None:
        self._forget()
        self.job_id = job_id
        self.job = next((j for j in self.known_jobs if j["id"] == job_id), None)
        self.multi_task = bool(self.job and self.job["tasks"]["total"] > 1)
        self.curves.clear(self.multi_task)
        if self.job is not None:  # as the job list has it: the curves know their trials before the first point
            self.curves.set_job(self.job)
            self._filter_trials(self.job)
            self._render_header()
        else:
            self.header.setText(f"Loading job {job_id}…")
        self._set_loading(True)
        if self.job is None or self.job["state"] not in TERMINAL:  # an ended job's replay ends with its end
            self._loading_cap.start()
        self.bridge.watch_job(job_id)
        self.refresh()

    def close_job(self) -> None:
        """Stop following the shown job and let go of its curves, logs and tables."""
        self._forget()
        self.curves.clear(False)
        self.bridge.watch_job(None)
        self.header.setText("Open a job from the Jobs view (double-click, or Details).")

    def _forget(self) -> None:
        self.job_id, self.job = "", None
        self._tick.stop()
        self._refresh_timer.stop()
        self._quiet.stop()
        self._loading_cap.stop()
        self._log_typing.stop()
        self.loading, self._held, self._feed, self._needs_pane = False, [], [], []
        self._feeder.stop()
        self.metric_points = self.last_seq = 0
        self.trial, self._sweep_shown_for = None, ""
        self.trial_bar.setVisible(False)
        self.log_lines = []
        self.logs.clear()
        self.log_task.blockSignals(True)
        self.log_task.clear()
        self.log_task.addItem("all tasks", -1)
        self.log_task.blockSignals(False)
        self._tasks_rows, self._log_tasks = None, []
        self._tasks_model.set_rows([])
        self.artifacts_model.set_rows([])
        self.sweep.clear()

    def refresh(self) -> None:
        job_id = self.job_id
        if job_id:
            self.run(lambda c: c.job(job_id), lambda job: self._show_job(job) if job["id"] == self.job_id else None)

    def _jobs_changed(self, jobs: list[dict[str, Any]]) -> None:
        self.known_jobs = jobs
        if self.tabs.currentWidget() is self.compare_panel:  # otherwise when it is shown: the list changes often
            self.compare_panel.set_jobs(jobs)
        if self.job_id:
            current = next((j for j in jobs if j["id"] == self.job_id), None)
            if current is not None and self.job is not None:
                if current["state"] != self.job["state"]:
                    # a new state comes with a full refresh (one call; asked again by each list change until it
                    # lands), so the header never says "ended" above the tasks and environments of a moment before
                    self.refresh()
                    return
                # the header follows the list's copy (progress, tasks done) between two full refreshes
                self.job = {**self.job, **{k: current[k] for k in _HEADER_KEYS if k in current}}
                self._render_header()
                self._update_ticking()

    def _show_job(self, job: dict[str, Any]) -> None:
        self.job = job
        self.multi_task = job["tasks"]["total"] > 1
        if job["state"] in TERMINAL:  # its replay ends with its end event: no cap needed
            self._loading_cap.stop()
        self._render_header()
        self._update_ticking()
        # The Tasks table and the log filter's task list are filled when their tab is shown (a 200-trial sweep's
        # rows cost the GUI thread 20-40 ms, which opening the job does not wait for); `tasks_model` fills on use.
        self._tasks_rows = job["task_list"]
        self._log_tasks = [task["index"] for task in job["task_list"]]
        self._fill_shown_tab()
        self.artifacts_model.set_rows(job["artifacts"])
        project = job.get("project")
        self.tabs.setTabEnabled(self.tabs.indexOf(self.project_panel), bool(project))
        if project:
            self.project_panel.show_job(job)
        sweep = job["spec"].get("sweep")
        self.tabs.setTabEnabled(self.tabs.indexOf(self.sweep), bool(sweep))
        if sweep and (self._sweep_shown_for != job["id"] or self.tabs.currentWidget() is self.sweep):
            self._sweep_shown_for = job["id"]  # later refreshes wait until the Sweep tab is shown
            self.sweep.show_job(job)
        self.curves.set_job(job)
        if self.trial is None:
            self._filter_trials(job)

    @property
    def tasks_model(self) -> RowTableModel:
        """The Tasks table's model, filled with the shown job's tasks (they wait while the tab is not shown)."""
        if self._tasks_rows is not None:
            rows, self._tasks_rows = self._tasks_rows, None
            self._tasks_model.set_rows(rows)
        return self._tasks_model

    @property
    def tasks_table(self) -> QTableView:
        """The Tasks table, its model filled."""
        _ = self.tasks_model
        return self._tasks_table

    def _fill_log_tasks(self) -> None:
        if self.log_task.count() == len(self._log_tasks) + 1:
            return
        have = {self.log_task.itemData(i) for i in range(self.log_task.count())}
        for index in self._log_tasks:
            if index not in have:
                self.log_task.addItem(f"task {index}", index)

    def _fill_shown_tab(self) -> None:
        if self.tabs.currentWidget() is self._tasks_table:
            _ = self.tasks_model
        elif self.tabs.currentWidget() is self.logs_tab:
            self._fill_log_tasks()

    def _tab_changed(self, _index: int) -> None:
        self._fill_shown_tab()
        if self.tabs.currentWidget() is self.compare_panel:
            self.compare_panel.set_jobs(self.known_jobs)
        if self.tabs.currentWidget() is self.sweep and self.job is not None and self.job["spec"].get("sweep"):
            self.sweep.show_job(self.job)

    # ---- the header: state, progress, elapsed and ETA, tasks done

    def _render_header(self) -> None:
        job = self.job
        if job is None:
            return
        now = time.time()
        running = job["state"] not in TERMINAL
        took = duration(job_duration(job, now))
        timing = f"elapsed {took or '0s'} · {eta_text(job, now)}" if job.get("started_at") else "not started"
        if not running:
            timing = f"took {took}" if took else ""
        esc = html.escape
        model = f" · model {esc(job['model']['name'])}:{job['model']['version']}" if job.get("model") else ""
        # names, errors and metric names are the user's text: escaped, or a "<" in them would be markup
        error = f"<br><span style='color:{error_color()}'>{esc(job['error'])}</span>" if job["error"] else ""
        muted = self.palette().color(QPalette.ColorRole.PlaceholderText).name()  # grey that reads in either theme
        if running and job.get("waiting"):  # why it is not placed yet: a sleeping agent waking, a Slurm allocation...
            error += f"<br><span style='color:{muted}'>waiting: {esc(job['waiting'])}</span>"
        self.header.setText(
            f"<b>{esc(job['name'])}</b> · {esc(workload(job))} · <b style='color:{job_state_color(job)}'>"
            f"{job_state(job)}</b> · {job['progress'] * 100:.0f}% · "
            f"{job['tasks']['completed']}/{job['tasks']['total']} tasks · {timing} · {esc(metric_text(job))}{model}"
            f"<br><span style='color:{muted}'>{esc(job['id'])} · dataset {esc(job['dataset'] or '-')}"
            f" · by {esc(job['submitter'])}</span>" + error
        )

    def _update_ticking(self) -> None:
        running = self.job is not None and self.job["state"] not in TERMINAL and bool(self.job.get("started_at"))
        if running and self.isVisible():
            if not self._tick.isActive():
                self._tick.start()
        else:
            self._tick.stop()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._render_header()
        self._update_ticking()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._tick.stop()

    # ---- sweeps: the top-k trials' curves, or one trial's

    def show_trial(self, index: int) -> None:
        """One trial's curves alone (asked from the Sweep tab), with a way back to the top k."""
        self.trial = index
        self.curves.set_task_filter({index: f"trial {index}"})
        self.trial_label.setText(f"showing trial {index} only")
        self.trial_back.setText(f"show top {self.sweep.top_k}")
        self.trial_bar.setVisible(True)
        self.tabs.setCurrentWidget(self.curves_tab)

    def show_top_trials(self) -> None:
        self.trial = None
        self.trial_bar.setVisible(False)
        if self.job is not None:
            self._filter_trials(self.job)

    def _filter_trials(self, job: dict[str, Any]) -> None:
        """A sweep's Curves show its top-k trials (every trial until one is scored); any other job every task."""
        top = top_trials(job, self.sweep.top_k) if job["spec"].get("sweep") else None
        self.curves.set_task_filter(top or None)

    # ---- live events

    def on_batch(self, job_id: str, batch: JobBatch) -> None:
        """What the bridge collected for the shown job: every point once (a batch never overlaps the last)."""
        if job_id != self.job_id or batch.last_seq <= self.last_seq:
            return
        self.last_seq = batch.last_seq
        if batch.chunks:
            if self.loading:
                self._held.extend(batch.chunks)
            else:
                self._plot(batch.chunks)
        if batch.logs:
            self._add_logs(batch.logs)
        ended = any(e["kind"] == "job_state" and e["state"] in TERMINAL for e in batch.events)
        if ended:
            self._refresh_timer.start(50)
        elif batch.events and not self.loading and not self._refresh_timer.isActive():
            self._refresh_timer.start()  # (a replay's events are history: one refresh once it is in)
        if self.loading:  # the replay is in once it reaches the job's end, stops arriving, or the cap passes
            if ended:
                self._set_loading(False)
            else:
                self._quiet.start()

    def _set_loading(self, loading: bool) -> None:
        """While a history streams in, its points are held back and go to the curves at once at the end (one
        append and one redraw per curve): redrawing a growing 100k-point plot ten times a second is most of what
        a replay would cost the GUI thread."""
        was_loading, self.loading = self.loading, loading
        self._quiet.stop()  # (re)started by each batch of the history
        if not loading:
            self._loading_cap.stop()
        if was_loading and not loading and self.job_id and not self._refresh_timer.isActive():
            self._refresh_timer.start()
        if not loading and self._held:
            held, self._held = self._held, []
            by_metric: dict[str, list[SeriesChunk]] = {}
            for chunk in merge_chunks(held):
                by_metric.setdefault(chunk.metric, []).append(chunk)
            for chunks in by_metric.values():
                self._plot(chunks)

    def _plot(self, chunks: list[SeriesChunk]) -> None:
        """To the curves in a later turn of the event loop, a metric's history per turn: each may make a plot
        (about 25 ms), and a sweep's three in one go froze the window for 150 ms."""
        self._feed.append(chunks)
        self._needs_pane.append(None)
        if not self._feeder.isActive():
            self._feeder.start(0)

    def _feed_one(self) -> None:
        if not self._feed:
            return
        if plots_drawing():  # one of the two per turn: the curves just fed are drawn before the next are fed
            self._feeder.start(FEED_WAIT_MS)
            return
        if self._place_pane():
            self._feeder.start(FEED_WAIT_MS)
            return
        chunks = self._feed.pop(0)
        self._needs_pane = [None] * len(self._feed)  # what is fed now may turn another metric into a curve
        self.curves.multi_task = self.multi_task
        self.curves.add_chunks(chunks)
        self.metric_points += sum(len(c) for c in chunks)
        if self._feed:
            self._feeder.start(FEED_WAIT_MS)

    def _place_pane(self) -> bool:
        """One step towards a plot for each metric waiting in the feed, all of them in the grid before any gets
        its curves (a new pane made a step per turn: 35-70 ms in one go): a pane placed beside plots already drawn
        resizes them, and each resize repaints their curves. False when every pane is in place."""
        grid = self.curves.plot
        for at, chunks in enumerate(self._feed):
            if self._needs_pane[at] is None:
                self._needs_pane[at] = self.curves.needs_pane(chunks)
            if not self._needs_pane[at]:
                continue
            metric = next(c.metric for c in chunks if len(c))
            if metric in grid.plots:
                continue
            if not grid.prepare():  # placed in the grid a turn after it is ready
                if grid.plots and grid.updatesEnabled():
                    # beside panes already there: the grid is repainted once, when every pane is in (each pane
                    # placed relaid the others out and repainted their axes: 10-25 ms a time)
                    grid.setUpdatesEnabled(False)
                grid.plot_for(metric)
            return True
        if not grid.updatesEnabled():  # every pane is in: the grid's one repaint, in a turn of its own
            grid.setUpdatesEnabled(True)
            return True
        return False

    def _add_logs(self, lines: list[tuple[int, str, str]]) -> None:
        self.log_lines.extend(lines)
        shown = [self._log_text(line) for line in lines if self._log_visible(line)]
        if shown:  # one append per batch, never more lines than the view keeps
            self.logs.appendPlainText("\n".join(shown[-LOG_SHOWN:]))

    def _log_text(self, line: tuple[int, str, str]) -> str:
        task, stream, message = line
        prefix = f"[{task}] " if self.multi_task else ""
        return f"{prefix}{'! ' if stream == 'stderr' else ''}{message}"

    def _log_visible(self, line: tuple[int, str, str]) -> bool:
        task = self.log_task.currentData()
        if task is not None and task >= 0 and line[0] != task:
            return False
        needle = self.log_search.text().lower()
        return not needle or needle in line[2].lower()

    def _render_logs(self) -> None:
        """The newest LOG_SHOWN matching lines (a search over a 200k-line history does not build it all)."""
        shown: list[str] = []
        for line in reversed(self.log_lines):
            if self._log_visible(line):
                shown.append(self._log_text(line))
                if len(shown) >= LOG_SHOWN:
                    break
        self.logs.setPlainText("\n".join(reversed(shown)))

    # ---- row menus of the Tasks and Artifacts tables

    def task_actions(self, rows: list[dict[str, Any]]) -> list[QAction | None]:
        task = rows[0] if len(rows) == 1 else None
        index, error = (task["index"], task["error"]) if task else (-1, "")
        return [
            menu_action("Show logs of this task", lambda: self.show_task_logs(index), task is not None),
            menu_action("Copy error", lambda: _copy(error), bool(error)),
        ]

    def show_task_logs(self, index: int) -> None:
        """The Logs tab, filtered to one task."""
        self._fill_log_tasks()
        found = self.log_task.findData(index)
        if found < 0:
            self.log_task.addItem(f"task {index}", index)
            found = self.log_task.count() - 1
        self.log_task.setCurrentIndex(found)
        self.tabs.setCurrentWidget(self.logs_tab)

    def artifact_actions(self, rows: list[dict[str, Any]]) -> list[QAction | None]:
        one = len(rows) == 1
        sha = rows[0]["sha256"] if one else ""
        return [
            menu_action("Download…", self.choose_artifact_download, one),
            menu_action("Copy sha256", lambda: _copy(sha), bool(sha)),
        ]

    def selected_artifact(self) -> dict[str, Any] | None:
        rows = self.artifacts_table.selectionModel().selectedRows()
        return rows[0].data(ROW_ROLE) if rows else None

    def choose_artifact_download(self) -> None:
        artifact = self.selected_artifact()
        if artifact is None:
            self.notify("select an artifact to download first", True)
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save artifact", printable(Path(artifact["name"]).name))
        if path:
            self.download_artifact(artifact, Path(path))

    def download_artifact(self, artifact: dict[str, Any], path: Path) -> None:
        """Fetch it on the bridge's loop (the transfer runs in a worker thread), then say where it went."""
        job_id, name, task = self.job_id, artifact["name"], artifact["task_index"]
        attempt = artifact.get("attempt") or None  # the row's own file, not another attempt's of that name
        shown, of = printable(name), f"attempt {attempt}, " if attempt else ""

        def saved(record: dict[str, Any]) -> None:
            size = human_bytes(record["size"])
            self.notify(f"saved {shown} to {printable(record['path'])} ({of}{size}, sha256 verified)", False)

        self.run(lambda c: c.download_artifact(job_id, name, path, task, attempt), saved, f"cannot download {shown}")

    def choose_export(self) -> None:
        if not self.job_id:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export metrics", f"{self.job_id}-metrics.csv", "CSV (*.csv)")
        if path:
            self.export_csv(Path(path))

    def export_csv(self, path: Path) -> None:
        """Fetch the points on the bridge's loop, write them in a worker thread (a 100k-point history is seconds
        of csv.writer the window would freeze for)."""
        job_id = self.job_id

        def write(points: list[dict[str, Any]]) -> None:
            self.bridge.run_blocking(
                lambda: _write_csv(path, job_id, points),
                lambda count: self.notify(f"wrote {count} metric points to {path}", False),
                lambda error: self.notify(error, True),
            )

        self.run(lambda c: c.metrics(job_id), write, "cannot export metrics")


def _write_csv(path: Path, job_id: str, points: list[dict[str, Any]]) -> int:
    """Written beside the target and renamed onto it: the file appears complete or not at all."""
    part = path.with_name(f".{path.name}.part")
    try:
        with part.open("w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["job_id", "task_index", "name", "step", "value", "wall_time"])
            for p in points:
                out.writerow([job_id, p["task_index"], p["name"], p["step"], repr(p["value"]), p["wall_time"]])
        part.replace(path)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise OSError(f"cannot write {path}: {exc.strerror}") from exc
    return len(points)


def _copy(text: str) -> None:
    QGuiApplication.clipboard().setText(text)
