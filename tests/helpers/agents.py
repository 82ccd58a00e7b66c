"""Start real `tensorfleet-agent` processes on loopback for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from helpers.processes import wait_for_ready_file
from tensorfleet_agent.identity import Identity, load_or_create_identity
from tensorfleet_agent.rpc.client import AgentClient, AgentTrust, fetch_certificate_blocking

LOOPBACK = "127.0.0.1"
#: Agents and controllers started by the tests share this cluster token, so they pair for real, by themselves.
CLUSTER_TOKEN = f"test-cluster-{os.getpid()}-{secrets.token_hex(8)}"
_identity: Identity | None = None


def controller_identity_for_tests() -> Identity:
    """The identity test code uses to talk to agents directly, as a controller would."""
    global _identity
    if _identity is None:
        _identity = load_or_create_identity(Path(tempfile.mkdtemp(prefix="tf-test-controller-")), "controller")
    return _identity


@dataclass
class AgentProcess:
    data_dir: Path
    name: str = "test-agent"
    cpu_slots: int = 2
    spare_workers: int = 0  # the product default is 1; tests start agents by the dozen and rarely need one
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: {"TENSORFLEET_CLUSTER_TOKEN": CLUSTER_TOKEN})
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, object] = field(default_factory=dict)
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

    def start(self, timeout: float = 30.0) -> AgentProcess:
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process without waiting for it (start several, then wait for each)."""
        ready = self.ready_path
        ready.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "tensorfleet_agent",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--interfaces",
            LOOPBACK,
            "--cpu-slots",
            str(self.cpu_slots),
            "--ready-file",
            str(ready),
            "--spare-workers",
            str(self.spare_workers),
            *self.extra_args,
        ]
        env = {**os.environ, "TENSORFLEET_MDNS_INTERFACES": LOOPBACK, **self.env}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 30.0) -> AgentProcess:
        assert self.proc is not None
        self.info = wait_for_ready_file(self.proc, self.ready_path, self.log_path, timeout, "agent", self.kill)
        self.port = int(self.info["port"])  # type: ignore[call-overload]
        return self

    def client(self, pair_token: str | None = None) -> AgentClient:
        """A client that pins this agent's certificate and pairs with the cluster token, like a controller."""
        cert = fetch_certificate_blocking(self.address)
        token = CLUSTER_TOKEN if pair_token is None else pair_token
        return AgentClient(self.address, AgentTrust(cert, controller_identity_for_tests(), pair_token=token))

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful drain) and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def signal_stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.terminate(timeout=15)
        self.kill()

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""
