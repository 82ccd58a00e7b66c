"""The desktop app against a real controller and agents on loopback (pytest-qt, offscreen).

One cluster serves the whole module; the test that kills an agent runs last and uses its own agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QFileDialog, QInputDialog, QMessageBox

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from helpers.servers import S3_KEY, S3_SECRET, free_port, start_nanio, start_secantus
from helpers.waiting import wait_until
from tensorfleet_desktop.client import AsyncClient, Client, NotFound
from tensorfleet_desktop.controller.settings import load_settings
from tensorfleet_desktop.ui.app import build_window, create_application
from tensorfleet_desktop.ui.fleet_view import PairDialog
from tensorfleet_desktop.ui.main_window import MainWindow
from tensorfleet_desktop.ui.submit_dialog import INVALID_STYLE, SubmitDialog
from tensorfleet_desktop.ui.widgets import Toast

pytestmark = pytest.mark.slow
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def window(
    gui_cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MainWindow]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))  # QSettings of this module only
        create_application()
        controller, _ = gui_cluster
        win = build_window(controller.address, data_dir=tmp_path_factory.mktemp("gui-data"), autostart=False)
        win.show()
        win.bridge.start()
        yield win
        win.close()


def job_row(win: MainWindow, job_id: str) -> dict[str, Any] | None:
    return win.jobs.job(job_id)


def wait_state(qtbot: Any, win: MainWindow, job_id: str, state: str, timeout: int = WAIT_MS) -> dict[str, Any]:
    qtbot.waitUntil(lambda: (job_row(win, job_id) or {}).get("state") == state, timeout=timeout)
    row = job_row(win, job_id)
    assert row is not None
    return row


def open_dialog(qtbot: Any, win: MainWindow) -> SubmitDialog:
    win.jobs.dialog = None
    win.show_view(win.jobs)
    qtbot.mouseClick(win.jobs.submit_button, qtbot_button())
    qtbot.waitUntil(lambda: win.jobs.dialog is not None and win.jobs.dialog.isVisible(), timeout=10_000)
    assert win.jobs.dialog is not None
    return win.jobs.dialog


def qtbot_button() -> Any:
    from PySide6.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_submit_from_the_dialog_plots_every_point_and_tells_when_it_ends(
    qtbot: Any, window: MainWindow, tmp_path: Path
) -> None:
    # agents of other clusters on loopback mDNS (tests running beside these) show as REFUSED rows
    qtbot.waitUntil(
        lambda: window.bridge.online and sum(r["state"] != "REFUSED" for r in window.fleet.model.rows) == 2,
        timeout=WAIT_MS,
    )
    seen_states: list[str] = []
    dialog = open_dialog(qtbot, window)
    dialog.select_workload("emit")
    dialog.params["points"].widget.setText("400")  # type: ignore[attr-defined]
    dialog.params["rate"].widget.setText("200")  # type: ignore[attr-defined]
    dialog.params["name"].widget.setText("loss")  # type: ignore[attr-defined]
    dialog.name.setText("gui-emit")
    assert dialog.ok_button.isEnabled(), dialog.error_label.text()
    with qtbot.waitSignal(dialog.submitted, timeout=WAIT_MS) as submitted:
        qtbot.mouseClick(dialog.ok_button, qtbot_button())
    job_id = submitted.args[0]["id"]
    assert not dialog.isVisible()

    def record(jobs: list[dict[str, Any]]) -> None:
        for job in jobs:
            if job["id"] == job_id and (not seen_states or seen_states[-1] != job["state"]):
                seen_states.append(job["state"])

    window.bridge.jobs_changed.connect(record)
    qtbot.waitUntil(lambda: job_row(window, job_id) is not None, timeout=10_000)  # it appears in the table
    window.jobs.select(job_id)
    qtbot.mouseClick(window.jobs.open_button, qtbot_button())
    assert window.stack.currentWidget() is window.detail and window.detail.job_id == job_id
    final = wait_state(qtbot, window, job_id, "SUCCEEDED")
    assert final["progress"] == pytest.approx(1.0)
    assert "RUNNING" in seen_states or "QUEUED" in seen_states
    # every reported point reaches the live plot, exactly once
    qtbot.waitUntil(lambda: window.detail.metric_points == 400, timeout=10_000)
    qtbot.wait(500)
    assert window.detail.curves.plot.points == 400
    series = window.detail.curves.plot.plots["loss"].series["loss"]
    assert sorted(series.x) == sorted(set(series.x)) and len(series.x) == 400
    # and a toast (offscreen has no system tray) says it ended
    qtbot.waitUntil(lambda: any("gui-emit succeeded" in n for n in window.notifications), timeout=10_000)
    assert any("gui-emit succeeded" in t.text() for t in window.findChildren(Toast))
    # the same points go to a CSV file
    out = tmp_path / "metrics.csv"
    window.detail.export_csv(out)
    qtbot.waitUntil(out.exists, timeout=10_000)
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 400 and {r["name"] for r in rows} == {"loss"} and rows[0]["job_id"] == job_id


def test_a_job_that_ends_between_two_updates_is_still_told(qtbot: Any, window: MainWindow, gui_cluster: Any) -> None:
    """The job list follows WatchJobs: a job's final state always arrives, however fast it ran."""
    controller, _ = gui_cluster
    qtbot.waitUntil(lambda: window.bridge.online, timeout=WAIT_MS)
    finished: list[str] = []
    window.bridge.job_finished.connect(lambda job: finished.append(job["id"]))
    with Client(controller.address) as client:
        jobs = [client.submit({"algorithm": "noop", "name": f"gui-fast-{i}"}) for i in range(3)]
        for job in jobs:
            client.wait(job["id"], timeout=60)
    qtbot.waitUntil(lambda: all(j["id"] in finished for j in jobs), timeout=10_000)
    assert all(job_row(window, j["id"])["state"] == "SUCCEEDED" for j in jobs)  # type: ignore[index]
    assert sorted(finished).count(jobs[0]["id"]) == 1  # told once


def test_cancel_from_the_jobs_view(
    qtbot: Any, window: MainWindow, gui_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, _ = gui_cluster
    asked: list[str] = []  # Cancel asks first (a modal question would block the test): the user says Yes
    monkeypatch.setattr(
        QMessageBox, "question", lambda _p, _t, text, *_a, **_k: asked.append(text) or QMessageBox.StandardButton.Yes
    )
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "sleep", "name": "gui-sleeper", "hyperparameters": {"seconds": 120}})
    wait_state(qtbot, window, job["id"], "RUNNING")
    window.show_view(window.jobs)
    window.jobs.select(job["id"])
    assert window.jobs.cancel_button.isEnabled()
    clicked = time.time()
    qtbot.mouseClick(window.jobs.cancel_button, qtbot_button())
    assert len(asked) == 1 and "gui-sleeper" in asked[0]
    final = wait_state(qtbot, window, job["id"], "CANCELLED", timeout=15_000)
    assert final["finished_at"] - clicked < 2.0 + 0.5, "cancel took longer than 2 s"


def status_says(qtbot: Any, win: MainWindow, text: str, timeout: int = WAIT_MS) -> None:
    """The status bar shows `text` (each message stays 10 s: wait for it right after the action)."""
    try:
        qtbot.waitUntil(lambda: text in win.statusBar().currentMessage(), timeout=timeout)
    except Exception:
        raise AssertionError(f"status bar: {win.statusBar().currentMessage()!r}") from None


def test_pause_resume_retry_and_resubmit_from_the_jobs_view(qtbot: Any, window: MainWindow, gui_cluster: Any) -> None:
    controller, _ = gui_cluster
    jobs = window.jobs
    spec = {"algorithm": "sleep", "name": "gui-pausable", "hyperparameters": {"seconds": 120}}
    with Client(controller.address) as client:
        job_id = client.submit(spec)["id"]
        ids = {job_id}
        try:
            wait_state(qtbot, window, job_id, "RUNNING")
            window.show_view(jobs)
            jobs.select(job_id)
            assert jobs.pause_button.isEnabled() and not jobs.resume_button.isEnabled()
            assert not jobs.retry_button.isEnabled()

            qtbot.mouseClick(jobs.pause_button, qtbot_button())
            status_says(qtbot, window, "gui-pausable: pausing")
            wait_state(qtbot, window, job_id, "PAUSED")
            paused = client.job(job_id)
            assert paused["state"] == "PAUSED"
            assert [t["state"] for t in paused["task_list"]] == ["PENDING"], paused["task_list"]  # its task stopped
            assert jobs.resume_button.isEnabled() and not jobs.pause_button.isEnabled()

            qtbot.mouseClick(jobs.resume_button, qtbot_button())
            status_says(qtbot, window, "gui-pausable: resumed")
            wait_state(qtbot, window, job_id, "RUNNING")
            assert client.job(job_id)["state"] == "RUNNING"

            client.cancel(job_id)
            wait_state(qtbot, window, job_id, "CANCELLED")
            jobs.select(job_id)
            assert jobs.retry_button.isEnabled() and not jobs.resume_button.isEnabled()
            qtbot.mouseClick(jobs.retry_button, qtbot_button())
            status_says(qtbot, window, "gui-pausable: retrying")
            wait_state(qtbot, window, job_id, "RUNNING")
            retried = client.job(job_id)  # the same job runs again
            assert retried["state"] == "RUNNING" and retried["error"] == "" and retried["finished_at"] is None

            jobs.select(job_id)
            before = {j["id"] for j in jobs.model.rows}
            qtbot.mouseClick(jobs.resubmit_button, qtbot_button())
            status_says(qtbot, window, "gui-pausable: resubmitted")
            qtbot.waitUntil(lambda: {j["id"] for j in jobs.model.rows} - before != set(), timeout=15_000)
            (copy_id,) = {j["id"] for j in jobs.model.rows} - before
            ids.add(copy_id)
            copy = client.job(copy_id)  # a new job with the same spec; the original carries on
            assert copy["name"] == "gui-pausable" and copy["algorithm"] == "sleep"
            assert copy["spec"]["hyperparameters"] == retried["spec"]["hyperparameters"] == {"seconds": 120}
            assert client.job(job_id)["state"] == "RUNNING"
        finally:
            for each in ids:
                if client.job(each)["state"] not in ("SUCCEEDED", "FAILED", "CANCELLED"):
                    client.cancel(each)
    for each in ids:
        wait_state(qtbot, window, each, "CANCELLED")


def test_invalid_form_input_is_refused_inline(qtbot: Any, window: MainWindow) -> None:
    dialog = open_dialog(qtbot, window)
    dialog.select_workload("random_forest")
    dialog.select_dataset("iris")
    trees = dialog.params["n_estimators"].widget
    trees.setText("abc")  # type: ignore[attr-defined]
    assert not dialog.ok_button.isEnabled()
    assert "n_estimators" in dialog.error_label.text() and "integer" in dialog.error_label.text()
    assert trees.styleSheet() == INVALID_STYLE
    trees.setText("-5")  # type: ignore[attr-defined]
    assert not dialog.ok_button.isEnabled()
    assert "n_estimators" in dialog.error_label.text()
    trees.setText("50")  # type: ignore[attr-defined]
    assert dialog.ok_button.isEnabled() and dialog.error_label.text() == ""
    assert trees.styleSheet() == ""
    dialog.sweep_box.setChecked(True)
    dialog.sweep_space.setPlainText("bogus=float:1:2")
    assert not dialog.ok_button.isEnabled() and "sweep.params.bogus" in dialog.error_label.text()
    dialog.sweep_space.setPlainText("max_depth=int:2:8")
    assert dialog.ok_button.isEnabled(), dialog.error_label.text()
    assert "keep_models" not in dialog.spec()  # best: the parser's default, left out
    dialog.sweep_keep.setCurrentText("all")
    assert dialog.spec()["keep_models"] == "all" and dialog.ok_button.isEnabled()
    assert "trials_per_task" not in dialog.spec()["sweep"]  # auto: the controller shares the budget out
    dialog.sweep_per_task.setValue(8)
    assert dialog.spec()["sweep"]["trials_per_task"] == 8 and dialog.ok_button.isEnabled()
    dialog.buttons.button(QDialogButtonBox.StandardButton.Cancel).click()


def test_registry_view_lists_filters_promotes_downloads_and_deletes(
    qtbot: Any, window: MainWindow, gui_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, _ = gui_cluster
    with Client(controller.address) as client:
        jobs = [
            client.submit({"algorithm": "decision_tree", "dataset": "iris", "model_name": "gui-tree"}),
            client.submit({"algorithm": "logistic_regression", "dataset": "wine", "model_name": "gui-logreg"}),
        ]
        for job in jobs:
            assert client.wait(job["id"], timeout=120)["state"] == "SUCCEEDED"
    window.show_view(window.models)
    qtbot.waitUntil(lambda: {"gui-tree:1", "gui-logreg:1"} <= set(window.models.model._index), timeout=10_000)
    # an unfiltered listing still in flight when the user filters (a job ended a moment before) answers late:
    # the table keeps showing the latest request's answer
    real_models, late = AsyncClient.models, threading.Event()

    async def slow_unless_filtered(self: AsyncClient, *args: Any, **kwargs: Any) -> dict[str, Any]:
        result = await real_models(self, *args, **kwargs)
        if not kwargs.get("algorithm"):
            await asyncio.sleep(0.5)  # a slow reply, not synchronisation: `late` says when it is back
            late.set()
        return result

    monkeypatch.setattr(AsyncClient, "models", slow_unless_filtered)
    window.models.search()
    window.models.filters["algorithm"].setText("decision_tree")
    qtbot.mouseClick(window.models.search_button, qtbot_button())
    qtbot.waitUntil(lambda: [r["name"] for r in window.models.model.rows] == ["gui-tree"], timeout=10_000)
    qtbot.waitUntil(late.is_set, timeout=10_000)
    flushed: list[object] = []  # results reach the window in order: once this one has, the late one has too
    window.bridge.call(lambda c: c.info(), flushed.append)
    qtbot.waitUntil(lambda: bool(flushed), timeout=10_000)
    assert [r["name"] for r in window.models.model.rows] == ["gui-tree"]
    monkeypatch.setattr(AsyncClient, "models", real_models)
    window.models.select("gui-tree:1")
    assert "trained by job" in window.models.detail.toPlainText()
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("production", True)))
    qtbot.mouseClick(window.models.promote_button, qtbot_button())
    qtbot.waitUntil(lambda: window.models.model.rows[0]["aliases"] == ["production"], timeout=10_000)
    with Client(controller.address) as client:
        record = client.model("gui-tree@production")
        assert record["version"] == 1
    # a version whose file went missing is flagged in the table and the detail
    (controller.data_dir / "blobs" / record["sha256"][:2] / record["sha256"]).unlink()
    qtbot.mouseClick(window.models.search_button, qtbot_button())
    qtbot.waitUntil(lambda: window.models.model.rows[0].get("blob_status") == "MISSING", timeout=10_000)
    file_column = [c.title for c in window.models.model.columns].index("File")
    assert window.models.model.data(window.models.model.index(0, file_column)) == "MISSING"
    window.models.select("gui-tree:1")
    assert "file: MISSING" in window.models.detail.toPlainText()
    # Download…: the selected version's file (format, then where), sha256 checked
    view = window.models
    out = tmp_path / "model.skops"
    monkeypatch.setattr(QInputDialog, "getItem", staticmethod(lambda *a, **k: ("native", True)))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(out), "")))
    view.filters["algorithm"].setText("")
    qtbot.mouseClick(view.search_button, qtbot_button())
    qtbot.waitUntil(lambda: {"gui-tree:1", "gui-logreg:1"} <= set(view.model._index), timeout=10_000)
    view.select("gui-logreg:1")
    qtbot.mouseClick(view.download_button, qtbot_button())
    status_says(qtbot, window, f"saved gui-logreg:1 to {out}")
    assert "sha256 verified" in window.statusBar().currentMessage()
    with Client(controller.address) as client:
        logreg = client.model("gui-logreg:1")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == logreg["sha256"] and out.stat().st_size == logreg["size"]
    # Delete: the selected version only, once the user confirms; an aliased one too (confirmed, then forced)
    asked: list[str] = []

    def yes(_parent: Any, _title: str, text: str, *_a: Any, **_k: Any) -> QMessageBox.StandardButton:
        asked.append(text)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", staticmethod(yes))
    qtbot.mouseClick(view.delete_button, qtbot_button())
    status_says(qtbot, window, "deleted gui-logreg:1")
    qtbot.waitUntil(lambda: "gui-logreg:1" not in view.model._index, timeout=10_000)
    assert "gui-tree:1" in view.model._index and asked and "gui-logreg:1" in asked[-1]
    with Client(controller.address) as client:
        with pytest.raises(NotFound, match="gui-logreg"):
            client.model("gui-logreg:1")
        assert client.model("gui-tree:1")["aliases"] == ["production"]
        view.select("gui-tree:1")
        qtbot.mouseClick(view.delete_button, qtbot_button())
        status_says(qtbot, window, "deleted gui-tree:1")
        qtbot.waitUntil(lambda: "gui-tree:1" not in view.model._index, timeout=10_000)
        with pytest.raises(NotFound, match="gui-tree"):
            client.model("gui-tree:1")


def test_datasets_view_uploads_and_previews(qtbot: Any, window: MainWindow, tmp_path: Path) -> None:
    data = tmp_path / "points.csv"
    data.write_text("x1,x2,label\n" + "".join(f"{i},{i * 0.5},{'ab'[i % 2]}\n" for i in range(30)))
    window.show_view(window.datasets)
    window.datasets.upload(data, "gui-points")
    qtbot.waitUntil(lambda: window.datasets.model.find("gui-points") >= 0, timeout=20_000)
    window.datasets.select("gui-points")
    qtbot.waitUntil(lambda: window.datasets.preview.rowCount() > 0, timeout=10_000)
    header = [window.datasets.preview.horizontalHeaderItem(i).text() for i in range(3)]
    assert header == ["x1", "x2", "label"]
    assert window.datasets.preview.rowCount() == 30
    assert window.datasets.preview.item(3, 2).text() == "b"


def test_artifacts_tab_lists_a_jobs_files_and_saves_one_off_the_gui_thread(
    qtbot: Any, window: MainWindow, gui_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, _ = gui_cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "artifact", "name": "gui-artifact", "hyperparameters": {"bytes": 300_000}})
    wait_state(qtbot, window, job["id"], "SUCCEEDED")
    window.show_job(job["id"])
    detail = window.detail
    detail.tabs.setCurrentWidget(detail.artifacts_tab)
    qtbot.waitUntil(lambda: detail.artifacts_model.rows != [], timeout=10_000)
    (artifact,) = detail.artifacts_model.rows
    assert (artifact["name"], artifact["kind"], artifact["task_index"], artifact["size"]) == (
        "artifact.bin", "report", 0, 300_000,
    )  # fmt: skip
    assert detail.artifacts_model.index(0, 4).data() == artifact["sha256"][:16]
    out = tmp_path / "saved.bin"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *_a, **_k: (str(out), ""))
    gui_thread = threading.get_ident()
    transfers: list[int] = []
    real = AsyncClient.download_artifact

    async def spy(self: AsyncClient, *args: Any) -> dict[str, Any]:
        transfers.append(threading.get_ident())
        return await real(self, *args)

    monkeypatch.setattr(AsyncClient, "download_artifact", spy)
    qtbot.mouseClick(detail.download_artifact_button, qtbot_button())  # nothing selected: said, nothing saved
    assert "select an artifact" in window.statusBar().currentMessage() and not out.exists()
    detail.artifacts_table.selectRow(0)
    qtbot.mouseClick(detail.download_artifact_button, qtbot_button())
    qtbot.waitUntil(lambda: f"saved artifact.bin to {out}" in window.statusBar().currentMessage(), timeout=20_000)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == artifact["sha256"]
    assert transfers and gui_thread not in transfers


def test_settings_test_the_connection_to_mongodb_and_s3(qtbot: Any, window: MainWindow, tmp_path: Path) -> None:
    mongo, mongo_uri = start_secantus(tmp_path / "mongo")
    s3, endpoint = start_nanio(tmp_path / "s3")
    try:
        view = window.settings
        window.show_view(view)
        view.external.setChecked(True)
        view.store_uri.setText(mongo_uri + "/tensorfleet")
        view.blobs_uri.setText(f"s3://gui-models?endpoint={endpoint}&secure=false")
        view.access_key.setText(S3_KEY)
        view.secret_key.setText("not-the-secret")
        qtbot.mouseClick(view.test_button, qtbot_button())
        qtbot.waitUntil(lambda: view.test_result.text().startswith("failed"), timeout=30_000)
        assert "credentials" in view.test_result.text() and "not-the-secret" not in view.test_result.text()
        view.secret_key.setText(S3_SECRET)
        qtbot.mouseClick(view.test_button, qtbot_button())
        qtbot.waitUntil(lambda: "S3 bucket gui-models" in view.test_result.text(), timeout=30_000)
        assert "MongoDB" in view.test_result.text() and "OK" in view.test_result.text()
        qtbot.mouseClick(view.save_button, qtbot_button())
        saved = view.config_path
        assert saved.stat().st_mode & 0o777 == 0o600
        assert load_settings(saved).s3_secret_key == S3_SECRET
    finally:
        mongo.stop()
        s3.stop()


def answer_pair_dialog(token: str) -> None:
    """Fill the Pair dialog's token once it is shown (modal: exec() runs its own event loop) and press OK."""

    def fill() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, PairDialog):
            QTimer.singleShot(20, fill)
            return
        dialog.token.setText(token)
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()

    QTimer.singleShot(0, fill)


def test_fleet_adds_pairs_drains_and_removes_an_agent(
    qtbot: Any, window: MainWindow, gui_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, _ = gui_cluster
    fleet = window.fleet
    # an agent mDNS cannot see (it does not advertise) and that only its join token pairs (no cluster token)
    lone = AgentProcess(tmp_path / "lone", name="gui-lone", cpu_slots=1, env={}, extra_args=["--no-advertise"])
    lone.start()
    try:
        node_id = str(lone.info["node_id"])
        token = (lone.data_dir / "identity" / "join-token.txt").read_text().strip()
        window.show_view(fleet)
        monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: (f" {lone.address} ", True)))
        qtbot.mouseClick(fleet.add_button, qtbot_button())
        status_says(qtbot, window, f"added agent {lone.address}")
        qtbot.waitUntil(lambda: fleet.model.find(node_id) >= 0, timeout=15_000)
        with Client(controller.address) as client:

            def agent() -> dict[str, Any]:
                return next(a for a in client.agents() if a["id"] == node_id)

            assert (agent()["source"], agent()["address"], agent()["paired"]) == ("manual", lone.address, False)
            row = fleet.model.rows[fleet.model.find(node_id)]
            assert row["name"] == "gui-lone" and not row["paired"]

            fleet.table.selectRow(fleet.proxy.mapFromSource(fleet.model.index(fleet.model.find(node_id), 0)).row())
            answer_pair_dialog("tfj-not-its-token")
            qtbot.mouseClick(fleet.pair_button, qtbot_button())
            status_says(qtbot, window, "pairing refused")
            assert not agent()["paired"]
            answer_pair_dialog(token)
            qtbot.mouseClick(fleet.pair_button, qtbot_button())
            status_says(qtbot, window, "paired with gui-lone")
            qtbot.waitUntil(lambda: fleet.model.rows[fleet.model.find(node_id)]["paired"], timeout=15_000)
            wait_until(lambda: agent()["paired"] and agent()["state"] == "ONLINE", 15, "gui-lone paired and online")

            qtbot.mouseClick(fleet.drain_button, qtbot_button())
            status_says(qtbot, window, "draining gui-lone")
            qtbot.waitUntil(lambda: fleet.state_of(node_id) == "DRAINING", timeout=15_000)
            assert agent()["state"] == "DRAINING"

            asked: list[str] = []

            def yes(_parent: Any, _title: str, text: str, *_a: Any, **_k: Any) -> QMessageBox.StandardButton:
                asked.append(text)
                return QMessageBox.StandardButton.Yes

            monkeypatch.setattr(QMessageBox, "question", staticmethod(yes))
            qtbot.mouseClick(fleet.remove_button, qtbot_button())
            status_says(qtbot, window, "removed gui-lone")
            qtbot.waitUntil(lambda: fleet.model.find(node_id) < 0, timeout=15_000)
            assert asked and "gui-lone" in asked[0]
            assert node_id not in {a["id"] for a in client.agents(all=True)}
            assert fleet.state_of("gui-agent-0") == "ONLINE"  # the others stay
    finally:
        lone.stop()


def test_lost_controller_shows_a_banner_and_reconnects(qtbot: Any, window: MainWindow, gui_cluster: Any) -> None:
    controller, _ = gui_cluster
    qtbot.waitUntil(lambda: window.bridge.online, timeout=10_000)
    controller.kill()
    qtbot.waitUntil(lambda: window.banner.isVisibleTo(window), timeout=15_000)
    assert "Reconnecting" in window.banner.label.text()
    controller.start()  # same port, same data
    qtbot.waitUntil(lambda: not window.banner.isVisibleTo(window), timeout=30_000)
    qtbot.waitUntil(lambda: any(r["name"] == "gui-emit" for r in window.jobs.model.rows), timeout=10_000)


def test_killed_agent_is_shown_lost_within_3_s(qtbot: Any, window: MainWindow, tmp_path: Path) -> None:
    victim = AgentProcess(tmp_path / "victim", name="gui-victim", cpu_slots=1).start()
    try:
        qtbot.waitUntil(lambda: window.fleet.state_of("gui-victim") == "ONLINE", timeout=WAIT_MS)
        lost_events: list[float] = []
        window.bridge.agent_event.connect(
            lambda e: (
                lost_events.append(e["time"]) if e["kind"] == "lost" and e["agent"]["name"] == "gui-victim" else None
            )
        )
        assert victim.proc is not None
        killed = time.time()
        os.kill(victim.proc.pid, signal.SIGKILL)
        qtbot.waitUntil(lambda: window.fleet.state_of("gui-victim") == "LOST", timeout=15_000)
        shown = time.time()
        assert lost_events and lost_events[0] - killed <= 3.0 + 0.5, f"LOST after {lost_events[0] - killed:.2f} s"
        assert shown - killed <= 3.0 + 1.5
    finally:
        victim.stop()


def test_window_starts_a_controller_when_none_answers(qtbot: Any, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    # this free port stands for the local default address: the only one at which the app starts a controller
    win = build_window(address, data_dir=tmp_path / "local", autostart=True, local_address=address)
    win.show()
    connected: list[dict[str, Any]] = []
    win.bridge.connected.connect(connected.append)
    win.bridge.start()
    windows = [win]
    try:
        try:
            qtbot.waitUntil(lambda: bool(connected), timeout=90_000)
        except Exception:
            raise AssertionError(win.banner.label.text()) from None
        assert connected[0]["started"] and "started a local controller" in win.connection_label.text()
        pid = win.bridge.started_pid
        assert pid > 0
        # its local agent comes up too, and the cluster keeps running when the window closes
        qtbot.waitUntil(
            lambda: any(a["source"] == "local" and a["state"] == "ONLINE" for a in win.fleet.model.rows), timeout=60_000
        )
        agent_pid = json.loads((tmp_path / "local" / "local-agent" / "lock").read_text())["pid"]
        win.close()
        with Client(address) as client:
            assert client.info()
        assert _alive(pid) and _alive(agent_pid)
        # the app opened again connects to it (starts nothing); TensorFleet → Quit and stop the cluster stops
        # that controller and its local agent, and closes the window
        again = build_window(address, data_dir=tmp_path / "local", local_address=address)
        windows.append(again)
        again.show()
        again.bridge.start()
        qtbot.waitUntil(lambda: again.connection_label.text() != "connecting…", timeout=30_000)
        assert again.connection_label.text() == f"connected to the controller on {address}"
        assert again.bridge.started_pid == 0
        (app_menu,) = [a.menu() for a in again.menuBar().actions() if a.text() == "&TensorFleet"]
        (stop,) = [a for a in app_menu.actions() if a.text() == "Quit and &stop the cluster"]
        stop.trigger()
        qtbot.waitUntil(lambda: not again.isVisible(), timeout=15_000)
        wait_until(lambda: not _alive(pid), 30, "the started controller to exit")
        wait_until(lambda: not _alive(agent_pid), 30, "its local agent to exit")
        host, _, port = address.rpartition(":")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=5).close()
    finally:
        for each in windows:
            each.close()
        if win.bridge.started_pid and _alive(win.bridge.started_pid):
            os.killpg(win.bridge.started_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie no one has reaped yet is not running
        if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
            return False
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
