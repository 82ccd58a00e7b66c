"""What every view shares: the bridge, one way to report what a call did, and the empty-table placeholder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QAbstractItemModel, QEvent, QObject, QSortFilterProxyModel, Qt
from PySide6.QtWidgets import QAbstractItemView, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from tensorfleet_desktop.ui.bridge import Bridge, ClientCall

Notify = Callable[[str, bool], None]  # (message, is_error)


class View(QWidget):
    title = ""
    icon = ""

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__()
        self.bridge = bridge
        self.notify = notify

    def run(
        self,
        fn: ClientCall,
        done: str | Callable[[Any], None] | None = None,
        failed: str = "",
    ) -> None:
        """Call the controller; say `done` (or call it with the result) on success, the error otherwise."""

        def on_result(result: Any) -> None:
            if callable(done):
                done(result)
            elif done:
                self.notify(done, False)

        def on_error(message: str) -> None:
            self.notify(f"{failed}: {message}" if failed else message, True)

        self.bridge.call(fn, on_result, on_error)

    def activated(self) -> None:
        """The view became visible: refresh what is not streamed."""

    def refresh(self) -> None:
        """F5: ask the controller again for what this view shows (streamed views have nothing to do)."""

    def focus_filter(self) -> None:
        """Ctrl+F: put the keyboard in this view's filter field, if it has one."""


EmptyAction = tuple[str, Callable[[], object]]  # (button text, slot)


class EmptyState(QWidget):
    """A message (and buttons) centred over an empty table, saying what to do next; hidden once rows exist."""

    def __init__(self, table: QAbstractItemView, text: str, actions: Sequence[EmptyAction] = ()) -> None:
        super().__init__(table.viewport())
        self.setObjectName("empty_state")
        self.table = table
        self.label = QLabel(text)
        self.label.setObjectName("empty_state_text")
        self.label.setWordWrap(True)
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setStyleSheet("color: palette(placeholder-text); font-size: 11pt;")
        self.buttons: list[QPushButton] = []
        column = QVBoxLayout(self)
        column.addStretch(1)
        column.addWidget(self.label)
        row = QHBoxLayout()
        row.addStretch(1)
        for text_, slot in actions:
            button = QPushButton(text_)
            button.clicked.connect(lambda _checked=False, slot=slot: slot())
            self.buttons.append(button)
            row.addWidget(button)
        row.addStretch(1)
        column.addLayout(row)
        column.addStretch(1)
        self.model = _source_model(table.model())
        for signal in (self.model.rowsInserted, self.model.rowsRemoved, self.model.modelReset):
            signal.connect(self.update_visibility)
        table.viewport().installEventFilter(self)
        self.update_visibility()

    def set_text(self, text: str) -> None:
        self.label.setText(text)

    def update_visibility(self, *_args: object) -> None:
        empty = self.model.rowCount() == 0
        self.setVisible(empty)
        if empty:
            self.setGeometry(self.table.viewport().rect())
            self.raise_()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Resize and not self.isHidden():
            self.setGeometry(self.table.viewport().rect())
        return False


def _source_model(model: QAbstractItemModel) -> QAbstractItemModel:
    """The rows that exist, not those a filter shows: a filter that hides everything is not "no jobs yet"."""
    while isinstance(model, QSortFilterProxyModel) and model.sourceModel() is not None:
        model = model.sourceModel()
    return model


def attach_empty_state(table: QAbstractItemView, text: str, actions: Sequence[EmptyAction] = ()) -> EmptyState:
    """Give any table (a view's own or another owner's) a placeholder for when its model has no rows."""
    return EmptyState(table, text, actions)
