"""Job detail: live curves of every reported metric, tasks, logs with search, artifacts, sweep trials, comparison,
and a project job's code and environments."""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
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
from tensorfleet_desktop.ui.job_history import group_points
from tensorfleet_desktop.ui.project_panel import ProjectPanel
from tensorfleet_desktop.ui.sweep_panel import SweepPanel
from tensorfleet_desktop.ui.table_model import ROW_ROLE, Column, RowTableModel
from tensorfleet_desktop.ui.view import Notify, View
from tensorfleet_desktop.ui.widgets import ProgressDelegate, action_button, data_table


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

        self.curves = CurvesPanel()

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
                Column("Params", lambda t: short_values(t["params"])),
                Column("Metrics", lambda t: short_values(t["metrics"])),
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

        self.sweep = SweepPanel()
        self.compare_panel = ComparePanel(self.run, notify)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.curves, "Curves")
        self.tabs.addTab(self.tasks_table, "Tasks")
        self.tabs.addTab(logs, "Logs")
        self.tabs.addTab(self.artifacts_tab, "Artifacts")
        self.project_panel = ProjectPanel()
        self.tabs.addTab(self.project_panel, "Project")
        self.tabs.addTab(self.sweep, "Sweep")
        self.tabs.addTab(self.compare_panel, "Compare")
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
        self.curves.clear(self.multi_task)
        self.metric_points = 0
        self.log_lines = []
        self.logs.clear()
        self.log_task.blockSignals(True)
        self.log_task.clear()
        self.log_task.addItem("all tasks", -1)
        self.log_task.blockSignals(False)
        self.tasks_model.set_rows([])
        self.artifacts_model.set_rows([])
        self.sweep.clear()
        self.header.setText(f"Loading job {job_id}…")
        self.bridge.watch_job(job_id)
        self.refresh()

    def refresh(self) -> None:
        job_id = self.job_id
        if job_id:
            self.run(lambda c: c.job(job_id), lambda job: self._show_job(job) if job["id"] == self.job_id else None)

    def _jobs_changed(self, jobs: list[dict[str, Any]]) -> None:
        self.known_jobs = jobs
        self.compare_panel.set_jobs(jobs)
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
        self.tabs.setTabEnabled(self.tabs.indexOf(self.sweep), bool(sweep))
        if sweep:
            self.sweep.show_job(job)

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
        self.curves.multi_task = self.multi_task
        self.curves.add_chunks(group_points(points))
        self.metric_points += len(points)

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
