"""The Compare tab (its job list follows the jobs, an Overlay's results go to that Overlay only, a final score per
job is a bar chart, series are curves) and the project Files table's row menu.

The panel is fed job dicts in the shape `Client.jobs` gives and a `run` that runs each call's async function
against a small fake client (the bridge would run it on its asyncio thread) and holds back its result until the
test delivers it, so the order results arrive in is the test's to choose."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import QMenu

from tensorfleet_desktop.ui.compare_panel import ComparePanel
from tensorfleet_desktop.ui.project_tab import ProjectTab

Call = Callable[[Any], Awaitable[Any]]


def job(job_id: str, name: str, state: str = "RUNNING", accuracy: float | None = None) -> dict[str, Any]:
    return {
        "id": job_id,
        "name": name,
        "state": state,
        "algorithm": "random_forest",
        "dataset": "iris",
        "metrics": {} if accuracy is None else {"test_accuracy": accuracy},
        "spec": {"hyperparameters": {"n_estimators": 50, "max_depth": 0.123456}},
        "started_at": 1000.0,
        "finished_at": 1012.0 if state != "RUNNING" else None,
    }


def point(name: str, step: int, value: float, task: int = 0) -> dict[str, Any]:
    return {"task_index": task, "name": name, "step": step, "value": value, "wall_time": 1000.0 + step}


class FakeClient:
    """`metrics` as AsyncClient's: every point of the job, in store order (not sorted by step)."""

    def __init__(self, points: dict[str, list[dict[str, Any]]]) -> None:
        self.points = points

    async def metrics(self, job_id: str, names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        return list(self.points[job_id])


class HeldRun:
    """View.run's stand-in: the call is kept; `deliver(i)` runs it on the fake client and hands `done` the result."""

    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.calls: list[tuple[Call, Callable[[Any], None]]] = []
        self.results: list[Any] = []

    def __call__(self, call: Call, done: Callable[[Any], None], failed: str = "") -> None:
        self.calls.append((call, done))

    def deliver(self, i: int) -> None:
        call, done = self.calls[i]
        result = asyncio.run(call(self.client))
        self.results.append(result)
        done(result)

    def deliver_all(self) -> None:
        for i in range(len(self.calls)):
            self.deliver(i)


def make_panel(qtbot: Any, points: dict[str, list[dict[str, Any]]]) -> tuple[ComparePanel, HeldRun, list[str]]:
    run = HeldRun(FakeClient(points))
    errors: list[str] = []
    panel = ComparePanel(run, lambda message, is_error: errors.append(message))
    qtbot.addWidget(panel)
    return panel, run, errors


def texts(panel: ComparePanel) -> list[str]:
    return [panel.jobs_list.item(i).text() for i in range(panel.jobs_list.count())]


def test_the_job_list_follows_state_and_metric_changes_and_a_full_list_turning_over(qtbot: Any) -> None:
    panel, _, _ = make_panel(qtbot, {})
    jobs = [job(f"j{i}", f"run-{i}") for i in range(3)]
    panel.set_jobs(jobs)
    panel.jobs_list.item(1).setCheckState(Qt.CheckState.Checked)
    assert panel.checked_jobs() == ["j1"]

    finished = [jobs[0], job("j1", "run-1", "SUCCEEDED", 0.9667), jobs[2]]  # same count, new state and metric
    panel.set_jobs(finished)
    assert texts(panel)[1] == "run-1 · SUCCEEDED · test_accuracy 0.9667"
    assert panel.checked_jobs() == ["j1"]

    # at the list's cap (500 jobs) the count stays put while the oldest job leaves and a new one comes
    turned = [finished[1], finished[2], job("j3", "run-3")]
    panel.set_jobs(turned)
    assert [t.split(" · ")[0] for t in texts(panel)] == ["run-1", "run-2", "run-3"]
    assert panel.checked_jobs() == ["j1"]


def test_a_series_is_filtered_and_sorted_off_the_gui_thread_and_drawn_as_curves(qtbot: Any) -> None:
    steps = list(range(50))
    random.Random(7).shuffle(steps)
    points = {
        "a": [point("loss", s, 1.0 / (s + 1)) for s in steps] + [point("loss", 3, 99.0, task=1), point("epoch", 1, 1)],
        "b": [point("loss", s, 2.0 / (s + 1)) for s in range(20)],
    }
    panel, run, errors = make_panel(qtbot, points)
    panel.set_jobs([job("a", "run-a"), job("b", "run-b")])
    panel.metric_box.setCurrentText("loss")
    panel.compare(["a", "b"])
    run.deliver_all()

    # what crosses to the GUI thread is two arrays per job, not the point dicts
    assert all(isinstance(r, tuple) and all(isinstance(a, np.ndarray) for a in r) for r in run.results)
    assert panel.charts.currentWidget() is panel.plot
    a, b = panel.plot.series["run-a"], panel.plot.series["run-b"]
    assert list(a.x) == list(range(50))  # task 1's point and the other metric left out, in step order
    assert list(a.y) == pytest.approx([1.0 / (s + 1) for s in range(50)])
    assert len(b.x) == 20 and not errors
    assert panel.params.item(4, 0).text() == "50" and panel.params.item(5, 0).text() == "0.1235"


def test_a_metric_reported_once_per_job_is_a_bar_per_job(qtbot: Any) -> None:
    points = {
        "a": [point("test_accuracy", 0, 0.9667), point("training_time", 0, 0.2)],
        "b": [point("test_accuracy", 0, 0.9333)],
        "c": [],  # never reported it: no bar
    }
    panel, run, _ = make_panel(qtbot, points)
    panel.set_jobs([job("a", "forest"), job("b", "logreg"), job("c", "svm")])
    panel.metric_box.setCurrentText("test_accuracy")
    panel.compare(["a", "b", "c"])
    run.deliver_all()
    assert panel.charts.currentWidget() is panel.bars
    assert list(panel.bars.bars.opts["height"]) == pytest.approx([0.9667, 0.9333])
    ticks = panel.bars.plotItem.getAxis("bottom")._tickLevels[0]
    assert [label for _, label in ticks] == ["forest", "logreg"]


def test_results_of_an_earlier_overlay_are_dropped(qtbot: Any) -> None:
    points = {
        "a": [point("loss", s, 1.0, 0) for s in range(5)] + [point("val_accuracy", s, 0.5) for s in range(5)],
        "b": [point("val_accuracy", s, 0.7) for s in range(5)],
    }
    panel, run, _ = make_panel(qtbot, points)
    panel.set_jobs([job("a", "run-a"), job("b", "run-b")])
    panel.metric_box.setCurrentText("loss")
    panel.compare(["a"])  # its result is slow to come
    panel.metric_box.setCurrentText("val_accuracy")
    panel.compare(["a", "b"])
    run.deliver(1)
    run.deliver(2)
    run.deliver(0)  # the loss curve, after the plot was cleared for val_accuracy
    assert sorted(panel.plot.series) == ["run-a", "run-b"]
    assert list(panel.plot.series["run-a"].y) == [0.5] * 5  # val_accuracy, not loss mixed in


def test_project_files_have_a_row_menu_that_copies_the_path_and_opens_its_folder(
    qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # the snapshot's hash cache
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "train.py").write_text("print('training')\n")
    (root / "README.md").write_text("# demo\n")
    tab = ProjectTab(lambda fn, done, failed: done(fn()))  # the scan inline: this test is about the menu
    qtbot.addWidget(tab)
    tab.show()
    tab.set_folder(root)
    assert tab.scan is not None
    proxy = tab.files_proxy
    row = next(r for r in range(proxy.rowCount()) if proxy.index(r, 0).data() == "pkg/train.py")

    opened: list[QUrl] = []
    monkeypatch.setattr("tensorfleet_desktop.ui.project_tab.QDesktopServices.openUrl", opened.append)
    before = set(tab.files_table.findChildren(QMenu))
    tab.files_table.customContextMenuRequested.emit(tab.files_table.visualRect(proxy.index(row, 0)).center())
    (menu,) = set(tab.files_table.findChildren(QMenu)) - before
    menu.hide()
    actions: dict[str, QAction] = {a.text(): a for a in menu.actions() if not a.isSeparator()}
    assert list(actions) == ["Copy path", "Open folder"]
    actions["Copy path"].trigger()
    assert QGuiApplication.clipboard().text() == str(root / "pkg" / "train.py")
    actions["Open folder"].trigger()
    assert [u.toLocalFile() for u in opened] == [str(root / "pkg")]
