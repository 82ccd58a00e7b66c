"""Job detail's Project tab: where a project job's code came from (command, snapshot, git commit, branch and the
dirty diff as it was submitted) and the environment each task ran in, so a result can be traced to its code."""

from __future__ import annotations

import html
import shlex
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QLabel, QListWidget, QPlainTextEdit, QSplitter, QVBoxLayout, QWidget

from tensorfleet_desktop.ui.formatting import environment_text, human_bytes
from tensorfleet_desktop.ui.project_tab import git_summary


def _row(name: str, value: str) -> str:
    return f"<tr><td style='color:gray; padding-right:12px'>{name}</td><td>{value}</td></tr>"


class ProjectPanel(QWidget):
    """Shows `job["project"]` and each task's `environment` (wire.project_from_pb / environment_from_pb)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary = QLabel()
        self.summary.setObjectName("project_summary")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.untracked_label = QLabel("Untracked files (sent, not in any commit)")
        self.untracked = QListWidget()
        self.untracked.setObjectName("project_untracked")
        self.diff_label = QLabel("Uncommitted changes (git diff HEAD)")
        self.diff = QPlainTextEdit()
        self.diff.setObjectName("project_diff")
        self.diff.setReadOnly(True)
        self.diff.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.diff.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.untracked_box = untracked = QWidget()
        untracked_layout = QVBoxLayout(untracked)
        untracked_layout.setContentsMargins(0, 0, 0, 0)
        untracked_layout.addWidget(self.untracked_label)
        untracked_layout.addWidget(self.untracked, 1)
        self.diff_box = diff = QWidget()
        diff_layout = QVBoxLayout(diff)
        diff_layout.setContentsMargins(0, 0, 0, 0)
        diff_layout.addWidget(self.diff_label)
        diff_layout.addWidget(self.diff, 1)
        self.split = QSplitter(Qt.Orientation.Vertical)
        self.split.addWidget(untracked)
        self.split.addWidget(diff)
        self.split.setSizes([120, 480])
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.split, 1)

    def show_job(self, job: dict[str, Any]) -> None:
        project = job.get("project") or {}
        git = project.get("git")
        rows = [
            _row("Command", f"<code>{html.escape(shlex.join(project.get('command') or []))}</code>"),
            _row(
                "Snapshot",
                f"{project.get('files', 0)} files, {human_bytes(project.get('bytes', 0))} · manifest "
                f"<code>{html.escape(str(project.get('manifest_id', ''))[:16])}</code>",
            ),
            _row("Environment file", html.escape(project.get("env") or "auto")),
            _row("Git", html.escape(git_summary(git))),
        ]
        if git:
            if git.get("commit"):
                rows.append(_row("Commit", f"<code>{html.escape(git['commit'])}</code>"))
            if git.get("remote"):
                rows.append(_row("Remote", html.escape(git["remote"])))
            if git.get("subdir"):
                rows.append(_row("Folder in the repository", html.escape(git["subdir"])))
        for task in job.get("task_list") or ():
            env = task.get("environment")
            if task.get("state") == "PREPARING" and not env:
                text = "<span style='color:#8250df'>PREPARING: laying out the files, building the env…</span>"
            elif env:
                extra = ""
                if env.get("python"):
                    extra += f" · Python {html.escape(str(env['python']))}"
                if env.get("materialize_seconds"):
                    extra += f" · files laid out in {float(env['materialize_seconds']):.2f} s"
                text = html.escape(environment_text(env)) + extra
            else:
                continue
            rows.append(_row(f"Task {task['index']} env", text))
        self.summary.setText("<table>" + "".join(rows) + "</table>")
        untracked = list((git or {}).get("untracked") or ())
        self.untracked.clear()
        self.untracked.addItems(untracked)
        self.untracked_label.setText(f"Untracked files, sent with the job ({len(untracked)})")
        self.untracked_box.setVisible(bool(untracked))
        diff = (git or {}).get("diff") or ""
        cut = " (truncated: the full diff was larger)" if (git or {}).get("diff_truncated") else ""
        self.diff_label.setText(f"Uncommitted changes at submit (git diff HEAD){cut}")
        self.diff.setPlainText(diff)
        self.diff_box.setVisible(bool(diff))
