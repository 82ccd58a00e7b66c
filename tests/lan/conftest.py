"""One simulated LAN per test module; skipped with the reason where namespaces cannot be made (under CI that skip
fails the run: tests/helpers/suite_policy.py).

A failed test gets the tail of every daemon's log in its report. Fault scenarios record their
figures (detection and recovery times) with `fault_figures`; they are written to
`lan-fault-figures.json` in pytest's temporary directory and summed up at the end of the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.lan import Lan, lan_unavailable_reason
from helpers.lan_cluster import LanCluster

_FIGURES: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def lan(request: pytest.FixtureRequest) -> Iterator[Lan]:
    reason = lan_unavailable_reason()
    if reason is not None:
        pytest.skip(f"simulated LAN unavailable: {reason}")
    hosts = getattr(request.module, "LAN_HOSTS", ["ctl", "h1", "h2"])
    network = Lan(hosts).build()
    try:
        yield network
    finally:
        network.teardown()


@pytest.fixture(scope="module")
def lan_cluster(
    lan: Lan, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LanCluster]:
    """The controller on `ctl` and an agent on each of the module's LAN_AGENTS (default: every other host)."""
    cluster = LanCluster(lan, tmp_path_factory.mktemp("lan-cluster"))
    for name in getattr(request.module, "LAN_AGENTS", [h for h in lan.hosts if h != "ctl"]):
        cluster.add_agent(name)
    cluster.add_controller()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def fault_figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    def record(**figures: Any) -> None:
        entry = _FIGURES.setdefault(request.node.name, {})
        entry.update({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()})
        for key, value in figures.items():
            request.node.user_properties.append((key, value))

    return record


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        cluster = getattr(item, "funcargs", {}).get("lan_cluster")
        if isinstance(cluster, LanCluster):
            for name, text in cluster.logs().items():
                report.sections.append((f"log of {name}", text))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _FIGURES:
        out = Path(session.config._tmp_path_factory.getbasetemp()) / "lan-fault-figures.json"  # type: ignore[attr-defined]
        out.write_text(json.dumps(_FIGURES, indent=2))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("simulated-LAN fault figures (seconds)")
    for test, figures in _FIGURES.items():
        terminalreporter.line(f"{test}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
