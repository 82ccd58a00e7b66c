"""First run: the welcome pane says what the app found and runs the demo jobs; empty tables say what to do next;
the Datasets view lists the built-in datasets. The live part runs against the shared loopback cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from PySide6.QtCore import QSettings, Qt

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from tensorfleet_agent.workloads.datasets import BUILTIN
from tensorfleet_desktop.client import TERMINAL, Client
from tensorfleet_desktop.demo import demo_specs
from tensorfleet_desktop.ui.app import build_window, create_application
from tensorfleet_desktop.ui.main_window import MainWindow
from tensorfleet_desktop.ui.settings_view import app_settings
from tensorfleet_desktop.ui.table_model import Column, RowTableModel
from tensorfleet_desktop.ui.view import attach_empty_state
from tensorfleet_desktop.ui.welcome_view import SEEN_KEY
from tensorfleet_desktop.ui.widgets import data_table

NOWHERE = "127.0.0.1:1"  # nothing listens: a window that never connects


@pytest.fixture(autouse=True)
def fresh_settings(tmp_path: Path) -> Iterator[None]:
    """As on a machine where the app never ran. QSettings keeps the folder it found first for the whole process
    (XDG_CONFIG_HOME set later is not read), so the test points it at its own folder and back."""
    create_application()
    scope = (QSettings.Format.NativeFormat, QSettings.Scope.UserScope)
    before = Path(QSettings(*scope, "TensorFleet", "tensorfleet").fileName()).parent.parent
    QSettings.setPath(*scope, str(tmp_path / "config"))
    assert app_settings().value(SEEN_KEY) is None
    yield
    QSettings.setPath(*scope, str(before))


def offline_window(tmp_path: Path) -> MainWindow:
    return build_window(NOWHERE, data_dir=tmp_path / "data", autostart=False)


def test_the_first_start_opens_on_the_welcome_pane_and_later_ones_on_jobs(qtbot: Any, tmp_path: Path) -> None:
    first = offline_window(tmp_path)
    qtbot.addWidget(first)
    assert first.stack.currentWidget() is first.welcome
    assert first.nav.currentItem().text() == "Welcome"
    second = offline_window(tmp_path)
    qtbot.addWidget(second)
    assert second.stack.currentWidget() is second.jobs
    second.welcome_action.trigger()  # still reachable: Help → Welcome (F1)
    assert second.stack.currentWidget() is second.welcome


def test_without_a_controller_the_welcome_pane_says_what_to_do(qtbot: Any, tmp_path: Path) -> None:
    window = offline_window(tmp_path)
    qtbot.addWidget(window)
    welcome = window.welcome
    welcome.set_disconnected("no TensorFleet controller answers at 127.0.0.1:1")
    assert "No controller answers at" in welcome.controller_text.text()
    assert "tensorfleet serve" in welcome.controller_text.text()
    assert not welcome.demo_button.isEnabled()
    assert "tensorfleet-agent" in welcome.agents_text.text() and "mDNS" in welcome.agents_text.text()
    assert "HOST:PORT" in welcome.agents_text.text()
    for dataset in BUILTIN:  # known without a controller: they ship with the agents
        assert dataset.name in welcome.datasets_text.text()


def test_welcome_says_each_datasets_row_and_feature_counts_once(qtbot: Any, tmp_path: Path) -> None:
    """The screenshot run showed "iris (classification, 150 rows x 4 features): 150 iris flowers, 4 features"."""
    window = offline_window(tmp_path)
    qtbot.addWidget(window)
    lines = window.welcome.datasets_text.text().split("<br>")
    iris = next(line for line in lines if "<b>iris</b>" in line)
    assert iris.count("150") == 1 and iris.count("4 features") == 1 and "3 species" in iris
    for dataset in BUILTIN:
        line = next(line for line in lines if f"<b>{dataset.name}</b>" in line)
        assert line.count(" features") <= 1, line


def test_model_statistics_bar_labels_fit_their_bars_with_full_names_in_the_tooltip(qtbot: Any, tmp_path: Path) -> None:
    """pyqtgraph draws long tick labels over each other ("gradient_boostlogistic_regression")."""
    window = offline_window(tmp_path)
    qtbot.addWidget(window)
    window.resize(1280, 800)
    window.show()
    models = window.models
    window.show_view(models)
    models.tabs.setCurrentIndex(1)
    names = [
        "decision_tree",
        "gradient_boosting",
        "logistic_regression",
        "random_forest",
        "svm",
        "torch_mlp",
        "k_nearest_neighbors",
        "linear_regression",
    ]
    rows = [{"algorithm": n, "count": i + 1, "best_accuracy": 0.9} for i, n in enumerate(names)]
    models.show_stats({"total_models": 36, "algorithm_stats": rows})
    chart = models.accuracy_chart
    qtbot.waitUntil(lambda: chart.width() > 300)
    shown = [text for _x, text in chart.plotItem.getAxis("bottom")._tickLevels[0]]
    assert len(shown) == len(names)
    slot = (chart.width() - 60) / len(names)
    metrics = chart.fontMetrics()
    assert all(metrics.horizontalAdvance(text) < slot for text in shown)  # no label runs into the next one
    for text, name in zip(shown, names, strict=True):  # whole, or its start and an ellipsis
        assert text == name or (text.endswith("…") and name.startswith(text[:-1])), (text, name)
    assert all(name in chart.toolTip() for name in names)


def test_an_empty_table_says_what_to_do_next_and_steps_aside_for_rows(qtbot: Any) -> None:
    create_application()
    model = RowTableModel([Column("Name", lambda r: r["id"])])
    table, _proxy = data_table(model)
    qtbot.addWidget(table)
    clicked: list[str] = []
    empty = attach_empty_state(table, "No jobs yet — Submit…", [("Submit…", lambda: clicked.append("submit"))])
    table.resize(600, 400)
    table.show()
    assert empty.isVisible() and empty.label.text() == "No jobs yet — Submit…"
    assert empty.geometry() == table.viewport().rect()  # centred over the whole table
    qtbot.mouseClick(empty.buttons[0], Qt.MouseButton.LeftButton)
    assert clicked == ["submit"]
    model.set_rows([{"id": "a"}, {"id": "b"}])
    assert not empty.isVisible()
    model.set_rows([])
    assert empty.isVisible()


def test_the_windows_empty_tables_offer_the_next_step(qtbot: Any, tmp_path: Path) -> None:
    window = offline_window(tmp_path)
    qtbot.addWidget(window)
    window.show()
    window.show_view(window.jobs)
    jobs = window.empty_states["jobs"]
    assert jobs.isVisible() and "No jobs yet" in jobs.label.text() and "Ctrl+N" in jobs.label.text()
    assert [b.text() for b in jobs.buttons] == ["Submit…", "Run the demo jobs"]
    window.show_view(window.fleet)
    fleet = window.empty_states["fleet"]
    assert fleet.isVisible() and "tensorfleet-agent" in fleet.label.text()
    window.show_view(window.models)
    assert window.models.empty.isVisible() and "succeeds registers" in window.models.empty.label.text()
    window.show_view(window.datasets)  # built-ins always listed; the missing uploads are said above the table
    assert window.datasets.no_uploads.isVisible()


def test_the_datasets_view_lists_the_built_in_datasets(qtbot: Any, tmp_path: Path) -> None:
    window = offline_window(tmp_path)
    qtbot.addWidget(window)
    view = window.datasets
    rows = {r["name"]: r for r in view.model.rows}
    assert set(rows) == {d.name for d in BUILTIN}
    iris = rows["iris"]
    assert (iris["format"], iris["task"], iris["rows"], iris["features"]) == ("built-in", "classification", 150, 4)
    assert rows["diabetes"]["task"] == "regression"
    view.select("iris", builtin=True)
    assert not view.delete_version_button.isEnabled()  # built-ins ship with the agents
    assert "No preview" in view.preview_label.text()
    view.ask_delete()  # nothing asked, nothing deleted (QMessageBox.question would block here)


@pytest.mark.slow
def test_welcome_lists_the_controller_and_agents_found_and_runs_the_demo_jobs(
    qtbot: Any,
    gui_cluster: tuple[ControllerProcess, list[AgentProcess]],
    tmp_path: Path,
) -> None:
    controller, agents = gui_cluster
    window = build_window(controller.address, data_dir=tmp_path / "data", autostart=False)
    qtbot.addWidget(window)
    window.show()
    window.bridge.start()
    welcome = window.welcome
    assert window.stack.currentWidget() is welcome
    names = [a.name for a in agents]
    qtbot.waitUntil(lambda: all(n in welcome.agents_text.text() for n in names), timeout=30_000)
    lines = {line for line in welcome.agents_text.text().split("<br>") if "</b>" in line}
    for name in names:  # name, state and slots of each (other modules may have added agents of their own)
        (line,) = [line for line in lines if f"<b>{name}</b>" in line]
        assert ": online, " in line and "/1 slots free" in line
    assert f"Connected to the controller at <code>{controller.address}</code>" in welcome.controller_text.text()
    for dataset in ("iris", "wine", "breast_cancer", "digits", "diabetes"):
        assert f"<b>{dataset}</b>" in welcome.datasets_text.text()
        assert window.datasets.model.find(f"built-in:{dataset}") >= 0
    assert not window.empty_states["fleet"].isVisible()

    expected = [spec["name"] for spec in demo_specs()]
    qtbot.waitUntil(welcome.demo_button.isEnabled, timeout=10_000)
    with qtbot.waitSignal(welcome.demo_submitted, timeout=20_000) as submitted:
        qtbot.mouseClick(welcome.demo_button, Qt.MouseButton.LeftButton)
    jobs = submitted.args[0]
    try:
        assert [j["name"] for j in jobs] == expected
        assert window.stack.currentWidget() is window.jobs
        qtbot.waitUntil(lambda: all(window.jobs.job(j["id"]) is not None for j in jobs), timeout=10_000)
        assert not window.empty_states["jobs"].isVisible()
    finally:
        with Client(controller.address) as client:  # the shared cluster has other tests to run
            for job in jobs:
                if client.job(job["id"])["state"] not in TERMINAL:
                    client.cancel(job["id"])

    window.bridge.call(lambda _client: asyncio.sleep(30))  # a call still in flight when the user quits
    window.close()  # clean exit: the bridge's loop stopped with no task left pending ("Task was destroyed…")
    assert not window.bridge._thread.is_alive()
    assert [t for t in asyncio.all_tasks(window.bridge._loop) if not t.done()] == []
