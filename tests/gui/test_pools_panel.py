"""Issue 25 in the Fleet view: the Pools panel lists each Slurm pool with its allocations (state, Slurm's reason,
nodes, joined agents, jobs), refuses a bad Add form naming the field, and sends add/remove through the bridge's
thread (the window never waits). pytest-qt, offscreen, no cluster: the controller's answers are the SDK's dicts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from PySide6.QtCore import Qt

from helpers.servers import free_port
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_desktop.ui.app import build_window
from tensorfleet_desktop.ui.main_window import MainWindow
from tensorfleet_desktop.ui.pools_panel import AddPoolDialog, PoolsPanel
from tensorfleet_desktop.wire import pool_from_pb

RUNNING = cpb.PoolAllocation(id="1234", state="RUNNING", nodes=2, submitted_at=1.7e9, started_at=1.7e9 + 40,
                             agents=["ab" * 16, "cd" * 16], jobs=["job-1", "job-2"])  # fmt: skip
PENDING = cpb.PoolAllocation(id="1240", state="PENDING", reason="Resources", nodes=1, submitted_at=1.7e9 + 60,
                             jobs=["job-3"])  # fmt: skip
GPU = pool_from_pb(cpb.Pool(name="gpu", kind="slurm", partition="a100", account="ml", max_nodes=4,
                            time_limit="4:00:00", sbatch_args=["--gres=gpu:4"], idle_timeout_seconds=300,
                            allocations=[RUNNING, PENDING]))  # fmt: skip
CPU = pool_from_pb(cpb.Pool(name="cpu", kind="slurm", partition="short", max_nodes=1, idle_timeout_seconds=90,
                            login="alice@login1", error="squeue over ssh: connection refused"))  # fmt: skip


@pytest.fixture
def window(qtbot: Any, tmp_path: Path) -> Iterator[MainWindow]:
    win = build_window(f"127.0.0.1:{free_port()}", data_dir=tmp_path / "data", autostart=False)
    qtbot.addWidget(win)
    win.show()
    win.show_view(win.fleet)
    yield win
    win.close()


class Recorder:
    """Stands in for Bridge.call: keeps each call, which the test runs against a fake client."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def __call__(self, fn: Any, on_result: Any = None, on_error: Any = None) -> None:
        self.calls.append((fn, on_result, on_error))


class FakeClient:
    def __init__(self) -> None:
        self.asked: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.asked.append((name, args, kwargs))
            return [GPU] if name == "list_pools" else {**GPU, "name": args[0]}

        return call


def _cell(panel: PoolsPanel, name: str, column: str) -> Any:
    titles = [c.title for c in panel.model.columns]
    return panel.model.index(panel.model.find(name), titles.index(column)).data(Qt.ItemDataRole.DisplayRole)


def test_pools_their_allocations_and_why_they_wait(qtbot: Any, window: MainWindow, monkeypatch: Any) -> None:
    panel = window.fleet.pools
    assert panel.isVisible()
    panel.set_pools([GPU, CPU])
    assert _cell(panel, "gpu", "Nodes") == "3/4"
    assert _cell(panel, "gpu", "Allocations") == "1234 RUNNING, 1240 PENDING (Resources)"
    assert _cell(panel, "cpu", "Allocations") == "none (scaled to zero)"
    assert _cell(panel, "cpu", "Idle timeout") == "90s" and _cell(panel, "gpu", "Idle timeout") == "5m"
    assert _cell(panel, "cpu", "Problem") == "squeue over ssh: connection refused"
    assert panel.summary.text() == "2 pool(s) · 3 node(s) allocated"
    assert not panel.remove_button.isEnabled()

    panel.table.selectRow(panel.proxy.mapFromSource(panel.model.index(panel.model.find("gpu"), 0)).row())
    rows = [[panel.allocations.index(r, c).data() for c in range(8)] for r in range(panel.allocations.rowCount())]
    assert [r[:4] for r in rows] == [["1234", "RUNNING", "-", "2"], ["1240", "PENDING", "Resources", "1"]]
    assert rows[0][6] == f"{'ab' * 6}, {'cd' * 6}" and rows[1][7] == "job-3"
    assert "sbatch --gres=gpu:4" in panel.detail.text() and panel.remove_button.isEnabled()

    recorder = Recorder()
    monkeypatch.setattr(panel.bridge, "call", recorder)
    client = FakeClient()
    panel.remove_pool(confirm=False)
    fn, on_result, _ = recorder.calls.pop()
    on_result(asyncio.run(fn(client)))
    assert client.asked == [("remove_pool", ("gpu",), {})]
    assert recorder.calls  # a refresh follows the change
    fn, on_result, _ = recorder.calls.pop()
    on_result(asyncio.run(fn(client)))
    assert [p["name"] for p in panel.model.rows] == ["gpu"]


def test_the_add_form_names_the_field_it_refuses_and_sends_the_rest(
    qtbot: Any, window: MainWindow, monkeypatch: Any
) -> None:
    dialog = AddPoolDialog(window)
    qtbot.addWidget(dialog)
    dialog.name.setText("GPU")
    assert dialog.check().startswith("Name:")
    dialog.name.setText("gpu-a100")
    assert dialog.check().startswith("Partition:")
    dialog.partition.setText("a100")
    dialog.time_limit.setText("4h")
    assert dialog.check().startswith("Time limit:")
    dialog.time_limit.setText("1-00:00:00")
    dialog.sbatch_args.setText("--gres=gpu:4 qos")
    assert dialog.check().startswith("sbatch arguments:")
    dialog.sbatch_args.setText("--gres=gpu:4 '--comment=tensor fleet'")
    dialog.idle.setText("0")
    assert dialog.check().startswith("Idle timeout:")
    dialog.idle.setText("10m")
    dialog.login.setText("a b")
    assert dialog.check().startswith("Login node:")
    dialog.login.setText("alice@login1")
    dialog.max_nodes.setValue(8)
    assert dialog.check() == ""

    panel = window.fleet.pools
    recorder = Recorder()
    monkeypatch.setattr(panel.bridge, "call", recorder)
    panel.send_pool(dialog.spec)
    client = FakeClient()
    fn, _, _ = recorder.calls.pop()
    asyncio.run(fn(client))
    assert client.asked == [
        ("add_pool", ("gpu-a100", "a100"), {"account": "", "max_nodes": 8, "time_limit": "1-00:00:00",
                                             "sbatch_args": ["--gres=gpu:4", "--comment=tensor fleet"],
                                             "idle_timeout_seconds": 600.0, "login": "alice@login1"}),
    ]  # fmt: skip
