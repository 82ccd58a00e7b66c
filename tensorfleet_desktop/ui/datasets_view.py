"""Datasets: what was uploaded, upload a CSV or Parquet file, preview the first rows, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.formatting import clock, human_bytes
from tensorfleet_desktop.ui.table_model import ROW_ROLE, Column, RowTableModel
from tensorfleet_desktop.ui.view import Notify, View
from tensorfleet_desktop.ui.widgets import action_button, data_table

PREVIEW_ROWS = 50


class DatasetsView(View):
    title = "Datasets"
    icon = "datasets"

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__(bridge, notify)
        self.model = RowTableModel(
            [
                Column("Name", lambda d: d["name"]),
                Column("Format", lambda d: d["format"]),
                Column("Rows", lambda d: str(d["rows"]), sort=lambda d: d["rows"]),
                Column("Columns", lambda d: str(len(d["columns"])), sort=lambda d: len(d["columns"])),
                Column("Size", lambda d: human_bytes(d["size"]), sort=lambda d: d["size"]),
                Column("Uploaded", lambda d: clock(d["created_at"]), sort=lambda d: d["created_at"]),
                Column("From", lambda d: d["source_filename"] or d["filename"]),
                Column("sha256", lambda d: d["sha256"][:16]),
            ],
            key=lambda d: d["name"],
        )
        self.table, self.proxy = data_table(self.model, name="datasets_table")
        self.table.selectionModel().selectionChanged.connect(lambda *_: self.preview_selected())

        self.upload_button = action_button("Upload…", "upload a CSV or Parquet file (sent once, by sha256)")
        self.delete_button = action_button("Delete", "forget the dataset (refused while jobs or models use it)")
        self.refresh_button = action_button("Refresh")
        self.upload_button.clicked.connect(self.choose_upload)
        self.delete_button.clicked.connect(self.ask_delete)
        self.refresh_button.clicked.connect(self.refresh)
        bar = QHBoxLayout()
        for b in (self.upload_button, self.delete_button, self.refresh_button):
            bar.addWidget(b)
        bar.addStretch(1)

        self.preview_label = QLabel("Select a dataset to preview its first rows")
        self.preview = QTableWidget()
        self.preview.setObjectName("dataset_preview")
        self.preview.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.preview)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        layout.insertWidget(2, self.preview_label)
        bridge.connected.connect(lambda _info: self.refresh())

    def activated(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.run(lambda c: c.datasets(), self.model.set_rows, "cannot list datasets")

    def selected(self) -> dict[str, Any] | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].data(ROW_ROLE) if rows else None

    def select(self, name: str) -> None:
        position = self.model.find(name)
        if position >= 0:
            self.table.selectRow(self.proxy.mapFromSource(self.model.index(position, 0)).row())

    def choose_upload(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Upload a dataset", "", "Data (*.csv *.parquet);;All files (*)")
        if path:
            self.upload(Path(path))

    def upload(self, path: Path, name: str | None = None) -> None:
        def done(entry: dict[str, Any]) -> None:
            self.notify(f"uploaded {entry['name']}: {entry['rows']} rows x {len(entry['columns'])} columns", False)
            self.refresh()

        self.notify(f"uploading {path.name}…", False)
        self.run(lambda c: c.upload_dataset(path, name), done, f"cannot upload {path.name}")

    def preview_selected(self) -> None:
        entry = self.selected()
        if entry is not None:
            name = entry["name"]
            self.run(lambda c: c.preview_dataset(name, PREVIEW_ROWS), self.show_preview, f"cannot preview {name}")

    def show_preview(self, preview: dict[str, Any]) -> None:
        d = preview["dataset"]
        self.preview_label.setText(
            f"{d['name']}: first {len(preview['rows'])} of {d['rows']} rows · {d['format']} · sha256 {d['sha256'][:16]}"
        )
        self.preview.clear()
        self.preview.setColumnCount(len(preview["columns"]))
        self.preview.setRowCount(len(preview["rows"]))
        self.preview.setHorizontalHeaderLabels(preview["columns"])
        for r, row in enumerate(preview["rows"]):
            for c, value in enumerate(row):
                self.preview.setItem(r, c, QTableWidgetItem(value))

    def ask_delete(self) -> None:
        entry = self.selected()
        if entry is None:
            return
        answer = QMessageBox.question(self, "Delete dataset", f"Forget dataset {entry['name']}?")
        if answer == QMessageBox.StandardButton.Yes:
            name = entry["name"]

            def deleted(_entry: dict[str, Any]) -> None:
                self.notify(f"deleted {name}", False)
                self.refresh()

            self.run(
                lambda c: c.delete_dataset(name),
                deleted,
                "delete",
            )
