"""Metric cards: a metric reported once per task (a scikit-learn job's final scores) shown as its value.

A one-dot plot with a `x0.001` axis says less than the number itself. Cards are framed panels on the
application palette (no colours of their own), so both themes style them.
"""

from __future__ import annotations

import math

from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from tensorfleet_desktop.ui.plots import format_value

MAX_LINES = 10  # per-task values listed on a card; the rest are counted


class MetricCard(QFrame):
    def __init__(self, metric: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.metric_name = metric
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setBackgroundRole(QPalette.ColorRole.Base)
        self.setAutoFillBackground(True)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.setMinimumWidth(160)
        self.setMaximumWidth(300)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.setSpacing(2)
        self.name = QLabel(metric)
        self.name.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.value = QLabel()
        font = QFont(self.value.font())
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.value.setFont(font)
        self.detail = QLabel()
        self.detail.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.detail.setVisible(False)
        for label in (self.name, self.value, self.detail):
            layout.addWidget(label)

    def show_values(self, values: list[tuple[str, float]], best_first: bool = False) -> None:
        """One (label, value) per task; several are listed underneath their mean, or under the first one when
        they come best first (a sweep's top trials)."""
        if len(values) == 1:
            self.value.setText(format_value(values[0][1]))
            self.value.setToolTip(repr(values[0][1]))
            self.detail.setText("")
            self.detail.setVisible(False)
            return
        if best_first:
            summary = f"the best trial's ({values[0][0]}); {len(values)} trials shown"
            self.value.setText(format_value(values[0][1]))
        else:
            summary = f"mean of {len(values)} tasks"
            finite = [v for _, v in values if math.isfinite(v)]
            self.value.setText(format_value(sum(finite) / len(finite)) if finite else "-")
        self.value.setToolTip(summary)
        lines = [f"{label}: {format_value(v)}" for label, v in values[:MAX_LINES]]
        if len(values) > MAX_LINES:
            lines.append(f"… {len(values) - MAX_LINES} more")
        self.detail.setText(f"{summary}\n" + "\n".join(lines))
        self.detail.setVisible(True)

    def text(self) -> str:
        """What the card says, as plain text (for tests and copy)."""
        parts = [self.metric_name, self.value.text()]
        if self.detail.text():
            parts.append(self.detail.text())
        return "\n".join(parts)


class MetricCards(QWidget):
    """A grid of cards, in the order the metrics first arrived."""

    def __init__(self, columns: int = 4, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.columns = columns
        self.cards: dict[str, MetricCard] = {}
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setColumnStretch(columns, 1)  # cards keep their width; the row's rest stays empty
        self.only = ""
        self.setVisible(False)

    def set_metric(self, metric: str, values: list[tuple[str, float]], best_first: bool = False) -> None:
        card = self.cards.get(metric)
        if card is None:
            card = self.cards[metric] = MetricCard(metric)
            self._layout()
            card.setVisible(not self.only or self.only == metric)
        card.show_values(values, best_first)
        self.setVisible(True)

    def remove(self, metric: str) -> None:
        card = self.cards.pop(metric, None)
        if card is not None:
            self.grid.removeWidget(card)
            card.deleteLater()
            self._layout()
        self.setVisible(bool(self.cards))

    def show_only(self, metric: str) -> None:
        self.only = metric
        for name, card in self.cards.items():
            card.setVisible(not metric or metric == name)

    def clear(self) -> None:
        for metric in list(self.cards):
            self.remove(metric)

    def _layout(self) -> None:
        for n, card in enumerate(self.cards.values()):
            self.grid.addWidget(card, n // self.columns, n % self.columns)
