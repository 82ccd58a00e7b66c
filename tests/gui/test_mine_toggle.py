"""Issue 24: the Jobs view's "Mine" toggle, pytest-qt offscreen against a real controller. The window learns who
it is from GetInfo's caller, delivered with the bridge's `connected` signal (the GUI thread never asks), here a
named token's holder; "Mine" then keeps the jobs that user submitted, whatever else the cluster runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")
pytest.importorskip("pytestqt", reason="pytest-qt (dev extra) is not installed")

from helpers.controller import ControllerProcess
from tensorfleet_desktop.client import Client
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.jobs_view import JobsView

pytestmark = pytest.mark.slow


def _names(view: JobsView) -> set[str]:
    proxy = view.proxy
    rows = (proxy.mapToSource(proxy.index(r, 0)).row() for r in range(proxy.rowCount()))
    return {view.model.rows[r]["name"] for r in rows if r < len(view.model.rows)}


def test_mine_keeps_the_callers_jobs(
    qtbot: Any,
    controller_factory: type[ControllerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    controller = controller_factory(tmp_path / "ctl").start()
    with Client(controller.address) as admin:  # the controller's own token: an admin
        token = admin.create_token("alice", "user")["token"]
        admin.submit({"algorithm": "noop", "name": "theirs"})
    monkeypatch.setenv("TENSORFLEET_CONTROLLER_TOKEN", token)
    with Client(controller.address) as alice:
        alice.submit({"algorithm": "noop", "name": "hers"})

    bridge = Bridge(controller.address, autostart=False)
    view = JobsView(bridge, lambda message, error: None)
    qtbot.addWidget(view)
    assert not view.mine.isEnabled()  # who "I" am is not known before the connection says
    connected: list[dict[str, Any]] = []
    bridge.connected.connect(connected.append)
    bridge.start()
    try:
        qtbot.waitUntil(lambda: bool(connected) and _names(view) == {"theirs", "hers"}, timeout=30_000)
        assert connected[0]["info"]["caller"] == {"name": "alice", "role": "user", "named_token": True}
        assert view.mine.isEnabled() and "as alice, user" in view.mine.toolTip()
        view.mine.setChecked(True)
        assert _names(view) == {"hers"}
        view.mine.setChecked(False)
        assert _names(view) == {"theirs", "hers"}
    finally:
        bridge.stop()
