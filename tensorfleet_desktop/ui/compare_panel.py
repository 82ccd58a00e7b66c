"""The Compare tab of the job detail: chosen jobs' curves of one metric overlaid (a bar per job when each reports
the metric once, as scikit-learn jobs do), their settings side by side."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_desktop.client import AsyncClient
from tensorfleet_desktop.ui.formatting import compact, duration, job_duration, metric_text
from tensorfleet_desktop.ui.plots import BarChart, MetricPlot
from tensorfleet_desktop.ui.view import Notify

Run = Callable[..., None]  # View.run: (call, done, failed)
Curve = tuple[np.ndarray, np.ndarray]  # steps, values: sorted by step


async def fetch_curve(client: AsyncClient, job_id: str, metric: str) -> Curve:
    """Task 0's points of `metric`, sorted by step. Runs on the bridge's asyncio thread: a long job's 100k point
    dicts are filtered there and only two arrays reach the GUI thread."""
    points = await client.metrics(job_id, (metric,))
    pairs = [(p["step"], p["value"]) for p in points if p["name"] == metric and p["task_index"] == 0]
    table = np.array(pairs, dtype=float).reshape(-1, 2)
    order = np.argsort(table[:, 0], kind="stable")
    return table[order, 0], table[order, 1]


def _item_text(job: dict[str, Any]) -> str:
    return f"{job['name']} · {job['state']} · {metric_text(job)}"


class ComparePanel(QWidget):
    def __init__(self, run: Run, notify: Notify, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run = run
        self.notify = notify
        self.known_jobs: list[dict[str, Any]] = []
        self._signature: tuple[tuple[str, str, str], ...] = ()
        self._generation = 0  # bumped by each Overlay: results of an earlier one are dropped
        self._curves: dict[str, Curve] = {}  # job name -> its curve, for the current Overlay
        self.jobs_list = QListWidget()
        self.metric_box = QComboBox()
        self.metric_box.setEditable(True)
        self.metric_box.addItems(["loss", "test_accuracy", "train_loss", "val_accuracy", "r2"])
        self.button = QPushButton("Overlay")
        self.button.clicked.connect(lambda: self.compare())
        self.plot = MetricPlot(symbols=True)
        self.bars = BarChart()
        self.charts = QStackedWidget()
        self.charts.addWidget(self.plot)
        self.charts.addWidget(self.bars)
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
        right.addWidget(self.charts)
        right.addWidget(self.params)
        layout.addWidget(right, 3)

    def set_jobs(self, jobs: list[dict[str, Any]]) -> None:
        """Called on every job update (several a second while jobs stream): the list is touched only when a job
        came or went or its state or headline metric changed; ticks are kept."""
        self.known_jobs = jobs
        signature = tuple((job["id"], job["state"], metric_text(job)) for job in jobs)
        if signature == self._signature:
            return
        same_ids = [s[0] for s in signature] == [s[0] for s in self._signature]
        self._signature = signature
        if same_ids:  # in place: the scroll position and the current item stay
            for i, job in enumerate(jobs):
                self.jobs_list.item(i).setText(_item_text(job))
            return
        checked = set(self.checked_jobs())
        self.jobs_list.clear()
        for job in jobs:
            item = QListWidgetItem(_item_text(job))
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
        self._generation += 1
        generation = self._generation
        self._curves = {}
        self.plot.clear_all()
        self.charts.setCurrentWidget(self.plot)
        jobs = {j["id"]: j for j in self.known_jobs}
        self._table([jobs[i] for i in ids if i in jobs])
        labels: set[str] = set()
        for job_id in ids:
            name = jobs[job_id]["name"] if job_id in jobs else job_id
            label = f"{name} ({job_id[:8]})" if name in labels else name  # two runs of one spec share a name
            labels.add(label)

            def show(curve: Curve, label: str = label) -> None:
                if generation == self._generation:  # else a later Overlay cleared the plot since
                    self._show(metric, label, curve)

            def fetch(c: AsyncClient, job_id: str = job_id) -> Awaitable[Curve]:
                return fetch_curve(c, job_id, metric)

            self.run(fetch, show, f"metrics of {name}")

    def _show(self, metric: str, label: str, curve: Curve) -> None:
        """Add one job's result: bars while every job so far reported the metric once (a final score), curves as
        soon as one has a series."""
        self._curves[label] = curve
        reported = {n: c for n, c in self._curves.items() if len(c[0])}
        if reported and all(len(c[0]) == 1 for c in reported.values()):
            self.bars.show_bars(list(reported), [float(c[1][0]) for c in reported.values()], metric)
            self.charts.setCurrentWidget(self.bars)
            return
        if self.charts.currentWidget() is self.plot:
            draw = {label: curve} if len(curve[0]) else {}
        else:  # bars until now: the curves replace them
            draw = reported
            self.plot.clear_all()
            self.charts.setCurrentWidget(self.plot)
        for name, (xs, ys) in draw.items():
            self.plot.add_points(name, xs, ys)  # arrays as they are: no list of floats on the GUI thread

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
                self.params.setItem(r, c, QTableWidgetItem(compact(value)))
