"""Review fixes of the job detail (issue 22): no leaked watch stream, replay end without clocks, exports that say
when they fail, scalar metrics with retried reports, the Tasks/Artifacts row menus, an escaped header.

Widget- and bridge-level, with fake clients and hand-made job dicts: no cluster needed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from PySide6.QtGui import QGuiApplication, QTextDocumentFragment
from PySide6.QtWidgets import QFileDialog

from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_desktop import wire
from tensorfleet_desktop.ui import job_detail
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.job_detail import LOADING_CAP_MS, JobDetailView
from tensorfleet_desktop.ui.job_history import JobBatch, SeriesChunk
from tensorfleet_desktop.ui.table_model import ROW_ROLE
from tensorfleet_desktop.ui.theme import error_color


class SlowClosingClient:
    """A client whose event streams never end by themselves and take a moment to close when cancelled, like a
    gRPC stream: the window in which a second watch_job used to slip past the first."""

    def __init__(self) -> None:
        self.open_streams: set[str] = set()
        self.full_job = make_job("RUNNING")  # what GetJob answers

    async def watch_messages(self, job_id: str, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        self.open_streams.add(job_id)
        try:
            await asyncio.Event().wait()
            yield {}  # never reached
        finally:
            await asyncio.sleep(0.05)
            self.open_streams.discard(job_id)

    async def metrics(self, job_id: str, names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        return [
            {"task_index": 0, "name": "loss", "step": s, "value": 1.0 / (s + 1), "wall_time": 1000.0} for s in range(3)
        ]

    async def job(self, job_id: str) -> dict[str, Any]:
        return self.full_job

    async def close(self) -> None:
        return None


class EndingClient(SlowClosingClient):
    """A controller whose WatchJob stream of a running job ends at once, every time."""

    def __init__(self) -> None:
        super().__init__()
        self.subscriptions = 0

    async def watch_messages(self, job_id: str, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        self.subscriptions += 1
        return
        yield {}


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    b = Bridge("127.0.0.1:1", autostart=False)
    fake = SlowClosingClient()
    b._client = fake  # type: ignore[assignment]
    b._thread.start()  # the asyncio thread only: no supervision, so the fake client stays
    yield b
    b.stop()


def make_job(state: str = "RUNNING", **fields: Any) -> dict[str, Any]:
    """A job dict as the client gives it (every key), from the protobuf the controller sends."""
    job = wire.job_from_pb(
        cpb.Job(
            id="job-1",
            name=fields.pop("name", "detail-job"),
            state=cpb.JobState.Value(f"JOB_STATE_{state}"),
            created_at=1000.0,
            started_at=1000.0,
            algorithm="emit",
            **fields,
        )
    )
    return job


@pytest.fixture
def detail(qtbot: Any, bridge: Bridge) -> JobDetailView:
    notes: list[tuple[str, bool]] = []
    view = JobDetailView(bridge, lambda message, is_error: notes.append((message, is_error)))
    view.notes = notes  # type: ignore[attr-defined]
    qtbot.addWidget(view)
    return view


def loss_batch(seq: int, steps: range, when: float) -> JobBatch:
    """Points of `loss` as the bridge batches them; `when` is the controller's time of its events."""
    step = np.asarray(steps, dtype=float)
    chunk = SeriesChunk("loss", 0, step, step * 0.5, np.full(len(step), when))
    return JobBatch("job-1", chunks=[chunk], last_seq=seq)


def watch_tasks(b: Bridge) -> list[asyncio.Task[Any]]:
    async def probe() -> list[asyncio.Task[Any]]:
        await asyncio.sleep(0.3)  # every follow submitted before has run and the streams it cancelled closed
        return [t for t in asyncio.all_tasks() if "_watch_events" in repr(t.get_coro()) and not t.done()]

    return asyncio.run_coroutine_threadsafe(probe(), b._loop).result(5)


def test_opening_jobs_in_quick_succession_leaves_no_watch_running(bridge: Bridge) -> None:
    for job_id in ("A", "B", "C"):
        bridge.watch_job(job_id)
    assert len(watch_tasks(bridge)) == 1  # only the last job opened is followed
    assert bridge._client.open_streams == {"C"}  # type: ignore[union-attr]
    for job_id in ("A", "B", "C", None):
        bridge.watch_job(job_id)
    assert watch_tasks(bridge) == []
    assert bridge._client.open_streams == set()  # type: ignore[union-attr]


def test_a_running_jobs_replay_ends_even_with_the_controllers_clock_hours_behind(
    qtbot: Any, detail: JobDetailView
) -> None:
    detail._jobs_changed([make_job("RUNNING")])
    detail.open_job("job-1")
    assert detail.loading
    behind = 1000.0  # event times from a controller whose clock is far behind this machine's
    seq = 0
    for i in range(12):  # a batch every 250 ms: the quiet timer alone never fires
        seq += 1
        detail.on_batch("job-1", loss_batch(seq, range(i * 10, i * 10 + 10), behind))
        qtbot.wait(250)
        if not detail.loading:
            break
    assert not detail.loading, "still holding the curves back"
    assert seq * 250 <= LOADING_CAP_MS + 750
    qtbot.waitUntil(lambda: detail.curves.points == seq * 10, timeout=2000)


def test_an_ended_jobs_replay_is_held_back_until_its_end_event(qtbot: Any, detail: JobDetailView) -> None:
    detail._jobs_changed([make_job("SUCCEEDED")])
    detail.open_job("job-1")
    for i in range(12):
        detail.on_batch("job-1", loss_batch(i + 1, range(i * 10, i * 10 + 10), 1000.0))
    detail._quiet.stop()  # (a replay slower than the quiet spell: as if batches kept coming)
    qtbot.wait(LOADING_CAP_MS + 200)  # past the cap: an ended job's history has an end to wait for
    assert detail.loading and detail.curves.points == 0
    end = JobBatch("job-1", events=[{"kind": "job_state", "state": "SUCCEEDED"}], last_seq=13)
    detail.on_batch("job-1", end)
    assert not detail.loading
    qtbot.waitUntil(lambda: detail.curves.points == 120, timeout=2000)


def test_an_ended_historys_plots_are_all_in_the_grid_before_any_gets_its_curves(
    qtbot: Any, detail: JobDetailView
) -> None:
    """A pane placed beside plots already drawn resizes them, and each resize repaints their curves."""
    detail._jobs_changed([make_job("SUCCEEDED")])
    detail.show()
    detail.open_job("job-1")
    step = np.arange(50, dtype=float)
    chunks = [SeriesChunk(m, 0, step, step * k, np.full(50, 1000.0)) for k, m in enumerate(("a", "b", "c"), 1)]
    placed: list[list[str]] = []
    add = detail.curves.add_chunks

    def spy(batch: list[SeriesChunk]) -> None:
        placed.append(sorted(detail.curves.plot.plots))
        add(batch)

    detail.curves.add_chunks = spy  # type: ignore[method-assign]
    grid = detail.curves.plot
    holding: list[bool] = []  # whether the grid held its repaint as each pane went in
    plot_for = grid.plot_for

    def place(metric: str) -> Any:
        holding.append(not grid.updatesEnabled())
        return plot_for(metric)

    grid.plot_for = place  # type: ignore[method-assign]
    end = [{"kind": "job_state", "state": "SUCCEEDED"}]
    detail.on_batch("job-1", JobBatch("job-1", chunks=chunks, events=end, last_seq=2))
    qtbot.waitUntil(lambda: detail.metric_points == 150, timeout=5000)
    assert placed == [["a", "b", "c"]] * 3
    assert holding[:3] == [False, True, True]  # beside the first pane: one repaint once all three are in
    assert grid.updatesEnabled()


def tasks_and_artifacts() -> dict[str, Any]:
    tasks = [
        cpb.TaskInfo(index=0, state=cpb.JobTaskState.Value("JOB_TASK_STATE_SUCCEEDED"), params_json="{}"),
        cpb.TaskInfo(
            index=1, state=cpb.JobTaskState.Value("JOB_TASK_STATE_FAILED"), error="ValueError: bad C", params_json="{}"
        ),
    ]
    artifacts = [cpb.Artifact(sha256="ab" * 32, size=10, kind="model", name="model.pkl", task_index=1, attempt=1)]
    return {"task_list": tasks, "artifacts": artifacts, "tasks": cpb.TaskCounts(total=2, completed=1, failed=1)}


def test_task_rows_offer_their_logs_and_error(qtbot: Any, detail: JobDetailView) -> None:
    detail._show_job(make_job("FAILED", **tasks_and_artifacts()))
    detail._add_logs([(0, "stdout", "zero says hi"), (1, "stderr", "one failed here")])
    detail.tasks_table.selectRow(1)
    rows = [i.data(ROW_ROLE) for i in detail.tasks_table.selectionModel().selectedRows()]
    assert [t["index"] for t in rows] == [1]
    show_logs, copy_error = detail.task_actions(rows)
    assert show_logs.text() == "Show logs of this task" and copy_error.isEnabled()
    show_logs.trigger()
    assert detail.tabs.currentWidget() is detail.logs_tab and detail.log_task.currentData() == 1
    assert detail.logs.toPlainText() == "[1] ! one failed here"
    copy_error.trigger()
    assert QGuiApplication.clipboard().text() == "ValueError: bad C"
    ok = [t for t in detail.job["task_list"] if t["index"] == 0] if detail.job else []
    assert not detail.task_actions(ok)[1].isEnabled()  # no error to copy


def test_the_tasks_table_and_log_filter_fill_when_their_tab_is_shown(qtbot: Any, detail: JobDetailView) -> None:
    detail._show_job(make_job("FAILED", **tasks_and_artifacts()))
    assert detail._tasks_model.rowCount() == 0 and detail.log_task.count() == 1  # not yet: the Curves tab shows
    detail.tabs.setCurrentWidget(detail.logs_tab)
    assert [detail.log_task.itemData(i) for i in range(detail.log_task.count())] == [-1, 0, 1]
    detail.tabs.setCurrentIndex(detail.tabs.indexOf(detail._tasks_table))
    assert detail._tasks_model.rowCount() == 2
    detail._show_job(make_job("FAILED", **tasks_and_artifacts()))  # a refresh while the tab shows: at once
    assert detail._tasks_model.rowCount() == 2 and detail._tasks_rows is None


def test_artifact_rows_offer_download_and_sha256(
    qtbot: Any, detail: JobDetailView, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    detail.job_id = "job-1"
    detail._show_job(make_job("SUCCEEDED", **tasks_and_artifacts()))
    detail.artifacts_table.selectRow(0)
    artifact = detail.selected_artifact()
    assert artifact is not None
    download, copy_sha = detail.artifact_actions([artifact])
    copy_sha.trigger()
    assert QGuiApplication.clipboard().text() == "ab" * 32
    asked: list[tuple[dict[str, Any], Any]] = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "m.pkl"), ""))
    monkeypatch.setattr(detail, "download_artifact", lambda a, path: asked.append((a, path)))
    assert download.text() == "Download…"
    download.trigger()
    assert asked == [(artifact, tmp_path / "m.pkl")]


def test_the_header_shows_the_users_text_as_text_in_the_themes_colours(qtbot: Any, detail: JobDetailView) -> None:
    job = make_job("FAILED", name="<b>big</b> & bold", error="expected <int>", submitter="<i>me</i>", dataset="a<b")
    detail._show_job(job)
    shown = QTextDocumentFragment.fromHtml(detail.header.text()).toPlainText()
    for text in ("<b>big</b> & bold", "expected <int>", "<i>me</i>", "dataset a<b"):
        assert text in shown, shown
    assert f"color:{error_color()}'>expected &lt;int&gt;" in detail.header.text()  # the theme's red
    assert "gray" not in detail.header.text()  # the palette's muted text colour, not a fixed one


def test_csv_export_writes_in_a_worker_thread_and_says_where_or_why_not(
    qtbot: Any, detail: JobDetailView, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    threads: list[bool] = []
    write = job_detail._write_csv

    def spy(*args: Any) -> int:
        threads.append(threading.current_thread() is threading.main_thread())
        return write(*args)

    monkeypatch.setattr(job_detail, "_write_csv", spy)
    notes: list[tuple[str, bool]] = detail.notes  # type: ignore[attr-defined]
    detail.job_id = "job-1"
    out = tmp_path / "m.csv"
    detail.export_csv(out)
    qtbot.waitUntil(lambda: bool(notes), timeout=5000)
    assert notes[-1] == (f"wrote 3 metric points to {out}", False) and threads == [False]
    assert out.read_text().splitlines()[1] == "job-1,0,loss,0,1.0,1000.0"
    missing = tmp_path / "gone" / "m.csv"
    detail.export_csv(missing)
    qtbot.waitUntil(lambda: len(notes) == 2, timeout=5000)
    assert notes[-1][1] and notes[-1][0].startswith(f"cannot write {missing}: ")


def test_the_log_search_runs_once_the_typing_pauses(qtbot: Any, detail: JobDetailView) -> None:
    detail._add_logs([(0, "stdout", f"line {i}") for i in range(30)])
    for text in ("l", "li", "line 2"):  # keystrokes: none re-scans the lines
        detail.log_search.setText(text)
        assert detail.logs.blockCount() == 30
    qtbot.waitUntil(
        lambda: (
            detail.logs.toPlainText() == "line 2\nline 20\nline 21\nline 22\nline 23\nline 24\n"
            "line 25\nline 26\nline 27\nline 28\nline 29"
        ),
        timeout=1000,
    )


def test_a_stream_that_keeps_ending_is_not_resubscribed_in_a_tight_loop(qtbot: Any) -> None:
    b = Bridge("127.0.0.1:1", autostart=False)
    fake = EndingClient()
    b._client = fake  # type: ignore[assignment]
    b._thread.start()
    try:
        b.watch_job("job-1")
        qtbot.wait(1200)
        assert 1 <= fake.subscriptions <= 4, fake.subscriptions
    finally:
        b.watch_job(None)
        b.stop()


def test_a_new_state_shows_together_with_the_tasks_of_that_moment(
    qtbot: Any, bridge: Bridge, detail: JobDetailView
) -> None:
    detail.job_id = "job-1"
    detail._show_job(make_job("RUNNING", **tasks_and_artifacts()))
    ended = make_job("FAILED", **tasks_and_artifacts())
    ended["task_list"][1]["error"] = "the final error"
    bridge._client.full_job = ended  # type: ignore[union-attr]
    detail._jobs_changed([make_job("FAILED")])  # the list's copy: no tasks
    assert detail.job is not None and detail.job["state"] == "RUNNING"  # not until the full job is in
    qtbot.waitUntil(lambda: detail.job is not None and detail.job["state"] == "FAILED", timeout=3000)
    assert [t["error"] for t in detail.tasks_model.rows] == ["", "the final error"]


def test_a_queued_job_says_in_the_header_why_it_waits(qtbot: Any, detail: JobDetailView) -> None:
    detail._show_job(make_job("QUEUED", waiting="waiting for Slurm allocation 1234 (Resources)"))
    shown = QTextDocumentFragment.fromHtml(detail.header.text()).toPlainText()
    assert "waiting: waiting for Slurm allocation 1234 (Resources)" in shown, shown
    detail._show_job(make_job("SUCCEEDED", waiting=""))
    assert "waiting:" not in QTextDocumentFragment.fromHtml(detail.header.text()).toPlainText()
    from tensorfleet_desktop.ui.experiments import base_columns

    state = next(column for column, _ in base_columns() if column.key == "state")
    assert state.tooltip is not None
    assert state.tooltip(make_job("QUEUED", waiting="waking agent desk-7")) == "waiting: waking agent desk-7"
    assert state.tooltip(make_job("FAILED", error="rank 0 failed")) == "rank 0 failed"
