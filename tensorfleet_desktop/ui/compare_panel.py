"""The Compare tab of the job detail: chosen jobs' curves of one metric overlaid, their settings side by side."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_desktop.client import AsyncClient
from tensorfleet_desktop.ui.formatting import duration, job_duration, metric_text
from tensorfleet_desktop.ui.plots import MetricPlot
from tensorfleet_desktop.ui.view import Notify

Run = Callable[..., None]  # View.run: (call, done, failed)


class ComparePanel(QWidget):
    def __init__(self, run: Run, notify: Notify, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run = run
        self.notify = notify
        self.known_jobs: list[dict[str, Any]] = []
        self.jobs_list = QListWidget()
        self.metric_box = QComboBox()
        self.metric_box.setEditable(True)
        self.metric_box.addItems(["loss", "test_accuracy", "train_loss", "val_accuracy", "r2"])
        self.button = QPushButton("Overlay")
        self.button.clicked.connect(lambda: self.compare())
        self.plot = MetricPlot(symbols=True)
        self.params = QTableWidget()
        layout = QHBoxLayout(self)
        left = QVBoxLayout()
        left.addWidget(QLabel("Jobs to overlay"))
        left.addWidget(self.jobs_list, 1)
        left.addWidget(QLabel("Metric"))
        left.addWidget(self.metric_box)
        left.addWidget(self.button)
        layout.addLayout(left, 1)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.plot)
        right.addWidget(self.params)
        layout.addWidget(right, 3)

    def set_jobs(self, jobs: list[dict[str, Any]]) -> None:
        self.known_jobs = jobs
        checked = set(self.checked_jobs())
        if self.jobs_list.count() != len(jobs):
            self.jobs_list.clear()
            for job in jobs:
                item = QListWidgetItem(f"{job['name']} · {job['state']} · {metric_text(job)}")
                item.setData(Qt.ItemDataRole.UserRole, job["id"])
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if job["id"] in checked else Qt.CheckState.Unchecked)
                self.jobs_list.addItem(item)

    def checked_jobs(self) -> list[str]:
        return [
            self.jobs_list.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(self.jobs_list.count())
            if self.jobs_list.item(i).checkState() == Qt.CheckState.Checked
        ]

    def compare(self, job_ids: list[str] | None = None) -> None:
        ids = job_ids or self.checked_jobs()
        metric = self.metric_box.currentText().strip()
        if not ids:
            self.notify("tick the jobs to compare first", True)
            return
        self.plot.clear_all()
        jobs = {j["id"]: j for j in self.known_jobs}
        self._table([jobs[i] for i in ids if i in jobs])
        for job_id in ids:
            name = jobs[job_id]["name"] if job_id in jobs else job_id

            def show(points: list[dict[str, Any]], name: str = name) -> None:
                chosen = sorted(
                    (p for p in points if p["name"] == metric and p["task_index"] == 0), key=lambda p: p["step"]
                )
                self.plot.set_series(name, [p["step"] for p in chosen], [p["value"] for p in chosen])

            def fetch(c: AsyncClient, job_id: str = job_id) -> Awaitable[list[dict[str, Any]]]:
                return c.metrics(job_id, (metric,))

            self.run(fetch, show, f"metrics of {name}")

    def _table(self, jobs: list[dict[str, Any]]) -> None:
        keys: list[str] = []
        for job in jobs:
            for key in list(job["spec"].get("hyperparameters") or {}) + [f"metric: {m}" for m in job["metrics"]]:
                if key not in keys:
                    keys.append(key)
        rows = ["algorithm", "dataset", "state", "duration", *keys]
        self.params.clear()
        self.params.setRowCount(len(rows))
        self.params.setColumnCount(len(jobs))
        self.params.setVerticalHeaderLabels(rows)
        self.params.setHorizontalHeaderLabels([j["name"] for j in jobs])
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
                self.params.setItem(r, c, QTableWidgetItem(text))
