"""The daemons' garbage collector once they have started (agent/collector.py; docs/architecture.md, 'Pauses: the
garbage collector').

What a daemon loaded while it started (a controller's jobs) is frozen, never scanned by a collection again, and
collection is on: read from the real processes (`tensorfleet serve`, `tensorfleet-agent`) as they exit, through a
sitecustomize that reports the collector's state at exit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from tensorfleet_agent.collector import FULL_AFTER
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow

REPORTER = """
import atexit, gc, json, os

def _report():
    with open(os.environ["TF_TEST_GC_REPORT"], "w") as f:
        json.dump({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "full_after": gc.get_threshold()[2]}, f)

atexit.register(_report)
"""


def _reporting(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[dict[str, str], Path]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(REPORTER)
    report = tmp_path / f"{name}.gc.json"
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, "TF_TEST_GC_REPORT": str(report)}, report


def _controller_report(tmp_path: Path, name: str, submit: int = 0) -> dict[str, object]:
    """Start the controller on tmp_path/c, submit `submit` noop jobs (no agent: they stay queued), stop it."""
    ctl = ControllerProcess(tmp_path / "c")
    ctl.env, report = _reporting(tmp_path, name, ctl.env)
    ctl.start()
    try:
        with Client(ctl.address) as client:
            for _ in range(submit // 500):
                client.submit_many([{"algorithm": "noop"}] * 500)
            assert len(client.jobs(limit=0)) == 2000
    finally:
        ctl.stop()
    assert ctl.proc is not None and ctl.proc.returncode == 0, ctl.logs()[-2000:]
    return dict(json.loads(report.read_text()))


def test_a_restarted_controller_freezes_the_jobs_it_loaded_and_collects_the_rest(tmp_path: Path) -> None:
    first = _controller_report(tmp_path, "first", submit=2000)  # started empty, 2,000 jobs submitted since
    again = _controller_report(tmp_path, "again")  # restarted on them: loaded while it started
    for report in (first, again):
        assert report["enabled"] is True, report  # the start's pause is over: cycles are collected
        assert report["full_after"] == FULL_AFTER, report
    # each loaded job is at least one tracked object (the Job itself), frozen with the start's state
    assert int(again["frozen"]) >= int(first["frozen"]) + 2000, (first, again)


def test_an_agent_freezes_what_it_started_with_and_collects_the_rest(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "a")
    agent.env, report = _reporting(tmp_path, "agent", agent.env)
    agent.start()
    agent.stop()
    assert agent.proc is not None and agent.proc.returncode == 0, agent.logs()[-2000:]
    state = json.loads(report.read_text())
    assert state["enabled"] is True and state["full_after"] == FULL_AFTER, state
    assert state["frozen"] > 10_000, state  # its modules, its identity, its journal: not scanned again
