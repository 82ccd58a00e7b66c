"""The row of controls above each metric plot: smoothing, log-y, x axis, reset view, export.

Plain Qt widgets on the application palette (no colours of their own), so both themes style them.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QSlider,
    QToolButton,
    QWidget,
)

from tensorfleet_desktop.ui.plots import EPOCH, RELATIVE, STEP, WALL, MetricPlot

X_CHOICES = ((STEP, "step"), (EPOCH, "epoch"), (WALL, "wall time"), (RELATIVE, "relative time"))
X_TIPS = {
    STEP: "x = the training step each point was reported at",
    EPOCH: "x = epochs, from the `epoch` series the job reports",
    WALL: "x = the clock time each point was reported at",
    RELATIVE: "x = seconds since each series' first point (runs started at different times line up)",
}
NO_EPOCH = "this job reports no `epoch` series, so steps cannot be turned into epochs"
SMOOTHING_MAX = 99  # the slider's range: weights 0.00 to 0.99


class PlotToolbar(QWidget):
    def __init__(self, plot: MetricPlot, name: str = "plot", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = plot
        self.name = name
        row = QHBoxLayout(self)
        row.setContentsMargins(4, 2, 4, 0)
        row.setSpacing(6)

        label = QLabel("Smooth")
        self.smoothing = QSlider(Qt.Orientation.Horizontal)
        self.smoothing.setRange(0, SMOOTHING_MAX)
        self.smoothing.setFixedWidth(90)
        tip = "exponential moving average weight (0 = raw); the raw curve stays faint behind the smoothed one"
        for widget in (label, self.smoothing):
            widget.setToolTip(tip)
        self.smoothing_value = QLabel("0.00")
        self.smoothing.valueChanged.connect(self._smoothing_changed)

        self.log_y = QToolButton()
        self.log_y.setText("log y")
        self.log_y.setCheckable(True)
        self.log_y.setAutoRaise(True)
        self.log_y.setToolTip("logarithmic y axis")
        self.log_y.toggled.connect(plot.set_log_y)

        self.x_axis = QComboBox()
        self.x_axis.setToolTip("what the x axis shows")
        for mode, text in X_CHOICES:
            self.x_axis.addItem(text, mode)
            self.x_axis.setItemData(self.x_axis.count() - 1, X_TIPS[mode], Qt.ItemDataRole.ToolTipRole)
        self.wanted_x = STEP  # the user's choice: epoch comes back once the job's epoch series arrives
        self.x_axis.currentIndexChanged.connect(self._x_changed)

        self.reset = QToolButton()
        self.reset.setText("Reset")
        self.reset.setAutoRaise(True)
        self.reset.setToolTip("fit the view to every curve again (after zooming or panning)")
        self.reset.clicked.connect(plot.reset_view)

        self.export_button = QToolButton()
        self.export_button.setText("Export…")
        self.export_button.setAutoRaise(True)
        self.export_button.setToolTip("save this plot as a PNG or SVG file")
        self.export_button.clicked.connect(self.choose_export)

        row.addWidget(label)
        row.addWidget(self.smoothing)
        row.addWidget(self.smoothing_value)
        row.addWidget(self.log_y)
        row.addWidget(QLabel("x"))
        row.addWidget(self.x_axis)
        row.addStretch(1)
        row.addWidget(self.reset)
        row.addWidget(self.export_button)

    def _smoothing_changed(self, value: int) -> None:
        weight = value / 100
        self.smoothing_value.setText(f"{weight:.2f}")
        self.plot.set_smoothing(weight)

    def _x_changed(self, _index: int) -> None:
        self.wanted_x = self.x_axis.currentData()
        self.plot.set_x_mode(self.wanted_x)

    def _show_x(self, mode: str) -> None:
        """Select `mode` without taking it for the user's choice."""
        self.x_axis.blockSignals(True)
        self.x_axis.setCurrentIndex(self.x_axis.findData(mode))
        self.x_axis.blockSignals(False)
        self.plot.set_x_mode(mode)

    def apply(self, smoothing: float, log_y: bool, x_mode: str) -> None:
        """Settings a plot of the same metric had (MetricGrid remembers them from job to job)."""
        self.smoothing.setValue(round(smoothing * 100))
        self.log_y.setChecked(log_y)
        self.wanted_x = x_mode
        self._show_x(x_mode if x_mode != EPOCH or self.epoch_enabled() else STEP)

    def set_epoch_available(self, available: bool, reason: str = NO_EPOCH) -> None:
        """Grey out the epoch choice (with `reason` as its tooltip) when the job reports no epoch series."""
        index = self.x_axis.findData(EPOCH)
        model = self.x_axis.model()
        if isinstance(model, QStandardItemModel):
            item = model.item(index)
            item.setEnabled(available)
            item.setToolTip(X_TIPS[EPOCH] if available else reason or NO_EPOCH)
        if not available and self.x_axis.currentData() == EPOCH:
            self._show_x(STEP)
        elif available and self.wanted_x == EPOCH and self.x_axis.currentData() != EPOCH:
            self._show_x(EPOCH)

    def epoch_enabled(self) -> bool:
        model = self.x_axis.model()
        return not isinstance(model, QStandardItemModel) or model.item(self.x_axis.findData(EPOCH)).isEnabled()

    def choose_export(self) -> None:
        path, chosen = QFileDialog.getSaveFileName(
            self, "Export plot", f"{self.name}.png", "PNG image (*.png);;SVG image (*.svg)"
        )
        if path:
            if not Path(path).suffix:
                path += ".svg" if "svg" in chosen else ".png"
            try:
                self.plot.export(path)
            except OSError as exc:  # an unwritable place: said, not a silent empty export
                QMessageBox.warning(self, "Export plot", str(exc))
