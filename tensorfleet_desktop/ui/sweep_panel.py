"""The Sweep tab of the job detail: the trials as a table and a score-against-parameter scatter."""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSplitter, QVBoxLayout, QWidget

from tensorfleet_desktop.client import trial_rows
from tensorfleet_desktop.ui.formatting import duration, short_values
from tensorfleet_desktop.ui.plots import ScatterPlot
from tensorfleet_desktop.ui.table_model import Column, RowTableModel
from tensorfleet_desktop.ui.widgets import data_table


class SweepPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job: dict[str, Any] | None = None
        self.trials_model = RowTableModel(
            [
                Column("Trial", lambda r: str(r["trial"]), sort=lambda r: r["trial"]),
                Column("Params", lambda r: short_values(r["params"])),
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
        layout = QVBoxLayout(self)
        self.summary = QLabel()
        layout.addWidget(self.summary)
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
        layout.addWidget(split, 1)

    def clear(self) -> None:
        self.job = None
        self.trials_model.set_rows([])

    def show_job(self, job: dict[str, Any]) -> None:
        """A sweep job as it is now (its trials are its tasks)."""
        self.job = job
        sweep = job["spec"]["sweep"]
        rows = trial_rows(job)
        self.trials_model.set_rows(rows)
        done = [r for r in rows if r["score"] is not None]
        self.summary.setText(
            f"{len(done)}/{len(rows)} trials scored on {sweep['metric']} ({sweep['direction']}); "
            f"best trial {int(job['metrics']['best_trial']) if 'best_trial' in job['metrics'] else '-'}"
        )
        names = list(sweep["params"])
        if [self.scatter_param.itemText(i) for i in range(self.scatter_param.count())] != names:
            self.scatter_param.clear()
            self.scatter_param.addItems(names)
        self._render_scatter()

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
