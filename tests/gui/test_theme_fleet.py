"""Issue 22 items 7, 9 (wheel) and 10: a dark theme that really darkens the app and its plots and follows the OS,
a fleet table that fits a 1280 px window with GPU sparklines and a disk bar, diagnostic workloads behind a toggle,
and spin boxes the mouse wheel leaves alone until they have focus (pytest-qt, offscreen, no cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

import pyqtgraph as pg
from PySide6.QtCore import QPoint, QPointF, QRect, Qt
from PySide6.QtGui import QColor, QGuiApplication, QImage, QPainter, QPalette, QWheelEvent
from PySide6.QtWidgets import QApplication, QScrollArea, QSpinBox, QStyleOptionViewItem, QVBoxLayout, QWidget

from helpers.servers import free_port
from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent.workloads.registry import all_workloads
from tensorfleet_desktop.ui import theme
from tensorfleet_desktop.ui.app import build_window
from tensorfleet_desktop.ui.formatting import STATE_COLORS
from tensorfleet_desktop.ui.main_window import MainWindow
from tensorfleet_desktop.ui.plots import MetricPlot
from tensorfleet_desktop.ui.settings_view import app_settings
from tensorfleet_desktop.ui.submit_dialog import SHOW_DIAGNOSTIC, SubmitDialog
from tensorfleet_desktop.ui.table_model import EXTRA_ROLE
from tensorfleet_desktop.ui.widgets import BarDelegate, install_wheel_guard, wheel_guard
from tensorfleet_desktop.wire import agent_from_pb

Role = QPalette.ColorRole
GiB = 2**30


@pytest.fixture
def light_afterwards(qapp: QApplication) -> Iterator[None]:
    """Every theme test leaves the app light, as the other GUI tests expect it."""
    yield
    theme.apply("light")
    app_settings().remove("theme")


@pytest.fixture
def prefs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, qapp: QApplication) -> Iterator[None]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # QSettings away from the user's
    for key in (SHOW_DIAGNOSTIC, "theme"):
        app_settings().remove(key)  # Qt keeps the first settings path of the process: start clean
    yield
    for key in (SHOW_DIAGNOSTIC, "theme"):
        app_settings().remove(key)


def lightness(role: Role, group: QPalette.ColorGroup = QPalette.ColorGroup.Active) -> int:
    return int(QApplication.palette().color(group, role).lightness())


def test_dark_theme_darkens_the_palette_and_the_plots_and_light_restores_both(
    qtbot: Any, light_afterwards: None
) -> None:
    holder = QWidget()
    plot = MetricPlot()  # exists before the switch: recoloured in place
    plot.plotItem.setTitle("loss")
    QVBoxLayout(holder).addWidget(plot)
    qtbot.addWidget(holder)
    holder.show()

    assert theme.apply("dark") is True
    app = QApplication.instance()
    assert isinstance(app, QApplication) and app.style().name().lower() == "fusion"
    for dark_role in (Role.Window, Role.Base, Role.Button, Role.ToolTipBase):
        assert lightness(dark_role) < 80, dark_role
    for light_role in (Role.WindowText, Role.Text, Role.ButtonText, Role.ToolTipText, Role.HighlightedText):
        assert lightness(light_role) > 180, light_role
    assert 80 < lightness(Role.PlaceholderText) < 180  # readable, yet not mistaken for typed text
    assert lightness(Role.Text, QPalette.ColorGroup.Disabled) < lightness(Role.Text) - 60  # disabled looks disabled
    assert lightness(Role.Link) > 120  # a link that reads on the dark base
    assert pg.mkColor(pg.getConfigOption("background")).lightness() < 60
    assert pg.mkColor(pg.getConfigOption("foreground")).lightness() > 180
    assert plot.backgroundBrush().color().lightness() < 60
    assert plot.plotItem.getAxis("left").pen().color().lightness() > 180
    assert QColor(STATE_COLORS["FAILED"]).lightness() > QColor("#d1242f").lightness()  # brighter on dark
    late = MetricPlot()  # a plot made after the switch takes the dark colours too
    qtbot.addWidget(late)
    assert late.backgroundBrush().color().lightness() < 60

    assert theme.apply("light") is False
    assert lightness(Role.Window) > 200 and lightness(Role.WindowText) < 60
    assert plot.backgroundBrush().color() == QColor("white")
    assert plot.plotItem.getAxis("left").pen().color().lightness() < 60
    assert STATE_COLORS["FAILED"] == "#d1242f"


def test_system_theme_follows_the_os_scheme_and_its_changes(
    qtbot: Any, monkeypatch: pytest.MonkeyPatch, light_afterwards: None
) -> None:
    os_scheme = {"now": Qt.ColorScheme.Dark}
    monkeypatch.setattr(theme, "system_scheme", lambda: os_scheme["now"])
    assert theme.apply("system") is True
    assert lightness(Role.Window) < 80

    hints = QGuiApplication.styleHints()
    os_scheme["now"] = Qt.ColorScheme.Light  # the user switches the desktop to light
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)
    qtbot.waitUntil(lambda: lightness(Role.Window) > 200, timeout=2000)
    assert theme.is_dark() is False

    os_scheme["now"] = Qt.ColorScheme.Unknown  # plain X11: nothing known reads as light
    assert theme.apply("system") is False

    assert theme.apply("dark") is True  # a forced theme ignores the OS
    os_scheme["now"] = Qt.ColorScheme.Light
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)
    qtbot.wait(50)
    assert lightness(Role.Window) < 80


def agent(n: int, **fields: Any) -> dict[str, Any]:
    """An agent in the shape the bridge hands the fleet (wire.agent_from_pb of the controller's message)."""
    gpus = fields.pop("gpu_stats", [])
    values: dict[str, Any] = {
        "id": f"{n:02d}" + "ab" * 15,
        "name": f"gui-agent-{n}",
        "address": f"192.168.100.{10 + n}:{50051 + n}",
        "state": cpb.AGENT_STATE_ONLINE,
        "source": cpb.AGENT_SOURCE_MDNS,
        "paired": True,
        "slots_total": 8,
        "slots_free": 3,
        "hostname": f"workstation-{n}.lan",
        "cpu_percent": 37.5,
        "memory_used_bytes": int(21.4 * GiB),
        "memory_total_bytes": 64 * GiB,
        "tasks_running": 5,
        "agent_version": "0.9.12",
        "disk_free_bytes": 123 * GiB,
        "gpus": len(gpus),
        "gpu_stats": [pb.GpuTelemetry(**g) for g in gpus],
    }
    msg = cpb.Agent(**(values | fields))
    return agent_from_pb(msg)


def gpu(index: int, util: float) -> dict[str, Any]:
    return {
        "index": index,
        "utilization_percent": util,
        "memory_used_bytes": 9 * GiB,
        "memory_total_bytes": 24 * GiB,
        "temperature_celsius": 64.0,
        "power_watts": 210.0,
    }


@pytest.fixture
def window(qtbot: Any, tmp_path: Path, prefs: None) -> Iterator[MainWindow]:
    """The real window at its default 1280 px, its bridge never started (no controller needed)."""
    win = build_window(f"127.0.0.1:{free_port()}", data_dir=tmp_path / "data", autostart=False)
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    win.show_view(win.fleet)
    yield win
    win.close()


def test_fleet_fits_1280_px_with_gpu_sparklines_and_nothing_cut_off(qtbot: Any, window: MainWindow) -> None:
    fleet = window.fleet
    busy = agent(0, gpu_stats=[gpu(0, 12.0), gpu(1, 80.0)])
    for util in (10.0, 55.0, 91.0):  # three telemetry samples
        sample = agent(0, gpu_stats=[gpu(0, util), gpu(1, util / 2)])
        fleet.on_agent_event({"kind": "telemetry", "agent": sample})
    unpaired = agent(2, paired=False, state=cpb.AGENT_STATE_LOST, error="no telemetry for 30 s")
    fleet.set_agents([busy, agent(1), unpaired])
    qtbot.waitUntil(lambda: fleet.table.viewport().width() > 900, timeout=2000)
    QApplication.processEvents()

    assert window.width() == 1280
    assert fleet.table.horizontalScrollBar().maximum() == 0
    metrics = fleet.table.fontMetrics()
    for row in range(fleet.proxy.rowCount()):
        for col in range(fleet.proxy.columnCount()):
            text = str(fleet.proxy.index(row, col).data() or "")
            assert metrics.horizontalAdvance(text) + 8 <= fleet.table.columnWidth(col), (text, col)

    gpu_col = fleet.column["GPU"]
    row0 = fleet.model.index(fleet.model.find(busy["id"]), gpu_col)
    assert row0.data() == "12% 80%"
    assert row0.data(EXTRA_ROLE) == [[10.0, 55.0, 91.0], [5.0, 27.5, 45.5]]  # one history per GPU
    assert "GPU 1: 80% busy" in row0.data(Qt.ItemDataRole.ToolTipRole)
    plain = fleet.model.index(fleet.model.find(agent(1)["id"]), gpu_col)
    assert plain.data(EXTRA_ROLE) is None and plain.data() == "-"
    info = fleet.model.index(0, fleet.column["Info"])
    assert info.data() == "v0.9.12 · mdns" and "found by mdns" in info.data(Qt.ItemDataRole.ToolTipRole)
    assert fleet.model.index(fleet.model.find(unpaired["id"]), fleet.column["Info"]).data() == "UNPAIRED · mdns"
    window.grab()  # the delegates paint without error


def test_disk_is_a_bar_where_the_total_is_known_and_plain_free_space_otherwise(qtbot: Any, window: MainWindow) -> None:
    fleet = window.fleet
    with_total = agent(0)
    with_total["disk_total_bytes"] = 500 * GiB  # not in today's telemetry; the bar is ready for it
    fleet.set_agents([with_total, agent(1)])
    disk_col = fleet.column["Disk"]
    cell = fleet.model.index(fleet.model.find(with_total["id"]), disk_col)
    assert cell.data() == "123.0 GiB free"
    assert cell.data(EXTRA_ROLE) == pytest.approx(1 - 123 / 500)
    assert fleet.model.index(fleet.model.find(agent(1)["id"]), disk_col).data(EXTRA_ROLE) is None  # nothing made up

    fleet.table.selectRow(fleet.proxy.mapFromSource(fleet.model.index(fleet.model.find(with_total["id"]), 0)).row())
    assert fleet.disk.bar.isVisibleTo(fleet) and fleet.disk.bar.value() == round((1 - 123 / 500) * 1000)
    assert "123.0 GiB free of 500.0 GiB" in fleet.disk.label.text()
    assert "disk" not in fleet.plots  # no auto-zoomed axis of free GiB
    fleet.table.selectRow(fleet.proxy.mapFromSource(fleet.model.index(fleet.model.find(agent(1)["id"]), 0)).row())
    assert not fleet.disk.bar.isVisibleTo(fleet) and fleet.disk.label.text().startswith("123.0 GiB free")
    assert fleet.plots["cpu"].plotItem.vb.viewRange()[1] == pytest.approx([-2, 102], abs=1)  # a 0-100 % axis

    # the bar itself: half full paints a fill on the left half, the empty trough on the right
    image = QImage(200, 24, QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    option = QStyleOptionViewItem()
    option.rect = QRect(0, 0, 200, 24)
    option.palette = QApplication.palette()
    at = fleet.model.find(with_total["id"])
    fleet.model.rows[at]["disk_total_bytes"] = 246 * GiB  # 50 % used
    BarDelegate().paint(painter, option, fleet.model.index(at, disk_col))
    painter.end()
    filled, empty = image.pixelColor(QPoint(60, 6)), image.pixelColor(QPoint(170, 6))
    assert filled.green() > filled.red() + 40  # the green fill of a disk with room
    assert abs(empty.green() - empty.red()) < 20  # the grey trough


def test_settings_theme_choice_is_saved_and_applied_at_once(
    qtbot: Any, window: MainWindow, light_afterwards: None
) -> None:
    combo = window.settings.theme
    combo.setCurrentIndex(combo.findData("dark"))
    assert app_settings().value("theme") == "dark"
    QApplication.processEvents()
    assert lightness(Role.Window) < 80 and window.fleet.table.palette().color(Role.Base).lightness() < 60
    combo.setCurrentIndex(combo.findData("light"))
    assert app_settings().value("theme") == "light" and lightness(Role.Window) > 200


def test_agent_rows_offer_pair_drain_remove_and_copy_address(qtbot: Any, window: MainWindow) -> None:
    fleet = window.fleet
    row = agent(0)
    actions = fleet._row_actions([row])
    assert [a.text() if a else None for a in actions] == ["Pair…", "Drain", "Remove…", None, "Copy address"]
    actions[-1].trigger()  # type: ignore[union-attr]
    assert QGuiApplication.clipboard().text() == row["address"]
    lost = dict(row, state="LOST")
    assert not fleet._row_actions([lost])[1].isEnabled()  # type: ignore[union-attr]


def dialog_for(qtbot: Any) -> SubmitDialog:
    workloads = [w.to_dict() for w in all_workloads()]  # what ListWorkloads sends
    dialog = SubmitDialog(workloads, [], ["gui-agent-0"], run_blocking=lambda *_a: None)
    qtbot.addWidget(dialog)
    return dialog


def listed(dialog: SubmitDialog) -> list[str]:
    return [dialog.workload.itemData(i) for i in range(dialog.workload.count())]


def test_diagnostic_workloads_hide_behind_a_saved_toggle(qtbot: Any, prefs: None) -> None:
    dialog = dialog_for(qtbot)
    diagnostic = {"noop", "sleep", "emit", "fail"}
    assert listed(dialog) and not diagnostic & set(listed(dialog))
    assert dialog.current_workload()["category"] == "sklearn"
    dialog.show_diagnostic.click()
    assert diagnostic <= set(listed(dialog))
    assert app_settings().value(SHOW_DIAGNOSTIC, False, type=bool) is True
    dialog.select_workload("emit")
    assert dialog.current_workload()["name"] == "emit" and "points" in dialog.params

    again = dialog_for(qtbot)  # the choice is remembered
    assert again.show_diagnostic.isChecked() and diagnostic <= set(listed(again))
    again.select_workload("sleep")
    again.show_diagnostic.click()  # hiding them moves off the diagnostic choice
    assert not diagnostic & set(listed(again)) and again.current_workload()["category"] != "diagnostic"
    assert app_settings().value(SHOW_DIAGNOSTIC, True, type=bool) is False

    third = dialog_for(qtbot)
    third.select_workload("noop")  # a caller asking for one by name gets it, without saving anything
    assert third.current_workload()["name"] == "noop"
    assert app_settings().value(SHOW_DIAGNOSTIC, True, type=bool) is False


def wheel(widget: QWidget, notches: int = 1) -> None:
    center = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(
        center,
        QPointF(widget.mapToGlobal(center)),
        QPoint(0, 0),
        QPoint(0, 120 * notches),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(widget, event)


def test_the_wheel_changes_a_spin_box_only_once_it_has_focus(qtbot: Any, prefs: None) -> None:
    dialog = dialog_for(qtbot)
    dialog.resize(620, 300)  # short: the form scrolls
    dialog.show()
    qtbot.waitExposed(dialog)
    scroll = dialog.tabs.widget(0)
    assert isinstance(scroll, QScrollArea)
    bar = scroll.verticalScrollBar()
    assert bar.maximum() > 0
    bar.setValue(bar.maximum() // 2)
    dialog.workload.setFocus()
    before = bar.value()
    wheel(dialog.retries, -1)  # over an unfocused spin box: the form scrolls instead
    assert dialog.retries.value() == 2
    assert bar.value() > before
    assert dialog.retries.focusPolicy() == Qt.FocusPolicy.StrongFocus  # a wheel turn does not focus it either
    dialog.retries.setFocus()
    qtbot.waitUntil(dialog.retries.hasFocus, timeout=2000)
    wheel(dialog.retries, 1)
    assert dialog.retries.value() == 3


def test_the_app_wide_wheel_guard_covers_every_spin_box(qtbot: Any, qapp: QApplication) -> None:
    box = QSpinBox()
    box.setRange(0, 100)
    box.setValue(5)
    qtbot.addWidget(box)
    install_wheel_guard(qapp)
    try:
        box.show()
        qtbot.waitExposed(box)
        assert box.focusPolicy() == Qt.FocusPolicy.StrongFocus  # set when the box was polished
        wheel(box, 1)
        assert box.value() == 5
        box.activateWindow()
        box.setFocus()
        qtbot.waitUntil(box.hasFocus, timeout=2000)
        wheel(box, 1)
        assert box.value() == 6
    finally:
        qapp.removeEventFilter(wheel_guard())
