"""Small widgets shared by the views: progress, sparkline and bar cells, the banner, toasts, the wheel guard."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import (
    QAbstractItemModel,
    QEvent,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPoint,
    QPointF,
    QRect,
    QSortFilterProxyModel,
    Qt,
    QTimer,
)
from PySide6.QtGui import QAction, QColor, QPainter, QPalette, QPen, QPolygonF, QWheelEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QPushButton,
    QSlider,
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
    """Draws EXTRA_ROLE (a sequence of 0..100 values) as a sparkline behind the cell's text; a sequence of such
    sequences (one per GPU) as that many sparklines side by side."""

    def __init__(self, color: str = "#1f6feb") -> None:
        super().__init__()
        self.color = QColor(color)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        super().paint(painter, option, index)
        values = index.data(EXTRA_ROLE)
        if not values:
            return
        rect = option.rect.adjusted(2, 3, -2, -3)
        if isinstance(values[0], (int, float)):
            paint_sparkline(painter, rect, values, self.color)
            return
        width = rect.width() / len(values)
        for i, series in enumerate(values):
            part = QRect(int(rect.left() + i * width), rect.top(), int(width) - 3, rect.height())
            paint_sparkline(painter, part, series, self.color)


class BarDelegate(QStyledItemDelegate):
    """Draws EXTRA_ROLE (a used fraction, 0..1) as a filled bar with the cell's text on it ("123 GiB free"); the
    fill turns amber from `warn` and red from `alarm`. No EXTRA_ROLE: a plain text cell."""

    def __init__(self, warn: float = 0.8, alarm: float = 0.95) -> None:
        super().__init__()
        self.warn, self.alarm = warn, alarm

    def color_for(self, fraction: float) -> QColor:
        return QColor("#d1242f" if fraction >= self.alarm else "#bf8700" if fraction >= self.warn else "#2ea043")

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        value = index.data(EXTRA_ROLE)
        if value is None:
            super().paint(painter, option, index)
            return
        fraction = max(0.0, min(1.0, float(value)))
        self.initStyleOption(option, index)
        style = option.widget.style() if option.widget is not None else QApplication.style()
        option.text = ""
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, option, painter, option.widget)  # selection
        rect = option.rect.adjusted(3, 4, -3, -4)
        palette = option.palette
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(palette.color(QPalette.ColorRole.Mid), 1))
        painter.setBrush(palette.color(QPalette.ColorRole.AlternateBase))
        painter.drawRoundedRect(rect, 3, 3)
        fill = self.color_for(fraction)
        fill.setAlpha(150)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(fill)
        painter.drawRoundedRect(QRect(rect.left(), rect.top(), int(rect.width() * fraction), rect.height()), 3, 3)
        painter.setPen(palette.color(QPalette.ColorRole.Text))
        text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        painter.drawText(
            rect.adjusted(6, 0, -6, 0), int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), text
        )
        painter.restore()


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
        self.setStyleSheet(  # dark on both themes; the border sets it off a dark window
            "QLabel#toast { background: rgba(36, 36, 36, 235); color: white; padding: 10px 14px; border-radius: 8px;"
            " border: 1px solid rgba(255, 255, 255, 70); }"
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


# ---- the wheel rule: a spin box, combo box or slider changes on the mouse wheel only once it has focus

WHEEL_GUARDED = (QAbstractSpinBox, QComboBox, QSlider)


class WheelGuard(QObject):
    """An event filter: a wheel turned over a guarded widget without focus scrolls what contains it (the form's
    scroll area) instead of changing its value. On a widget (`guard_wheel`) or the whole app (`install_wheel_guard`)."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if not isinstance(watched, WHEEL_GUARDED):
            return False
        if event.type() == QEvent.Type.Polish and watched.focusPolicy() == Qt.FocusPolicy.WheelFocus:
            watched.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # a wheel turn must not give it focus either
        if event.type() != QEvent.Type.Wheel or watched.hasFocus():
            return False
        assert isinstance(event, QWheelEvent)
        # Hand it up the parents as Qt does with a wheel nobody takes (a sent event is not propagated by Qt).
        parent = watched.parentWidget()
        while parent is not None:
            position = watched.mapTo(parent, event.position())
            forwarded = QWheelEvent(
                position,
                event.globalPosition(),
                event.pixelDelta(),
                event.angleDelta(),
                event.buttons(),
                event.modifiers(),
                event.phase(),
                event.inverted(),
                event.source(),
            )
            forwarded.ignore()
            QApplication.sendEvent(parent, forwarded)
            if forwarded.isAccepted() or parent.isWindow():
                break
            parent = parent.parentWidget()
        return True


_guard: WheelGuard | None = None


def wheel_guard() -> WheelGuard:
    global _guard
    if _guard is None:
        _guard = WheelGuard()
    return _guard


def guard_wheel(*widgets: QWidget) -> None:
    """These widgets ignore the wheel until clicked or tabbed into."""
    for widget in widgets:
        if widget.focusPolicy() == Qt.FocusPolicy.WheelFocus:
            widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        widget.installEventFilter(wheel_guard())


def install_wheel_guard(app: QApplication) -> None:
    """The wheel rule for every spin box, combo box and slider of the app (idempotent)."""
    app.removeEventFilter(wheel_guard())
    app.installEventFilter(wheel_guard())
