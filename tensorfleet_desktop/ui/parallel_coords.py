"""A sweep's trials as parallel coordinates: one vertical axis per swept parameter plus the score, one polyline per
trial coloured by its score rank, the best trial drawn on top.

Hundreds of trials are drawn by a fixed handful of curve items (one per colour bucket, each a single path broken
between trials by a `connect` array): measured offscreen, 200 items of one trial each took ~120 ms to create and
~100 ms more before the first paint; the buckets take a few ms. Lines are 1 px wide: an antialiased 1.4 px pen made
the same paint ~50x slower. `ParamAxis` (how a parameter's values map onto an axis) is shared with the scatter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtGui import QColor, QFontMetrics, QResizeEvent
from PySide6.QtWidgets import QWidget

from tensorfleet_desktop.ui.formatting import compact, is_number

BUCKETS = 8  # colour steps of the score colormap: one curve item each
UNSCORED = "#8c959f"  # running, failed and pruned trials: their parameters, no score
BEST = "#f0883e"  # the best trial, in the table, the scatter and here
RIGHT_MARGIN = 0.4  # plot units right of the score axis: its tick labels are drawn there
WIDE = 100.0  # a positive range wider than this ratio is shown on a log scale
MAX_CATEGORIES = 40  # labels drawn on a categorical axis (positions are kept for all)


def category_label(value: Any) -> str:
    """A choice as the sweep's search space writes it (`null` for None), so trial values find their place."""
    return "null" if value is None else str(value)


@dataclass
class ParamAxis:
    """Where a parameter's values sit: category positions, or a (log-)linear range scaled to 0..1."""

    name: str
    categories: list[str] | None = None  # None: numeric
    log: bool = False
    low: float = 0.0  # numeric bounds, log10 already applied when `log`
    high: float = 1.0
    _slots: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, name: str, space: Any, values: Sequence[Any]) -> ParamAxis:
        """From the search space's text (`a,b,c`, `int:LO:HI`, `float:LO:HI[:log]`) and the values trials got:
        numeric bounds cover both, a positive range over 100x wide is shown in log."""
        text = str(space) if space is not None else ""
        parts = text.split(":")
        ranged = parts[0] in ("int", "float") and len(parts) in (3, 4)
        choices = [] if ranged or not text else [c.strip() for c in text.split(",")]
        numbers = [float(v) for v in values if is_number(v)]
        bounds = _floats(parts[1:3]) if ranged else _floats(choices)
        if ranged or (choices and len(bounds) == len(choices)) or (not choices and len(numbers) == _known(values)):
            bounds += numbers
            low, high = (min(bounds), max(bounds)) if bounds else (0.0, 1.0)
            log = low > 0 and ((ranged and parts[-1] == "log") or high / low > WIDE)
            if log:
                low, high = math.log10(low), math.log10(high)
            return cls(name, None, log, low, high)
        categories = list(choices)
        for value in values:
            label = category_label(value)
            if label not in categories and value is not None:
                categories.append(label)
        axis = cls(name, categories)
        axis._slots = {c: i for i, c in enumerate(categories)}
        return axis

    def value(self, raw: Any) -> float:
        """The value in plot units: the category's index, log10 of a log axis, or the number; NaN when unknown."""
        if self.categories is not None:
            slot = self._slots.get(category_label(raw))
            return math.nan if slot is None else float(slot)
        if not is_number(raw):
            return math.nan
        if self.log:
            return math.log10(raw) if raw > 0 else math.nan
        return float(raw)

    def position(self, raw: Any) -> float:
        """0..1 along a parallel-coordinates axis (categories evenly spaced, half a step from either end)."""
        v = self.value(raw)
        if math.isnan(v):
            return math.nan
        if self.categories is not None:
            return (v + 0.5) / len(self.categories)
        span = self.high - self.low
        return 0.5 if span <= 0 else (v - self.low) / span

    def ticks(self, count: int = 5) -> list[tuple[float, str]]:
        """(position 0..1, label) pairs for the axis' labels."""
        if self.categories is not None:
            n = len(self.categories)
            step = max(1, math.ceil(n / MAX_CATEGORIES))
            return [((i + 0.5) / n, c) for i, c in enumerate(self.categories) if i % step == 0]
        if self.high <= self.low:
            return [(0.5, compact(10**self.low if self.log else self.low))]
        if self.log:
            first, last = math.ceil(self.low - 1e-9), math.floor(self.high + 1e-9)
            decades = list(range(first, last + 1))
            if len(decades) > count:
                step = math.ceil(len(decades) / count)
                decades = decades[::step]
            points = [float(d) for d in decades] or [self.low, self.high]
        else:
            points = list(np.linspace(self.low, self.high, count))
        span = self.high - self.low
        return [((p - self.low) / span, compact(10**p if self.log else p)) for p in points]

    def scale_name(self) -> str:
        return f"{self.name} (log)" if self.log else self.name


def score_colors(n: int = BUCKETS) -> list[str]:
    """The colour of each score bucket, worst to best (viridis without its darkest end, readable on both themes)."""
    cmap = pg.colormap.get("viridis")
    return [cmap.map(0.2 + 0.8 * i / max(1, n - 1), mode="qcolor").name() for i in range(n)]


class ParallelCoordinates(pg.PlotWidget):  # type: ignore[misc]
    """Trials across parameter axes and the score axis; `set_trials` redraws with a fixed number of items. A click
    near a line emits `line_clicked` with that trial's position in the lists `set_trials` was given."""

    line_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.axes: list[ParamAxis] = []
        self.grid = np.empty((0, 1))  # trial x axis, 0..1 (NaN: unknown)
        self.highlighted: int | None = None
        item = self.plotItem
        item.hideAxis("left")
        # A bottom label may reach past the axis' ends (the first axis sits at the plot's edge); the x range below
        # leaves room for it, so pyqtgraph must not drop it for overlapping its bounding rectangle.
        item.getAxis("bottom").setStyle(hideOverlappingLabels=False)
        self._n_axes = 1
        item.setMouseEnabled(x=False, y=False)
        item.hideButtons()
        item.setMenuEnabled(False)
        self.axis_lines = pg.PlotCurveItem(pen=pg.mkPen("#8c959f", width=1))
        self.axis_lines.setZValue(-10)
        item.addItem(self.axis_lines)
        self.unscored = pg.PlotCurveItem(pen=pg.mkPen(UNSCORED, width=1))
        self.unscored.setZValue(-5)
        item.addItem(self.unscored)
        self.colors = score_colors()
        self.buckets: list[pg.PlotCurveItem] = []
        for i, color in enumerate(self.colors):
            curve = pg.PlotCurveItem(pen=pg.mkPen(color, width=1))  # 1 px (see the module docstring)
            curve.setZValue(i)  # better trials over worse ones
            item.addItem(curve)
            self.buckets.append(curve)
        self.best = pg.PlotCurveItem(pen=pg.mkPen(BEST, width=3.5))
        self.best.setZValue(100)
        item.addItem(self.best)
        self.selected = pg.PlotCurveItem()  # the trial selected in the table
        self.selected.setZValue(150)
        item.addItem(self.selected)
        self.scene().sigMouseClicked.connect(self._scene_clicked)
        self.labels: list[pg.TextItem] = []  # axis tick labels: a few per axis, never per trial
        self._labelled: list[tuple[int, float, str]] = []
        self._label_fill = QColor()

    def clear_trials(self) -> None:
        self.grid = np.empty((0, 1))
        self.highlighted = None
        for curve in self.curve_items():
            curve.setData([], [])
        self._label_axes([])
        self.plotItem.getAxis("bottom").setTicks([[]])

    def curve_items(self) -> list[pg.GraphicsObject]:
        return [self.axis_lines, self.unscored, *self.buckets, self.best, self.selected]

    def highlight(self, position: int | None) -> None:
        """Draws one trial (a position in the last `set_trials` lists) over the others; None: none."""
        self.highlighted = position
        if position is None or not 0 <= position < len(self.grid):
            self.selected.setData([], [])
            return
        self.selected.setPen(pg.mkPen(pg.getConfigOption("foreground"), width=2.5))
        _draw(self.selected, np.arange(self.grid.shape[1], dtype=float), self.grid[position : position + 1])

    def nearest(self, x: float, y: float, tolerance: float = 0.04) -> int | None:
        """The trial whose line passes closest to (x, y) in plot units, if within `tolerance` of the axis height."""
        grid = self.grid
        if len(grid) == 0 or grid.shape[1] < 2:
            return None
        i = int(np.clip(math.floor(x), 0, grid.shape[1] - 2))
        t = float(np.clip(x - i, 0.0, 1.0))
        with np.errstate(invalid="ignore"):
            distance = np.abs(grid[:, i] * (1 - t) + grid[:, i + 1] * t - y)
        distance[np.isnan(distance)] = np.inf
        best = int(np.argmin(distance))
        return best if distance[best] <= tolerance else None

    def _scene_clicked(self, event: Any) -> None:
        point = self.plotItem.vb.mapSceneToView(event.scenePos())
        position = self.nearest(point.x(), point.y())
        if position is not None:
            self.line_clicked.emit(position)

    def set_trials(
        self,
        axes: Sequence[ParamAxis],
        params: Sequence[dict[str, Any]],
        scores: Sequence[float | None],
        best: int | None,
        minimize: bool = False,
    ) -> None:
        """`params[i]` and `scores[i]` belong to one trial; `best` is its position in them (or None). The last
        axis is the score; colours go by rank from worst (dark) to best (bright) whichever the direction."""
        self.axes = list(axes)
        n_axes = len(self.axes) + 1
        valid = [float(s) for s in scores if s is not None and math.isfinite(s)]
        lo, hi = (min(valid), max(valid)) if valid else (0.0, 1.0)
        score_axis = ParamAxis("score", None, False, lo, hi)
        grid = np.full((len(params), n_axes), np.nan)
        for row, (values, score) in enumerate(zip(params, scores, strict=True)):
            for column, axis in enumerate(self.axes):
                grid[row, column] = axis.position(values.get(axis.name))
            if score is not None:
                grid[row, -1] = score_axis.position(score)
        xs = np.arange(n_axes, dtype=float)
        self.grid = grid
        scored = ~np.isnan(grid[:, -1])
        bucket = np.zeros(len(params), dtype=int)
        if scored.any():  # colour by rank, so one failed trial's outlier score does not paint the rest alike
            ranks = np.argsort(np.argsort(grid[scored, -1], kind="stable"), kind="stable")
            goodness = ranks / max(1, len(ranks) - 1)
            bucket[scored] = np.clip(((1.0 - goodness if minimize else goodness) * BUCKETS).astype(int), 0, BUCKETS - 1)
        not_best = np.ones(len(params), dtype=bool)
        if best is not None and 0 <= best < len(params):
            not_best[best] = False
            _draw(self.best, xs, grid[best : best + 1])
        else:
            self.best.setData([], [])
        _draw(self.unscored, xs, grid[~scored & not_best])
        for i, curve in enumerate(self.buckets):
            _draw(curve, xs, grid[scored & not_best & (bucket == i)])
        self.highlight(self.highlighted)
        self.axis_lines.setData(np.repeat(xs, 2), np.tile([0.0, 1.0], n_axes), connect="pairs")
        self._label_axes([*self.axes, score_axis])
        self.plotItem.getAxis("bottom").setTicks(
            [[(float(i), a.scale_name()) for i, a in enumerate(self.axes)] + [(float(n_axes - 1), "score")]]
        )
        self._n_axes = n_axes
        self._fit_x_range()
        self.plotItem.setYRange(-0.04, 1.04, padding=0)

    def _fit_x_range(self) -> None:
        """Room left of the first axis for half its bottom label (`learning_rate (log)` is wider than the 0.15
        units the plot had there): the margin in units follows the plot's width, so it is redone on resize."""
        axes = getattr(self, "axes", [])  # a resize may come before __init__ has set it
        first = axes[0].scale_name() if axes else "score"
        axis = self.plotItem.getAxis("bottom")
        half = QFontMetrics(axis.style.get("tickFont") or self.font()).horizontalAdvance(first) / 2 + 6
        width = float(self.width())  # the view box spans it (no left axis); its own size lags a resize
        n_axes = getattr(self, "_n_axes", 1)
        span = n_axes - 1 + RIGHT_MARGIN  # units right of the first axis
        left = max(0.15, half * span / max(1.0, width - half))
        self.plotItem.setXRange(-left, n_axes - 1 + RIGHT_MARGIN, padding=0)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if getattr(self, "plotItem", None) is not None:  # GraphicsView's __init__ resizes before PlotWidget's ends
            self._fit_x_range()

    def _label_axes(self, axes: Sequence[ParamAxis]) -> None:
        """Tick labels from a pool of text items, reused across redraws (creating one costs ~1 ms)."""
        wanted = [(x, position, text) for x, axis in enumerate(axes) for position, text in axis.ticks()]
        background = pg.mkColor(pg.getConfigOption("background"))
        background.setAlpha(220)  # the label stays readable over the lines that cross it (either theme)
        if wanted == self._labelled and background == self._label_fill:
            return
        self._labelled, self._label_fill = wanted, background
        fill = pg.mkBrush(background)
        while len(self.labels) < len(wanted):
            label = pg.TextItem("", color="#8c959f", anchor=(0, 0.5))
            label.setZValue(200)
            self.plotItem.addItem(label)
            self.labels.append(label)
        for label, (x, position, text) in zip(self.labels, wanted, strict=False):
            label.fill = fill
            label.setText(text)
            label.setPos(x + 0.03, position)
            label.setVisible(True)
        for label in self.labels[len(wanted) :]:
            label.setVisible(False)


def _floats(texts: Sequence[str]) -> list[float]:
    out = []
    for text in texts:
        try:
            value = float(text)
        except ValueError:
            continue
        if math.isfinite(value):
            out.append(value)
    return out


def _known(values: Sequence[Any]) -> int:
    return sum(v is not None for v in values) or -1  # no values at all: not numeric by inference


def _draw(curve: pg.PlotCurveItem, xs: np.ndarray, grid: np.ndarray) -> None:
    """Every row of `grid` as one polyline over `xs`, all in one path: `connect` breaks it between rows and around
    unknown values (which get a placeholder y that is never joined)."""
    if len(grid) == 0:
        curve.setData([], [])
        return
    known = ~np.isnan(grid)
    joined = known[:, :-1] & known[:, 1:]
    connect = np.concatenate([joined, np.zeros((len(grid), 1), dtype=bool)], axis=1)
    curve.setData(np.tile(xs, len(grid)), np.nan_to_num(grid, nan=0.0).ravel(), connect=connect.ravel())
