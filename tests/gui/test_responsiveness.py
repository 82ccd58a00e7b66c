"""The job detail never freezes (a history held back and plotted in one append per curve, every point once), its
header is live, every job end is told, and closing the window leaves no asyncio task pending (issue 22 items 4,
5, 6, 11).

Against the shared loopback cluster (`gui_cluster`), offscreen. What is checked is behaviour (how many appends,
which points, what the header says), not timings: benchmarks/gui_bench.py measures those.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from PySide6.QtCore import Qt

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from tensorfleet_desktop.client import Client
from tensorfleet_desktop.ui.app import build_window, create_application
from tensorfleet_desktop.ui.job_history import JobBatch, SeriesChunk
from tensorfleet_desktop.ui.main_window import MainWindow
from tensorfleet_desktop.ui.sweep_panel import top_trials

pytestmark = pytest.mark.slow
WAIT_MS = 60_000
Cluster = tuple[ControllerProcess, list[AgentProcess]]


def open_window(address: str, data_dir: Path) -> MainWindow:
    create_application()
    win = build_window(address, data_dir=data_dir, autostart=False)
    win.show()
    win.bridge.start()
    return win


@pytest.fixture(scope="module")
def window(gui_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainWindow]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
        win = open_window(gui_cluster[0].address, tmp_path_factory.mktemp("gui-data"))
        yield win
        win.close()


class Batches:
    """Every job_batch the bridge emits for one job, and the steps of one metric they carried, in order."""

    def __init__(self, win: MainWindow, job_id: str, metric: str) -> None:
        self.job_id, self.metric = job_id, metric
        self.count = 0
        self.steps: list[np.ndarray] = []
        win.bridge.job_batch.connect(self.on_batch)

    def on_batch(self, job_id: str, batch: JobBatch) -> None:
        if job_id == self.job_id:
            self.count += 1
            self.steps.extend(c.step for c in batch.chunks if c.metric == self.metric)

    def all_steps(self) -> list[int]:
        return [int(s) for s in np.concatenate(self.steps)] if self.steps else []


def emit_job(client: Client, name: str, points: int, rate: float = 0.0) -> dict[str, Any]:
    spec = {"algorithm": "emit", "name": name, "hyperparameters": {"points": points, "rate": rate, "name": "loss"}}
    return client.submit(spec)


def test_a_long_history_reaches_the_plot_in_one_append_each_point_once_and_reopening_adds_none(
    qtbot: Any, window: MainWindow, gui_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    qtbot.waitUntil(lambda: window.bridge.online, timeout=WAIT_MS)
    n = 20_000
    with Client(gui_cluster[0].address) as client:
        job = emit_job(client, "gui-history", n)
        client.wait(job["id"], timeout=60)
        messages = sum(1 for _ in client.watch(job["id"]))  # what a bridge emitting per message would send
    assert messages >= 20
    seen = Batches(window, job["id"], "loss")
    detail = window.detail
    adds: list[int] = []  # the points of each add_chunks that carried loss
    add_chunks = detail.curves.add_chunks

    def counting(chunks: list[SeriesChunk]) -> None:
        adds.extend(len(c) for c in chunks if c.metric == "loss")
        add_chunks(chunks)

    monkeypatch.setattr(detail.curves, "add_chunks", counting)
    window.show_job(job["id"])
    qtbot.waitUntil(lambda: detail.metric_points == n, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: detail.job is not None and detail.job["state"] == "SUCCEEDED", timeout=WAIT_MS)
    # however many batches the history came in, it was held back and reached the plot in one append
    assert adds == [n], f"{len(adds)} appends of loss ({seen.count} batches for {messages} messages)"
    assert seen.all_steps() == list(range(n))  # every point once, in order
    assert detail.curves.points == n
    # the same job again: its curves start over, nothing doubles
    window.show_job(job["id"])
    qtbot.waitUntil(lambda: detail.metric_points == n, timeout=WAIT_MS)
    qtbot.wait(300)
    assert detail.metric_points == n and detail.curves.points == n
    # closing it lets go of the points
    detail.close_job()
    assert detail.curves.points == 0 and detail.log_lines == [] and not detail.job_id


def test_replay_then_live_hands_over_without_a_gap_or_a_repeat(
    qtbot: Any, window: MainWindow, gui_cluster: Cluster
) -> None:
    qtbot.waitUntil(lambda: window.bridge.online, timeout=WAIT_MS)
    n = 2400
    with Client(gui_cluster[0].address) as client:
        job = emit_job(client, "gui-handover", n, rate=1200)  # about 2 s of points
        qtbot.waitUntil(lambda: bool(client.metrics(job["id"])), timeout=WAIT_MS)  # some history first
    seen = Batches(window, job["id"], "loss")
    window.show_job(job["id"])
    detail = window.detail
    qtbot.waitUntil(lambda: detail.metric_points == n, timeout=WAIT_MS)
    qtbot.wait(300)
    assert seen.all_steps() == list(range(n))
    assert seen.count >= 2  # the history, then live batches
    assert detail.curves.points == n


def test_a_sweeps_curves_show_its_top_trials_or_one_trial_with_a_way_back(
    qtbot: Any, window: MainWindow, gui_cluster: Cluster
) -> None:
    qtbot.waitUntil(lambda: window.bridge.online, timeout=WAIT_MS)
    sweep = {"params": {"C": "float:0.01:10:log"}, "trials": 2, "search": "random", "metric": "test_accuracy"}
    with Client(gui_cluster[0].address) as client:
        job = client.submit({"algorithm": "logistic_regression", "dataset": "iris", "name": "gui-top", "sweep": sweep})
        client.wait(job["id"], timeout=60)
    window.show_job(job["id"])
    detail = window.detail
    qtbot.waitUntil(lambda: detail.job is not None and detail.job["state"] == "SUCCEEDED", timeout=WAIT_MS)
    assert detail.job is not None
    top = top_trials(detail.job, detail.sweep.top_k)
    assert len(top) == 2 and detail.curves.selection == top
    trial = list(top)[-1]
    detail.tabs.setCurrentWidget(detail.sweep)
    detail.sweep.show_trial.emit(trial)  # "show this trial's curves" in the Sweep tab
    assert detail.tabs.currentWidget() is detail.curves_tab
    assert detail.curves.selection == {trial: f"trial {trial}"} and detail.trial_bar.isVisibleTo(detail)
    qtbot.mouseClick(detail.trial_back, Qt.MouseButton.LeftButton)
    assert detail.curves.selection == top and not detail.trial_bar.isVisibleTo(detail)
    detail.sweep.top_k_spin.setValue(1)  # fewer trials overlaid
    assert detail.curves.selection == top_trials(detail.job, 1) and len(detail.curves.selection) == 1


def elapsed_seconds(text: str) -> int:
    found = re.search(r"elapsed (?:(\d+)m )?(\d+)s", text)
    assert found, text
    return int(found.group(1) or 0) * 60 + int(found.group(2))


def test_the_header_ticks_while_the_job_runs_and_stops_when_it_ends(
    qtbot: Any, window: MainWindow, gui_cluster: Cluster
) -> None:
    qtbot.waitUntil(lambda: window.bridge.online, timeout=WAIT_MS)
    with Client(gui_cluster[0].address) as client:
        job = client.submit({"algorithm": "sleep", "name": "gui-ticking", "hyperparameters": {"seconds": 3}})
    window.show_job(job["id"])
    detail = window.detail
    header = detail.header
    qtbot.waitUntil(lambda: "elapsed" in header.text(), timeout=WAIT_MS)
    assert "ETA" in header.text() and detail._tick.isActive()
    first = elapsed_seconds(header.text())
    qtbot.wait(1200)  # no event from the controller needed: the header's own clock moves on
    assert elapsed_seconds(header.text()) > first
    qtbot.waitUntil(lambda: "took" in header.text(), timeout=WAIT_MS)
    assert "ETA" not in header.text() and "SUCCEEDED" in header.text().upper()
    assert not detail._tick.isActive()  # the clock stopped with the job


def test_a_job_that_runs_in_a_blink_is_still_notified(qtbot: Any, window: MainWindow, gui_cluster: Cluster) -> None:
    qtbot.waitUntil(lambda: window.bridge.online, timeout=WAIT_MS)
    with Client(gui_cluster[0].address) as client:
        job = client.submit({"algorithm": "noop", "name": "gui-blink"})
        client.wait(job["id"], timeout=60)
    qtbot.waitUntil(lambda: any(n.startswith("gui-blink succeeded") for n in window.notifications), timeout=10_000)


def test_closing_the_window_leaves_no_task_pending(
    qtbot: Any,
    gui_cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    caplog.set_level(logging.ERROR, logger="asyncio")
    with Client(gui_cluster[0].address) as client:
        job = emit_job(client, "gui-closing", 200_000, rate=5000)  # still streaming when the window closes
    win = open_window(gui_cluster[0].address, tmp_path / "data")
    try:
        qtbot.waitUntil(lambda: win.bridge.online, timeout=WAIT_MS)
        win.show_job(job["id"])
        qtbot.waitUntil(lambda: win.detail.metric_points > 0, timeout=WAIT_MS)
        win.bridge.run_blocking(lambda: time.sleep(0.6))  # a call still in flight at the close
    finally:
        win.close()
        with Client(gui_cluster[0].address) as client:
            client.cancel(job["id"])
    assert not win.bridge._thread.is_alive()
    left = asyncio.all_tasks(win.bridge._loop)  # a task pending on the stopped loop is destroyed pending later
    assert not left, left
    time.sleep(0.8)  # the blocking call's thread lets go of its task: a task left pending would be collected now
    gc.collect()
    out, err = capfd.readouterr()
    said = out + err + caplog.text
    assert "Task was destroyed but it is pending" not in said
    assert "was never awaited" not in said
