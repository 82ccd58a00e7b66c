"""Keyboard and mouse: Ctrl+N, Ctrl+F, Del (asks), F5 and Escape from the window's menus; row context menus of
the Models and Datasets views. No controller: the bridge's calls go to a recording fake client."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from PySide6.QtCore import QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QInputDialog, QMenu, QMessageBox, QSpinBox, QTableView, QWidget

from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent.workloads.registry import all_workloads
from tensorfleet_desktop import wire
from tensorfleet_desktop.ui.app import build_window, create_application
from tensorfleet_desktop.ui.main_window import MainWindow
from tensorfleet_desktop.ui.submit_dialog import SubmitDialog

CTRL = Qt.KeyboardModifier.ControlModifier
NO_MODIFIER = Qt.KeyboardModifier.NoModifier


class FakeClient:
    """Records each client call; answers from `answers` (a value, or a function of the call's arguments)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def method(*args: Any, **_kwargs: Any) -> Any:
            self.calls.append((name, args))
            answer = self.answers.get(name)
            return answer(*args) if callable(answer) else answer

        return method

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for called, args in self.calls if called == name]


def upload(name: str) -> dict[str, Any]:
    return wire.dataset_from_pb(
        cpb.DatasetInfo(
            name=name,
            format=cpb.DATASET_FORMAT_CSV,
            sha256="ab" * 32,
            filename=f"{name}.csv",
            rows=30,
            columns=["x1", "x2", "label"],
        )
    )


def answers() -> dict[str, Any]:
    return {
        "workloads": [w.to_dict() for w in all_workloads()],
        "datasets": lambda: [upload("points")],
        "models": {"pagination": {"page": 1, "pages": 1, "total": 0}, "models": []},
        "jobs": [],
        "job": lambda job_id: job(job_id, "trained", cpb.JOB_STATE_SUCCEEDED),
        "dataset": lambda ref, **_kw: {
            "dataset": upload(ref.split(":")[0]),
            "version": None,
            "files": [{"path": "points.csv", "size": 30, "sha256": "", "etag": "", "chunks": 0}],
            "next_cursor": "",
        },
        "read_dataset_file": lambda _ref, _path, _limit: {"data": b"x1,x2,label\n1,0.5,a\n", "truncated": False},
        "preview_dataset": lambda name, _rows: {
            "dataset": upload(name),
            "columns": ["x1", "x2", "label"],
            "rows": [["1", "0.5", "a"]],
        },
    }


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[MainWindow, dict[str, FakeClient]]]:
    """One window for the module (a window costs ~0.5 s): its bridge answers at once from the current test's fake
    client (never started: no thread, no network). QSettings in a folder of the module's, then back (QSettings
    keeps the first folder it found for the whole process: XDG_CONFIG_HOME alone does not do it)."""
    create_application()
    scope = (QSettings.Format.NativeFormat, QSettings.Scope.UserScope)
    before = Path(QSettings(*scope, "TensorFleet", "tensorfleet").fileName()).parent.parent
    with tempfile.TemporaryDirectory(prefix="tf-keyboard-") as tmp:
        QSettings.setPath(*scope, str(Path(tmp) / "config"))
        win = build_window("127.0.0.1:1", data_dir=Path(tmp) / "data", autostart=False)
        current = {"client": FakeClient(answers())}

        def call(fn: Any, on_result: Any = None, on_error: Any = None) -> Future[None]:
            async def go() -> Any:
                return await fn(current["client"])

            result = asyncio.run(go())
            if on_result is not None:
                on_result(result)
            done: Future[None] = Future()
            done.set_result(None)
            return done

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(win.bridge, "call", call)
            patch.setattr(win.bridge, "watch_job", lambda _job_id: None)
            win.show()
            yield win, current
            win.close()
        QSettings.setPath(*scope, str(before))


@pytest.fixture
def client(shared: tuple[MainWindow, dict[str, FakeClient]]) -> FakeClient:
    shared[1]["client"] = FakeClient(answers())
    return shared[1]["client"]


@pytest.fixture
def window(qtbot: Any, shared: tuple[MainWindow, dict[str, FakeClient]], client: FakeClient) -> MainWindow:
    win = shared[0]
    win.activateWindow()  # shortcuts go to the active window
    qtbot.waitUntil(win.isActiveWindow, timeout=5_000)
    return win


def press(win: QWidget, key: Qt.Key, modifier: Qt.KeyboardModifier = NO_MODIFIER) -> None:
    QTest.keyClick(QApplication.focusWidget() or win, key, modifier)


def job(job_id: str, name: str, state: int) -> dict[str, Any]:
    return wire.job_from_pb(cpb.Job(id=job_id, name=name, state=state, created_at=1.0))


def row_menu(table: QTableView, row: int) -> QMenu:
    """Right-click a row the way Qt does (customContextMenuRequested) and return the menu that pops up."""
    before = set(table.findChildren(QMenu))
    table.customContextMenuRequested.emit(table.visualRect(table.model().index(row, 0)).center())
    (menu,) = set(table.findChildren(QMenu)) - before
    return menu


def actions(menu: QMenu) -> dict[str, bool]:
    """The menu's entries and whether each is enabled."""
    return {a.text(): a.isEnabled() for a in menu.actions() if not a.isSeparator()}


def trigger(menu: QMenu, text: str) -> None:
    (action,) = [a for a in menu.actions() if a.text() == text]
    action.trigger()
    menu.close()


def test_ctrl_n_opens_the_submit_dialog_from_any_view_and_escape_closes_it(qtbot: Any, window: MainWindow) -> None:
    window.show_view(window.models)
    press(window, Qt.Key.Key_N, CTRL)
    assert window.stack.currentWidget() is window.jobs
    dialog = window.jobs.dialog
    assert isinstance(dialog, SubmitDialog)
    qtbot.waitUntil(dialog.isVisible, timeout=5_000)
    QTest.keyClick(dialog, Qt.Key.Key_Escape)
    assert not dialog.isVisible()
    assert "Ctrl+N" in window.submit_action.shortcut().toString()  # discoverable: Jobs → Submit…


def test_ctrl_f_puts_the_keyboard_in_the_current_views_filter(qtbot: Any, window: MainWindow) -> None:
    for view, field in (
        (window.jobs, window.jobs.filter_text),
        (window.models, window.models.filters["name"]),
        (window.datasets, window.datasets.filter_text),
    ):
        window.show_view(view)
        window.nav.setFocus()
        press(window, Qt.Key.Key_F, CTRL)
        qtbot.waitUntil(field.hasFocus, timeout=2_000)


def test_del_cancels_the_selected_job_only_after_yes(
    window: MainWindow, client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    answer = QMessageBox.StandardButton.No

    def question(_parent: Any, _title: str, text: str, *_args: Any) -> QMessageBox.StandardButton:
        asked.append(text)
        return answer

    monkeypatch.setattr(QMessageBox, "question", question)
    window.show_view(window.jobs)
    window.jobs.set_jobs(
        [job("j-run", "long-sleep", cpb.JOB_STATE_RUNNING), job("j-ok", "done", cpb.JOB_STATE_SUCCEEDED)]
    )
    window.jobs.select("j-run")
    window.jobs.table.setFocus()
    press(window, Qt.Key.Key_Delete)
    assert len(asked) == 1 and "long-sleep" in asked[0]
    assert client.called("cancel") == []
    answer = QMessageBox.StandardButton.Yes
    press(window, Qt.Key.Key_Delete)
    assert len(asked) == 2
    assert client.called("cancel") == [("j-run",)]

    window.jobs.filter_text.setFocus()  # Del in a text field is the text field's
    window.jobs.filter_text.setText("ab")
    window.jobs.filter_text.setCursorPosition(0)
    press(window, Qt.Key.Key_Delete)
    assert window.jobs.filter_text.text() == "b" and len(asked) == 2


def test_del_on_datasets_asks_and_never_touches_a_built_in(
    window: MainWindow, client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    monkeypatch.setattr(
        QMessageBox, "question", lambda _p, _t, text, *_a: asked.append(text) or QMessageBox.StandardButton.Yes
    )
    window.show_view(window.datasets)
    window.datasets.select("iris", builtin=True)
    window.datasets.table.setFocus()
    press(window, Qt.Key.Key_Delete)
    assert asked == [] and client.called("delete_dataset") == []
    window.datasets.select("points")
    press(window, Qt.Key.Key_Delete)
    assert len(asked) == 1 and client.called("delete_dataset") == [("points",)]


def test_f5_asks_the_current_view_again(window: MainWindow, client: FakeClient) -> None:
    for view, call in ((window.datasets, "datasets"), (window.models, "models"), (window.jobs, "jobs")):
        window.show_view(view)
        before = len(client.called(call))
        press(window, Qt.Key.Key_F5)
        assert len(client.called(call)) == before + 1, view.title


def test_models_rows_have_a_context_menu(
    qtbot: Any, window: MainWindow, client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = window.models
    model = wire.model_from_pb(
        cpb.ModelVersion(
            name="iris-rf", version=2, job_id="j-train", algorithm="random_forest", format=cpb.MODEL_FORMAT_SKOPS
        )
    )
    client.answers["models"] = {"pagination": {"page": 1, "pages": 1, "total": 1}, "models": [model]}
    window.show_view(view)  # lists them
    assert not view.empty.isVisible()
    menu = row_menu(view.table, 0)
    assert actions(menu) == {"Open job": True, "Promote…": True, "Tag…": True, "Download…": True, "Delete…": True}
    monkeypatch.setattr(QInputDialog, "getText", lambda *_a, **_k: ("production", True))
    trigger(menu, "Promote…")
    assert client.called("set_alias") == [("iris-rf:2", "production")]
    trigger(row_menu(view.table, 0), "Open job")
    assert window.stack.currentWidget() is window.detail and window.detail.job_id == "j-train"


def test_datasets_rows_have_a_context_menu_and_use_in_a_new_job_opens_the_dialog_on_it(
    qtbot: Any, window: MainWindow
) -> None:
    view = window.datasets
    window.show_view(view)
    view.refresh()
    proxy = view.table.model()
    rows = {proxy.index(r, 0).data(): r for r in range(proxy.rowCount())}
    builtin = actions(row_menu(view.table, rows["iris"]))
    assert builtin == {"Use in a new job…": True, "Delete version…": False, "Delete dataset…": False}
    uploaded = row_menu(view.table, rows["points"])
    assert actions(uploaded) == {"Use in a new job…": True, "Delete version…": True, "Delete dataset…": True}
    trigger(uploaded, "Use in a new job…")
    dialog = window.jobs.dialog
    assert dialog is not None and window.stack.currentWidget() is window.jobs
    qtbot.waitUntil(lambda: dialog.dataset.currentData() == "uploaded:points:1")  # its version, pinned
    dialog.reject()
    trigger(row_menu(view.table, rows["diabetes"]), "Use in a new job…")  # a regression set: a workload that takes it
    regression = window.jobs.dialog
    assert regression is not None and regression is not dialog
    qtbot.waitUntil(lambda: regression.dataset.currentData() == "diabetes")
    assert "regression" in regression.current_workload()["tasks"]
    regression.reject()


def test_compare_from_the_jobs_table_opens_the_compare_tab(window: MainWindow, client: FakeClient) -> None:
    client.answers["metrics"] = []
    window.jobs.compare_jobs.emit(["j-a", "j-b"])
    assert window.stack.currentWidget() is window.detail
    assert window.detail.tabs.currentWidget() is window.detail.compare_panel
    assert [args[0] for args in client.called("metrics")] == ["j-a", "j-b"]


def test_the_wheel_never_changes_a_spin_box_without_focus_anywhere_in_the_app(qtbot: Any) -> None:
    create_application()  # installs the app-wide guard: a spin box nobody guarded by hand
    box = QSpinBox()
    qtbot.addWidget(box)
    box.setRange(0, 100)
    box.setValue(50)
    box.show()

    def wheel() -> None:
        centre = QPointF(box.rect().center())
        event = QWheelEvent(
            centre,
            box.mapToGlobal(centre),
            QPoint(0, 0),
            QPoint(0, 120),
            Qt.MouseButton.NoButton,
            NO_MODIFIER,
            Qt.ScrollPhase.NoScrollPhase,
            False,
        )
        QApplication.sendEvent(box, event)

    wheel()
    assert box.value() == 50 and not box.hasFocus()
    box.setFocus()
    qtbot.waitUntil(box.hasFocus, timeout=2_000)
    wheel()
    assert box.value() == 51  # clicked or tabbed into: the wheel is the user's again
