"""The submit dialog's Project tab: a folder, scanned as it will be sent, and the command to run in it (issue 19).

The scan (`tensorfleet_desktop.project.snapshot`: ignore rules, hashes, git) runs in a worker thread, never on the
GUI thread; a folder edit rescans after a pause (debounced) and a result older than the latest request is dropped.
The form is checked with the SDK's own helpers (`check_command`, `check_env`, `project_job_spec`: the functions the
controller checks the spec with, core.project_spec) and its widgets keep to the controller's limits, so what the
tab accepts is what `submit_project` sends; the controller stays the judge at submit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    QUrl,
    Signal,
)
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_agent.runtime.envs import ENV_FILES
from tensorfleet_desktop.client import InvalidRequest, check_command, check_env, project_job_spec
from tensorfleet_desktop.project import DEFAULT_MAX_BYTES, ProjectError, Snapshot, snapshot
from tensorfleet_desktop.ui.formatting import human_bytes
from tensorfleet_desktop.ui.table_model import ROW_ROLE, SORT_ROLE
from tensorfleet_desktop.ui.widgets import add_row_menu, data_table, menu_action

Index = QModelIndex | QPersistentModelIndex
#: Bridge.run_blocking: runs fn in a worker thread, calls on_result(result) or on_error(message) in the GUI thread
RunBlocking = Callable[[Callable[[], Any], Callable[[Any], None], Callable[[str], None]], object]
RESCAN_DELAY_MS = 400
MiB = 1 << 20
MAX_ENV_CHOICES = 50
MAX_NAME = 200  # a job name's characters (the controller's limit)


@dataclass(frozen=True)
class Scan:
    """A folder as it will be sent: the snapshot and the env files found in it (worked out in the worker)."""

    snapshot: Snapshot
    paths: frozenset[str]
    env_files: tuple[str, ...]  # every file that can build an env, top-level first
    auto_env: str | None  # what env "auto" picks on the agent (ENV_FILES order), None: the agent's own Python


def env_files(paths: frozenset[str]) -> tuple[str, ...]:
    """The files a user may name as the env: the auto candidates and requirements*.txt, anywhere in the project."""
    found = [
        p
        for p in paths
        if (name := PurePosixPath(p).name) in ENV_FILES or (name.startswith("requirements") and name.endswith(".txt"))
    ]
    return tuple(sorted(found, key=lambda p: (p.count("/"), p))[:MAX_ENV_CHOICES])


def auto_env(paths: frozenset[str]) -> str | None:
    """env "auto" as the agent applies it to the materialized folder (uv.lock > pyproject.toml > requirements.txt)."""
    return next((name for name in ENV_FILES if name in paths), None)


def scan_project(folder: str, max_bytes: int) -> Scan:
    """Blocking: run it in a worker thread. ProjectError says what is wrong with the folder."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ProjectError(f"{folder} is not a folder")
    snap = snapshot(path, max_bytes)
    paths = frozenset(e.path for e in snap.entries)
    return Scan(snap, paths, env_files(paths), auto_env(paths))


class FilesModel(QAbstractTableModel):
    """The files a snapshot sends (path, size); reset as a whole on each scan (tens of thousands of rows)."""

    HEADERS = ("Path", "Size")

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, int]] = []

    def set_files(self, rows: list[tuple[str, int]]) -> None:
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else 2

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        path, size = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return path if index.column() == 0 else human_bytes(size)
        if role == SORT_ROLE:
            return path if index.column() == 0 else size
        if role == ROW_ROLE:  # what the row menu gets
            return {"path": path, "size": size}
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() == 1:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class ProjectTab(QWidget):
    """Folder, env, command and resources of a project job; `changed` fires whenever what it would send changes."""

    changed = Signal()

    def __init__(self, run_blocking: RunBlocking, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_blocking = run_blocking  # the bridge's: the scan runs in its worker threads
        self.scan: Scan | None = None
        self.scan_error = ""
        self.scanning = False
        self._generation = 0  # the latest scan asked for; older results are dropped

        self.folder = QLineEdit()
        self.folder.setObjectName("project_folder")
        self.folder.setPlaceholderText("the project folder (its .gitignore and .tensorfleetignore apply)")
        self.browse_button = QPushButton("Choose folder…")
        self.browse_button.clicked.connect(self.choose_folder)
        self.rescan_button = QPushButton("Rescan")
        self.rescan_button.setToolTip("scan the folder again (after editing files)")
        self.rescan_button.clicked.connect(self.rescan)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder, 1)
        folder_row.addWidget(self.browse_button)
        folder_row.addWidget(self.rescan_button)
        self.max_size = QSpinBox()
        self.max_size.setObjectName("max_project_size")
        self.max_size.setRange(1, 1 << 20)
        self.max_size.setSuffix(" MiB")
        self.max_size.setValue(DEFAULT_MAX_BYTES // MiB)
        self.max_size.setToolTip("a larger project is refused before anything is read or sent")

        self.status = QLabel("Choose a project folder.")
        self.status.setObjectName("project_status")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.git_label = QLabel("")
        self.git_label.setObjectName("project_git")
        self.git_label.setWordWrap(True)
        self.git_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.env = QComboBox()
        self.env.setObjectName("project_env")
        self.env.setToolTip(
            "auto: uv.lock > pyproject.toml > requirements.txt > none; none: the agent's own Python; "
            "or the file to build the env from"
        )
        self._fill_env(None)
        self.command = QLineEdit()
        self.command.setObjectName("project_command")
        self.command.setPlaceholderText("python -m mypkg.train --lr 3e-4   (split as a shell would)")
        self.name = QLineEdit()
        self.name.setObjectName("project_name")
        self.name.setPlaceholderText("the folder's name")
        self.name.setMaxLength(MAX_NAME)  # the other fields' widgets keep to the controller's limits too
        self.workers = QSpinBox()
        self.workers.setObjectName("project_workers")
        self.workers.setRange(1, 256)
        self.workers.setToolTip("N ranks with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...)")
        self.gpus = QSpinBox()
        self.gpus.setObjectName("project_gpus")
        self.gpus.setRange(0, 64)
        self.retries = QSpinBox()
        self.retries.setRange(0, 100)
        self.retries.setValue(2)

        self.files_model = FilesModel()
        self.files_table, self.files_proxy = data_table(self.files_model, sort_column=1, descending=True)
        self.files_table.setObjectName("project_files")
        self.files_table.setColumnWidth(0, 380)
        add_row_menu(self.files_table, self._file_actions)

        source = QGroupBox("Project")
        source_layout = QVBoxLayout(source)
        source_form = QFormLayout()
        source_form.addRow("Folder", folder_row)
        source_form.addRow("Size limit", self.max_size)
        source_layout.addLayout(source_form)
        source_layout.addWidget(self.status)  # outside the form: a wrapped label in a form row leaves gaps
        source_layout.addWidget(self.git_label)
        run = QGroupBox("Run")
        run_form = QFormLayout(run)
        run_form.addRow("Command", self.command)
        run_form.addRow("Environment", self.env)
        run_form.addRow("Name", self.name)
        run_form.addRow("Workers (ranks)", self.workers)
        run_form.addRow("GPUs per worker", self.gpus)
        run_form.addRow("Retries", self.retries)
        files = QGroupBox("Files that will be sent")
        files_layout = QVBoxLayout(files)
        files_layout.addWidget(self.files_table)
        layout = QVBoxLayout(self)
        layout.addWidget(source)
        layout.addWidget(run)
        layout.addWidget(files, 1)

        self._rescan_timer = QTimer(self)
        self._rescan_timer.setSingleShot(True)
        self._rescan_timer.setInterval(RESCAN_DELAY_MS)
        self._rescan_timer.timeout.connect(self.rescan)
        self.folder.textChanged.connect(self._folder_edited)
        self.max_size.valueChanged.connect(self._folder_edited)
        for signal in (self.command.textChanged, self.name.textChanged):
            signal.connect(self.changed)
        for spin in (self.workers, self.gpus, self.retries):
            spin.valueChanged.connect(self.changed)
        self.env.currentIndexChanged.connect(self.changed)

    def _file_actions(self, rows: list[dict[str, Any]]) -> list[QAction | None]:
        if not rows or self.scan is None:
            return []
        path = self.scan.snapshot.root / rows[0]["path"]
        return [
            menu_action("Copy path", lambda: QGuiApplication.clipboard().setText(str(path))),
            # the desktop's file manager opens it: openUrl hands off and returns, nothing waits here
            menu_action("Open folder", lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(path.parent)))),
        ]

    # ---- the folder and its scan

    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Project folder", self.folder.text().strip())
        if path:
            self.set_folder(path)

    def set_folder(self, path: str | Path) -> None:
        self.folder.setText(str(path))
        self.rescan()

    def _folder_edited(self) -> None:
        self._generation += 1  # a scan under way is for a folder no longer asked for
        self.scanning = bool(self.folder.text().strip())
        self._rescan_timer.start()
        self.changed.emit()

    def rescan(self) -> None:
        """Scan the folder now, in a worker thread; the result (or its error) lands in `_scanned`."""
        self._rescan_timer.stop()
        folder = self.folder.text().strip()
        self._generation += 1
        generation = self._generation
        if not folder:
            self.scanning = False
            self.rescan_button.setEnabled(True)
            self._show(None, "")
            return
        self.scanning = True
        self.status.setText(f"scanning {folder}…")
        self.rescan_button.setEnabled(False)
        self.changed.emit()
        max_bytes = self.max_size.value() * MiB
        self.run_blocking(
            lambda: scan_project(folder, max_bytes),
            lambda scan: self._scanned(generation, scan, ""),
            lambda error: self._scanned(generation, None, error),
        )

    def _scanned(self, generation: int, scan: Scan | None, error: str) -> None:
        if generation != self._generation:
            return  # the folder changed meanwhile; its own scan follows
        self.scanning = False
        self.rescan_button.setEnabled(True)
        self._show(scan, error)

    def _show(self, scan: Scan | None, error: str) -> None:
        self.scan, self.scan_error = scan, error
        if scan is None:
            self.files_model.set_files([])
            self.git_label.setText("")
            self._fill_env(None)
            self.status.setStyleSheet("color: #d1242f;" if error else "")
            self.status.setText(error or "Choose a project folder.")
            self.changed.emit()
            return
        snap = scan.snapshot
        self.files_model.set_files([(e.path, e.size) for e in snap.entries])
        self.status.setStyleSheet("")
        env = f"environment from {scan.auto_env}" if scan.auto_env else "no env file: the agent's own Python"
        self.status.setText(
            f"{snap.files} files, {human_bytes(snap.bytes)} will be sent (only what the controller lacks is "
            f"uploaded); {env}; scanned in {snap.scan_seconds:.2f} s"
        )
        self.git_label.setText("Git: " + git_summary(snap.git.as_dict() if snap.git is not None else None))
        self.name.setPlaceholderText(snap.root.name)
        self._fill_env(scan)
        self.changed.emit()

    def _fill_env(self, scan: Scan | None) -> None:
        chosen = self.env.currentData() or "auto"
        self.env.blockSignals(True)
        self.env.clear()
        found = scan.auto_env if scan is not None else None
        self.env.addItem(f"auto ({found or 'none found'})" if scan is not None else "auto", "auto")
        self.env.addItem("none (the agent's own Python)", "none")
        for path in scan.env_files if scan is not None else ():
            self.env.addItem(path, path)
        index = self.env.findData(chosen)
        self.env.setCurrentIndex(max(0, index))
        self.env.blockSignals(False)

    # ---- what it sends

    def fields(self) -> dict[str, Any]:
        """The job fields besides the project and the command (defaults left out, as the CLI sends them)."""
        fields: dict[str, Any] = {}
        if self.name.text().strip():
            fields["name"] = self.name.text().strip()
        for key, spin, default in (
            ("num_workers", self.workers, 1),
            ("gpus", self.gpus, 0),
            ("max_retries", self.retries, 2),
        ):
            if spin.value() != default:
                fields[key] = spin.value()
        return fields

    def request(self) -> dict[str, Any]:
        """What `AsyncClient.submit_project` is called with: path, command, env, max_project_size, fields."""
        scan = self.scan
        if scan is None:
            raise InvalidRequest("no project scanned")
        return {
            "path": str(scan.snapshot.root),
            "command": check_command(self.command.text()),
            "env": self.env.currentData() or "auto",
            "max_project_size": self.max_size.value() * MiB,
            "fields": self.fields(),
        }

    def problem(self) -> tuple[str, str] | None:
        """(field, message) of the first thing that stops a submit, None when the form can be sent."""
        if not self.folder.text().strip():
            return "project", "choose a project folder"
        if self.scanning:
            return "project", "scanning the folder…"
        if self.scan is None:
            return "project", self.scan_error or "the folder has not been scanned"
        snap = self.scan.snapshot
        try:
            argv = check_command(self.command.text())
            env = check_env(self.env.currentData() or "auto", self.scan.paths, snap.root)
            upload = {
                "manifest_id": snap.id,
                "files": snap.files,
                "bytes": snap.bytes,
                "git": snap.git.as_dict() if snap.git is not None else None,
                "path": str(snap.root),
            }
            project_job_spec(upload, argv, env, **self.fields())  # the controller parses it again at submit
        except InvalidRequest as exc:  # "command: is empty ...", "env: ...": the field, then why
            text = str(exc)
            field = next((f for f in ("command", "env") if text.startswith(f)), "project")
            return field, text.removeprefix(f"{field}: ")
        return None

    def field_widgets(self) -> dict[str, QWidget]:
        return {
            "project": self.folder,
            "command": self.command,
            "env": self.env,
            "name": self.name,
            "num_workers": self.workers,
            "gpus": self.gpus,
            "max_retries": self.retries,
        }

    def widget_for(self, field: str) -> QWidget | None:
        """The widget a spec field's error points at ("project.env" -> the env choice, "command[2]" -> command)."""
        parts = field.replace("[", ".").split(".")
        if parts[:2] == ["project", "env"]:
            return self.env
        return self.field_widgets().get(parts[0])


def git_summary(git: dict[str, Any] | None) -> str:
    """One line: commit, branch, clean or dirty (how many untracked files, whether the diff was cut)."""
    if not git:
        return "not a git repository"
    commit = git.get("commit") or ""
    head = f"commit {commit[:12]}" if commit else "no commit yet"
    branch = f" on {git['branch']}" if git.get("branch") else " (detached HEAD)" if commit else ""
    if git.get("subdir"):
        branch += f", folder {git['subdir']}"
    if not git.get("dirty"):
        return f"{head}{branch}, clean"
    untracked = len(git.get("untracked") or ())
    changed = git.get("diff", "").count("\ndiff --git ") + git.get("diff", "").startswith("diff --git ")
    parts = [f"{changed} changed file{'s' if changed != 1 else ''}"] if changed else []
    if untracked:
        parts.append(f"{untracked} untracked")
    cut = " (diff truncated)" if git.get("diff_truncated") else ""
    return f"{head}{branch}, dirty: {', '.join(parts) or 'changes'}{cut}"
