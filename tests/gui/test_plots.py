"""The Curves tab's plots: toolbar (smoothing, log-y, x axis, hover read-out, export), internal series, metric
cards for scalar results, and the task filter a sweep uses. Widget-level: fed with job_history chunks built from
metric point dicts like the bridge's, no cluster needed."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import QPointF
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QFileDialog, QMessageBox

from tensorfleet_desktop.ui.curves_panel import CurvesPanel
from tensorfleet_desktop.ui.job_history import group_points
from tensorfleet_desktop.ui.plots import (
    EPOCH,
    LEGEND_MAX,
    REDRAW_HZ,
    RELATIVE,
    STEP,
    WALL,
    MetricPlot,
    configure_pyqtgraph,
    ema,
)

T0 = 1_790_000_000.0  # wall time of the first point


def points(name: str, values: list[float], task: int = 0, steps: list[int] | None = None) -> list[dict[str, Any]]:
    steps = steps if steps is not None else list(range(len(values)))
    return [
        {"task_index": task, "name": name, "step": s, "value": v, "wall_time": T0 + 7 * task + 0.5 * s}
        for s, v in zip(steps, values, strict=True)
    ]


def reference_ema(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing written out point by point (debiased EMA)."""
    out, last = [], 0.0
    for i, v in enumerate(values):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight ** (i + 1)))
    return out


@pytest.fixture
def panel(qtbot: Any) -> CurvesPanel:
    widget = CurvesPanel()
    qtbot.addWidget(widget)
    widget.resize(1000, 700)
    widget.show()
    return widget


def curve_data(plot: MetricPlot, label: str) -> tuple[np.ndarray, np.ndarray]:
    curve = plot.series[label].curve
    assert curve is not None
    return np.asarray(curve.xData), np.asarray(curve.yData)


def test_smoothing_is_tensorboards_ema_with_the_raw_curve_behind(panel: CurvesPanel) -> None:
    rng = np.random.default_rng(1)
    values = list(np.cumsum(rng.normal(size=300)) + 50)
    np.testing.assert_allclose(ema(np.array(values), 0.6), reference_ema(values, 0.6), rtol=1e-10)
    with_gap = np.array([1.0, np.nan, 3.0, 5.0])
    np.testing.assert_allclose(ema(with_gap, 0.5)[[0, 2, 3]], reference_ema([1.0, 3.0, 5.0], 0.5))

    panel.add_chunks(group_points(points("loss", values)))
    toolbar, plot = panel.plot.toolbars["loss"], panel.plot.plots["loss"]
    plot.flush()
    assert plot.series["loss"].raw is None
    toolbar.smoothing.setValue(90)
    assert toolbar.smoothing_value.text() == "0.90"
    _, y = curve_data(plot, "loss")
    np.testing.assert_allclose(y, reference_ema(values, 0.9), rtol=1e-10)
    raw = plot.series["loss"].raw
    assert raw is not None and np.allclose(raw.yData, values)  # the raw curve, faint, behind
    assert raw.opts["pen"].color().alpha() < 100 and raw.zValue() < plot.series["loss"].curve.zValue()
    toolbar.smoothing.setValue(0)
    assert plot.series["loss"].raw is None and np.allclose(curve_data(plot, "loss")[1], values)


def test_log_y_and_the_x_axis_modes(panel: CurvesPanel) -> None:
    loss = [10.0 / (s + 1) for s in range(100)]
    epochs = points("epoch", [1.0, 2.0, 3.0, 4.0], steps=[25, 50, 75, 100])
    panel.add_chunks(group_points(points("loss", loss) + epochs))
    toolbar, plot = panel.plot.toolbars["loss"], panel.plot.plots["loss"]
    plot.flush()
    assert "epoch" not in panel.plot.plots  # internal: it only drives the epoch axis

    toolbar.log_y.click()
    assert plot.plotItem.ctrl.logYCheck.isChecked() and plot.plotItem.getAxis("left").logMode
    toolbar.log_y.click()
    assert not plot.plotItem.getAxis("left").logMode

    steps = np.arange(100.0)
    modes = {STEP: steps, WALL: T0 + 0.5 * steps, RELATIVE: 0.5 * steps, EPOCH: steps / 25}
    for mode, expected in modes.items():
        toolbar.x_axis.setCurrentIndex(toolbar.x_axis.findData(mode))
        x, y = curve_data(plot, "loss")
        np.testing.assert_allclose(x, expected, err_msg=mode)
        np.testing.assert_allclose(y, loss)
        assert isinstance(plot.plotItem.getAxis("bottom"), pg.DateAxisItem) == (mode == WALL)
    # points past the last epoch point (a running job) continue at the last epoch's pace
    panel.add_chunks(group_points(points("loss", [0.1, 0.1], steps=[110, 125])))
    plot.flush()
    assert curve_data(plot, "loss")[0][-2:] == pytest.approx([4.4, 5.0])


def test_epoch_axis_is_off_with_a_reason_when_the_job_reports_no_epochs(panel: CurvesPanel) -> None:
    panel.add_chunks(group_points(points("loss", [3.0, 2.0, 1.0])))
    toolbar = panel.plot.toolbars["loss"]
    assert not toolbar.epoch_enabled()
    item = toolbar.x_axis.model().item(toolbar.x_axis.findData(EPOCH))
    assert "no `epoch` series" in item.toolTip()
    panel.add_chunks(group_points(points("epoch", [1.0], steps=[2])))
    assert toolbar.epoch_enabled()


def test_hover_reads_out_every_series_at_the_cursor(panel: CurvesPanel, qtbot: Any) -> None:
    panel.clear(multi_task=True)
    panel.add_chunks(group_points(points("loss", [float(s) for s in range(50)], task=0)))
    panel.add_chunks(group_points(points("loss", [100.0 + 2 * s for s in range(50)], task=1)))
    plot = panel.plot.plots["loss"]
    plot.flush()
    plot.reset_view()
    qtbot.wait(20)
    scene_pos = plot.plotItem.vb.mapViewToScene(QPointF(20.2, 50.0))
    plot.scene().sigMouseMoved.emit(scene_pos)  # the mouse, through the rate-limiting proxy
    plot.hover_proxy.flush()
    assert plot.hover_text.splitlines() == ["step 20", "task 0: 20", "task 1: 140"]
    assert plot.crosshair.isVisible() and plot.crosshair.value() == pytest.approx(20.2)
    assert "task 1" in plot.readout.textItem.toPlainText()
    plot.mouse_moved((QPointF(-500.0, -500.0),))  # off the plot: the read-out goes
    assert not plot.crosshair.isVisible() and plot.hover_text == ""

    saved = {key: pg.getConfigOption(key) for key in ("background", "foreground", "antialias")}
    try:  # a theme switch after the plot was made: the read-out follows it
        configure_pyqtgraph(dark=True)
        plot.hover_at(10.0)
        assert plot.readout.fill.color().name() == pg.mkColor("#1e1e1e").name()
        assert plot.readout.color.name() == pg.mkColor("#dddddd").name()
    finally:
        pg.setConfigOptions(**saved)


def test_export_writes_png_and_svg(panel: CurvesPanel, tmp_path: Path) -> None:
    panel.add_chunks(group_points(points("loss", [5.0, 3.0, 2.0, 1.5])))
    plot = panel.plot.plots["loss"]
    png = plot.export(tmp_path / "loss.png")
    image = QImage(str(png))
    assert not image.isNull() and image.width() > 100 and image.height() > 50
    svg = plot.export(tmp_path / "loss.svg").read_text()
    assert svg.startswith("<?xml") or "<svg" in svg
    assert "<path" in svg or "<polyline" in svg


def test_export_to_an_unwritable_place_says_so_naming_the_path(
    panel: CurvesPanel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    panel.add_chunks(group_points(points("loss", [5.0, 3.0, 2.0])))
    plot = panel.plot.plots["loss"]
    missing = tmp_path / "no-such-dir" / "loss.png"
    for target in (missing, missing.with_suffix(".svg")):
        with pytest.raises(OSError, match=f"cannot write {re.escape(str(target))}: the folder .* does not exist"):
            plot.export(target)
    # from the toolbar: the user is told, with the path
    warnings: list[str] = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(missing), "PNG image (*.png)"))
    monkeypatch.setattr(QMessageBox, "warning", lambda _parent, _title, text, *a: warnings.append(text))
    panel.plot.toolbars["loss"].choose_export()
    assert warnings and f"cannot write {missing}" in warnings[0]
    assert not missing.parent.exists()


def test_internal_series_are_hidden_until_asked_for(panel: CurvesPanel) -> None:
    panel.add_chunks(
        group_points(
            points("loss", [3.0, 2.0, 1.0])
            + points("epoch", [1.0, 2.0], steps=[1, 2])
            + points("_lr", [0.1, 0.05, 0.01])
            + points("param_checksum", [12.5], steps=[2])
        )
    )
    assert set(panel.plot.plots) == {"loss"} and not panel.cards.cards
    filter_items = [panel.metric_filter.itemText(i) for i in range(panel.metric_filter.count())]
    assert filter_items == ["all metrics", "loss"]
    assert panel.points == 9  # kept all the same

    panel.show_internal.setChecked(True)
    assert set(panel.plot.plots) == {"loss", "epoch", "_lr"} and set(panel.cards.cards) == {"param_checksum"}
    panel.show_internal.setChecked(False)
    assert set(panel.plot.plots) == {"loss"} and not panel.cards.cards


def test_scalar_results_are_cards_until_a_second_point_makes_a_plot(panel: CurvesPanel) -> None:
    panel.add_chunks(group_points(points("test_accuracy", [0.9666666]) + points("training_time", [0.01234567])))
    assert not panel.plot.plots
    assert panel.cards.cards["test_accuracy"].value.text() == "0.9667"
    assert panel.cards.cards["training_time"].value.text() == "0.01235"
    assert panel.cards.isVisible()

    panel.add_chunks(group_points(points("test_accuracy", [0.97], steps=[5])))
    assert "test_accuracy" in panel.plot.plots and "test_accuracy" not in panel.cards.cards
    assert panel.plot.plots["test_accuracy"].series["test_accuracy"].n == 2
    assert set(panel.cards.cards) == {"training_time"}


def test_a_score_reported_again_by_a_retried_task_stays_a_card_with_the_newest_value(panel: CurvesPanel) -> None:
    # task 0 failed after reporting its score and was retried: the same step twice; task 1 reported once
    panel.multi_task = True
    panel.add_chunks(group_points(points("test_accuracy", [0.91], steps=[0]) + points("test_accuracy", [0.8], task=1)))
    panel.add_chunks(group_points(points("test_accuracy", [0.93], steps=[0])))
    assert "test_accuracy" not in panel.plot.plots
    card = panel.cards.cards["test_accuracy"].text()
    assert "task 0: 0.93" in card and "task 1: 0.8" in card and "0.91" not in card
    panel.add_chunks(group_points(points("test_accuracy", [0.95], steps=[3])))  # a second step: a curve
    assert "test_accuracy" in panel.plot.plots and "test_accuracy" not in panel.cards.cards


def test_scalars_of_several_tasks_list_each_task(panel: CurvesPanel) -> None:
    panel.clear(multi_task=True)
    panel.add_chunks(group_points(points("accuracy", [0.9], task=0) + points("accuracy", [0.8], task=1)))
    text = panel.cards.cards["accuracy"].text()
    assert "mean of 2 tasks" in text and "0.85" in text and "task 0: 0.9" in text and "task 1: 0.8" in text
    panel.set_task_filter({1: "#1", 0: "#2"})  # a sweep's top trials, best first
    card = panel.cards.cards["accuracy"]
    assert card.value.text() == "0.8" and "the best trial's (#1); 2 trials shown\n#1: 0.8\n#2: 0.9" in card.text()


def test_task_filter_draws_only_the_chosen_tasks_with_their_labels(panel: CurvesPanel) -> None:
    panel.clear(multi_task=True)
    for task in range(6):
        panel.add_chunks(group_points(points("loss", [1.0 + task, 0.5 + task, 0.2 + task], task=task)))
    panel.set_task_filter({4: "#1 lr=0.1", 2: "#2 lr=0.01"})
    plot = panel.plot.plots["loss"]
    plot.flush()
    assert len(plot.plotItem.listDataItems()) == 2  # no items at all for the other tasks
    assert [s.name for s in plot.drawn()] == ["#1 lr=0.1", "#2 lr=0.01"]  # best first
    assert all(plot.series[f"task {t}"].curve is None for t in (0, 1, 3, 5))
    assert [label.text for _, label in plot.legend.items] == ["#1 lr=0.1", "#2 lr=0.01"]
    assert np.allclose(curve_data(plot, "task 4")[1], [5.0, 4.5, 4.2])
    assert panel.points == 18  # every task's points are kept

    panel.set_task_filter(None)
    plot.flush()
    assert len(plot.plotItem.listDataItems()) == 6
    assert sorted(s.name for s in plot.drawn()) == [f"task {t}" for t in range(6)]


def test_many_curves_keep_a_short_legend_and_read_out(panel: CurvesPanel) -> None:
    panel.clear(multi_task=True)
    panel.add_chunks(group_points([p for t in range(20) for p in points("loss", [1.0 + t, 0.5 + t, 0.1 + t], task=t)]))
    plot = panel.plot.plots["loss"]
    plot.flush()
    assert len(plot.drawn()) == 20 and len(plot.legend.items) == LEGEND_MAX
    assert plot.legend.columnCount == 2  # compact: two columns past 6 curves
    lines = plot.hover_at(1.0).splitlines()
    assert lines[1] == "task 0: 0.5" and lines[-1] == f"… {20 - LEGEND_MAX} more" and len(lines) == LEGEND_MAX + 2


def test_a_metrics_toolbar_settings_carry_over_to_the_next_job(panel: CurvesPanel) -> None:
    panel.add_chunks(group_points(points("loss", [3.0, 2.0, 1.0]) + points("epoch", [1.0], steps=[2])))
    toolbar = panel.plot.toolbars["loss"]
    toolbar.smoothing.setValue(80)
    toolbar.log_y.setChecked(True)
    toolbar.x_axis.setCurrentIndex(toolbar.x_axis.findData(EPOCH))
    panel.clear(multi_task=False)  # the next job: its epoch series comes after its loss
    panel.add_chunks(group_points(points("loss", [5.0, 4.0, 3.0])))
    plot, toolbar = panel.plot.plots["loss"], panel.plot.toolbars["loss"]
    assert plot.smoothing == pytest.approx(0.8) and plot.log_y and toolbar.smoothing_value.text() == "0.80"
    assert plot.x_mode == STEP  # no epochs yet
    panel.add_chunks(group_points(points("epoch", [1.0], steps=[2])))
    assert plot.x_mode == EPOCH and toolbar.x_axis.currentData() == EPOCH


def test_a_hidden_plot_draws_only_once_shown(panel: CurvesPanel, qtbot: Any) -> None:
    panel.hide()  # another tab of the job detail is in front
    panel.add_chunks(group_points(points("loss", [3.0, 2.0, 1.0])))
    plot = panel.plot.plots["loss"]
    qtbot.wait(2 * 1000 // REDRAW_HZ + 50)  # two ticks of the periodic redraw
    assert plot.series["loss"].curve is None and plot.series["loss"].dirty
    panel.show()
    qtbot.waitUntil(lambda: plot.series["loss"].curve is not None, timeout=1000)
    assert np.allclose(curve_data(plot, "loss")[1], [3.0, 2.0, 1.0])


def test_the_next_jobs_plots_reuse_panes_and_fit_their_data(panel: CurvesPanel) -> None:
    panel.add_chunks(group_points(points("loss", [3.0, 2.0, 1.0]) + points("accuracy", [0.5, 0.6, 0.7])))
    old, old_accuracy = panel.plot.plots["loss"], panel.plot.plots["accuracy"]
    old.plotItem.vb.setRange(xRange=(100, 200), yRange=(50, 60))  # the user zoomed somewhere
    panel.clear(multi_task=False)  # the next job
    panel.add_chunks(group_points(points("test_loss", [40.0, 20.0, 10.0], steps=[0, 500, 1000])))
    plot = panel.plot.plots["test_loss"]
    assert plot in (old, old_accuracy)  # an emptied pane of the job before, not a new one
    assert plot.plotItem.titleLabel.text == "test_loss" and not plot.drawn()
    plot.flush()
    (x0, x1), (y0, y1) = plot.plotItem.vb.viewRange()
    assert x0 <= 0 and x1 >= 1000 and y0 <= 10 and y1 >= 40  # the view fits the new data, not the old zoom
    assert [s.name for s in plot.drawn()] == ["test_loss"] and len(plot.plotItem.listDataItems()) == 1


def test_a_pane_is_made_over_several_steps_before_a_metric_needs_it(panel: CurvesPanel) -> None:
    grid = panel.plot
    chunks = group_points(points("loss", [3.0, 2.0, 1.0]))
    assert panel.needs_pane(chunks)  # a curve: a plot is coming
    assert not panel.needs_pane(group_points(points("score", [0.9], steps=[7])))  # a card
    assert not panel.needs_pane(group_points(points("epoch", [1.0, 2.0])))  # internal: hidden
    steps = 0
    while grid.prepare():
        steps += 1
    assert steps >= 3 and len(grid.spare) == 1  # (each step a few ms of the GUI thread, not 35-70 in one)
    ready = grid.spare[0][0]
    panel.add_chunks(chunks)
    plot = grid.plots["loss"]
    assert plot is ready and not grid.spare and not grid.prepare(0)
    item = plot.plotItem
    assert [s for s in ("left", "bottom", "top", "right") if item.getAxis(s).isVisible()] == ["left", "bottom"]


def test_a_removed_pane_is_emptied_later_without_touching_curves_another_plot_took(panel: CurvesPanel) -> None:
    panel.add_chunks(group_points(points("loss", [3.0, 2.0, 1.0])))
    old = panel.plot.plots["loss"]
    old.flush()
    series = old.series["loss"]
    kept = series.curve
    panel.show_internal.setChecked(False)
    panel.plot.remove("loss")  # (as when a metric turns into a card or is filtered out)
    assert [p for p, _, _ in panel.plot.used] == [old] and kept in old.plotItem.listDataItems()
    assert series.curve is None and series.dirty  # let go of at once: its buffers are the panel's
    fresh = panel.plot._new_pane()
    panel.plot.spare.append(fresh)
    panel._place("loss")  # shown again: another pane takes the same series
    new = panel.plot.plots["loss"]
    assert new is fresh[0]
    new.flush()
    drawn = series.curve
    assert panel.plot.prepare(1)  # empties the old pane: a step of its own
    assert not panel.plot.used and [p for p, _, _ in panel.plot.spare] == [old]
    assert old.plotItem.listDataItems() == [] and not old.legend.items
    assert series.curve is drawn and drawn in new.plotItem.listDataItems()


def test_a_budgeted_first_draw_repaints_the_plot_once_when_every_curve_is_in(panel: CurvesPanel) -> None:
    many = [p for task in range(8) for p in points("loss", [3.0 - task, 2.0, 1.0], task=task)]
    panel.multi_task = True
    panel.add_chunks(group_points(many))
    plot = panel.plot.plots["loss"]
    assert not plot.flush(deadline=0.0)  # one curve per turn when out of time
    assert not plot.updatesEnabled() and len(plot.drawn()) == 1  # no repaint for a picture still changing
    while not plot.flush(deadline=0.0):
        pass
    assert plot.updatesEnabled() and len(plot.drawn()) == 8
    assert [label.text for _, label in plot.legend.items] == [f"task {t}" for t in range(8)]
    assert plot.legend.boundingRect().height() > 8 * 10  # laid out with every entry
    assert plot._crosshair is None  # the hover line and read-out are made on the first hover
    assert "task 7" in plot.hover_at(1.0) and plot.crosshair.isVisible()


def test_new_curves_settle_their_view_range_and_legend_in_a_turn_of_their_own(panel: CurvesPanel) -> None:
    panel.multi_task = True
    panel.add_chunks(group_points([p for task in range(3) for p in points("loss", [3.0 - task, 2.0], task=task)]))
    plot = panel.plot.plots["loss"]
    roomy = time.perf_counter() + 60.0  # time enough for every step: the turns are split by what they do
    assert not plot.flush(roomy) and len(plot.drawn()) == 3  # every curve, held from the screen
    assert not plot.updatesEnabled() and plot._legend_stale
    assert not plot.flush(roomy) and not plot._legend_stale  # the legend and view range, still held
    assert plot.flush(roomy) and plot.updatesEnabled()  # then the repaint
    assert [label.text for _, label in plot.legend.items] == ["task 0", "task 1", "task 2"]


def test_the_periodic_redraw_takes_one_plot_per_turn(panel: CurvesPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorfleet_desktop.ui import plots

    monkeypatch.setattr(plots, "DRAW_BUDGET_S", 60.0)  # time enough for both: still one plot per turn
    for metric in ("loss", "accuracy"):
        panel.add_chunks(group_points(points(metric, [3.0, 2.0, 1.0])))
    first, second = panel.plot.plots["loss"], panel.plot.plots["accuracy"]
    redrawer = plots._redrawer()
    redrawer.timer.stop()
    redrawer.queue = {first: None, second: None}
    redrawer._run()
    assert first.drawn() and not second.drawn()  # the second plot waits for a turn of its own
    while redrawer.queue:
        redrawer._run()
    assert second.drawn() and first.updatesEnabled() and second.updatesEnabled()
