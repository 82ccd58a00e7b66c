"""The submit dialog's Project tab and a project job's detail (issue 19), pytest-qt offscreen.

The tab's tests run the dialog on a real Bridge (its worker thread does the scans) without a controller; the
submit test runs a real controller process (no agent: the job stays queued, which is all a submit needs).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFontInfo

from helpers.controller import ControllerProcess
from helpers.project_tree import git, write_tree
from tensorfleet_agent.workloads.registry import all_workloads
from tensorfleet_desktop.project import snapshot
from tensorfleet_desktop.ui import project_tab
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.formatting import STATE_COLORS
from tensorfleet_desktop.ui.job_detail import JobDetailView
from tensorfleet_desktop.ui.jobs_view import JobsView
from tensorfleet_desktop.ui.submit_dialog import INVALID_STYLE, SubmitDialog

MiB = 1 << 20
WAIT_MS = 15_000


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot's hash cache and the app's settings away from the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(folder, thread id) of every snapshot the tab takes."""
    seen: list[tuple[str, int]] = []
    real = snapshot

    def recorded(directory: Any, max_bytes: int) -> Any:
        seen.append((str(directory), threading.get_ident()))
        return real(directory, max_bytes)

    monkeypatch.setattr("tensorfleet_desktop.ui.project_tab.snapshot", recorded)
    return seen


@pytest.fixture
def dialog(qtbot: Any, bridge: Bridge) -> SubmitDialog:
    workloads = [w.to_dict() for w in all_workloads()]  # what ListWorkloads sends
    d = SubmitDialog(workloads, [], ["lab-box"], run_blocking=bridge.run_blocking)
    qtbot.addWidget(d)
    d.show()
    d.tabs.setCurrentWidget(d.project)
    return d


def project(root: Path, with_git: bool = True) -> Path:
    write_tree(
        root,
        {
            "pkg/__init__.py": "",
            "pkg/train.py": "import pkg.model\nprint('training')\n",
            "pkg/model.py": "WIDTH = 64\n" * 200,
            "configs/base.yaml": "lr: 0.001\n",
            "requirements.txt": "numpy\n",
            "pyproject.toml": "[project]\nname = 'demo'\nversion = '0.1'\n",
            ".gitignore": "data/\n*.log\n",
            "data/big.bin": b"\0" * 4096,
            "train.log": "old run\n",
        },
    )
    if with_git:
        git(root, "init", "-q", "-b", "main")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "first")
        (root / "pkg" / "model.py").write_text("WIDTH = 128\n", encoding="utf-8")  # a dirty change
        (root / "notes.md").write_text("untracked\n", encoding="utf-8")
    return root


def scanned(qtbot: Any, d: SubmitDialog) -> None:
    qtbot.waitUntil(
        lambda: not d.project.scanning and (d.project.scan is not None or bool(d.project.scan_error)), timeout=WAIT_MS
    )


def listed(d: SubmitDialog) -> list[tuple[str, str]]:
    """The files table as shown (its sort applied): (path, size text)."""
    proxy = d.project.files_proxy
    return [(proxy.index(r, 0).data(), proxy.index(r, 1).data()) for r in range(proxy.rowCount())]


def test_the_tab_scans_a_folder_off_the_gui_thread_and_shows_what_will_be_sent(
    qtbot: Any, dialog: SubmitDialog, scans: list[tuple[str, int]], tmp_path: Path
) -> None:
    root = project(tmp_path / "demo")
    tab = dialog.project
    assert not dialog.ok_button.isEnabled() and "choose a project folder" in dialog.error_label.text()
    tab.set_folder(root)
    scanned(qtbot, dialog)
    assert scans and all(thread != threading.get_ident() for _, thread in scans)  # never on the GUI thread
    assert tab.scan is not None, tab.scan_error
    shown = listed(dialog)
    paths = [p for p, _ in shown]
    assert sorted(paths) == sorted(
        [
            ".gitignore",
            "configs/base.yaml",
            "notes.md",
            "pkg/__init__.py",
            "pkg/model.py",
            "pkg/train.py",
            "pyproject.toml",
            "requirements.txt",
        ]
    )
    assert "data/big.bin" not in paths and "train.log" not in paths  # .gitignore'd
    assert paths[0] == "pyproject.toml" and shown[0][1] == f"{len((root / 'pyproject.toml').read_bytes())} B"
    assert "8 files" in tab.status.text() and "environment from pyproject.toml" in tab.status.text()
    # the env choice: auto (uv.lock > pyproject.toml > requirements.txt), none, each file found
    choices = [tab.env.itemData(i) for i in range(tab.env.count())]
    assert choices == ["auto", "none", "pyproject.toml", "requirements.txt"]
    assert tab.env.itemText(0) == "auto (pyproject.toml)"
    commit = git(root, "rev-parse", "HEAD").strip()
    assert commit[:12] in tab.git_label.text() and "on main" in tab.git_label.text()
    assert "dirty: 1 changed file, 1 untracked" in tab.git_label.text()
    assert tab.name.placeholderText() == "demo"
    # the command decides: empty is refused inline, a command that splits is accepted
    assert not dialog.ok_button.isEnabled() and "command: is empty" in dialog.error_label.text()
    assert tab.command.styleSheet() == INVALID_STYLE
    tab.command.setText("python -m pkg.train --lr 3e-4")
    assert dialog.ok_button.isEnabled(), dialog.error_label.text()
    assert tab.command.styleSheet() == ""
    tab.env.setCurrentIndex(choices.index("requirements.txt"))
    tab.workers.setValue(2)
    request = tab.request()
    assert request["command"] == ["python", "-m", "pkg.train", "--lr", "3e-4"]
    assert request["env"] == "requirements.txt" and request["fields"] == {"num_workers": 2}
    assert request["path"] == str(root.resolve()) and request["max_project_size"] == 200 * MiB


def test_command_that_does_not_split_or_names_nothing_is_refused_inline(
    qtbot: Any, dialog: SubmitDialog, tmp_path: Path
) -> None:
    dialog.project.set_folder(project(tmp_path / "demo", with_git=False))
    scanned(qtbot, dialog)
    assert dialog.project.git_label.text() == "Git: not a git repository"
    for text, said in (
        ('python -c "print(1)', "cannot be split into arguments"),
        ("   ", "command: is empty: say what runs in the project folder"),
        ("''", "command: starts with an empty program name"),
    ):
        dialog.project.command.setText(text)
        assert not dialog.ok_button.isEnabled(), text
        assert said in dialog.error_label.text(), (text, dialog.error_label.text())
    dialog.project.command.setText("python pkg/train.py")
    dialog.project.name.setText("x" * 201)  # the other fields' widgets keep to the controller's limits
    assert dialog.project.name.text() == "x" * 200 and dialog.ok_button.isEnabled(), dialog.error_label.text()
    assert dialog.project.request()["fields"]["name"] == "x" * 200


def test_a_too_large_project_shows_the_largest_files_and_a_rescan_clears_it(
    qtbot: Any, dialog: SubmitDialog, tmp_path: Path
) -> None:
    root = project(tmp_path / "demo", with_git=False)
    (root / "weights.bin").write_bytes(b"\1" * (2 * MiB))
    tab = dialog.project
    tab.max_size.setValue(1)
    tab.set_folder(root)
    scanned(qtbot, dialog)
    assert tab.scan is None
    assert (
        "over the limit of 1.0 MiB" in tab.status.text() and "largest files: weights.bin (2.0 MiB)" in tab.status.text()
    )
    assert "over the limit" in dialog.error_label.text() and not dialog.ok_button.isEnabled()
    assert listed(dialog) == []
    (root / "weights.bin").unlink()
    qtbot.mouseClick(tab.rescan_button, Qt.MouseButton.LeftButton)
    scanned(qtbot, dialog)
    assert tab.scan is not None and "8 files" not in tab.status.text() and "7 files" in tab.status.text()
    # a folder that is not there says so, too
    tab.set_folder(tmp_path / "nowhere")
    scanned(qtbot, dialog)
    assert "is not a folder" in tab.status.text() and not dialog.ok_button.isEnabled()


def test_typing_a_folder_scans_once_after_a_pause(
    qtbot: Any, dialog: SubmitDialog, scans: list[tuple[str, int]], tmp_path: Path
) -> None:
    root = str(project(tmp_path / "demo", with_git=False))
    for end in range(len(root) - 5, len(root) + 1):  # keystrokes
        dialog.project.folder.setText(root[:end])
    assert dialog.project.scanning and "scanning" in dialog.error_label.text()
    scanned(qtbot, dialog)
    qtbot.wait(project_tab.RESCAN_DELAY_MS + 100)
    assert [folder for folder, _ in scans] == [root]
    assert dialog.project.scan is not None


def project_job(state: str = "RUNNING") -> dict[str, Any]:
    """A project job as the SDK hands it over (wire.job_from_pb): its project and each task's environment."""
    diff = "diff --git a/pkg/model.py b/pkg/model.py\n--- a/pkg/model.py\n+++ b/pkg/model.py\n@@ -1 +1 @@\n-A\n+B\n"

    def task(index: int, state: str, env: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "index": index,
            "state": state,
            "node_id": "n1",
            "agent": "lab-box",
            "attempt": 1,
            "progress": 0.0,
            "exit_cause": "",
            "error": "",
            "agent_task_id": f"t{index}",
            "failures": 0,
            "replacements": 0,
            "params": None,
            "metrics": {},
            "started_at": None,
            "finished_at": None,
            "environment": env,
        }

    env = {"source": "requirements.txt", "python": "3.11.9", "files": 8, "bytes": 3000, "materialize_seconds": 0.04}
    return {
        "id": "job-1",
        "name": "demo",
        "state": state,
        "progress": 0.0,
        "tasks": {"total": 3, "completed": 0},
        "metrics": {},
        "model": None,
        "error": "",
        "created_at": time.time(),
        "started_at": time.time(),
        "finished_at": None,
        "algorithm": "project",
        "dataset": "",
        "priority": 0,
        "submitter": "me",
        "spec": {"algorithm": "project", "command": ["python", "-m", "pkg.train"], "project": {"env": "auto"}},
        "task_list": [
            task(0, "RUNNING", {**env, "key": "abcdef0123456789", "cache_hit": True, "build_seconds": 0.0}),
            task(1, "RUNNING", {**env, "key": "abcdef0123456789", "cache_hit": False, "build_seconds": 12.5}),
            task(2, "PREPARING", None),
        ],
        "artifacts": [],
        "project": {
            "manifest_id": "f" * 64,
            "files": 8,
            "bytes": 3000,
            "command": ["python", "-m", "pkg.train", "--lr", "3e-4"],
            "env": "auto",
            "git": {
                "commit": "0123456789abcdef0123456789abcdef01234567",
                "branch": "main",
                "dirty": True,
                "diff": diff,
                "diff_truncated": False,
                "untracked": ["notes.md"],
                "remote": "https://example.invalid/demo.git",
                "subdir": "",
            },
        },
    }


def test_job_detail_shows_the_project_its_diff_and_each_tasks_environment(qtbot: Any, bridge: Bridge) -> None:
    view = JobDetailView(bridge, lambda message, error: None)
    qtbot.addWidget(view)
    job = project_job()
    view._show_job(job)
    assert view.tabs.isTabEnabled(view.tabs.indexOf(view.project_panel))
    panel = view.project_panel
    summary = panel.summary.text()
    assert "python -m pkg.train --lr 3e-4" in summary and "8 files" in summary
    assert "0123456789abcdef0123456789abcdef01234567" in summary and "on main" in summary
    assert "dirty: 1 changed file, 1 untracked" in summary and "https://example.invalid/demo.git" in summary
    assert "cache hit" in summary and "built in 12.5 s" in summary and "PREPARING" in summary
    assert panel.diff.toPlainText() == job["project"]["git"]["diff"] and panel.diff.isReadOnly()
    assert QFontInfo(panel.diff.font()).fixedPitch()
    assert [panel.untracked.item(i).text() for i in range(panel.untracked.count())] == ["notes.md"]
    # the tasks table: environment per task and the PREPARING state in its colour
    model = view.tasks_model
    env_column = [c.title for c in model.columns].index("Environment")
    state_column = [c.title for c in model.columns].index("State")
    texts = [model.index(r, env_column).data() for r in range(3)]
    assert texts == [
        "requirements.txt · abcdef012345 · cache hit",
        "requirements.txt · abcdef012345 · built in 12.5 s",
        "preparing…",
    ]
    assert model.index(2, state_column).data() == "PREPARING"
    color = model.index(2, state_column).data(Qt.ItemDataRole.ForegroundRole)
    assert isinstance(color, QColor) and color.name() == STATE_COLORS["PREPARING"]
    assert "PREPARING" in view.header.text() and "project: python -m pkg.train" in view.header.text()
    # a job that is not a project: no Project tab
    plain = {**job, "project": None, "spec": {"algorithm": "noop"}, "algorithm": "noop"}
    plain["task_list"] = [{**t, "environment": None, "state": "RUNNING"} for t in job["task_list"]]
    view._show_job(plain)
    assert not view.tabs.isTabEnabled(view.tabs.indexOf(view.project_panel))


def test_job_detail_lists_each_attempts_outputs_and_escapes_control_characters_in_names(
    qtbot: Any, bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = JobDetailView(bridge, lambda message, error: None)
    qtbot.addWidget(view)

    def output(name: str, attempt: int) -> dict[str, Any]:
        return {"sha256": f"{attempt}" * 64, "size": 3, "kind": "output", "name": name, "task_index": 0, "step": 0,
                "created_at": time.time(), "attempt": attempt}  # fmt: skip

    job = {**project_job(), "artifacts": [output("ok.txt", 1), output("ok.txt", 2), output("a\nb\x1b[31m", 2)]}
    view._show_job(job)
    model = view.artifacts_model
    titles = [c.title for c in model.columns]
    rows = [(model.index(r, 0).data(), model.index(r, titles.index("Attempt")).data()) for r in range(3)]
    assert rows == [("ok.txt", "1"), ("ok.txt", "2"), ("a\\nb\\x1b[31m", "2")]
    downloads: list[tuple[Any, ...]] = []
    monkeypatch.setattr(view, "run", lambda call, done, error: downloads.append((call, error)))
    view.job_id = job["id"]
    view.download_artifact(job["artifacts"][0], Path("/tmp/x"))  # the row's own attempt, not the latest

    class Recorder:
        def download_artifact(self, *args: Any) -> tuple[Any, ...]:
            return args

    assert downloads[0][0](Recorder()) == ("job-1", "ok.txt", Path("/tmp/x"), 0, 1)


def test_the_jobs_table_says_preparing_while_a_task_prepares(qtbot: Any, bridge: Bridge) -> None:
    view = JobsView(bridge, lambda message, error: None)
    qtbot.addWidget(view)
    view.set_jobs([project_job()])
    state = view.model.index(0, 2)
    assert state.data() == "PREPARING"
    assert state.data(Qt.ItemDataRole.ForegroundRole).name() == STATE_COLORS["PREPARING"]
    view.filter_state.setCurrentText("PREPARING")  # the filter goes by the state shown
    assert view.proxy.rowCount() == 1
    ready = project_job()
    ready["task_list"][2]["state"] = "RUNNING"
    view.set_jobs([ready])
    assert view.model.index(0, 2).data() == "RUNNING" and view.proxy.rowCount() == 0
    view.filter_state.setCurrentText("active")
    assert view.proxy.rowCount() == 1


@pytest.mark.slow
def test_submit_from_the_project_tab_uploads_only_what_is_missing_and_shows_the_project(
    qtbot: Any, controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    from tensorfleet_desktop.ui.app import build_window, create_application

    controller = controller_factory(tmp_path / "controller", extra_args=["--no-mdns"]).start()
    create_application()
    window = build_window(controller.address, data_dir=tmp_path / "gui", autostart=False)
    qtbot.addWidget(window)
    window.show()
    window.bridge.start()
    qtbot.waitUntil(lambda: window.bridge.online, timeout=WAIT_MS)
    root = project(tmp_path / "demo")

    def submit(command: str) -> tuple[SubmitDialog, dict[str, Any]]:
        window.jobs.dialog = None
        qtbot.mouseClick(window.jobs.submit_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: window.jobs.dialog is not None and window.jobs.dialog.isVisible(), timeout=WAIT_MS)
        d = window.jobs.dialog
        assert d is not None and d.tabs.isTabEnabled(1)
        d.tabs.setCurrentWidget(d.project)
        d.project.set_folder(root)
        scanned(qtbot, d)
        d.project.command.setText(command)
        assert d.ok_button.isEnabled(), d.error_label.text()
        with qtbot.waitSignal(d.submitted, timeout=WAIT_MS) as submitted:
            qtbot.mouseClick(d.ok_button, Qt.MouseButton.LeftButton)
        return d, submitted.args[0]

    d, job = submit("python -m pkg.train --lr 3e-4")
    assert not d.isVisible()
    files = d.project.scan.snapshot.files if d.project.scan else 0
    assert job["upload"]["files"] == files == 8 and job["upload"]["uploaded_files"] == 8
    assert job["upload"]["uploaded_bytes"] == job["upload"]["bytes"] > 0
    assert job["name"] == "demo" and job["project"]["command"] == ["python", "-m", "pkg.train", "--lr", "3e-4"]
    assert "uploaded 8 of 8 files" in window.statusBar().currentMessage()
    # unchanged: nothing uploaded again
    _, again = submit("python -m pkg.train")
    assert again["upload"]["uploaded_files"] == 0 and again["upload"]["uploaded_bytes"] == 0
    # the job detail shows where its code came from
    window.show_job(job["id"])
    commit = git(root, "rev-parse", "HEAD").strip()
    qtbot.waitUntil(lambda: commit in window.detail.project_panel.summary.text(), timeout=WAIT_MS)
    assert "on main" in window.detail.project_panel.summary.text()
    assert "WIDTH = 128" in window.detail.project_panel.diff.toPlainText()
    # the folder outgrew the limit between the scan and the submit: the error is shown in the dialog, no crash
    window.jobs.dialog = None
    qtbot.mouseClick(window.jobs.submit_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.jobs.dialog is not None and window.jobs.dialog.isVisible(), timeout=WAIT_MS)
    d = window.jobs.dialog
    assert d is not None
    d.tabs.setCurrentWidget(d.project)
    d.project.max_size.setValue(1)
    d.project.set_folder(root)
    scanned(qtbot, d)
    d.project.command.setText("python -m pkg.train")
    assert d.ok_button.isEnabled(), d.error_label.text()
    (root / "weights.bin").write_bytes(b"\1" * (2 * MiB))
    qtbot.mouseClick(d.ok_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "over the limit" in d.error_label.text(), timeout=WAIT_MS)
    assert d.isVisible() and d.ok_button.isEnabled() and d.project.isEnabled()
    assert "weights.bin" in d.error_label.text()
    window.close()


@pytest.mark.slow
def test_a_project_job_runs_from_the_tab_and_its_detail_shows_the_environment(
    qtbot: Any, controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    """The whole path with a real agent: env "none" (the agent's own Python; no uv build), the task SDK on the path."""
    from helpers.agents import AgentProcess
    from tensorfleet_desktop.ui.app import build_window, create_application

    agent = AgentProcess(tmp_path / "agent", name="gui-project-agent", cpu_slots=1)
    agent.spawn()
    controller = controller_factory(tmp_path / "controller").start()
    try:
        agent.wait_ready()
        create_application()
        window = build_window(controller.address, data_dir=tmp_path / "gui", autostart=False)
        qtbot.addWidget(window)
        window.show()
        window.bridge.start()
        # other agents on loopback mDNS (tests running beside this one) may be listed too: wait for ours
        qtbot.waitUntil(
            lambda: (
                window.bridge.online
                and any(r["name"] == "gui-project-agent" and r["state"] == "ONLINE" for r in window.fleet.model.rows)
            ),
            timeout=30_000,
        )
        root = write_tree(
            tmp_path / "hello",
            {
                "hello/__init__.py": "",
                "hello/main.py": (
                    "import tensorfleet_task as task\ntask.report(1, loss=0.25)\nprint('hello from the project')\n"
                ),
                "requirements.txt": "no-such-distribution-anywhere\n",  # env "none": never built
            },
        )
        window.jobs.dialog = None
        qtbot.mouseClick(window.jobs.submit_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: window.jobs.dialog is not None and window.jobs.dialog.isVisible(), timeout=WAIT_MS)
        d = window.jobs.dialog
        assert d is not None
        d.tabs.setCurrentWidget(d.project)
        d.project.set_folder(root)
        scanned(qtbot, d)
        d.project.env.setCurrentIndex(d.project.env.findData("none"))
        d.project.command.setText("python -m hello.main")
        assert d.ok_button.isEnabled(), d.error_label.text()
        with qtbot.waitSignal(d.submitted, timeout=WAIT_MS) as submitted:
            qtbot.mouseClick(d.ok_button, Qt.MouseButton.LeftButton)
        job_id = submitted.args[0]["id"]
        window.show_job(job_id)
        qtbot.waitUntil(lambda: (window.jobs.job(job_id) or {}).get("state") in ("SUCCEEDED", "FAILED"), timeout=60_000)
        assert window.jobs.job(job_id)["state"] == "SUCCEEDED", window.jobs.job(job_id)["error"]
        detail = window.detail
        qtbot.waitUntil(lambda: "hello from the project" in detail.logs.toPlainText(), timeout=WAIT_MS)
        qtbot.waitUntil(lambda: detail.job is not None and detail.job["state"] == "SUCCEEDED", timeout=WAIT_MS)
        env_column = [c.title for c in detail.tasks_model.columns].index("Environment")
        assert detail.tasks_model.index(0, env_column).data() == "agent's own Python"
        assert "Task 0 env" in detail.project_panel.summary.text()
        assert "python -m hello.main" in detail.project_panel.summary.text()
        window.close()
    finally:
        agent.stop()
