"""The file tree of one dataset version, a page at a time: GetDataset's pages (sorted paths) become folders and files;
a last row loads the next page when clicked. The view asks for pages through the bridge; this widget only arranges
what arrived, so a tree of 100,000 files never holds the GUI thread for more than one page."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem

from tensorfleet_desktop.ui.formatting import human_bytes

PAGE = 500  # files per GetDataset page
FILE_ROLE = Qt.ItemDataRole.UserRole  # a file row's {"path", "size", ...}; None on folders
MORE_ROLE = Qt.ItemDataRole.UserRole + 1  # the "load more" row: the cursor of the next page


class FileTree(QTreeWidget):
    """Folders and files of the version shown; `file_chosen(file)` when a file is selected, `more_wanted(cursor)`
    when the "more files" row is activated."""

    file_chosen = Signal(object)
    more_wanted = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("dataset_files")
        self.setColumnCount(2)
        self.setHeaderLabels(["Path", "Size"])
        self.setColumnWidth(0, 320)
        self.ref = ""  # NAME:VERSION of what is shown
        self.files: dict[str, dict[str, Any]] = {}
        self._folders: dict[str, QTreeWidgetItem] = {}
        self._more: QTreeWidgetItem | None = None
        self.itemSelectionChanged.connect(self._selected)
        self.itemActivated.connect(self._activated)
        self.itemClicked.connect(self._activated)

    def show_version(self, ref: str) -> None:
        self.ref = ref
        self.files.clear()
        self._folders.clear()
        self._more = None
        self.clear()

    def add_page(self, ref: str, files: list[dict[str, Any]], next_cursor: str) -> None:
        """One page of `ref` (a page of an earlier version, arriving late, is dropped)."""
        if ref != self.ref:
            return
        if self._more is not None:
            self.invisibleRootItem().removeChild(self._more)
            self._more = None
        self.setUpdatesEnabled(False)
        try:
            for f in files:
                folder, _, name = f["path"].rpartition("/")
                item = QTreeWidgetItem([name, human_bytes(f["size"])])
                item.setData(0, FILE_ROLE, f)
                item.setToolTip(0, f["path"])
                item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self._folder(folder).addChild(item)
                self.files[f["path"]] = f
            if next_cursor:
                self._more = QTreeWidgetItem([f"… more files (load the next {PAGE})", ""])
                self._more.setData(0, MORE_ROLE, next_cursor)
                self.addTopLevelItem(self._more)
        finally:
            self.setUpdatesEnabled(True)

    def _folder(self, folder: str) -> QTreeWidgetItem:
        if not folder:
            return self.invisibleRootItem()
        item = self._folders.get(folder)
        if item is None:
            parent, _, name = folder.rpartition("/")
            item = QTreeWidgetItem([f"{name}/", ""])
            self._folder(parent).addChild(item)
            item.setExpanded(parent == "")  # the top folders open, deeper ones closed
            self._folders[folder] = item
        return item

    def select_path(self, path: str) -> bool:
        for item in self._items():
            f = item.data(0, FILE_ROLE)
            if f and f["path"] == path:
                self.setCurrentItem(item)
                return True
        return False

    def _items(self) -> list[QTreeWidgetItem]:
        out, todo = [], [self.invisibleRootItem()]
        while todo:
            item = todo.pop()
            for i in range(item.childCount()):
                child = item.child(i)
                if child is not None:
                    out.append(child)
                    todo.append(child)
        return out

    def folders(self) -> list[str]:
        return sorted(self._folders)

    def more_cursor(self) -> str:
        return str(self._more.data(0, MORE_ROLE)) if self._more is not None else ""

    def _selected(self) -> None:
        items = self.selectedItems()
        f = items[0].data(0, FILE_ROLE) if items else None
        if f:
            self.file_chosen.emit(f)

    def _activated(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        cursor = item.data(0, MORE_ROLE)
        if cursor:
            item.setText(0, "loading…")
            item.setData(0, MORE_ROLE, None)
            self.more_wanted.emit(str(cursor))
