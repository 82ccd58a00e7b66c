"""The Sweep tab: trials table (a column per parameter, numeric sort, the best trial pinned and highlighted), the
top-k trials for the Curves tab, the scatter and the parallel coordinates with a bounded number of plot items.

Most tests feed the panel job dicts built here in the shape `Client.job` returns; the one slow test checks that shape
against a real sweep run on the shared GUI cluster and shows that real job, and 200 trials derived from it."""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Sequence
from typing import Any

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from tensorfleet_desktop.client import Client
from tensorfleet_desktop.ui.parallel_coords import ParallelCoordinates, ParamAxis
from tensorfleet_desktop.ui.sweep_panel import SweepPanel, top_trials

Trial = tuple[dict[str, Any], float | None, str]  # params, score (None: not scored), state


def sweep_job(
    trials: Sequence[Trial],
    space: dict[str, str],
    metric: str = "test_accuracy",
    direction: str = "maximize",
    best: int | None = None,
    job_id: str = "j-sweep",
) -> dict[str, Any]:
    """A sweep job as `Client.job` gives it (wire.job_from_pb's keys): one task per trial."""
    tasks = []
    for index, (params, score, state) in enumerate(trials):
        done = state in ("SUCCEEDED", "FAILED")
        tasks.append(
            {
                "index": index,
                "state": state,
                "node_id": f"node{index % 2}",
                "agent": f"gui-agent-{index % 2}",
                "attempt": 1,
                "progress": 1.0 if done else 0.5,
                "exit_cause": "completed" if state == "SUCCEEDED" else ("error" if done else "unspecified"),
                "error": "",
                "agent_task_id": f"{job_id}-r{index}-a1",
                "failures": 0,
                "replacements": 0,
                "params": {**params, "random_state": 42},
                "metrics": {} if score is None else {metric: score, "training_time": 0.01},
                "started_at": 1000.0 + index,
                "finished_at": 1000.0 + index + 1.5 + index % 3 if done else None,
                "environment": None,
                "dataset_transfer": None,
            }
        )
    metrics: dict[str, float] = {"trials_completed": float(sum(s is not None for _, s, _ in trials))}
    if best is not None:
        metrics["best_trial"] = float(best)
    return {
        "id": job_id,
        "name": "svm-wine",
        "state": "RUNNING",
        "progress": 0.5,
        "tasks": {"total": len(trials), "completed": 0, "failed": 0, "attempts": len(trials)},
        "metrics": metrics,
        "model": None,
        "error": "",
        "waiting": "",
        "created_at": 999.0,
        "started_at": 1000.0,
        "finished_at": None,
        "algorithm": "svm",
        "dataset": "wine",
        "priority": 0,
        "submitter": "tester",
        "spec": {
            "algorithm": "svm",
            "dataset": "wine",
            "hyperparameters": {"random_state": 42},
            "sweep": {
                "prune": False,
                "params": space,
                "search": "random",
                "trials": len(trials),
                "timeout": None,
                "metric": metric,
                "direction": direction,
            },
        },
        "task_list": tasks,
        "artifacts": [],
        "project": None,
    }


SPACE = {"C": "float:0.01:100:log", "kernel": "linear,rbf,poly"}
# Trial 2 is the best; C's order as text ("10" < "2.5") is not its numeric order; trial 4 has no score yet.
TRIALS: list[Trial] = [
    ({"C": 10.0, "kernel": "rbf"}, 0.91, "SUCCEEDED"),
    ({"C": 2.5, "kernel": "linear"}, 0.95, "SUCCEEDED"),
    ({"C": 0.5, "kernel": "rbf"}, 0.97, "SUCCEEDED"),
    ({"C": 50.0, "kernel": "poly"}, 0.88, "SUCCEEDED"),
    ({"C": 0.02, "kernel": "linear"}, None, "RUNNING"),
]


@pytest.fixture
def panel(qtbot: Any) -> SweepPanel:
    widget = SweepPanel()
    qtbot.addWidget(widget)
    widget.resize(1200, 700)
    widget.show()
    return widget


def column_titles(panel: SweepPanel) -> list[str]:
    model = panel.trials_model
    return [str(model.headerData(c, Qt.Orientation.Horizontal)) for c in range(model.columnCount())]


def shown_trials(panel: SweepPanel) -> list[int]:
    """The trials top to bottom as the table shows them."""
    model = panel.trials_table.model()
    return [int(str(model.index(r, 0).data()).lstrip("#").split()[0]) for r in range(model.rowCount())]


def test_table_has_a_column_per_parameter_sorts_numbers_and_pins_the_best_trial(panel: SweepPanel) -> None:
    panel.show_job(sweep_job(TRIALS, SPACE, best=2))
    titles = column_titles(panel)
    assert titles == ["Trial", "C", "kernel", "test_accuracy", "State", "Duration", "Agent"]
    assert shown_trials(panel) == [2, 1, 0, 3, 4]  # best score first for a maximised metric, unscored last

    table = panel.trials_table
    table.sortByColumn(titles.index("C"), Qt.SortOrder.AscendingOrder)
    assert shown_trials(panel) == [2, 4, 1, 0, 3]  # 0.5 pinned, then 0.02 < 2.5 < 10 < 50 (numbers, not text)
    table.sortByColumn(titles.index("C"), Qt.SortOrder.DescendingOrder)
    assert shown_trials(panel) == [2, 3, 0, 1, 4]
    table.sortByColumn(titles.index("test_accuracy"), Qt.SortOrder.AscendingOrder)
    assert shown_trials(panel) == [2, 3, 0, 1, 4]  # the unscored trial stays last in either order
    for column in range(len(titles)):
        for order in (Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder):
            table.sortByColumn(column, order)
            assert shown_trials(panel)[0] == 2, (titles[column], order)

    model = table.model()
    for row in range(model.rowCount()):
        best = row == 0
        font = model.index(row, 1).data(Qt.ItemDataRole.FontRole)
        assert (font is not None and font.bold()) is best
        assert (model.index(row, 1).data(Qt.ItemDataRole.BackgroundRole) is not None) is best
    assert "★" in model.index(0, 0).data()
    assert model.index(0, titles.index("C")).data() == "0.5"
    assert "best #2" in panel.summary.text() and "4/5 trials scored" in panel.summary.text()


def test_a_better_trial_takes_the_top_row_and_the_selection_stays_on_its_trial(panel: SweepPanel) -> None:
    panel.show_job(sweep_job(TRIALS, SPACE, best=2))
    panel.select_trial(0)
    running = [
        *TRIALS[:4],
        ({"C": 0.02, "kernel": "linear"}, 0.99, "SUCCEEDED"),
        ({"C": 1.0, "kernel": "rbf"}, None, "RUNNING"),
    ]
    panel.show_job(sweep_job(running, SPACE, best=4))  # trial 4 finished best, trial 5 started
    assert shown_trials(panel) == [4, 2, 1, 0, 3, 5]
    model = panel.trials_table.model()
    assert model.index(0, 1).data(Qt.ItemDataRole.FontRole).bold()
    assert model.index(1, 1).data(Qt.ItemDataRole.FontRole) is None  # the former best is a plain row again
    selected = panel.trials_table.selectionModel().selectedRows()
    assert [int(str(i.data()).lstrip("#")) for i in selected] == [0]


def test_the_selected_trial_stands_out_in_both_plots_and_a_click_on_a_line_selects_it(
    panel: SweepPanel, qtbot: Any
) -> None:
    panel.show_job(sweep_job(TRIALS, SPACE, best=2))
    panel.select_trial(0)  # C=10 (log: 3/4 up its axis), rbf (the middle category)
    parallel = panel.parallel
    assert list(parallel.selected.yData[:2]) == pytest.approx([0.75, 0.5]) and parallel.selected.zValue() > 100
    assert list(panel.scatter.ring.data["x"]) == pytest.approx([1.0])  # log10(10) on the scatter's C axis

    # a click on trial 3's line (C=50, poly) halfway between the C and kernel axes selects it
    y = (parallel.grid[3, 0] + parallel.grid[3, 1]) / 2
    scene = parallel.plotItem.vb.mapViewToScene(QPointF(0.5, y))
    qtbot.mouseClick(parallel.viewport(), Qt.MouseButton.LeftButton, pos=parallel.mapFromScene(scene))
    qtbot.waitUntil(lambda: panel.selected_trial() == 3)
    assert list(parallel.selected.yData[:2]) == pytest.approx(list(parallel.grid[3, :2]))
    assert parallel.nearest(0.5, 0.02) is None  # far from every line: nothing


def test_top_trials_are_the_best_scores_in_the_sweeps_direction_with_compact_labels() -> None:
    job = sweep_job(TRIALS, SPACE, best=2)
    assert top_trials(job, 3) == {2: "#2 0.97", 1: "#1 0.95", 0: "#0 0.91"}
    assert list(top_trials(job)) == [2, 1, 0, 3]  # default k = 10; the unscored trial is left out
    losses = [({"C": 1.0, "kernel": "rbf"}, 12.3456, "SUCCEEDED"), ({"C": 2.0, "kernel": "rbf"}, 0.97312, "SUCCEEDED")]
    losses.append(({"C": 3.0, "kernel": "rbf"}, 3.5, "SUCCEEDED"))
    rmse = sweep_job(losses, SPACE, metric="rmse", direction="minimize")  # no best_trial yet: from the scores
    assert top_trials(rmse, 2) == {1: "#1 0.9731", 2: "#2 3.5"}
    assert top_trials(rmse, 0) == {}
    pruned = sweep_job([*losses, ({"C": 4.0, "kernel": "rbf"}, 0.5, "SUCCEEDED")], SPACE, "rmse", "minimize")
    pruned["task_list"][3]["exit_cause"] = "pruned"  # stopped early: its 0.5 is a partial score, not a result
    assert list(top_trials(pruned)) == [1, 2, 0]


def test_top_k_spin_box_emits_and_ignores_the_wheel_without_focus(panel: SweepPanel, qtbot: Any) -> None:
    spin = panel.top_k_spin
    assert panel.top_k == spin.value() == 10
    assert spin.focusPolicy() == Qt.FocusPolicy.StrongFocus
    with qtbot.waitSignal(panel.top_k_changed) as changed:
        spin.setValue(5)
    assert changed.args == [5] and panel.top_k == 5

    def wheel() -> None:
        center = QPointF(spin.rect().center())
        event = QWheelEvent(
            center,
            QPointF(spin.mapToGlobal(spin.rect().center())),
            QPoint(0, 0),
            QPoint(0, 120),
            Qt.MouseButton.NoButton,
            Qt.KeyboardModifier.NoModifier,
            Qt.ScrollPhase.NoScrollPhase,
            False,
        )
        QApplication.sendEvent(spin, event)

    panel.trials_table.setFocus()
    qtbot.waitUntil(lambda: not spin.hasFocus())
    wheel()
    assert spin.value() == 5 and panel.top_k == 5
    spin.setFocus()  # once the user clicked into it, the wheel steps it
    qtbot.waitUntil(spin.hasFocus)
    wheel()
    assert spin.value() == 6 and panel.top_k == 6


def test_double_click_enter_and_row_menu_show_a_trials_curves_and_copy_parameters_and_table(
    panel: SweepPanel, qtbot: Any
) -> None:
    panel.show_job(sweep_job(TRIALS, SPACE, best=2))
    table = panel.trials_table
    index = table.model().index(1, 0)  # trial 1 (second under the score sort)
    with qtbot.waitSignal(panel.show_trial) as shown:
        table.doubleClicked.emit(index)
    assert shown.args == [1]
    actions = [a for a in panel._row_actions([panel.trials_model.rows[panel.trials_model.find("3")]]) if a]
    assert [a.text() for a in actions] == ["Show its curves", "Copy parameters as JSON", "Copy all trials as CSV"]
    with qtbot.waitSignal(panel.show_trial) as shown:
        actions[0].trigger()
    assert shown.args == [3]
    actions[1].trigger()
    assert json.loads(QApplication.clipboard().text()) == {"C": 50.0, "kernel": "poly", "random_state": 42}
    actions[2].trigger()
    lines = QApplication.clipboard().text().splitlines()
    assert lines[0] == "trial,C,kernel,test_accuracy,state,duration_s,agent"
    assert lines[1].startswith("2,0.5,rbf,0.97,SUCCEEDED,") and len(lines) == 6  # table order: the best first

    panel.select_trial(0)
    table.setFocus()
    with qtbot.waitSignal(panel.show_trial) as shown:
        qtbot.keyClick(table, Qt.Key.Key_Return)  # Enter opens the selected trial's curves too
    assert shown.args == [0]


def test_axes_place_categories_evenly_and_wide_ranges_on_a_log_scale() -> None:
    kernel = ParamAxis.build("kernel", "linear,rbf,poly", ["rbf", "poly"])
    assert kernel.categories == ["linear", "rbf", "poly"]  # the search space's order, unused choices kept
    assert [kernel.position(k) for k in ("linear", "rbf", "poly")] == pytest.approx([1 / 6, 3 / 6, 5 / 6])
    assert math.isnan(kernel.position("sigmoid"))  # not a choice of the space: off the axis
    depth = ParamAxis.build("max_depth", "3,5,null", [3, None, 5])
    assert depth.categories == ["3", "5", "null"] and depth.position(None) == pytest.approx(5 / 6)
    log = ParamAxis.build("C", "float:0.01:100:log", [0.5])
    assert log.log and log.position(0.01) == 0 and log.position(1.0) == pytest.approx(0.5)
    assert [t[1] for t in log.ticks()] == ["0.01", "0.1", "1", "10", "100"]
    assert ParamAxis.build("alpha", "float:0.0001:10", [0.001]).log  # 1e5 wide and positive: log although not asked
    linear = ParamAxis.build("n", "int:2:8", [2, 5])
    assert not linear.log and linear.position(5) == pytest.approx(0.5)
    assert ParamAxis.build("n_estimators", "10,50,100", [10]).categories is None  # numeric choices: a numeric axis


def test_line_colours_rank_trials_by_the_sweeps_direction(qtbot: Any) -> None:
    plot = ParallelCoordinates()
    qtbot.addWidget(plot)
    axis = ParamAxis.build("C", "float:0.01:100:log", [])
    params = [{"C": 0.1}, {"C": 1.0}, {"C": 10.0}]
    for minimize, brightest, darkest in ((False, 2, 0), (True, 0, 2)):
        plot.set_trials([axis], params, [0.5, 0.7, 0.9], None, minimize=minimize)
        assert list(plot.buckets[-1].yData) == pytest.approx(list(plot.grid[brightest]))  # the best scores
        assert list(plot.buckets[0].yData) == pytest.approx(list(plot.grid[darkest]))


def many_trials(n: int, seed: int = 7) -> list[Trial]:
    rnd = random.Random(seed)
    trials: list[Trial] = []
    for i in range(n):
        c = 10 ** rnd.uniform(-2, 2)
        score = None if i % 25 == 24 else 0.8 + 0.19 * rnd.random()
        trials.append(
            ({"C": c, "kernel": rnd.choice(["linear", "rbf", "poly"])}, score, "SUCCEEDED" if score else "RUNNING")
        )
    return trials


def plot_items(panel: SweepPanel) -> tuple[int, int]:
    return len(panel.parallel.scene().items()), len(panel.scatter.scene().items())


def test_parallel_coordinates_and_scatter_draw_200_trials_with_the_items_of_8(panel: SweepPanel) -> None:
    small = many_trials(8)
    panel.show_job(sweep_job(small, SPACE, best=3))
    items_for_8 = plot_items(panel)
    big = many_trials(200)
    best = max((i for i, t in enumerate(big) if t[1] is not None), key=lambda i: big[i][1] or 0.0)
    panel.show_job(sweep_job(big, SPACE, best=best, job_id="j-big"))
    assert plot_items(panel) == items_for_8  # no graphics item per trial

    parallel = panel.parallel
    ticks = parallel.plotItem.getAxis("bottom")._tickLevels[0]
    assert [t[1] for t in ticks] == ["C (log)", "kernel", "score"]  # one axis per parameter, then the score
    curves = [parallel.unscored, *parallel.buckets]
    drawn = sum(len(c.xData) for c in curves if c.xData is not None)
    assert drawn == 199 * 3 and len(parallel.best.xData) == 3  # every trial once, the best on its own on top
    assert parallel.best.zValue() > max(c.zValue() for c in curves)
    assert parallel.best.opts["pen"].widthF() > parallel.buckets[0].opts["pen"].widthF()
    kernel_y = {round(float(y), 3) for c in curves for y in c.yData[1::3]}
    assert kernel_y == {round(1 / 6, 3), round(3 / 6, 3), round(5 / 6, 3)}  # categories at even positions

    assert len(panel.scatter.dots.data) == 192 - 1 and len(panel.scatter.star.data) == 1  # scored trials; best a star
    point = panel.scatter.dots.points()[0]
    panel.scatter._clicked(panel.scatter.dots, [point])  # a click on a dot selects its trial in the table
    selected = panel.trials_table.selectionModel().selectedRows()
    assert [int(str(i.data()).lstrip("#")) for i in selected] == [point.data()]
    assert panel.scatter._tip(0, 0, best).startswith(f"trial #{best} (best)\nC = ")

    panel.scatter_param.setCurrentText("kernel")
    assert panel.scatter.plotItem.getAxis("bottom")._tickLevels[0] == [(0, "linear"), (1, "rbf"), (2, "poly")]
    assert {round(x) for x in panel.scatter.dots.data["x"]} <= {0, 1, 2}

    panel.clear()  # another job opens: nothing of this sweep stays drawn
    assert all(c.xData is None or len(c.xData) == 0 for c in parallel.curve_items())
    assert len(panel.scatter.dots.data) == 0 and panel.trials_model.rowCount() == 0


def test_refreshing_an_unchanged_sweep_does_not_redraw_and_a_hidden_tab_waits(
    qtbot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    panel = SweepPanel()
    qtbot.addWidget(panel)
    drawn: list[int] = []
    original = panel.parallel.set_trials

    def counted(*args: Any, **kwargs: Any) -> None:
        drawn.append(1)
        original(*args, **kwargs)

    monkeypatch.setattr(panel.parallel, "set_trials", counted)
    job = sweep_job(many_trials(200), SPACE, best=0)
    panel.show_job(job)
    assert drawn == [] and len(panel.trials_model.rows) == 200  # hidden: the table is filled, the plots wait
    panel.show()
    assert drawn == [1]
    panel.show_job(copy.deepcopy(job))
    assert drawn == [1]  # same trials and scores: nothing to redraw
    changed = copy.deepcopy(job)
    changed["task_list"][24]["metrics"] = {"test_accuracy": 0.5}
    changed["task_list"][24]["state"] = "SUCCEEDED"
    panel.show_job(changed)
    assert drawn == [1, 1]


@pytest.mark.slow
def test_a_real_sweep_and_200_trials_derived_from_it(gui_cluster: Any, qtbot: Any) -> None:
    controller, _ = gui_cluster
    with Client(controller.address) as client:
        submitted = client.submit(
            {
                "algorithm": "svm",
                "dataset": "wine",
                "sweep": {
                    "params": {"C": "float:0.01:100:log", "kernel": "linear,rbf"},
                    "trials": 4,
                    "search": "random",
                },
            }
        )
        job = client.wait(submitted["id"], timeout=120)
    assert job["state"] == "SUCCEEDED"
    synthetic = sweep_job(TRIALS, SPACE, best=2)
    assert synthetic.keys() == job.keys()  # the fast tests' jobs have the real shape
    assert synthetic["task_list"][0].keys() == job["task_list"][0].keys()
    assert synthetic["spec"]["sweep"].keys() <= job["spec"]["sweep"].keys()

    panel = SweepPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.show_job(job)
    best = int(job["metrics"]["best_trial"])
    assert column_titles(panel)[:4] == ["Trial", "C", "kernel", "test_accuracy"]
    assert shown_trials(panel)[0] == best and len(shown_trials(panel)) == 4
    assert next(iter(top_trials(job, 3))) == best
    items = plot_items(panel)

    rnd = random.Random(3)
    big = copy.deepcopy(job)
    big["id"] = "derived"
    big["task_list"] = []
    for i in range(200):
        task = copy.deepcopy(job["task_list"][i % len(job["task_list"])])
        task["index"] = i
        task["params"]["C"] = 10 ** rnd.uniform(-2, 2)
        task["metrics"]["test_accuracy"] = rnd.uniform(0.6, 0.99)
        big["task_list"].append(task)
    big["metrics"]["best_trial"] = float(max(range(200), key=lambda i: big["task_list"][i]["metrics"]["test_accuracy"]))
    panel.show_job(big)
    assert len(panel.trials_model.rows) == 200 and shown_trials(panel)[0] == int(big["metrics"]["best_trial"])
    assert plot_items(panel) == items


def test_first_axis_label_has_room_and_parameter_headers_show_whole(qtbot: Any) -> None:
    """The screenshot run showed no label under the first axis (`learning_rate (log)` wider than the margin left
    of it) and "nax_leaf_node" for max_leaf_nodes in the trials table."""
    space = {"learning_rate": "float:0.01:0.5:log", "max_leaf_nodes": "int:4:48", "max_depth": "int:2:8"}
    trials: list[Trial] = [
        (
            {"learning_rate": 0.05 * (i + 1), "max_leaf_nodes": 4 + 4 * i, "max_depth": 2 + i % 6},
            0.9 + i / 100,
            "SUCCEEDED",
        )
        for i in range(6)
    ]
    panel = SweepPanel()
    qtbot.addWidget(panel)
    panel.resize(1200, 700)
    panel.show()
    panel.show_job(sweep_job(trials, space, best=5))
    parallel = panel.parallel
    qtbot.waitUntil(lambda: parallel.width() > 200)
    half = parallel.fontMetrics().horizontalAdvance("learning_rate (log)") / 2
    left_px = parallel.plotItem.vb.mapViewToScene(QPointF(0.0, 0.5)).x() - parallel.plotItem.vb.sceneBoundingRect().x()
    assert left_px >= half  # the first axis sits far enough from the edge for its centred label
    x_max = parallel.plotItem.vb.viewRange()[0][1]
    assert x_max >= 2.3  # and the score axis' tick labels keep their room on the right

    header = panel.trials_table.horizontalHeader()
    for title in ("learning_rate", "max_leaf_nodes", "max_depth"):
        at = column_titles(panel).index(title)
        assert panel.trials_table.columnWidth(at) >= header.fontMetrics().horizontalAdvance(title) + 20
    tip = panel.trials_model.headerData(
        column_titles(panel).index("max_leaf_nodes"), Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole
    )
    assert "max_leaf_nodes" in tip
