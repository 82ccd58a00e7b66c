"""The Sweep tab of the job detail: the trials as a table (one column per swept parameter, the best trial pinned on
top), a score-against-parameter scatter, parallel coordinates, and how many of the best trials the Curves tab
overlays.

A 200-trial sweep is refreshed while it runs: the table takes its rows in one batch and the plots are rebuilt only
when the trials' scores or states changed (and only while the tab is visible), with a fixed number of plot items.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QAction, QBrush, QColor, QFont, QKeySequence, QShortcut, QShowEvent, QWheelEvent
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_desktop.client import trial_rows
from tensorfleet_desktop.ui.experiments import header_width
from tensorfleet_desktop.ui.formatting import compact, duration, is_number, state_color
from tensorfleet_desktop.ui.parallel_coords import BEST, ParallelCoordinates, ParamAxis
from tensorfleet_desktop.ui.plots import PALETTE, light_grid
from tensorfleet_desktop.ui.table_model import ROW_ROLE, Column, RowTableModel
from tensorfleet_desktop.ui.widgets import add_row_menu, data_table, menu_action

Index = QModelIndex | QPersistentModelIndex
DEFAULT_TOP_K = 10
PRUNED = "#bf8700"  # stopped early by the sweep's pruner: amber like a paused job
BEST_BACKGROUND = QColor(240, 136, 62, 70)  # BEST, translucent: readable on the light and the dark palette


def _direction(job: dict[str, Any]) -> str:
    return str((job["spec"].get("sweep") or {}).get("direction", "maximize"))


def _scored(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if is_number(r["score"])]


def best_trial(job: dict[str, Any], rows: Sequence[dict[str, Any]] | None = None) -> int | None:
    """The controller's best trial (job metrics' best_trial), else the best score in the sweep's direction."""
    rows = trial_rows(job) if rows is None else rows
    best = (job.get("metrics") or {}).get("best_trial")
    if is_number(best) and any(r["trial"] == int(best) for r in rows):
        return int(best)
    ranked = ranked_trials(job, rows)
    return ranked[0]["trial"] if ranked else None


def ranked_trials(job: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scored trials that ran to the end, best first by the sweep's direction (ties: the earlier trial)."""
    sign = 1.0 if _direction(job) == "minimize" else -1.0
    finished = [r for r in _scored(rows) if r["state"] != "PRUNED"]  # a pruned trial's score is a partial one
    return sorted(finished, key=lambda r: (sign * float(r["score"]), r["trial"]))


def top_trials(job: dict[str, Any], k: int = DEFAULT_TOP_K) -> dict[int, str]:
    """The k best scored trials, best first: task index -> a compact legend label ("#12 0.9731")."""
    rows = trial_rows(job)
    ranked = ranked_trials(job, rows)
    best = best_trial(job, rows)
    ranked.sort(key=lambda r: r["trial"] != best)  # stable: the controller's best first, the rest in order
    return {r["trial"]: f"#{r['trial']} {compact(float(r['score']))}" for r in ranked[: max(0, k)]}


def _cell(value: Any) -> str:
    return compact(value) if isinstance(value, float) else str(value)


def _seconds(value: float | None) -> str:
    """A trial's duration: tenths under 10 s (most scikit-learn trials take a second or two)."""
    return f"{value:.1f}s" if value is not None and 0 <= value < 10 else duration(value)


def _sort_key(value: Any) -> Any:
    """Numbers before text, each in its natural order; None is missing (TrialsModel sorts it last)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")  # infinities too
    return (1, 0.0, str(value))


def _param_column(name: str, space: Any) -> Column:
    return Column(
        name,
        lambda r: _cell(r["params"].get(name)),
        sort=lambda r: _sort_key(r["params"].get(name)),
        header_tip=f"{name}: searched over {space}",  # the full name, where a long one elides
    )


class TrialsModel(RowTableModel):
    """Trial rows with columns that follow the sweep's parameters; the best trial bold on an accent background.

    The model sorts itself (the table view calls `sort`), in Python over precomputed keys: a proxy's per-comparison
    `lessThan` calls cost ~40 ms for 200 trials. Sorting keeps the best trial first in either order and missing
    values last, and is reapplied after every refresh; `set_rows` signals in batches, not once per trial."""

    def __init__(self) -> None:
        super().__init__([], key=lambda r: str(r["trial"]))
        self.best: int | None = None
        self.sort_column = -1
        self.sort_order = Qt.SortOrder.AscendingOrder
        self._bold = QFont()
        self._bold.setBold(True)

    def configure(
        self, params: dict[str, Any], metric: str, rows: Sequence[dict[str, Any]], direction: str = "maximize"
    ) -> None:
        """New columns (another sweep; `params`: name -> its search space): one reset, not a column-by-column
        rebuild."""
        self.beginResetModel()
        self.columns = [
            Column(
                "Trial",
                lambda r: f"#{r['trial']} ★" if r["trial"] == self.best else f"#{r['trial']}",
                sort=lambda r: (0, float(r["trial"]), ""),
                tooltip=lambda r: "the best trial" if r["trial"] == self.best else "",
            ),
            *(_param_column(name, space) for name, space in params.items()),
            Column(
                metric or "Score",
                lambda r: "" if r["score"] is None else compact(float(r["score"])),
                sort=lambda r: _sort_key(r["score"]),
                tooltip=lambda r: "" if r["score"] is None else repr(r["score"]),
                header_tip=f"the sweep's score: {metric}, {direction}d",
            ),
            Column("State", lambda r: r["state"], color=lambda r: PRUNED if r["state"] == "PRUNED" else state_color(r)),
            Column("Duration", lambda r: _seconds(r["duration"]), sort=lambda r: _sort_key(r["duration"])),
            Column("Agent", lambda r: r["agent"]),
        ]
        self.rows = self._sorted(rows)
        self._index = {self.key(r): i for i, r in enumerate(self.rows)}
        self.endResetModel()

    def set_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        incoming = {self.key(r): r for r in rows}
        if any(key not in incoming for key in self._index):  # trials never go away within one sweep: a new one
            self.beginResetModel()
            self.rows = self._sorted(rows)
            self._index = {self.key(r): i for i, r in enumerate(self.rows)}
            self.endResetModel()
            return
        changed = [i for key, i in self._index.items() if incoming[key] != self.rows[i]]
        for i in changed:
            self.rows[i] = incoming[self.key(self.rows[i])]
        if changed:
            self.dataChanged.emit(self.index(min(changed), 0), self.index(max(changed), len(self.columns) - 1))
        new = [r for key, r in incoming.items() if key not in self._index]
        if new:
            first = len(self.rows)
            self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
            self.rows.extend(new)
            self._index.update({self.key(r): first + i for i, r in enumerate(new)})
            self.endInsertRows()
        if changed or new:
            self.resort()

    def set_best(self, trial: int | None) -> None:
        """Moves the highlight and pins the new best trial on top."""
        if trial == self.best:
            return
        before, self.best = self.best, trial
        last = len(self.columns) - 1
        for t in (before, trial):
            at = self.find(str(t)) if t is not None else -1
            if at >= 0:
                self.dataChanged.emit(self.index(at, 0), self.index(at, last))
        self.resort()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.sort_column, self.sort_order = column, order
        self.resort()

    def resort(self) -> None:
        """Reorders the rows in place, moving the view's selection and current row with them."""
        ordered = self._sorted(self.rows)
        if ordered == self.rows:
            return
        self.layoutAboutToBeChanged.emit()
        before = self.persistentIndexList()
        keys = [self.key(self.rows[i.row()]) for i in before]
        self.rows = ordered
        self._index = {self.key(r): i for i, r in enumerate(self.rows)}
        self.changePersistentIndexList(
            before, [self.index(self._index[k], i.column()) for k, i in zip(keys, before, strict=True)]
        )
        self.layoutChanged.emit()

    def _sorted(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        if not 0 <= self.sort_column < len(self.columns):
            return list(rows)
        column = self.columns[self.sort_column]
        sort = column.sort or column.text
        keyed = [(sort(r), r) for r in rows]
        present = [kr for kr in keyed if kr[0] is not None and kr[1]["trial"] != self.best]
        present.sort(key=lambda kr: kr[0], reverse=self.sort_order == Qt.SortOrder.DescendingOrder)
        best = [r for r in rows if r["trial"] == self.best]
        missing = [r for k, r in keyed if k is None and r["trial"] != self.best]
        return best + [r for _k, r in present] + missing

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if (
            role in (Qt.ItemDataRole.FontRole, Qt.ItemDataRole.BackgroundRole)
            and index.isValid()
            and self.rows[index.row()]["trial"] == self.best
        ):
            return self._bold if role == Qt.ItemDataRole.FontRole else QBrush(BEST_BACKGROUND)
        return super().data(index, role)


class WheelSafeSpinBox(QSpinBox):
    """A spin box the mouse wheel changes only once it has focus (scrolling the tab past it leaves it alone)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def wheelEvent(self, event: QWheelEvent) -> None:
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


class TrialScatter(pg.PlotWidget):  # type: ignore[misc]
    """Score against one parameter: a dot per scored trial, the best as a star; categories at integer positions
    (slightly spread so equal trials do not hide each other), a wide positive range in log10 with decade labels."""

    trial_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        light_grid(self.plotItem)
        for side in ("left", "bottom"):  # scores read as they are, not "x0.001"
            self.plotItem.getAxis(side).enableAutoSIPrefix(False)
        self.tips: dict[int, str] = {}  # trial -> its hover text
        self.dots = pg.ScatterPlotItem(
            size=8, brush=pg.mkBrush(PALETTE[0]), pen=None, hoverable=True, tip=self._tip, hoverSize=11
        )
        self.star = pg.ScatterPlotItem(
            size=18, symbol="star", brush=pg.mkBrush(BEST), pen=pg.mkPen("#57606a"), hoverable=True, tip=self._tip
        )
        self.star.setZValue(10)
        self.ring = pg.ScatterPlotItem(size=20, symbol="o", brush=None)  # the trial selected in the table
        self.ring.setZValue(20)
        self.positions: dict[int, tuple[float, float]] = {}
        self.plotItem.addItem(self.dots)
        self.plotItem.addItem(self.star)
        self.plotItem.addItem(self.ring)
        self.dots.sigClicked.connect(self._clicked)
        self.star.sigClicked.connect(self._clicked)

    def show_trials(
        self, axis: ParamAxis, metric: str, trials: Sequence[tuple[int, Any, float]], best: int | None
    ) -> None:
        """`trials`: (trial, parameter value, score) of the scored trials."""
        xs, ys, ids, star = [], [], [], None
        self.tips, self.positions = {}, {}
        for trial, raw, score in trials:
            x = axis.value(raw)
            if math.isnan(x):
                continue
            best_mark = " (best)" if trial == best else ""
            self.tips[trial] = f"trial #{trial}{best_mark}\n{axis.name} = {_cell(raw)}\n{metric} = {compact(score)}"
            if axis.categories is not None:
                x += ((trial * 0.618) % 1.0 - 0.5) * 0.3
            self.positions[trial] = (x, score)
            if trial == best:
                star = (x, score, trial)
            else:
                xs.append(x)
                ys.append(score)
                ids.append(trial)
        self.dots.setData(xs, ys, data=ids)
        self.star.setData(*([[star[0]], [star[1]]] if star else [[], []]), data=[star[2]] if star else [])
        bottom = self.plotItem.getAxis("bottom")
        if axis.categories is not None:
            bottom.setTicks([list(enumerate(axis.categories))])
        elif axis.log:
            bottom.setTicks(
                [[(float(d), compact(10.0**d)) for d in range(math.floor(axis.low), math.ceil(axis.high) + 1)]]
            )
        else:
            bottom.setTicks(None)
        self.plotItem.setLabel("bottom", axis.scale_name())
        self.plotItem.setLabel("left", metric)
        self.plotItem.autoRange(padding=0.08)  # the best trial's star is often at an edge

    def highlight(self, trial: int | None) -> None:
        at = self.positions.get(trial) if trial is not None else None
        self.ring.setPen(pg.mkPen(pg.getConfigOption("foreground"), width=2))
        self.ring.setData(*([[at[0]], [at[1]]] if at else [[], []]))

    def _tip(self, x: float, y: float, data: Any) -> str:
        return self.tips.get(int(data), "") if data is not None else ""

    def clear_trials(self) -> None:
        self.tips, self.positions = {}, {}
        for item in (self.dots, self.star, self.ring):
            item.setData([], [])

    def _clicked(self, _item: Any, points: Sequence[Any], *_: Any) -> None:
        if len(points):
            self.trial_clicked.emit(int(points[0].data()))


class SweepPanel(QWidget):
    """`show_job(job)` on every refresh of a sweep job; `show_trial(task index)` asks for that trial's curves."""

    show_trial = Signal(int)
    top_k_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job: dict[str, Any] | None = None
        self.top_k = DEFAULT_TOP_K
        self.axes: dict[str, ParamAxis] = {}
        self._task_params: dict[int, Any] = {}
        self._signature: Any = None
        self._plots_dirty = False

        self.trials_model = TrialsModel()
        # No proxy: the model sorts itself (see TrialsModel). data_table always wraps the model in one (widgets.py
        # has no proxy-less form); the view gets the model itself and that unparented proxy is freed on return.
        self.trials_table, _ = data_table(self.trials_model, name="trials")
        self.trials_table.setModel(self.trials_model)
        self.trials_table.doubleClicked.connect(self._double_clicked)
        for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):  # the keyboard's double-click
            QShortcut(
                QKeySequence(key), self.trials_table, self._open_current, context=Qt.ShortcutContext.WidgetShortcut
            )
        self.trials_table.selectionModel().selectionChanged.connect(lambda *_: self._highlight_selected())
        add_row_menu(self.trials_table, self._row_actions)

        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.top_k_spin = WheelSafeSpinBox()
        self.top_k_spin.setRange(1, 100)
        self.top_k_spin.setValue(self.top_k)
        self.top_k_spin.setToolTip("how many of the best trials the Curves tab overlays")
        self.top_k_spin.valueChanged.connect(self._set_top_k)
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(QLabel("Curves: top"))
        top.addWidget(self.top_k_spin)
        top.addWidget(QLabel("trials"))

        self.scatter = TrialScatter()
        self.scatter.trial_clicked.connect(self.select_trial)
        self.scatter_param = QComboBox()
        self.scatter_param.currentTextChanged.connect(lambda _text: self._render_scatter())
        scatter_box = QWidget()
        scatter_layout = QVBoxLayout(scatter_box)
        scatter_layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Score against"))
        row.addWidget(self.scatter_param, 1)
        scatter_layout.addLayout(row)
        scatter_layout.addWidget(self.scatter, 1)

        self.parallel = ParallelCoordinates()
        self.parallel.line_clicked.connect(lambda at: self.select_trial(self._plotted[at]))
        self._plotted: list[int] = []  # the trials in the order the parallel coordinates got them
        self.parallel_note = QLabel()
        parallel_box = QWidget()
        parallel_layout = QVBoxLayout(parallel_box)
        parallel_layout.setContentsMargins(0, 0, 0, 0)
        parallel_layout.addWidget(self.parallel_note)
        parallel_layout.addWidget(self.parallel, 1)

        plots = QSplitter(Qt.Orientation.Horizontal)
        plots.addWidget(scatter_box)
        plots.addWidget(parallel_box)
        plots.setSizes([500, 700])
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.trials_table)
        split.addWidget(plots)
        split.setSizes([300, 360])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(split, 1)

    # ---- the job

    def clear(self) -> None:
        if self.job is None and self._signature is None:  # already empty (the job shown before was no sweep)
            return
        self.job = None
        self._signature = None
        self._task_params = {}
        self.trials_model.best = None
        self.trials_model.configure({}, "", [])
        self.summary.clear()
        self.scatter.clear_trials()
        self.parallel.clear_trials()
        self._plotted = []
        self.parallel_note.clear()

    def show_job(self, job: dict[str, Any]) -> None:
        """A sweep job as it is now (its trials are its tasks)."""
        sweep = job["spec"]["sweep"]
        rows = trial_rows(job)
        names = list(sweep["params"])
        metric = str(sweep["metric"])
        best = best_trial(job, rows)
        same_sweep = self.job is not None and self.job["id"] == job["id"]
        self.job = job
        self._task_params = {t["index"]: t["params"] for t in job["task_list"]}
        model = self.trials_model
        model.set_best(best)
        if not same_sweep or [c.title for c in model.columns[1 : 1 + len(names)]] != names:
            model.configure(dict(sweep["params"]), metric, rows, str(sweep.get("direction", "maximize")))
            score_column = 1 + len(names)
            descending = sweep.get("direction") != "minimize"
            order = Qt.SortOrder.DescendingOrder if descending else Qt.SortOrder.AscendingOrder
            self.trials_table.sortByColumn(score_column, order)
            header = self.trials_table.horizontalHeader()  # each parameter's name shows whole (up to 160 px)
            widths = [64] + [header_width(header, n, floor=70) for n in names]
            widths += [header_width(header, metric, floor=90), 100, 70]
            for column, width in enumerate(widths):
                self.trials_table.setColumnWidth(column, width)
        else:
            model.set_rows(rows)
        self._show_summary(job, rows, best)
        signature = (job["id"], tuple(names), best, tuple((r["trial"], r["score"], r["state"]) for r in rows))
        if signature != self._signature:
            self._signature = signature
            self.axes = {n: ParamAxis.build(n, sweep["params"][n], [r["params"].get(n) for r in rows]) for n in names}
            if [self.scatter_param.itemText(i) for i in range(self.scatter_param.count())] != names:
                self.scatter_param.blockSignals(True)
                self.scatter_param.clear()
                self.scatter_param.addItems(names)
                self.scatter_param.blockSignals(False)
            self._plots_dirty = True
            if self.isVisible():
                self._render_plots()

    def _show_summary(self, job: dict[str, Any], rows: Sequence[dict[str, Any]], best: int | None) -> None:
        sweep = job["spec"]["sweep"]
        scored = len(_scored(rows))
        text = f"{scored}/{len(rows)} trials scored on {sweep['metric']} ({sweep['direction']})"
        at = self.trials_model.find(str(best)) if best is not None else -1
        if at >= 0:
            row = self.trials_model.rows[at]
            params = ", ".join(f"{k}={_cell(v)}" for k, v in row["params"].items())
            score = "" if row["score"] is None else compact(float(row["score"]))
            text += f" · <b style='color:{BEST}'>best #{best}</b> {score} ({params})"
        self.summary.setText(text)

    # ---- plots (rebuilt on a change of the trials, only while visible)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._plots_dirty:
            self._render_plots()

    def _render_plots(self) -> None:
        self._plots_dirty = False
        if self.job is None:
            return
        rows = self.trials_model.rows
        sweep = self.job["spec"]["sweep"]
        best = self.trials_model.best
        self._plotted = [r["trial"] for r in rows]
        at = self._plotted.index(best) if best in self._plotted else None
        self.parallel.set_trials(
            list(self.axes.values()),
            [r["params"] for r in rows],
            [float(r["score"]) if is_number(r["score"]) else None for r in rows],
            at,
            minimize=sweep.get("direction") == "minimize",
        )
        better = "lower" if sweep.get("direction") == "minimize" else "higher"
        self.parallel_note.setText(
            f"Colour: rank on {sweep['metric']} (brighter = better; {better} is better); "
            f"<b style='color:{BEST}'>best trial</b> on top; grey: not scored yet"
        )
        self._render_scatter()

    def _render_scatter(self) -> None:
        axis = self.axes.get(self.scatter_param.currentText())
        if axis is None or self.job is None:
            return
        trials = [(r["trial"], r["params"].get(axis.name), float(r["score"])) for r in _scored(self.trials_model.rows)]
        self.scatter.show_trials(axis, str(self.job["spec"]["sweep"]["metric"]), trials, self.trials_model.best)
        self._highlight_selected()

    def selected_trial(self) -> int | None:
        rows = self.trials_table.selectionModel().selectedRows()
        return int(rows[0].data(ROW_ROLE)["trial"]) if rows else None

    def _highlight_selected(self) -> None:
        """The table's selected trial stands out in both plots (a ring in the scatter, a bold line across)."""
        trial = self.selected_trial()
        self.scatter.highlight(trial)
        self.parallel.highlight(self._plotted.index(trial) if trial in self._plotted else None)

    # ---- the user's actions

    def _set_top_k(self, value: int) -> None:
        if value != self.top_k:
            self.top_k = value
            self.top_k_changed.emit(value)

    def select_trial(self, trial: int) -> None:
        at = self.trials_model.find(str(trial))
        if at >= 0:
            self.trials_table.selectRow(at)
            self.trials_table.scrollTo(self.trials_model.index(at, 0))

    def _double_clicked(self, index: QModelIndex) -> None:
        row = index.data(ROW_ROLE)
        if row is not None:
            self.show_trial.emit(int(row["trial"]))

    def _row_actions(self, rows: list[dict[str, Any]]) -> list[QAction | None]:
        if not rows:
            return []
        trial = int(rows[0]["trial"])
        return [
            menu_action("Show its curves", lambda: self.show_trial.emit(trial)),
            menu_action("Copy parameters as JSON", lambda: self.copy_parameters(trial)),
            None,
            menu_action("Copy all trials as CSV", self.copy_table),
        ]

    def copy_table(self) -> None:
        """Every trial in the table's order, for a spreadsheet or pandas (full-precision values)."""
        model = self.trials_model
        params = [c.title for c in model.columns[1:-4]]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["trial", *params, model.columns[-4].title, "state", "duration_s", "agent"])
        for r in model.rows:
            values = [r["params"].get(p) for p in params]
            writer.writerow([r["trial"], *values, r["score"], r["state"], r["duration"], r["agent"]])
        QApplication.clipboard().setText(out.getvalue())

    def _open_current(self) -> None:
        trial = self.selected_trial()
        if trial is not None:
            self.show_trial.emit(trial)

    def copy_parameters(self, trial: int) -> None:
        """The trial's full hyperparameters (swept and fixed), ready for a job spec's `hyperparameters`."""
        params = self._task_params.get(trial)
        if params is None:
            at = self.trials_model.find(str(trial))
            params = self.trials_model.rows[at]["params"] if at >= 0 else {}
        QApplication.clipboard().setText(json.dumps(params, indent=2, default=str))
