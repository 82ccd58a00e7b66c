"""The Jobs view as an experiments table (issue 22 item 1, and item 9's menus and cancel confirmation),
pytest-qt offscreen.

The jobs are what the window receives: controller Jobs from real specs (jobspec.parse_job_spec), through the
wire (job_to_pb -> job_from_pb), with the metrics scikit-learn workloads report. The Bridge answers nobody.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QMessageBox

from helpers.controller import cli_json
from helpers.waiting import wait_until
from tensorfleet_desktop import wire
from tensorfleet_desktop.client import Client
from tensorfleet_desktop.controller.jobspec import parse_job_spec
from tensorfleet_desktop.controller.model import Job, JobState, JobTask, TaskRunState
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.experiments import HEADER_ROLE
from tensorfleet_desktop.ui.jobs_view import JobsView
from tensorfleet_desktop.ui.settings_view import app_settings
from tensorfleet_desktop.ui.table_model import ROW_ROLE

_ids = itertools.count(1)


def make_job(
    body: dict[str, Any],
    state: str = "SUCCEEDED",
    metrics: dict[str, float] | None = None,
    trials: list[tuple[dict[str, Any], dict[str, float]]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    n = next(_ids)
    spec = parse_job_spec(body)
    done = TaskRunState.SUCCEEDED if state == "SUCCEEDED" else TaskRunState.RUNNING
    tasks = [JobTask(index=i, state=TaskRunState.SUCCEEDED, params=p, metrics=m) for i, (p, m) in enumerate(trials)]
    job = Job(
        id=f"j{n:010d}",
        spec=spec.to_dict(),
        submitter="test",
        seq_no=n,
        state=JobState(state),
        tasks=tasks or [JobTask(index=0, state=done)],
        created_at=1_700_000_000.0 + n,
        started_at=1_700_000_001.0 + n,
        finished_at=1_700_000_003.0 + n if state == "SUCCEEDED" else 0.0,
        metrics=dict(metrics or {}),
    )
    return wire.job_from_pb(wire.job_to_pb(job, {}))


def fleet_jobs() -> list[dict[str, Any]]:
    rf = {"algorithm": "random_forest", "dataset": "iris"}
    sweep_trials = [
        ({"n_estimators": 10}, {"test_accuracy": 0.9, "f1_macro": 0.899}),
        ({"n_estimators": 73}, {"test_accuracy": 0.9556, "f1_macro": 0.955}),
        ({"n_estimators": 40}, {"test_accuracy": 0.9333, "f1_macro": 0.932}),
    ]
    return [
        make_job(
            {
                **rf,
                "name": "rf-50",
                "hyperparameters": {"n_estimators": 50, "max_depth": 3},
                "group": "baseline",
                "tags": ["rf", "small"],
            },
            metrics={"test_accuracy": 0.933333, "f1_macro": 0.9326599},
        ),
        make_job(
            {**rf, "name": "rf-200", "hyperparameters": {"n_estimators": 200}, "group": "baseline"},
            metrics={"test_accuracy": 0.966667, "f1_macro": 0.9665831},
        ),
        make_job(
            {
                "algorithm": "logistic_regression",
                "dataset": "wine",
                "name": "lr-c05",
                "hyperparameters": {"C": 0.5},
                "tags": ["linear"],
            },
            metrics={"test_accuracy": 0.972222, "f1_macro": 0.9717},
        ),
        make_job(
            {
                "algorithm": "random_forest",
                "dataset": "digits",
                "name": "rf-digits",
                "hyperparameters": {"n_estimators": 100},
            },
            state="RUNNING",
        ),
        make_job(
            {**rf, "name": "rf-sweep", "sweep": {"params": {"n_estimators": "int:10:100"}, "trials": 3}},
            metrics={"test_accuracy": 0.9556, "f1_macro": 0.955, "best_trial": 1.0, "trials_completed": 3.0},
            trials=sweep_trials,
        ),
    ]


@pytest.fixture(autouse=True)
def private_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The column choice away from the user's (and from other tests': Qt may have read its path already)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    app_settings().remove("jobs")
    yield
    app_settings().remove("jobs")


@pytest.fixture
def view(qtbot: Any, bridge: Bridge) -> JobsView:
    v = JobsView(bridge, lambda message, error: None)
    qtbot.addWidget(v)
    v.set_jobs(fleet_jobs())
    return v


def titles(v: JobsView) -> list[str]:
    return [c.title for c in v.model.columns]


def column(v: JobsView, title: str) -> int:
    return titles(v).index(title)


def shown(v: JobsView, title: str = "Name") -> list[str]:
    """The column's texts in the order the table shows its rows (headers included)."""
    at = column(v, title)
    return [v.proxy.index(r, at).data() for r in range(v.proxy.rowCount())]


def names(v: JobsView) -> list[str]:
    return [v.proxy.index(r, 0).data(ROW_ROLE)["name"] for r in range(v.proxy.rowCount())]


def toggle(v: JobsView, title: str) -> None:
    menu = v.column_menu()
    (action,) = [a for a in menu.actions() if a.text() == title and a.isCheckable()]
    action.trigger()


def test_metric_and_hyperparameter_columns_come_from_the_jobs(view: JobsView) -> None:
    assert titles(view)[:3] == ["Name", "Workload", "State"]
    for title in ("test_accuracy", "f1_macro", "n_estimators", "max_depth", "C"):
        assert title in titles(view)
    row = {view.model.row(i)["name"]: i for i in range(len(view.model.rows))}
    at = column(view, "test_accuracy")
    assert view.model.index(row["rf-50"], at).data() == "0.9333"  # 4 significant digits
    assert view.model.index(row["rf-digits"], at).data() == ""  # still running: no result yet
    n_estimators = column(view, "n_estimators")
    assert view.model.index(row["rf-sweep"], n_estimators).data() == "73"  # the sweep's best trial's value
    assert view.model.index(row["lr-c05"], n_estimators).data() == ""
    header_tip = view.model.headerData(at, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
    assert "final metric" in header_tip


def test_internal_series_are_no_default_columns_and_headers_show_whole(bridge: Bridge, qtbot: Any) -> None:
    """`epoch` and `param_checksum` (a torch job's bookkeeping) only in the chooser; the default columns fit
    ~1100 px and `test_accuracy` is not cut to "est_accurac" (screenshot run of issue 22)."""
    torch = make_job(
        {"algorithm": "torch_mlp", "dataset": "digits", "name": "mlp", "hyperparameters": {"epochs": 6}},
        metrics={"test_accuracy": 0.94, "loss": 0.25, "epoch": 6.0, "param_checksum": 1234.5, "_debug": 1.0},
    )
    v = JobsView(bridge, lambda message, error: None)
    qtbot.addWidget(v)
    v.set_jobs([*fleet_jobs(), torch])
    shown_titles = titles(v)
    for internal in ("epoch", "param_checksum", "_debug"):
        assert internal not in shown_titles
    chooser = [a.text() for a in v.column_menu().actions() if a.isCheckable()]
    assert "epoch" in chooser and "param_checksum" in chooser
    assert len([c for c in v.model.columns if c.id.startswith("metric:")]) <= 4
    header = v.table.horizontalHeader()
    metrics = header.fontMetrics()
    at = column(v, "test_accuracy")
    assert v.table.columnWidth(at) >= metrics.horizontalAdvance("test_accuracy") + 20  # room for the sort arrow
    assert v.table.columnWidth(column(v, "f1_macro")) < v.table.columnWidth(at)  # sized to the name, not one width
    total = sum(v.table.columnWidth(i) for i in range(len(v.model.columns)))
    assert total <= 1150, str([(c.title, v.table.columnWidth(i)) for i, c in enumerate(v.model.columns)])


def test_the_column_choice_is_saved_for_the_next_window(qtbot: Any, bridge: Bridge, view: JobsView) -> None:
    menu = view.column_menu()
    sections = [a.text() for a in menu.actions() if a.isSeparator() and a.text()]
    assert sections == ["Columns", "Metrics", "Hyperparameters"]
    toggle(view, "f1_macro")
    toggle(view, "Group")
    toggle(view, "Duration")
    assert "f1_macro" not in titles(view) and "Duration" not in titles(view) and "Group" in titles(view)
    chosen = titles(view)

    again = JobsView(bridge, lambda message, error: None)
    qtbot.addWidget(again)
    again.set_jobs(fleet_jobs())
    assert titles(again) == chosen
    group = column(again, "Group")
    assert {again.model.index(i, group).data() for i in range(len(again.model.rows))} == {"baseline", ""}

    reset = [a for a in again.column_menu().actions() if a.text() == "Reset to the default columns"]
    reset[0].trigger()
    assert "f1_macro" in titles(again) and "Group" not in titles(again)


def test_the_column_menu_stays_open_while_boxes_are_ticked(qtbot: Any, view: JobsView) -> None:
    view.show()
    menu = view.column_menu()
    menu.popup(view.mapToGlobal(QPoint(0, 0)))
    qtbot.waitUntil(menu.isVisible, timeout=2000)
    for title in ("Tags", "max_iter"):
        (action,) = [a for a in menu.actions() if a.text() == title]
        before = action.isChecked()
        qtbot.mouseClick(menu, Qt.MouseButton.LeftButton, pos=menu.actionGeometry(action).center())
        assert action.isChecked() != before and (title in titles(view)) != before
    assert menu.isVisible()
    menu.close()


def test_a_column_change_keeps_the_sort_and_the_selection(view: JobsView) -> None:
    view.table.sortByColumn(column(view, "n_estimators"), Qt.SortOrder.AscendingOrder)
    view.select(view.model.row(view.model.find(fleet_id(view, "rf-200")))["id"])
    toggle(view, "f1_macro")
    sort_column = view.proxy.sortColumn()
    assert titles(view)[sort_column] == "n_estimators"
    assert [j["name"] for j in view.selected()] == ["rf-200"]


def fleet_id(v: JobsView, name: str) -> str:
    return next(j["id"] for j in v.model.rows if j["name"] == name)


def test_numbers_sort_as_numbers_with_missing_values_last(view: JobsView) -> None:
    view.table.sortByColumn(column(view, "n_estimators"), Qt.SortOrder.AscendingOrder)
    assert shown(view, "n_estimators") == ["50", "73", "100", "200", ""]  # text order would put 100 before 50
    view.table.sortByColumn(column(view, "n_estimators"), Qt.SortOrder.DescendingOrder)
    assert shown(view, "n_estimators") == ["200", "100", "73", "50", ""]
    view.table.sortByColumn(column(view, "test_accuracy"), Qt.SortOrder.DescendingOrder)
    assert names(view) == ["lr-c05", "rf-200", "rf-sweep", "rf-50", "rf-digits"]


def test_column_filter_expressions(view: JobsView) -> None:
    def filtered(expression: str) -> set[str]:
        view.filter_columns.setText(expression)
        return set(names(view))

    assert filtered("test_accuracy>0.95") == {"rf-200", "lr-c05", "rf-sweep"}
    assert filtered("algorithm=random_forest, n_estimators<=100") == {"rf-50", "rf-digits", "rf-sweep"}
    assert filtered("test_accuracy >= 0.95 algorithm=random_forest") == {"rf-200", "rf-sweep"}
    assert filtered("tag=linear") == {"lr-c05"}
    assert filtered("group=baseline C!=0.5") == {"rf-50", "rf-200"}
    assert filtered("name=rf-*  state=RUNNING") == {"rf-digits"}
    assert filtered("dataset~dig") == {"rf-digits"}
    assert view.filter_error == "" and view.filter_columns.styleSheet() == ""

    assert filtered("test_accuracy>0.95 n_estimators>lots") == {j["name"] for j in view.model.rows}
    assert "'n_estimators>lots'" in view.filter_error and "needs a number" in view.filter_error
    assert "d1242f" in view.filter_columns.styleSheet()  # red
    assert "n_estimators>lots" in view.filter_columns.toolTip()
    filtered("accuracy_of_nothing>1")
    assert "no column 'accuracy_of_nothing'" in view.filter_error
    filtered("test_accuracy")
    assert "'test_accuracy'" in view.filter_error and "KEY OP VALUE" in view.filter_error
    assert filtered("") == {j["name"] for j in view.model.rows} and view.filter_columns.styleSheet() == ""

    view.filter_columns.setText("test_accuracy>0.95")  # the free text and state filters still apply
    view.filter_text.setText("rf-")
    assert set(names(view)) == {"rf-200", "rf-sweep"}


def test_grouping_shows_a_header_row_per_group_and_actions_see_only_jobs(view: JobsView) -> None:
    view.group_by.setCurrentIndex(view.group_by.findData("group"))
    assert shown(view) == [
        "group baseline  ·  2 jobs",
        *sorted(["rf-50", "rf-200"], key=lambda n: -int(n.split("-")[1])),  # newest first inside the group
        "no group  ·  3 jobs",
        "rf-sweep",
        "rf-digits",
        "lr-c05",
    ]
    header = 0
    assert view.proxy.index(header, 0).data(HEADER_ROLE)
    assert view.table.columnSpan(header, 0) == view.proxy.columnCount()
    view.table.sortByColumn(column(view, "test_accuracy"), Qt.SortOrder.AscendingOrder)
    assert shown(view) == [
        "group baseline  ·  2 jobs", "rf-50", "rf-200", "no group  ·  3 jobs", "rf-sweep", "lr-c05", "rf-digits"
    ]  # fmt: skip
    assert view.table.columnSpan(3, 0) == view.proxy.columnCount()

    view.table.selectAll()
    assert sorted(j["name"] for j in view.selected()) == sorted(j["name"] for j in view.model.rows)

    view.filter_columns.setText("tag=linear")  # a group none of whose jobs shows is gone
    assert shown(view) == ["no group  ·  3 jobs", "lr-c05"]
    view.filter_columns.setText("")

    view.group_by.setCurrentIndex(view.group_by.findData("sweep"))
    assert shown(view)[:2] == ["sweep rf-sweep  ·  1 job", "rf-sweep"]
    view.group_by.setCurrentIndex(view.group_by.findData("tag"))
    assert [t for t in shown(view) if "·" in t] == ["tag linear  ·  1 job", "tag rf  ·  1 job", "no tags  ·  3 jobs"]
    view.group_by.setCurrentIndex(view.group_by.findData("none"))
    assert len(shown(view)) == 5 and view.table.columnSpan(0, 0) == 1


def row_menu(v: JobsView, name: str) -> dict[str, QAction]:
    """Right-click the job's row as Qt reports it (customContextMenuRequested): the menu that pops up."""
    v.show()
    row = v.proxy.mapFromSource(v.model.index(v.model.find(fleet_id(v, name)), 0)).row()
    before = set(v.table.findChildren(QMenu))
    v.table.customContextMenuRequested.emit(v.table.visualRect(v.proxy.index(row, 0)).center())
    (menu,) = set(v.table.findChildren(QMenu)) - before
    menu.hide()
    return {a.text(): a for a in menu.actions() if not a.isSeparator()}


def select_names(v: JobsView, wanted: set[str]) -> None:
    v.table.clearSelection()
    for name in wanted:
        v.select(fleet_id(v, name), add=True)


def test_compare_sends_the_selected_jobs(qtbot: Any, view: JobsView) -> None:
    select_names(view, {"rf-50"})
    assert not view.compare_button.isEnabled()
    select_names(view, {"rf-50", "lr-c05"})
    assert view.compare_button.isEnabled()
    with qtbot.waitSignal(view.compare_jobs, timeout=1000) as signal:
        qtbot.mouseClick(view.compare_button, Qt.MouseButton.LeftButton)
    assert set(signal.args[0]) == {fleet_id(view, "rf-50"), fleet_id(view, "lr-c05")}

    menu = row_menu(view, "lr-c05")  # a right-click inside the selection keeps it
    assert not menu["Open details"].isEnabled() and not menu["Cancel…"].isEnabled()  # both ended
    assert menu["Resubmit"].isEnabled() and menu["Copy job ids"].isEnabled()
    with qtbot.waitSignal(view.compare_jobs, timeout=1000) as signal:
        menu["Compare 2 jobs"].trigger()
    assert len(signal.args[0]) == 2


def test_cancel_asks_first_and_cancels_only_on_yes(qtbot: Any, view: JobsView, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    cancelled: list[str] = []
    answer = [QMessageBox.StandardButton.No]

    def question(parent: Any, title: str, text: str, *args: Any) -> QMessageBox.StandardButton:
        asked.append(text)
        return answer[0]

    class Client:
        def cancel(self, job_id: str) -> dict[str, Any]:
            cancelled.append(job_id)
            return {}

    monkeypatch.setattr(QMessageBox, "question", question)
    monkeypatch.setattr(view.bridge, "call", lambda fn, done, failed: done(fn(Client())))
    select_names(view, {"rf-digits", "rf-50"})  # one running, one ended: only the running one is asked about
    assert view.cancel_button.isEnabled()
    qtbot.mouseClick(view.cancel_button, Qt.MouseButton.LeftButton)
    assert len(asked) == 1 and "rf-digits" in asked[0] and "rf-50" not in asked[0] and cancelled == []

    answer[0] = QMessageBox.StandardButton.Yes
    row_menu(view, "rf-digits")["Cancel…"].trigger()
    assert len(asked) == 2 and cancelled == [fleet_id(view, "rf-digits")]

    view.confirm_cancel_selected()  # Del: the same question
    assert len(asked) == 3


def test_refresh_asks_the_controller_for_the_list_again(view: JobsView, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = fleet_jobs()[:2]

    class Client:
        def jobs(self, states: tuple[str, ...] = (), limit: int = 0) -> list[dict[str, Any]]:
            assert limit > 0
            return fresh

    monkeypatch.setattr(view.bridge, "call", lambda fn, done, failed: done(fn(Client())))
    view.refresh()
    assert [j["id"] for j in view.model.rows] == [j["id"] for j in fresh]


def test_focus_filter_puts_the_keyboard_in_the_text_filter(qtbot: Any, view: JobsView) -> None:
    view.show()
    qtbot.waitExposed(view)
    view.activateWindow()
    view.filter_text.setText("rf")
    view.focus_filter()
    qtbot.waitUntil(view.filter_text.hasFocus, timeout=2000)
    assert view.filter_text.selectedText() == "rf"


@pytest.mark.slow
def test_real_jobs_fill_the_table_and_cli_labels_reach_it(qtbot: Any, bridge: Bridge, gui_cluster: Any) -> None:
    """Two real scikit-learn jobs on the shared cluster (one each per agent), one labelled through
    `tensorfleet submit --group --tag`: their reported metrics become columns and the labels filter them."""
    controller, _agents = gui_cluster
    labelled = cli_json(
        controller.cli(
            "submit", "-a", "random_forest", "-d", "iris", "-p", "n_estimators=20", "--name", "xt-cli",
            "--group", "xt-study", "--tag", "cli", "--tag", "rf", "--json",
        )
    )  # fmt: skip
    with Client(controller.address) as client:
        other = client.submit(
            {"algorithm": "random_forest", "dataset": "iris", "name": "xt-rf5", "hyperparameters": {"n_estimators": 5}}
        )
        ids = [labelled["id"], other["id"]]
        wait_until(lambda: all(client.job(i)["state"] in ("SUCCEEDED", "FAILED") for i in ids), 60, "2 jobs end")
        jobs = [client.job(i) for i in ids]
    assert all(j["state"] == "SUCCEEDED" for j in jobs), [j["error"] for j in jobs]
    assert jobs[0]["spec"]["group"] == "xt-study" and jobs[0]["spec"]["tags"] == ["cli", "rf"]

    view = JobsView(bridge, lambda message, error: None)
    qtbot.addWidget(view)
    view.set_jobs(jobs)
    assert {"test_accuracy", "n_estimators"} <= set(titles(view))
    view.table.sortByColumn(column(view, "n_estimators"), Qt.SortOrder.DescendingOrder)
    assert names(view) == ["xt-cli", "xt-rf5"] and shown(view, "n_estimators") == ["20", "5"]
    view.filter_columns.setText("group=xt-study tag=rf test_accuracy>0.5")
    assert names(view) == ["xt-cli"] and view.filter_error == ""
    view.group_by.setCurrentIndex(view.group_by.findData("group"))
    view.filter_columns.setText("")
    assert shown(view)[0] == "group xt-study  ·  1 job"
