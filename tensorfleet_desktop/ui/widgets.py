"""Small widgets shared by the views: progress and sparkline cells, the banner, toasts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import (
    QAbstractItemModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QPointF,
    QRect,
    QSortFilterProxyModel,
    Qt,
    QTimer,
)
from PySide6.QtGui import QAction, QColor, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
    QTableView,
    QWidget,
)

from tensorfleet_desktop.ui.table_model import EXTRA_ROLE, ROW_ROLE, SORT_ROLE

Index = QModelIndex | QPersistentModelIndex


class ProgressDelegate(QStyledItemDelegate):
    """Draws EXTRA_ROLE (0..1) as a progress bar with the cell's text on it."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        value = index.data(EXTRA_ROLE)
        if value is None:
            super().paint(painter, option, index)
            return
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(2, 3, -2, -3)
        bar.minimum, bar.maximum = 0, 1000
        bar.progress = int(max(0.0, min(1.0, float(value))) * 1000)
        bar.text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        bar.textVisible = True
        bar.state = option.state
        style = QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter)


class SparklineDelegate(QStyledItemDelegate):
    """Draws EXTRA_ROLE (a sequence of 0..100 values) as a sparkline behind the cell's text."""

    def __init__(self, color: str = "#1f6feb") -> None:
        super().__init__()
        self.color = QColor(color)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        super().paint(painter, option, index)
        values = index.data(EXTRA_ROLE)
        if values:
            paint_sparkline(painter, option.rect.adjusted(2, 3, -2, -3), values, self.color)


def paint_sparkline(painter: QPainter, rect: QRect, values: Sequence[float], color: QColor, top: float = 100.0) -> None:
    if len(values) < 2 or rect.width() < 4:
        return
    step = rect.width() / (len(values) - 1)
    scale = max(top, max(values)) or 1.0
    line = QPolygonF(
        [QPointF(rect.left() + i * step, rect.bottom() - rect.height() * v / scale) for i, v in enumerate(values)]
    )
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    faded = QColor(color)
    faded.setAlpha(160)
    painter.setPen(QPen(faded, 1.4))
    painter.drawPolyline(line)
    painter.restore()


class Banner(QWidget):
    """A strip across the top of the window for a lost controller (hidden while all is well)."""

    def __init__(self) -> None:
        super().__init__()
        self.label = QLabel()
        self.label.setWordWrap(True)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.addWidget(self.label, 1)
        self.setAutoFillBackground(True)
        self.setStyleSheet("background: #b35900; color: white; font-weight: bold;")
        self.hide()

    def show_message(self, text: str) -> None:
        self.label.setText(text)
        self.show()


class Toast(QLabel):
    """An in-app notification in the window's bottom-right corner (used where no system tray exists)."""

    def __init__(self, parent: QWidget, text: str, seconds: float = 6.0) -> None:
        super().__init__(text, parent)
        self.setObjectName("toast")
        self.setWordWrap(True)
        self.setStyleSheet(
            "QLabel#toast { background: rgba(30, 30, 30, 230); color: white; padding: 10px 14px; border-radius: 8px; }"
        )
        self.setMaximumWidth(380)
        self.adjustSize()
        self.place()
        self.show()
        self.raise_()
        QTimer.singleShot(int(seconds * 1000), self.deleteLater)

    def place(self) -> None:
        parent = self.parentWidget()
        if parent is not None:
            stacked = sum(1 for t in parent.findChildren(Toast) if t is not self and t.isVisible())
            y = parent.height() - self.height() - 16 - stacked * (self.height() + 8)
            self.move(parent.width() - self.width() - 16, max(0, y))


def data_table(
    model: QAbstractItemModel,
    proxy: QSortFilterProxyModel | None = None,
    sort_column: int = 0,
    descending: bool = False,
    multi: bool = False,
    name: str = "",
) -> tuple[QTableView, QSortFilterProxyModel]:
    """A sortable, row-selecting table over `model` (one line per row, columns sized by the user)."""
    proxy = proxy or QSortFilterProxyModel()
    proxy.setSourceModel(model)
    proxy.setSortRole(SORT_ROLE)
    view = QTableView()
    if name:
        view.setObjectName(name)
    view.setModel(proxy)
    view.setSortingEnabled(True)
    view.sortByColumn(sort_column, Qt.SortOrder.DescendingOrder if descending else Qt.SortOrder.AscendingOrder)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    mode = QAbstractItemView.SelectionMode
    view.setSelectionMode(mode.ExtendedSelection if multi else mode.SingleSelection)
    view.setWordWrap(False)
    view.verticalHeader().hide()
    view.verticalHeader().setDefaultSectionSize(view.fontMetrics().height() + 10)
    header = view.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    header.setStretchLastSection(True)
    header.setDefaultSectionSize(110)
    return view, proxy


def action_button(text: str, tooltip: str = "") -> QPushButton:
    button = QPushButton(text)
    if tooltip:
        button.setToolTip(tooltip)
    return button


RowActions = Callable[[list[dict[str, Any]]], Sequence[QAction | None]]  # None: a separator


def add_row_menu(view: QTableView, actions_for: RowActions) -> None:
    """A context menu on the table's rows: a right-click selects the row under the mouse (keeping a selection it
    is part of) and offers `actions_for(selected rows)`; disabled actions show greyed out."""
    view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)

    def show(position: QPoint) -> None:
        index = view.indexAt(position)
        if not index.isValid():
            return
        selection = view.selectionModel()
        if not selection.isRowSelected(index.row(), index.parent()):
            view.selectRow(index.row())
        rows = [i.data(ROW_ROLE) for i in selection.selectedRows()]
        menu = QMenu(view)
        for action in actions_for(rows):
            if action is None:
                menu.addSeparator()
            else:
                action.setParent(menu)
                menu.addAction(action)
        if not menu.isEmpty():
            menu.popup(view.viewport().mapToGlobal(position))

    view.customContextMenuRequested.connect(show)


def menu_action(text: str, slot: Callable[[], object], enabled: bool = True) -> QAction:
    action = QAction(text)
    action.setEnabled(enabled)
    action.triggered.connect(lambda _checked=False: slot())
    return action
