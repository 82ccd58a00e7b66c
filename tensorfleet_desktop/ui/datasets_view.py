"""Datasets: the built-in ones and what was uploaded; upload a CSV or Parquet file, preview, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from tensorfleet_agent.workloads.datasets import BUILTIN
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.formatting import clock, human_bytes
from tensorfleet_desktop.ui.table_model import ROW_ROLE, Column, RowTableModel
from tensorfleet_desktop.ui.view import Notify, View
from tensorfleet_desktop.ui.widgets import action_button, add_row_menu, data_table, menu_action

PREVIEW_ROWS = 50
BUILTIN_KIND = "built-in"
# Shapes of the scikit-learn datasets (the agent loads them; the app never imports scikit-learn to count rows).
SHAPES = {"iris": (150, 4), "wine": (178, 13), "breast_cancer": (569, 30), "digits": (1797, 64), "diabetes": (442, 10)}
NO_PREVIEW = "built-in datasets are loaded by scikit-learn on the agent: there is no file to preview"
NO_DELETE = "built-in datasets ship with the agents and cannot be deleted"


def builtin_datasets(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows for the built-in datasets (those the controller's workloads offer when `names` is given: a name this
    app does not know is listed without its shape)."""
    known = {d.name: d for d in BUILTIN}
    rows = []
    for name in names if names is not None else list(known):
        d = known.get(name)
        defaults = {p.name: p.default for p in d.schema.params} if d else {}
        rows_, features = SHAPES.get(name, (int(defaults.get("n_samples", 0)), int(defaults.get("n_features", 0))))
        rows.append(
            {
                "name": name,
                "builtin": True,
                "format": BUILTIN_KIND,
                "task": d.task if d else "",
                "summary": d.summary if d else "",
                "rows": rows_,
                "features": features,
                "configurable": bool(defaults),  # synthetic: rows and features are parameters of the job
            }
        )
    return rows


def shape_text(d: dict[str, Any]) -> str:
    """Rows x features, as the Datasets view and the welcome pane show it."""
    if not d.get("builtin"):
        return f"{d['rows']} rows x {len(d['columns'])} columns"
    if not d["rows"]:
        return ""
    text = f"{d['rows']} rows x {d['features']} features"
    return text + " by default (parameters of the job)" if d["configurable"] else text


def _count(d: dict[str, Any], key: str) -> int:
    return int(d[key]) if key == "rows" else (d["features"] if d.get("builtin") else len(d["columns"]))


def _shown(d: dict[str, Any], key: str) -> str:
    count = _count(d, key)
    if not count:
        return ""
    return f"{count} (default)" if d.get("configurable") else str(count)


class DatasetsView(View):
    title = "Datasets"
    icon = "datasets"
    use_in_job = Signal(str)  # a dataset's name: open the submit dialog with it chosen
    builtins_changed = Signal(list)  # the built-in datasets the controller offers (the welcome pane lists them)

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__(bridge, notify)
        self.builtins = builtin_datasets()
        self.uploads: list[dict[str, Any]] = []
        self.model = RowTableModel(
            [
                Column("Name", lambda d: d["name"], tooltip=lambda d: d.get("summary", "")),
                Column("Kind", lambda d: d["format"]),
                Column("Task", lambda d: d.get("task") or "any (you choose the target)"),
                Column("Rows", lambda d: _shown(d, "rows"), sort=lambda d: d["rows"], tooltip=shape_text),
                Column(
                    "Columns",
                    lambda d: _shown(d, "columns"),
                    sort=lambda d: _count(d, "columns"),
                    tooltip=shape_text,
                ),
                Column("About / from", lambda d: d.get("summary") or d["source_filename"] or d["filename"]),
                Column(
                    "Size", lambda d: human_bytes(d["size"]) if "size" in d else "", sort=lambda d: d.get("size", 0)
                ),
                Column(
                    "Uploaded",
                    lambda d: clock(d["created_at"]) if "created_at" in d else "",
                    sort=lambda d: d.get("created_at", 0.0),
                ),
                Column("sha256", lambda d: d.get("sha256", "")[:16]),
            ],
            key=lambda d: f"{BUILTIN_KIND}:{d['name']}" if d.get("builtin") else d["name"],
        )
        self.model.set_rows(self.builtins)
        self.table, self.proxy = data_table(self.model, name="datasets_table")
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        for column, width in ((0, 170), (1, 80), (2, 190), (3, 110), (4, 110), (5, 320)):
            self.table.setColumnWidth(column, width)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._selection_changed())
        add_row_menu(self.table, self._row_actions)

        self.upload_button = action_button("Upload…", "upload a CSV or Parquet file (sent once, by sha256)")
        self.delete_button = action_button("Delete", "forget the dataset (refused while jobs or models use it)")
        self.use_button = action_button("Use in a new job…", "open the submit dialog with this dataset chosen")
        self.refresh_button = action_button("Refresh")
        self.upload_button.clicked.connect(self.choose_upload)
        self.delete_button.clicked.connect(self.ask_delete)
        self.use_button.clicked.connect(self._use_selected)
        self.refresh_button.clicked.connect(self.refresh)
        self.filter_text = QLineEdit()
        self.filter_text.setObjectName("dataset_filter")
        self.filter_text.setPlaceholderText("filter by name, kind, task…")
        self.filter_text.setClearButtonEnabled(True)
        self.filter_text.textChanged.connect(self.proxy.setFilterFixedString)
        bar = QHBoxLayout()
        for b in (self.upload_button, self.use_button, self.delete_button, self.refresh_button):
            bar.addWidget(b)
        bar.addStretch(1)
        bar.addWidget(self.filter_text, 1)

        self.no_uploads = QLabel(
            "No uploaded datasets yet: Upload… a CSV or Parquet file with a header row, then pick its target column "
            "when you submit. The built-in datasets need no upload."
        )
        self.no_uploads.setObjectName("no_uploads")
        self.no_uploads.setWordWrap(True)
        self.preview_label = QLabel("Select a dataset to preview its first rows")
        self.preview = QTableWidget()
        self.preview.setObjectName("dataset_preview")
        self.preview.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.preview)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.no_uploads)
        layout.addWidget(split, 1)
        layout.insertWidget(3, self.preview_label)
        bridge.connected.connect(lambda _info: self._connected())
        self._update_buttons()

    def activated(self) -> None:
        self.refresh()

    def _connected(self) -> None:
        """The controller's workloads say which built-in datasets exist there (an older or newer one may differ)."""

        def offered(workloads: list[dict[str, Any]]) -> None:
            names = sorted({name for w in workloads for name in w.get("datasets", ()) if w.get("tasks")})
            if names:
                self.builtins = builtin_datasets(names)
                self.set_uploads(self.uploads)
                self.builtins_changed.emit(self.builtins)

        self.run(lambda c: c.workloads(), offered, "cannot load the workload schemas")
        self.refresh()

    def refresh(self) -> None:
        self.run(lambda c: c.datasets(), self.set_uploads, "cannot list datasets")

    def set_uploads(self, uploads: list[dict[str, Any]]) -> None:
        self.uploads = uploads
        self.model.set_rows(self.builtins + uploads)
        self.no_uploads.setVisible(not uploads)
        self._update_buttons()

    def focus_filter(self) -> None:
        self.filter_text.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.filter_text.selectAll()

    def selected(self) -> dict[str, Any] | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].data(ROW_ROLE) if rows else None

    def select(self, name: str, builtin: bool = False) -> None:
        position = self.model.find(f"{BUILTIN_KIND}:{name}" if builtin else name)
        if position >= 0:
            self.table.selectRow(self.proxy.mapFromSource(self.model.index(position, 0)).row())

    def _update_buttons(self) -> None:
        entry = self.selected()
        builtin = bool(entry and entry.get("builtin"))
        self.delete_button.setEnabled(entry is not None and not builtin)
        self.delete_button.setToolTip(
            NO_DELETE if builtin else "forget the dataset (refused while jobs or models use it)"
        )
        self.use_button.setEnabled(entry is not None)

    def _selection_changed(self) -> None:
        self._update_buttons()
        self.preview_selected()

    def _row_actions(self, rows: list[dict[str, Any]]) -> list[Any]:
        entry = rows[0] if len(rows) == 1 else None
        builtin = bool(entry and entry.get("builtin"))
        preview = menu_action("Preview", self.preview_selected, entry is not None and not builtin)
        delete = menu_action("Delete…", self.ask_delete, entry is not None and not builtin)
        if builtin:
            preview.setToolTip(NO_PREVIEW)
            delete.setToolTip(NO_DELETE)
        return [preview, menu_action("Use in a new job…", self._use_selected, entry is not None), None, delete]

    def _use_selected(self) -> None:
        entry = self.selected()
        if entry is not None:
            self.use_in_job.emit(entry["name"])

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
        if entry is None:
            return
        if entry.get("builtin"):  # nothing to ask the controller: say what it is instead
            self.preview.clear()
            self.preview.setRowCount(0)
            self.preview.setColumnCount(0)
            self.preview_label.setText(
                f"{entry['name']} (built-in, {entry['task']}): {entry['summary']}. No preview: {NO_PREVIEW}."
            )
            return
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
        if entry is None or entry.get("builtin"):
            return
        answer = QMessageBox.question(self, "Delete dataset", f"Forget dataset {entry['name']}?")
        if answer == QMessageBox.StandardButton.Yes:
            name = entry["name"]

            def deleted(_entry: dict[str, Any]) -> None:
                self.notify(f"deleted {name}", False)
                self.refresh()

            self.run(lambda c: c.delete_dataset(name), deleted, "delete")
