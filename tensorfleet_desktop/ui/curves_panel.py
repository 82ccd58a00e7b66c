"""The Curves tab of the job detail: one plot per reported metric, a curve per task inside each."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from tensorfleet_desktop.ui.job_history import SeriesChunk
from tensorfleet_desktop.ui.plots import MetricGrid

ALL_METRICS = "all metrics"


class CurvesPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.multi_task = False
        self.plot = MetricGrid()
        self.metric_filter = QComboBox()
        self.metric_filter.addItem(ALL_METRICS)
        self.metric_filter.currentTextChanged.connect(self._filter_curves)
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Show"))
        row.addWidget(self.metric_filter)
        row.addStretch(1)
        layout.addLayout(row)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.plot)
        layout.addWidget(scroll, 1)

    @property
    def points(self) -> int:
        return self.plot.points

    def clear(self, multi_task: bool) -> None:
        """Forget the shown job's curves; `multi_task` labels curves by task instead of by metric."""
        self.multi_task = multi_task
        self.plot.clear_all()
        self.metric_filter.blockSignals(True)
        self.metric_filter.clear()
        self.metric_filter.addItem(ALL_METRICS)
        self.metric_filter.blockSignals(False)

    def add_chunks(self, chunks: list[SeriesChunk]) -> None:
        """A batch of points, appended per curve in one go (docs/architecture.md, 'The path of a metric point')."""
        for chunk in chunks:
            label = f"task {chunk.task_index}" if self.multi_task else chunk.metric
            if chunk.metric not in self.plot.plots:  # a metric seen for the first time
                self.metric_filter.addItem(chunk.metric)
            self.plot.add_points(chunk.metric, label, chunk.step, chunk.value)

    def _filter_curves(self, metric: str) -> None:
        self.plot.show_only("" if metric == ALL_METRICS else metric)
