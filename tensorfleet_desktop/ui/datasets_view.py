"""Datasets (issue 20): every dataset the controller lists (uploads, s3:// and file:// references, the built-ins
once), a version picker, the chosen version's file tree (paged, dataset_files.py) and a preview of the selected file
(dataset_preview.py); upload a folder or a file as a new version, add a reference, delete a version or a dataset,
use NAME:VERSION in a new job. Everything that touches the controller goes through the bridge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QSplitter,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_agent.workloads.datasets import BUILTIN
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.dataset_files import PAGE, FileTree
from tensorfleet_desktop.ui.dataset_preview import Preview, PreviewPane, fetch_preview
from tensorfleet_desktop.ui.formatting import clock, human_bytes
from tensorfleet_desktop.ui.table_model import ROW_ROLE, Column, RowTableModel
from tensorfleet_desktop.ui.view import Notify, View
from tensorfleet_desktop.ui.widgets import action_button, add_row_menu, data_table, menu_action

BUILTIN_KIND = "built-in"
# Shapes of the scikit-learn datasets (the agent loads them; the app never imports scikit-learn to count rows).
SHAPES = {"iris": (150, 4), "wine": (178, 13), "breast_cancer": (569, 30), "digits": (1797, 64), "diabetes": (442, 10)}
NO_PREVIEW = "built-in datasets are loaded by scikit-learn on the agent: there is no file to preview"
NO_DELETE = "built-in datasets ship with the agents and cannot be deleted"


def builtin_datasets(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows for the built-in datasets (those the controller lists or its workloads offer when `names` is given: a
    name this app does not know is listed without its shape)."""
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
    """Rows x features (a built-in) or rows x columns (a table); "" for a folder."""
    if not d.get("builtin"):
        return f"{d['rows']} rows x {len(d['columns'])} columns" if d.get("format") else ""
    if not d["rows"]:
        return ""
    text = f"{d['rows']} rows x {d['features']} features"
    return text + " by default (parameters of the job)" if d["configurable"] else text


def latest(d: dict[str, Any]) -> dict[str, Any]:
    """The latest version's record ({} for a built-in)."""
    versions = d.get("versions") or []
    return dict(versions[-1]) if versions else {}


def source(d: dict[str, Any]) -> str:
    return "builtin" if d.get("builtin") else str(latest(d).get("source") or "upload")


def _files(d: dict[str, Any]) -> int:
    return int(latest(d).get("files") or (1 if d.get("sha256") else 0))


def _size(d: dict[str, Any]) -> int:
    return int(latest(d).get("bytes") or d.get("size") or 0)


def _about(d: dict[str, Any]) -> str:
    if d.get("builtin"):
        return f"{d.get('task') or ''}: {d.get('summary') or ''}".strip(": ")
    url = latest(d).get("url")
    return str(url) if url else (shape_text(d) or "folder")


class ReferenceDialog(QDialog):
    """Name and s3:// or file:// URL of a reference to add."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add a reference")
        self.name = QLineEdit()
        self.name.setPlaceholderText("photos")
        self.url = QLineEdit()
        self.url.setPlaceholderText("s3://bucket/prefix or file:///mnt/share/folder")
        form = QFormLayout(self)
        form.addRow("Dataset name", self.name)
        form.addRow("URL", self.url)
        form.addRow(QLabel("Nothing is copied: the listing (paths, sizes, ETags or mtimes) becomes a version."))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)


class DatasetsView(View):
    title = "Datasets"
    icon = "datasets"
    use_in_job = Signal(str)  # NAME:VERSION (a built-in: its name): open the submit dialog with it chosen
    builtins_changed = Signal(list)  # the built-in datasets the controller offers (the welcome pane lists them)

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__(bridge, notify)
        self.builtins = builtin_datasets()
        self.uploads: list[dict[str, Any]] = []  # the stored datasets (no built-ins)
        self.shown_ref = ""  # NAME:VERSION whose tree is shown
        self.preview_path = ""  # the file whose preview is awaited or shown
        self.select_after = ""  # a dataset just uploaded: selected once the list holds it
        self.model = RowTableModel(
            [
                Column("Name", lambda d: d["name"], tooltip=_about),
                Column("Source", source),
                Column(
                    "Latest",
                    lambda d: f"v{d['latest_version']}" if d.get("latest_version") else "",
                    sort=lambda d: d.get("latest_version", 0),
                ),
                Column("Versions", lambda d: str(len(d.get("versions") or [])) if not d.get("builtin") else ""),
                Column("Files", lambda d: str(_files(d)) if not d.get("builtin") else "", sort=_files),
                Column("Size", lambda d: human_bytes(_size(d)) if not d.get("builtin") else "", sort=_size),
                Column("Table / about", _about),
                Column(
                    "Updated",
                    lambda d: clock(latest(d).get("created_at") or d.get("created_at")),
                    sort=lambda d: latest(d).get("created_at") or d.get("created_at") or 0.0,
                ),
            ],
            key=lambda d: f"{BUILTIN_KIND}:{d['name']}" if d.get("builtin") else d["name"],
        )
        self.model.set_rows(self.builtins)
        self.table, self.proxy = data_table(self.model, name="datasets_table")
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        for column, width in ((0, 170), (1, 70), (2, 60), (3, 70), (4, 70), (5, 90), (6, 300)):
            self.table.setColumnWidth(column, width)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._selection_changed())
        add_row_menu(self.table, self._row_actions)

        self.upload_folder_button = action_button(
            "Upload folder…", "a folder tree as the next version (only new files and chunks are sent)"
        )
        self.upload_button = action_button("Upload file…", "one file as the next version (a CSV/Parquet is a table)")
        self.reference_button = action_button("Add reference…", "an s3:// prefix or file:// folder, not copied")
        self.use_button = action_button("Use in a new job…", "open the submit dialog with this version chosen")
        self.delete_version_button = action_button("Delete version…", "refused while jobs or models use it")
        self.refresh_button = action_button("Refresh")
        self.upload_folder_button.clicked.connect(self.choose_upload_folder)
        self.upload_button.clicked.connect(self.choose_upload)
        self.reference_button.clicked.connect(self.choose_reference)
        self.use_button.clicked.connect(self._use_selected)
        self.delete_version_button.clicked.connect(self.ask_delete_version)
        self.refresh_button.clicked.connect(self.refresh)
        self.filter_text = QLineEdit()
        self.filter_text.setObjectName("dataset_filter")
        self.filter_text.setPlaceholderText("filter by name, source…")
        self.filter_text.setClearButtonEnabled(True)
        self.filter_text.textChanged.connect(self.proxy.setFilterFixedString)
        bar = QHBoxLayout()
        for b in (
            self.upload_folder_button,
            self.upload_button,
            self.reference_button,
            self.use_button,
            self.delete_version_button,
            self.refresh_button,
        ):
            bar.addWidget(b)
        bar.addStretch(1)
        bar.addWidget(self.filter_text, 1)

        self.no_uploads = QLabel(
            "No datasets of your own yet: Upload folder… (e.g. class_name/*.png images), Upload file… (a CSV or "
            "Parquet table) or Add reference… (s3:// or file://). The built-in datasets need no upload."
        )
        self.no_uploads.setObjectName("no_uploads")
        self.no_uploads.setWordWrap(True)

        self.versions = QComboBox()
        self.versions.setObjectName("version_picker")
        self.versions.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.versions.setMinimumContentsLength(28)
        self.versions.currentIndexChanged.connect(self._version_chosen)
        self.version_info = QLabel()
        self.version_info.setObjectName("version_info")
        self.version_info.setWordWrap(True)
        self.version_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        version_row = QHBoxLayout()
        version_row.addWidget(QLabel("Version"))
        version_row.addWidget(self.versions)
        version_row.addWidget(self.version_info, 1)
        self.tree = FileTree()
        self.tree.file_chosen.connect(self.preview_file)
        self.tree.more_wanted.connect(self._load_more)
        self.pane = PreviewPane()
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self.tree)
        lower.addWidget(self.pane)
        lower.setSizes([380, 520])
        below = QWidget()
        below_layout = QVBoxLayout(below)
        below_layout.setContentsMargins(0, 0, 0, 0)
        below_layout.addLayout(version_row)
        below_layout.addWidget(lower, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(below)
        split.setSizes([240, 420])
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.no_uploads)
        layout.addWidget(split, 1)
        bridge.connected.connect(lambda _info: self._connected())
        self._update_buttons()

    # the preview's caption and table, by the names the window's tests and screenshots use
    @property
    def preview_label(self) -> QLabel:
        return self.pane.label

    @property
    def preview(self) -> QTableWidget:
        return self.pane.table

    def activated(self) -> None:
        self.refresh()

    def _connected(self) -> None:
        """The controller's workloads say which built-in datasets exist there (ListDatasets lists them too)."""

        def offered(workloads: list[dict[str, Any]]) -> None:
            names = sorted({name for w in workloads for name in w.get("datasets", ()) if w.get("tasks")})
            if names:
                self.builtins = builtin_datasets(names)
                self.builtins_changed.emit(self.builtins)

        self.run(lambda c: c.workloads(), offered, "cannot load the workload schemas")
        self.refresh()

    def refresh(self) -> None:
        self.run(lambda c: c.datasets(), self.set_uploads, "cannot list datasets")

    def set_uploads(self, datasets: list[dict[str, Any]]) -> None:
        """The controller's list: stored datasets, then the built-ins it lists (each once; an older controller
        lists none, and this app's own list stands in)."""
        self.uploads = [d for d in datasets if not d.get("builtin")]
        listed = [d["name"] for d in datasets if d.get("builtin")]
        builtins = builtin_datasets(listed) if listed else self.builtins
        self.model.set_rows(self.uploads + builtins)
        self.no_uploads.setVisible(not self.uploads)
        self._update_buttons()
        if self.select_after and self.model.find(self.select_after) >= 0:
            self.select(self.select_after)
            self.select_after = ""
        entry = self.selected()
        if entry is not None and not entry.get("builtin"):
            self._fill_versions(entry)  # a new version shows in the picker (the one shown stays chosen)

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

    def chosen_ref(self) -> str:
        """NAME:VERSION of the version picked ("" for none or a built-in)."""
        entry = self.selected()
        version = self.versions.currentData()
        return f"{entry['name']}:{version}" if entry and not entry.get("builtin") and version else ""

    def _update_buttons(self) -> None:
        entry = self.selected()
        builtin = bool(entry and entry.get("builtin"))
        self.delete_version_button.setEnabled(entry is not None and not builtin)
        self.delete_version_button.setToolTip(NO_DELETE if builtin else "refused while jobs or models use it")
        self.use_button.setEnabled(entry is not None)

    def _selection_changed(self) -> None:
        self._update_buttons()
        entry = self.selected()
        if entry is None:
            return
        if entry.get("builtin"):  # nothing to ask the controller: say what it is instead
            self.versions.blockSignals(True)
            self.versions.clear()
            self.versions.blockSignals(False)
            self.version_info.setText("built-in: ships with the agents")
            self.shown_ref = ""
            self.tree.show_version("")
            self.pane.clear(
                f"{entry['name']} (built-in, {entry['task']}): {entry['summary']}. No preview: {NO_PREVIEW}."
            )
            return
        self._fill_versions(entry)

    def _fill_versions(self, entry: dict[str, Any]) -> None:
        """The picker: newest first; keeps the version shown when it still exists, else the latest."""
        keep = self.shown_ref.rpartition(":")[2] if self.shown_ref.startswith(entry["name"] + ":") else ""
        self.versions.blockSignals(True)
        self.versions.clear()
        for v in reversed(entry.get("versions") or []):
            text = f"v{v['version']} · {v['source']} · {v['files']} files · {human_bytes(v['bytes'])}"
            self.versions.addItem(text, v["version"])
        index = self.versions.findData(int(keep)) if keep.isdigit() else -1
        self.versions.setCurrentIndex(max(0, index))
        self.versions.blockSignals(False)
        if self.chosen_ref() != self.shown_ref:
            self._version_chosen()

    def select_version(self, version: int) -> None:
        self.versions.setCurrentIndex(self.versions.findData(version))

    def _version_chosen(self, *_: object) -> None:
        ref = self.chosen_ref()
        if not ref or ref == self.shown_ref:
            return
        self.shown_ref = ref
        self.tree.show_version(ref)
        self.version_info.setText("loading…")
        self.pane.clear("Select a file to preview it")
        self._load_page(ref, "")

    def _load_page(self, ref: str, cursor: str) -> None:
        def shown(page: dict[str, Any]) -> None:
            if ref != self.shown_ref:
                return  # the user picked another version meanwhile
            if not cursor:
                self.version_info.setText(_version_text(page["version"]))
            self.tree.add_page(ref, page["files"], page["next_cursor"])
            files = page["files"]
            if not cursor and len(files) == 1 and not page["next_cursor"]:
                self.tree.select_path(files[0]["path"])  # one file (a table): previewed at once

        self.run(lambda c: c.dataset(ref, limit=PAGE, cursor=cursor), shown, f"cannot list the files of {ref}")

    def _load_more(self, cursor: str) -> None:
        self._load_page(self.tree.ref, cursor)

    def preview_file(self, file: dict[str, Any]) -> None:
        ref, path = self.tree.ref, file["path"]
        self.preview_path = path
        self.pane.label.setText(f"{ref} · {path}: loading…")

        def shown(p: Preview) -> None:
            if (p.ref, p.path) == (self.shown_ref, self.preview_path):  # not a file clicked past meanwhile
                self.pane.show_preview(p)

        def failed(message: str) -> None:
            if (ref, path) == (self.shown_ref, self.preview_path):
                self.pane.clear(f"cannot preview {ref} {path}: {message}")

        self.bridge.call(lambda c: fetch_preview(c, ref, file), shown, failed)

    def _row_actions(self, rows: list[dict[str, Any]]) -> list[Any]:
        entry = rows[0] if len(rows) == 1 else None
        builtin = bool(entry and entry.get("builtin"))
        version = menu_action("Delete version…", self.ask_delete_version, entry is not None and not builtin)
        delete = menu_action("Delete dataset…", self.ask_delete, entry is not None and not builtin)
        if builtin:
            version.setToolTip(NO_DELETE)
            delete.setToolTip(NO_DELETE)
        return [menu_action("Use in a new job…", self._use_selected, entry is not None), None, version, delete]

    def _use_selected(self) -> None:
        entry = self.selected()
        if entry is not None:
            self.use_in_job.emit(self.chosen_ref() or entry["name"])

    # ---- new versions

    def choose_upload_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Upload a folder as a dataset version")
        if path:
            self._ask_name_and_upload(Path(path))

    def choose_upload(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Upload a file as a dataset version", "", "Data (*.csv *.parquet);;All files (*)"
        )
        if path:
            self._ask_name_and_upload(Path(path))

    def _ask_name_and_upload(self, path: Path) -> None:
        entry = self.selected()
        default = entry["name"] if entry and not entry.get("builtin") else (path.stem if path.is_file() else path.name)
        name, ok = QInputDialog.getText(self, "Dataset name", "Upload as (a new version of) dataset:", text=default)
        if ok and name.strip():
            self.upload(path, name.strip())

    def upload(self, path: Path, name: str | None = None) -> None:
        """A file or a folder as the next version of `name` (hashed and sent off the GUI thread)."""

        def done(v: dict[str, Any]) -> None:
            if v["unchanged"]:
                self.notify(f"{v['name']}: unchanged, still v{v['version']} (nothing sent)", False)
            else:
                sent = human_bytes(v.get("uploaded_bytes", 0))
                self.notify(f"uploaded {v['name']} v{v['version']}: {v['files']} files, {sent} sent", False)
            self.shown_ref = ""  # the new version is shown once the list arrives
            self.select_after = v["name"]
            self.refresh()

        self.notify(f"uploading {path.name}…", False)
        self.run(lambda c: c.upload_dataset_version(path, name), done, f"cannot upload {path}")

    def choose_reference(self) -> None:
        dialog = ReferenceDialog(self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.add_reference(dialog.name.text().strip(), dialog.url.text().strip())

    def add_reference(self, name: str, url: str) -> None:
        def done(v: dict[str, Any]) -> None:
            state = f"unchanged, still v{v['version']}" if v["unchanged"] else f"v{v['version']}, {v['files']} files"
            self.notify(f"{v['name']}: reference {v['url']} ({state})", False)
            self.refresh()

        self.run(lambda c: c.add_dataset_reference(name, url), done, f"cannot add {url} as {name or '?'}")

    # ---- deleting

    def ask_delete_version(self) -> None:
        ref = self.chosen_ref()
        if not ref:
            return
        answer = QMessageBox.question(
            self, "Delete a version", f"Delete version {ref}? (refused while a job or a model uses it)"
        )
        if answer == QMessageBox.StandardButton.Yes:
            self._delete(ref)

    def ask_delete(self) -> None:
        entry = self.selected()
        if entry is None or entry.get("builtin"):
            return
        answer = QMessageBox.question(self, "Delete dataset", f"Forget dataset {entry['name']} and all its versions?")
        if answer == QMessageBox.StandardButton.Yes:
            self._delete(entry["name"])

    def _delete(self, ref: str) -> None:
        def deleted(_entry: dict[str, Any]) -> None:
            self.notify(f"deleted {ref}", False)
            self.shown_ref = ""
            self.refresh()

        self.run(lambda c: c.delete_dataset(ref), deleted, f"cannot delete {ref}")


def _version_text(v: dict[str, Any] | None) -> str:
    if not v:
        return ""
    where = f" · {v['url']}" if v["url"] else ""
    users = f" · used by {', '.join(v['used_by'][:5])}" if v["used_by"] else ""
    return (
        f"{v['name']}:{v['version']} · {v['source']}{where} · {v['files']} files · {human_bytes(v['bytes'])} · "
        f"{clock(v['created_at'])} · content {v['content_id'][:12]}{users}"
    )
