"""Two rules that keep a green run honest (issue 27), as a pytest plugin that tests/conftest.py registers.

1. Under CI (`CI` set to anything but "", "0", "false" or "no"), a skipped test fails, with its reason, unless the
   reason is in CI_ALLOWED_SKIPS below. A skip in CI means the CI machine lacks something `.ci/run` should install
   (namespaces, `systemd-analyze`, an extra, root), and a green run would hide tests that never ran. A skip while
   collecting a module (a module-level `importorskip`) becomes a collection error there.
2. A test not marked `slow` must not leave a process of its own running after its teardown: `-m "not slow"` is
   documented as the fast unit tests, and a test that starts a server (a module fixture's database, S3 or
   controller) is a scenario test. Short helper processes that have exited by then are fine.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Generator

import pytest

# The only skips CI may show, each with why CI cannot avoid it. Keep this list short: everything else that skips
# there is something `.ci/run` must install or set up.
CI_ALLOWED_SKIPS: dict[str, str] = {
    "pausing needs the SecantusDB process this suite starts itself": (
        "only when TENSORFLEET_TEST_MONGODB_URI points the suite at an external MongoDB, which it cannot SIGSTOP; "
        "every other MongoDB test then runs against that server. .ci/run does not set it."
    ),
}

_CHILDREN_BEFORE = pytest.StashKey[set[int]]()
EXIT_GRACE = 2.0  # seconds a child killed at the end of a test gets to exit before it counts as left running


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _refuse_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail") or not running_in_ci():
        return
    reason = skip_reason(report)
    if reason in CI_ALLOWED_SKIPS:
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under CI: {reason}\n"
        "CI must run every test: install or set up what it needs in .ci/run, or, if CI can never run it, add the "
        "reason with a justification to CI_ALLOWED_SKIPS in tests/helpers/suite_policy.py"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _refuse_skip(report)
    before = item.stash.get(_CHILDREN_BEFORE, None)
    if call.when == "teardown" and before is not None and (left := _left_running(before)):
        said = (
            "a test not marked slow left processes running after its teardown (a server or another long-lived "
            "process: a scenario test); mark it @pytest.mark.slow:\n"
            + "\n".join(f"  pid {pid}: {_cmdline(pid)}" for pid in sorted(left))
        )
        if report.failed:  # keep the teardown's own error
            report.sections.append(("processes left running", said))
        else:
            report.outcome = "failed"
            report.longrepr = said
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _refuse_skip(report)
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("slow") is None:
        item.stash[_CHILDREN_BEFORE] = _live_children()


def _live_children() -> set[int]:
    """This process's direct children that have not exited (Linux: /proc/<pid>/task/*/children, cheap)."""
    pids: set[int] = set()
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        try:
            with open(path) as fh:
                pids.update(int(p) for p in fh.read().split())
        except OSError:
            continue
    return {pid for pid in pids if _state(pid) not in ("Z", "X", "")}


def _left_running(before: set[int]) -> set[int]:
    """Children started during the test that still run; those already on their way out get EXIT_GRACE."""
    deadline = time.monotonic() + EXIT_GRACE
    while True:
        left = _live_children() - before
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)  # polling for exits, not synchronising a test


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()[:300]
    except OSError:
        return "?"


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if not running_in_ci():
        return None
    return [f"CI: a skip fails its test unless its reason is one of {len(CI_ALLOWED_SKIPS)} allowed (suite_policy.py)"]
