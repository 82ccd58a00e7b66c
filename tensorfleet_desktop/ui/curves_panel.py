"""The Curves tab of the job detail: one plot per reported metric (a curve per task inside each), metric cards
for metrics reported once per task, internal series hidden unless asked for.

Every point received is kept in numpy buffers per (metric, task), shown or not; plots and their curve items are
made only for what is shown, so a 200-trial sweep filtered to its top 10 trials draws 10 curves per metric
(docs/architecture.md, 'The path of a metric point').
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from tensorfleet_desktop.ui.job_history import SeriesChunk
from tensorfleet_desktop.ui.metric_cards import MetricCards
from tensorfleet_desktop.ui.plot_toolbar import NO_EPOCH
from tensorfleet_desktop.ui.plots import EPOCH, INTERNAL_METRICS, PALETTE, MetricGrid, Series, epoch_axis, is_internal

ALL_METRICS = "all metrics"
EPOCH_METRIC = "epoch"  # the series the epoch x axis reads (value = epochs done at that step)
LEGEND_COLUMNS_FROM = 6  # curves in one plot from which its legend takes two columns


class CurvesPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.multi_task = False
        self.job: dict[str, Any] | None = None
        self.selection: dict[int, str] | None = None  # task index -> legend label; None = every task
        self._rank: dict[int, int] = {}
        self.store: dict[str, dict[int, Series]] = {}  # metric -> task -> its points (all of them, shown or not)
        self.plot = MetricGrid()
        self.plot.epoch_map = self.epoch_of
        self.plot.set_epoch_available(NO_EPOCH)
        self.cards = MetricCards()
        self.metric_filter = QComboBox()
        self.metric_filter.addItem(ALL_METRICS)
        self.metric_filter.currentTextChanged.connect(self._filter_curves)
        self.show_internal = QCheckBox("show internal series")
        self.show_internal.setToolTip(
            "series the workloads report for bookkeeping, not as results: "
            + ", ".join(sorted(INTERNAL_METRICS))
            + " and names starting with _"
        )
        self.show_internal.toggled.connect(self._internal_toggled)
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Show"))
        row.addWidget(self.metric_filter)
        row.addWidget(self.show_internal)
        row.addStretch(1)
        layout.addLayout(row)
        body = QWidget()
        column = QVBoxLayout(body)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.cards)
        column.addWidget(self.plot, 1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        layout.addWidget(scroll, 1)

    @property
    def points(self) -> int:
        """Every point received since `clear`, shown or not."""
        return sum(s.n for tasks in self.store.values() for s in tasks.values())

    def clear(self, multi_task: bool) -> None:
        """Forget the shown job's curves; `multi_task` labels curves by task instead of by metric."""
        self.multi_task = multi_task
        self.job = None
        self.selection = None
        self._rank = {}
        self.store.clear()
        self.plot.clear_all()
        self.plot.set_epoch_available(NO_EPOCH)
        self.cards.clear()
        self._fill_metric_filter()

    def set_job(self, job: dict[str, Any]) -> None:
        """The shown job (job_detail calls this on every refresh): before any point, it says whether curves are
        labelled by task."""
        self.job = job
        if not self.store:
            self.multi_task = job.get("tasks", {}).get("total", 1) > 1

    def set_task_filter(self, selection: dict[int, str] | None) -> None:
        """Draw only these tasks (task index -> legend label, best first; a sweep's top trials), or every task."""
        selection = dict(selection) if selection is not None else None
        if selection == self.selection:
            return
        self.selection = selection
        self._rank = {task: rank for rank, task in enumerate(selection or {})}
        for metric in self.store:
            self._place(metric, reorder=True)

    def add_chunks(self, chunks: list[SeriesChunk]) -> None:
        """A batch of points, appended per series in one go (docs/architecture.md, 'The path of a metric point')."""
        touched: dict[str, None] = {}
        for chunk in chunks:
            if not len(chunk):
                continue
            tasks = self.store.get(chunk.metric)
            if tasks is None:
                tasks = self.store[chunk.metric] = {}
                if self._metric_shown(chunk.metric):
                    self.metric_filter.addItem(chunk.metric)
            series = tasks.get(chunk.task_index)
            if series is None:
                series = tasks[chunk.task_index] = Series(task=chunk.task_index)
                series.key = (
                    chunk.metric if not self.multi_task and chunk.task_index == 0 else f"task {chunk.task_index}"
                )
            series.extend(chunk.step, chunk.value, chunk.wall)
            touched[chunk.metric] = None
        if EPOCH_METRIC in touched:  # epoch x axes move with it
            self.plot.set_epoch_available("")
            for plot in self.plot.plots.values():
                if plot.x_mode == EPOCH:
                    for series in plot.series.values():
                        series.dirty = True
        for metric in touched:
            self._place(metric)

    def needs_pane(self, chunks: list[SeriesChunk]) -> bool:
        """Whether adding these chunks (one metric's) would make a new plot: the caller may get a pane ready
        first (MetricGrid.prepare), a step per event-loop turn. A guess on the safe side: a pane made for a
        metric that turns out to be a card stays spare for the next."""
        metric = next((c.metric for c in chunks if len(c)), None)
        if metric is None or metric in self.plot.plots or not self._metric_shown(metric):
            return False
        by_task: dict[int, list[np.ndarray]] = {}
        for task, series in self.store.get(metric, {}).items():
            by_task[task] = [series.x]
        for chunk in chunks:
            if len(chunk):
                by_task.setdefault(chunk.task_index, []).append(chunk.step)
        for steps in by_task.values():  # a curve: some task reported the metric at more than one step
            first = steps[0][0]
            if any(bool(np.any(x != first)) for x in steps):
                return True
        return False

    def epoch_of(self, task: int, steps: np.ndarray) -> np.ndarray | None:
        """The task's steps as epochs, from its own `epoch` series (or another task's: in a distributed job only
        rank 0 reports epochs)."""
        tasks = self.store.get(EPOCH_METRIC)
        if not tasks:
            return None
        series = tasks.get(task) or next(iter(tasks.values()))
        return epoch_axis(steps, series.x, series.y)

    # ---- what goes where

    def _metric_shown(self, metric: str) -> bool:
        return not is_internal(metric) or self.show_internal.isChecked()

    def _task_shown(self, task: int) -> bool:
        return self.selection is None or task in self.selection

    def _name(self, metric: str, task: int) -> str:
        if self.selection is not None and task in self.selection:
            return self.selection[task]
        return f"task {task}" if self.multi_task else metric

    def _color(self, task: int) -> str:
        if self.selection is not None:
            return PALETTE[self._rank.get(task, 0) % len(PALETTE)]
        return PALETTE[task % len(PALETTE)] if self.multi_task else PALETTE[0]

    def _ordered(self, tasks: dict[int, Series]) -> list[Series]:
        """Shown series, best first under a selection, else by task index."""
        shown = [s for task, s in tasks.items() if self._task_shown(task)]
        return sorted(shown, key=lambda s: self._rank.get(s.task, s.task))

    def _place(self, metric: str, reorder: bool = False) -> None:
        """A metric as a plot, as a card (every series is at one step: a final score, maybe reported again by a
        retried task, whose newest report counts) or nowhere (internal)."""
        tasks = self.store[metric]
        if not self._metric_shown(metric):
            self.plot.remove(metric)
            self.cards.remove(metric)
            return
        if all(_one_step(s) for s in tasks.values()):
            self.plot.remove(metric)
            values = [(self._name(metric, s.task), float(s.y[-1])) for s in self._ordered(tasks)]
            if values:
                self.cards.set_metric(metric, values, best_first=bool(self._rank))
            else:
                self.cards.remove(metric)
            return
        self.cards.remove(metric)
        plot = self.plot.plot_for(metric)
        for series in tasks.values():
            plot.adopt(series.key, series)
            task = series.task
            plot.restyle(series.key, self._name(metric, task), self._color(task), self._task_shown(task))
        shown = self._ordered(tasks)
        if reorder:
            plot.reorder([s.key for s in shown])
        plot.legend.setVisible(len(shown) > 1 or any(s.name != metric for s in shown))
        plot.legend.setColumnCount(2 if len(shown) > LEGEND_COLUMNS_FROM else 1)

    # ---- header controls

    def _fill_metric_filter(self) -> None:
        current = self.metric_filter.currentText()
        self.metric_filter.blockSignals(True)
        self.metric_filter.clear()
        self.metric_filter.addItem(ALL_METRICS)
        for metric in self.store:
            if self._metric_shown(metric):
                self.metric_filter.addItem(metric)
        index = self.metric_filter.findText(current)
        self.metric_filter.setCurrentIndex(max(index, 0))
        self.metric_filter.blockSignals(False)
        if index < 0:
            self._filter_curves(ALL_METRICS)

    def _internal_toggled(self) -> None:
        self._fill_metric_filter()
        for metric in self.store:
            if is_internal(metric):
                self._place(metric)
        self.plot.show_only(self.plot.only)

    def _filter_curves(self, metric: str) -> None:
        only = "" if metric == ALL_METRICS else metric
        self.plot.show_only(only)
        self.cards.show_only(only)


def _one_step(series: Series) -> bool:
    """All of the series' points are at one step (a score, not a curve)."""
    x = series.x
    return len(x) > 0 and x[0] == x[-1] and (len(x) == 1 or bool(x.min() == x.max()))
