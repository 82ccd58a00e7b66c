"""Job detail: live curves of every reported metric, tasks, logs with search, artifacts, sweep trials, comparison,
and a project job's code and environments."""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_desktop.client import TERMINAL, AsyncClient, trial_rows
from tensorfleet_desktop.display import printable
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.formatting import (
    clock,
    duration,
    environment_text,
    human_bytes,
    job_duration,
    job_state,
    job_state_color,
    metric_text,
    state_color,
    workload,
)
from tensorfleet_desktop.ui.plots import MetricGrid, MetricPlot, ScatterPlot
from tensorfleet_desktop.ui.project_panel import ProjectPanel
from tensorfleet_desktop.ui.table_model import ROW_ROLE, Column, RowTableModel
from tensorfleet_desktop.ui.view import Notify, View
from tensorfleet_desktop.ui.widgets import ProgressDelegate, action_button, data_table

ALL_METRICS = "all metrics"


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


def _short(values: dict[str, Any] | None) -> str:
    if not values:
        return ""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


class JobDetailView(View):
    title = "Job detail"
    icon = "detail"

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__(bridge, notify)
        self.job_id = ""
        self.job: dict[str, Any] | None = None
        self.known_jobs: list[dict[str, Any]] = []
        self.multi_task = False
        self.metric_points = 0
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

        # curves
        self.plot = MetricGrid()
        self.metric_filter = QComboBox()
        self.metric_filter.addItem(ALL_METRICS)
        self.metric_filter.currentTextChanged.connect(self._filter_curves)
        curves = QWidget()
        curves_layout = QVBoxLayout(curves)
        row = QHBoxLayout()
        row.addWidget(QLabel("Show"))
        row.addWidget(self.metric_filter)
        row.addStretch(1)
        curves_layout.addLayout(row)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.plot)
        curves_layout.addWidget(scroll, 1)

        # tasks
        self.tasks_model = RowTableModel(
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
                Column("Params", lambda t: _short(t["params"])),
                Column("Metrics", lambda t: _short(t["metrics"])),
                Column("Started", lambda t: clock(t["started_at"]), sort=lambda t: t["started_at"] or 0.0),
                Column("Duration", lambda t: duration(job_duration(t))),
                Column("Error", lambda t: t["error"], tooltip=lambda t: t["error"]),
            ],
            key=lambda t: str(t["index"]),
        )
        self.tasks_table, _ = data_table(self.tasks_model)
        self._progress_delegate = ProgressDelegate()
        self.tasks_table.setItemDelegateForColumn(4, self._progress_delegate)
        self.tasks_table.setColumnWidth(6, 320)  # Environment: source · key prefix · cache hit / built in

        # logs
        self.logs = QPlainTextEdit()
        self.logs.setObjectName("logs")
        self.logs.setReadOnly(True)
        self.logs.setMaximumBlockCount(200_000)
        self.log_search = QLineEdit()
        self.log_search.setObjectName("log_search")
        self.log_search.setPlaceholderText("search the logs…")
        self.log_search.textChanged.connect(self._render_logs)
        self.log_task = QComboBox()
        self.log_task.addItem("all tasks", -1)
        self.log_task.currentIndexChanged.connect(self._render_logs)
        logs = QWidget()
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
        self.download_artifact_button = action_button("Download…", "save the selected artifact (sha256 checked)")
        self.download_artifact_button.clicked.connect(self.choose_artifact_download)
        self.artifacts_tab = QWidget()
        artifacts_layout = QVBoxLayout(self.artifacts_tab)
        row = QHBoxLayout()
        row.addWidget(QLabel("Files the job's tasks saved; they stay on the controller after the agents go."), 1)
        row.addWidget(self.download_artifact_button)
        artifacts_layout.addLayout(row)
        artifacts_layout.addWidget(self.artifacts_table, 1)

        # sweep
        self.trials_model = RowTableModel(
            [
                Column("Trial", lambda r: str(r["trial"]), sort=lambda r: r["trial"]),
                Column("Params", lambda r: _short(r["params"])),
                Column(
                    "Score",
                    lambda r: "" if r["score"] is None else f"{r['score']:.4f}",
                    sort=lambda r: -math.inf if r["score"] is None else r["score"],
                ),
                Column("State", lambda r: r["state"]),
                Column("Duration", lambda r: duration(r["duration"]), sort=lambda r: r["duration"] or 0.0),
                Column("Agent", lambda r: r["agent"]),
            ],
            key=lambda r: str(r["trial"]),
        )
        self.trials_table, _ = data_table(self.trials_model)
        self.scatter = ScatterPlot()
        self.scatter_param = QComboBox()
        self.scatter_param.currentTextChanged.connect(self._render_scatter)
        sweep = QWidget()
        sweep_layout = QVBoxLayout(sweep)
        self.sweep_summary = QLabel()
        sweep_layout.addWidget(self.sweep_summary)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.trials_table)
        scatter_box = QWidget()
        scatter_layout = QVBoxLayout(scatter_box)
        row = QHBoxLayout()
        row.addWidget(QLabel("Parameter"))
        row.addWidget(self.scatter_param, 1)
        scatter_layout.addLayout(row)
        scatter_layout.addWidget(self.scatter, 1)
        split.addWidget(scatter_box)
        split.setSizes([640, 560])
        for column, width in ((0, 50), (1, 260), (2, 80), (3, 100), (4, 80)):
            self.trials_table.setColumnWidth(column, width)
        sweep_layout.addWidget(split, 1)

        # compare
        self.compare_jobs = QListWidget()
        self.compare_metric = QComboBox()
        self.compare_metric.setEditable(True)
        self.compare_metric.addItems(["loss", "test_accuracy", "train_loss", "val_accuracy", "r2"])
        self.compare_button = QPushButton("Overlay")
        self.compare_button.clicked.connect(self.compare)
        self.compare_plot = MetricPlot(symbols=True)
        self.compare_params = QTableWidget()
        compare = QWidget()
        compare_layout = QHBoxLayout(compare)
        left = QVBoxLayout()
        left.addWidget(QLabel("Jobs to overlay"))
        left.addWidget(self.compare_jobs, 1)
        left.addWidget(QLabel("Metric"))
        left.addWidget(self.compare_metric)
        left.addWidget(self.compare_button)
        compare_layout.addLayout(left, 1)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.compare_plot)
        right.addWidget(self.compare_params)
        compare_layout.addWidget(right, 3)

        self.tabs = QTabWidget()
        self.tabs.addTab(curves, "Curves")
        self.tabs.addTab(self.tasks_table, "Tasks")
        self.tabs.addTab(logs, "Logs")
        self.tabs.addTab(self.artifacts_tab, "Artifacts")
        self.project_panel = ProjectPanel()
        self.tabs.addTab(self.project_panel, "Project")
        self.sweep_tab = sweep
        self.tabs.addTab(sweep, "Sweep")
        self.tabs.addTab(compare, "Compare")
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.tabs, 1)

        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(400)
        self._refresh_timer.timeout.connect(self.refresh)
        bridge.job_event.connect(self.on_event)
        bridge.jobs_changed.connect(self._jobs_changed)

    # ---- opening a job

    def open_job(self, job_id: str) -> None:
        self.job_id = job_id
        self.job = next((j for j in self.known_jobs if j["id"] == job_id), None)
        self.multi_task = bool(self.job and self.job["tasks"]["total"] > 1)
        self.plot.clear_all()
        self.metric_points = 0
        self.metric_filter.blockSignals(True)
        self.metric_filter.clear()
        self.metric_filter.addItem(ALL_METRICS)
        self.metric_filter.blockSignals(False)
        self.log_lines = []
        self.logs.clear()
        self.log_task.blockSignals(True)
        self.log_task.clear()
        self.log_task.addItem("all tasks", -1)
        self.log_task.blockSignals(False)
        self.tasks_model.set_rows([])
        self.artifacts_model.set_rows([])
        self.trials_model.set_rows([])
        self.header.setText(f"Loading job {job_id}…")
        self.bridge.watch_job(job_id)
        self.refresh()

    def refresh(self) -> None:
        job_id = self.job_id
        if job_id:
            self.run(lambda c: c.job(job_id), lambda job: self._show_job(job) if job["id"] == self.job_id else None)

    def _jobs_changed(self, jobs: list[dict[str, Any]]) -> None:
        self.known_jobs = jobs
        checked = {
            self.compare_jobs.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(self.compare_jobs.count())
            if self.compare_jobs.item(i).checkState() == Qt.CheckState.Checked
        }
        if self.compare_jobs.count() != len(jobs):
            self.compare_jobs.clear()
            for job in jobs:
                item = QListWidgetItem(f"{job['name']} · {job['state']} · {metric_text(job)}")
                item.setData(Qt.ItemDataRole.UserRole, job["id"])
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if job["id"] in checked else Qt.CheckState.Unchecked)
                self.compare_jobs.addItem(item)
        if self.job_id:
            current = next((j for j in jobs if j["id"] == self.job_id), None)
            if current is not None and self.job is not None and current["state"] != self.job["state"]:
                self._refresh_timer.start()

    def _show_job(self, job: dict[str, Any]) -> None:
        self.job = job
        self.multi_task = job["tasks"]["total"] > 1
        took = duration(job_duration(job))
        model = f" · model {job['model']['name']}:{job['model']['version']}" if job.get("model") else ""
        error = f"<br><span style='color:#d1242f'>{job['error']}</span>" if job["error"] else ""
        self.header.setText(
            f"<b>{job['name']}</b> · {html.escape(workload(job))} · <b style='color:{job_state_color(job)}'>"
            f"{job_state(job)}</b> · {job['progress'] * 100:.0f}% · "
            f"{job['tasks']['completed']}/{job['tasks']['total']} tasks · {took} · {metric_text(job)}{model}"
            f"<br><span style='color:gray'>{job['id']} · dataset {job['dataset'] or '-'} · by {job['submitter']}</span>"
            + error
        )
        self.tasks_model.set_rows(job["task_list"])
        self.artifacts_model.set_rows(job["artifacts"])
        for task in job["task_list"]:
            if self.log_task.findData(task["index"]) < 0:
                self.log_task.addItem(f"task {task['index']}", task["index"])
        project = job.get("project")
        self.tabs.setTabEnabled(self.tabs.indexOf(self.project_panel), bool(project))
        if project:
            self.project_panel.show_job(job)
        sweep = job["spec"].get("sweep")
        self.tabs.setTabEnabled(self.tabs.indexOf(self.sweep_tab), bool(sweep))
        if sweep:
            rows = trial_rows(job)
            self.trials_model.set_rows(rows)
            done = [r for r in rows if r["score"] is not None]
            self.sweep_summary.setText(
                f"{len(done)}/{len(rows)} trials scored on {sweep['metric']} ({sweep['direction']}); "
                f"best trial {int(job['metrics']['best_trial']) if 'best_trial' in job['metrics'] else '-'}"
            )
            names = list(sweep["params"])
            if [self.scatter_param.itemText(i) for i in range(self.scatter_param.count())] != names:
                self.scatter_param.clear()
                self.scatter_param.addItems(names)
            self._render_scatter()

    # ---- live events

    def on_event(self, job_id: str, event: dict[str, Any]) -> None:
        if job_id != self.job_id:
            return
        kind = event["kind"]
        if kind == "metrics":
            self._add_points(event["points"])
        elif kind == "logs":
            shown = []
            for row in event["lines"]:
                line = (row["task_index"], row["stream"], row["line"])
                self.log_lines.append(line)
                if self._log_visible(line):
                    shown.append(self._log_text(line))
            if shown:
                self.logs.appendPlainText("\n".join(shown))
        elif kind in ("job_state", "task_state", "progress", "artifact", "checkpoint"):
            if kind == "job_state" and event["state"] in TERMINAL:
                self._refresh_timer.start(50)
            elif not self._refresh_timer.isActive():
                self._refresh_timer.start()

    def _add_points(self, points: list[dict[str, Any]]) -> None:
        """One message's points, appended per curve in one go (docs/architecture.md, 'The path of a metric point')."""
        curves: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        for p in points:
            label = f"task {p['task_index']}" if self.multi_task else p["name"]
            xs, ys = curves.setdefault((p["name"], label), ([], []))
            xs.append(p["step"])
            ys.append(p["value"])
        for (name, label), (xs, ys) in curves.items():
            if name not in self.plot.plots:  # a metric seen for the first time
                self.metric_filter.addItem(name)
            self.plot.add_points(name, label, xs, ys)
        self.metric_points += len(points)

    def _filter_curves(self, metric: str) -> None:
        self.plot.show_only("" if metric == ALL_METRICS else metric)

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
        self.logs.setPlainText("\n".join(self._log_text(line) for line in self.log_lines if self._log_visible(line)))

    def _render_scatter(self) -> None:
        param = self.scatter_param.currentText()
        if not param or self.job is None:
            return
        xs, ys = [], []
        for row in self.trials_model.rows:
            x = row["params"].get(param)
            if row["score"] is not None and isinstance(x, int | float) and not isinstance(x, bool):
                xs.append(float(x))
                ys.append(float(row["score"]))
        positive = bool(xs) and min(xs) > 0
        spread = positive and max(xs) / min(xs) > 100
        metric = self.job["spec"]["sweep"]["metric"]
        self.scatter.show_points(param, metric, xs, ys, log_x=spread)

    # ---- comparison and export

    def checked_jobs(self) -> list[str]:
        return [
            self.compare_jobs.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(self.compare_jobs.count())
            if self.compare_jobs.item(i).checkState() == Qt.CheckState.Checked
        ]

    def compare(self, job_ids: list[str] | None = None) -> None:
        ids = job_ids or self.checked_jobs()
        metric = self.compare_metric.currentText().strip()
        if not ids:
            self.notify("tick the jobs to compare first", True)
            return
        self.compare_plot.clear_all()
        jobs = {j["id"]: j for j in self.known_jobs}
        self._compare_table([jobs[i] for i in ids if i in jobs])
        for job_id in ids:
            name = jobs[job_id]["name"] if job_id in jobs else job_id

            def show(points: list[dict[str, Any]], name: str = name) -> None:
                chosen = sorted(
                    (p for p in points if p["name"] == metric and p["task_index"] == 0), key=lambda p: p["step"]
                )
                self.compare_plot.set_series(name, [p["step"] for p in chosen], [p["value"] for p in chosen])

            def fetch(c: AsyncClient, job_id: str = job_id) -> Awaitable[list[dict[str, Any]]]:
                return c.metrics(job_id, (metric,))

            self.run(fetch, show, f"metrics of {name}")

    def _compare_table(self, jobs: list[dict[str, Any]]) -> None:
        keys: list[str] = []
        for job in jobs:
            for key in list(job["spec"].get("hyperparameters") or {}) + [f"metric: {m}" for m in job["metrics"]]:
                if key not in keys:
                    keys.append(key)
        rows = ["algorithm", "dataset", "state", "duration", *keys]
        self.compare_params.clear()
        self.compare_params.setRowCount(len(rows))
        self.compare_params.setColumnCount(len(jobs))
        self.compare_params.setVerticalHeaderLabels(rows)
        self.compare_params.setHorizontalHeaderLabels([j["name"] for j in jobs])
        for c, job in enumerate(jobs):
            hyper = job["spec"].get("hyperparameters") or {}
            for r, key in enumerate(rows):
                if key.startswith("metric: "):
                    value: Any = job["metrics"].get(key[8:], "")
                elif key == "duration":
                    value = duration(job_duration(job))
                elif key in ("algorithm", "dataset", "state"):
                    value = job[key]
                else:
                    value = hyper.get(key, "")
                text = (
                    f"{value:.4g}"
                    if isinstance(value, float)
                    else json.dumps(value)
                    if isinstance(value, list | dict)
                    else str(value)
                )
                self.compare_params.setItem(r, c, QTableWidgetItem(text))

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
        job_id = self.job_id

        def write(points: list[dict[str, Any]]) -> None:
            try:
                with path.open("w", newline="", encoding="utf-8") as fh:
                    out = csv.writer(fh)
                    out.writerow(["job_id", "task_index", "name", "step", "value", "wall_time"])
                    for p in points:
                        out.writerow([job_id, p["task_index"], p["name"], p["step"], repr(p["value"]), p["wall_time"]])
            except OSError as exc:
                self.notify(f"cannot write {path}: {exc.strerror}", True)
                return
            self.notify(f"wrote {len(points)} metric points to {path}", False)

        self.run(lambda c: c.metrics(job_id), write, "cannot export metrics")
