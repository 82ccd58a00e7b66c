"""Live metric curves with pyqtgraph.

Points arrive a batch at a time (docs/architecture.md, 'The path of a metric point'), are appended to numpy
buffers in one go and drawn at most REDRAW_HZ times a second, with downsampling and clip-to-view, so a 100k-point
curve stays smooth (measured: 6.4 ms a frame plain, 1.7 ms this way). Smoothing, log-y, the x axis (step, epoch, wall
time, relative time) and the hover read-out work on those buffers: a series is recomputed only when it is dirty
and drawn, and a series nobody shows (a filtered-out sweep trial) never gets a pyqtgraph item.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
import pyqtgraph.exporters as pg_exporters
import shiboken6
from pyqtgraph.graphicsItems.ViewBox.ViewBoxMenu import ViewBoxMenu
from PySide6.QtCore import QEvent, QObject, QPoint, QPointF, QRect, QSize, Qt, QTimer
from PySide6.QtGui import QPainter, QPicture
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import QGridLayout, QVBoxLayout, QWidget
from scipy.signal import lfilter  # type: ignore[import-untyped]

from tensorfleet_desktop.ui.formatting import compact

Points = Sequence[float] | np.ndarray  # a batch: a list, or a numpy array straight from job_history
PALETTE = (
    "#1f6feb",
    "#d1242f",
    "#2ea043",
    "#bf8700",
    "#8250df",
    "#0a7ea4",
    "#e16f24",
    "#57606a",
    "#bf3989",
    "#4d9e00",
)

# Redraws a second while points stream: each costs a repaint of the plot and its axes (about 10 ms of the GUI
# thread); 10 a second took 13-14 % of a core at 1,000 points/s, 5 take 7-8 % (benchmarks/gui_bench.py)
REDRAW_HZ = 5
# A curve from this many points on is downsampled and clipped to the view; a smaller one is not: pyqtgraph redoes
# a clipped curve's display data on every change of the view range, and a sweep's first draw changes it per curve
CLIP_FROM = 2000
SPARE_PANES = 4  # emptied plot panes a MetricGrid keeps for the next job's metrics
DRAW_BUDGET_S = 0.005  # the periodic redraw draws curves for this long per event-loop turn, then lets it run
DRAW_GAP_MS = 4  # and goes on this much later: the plot's repaint and its next slice never share one turn
LEGEND_MAX = 12  # legend entries (and read-out lines) in one plot: the first drawn, best first for a sweep
# x axis modes (PlotToolbar's choices)
STEP, EPOCH, WALL, RELATIVE = "step", "epoch", "wall", "relative"
X_LABELS = {STEP: "step", EPOCH: "epoch", WALL: "wall time", RELATIVE: "seconds since the first point"}

# Series the workloads report for the app's own use, not as results (agent/workloads/torch_models.py reports
# `epoch` at each epoch's last step, which the epoch x axis uses, and `param_checksum` to prove distributed
# ranks agree); any metric whose name starts with "_" is internal too.
INTERNAL_METRICS = frozenset({"epoch", "param_checksum"})

# Maps a task's steps to epochs (None: the job reports no epoch series).
EpochMap = Callable[[int, np.ndarray], "np.ndarray | None"]
Pane = tuple["MetricPlot", QWidget, Any]  # a MetricGrid's plot, the widget holding it and its PlotToolbar


def is_internal(metric: str) -> bool:
    return metric.startswith("_") or metric in INTERNAL_METRICS


def light_grid(item: pg.PlotItem) -> None:
    """Grid lines on major ticks only: pyqtgraph's minor grid costs more than drawing 100k points."""
    for side in ("left", "bottom"):
        axis = item.getAxis(side)
        axis.setGrid(60)
        axis.setStyle(maxTickLevel=0)


def configure_pyqtgraph(dark: bool) -> None:
    pg.setConfigOptions(antialias=True, background="#1e1e1e" if dark else "w", foreground="#dddddd" if dark else "k")


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: a debiased exponential moving average (the first points are not pulled to 0).

    Vectorised (one IIR filter pass), so 100k points take about a millisecond; non-finite values are skipped
    and stay where they are."""
    values = np.asarray(values, dtype=float)
    if weight <= 0 or len(values) == 0:
        return values
    finite = np.isfinite(values)
    if not finite.all():
        out = np.full(len(values), np.nan)
        out[finite] = ema(values[finite], weight)
        return out
    smoothed: np.ndarray = np.asarray(lfilter([1.0 - weight], [1.0, -weight], values), dtype=float)
    # debiasing divides by 1 - weight**(i+1), which is 1.0 in float64 once weight**(i+1) < 1e-17
    head = min(len(values), math.ceil(math.log(1e-17) / math.log(weight)) + 1)
    smoothed[:head] /= 1.0 - weight ** np.arange(1, head + 1)
    return smoothed


def epoch_axis(steps: np.ndarray, epoch_steps: np.ndarray, epochs: np.ndarray) -> np.ndarray:
    """Steps as (fractional) epochs, from an `epoch` series (value = epochs done at that step).

    A step between two epoch points is interpolated; before the first one, counted from (step 0, epoch 0);
    after the last one (a job still running), extrapolated at the last epoch's pace."""
    order = np.argsort(epoch_steps, kind="stable")
    xs, ys = np.asarray(epoch_steps, dtype=float)[order], np.asarray(epochs, dtype=float)[order]
    if len(xs) and xs[0] > 0:
        xs, ys = np.concatenate([[0.0], xs]), np.concatenate([[0.0], ys])
    if len(xs) == 0:
        return np.asarray(steps, dtype=float)
    if len(xs) == 1:
        return np.full(len(steps), ys[0])
    out: np.ndarray = np.interp(steps, xs, ys)
    pace = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) if xs[-1] != xs[-2] else 0.0
    after = steps > xs[-1]
    out[after] = ys[-1] + (steps[after] - xs[-1]) * pace
    return out


def translucent(color: Any, alpha: int) -> Any:
    """A pyqtgraph colour (name, letter, tuple) as a QColor with this alpha."""
    qcolor = pg.mkColor(color)
    qcolor.setAlpha(alpha)
    return qcolor


def format_value(value: float) -> str:
    """4 significant digits (the cards' and the read-out's format)."""
    return compact(value) if math.isfinite(value) else "-"


class _SameLabel:
    """An axis that leaves its label's HTML alone when it has not changed: pyqtgraph re-sets it (a QTextDocument
    layout) on every range change, on all four axes of a plot, hidden ones too: 34 times while a plot is made."""

    label: Any
    picture: Any
    style: dict[str, Any]
    _label_html: str | None = None

    def prepare_picture(self) -> None:
        """What AxisItem.paint draws, made now (MetricPlot._settle_range): the tick labels' sizes resize the axis,
        and a resize found while painting means another paint."""
        if self.picture is not None or not self.isVisible():  # type: ignore[attr-defined]
            return
        picture = QPicture()
        painter = QPainter(picture)
        try:
            if self.style["tickFont"]:
                painter.setFont(self.style["tickFont"])
            specs = self.generateDrawSpecs(painter)  # type: ignore[attr-defined]
            if specs is not None:
                self.drawPicture(painter, *specs)  # type: ignore[attr-defined]
        finally:
            painter.end()
        self.picture = picture

    def _updateLabel(self) -> None:
        text = self.labelString()  # type: ignore[attr-defined]
        if text != self._label_html:
            self._label_html = text
            self.label.setHtml(text)
        self._adjustSize()  # type: ignore[attr-defined]
        self.picture = None
        self.update()  # type: ignore[attr-defined]


class Axis(_SameLabel, pg.AxisItem):  # type: ignore[misc]
    pass


class DateAxis(_SameLabel, pg.DateAxisItem):  # type: ignore[misc]
    pass


class ValueAxis(Axis):
    """A y axis whose log mode labels only 1, 2 and 5 times a power of ten: under a few decades pyqtgraph puts a
    tick at every 1..9 and labels each (0.02 0.03 0.04 ... in a pile)."""

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        strings: list[str] = super().tickStrings(values, scale, spacing)
        if not self.logMode:
            return strings
        shown = []
        for value, text in zip(values, strings, strict=False):
            mantissa = 10 ** (value - math.floor(value + 1e-9))
            shown.append(text if round(mantissa, 6) in (1.0, 2.0, 5.0) else "")
        return shown


def _check_writable(path: Path) -> None:
    """Raise OSError naming the path when the export could not be written there: Qt's writers fail silently."""
    folder = path.parent
    if not folder.is_dir():
        raise OSError(f"cannot write {path}: the folder {folder} does not exist")
    if path.is_dir():
        raise OSError(f"cannot write {path}: it is a folder")
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise OSError(f"cannot write {path}: permission denied")


class LazyMenuView(pg.ViewBox):  # type: ignore[misc]
    """A ViewBox whose right-click menu is built on the first right-click: building it is a quarter of a new
    plot's cost (6 of 24 ms), and opening a sweep makes three plots."""

    menu: Any

    def __init__(self) -> None:
        super().__init__(enableMenu=False)
        self.state["enableMenu"] = True

    def _built_menu(self) -> Any:
        if self.menu is None and self.menuEnabled():
            self.menu = ViewBoxMenu(self)
            self.updateViewLists()
        return self.menu

    def getMenu(self, _ev: Any) -> Any:  # pyqtgraph passes the click event positionally
        return self._built_menu()

    def getContextMenus(self, event: Any) -> Any:
        self._built_menu()
        return super().getContextMenus(event)


class Series:
    """A curve's points in growable numpy buffers (step, value, wall time): a redraw hands pyqtgraph views,
    never copies a list. The pyqtgraph items are made only when the series is first drawn."""

    def __init__(self, name: str = "", task: int = 0) -> None:
        self.name = name  # legend text
        self.key = name  # its label in a MetricPlot
        self.task = task
        self.color = ""  # "" = the plot picks one
        self.visible = True
        self._x = np.empty(256)
        self._y = np.empty(256)
        self._w = np.empty(256)
        self.n = 0
        self.dirty = False
        self.curve: pg.PlotDataItem | None = None
        self.in_legend = False
        self.raw: pg.PlotDataItem | None = None  # the unsmoothed curve, faint behind the smoothed one
        self.shown_x = np.empty(0)  # what was drawn last (in the plot's x mode, smoothed): the read-out's data
        self.shown_y = np.empty(0)
        self.shown_sorted = True

    @property
    def x(self) -> np.ndarray:
        """Steps."""
        return self._x[: self.n]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self.n]

    @property
    def wall(self) -> np.ndarray:
        """Wall-clock times (unix seconds; NaN where the source had none)."""
        return self._w[: self.n]

    def extend(self, xs: Points, ys: Points, walls: Points | None = None) -> None:
        """A batch of points (one message's worth) into the buffers in one go."""
        n = self.n + len(xs)
        if self.n == 0 and n > len(self._x):  # a new series' first batch (a replayed history): its own buffers
            self._x, self._y = np.array(xs, dtype=float), np.array(ys, dtype=float)
            self._w = np.full(n, np.nan) if walls is None else np.array(walls, dtype=float)
            self.n = n
            self.dirty = True
            return
        if n > len(self._x):
            size = max(n, 2 * len(self._x))
            grow = np.empty(size - self.n)
            self._x = np.concatenate([self._x[: self.n], grow])
            self._y = np.concatenate([self._y[: self.n], grow])
            self._w = np.concatenate([self._w[: self.n], grow])
        self._x[self.n : n], self._y[self.n : n] = xs, ys
        self._w[self.n : n] = np.nan if walls is None else walls
        self.n = n
        self.dirty = True

    def replace(self, xs: Iterable[float], ys: Iterable[float], walls: Iterable[float] | None = None) -> None:
        self._x = np.array(list(xs), dtype=float)
        self._y = np.array(list(ys), dtype=float)
        self._w = np.full(len(self._x), np.nan) if walls is None else np.array(list(walls), dtype=float)
        self.n = len(self._x)
        self.dirty = True


def plot_axes() -> dict[str, pg.AxisItem]:
    return {
        "left": ValueAxis(orientation="left"),
        "bottom": Axis(orientation="bottom"),
        "top": Axis(orientation="top"),
        "right": Axis(orientation="right"),
    }


def new_plot_item(axes: dict[str, pg.AxisItem] | None = None) -> pg.PlotItem:
    item = pg.PlotItem(viewBox=LazyMenuView(), axisItems=axes or plot_axes())
    for side in ("top", "right"):  # PlotItem shows every axis it is given
        item.hideAxis(side)
    return item


class MetricPlot(pg.PlotWidget):  # type: ignore[misc]
    """Curves keyed by a label ("test_accuracy", "task 1"); `points` counts every point held.

    View options (PlotToolbar sets them): `smoothing` (EMA weight, 0 = off), `log_y`, `x_mode`. Hovering shows a
    vertical line and each drawn series' value at the nearest x (`hover_text`)."""

    def __init__(
        self,
        parent: QWidget | None = None,
        x_label: str = "step",
        symbols: bool = False,
        plot_item: pg.PlotItem | None = None,
    ) -> None:
        """`plot_item`: one made beforehand by `new_plot_item` (MetricGrid makes a plot over several event-loop
        turns)."""
        super().__init__(parent, plotItem=plot_item or new_plot_item())
        self.series: dict[str, Series] = {}
        self.symbols = symbols
        self.smoothing = 0.0
        self.log_y = False
        self.x_mode = STEP
        self.epoch_map: EpochMap | None = None
        self.x_label = x_label
        self.hover_text = ""
        self._holding = False  # a budgeted flush (over several turns): the plot is not repainted until it is done
        self._legend_stale = False  # entries were added without relaying the legend out (see _legend_add)
        self._settled = False  # a budgeted flush has drawn every curve and set the view range: repaint next
        self._orphans: list[pg.PlotDataItem] = []  # items of series let go of (`detach`), removed by `clear_all`
        light_grid(self.plotItem)
        self.plotItem.setLabel("bottom", x_label)
        self.legend = self.plotItem.addLegend(offset=(10, 10), labelTextSize="8pt", verSpacing=-6)
        self._colors = (pg.getConfigOption("foreground"), pg.getConfigOption("background"))
        self._crosshair: pg.InfiniteLine | None = None  # the hover line and read-out, made on the first hover
        self._readout: pg.TextItem | None = None
        self.hover_proxy = pg.SignalProxy(self.scene().sigMouseMoved, rateLimit=30, slot=self.mouse_moved)
        self._timer = QTimer(self)
        self._timer.setInterval(1000 // REDRAW_HZ)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    @property
    def points(self) -> int:
        return sum(s.n for s in self.series.values())

    @property
    def crosshair(self) -> pg.InfiniteLine:
        if self._crosshair is None:
            self._make_hover_items()
        assert self._crosshair is not None
        return self._crosshair

    @property
    def readout(self) -> pg.TextItem:
        if self._readout is None:
            self._make_hover_items()
        assert self._readout is not None
        return self._readout

    def _make_hover_items(self) -> None:
        foreground, background = self._colors = (pg.getConfigOption("foreground"), pg.getConfigOption("background"))
        self._crosshair = pg.InfiniteLine(
            angle=90, movable=False, pen=pg.mkPen(foreground, width=1, style=Qt.PenStyle.DashLine)
        )
        fill = pg.mkBrush(translucent(background, 200))
        self._readout = pg.TextItem(color=foreground, fill=fill, anchor=(0, 0))
        for item in (self._crosshair, self._readout):
            item.setZValue(100)
            item.hide()
            self.plotItem.addItem(item, ignoreBounds=True)

    def _series(self, label: str) -> Series:
        series = self.series.get(label)
        if series is None:
            series = self.series[label] = Series(label)
        return series

    def adopt(self, label: str, series: Series) -> None:
        """Draw a series someone else fills (CurvesPanel keeps every task's buffers, shown or not)."""
        if self.series.get(label) is not series:
            self.series[label] = series
            series.curve = series.raw = None
            series.dirty = True

    def add_points(self, label: str, xs: Points, ys: Points, walls: Points | None = None) -> None:
        self._series(label).extend(xs, ys, walls)

    def set_series(self, label: str, xs: Iterable[float], ys: Iterable[float]) -> None:
        self._series(label).replace(xs, ys)

    def restyle(self, label: str, name: str, color: str, visible: bool) -> None:
        """A series' legend text, colour and visibility; its items are remade on the next flush (or dropped)."""
        series = self.series[label]
        if (series.name, series.color, series.visible) == (name, color, visible):
            return
        self._drop_items(series)
        series.name, series.color, series.visible = name, color, visible
        series.dirty = True

    def _legend_add(self, curve: pg.PlotDataItem, name: str) -> None:
        """A legend entry; in a budgeted flush, without the relayout the legend does after each entry added (it is
        relaid once, when the flush is done)."""
        legend = self.legend
        if not self._holding:
            legend.addItem(curve, name)
            return
        size, legend.size = legend.size, (0, 0)  # LegendItem.updateSize does nothing while it has a fixed size
        try:
            legend.addItem(curve, name)
        finally:
            legend.size = size
        self._legend_stale = True

    def _drop_items(self, series: Series) -> None:
        for item in (series.curve, series.raw):
            if item is not None:
                self.plotItem.removeItem(item)
        if series.in_legend and series.curve is not None:
            self.legend.removeItem(series.curve)
        series.curve = series.raw = None
        series.in_legend = False

    def reorder(self, labels: list[str]) -> None:
        """Put these series first (legend order = draw order): their items are remade on the next flush."""
        for series in self.series.values():
            self._drop_items(series)
            series.dirty = True
        first = {label: self.series[label] for label in labels if label in self.series}
        self.series = {**first, **{k: v for k, v in self.series.items() if k not in first}}

    def drawn(self) -> list[Series]:
        return [s for s in self.series.values() if s.visible and s.curve is not None]

    # ---- view options

    def set_smoothing(self, weight: float) -> None:
        self.smoothing = min(max(float(weight), 0.0), 0.999)
        self._redraw()

    def set_log_y(self, on: bool) -> None:
        self.log_y = on
        self.plotItem.setLogMode(x=False, y=on)
        self.plotItem.enableAutoRange()

    def set_x_mode(self, mode: str) -> None:
        """Step, epoch (via `epoch_map`), wall time (a clock axis) or seconds since each series' first point."""
        if mode not in X_LABELS:
            raise ValueError(f"unknown x axis mode {mode!r}")
        if (mode == WALL) != (self.x_mode == WALL):
            axis = DateAxis(orientation="bottom") if mode == WALL else Axis(orientation="bottom")
            self.plotItem.setAxisItems({"bottom": axis})
            light_grid(self.plotItem)
        self.x_mode = mode
        self.plotItem.setLabel("bottom", X_LABELS[mode] if self.x_label else "")
        self._redraw()
        self.plotItem.enableAutoRange()

    def reset_view(self) -> None:
        self.plotItem.enableAutoRange()
        self.plotItem.autoRange()

    def _redraw(self) -> None:
        for series in self.series.values():
            series.dirty = True
        self.flush()

    # ---- drawing

    def x_data(self, series: Series) -> np.ndarray:
        if self.x_mode == WALL:
            return series.wall
        if self.x_mode == RELATIVE:
            wall = series.wall
            finite = wall[np.isfinite(wall)]
            return wall - (finite[0] if len(finite) else 0.0)
        if self.x_mode == EPOCH and self.epoch_map is not None:
            epochs = self.epoch_map(series.task, series.x)
            if epochs is not None:
                return epochs
        return series.x

    def _tick(self) -> None:
        """The periodic redraw, skipped while the plot is not on screen (another tab): showEvent catches up."""
        if self.isVisible():
            _redrawer().add(self)

    def showEvent(self, event: QEvent) -> None:
        super().showEvent(event)
        _redrawer().add(self)

    def flush(self, deadline: float = math.inf) -> bool:
        """Draw what changed; past `deadline` (time.perf_counter()) stop after the curve being drawn and return
        False: the rest is left for the next turn of the event loop."""
        drew, done = False, True
        self._holding = deadline != math.inf
        for series in list(self.series.values()):
            if series.dirty and series.visible:
                if drew and time.perf_counter() > deadline:
                    done = False
                    break
                self._draw(series)
                drew = True
        if drew:
            self._settled = False
        if done and drew and self._holding and (self._legend_stale or time.perf_counter() > deadline):
            # out of time, or new curves (a sweep's first draw): the view range and the legend in a turn of their
            # own (after a turn of curves, they were one 15-25 ms stall)
            done = False
        if not done:
            # curves made over several turns appear together: each turn would repaint the plot (axes, grid, the
            # curves so far, legend: 5-15 ms) for a picture about to change again; it is repainted once, when done
            if self.updatesEnabled():
                self.setUpdatesEnabled(False)
            return False
        if self._holding and not self.updatesEnabled() and not self._settled:
            # every curve is in: the view range and the legend now, the repaint a turn later (together they
            # were one 20 ms stall)
            self._finish()
            self._settled = True
            return False
        if not self._settled and (drew or not self.updatesEnabled()):
            self._finish()
        self._settled = False
        if not self.updatesEnabled():
            self.setUpdatesEnabled(True)
        return True

    def _finish(self) -> None:
        if self._legend_stale:
            self._legend_stale = False
            self.legend.updateSize()
        self._settle_range()

    def _settle_range(self) -> None:
        """Let the auto range follow the curves now, not in the paint: a range changed while painting repaints.
        A clipped (big) curve's bounds follow the view range, which follows its bounds: a few rounds here are
        one paint, not one per round (a 100k-point curve repainted 5 times, 7-14 ms each)."""
        view, item = self.plotItem.vb, self.plotItem
        axes = [item.getAxis(side) for side in ("left", "bottom")]
        for _ in range(4):
            for _ in range(8):
                self.scene().prepareForPaint()
                if not getattr(view, "_autoRangeNeedsUpdate", False):
                    break
            for axis in axes:
                if isinstance(axis, _SameLabel):
                    axis.prepare_picture()
            item.layout.activate()  # an axis its labels widened is resized now, not at the next paint
            if not getattr(view, "_autoRangeNeedsUpdate", False) and all(a.picture is not None for a in axes):
                break

    def _draw(self, series: Series) -> None:
        x = self.x_data(series)
        y = ema(series.y, self.smoothing) if self.smoothing > 0 else series.y
        if series.curve is None:
            color = series.color or PALETTE[len(self.drawn()) % len(PALETTE)]
            series.color = color
            kwargs: dict[str, Any] = {"pen": pg.mkPen(color, width=2)}
            if self.symbols:
                kwargs.update(symbol="o", symbolSize=5, symbolBrush=color, symbolPen=None)
            series.curve = self.plotItem.plot([], [], **kwargs)
            if len(self.legend.items) < LEGEND_MAX:  # relaying out a legend costs O(entries) per entry added
                self._legend_add(series.curve, series.name)
                series.in_legend = True
        if self.smoothing > 0:
            if series.raw is None:
                faint = translucent(series.color, 60)
                series.raw = self.plotItem.plot([], [], pen=pg.mkPen(faint, width=1))
                series.raw.setZValue(-1)
            series.raw.setData(x, series.y)
        elif series.raw is not None:
            self.plotItem.removeItem(series.raw)
            series.raw = None
        big = series.n >= CLIP_FROM
        if series.curve.opts["clipToView"] != big:
            series.curve.setDownsampling(auto=big, method="peak")
            series.curve.setClipToView(big)
        if not self.symbols:  # a lone point (a final score) would not show as a line
            symbol = "o" if series.n < 3 else None
            if series.curve.opts["symbol"] != symbol:  # each setSymbol redoes the curve's display data
                series.curve.setSymbol(symbol)
        series.curve.setData(x, y)
        series.shown_x, series.shown_y = x, y
        series.shown_sorted = bool(len(x) < 2 or np.all(np.diff(x) >= 0))
        series.dirty = False

    # ---- hover read-out

    def mouse_moved(self, event: tuple[QPointF] | QPointF) -> None:
        """The scene's mouse position (through a rate-limiting SignalProxy, which passes a tuple)."""
        pos = event[0] if isinstance(event, tuple) else event
        view = self.plotItem.vb
        if not view.sceneBoundingRect().contains(pos):
            self.hide_hover()
            return
        self.hover_at(view.mapSceneToView(pos).x())

    def hover_at(self, x: float) -> str:
        """Put the crosshair at view x and list each drawn series' value at its nearest point."""
        self.flush()
        lines, html = [], []
        head = f"{X_LABELS[self.x_mode]} {self._x_text(x)}"
        drawn = self.drawn()
        for series in drawn[:LEGEND_MAX]:
            i = nearest(series.shown_x, x, series.shown_sorted)
            if i < 0:
                continue
            value = format_value(float(series.shown_y[i]))
            raw = f" (raw {format_value(float(series.y[i]))})" if self.smoothing > 0 else ""
            lines.append(f"{series.name}: {value}{raw}")
            html.append(f"<span style='color:{series.color}'>&#9632;</span> {series.name}: <b>{value}</b>{raw}")
        if not lines:
            self.hide_hover()
            return ""
        if len(drawn) > LEGEND_MAX:
            lines.append(f"… {len(drawn) - LEGEND_MAX} more")
            html.append(lines[-1])
        self.hover_text = "\n".join([head, *lines])
        self._follow_theme()
        self.readout.setHtml(f"<div style='font-size:8pt'>{head}<br>{'<br>'.join(html)}</div>")
        (x0, x1), (_, y1) = self.plotItem.vb.viewRange()
        self.readout.setAnchor((1, 0) if x > (x0 + x1) / 2 else (0, 0))
        self.readout.setPos(x, y1)
        self.crosshair.setPos(x)
        self.crosshair.show()
        self.readout.show()
        return self.hover_text

    def _follow_theme(self) -> None:
        """The read-out in the current theme's colours (theme.restyle_plots recolours axes and legends only)."""
        colors = (pg.getConfigOption("foreground"), pg.getConfigOption("background"))
        if colors == self._colors:
            return
        self._colors = colors
        foreground, background = colors
        self.crosshair.setPen(pg.mkPen(foreground, width=1, style=Qt.PenStyle.DashLine))
        self.readout.setColor(foreground)
        self.readout.fill = pg.mkBrush(translucent(background, 200))

    def _x_text(self, x: float) -> str:
        if self.x_mode == WALL:
            import datetime

            return datetime.datetime.fromtimestamp(x).strftime("%H:%M:%S") if math.isfinite(x) else ""
        if self.x_mode == STEP:
            return str(round(x))
        return f"{x:.4g}"

    def hide_hover(self) -> None:
        self.hover_text = ""
        for item in (self._crosshair, self._readout):
            if item is not None:
                item.hide()

    def leaveEvent(self, event: QEvent) -> None:
        self.hide_hover()
        super().leaveEvent(event)

    # ---- export

    def export(self, path: str | Path) -> Path:
        """The plot as PNG (or any image suffix Qt writes) or SVG, chosen by the suffix.

        SVG is drawn with Qt's own SVG generator: pyqtgraph's SVGExporter fails on the paths Qt 6.10+ writes
        (pyqtgraph issue #3485)."""
        path = Path(path)
        _check_writable(path)
        self.flush()
        self.hide_hover()
        if path.suffix.lower() == ".svg":
            size = self.size() if self.width() >= 100 else QSize(800, 500)
            if size != self.size():
                self.resize(size)
            generator = QSvgGenerator()
            generator.setFileName(str(path))
            generator.setSize(size)
            generator.setViewBox(QRect(QPoint(0, 0), size))
            generator.setTitle(self.plotItem.titleLabel.text or path.stem)
            painter = QPainter(generator)
            try:
                self.render(painter)
            finally:
                painter.end()
        else:
            exporter = pg_exporters.ImageExporter(self.plotItem)
            if exporter.parameters()["width"] < 400:  # a plot never shown has no size yet
                exporter.parameters()["width"] = 800
            exporter.export(str(path))
        # Neither QSvgGenerator nor pyqtgraph's ImageExporter says when it could not write the file
        if not path.is_file() or path.stat().st_size == 0:
            raise OSError(f"cannot write {path}: nothing was written (disk full, or a format Qt cannot write?)")
        return path

    def detach(self) -> None:
        """Let go of every series at once (their buffers are someone else's: a later plot may adopt them); their
        items stay in this plot, hidden with it, until `clear_all`."""
        for series in self.series.values():
            self._orphans.extend(item for item in (series.curve, series.raw) if item is not None)
            series.curve = series.raw = None
            series.in_legend = False
            series.dirty = True
        self.series = {}
        self._legend_stale = False
        self._settled = False

    def clear_all(self) -> None:
        self.legend.clear()  # at once: removing entries one by one relays the legend out after each
        for series in self.series.values():
            series.in_legend = False
            self._drop_items(series)
        for item in self._orphans:
            self.plotItem.removeItem(item)
        self._orphans = []
        self.series.clear()
        self.hide_hover()
        self._legend_stale = False
        self._settled = False
        if not self.updatesEnabled():
            self.setUpdatesEnabled(True)


class _Redrawer(QObject):
    """The plots' periodic redraws, a few curves per event-loop turn (DRAW_BUDGET_S): opening a sweep makes 30
    curves in three new plots at once, about 5 ms each, which in one go froze the window for 150 ms."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: dict[MetricPlot, None] = {}
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DRAW_GAP_MS)
        self.timer.timeout.connect(self._run)

    def add(self, plot: MetricPlot) -> None:
        if any(s.dirty and s.visible for s in plot.series.values()):
            self.queue[plot] = None
            if not self.timer.isActive():
                self.timer.start()

    def _run(self) -> None:
        """One plot's slice per turn: a plot done here is repainted in the next turn, and another plot's slice
        beside that repaint (or its view range settled after this one's last curves) was one stall."""
        deadline = time.perf_counter() + DRAW_BUDGET_S
        while self.queue:
            plot = next(iter(self.queue))
            if not shiboken6.isValid(plot) or not plot.isVisible():
                del self.queue[plot]
                continue
            if plot.flush(deadline):
                del self.queue[plot]
            break
        if self.queue:
            self.timer.start()


_redrawers: list[_Redrawer] = []


def _redrawer() -> _Redrawer:
    if not _redrawers:
        _redrawers.append(_Redrawer())
    return _redrawers[0]


def drawing() -> bool:
    """Whether the periodic redraw has curves left to draw (over the next turns of the event loop)."""
    return bool(_redrawers and _redrawers[0].queue)


def nearest(xs: np.ndarray, x: float, is_sorted: bool) -> int:
    """Index of the point of xs nearest to x (-1 if none is finite)."""
    if len(xs) == 0:
        return -1
    if is_sorted and not np.isnan(xs[0]) and not np.isnan(xs[-1]):
        i = int(np.searchsorted(xs, x))
        if i <= 0:
            return 0
        if i >= len(xs):
            return len(xs) - 1
        return i if xs[i] - x < x - xs[i - 1] else i - 1
    distance = np.abs(xs - x)
    if np.isnan(distance).all():
        return -1
    return int(np.nanargmin(distance))


class MetricGrid(QWidget):
    """One small plot per metric (loss and accuracy never share an axis), each with its toolbar above it."""

    def __init__(self, columns: int = 2, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.columns = columns
        self.plots: dict[str, MetricPlot] = {}
        self.panes: dict[str, QWidget] = {}
        self.toolbars: dict[str, Any] = {}  # metric -> PlotToolbar
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.only = ""  # show just this metric ("" = all)
        self.epoch_map: EpochMap | None = None
        self.epoch_reason = ""  # why the epoch x axis is off ("" = it is on)
        # a metric's toolbar settings (smoothing, log y, x axis), kept for its plot in the next job opened
        self.remembered: dict[str, tuple[float, bool, str]] = {}
        self.spare: list[tuple[MetricPlot, QWidget, Any]] = []  # emptied panes (plot, pane, toolbar) to reuse
        self.used: list[tuple[MetricPlot, QWidget, Any]] = []  # removed panes not emptied yet (see `prepare`)
        self._making: Iterator[Pane | None] | None = None  # a pane being made a step at a time (see `prepare`)

    @property
    def points(self) -> int:
        return sum(p.points for p in self.plots.values())

    def _new_pane(self) -> Pane:
        for pane in self._pane_steps():
            if pane is not None:
                return pane
        raise AssertionError("unreachable")

    def _pane_steps(self) -> Iterator[Pane | None]:
        """A new pane in steps of a few milliseconds each (a whole one costs 35-70 ms of the GUI thread): None
        after each step but the last, which yields the pane."""
        from tensorfleet_desktop.ui.plot_toolbar import PlotToolbar  # it imports this module

        axes = plot_axes()
        yield None
        item = new_plot_item(axes)
        yield None
        plot = MetricPlot(plot_item=item)
        plot.setMinimumHeight(180)
        yield None
        pane = QWidget()
        layout = QVBoxLayout(pane)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        toolbar = PlotToolbar(plot)
        layout.addWidget(toolbar)
        layout.addWidget(plot, 1)
        yield plot, pane, toolbar

    def prepare(self, wanted: int = 1) -> bool:
        """One step towards `wanted` panes ready in `spare`, for the caller to spread over event-loop turns before
        `plot_for` needs them (job_detail feeds a metric's history once its pane is ready): empties one removed
        pane, or takes a new one a step further. False when there are enough (nothing was done)."""
        if len(self.spare) >= wanted:
            return False
        if self.used:
            self._empty(*self.used.pop())
            return True
        if self._making is None:
            self._making = self._pane_steps()
        made = next(self._making)
        if made is not None:
            self._making = None
            self.spare.append(made)
        return True

    def _empty(self, plot: MetricPlot, pane: QWidget, toolbar: Any) -> None:
        plot.clear_all()
        self.spare.append((plot, pane, toolbar))

    def _take_pane(self) -> Pane:
        if self.spare:
            return self.spare.pop()
        if self.used:
            self._empty(*self.used.pop())
            return self.spare.pop()
        if self._making is not None:  # finish the pane begun
            for made in self._making:
                if made is not None:
                    self._making = None
                    return made
        return self._new_pane()

    def plot_for(self, metric: str) -> MetricPlot:
        """The metric's plot, made (with its toolbar) the first time."""
        plot = self.plots.get(metric)
        if plot is None:
            # a pane of a job shown before if there is one: making a plot costs 35-70 ms (pyqtgraph's items)
            plot, pane, toolbar = self._take_pane()
            self.plots[metric], self.panes[metric], self.toolbars[metric] = plot, pane, toolbar
            plot.plotItem.setTitle(metric, size="10pt")
            plot.epoch_map = self.epoch_map
            toolbar.name = metric
            toolbar.set_epoch_available(not self.epoch_reason, self.epoch_reason)
            toolbar.apply(*self.remembered.get(metric, (0.0, False, STEP)))
            plot.plotItem.enableAutoRange()  # not reset_view: autoRange() on no data turns auto range off
            n = len(self.plots) - 1
            self.grid.addWidget(pane, n // self.columns, n % self.columns)
            pane.setVisible(not self.only or self.only == metric)
        return plot

    def add_points(self, metric: str, label: str, xs: Points, ys: Points, walls: Points | None = None) -> None:
        plot = self.plot_for(metric)
        new_series = label not in plot.series
        plot.add_points(label, xs, ys, walls)
        if new_series:  # a legend only says something once there is more than the metric itself
            plot.legend.setVisible(len(plot.series) > 1 or label != metric)

    def set_epoch_available(self, reason: str) -> None:
        """ "" turns the epoch x axis on in every toolbar; otherwise `reason` says why it is off."""
        if reason == self.epoch_reason:
            return
        self.epoch_reason = reason
        for toolbar in self.toolbars.values():
            toolbar.set_epoch_available(not reason, reason)

    def remove(self, metric: str) -> None:
        plot = self.plots.pop(metric, None)
        if plot is None:
            return
        toolbar = self.toolbars.get(metric)
        wanted = toolbar.wanted_x if toolbar is not None else plot.x_mode
        self.remembered[metric] = (plot.smoothing, plot.log_y, wanted)
        plot.detach()  # the buffers live on (CurvesPanel's), their items go
        pane = self.panes.pop(metric)
        self.toolbars.pop(metric, None)
        self.grid.removeWidget(pane)
        if len(self.spare) + len(self.used) < SPARE_PANES and toolbar is not None:
            pane.hide()  # emptied later (`prepare`, `plot_for`): a sweep's plot holds 30 items and a legend
            self.used.append((plot, pane, toolbar))
        else:
            pane.deleteLater()
        for n, other in enumerate(self.panes.values()):
            self.grid.addWidget(other, n // self.columns, n % self.columns)

    def show_only(self, metric: str) -> None:
        self.only = metric
        for name, pane in self.panes.items():
            pane.setVisible(not metric or metric == name)

    def clear_all(self) -> None:
        self.setUpdatesEnabled(False)  # one relayout, not one per pane removed
        try:
            for metric in list(self.plots):
                self.remove(metric)
        finally:
            self.setUpdatesEnabled(True)


class BarChart(pg.PlotWidget):  # type: ignore[misc]
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bars: pg.BarGraphItem | None = None
        light_grid(self.plotItem)

    def show_bars(self, labels: list[str], values: list[float], title: str) -> None:
        if self.bars is not None:
            self.plotItem.removeItem(self.bars)
        self.bars = pg.BarGraphItem(x=list(range(len(values))), height=values, width=0.6, brush=PALETTE[0])
        self.plotItem.addItem(self.bars)
        self.plotItem.getAxis("bottom").setTicks([list(enumerate(labels))])
        self.plotItem.setTitle(title)
