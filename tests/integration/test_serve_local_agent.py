"""`tensorfleet serve` starts its local agent before the controller is up (a cold start runs both side by side):
a controller that then cannot start leaves no agent behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tensorfleet_agent.datadir_lock import holder_of

pytestmark = pytest.mark.slow


def _processes_on(data_dir: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline:
            found.append(f"{proc.pid}: {cmdline}")
    return found


def test_a_controller_that_cannot_listen_leaves_no_local_agent_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / "controller"
    with socket.socket() as taken:  # no SO_REUSEPORT: gRPC cannot bind beside it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = [sys.executable, "-m", "tensorfleet_desktop", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        result = subprocess.run(
            [*serve, "--no-mdns", "--local-agent-slots", "1"],
            capture_output=True,
            text=True,
            timeout=90,
            env={**os.environ, "TENSORFLEET_MDNS_INTERFACES": "127.0.0.1"},
            check=False,
        )
    assert result.returncode == 1, result.stderr
    assert f"tensorfleet serve: cannot start: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert (data_dir / "local-agent.log").exists()  # it was started, while the controller started
    assert holder_of(data_dir / "local-agent") is None  # and it is gone, with its fork server and workers
    assert holder_of(data_dir) is None
    assert not _processes_on(data_dir)
