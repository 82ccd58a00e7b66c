"""One process per data dir: a second `tensorfleet serve` or `tensorfleet-agent` on a data dir in use exits at
once, names the holder, and leaves every file of the data dir as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from tensorfleet_agent.datadir_lock import holder_of

pytestmark = pytest.mark.slow

DEADLINE = 2.0  # what the user is promised
MARGIN = 1.0  # interpreter start-up on a loaded 2-core CI machine


def tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file and folder below root: (mtime_ns, size, content of files)."""
    out = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        out[str(path.relative_to(root))] = (
            stat.st_mtime_ns,
            stat.st_size,
            path.read_bytes() if path.is_file() else b"",
        )
    return out


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """SIGSTOP the holders: whatever changes in their data dir meanwhile, the refused process changed it."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def refused_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "is in use by" in line]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_second_controller_on_a_data_dir_in_use_exits_and_touches_nothing(
    controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "controller"
    first = controller_factory(data_dir, local_agent=True, extra_args=["--no-mdns"]).start()
    assert first.proc is not None
    local_agent = holder_of(data_dir / "local-agent")  # the local agent holds its own dir
    assert local_agent is not None and local_agent.program == "tensorfleet-agent"
    with frozen([first.proc.pid, local_agent.pid]):
        before = tree(data_dir)
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "tensorfleet_desktop", "serve", "--host", "127.0.0.1", "--port", "0",
             "--data-dir", str(data_dir), "--no-mdns"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        after = tree(data_dir)
    assert second.returncode == 1, second  # README: "exits at once with status 1"
    line = refused_line(second.stderr)
    assert str(data_dir) in line and f"pid {first.proc.pid}" in line and first.address in line, line
    assert elapsed < DEADLINE + MARGIN, f"refused after {elapsed:.2f}s"
    assert after == before  # no store file, blob, identity or local agent touched
    assert "tensorfleet.db" in before and "local-agent/lock" in before


def test_a_second_agent_on_a_data_dir_in_use_exits_and_touches_nothing(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "agent"
    first = agent_factory(data_dir, cpu_slots=1).start()
    assert first.proc is not None
    with frozen([first.proc.pid]):
        before = tree(data_dir)
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "tensorfleet_agent", "--host", "127.0.0.1", "--port", "0", "--no-advertise",
             "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        after = tree(data_dir)
    assert second.returncode == 1, second  # README: "exits at once with status 1"
    line = refused_line(second.stderr)
    assert str(data_dir) in line and f"pid {first.proc.pid}" in line and first.address in line, line
    assert elapsed < DEADLINE + MARGIN, f"refused after {elapsed:.2f}s"
    assert after == before
    # once the holder is gone (SIGKILL: only the kernel lets go), the data dir is usable again
    first.kill()
    assert holder_of(data_dir) is None
    again = agent_factory(data_dir, cpu_slots=1).start()
    assert again.info["node_id"] == first.info["node_id"]  # the same identity, from the same data dir
