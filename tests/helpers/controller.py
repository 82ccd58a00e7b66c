"""Start a real `tensorfleet serve` process and run real `tensorfleet` CLI commands against it."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.agents import CLUSTER_TOKEN
from helpers.cli_fork_server import CliForkServer
from helpers.processes import wait_for_ready_file
from helpers.waiting import wait_until

LOOPBACK = "127.0.0.1"


@dataclass
class ControllerProcess:
    data_dir: Path
    extra_args: list[str] = field(default_factory=list)
    local_agent: bool = False
    env: dict[str, str] = field(default_factory=lambda: {"TENSORFLEET_CLUSTER_TOKEN": CLUSTER_TOKEN})
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    port: int = 0

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def ready_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.ready"

    def start(self, timeout: float = 60.0) -> ControllerProcess:
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process without waiting for it (start several, then wait for each)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ready = self.ready_path
        ready.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "tensorfleet_desktop",
            "serve",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--interfaces",
            LOOPBACK,
            "--ready-file",
            str(ready),
            *self.extra_args,
        ]
        if not self.local_agent:
            cmd.append("--no-local-agent")
        env = {**os.environ, "TENSORFLEET_MDNS_INTERFACES": LOOPBACK, **self.env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 60.0) -> ControllerProcess:
        assert self.proc is not None
        self.info = wait_for_ready_file(self.proc, self.ready_path, self.log_path, timeout, "controller", self.kill)
        self.port = int(self.info["port"])
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def signal_stop(self) -> None:
        """SIGTERM without waiting (stop() waits): stop several processes side by side."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        self.kill()

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def scheduler_passes(self) -> int:
        """Scheduler passes completed so far, from the controller's /metrics (start it with --metrics-port 0)."""
        port = self.info.get("metrics_port")
        assert port, "counting scheduler passes needs the controller started with --metrics-port 0"
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=10) as response:
            page = response.read().decode()
        found = re.search(r"^tensorfleet_schedule_pass_seconds_count (\S+)$", page, re.MULTILINE)
        assert found, "no tensorfleet_schedule_pass_seconds_count on /metrics"
        return int(float(found.group(1)))

    def after_scheduler_passes(self, passes: int = 2, timeout: float = 10.0) -> None:
        """Return once `passes` scheduler passes have completed since this call: whatever was queued when it
        was made has been considered for placement that often (the positive signal behind "never placed")."""
        start = self.scheduler_passes()
        wait_until(lambda: self.scheduler_passes() >= start + passes, timeout, f"{passes} scheduler passes")

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return tensorfleet("--controller", self.address, *args, timeout=timeout)


def tensorfleet(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """`python -m tensorfleet_desktop ARGS` in its own process: a fork of a process that has imported what the CLI
    stands on (helpers/cli_fork_server.py: the same exit code, stdout and stderr; some 0.3 s less per command on
    CI's 2 cores), or a plain subprocess with TENSORFLEET_TEST_CLI_SUBPROCESS=1."""
    env = {**os.environ, "TENSORFLEET_MDNS_INTERFACES": LOOPBACK}
    if os.environ.get("TENSORFLEET_TEST_CLI_SUBPROCESS", "") not in ("", "0"):
        return subprocess.run(
            [sys.executable, "-m", "tensorfleet_desktop", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    return _fork_server().run(list(args), env, timeout)


_server: CliForkServer | None = None
_server_lock = threading.Lock()


def _fork_server() -> CliForkServer:
    """One per test process, started by the first command, gone when the test process ends."""
    global _server
    with _server_lock:
        if _server is None:
            log = Path(tempfile.gettempdir()) / f"tensorfleet-cli-fork-server-{os.getpid()}.log"
            _server = CliForkServer(log)
            atexit.register(_server.close)
        return _server


def cli_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return json.loads(result.stdout)


def online(client: Any) -> dict[str, dict[str, Any]]:
    """The client's ONLINE agents by name."""
    return {a["name"]: a for a in client.agents() if a["state"] == "ONLINE"}


def record_seqs(event: dict[str, Any]) -> list[int]:
    """The seqs of the stored records a streamed job event carries: a batch of metric points or log lines
    carries each record's own."""
    batch = event.get("points") or event.get("lines")
    return [row["seq"] for row in batch] if batch else [event["seq"]]
