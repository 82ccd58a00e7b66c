"""One table model for every list the window shows (jobs, agents, models, datasets, trials).

Rows are dicts keyed by an id; `set_rows` inserts, removes and updates rows in place so a sort,
a filter and the user's selection survive the once-a-second refresh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

Index = QModelIndex | QPersistentModelIndex
ROW_ROLE = Qt.ItemDataRole.UserRole + 1  # the row's dict
SORT_ROLE = Qt.ItemDataRole.UserRole + 2  # a value that sorts naturally (numbers as numbers)
EXTRA_ROLE = Qt.ItemDataRole.UserRole + 3  # column-specific data for delegates (progress, history)


@dataclass(frozen=True)
class Column:
    title: str
    text: Callable[[dict[str, Any]], str]
    sort: Callable[[dict[str, Any]], Any] | None = None
    extra: Callable[[dict[str, Any]], Any] | None = None
    tooltip: Callable[[dict[str, Any]], str] | None = None
    color: Callable[[dict[str, Any]], str] | None = None  # text colour, e.g. by state
    key: str = ""  # stable identity when columns come and go (the experiments table); the title otherwise
    header_tip: str = ""

    @property
    def id(self) -> str:
        return self.key or self.title


class RowTableModel(QAbstractTableModel):
    def __init__(self, columns: Sequence[Column], key: Callable[[dict[str, Any]], str] = lambda r: r["id"]) -> None:
        super().__init__()
        self.columns = list(columns)
        self.key = key
        self.rows: list[dict[str, Any]] = []
        self._index: dict[str, int] = {}

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.columns):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section].title
        if role == Qt.ItemDataRole.ToolTipRole and self.columns[section].header_tip:
            return self.columns[section].header_tip
        return None

    def set_columns(self, columns: Sequence[Column]) -> None:
        """Swap the columns (a reset: views and proxies drop their per-column state; the caller restores the
        sort and the selection it cares about)."""
        self.beginResetModel()
        self.columns = list(columns)
        self.endResetModel()

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        return self.cell(self.rows[index.row()], self.columns[index.column()], role)

    def cell(self, row: dict[str, Any], column: Column, role: int) -> Any:
        if role == Qt.ItemDataRole.DisplayRole:
            return column.text(row)
        if role == SORT_ROLE:
            return column.sort(row) if column.sort else column.text(row)
        if role == ROW_ROLE:
            return row
        if role == EXTRA_ROLE and column.extra:
            return column.extra(row)
        if role == Qt.ItemDataRole.ToolTipRole and column.tooltip:
            return column.tooltip(row)
        if role == Qt.ItemDataRole.ForegroundRole and column.color:
            color = column.color(row)
            return QColor(color) if color else None
        return None

    def row(self, position: int) -> dict[str, Any]:
        return self.rows[position]

    def find(self, key: str) -> int:
        return self._index.get(key, -1)

    def set_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        incoming = {self.key(r): r for r in rows}
        gone = [i for i, r in enumerate(self.rows) if self.key(r) not in incoming]
        for position in reversed(gone):
            self.beginRemoveRows(QModelIndex(), position, position)
            del self.rows[position]
            self.endRemoveRows()
        self._index = {self.key(r): i for i, r in enumerate(self.rows)}
        last = len(self.columns) - 1
        new: list[tuple[str, dict[str, Any]]] = []
        for key, row in incoming.items():
            at = self._index.get(key)
            if at is None:
                new.append((key, row))
            elif self.rows[at] != row:
                self.rows[at] = row
                self.dataChanged.emit(self.index(at, 0), self.index(at, last))
        if new:  # one insertion: a sorted proxy places them all at once, not one by one
            first = len(self.rows)
            self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
            for key, row in new:
                self._index[key] = len(self.rows)
                self.rows.append(row)
            self.endInsertRows()
