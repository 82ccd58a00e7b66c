"""A TensorFleet cluster on the simulated LAN: a controller in one namespace, agents in others.

Real processes, real multicast mDNS, real gRPC with TLS and pairing by cluster token; the test
talks to the controller through a driver process inside the LAN (`lan_driver.py`). Used by the
simulated-LAN tests and by `benchmarks/` alike. Every process log is kept, so a failed test can
show them; `stop()` kills everything even after a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.history import check_history
from helpers.lan import Host, Lan, python
from helpers.processes import wait_for_ready_file

AGENT_PORT = 50051
CONTROLLER_PORT = 50050
DRIVER = Path(__file__).with_name("lan_driver.py")


class DriverError(RuntimeError):
    """An SDK call inside the LAN raised; `kind` is the exception's class name."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass
class LanProcess:
    """One daemon in one namespace; start() again restarts it with the same data dir (same identity)."""

    name: str
    host: Host
    argv: list[str]
    env: dict[str, str]
    log: Path
    ready: Path
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def spawn(self) -> None:
        self.ready.unlink(missing_ok=True)
        with self.log.open("ab") as fh:
            fh.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
        self.proc = self.host.popen(self.argv, self.log, self.env)

    def wait_ready(self, timeout: float = 60.0) -> LanProcess:
        assert self.proc is not None
        self.info = wait_for_ready_file(self.proc, self.ready, self.log, timeout, self.name, self.kill)
        return self

    def start(self, timeout: float = 60.0) -> LanProcess:
        self.spawn()
        return self.wait_ready(timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL; returns the wall-clock time of the kill, for detection deadlines."""
        at = time.time()
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)
        return at

    def terminate(self) -> float:
        """SIGTERM (the graceful drain) without waiting; returns when it was sent."""
        at = time.time()
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
        return at

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.running:
            self.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(20)
        self.kill()

    def tail(self, lines: int = 150) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _arg(value: Any) -> Any:
    return {"__path__": str(value)} if isinstance(value, Path) else value


class LanClient:
    """The SDK's Client, one namespace away: `client.job(id)` runs `Client.job(id)` in the driver."""

    def __init__(self, host: Host, address: str, env: dict[str, str], log: Path) -> None:
        self._log = log
        self._proc = subprocess.Popen(
            host.command(python(), str(DRIVER), address),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("ab"),
            env={**os.environ, **env},
        )

    def call(self, method: str, *args: Any, timeout: float = 120.0, **kwargs: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        body = {"method": method, "args": [_arg(a) for a in args], "kwargs": {k: _arg(v) for k, v in kwargs.items()}}
        self._proc.stdin.write((json.dumps(body) + "\n").encode())
        self._proc.stdin.flush()
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            raise TimeoutError(f"{method}{args} gave no answer in {timeout}s (driver log: {self._log})")
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the LAN driver exited; its log:\n{self._log.read_text(errors='replace')[-3000:]}")
        answer = json.loads(line)
        if "error" in answer:
            raise DriverError(answer["error"], answer["type"])
        return answer["ok"]

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self.call(method, *args, **kwargs)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)


class LanCluster:
    """A controller on host `controller_host`, an agent on each of `agent_hosts`."""

    def __init__(self, lan: Lan, tmp: Path, controller_host: str = "ctl") -> None:
        self.lan, self.tmp = lan, tmp
        self.env = {
            "TENSORFLEET_CLUSTER_TOKEN": f"lan-cluster-{secrets.token_hex(8)}",
            "TENSORFLEET_CONTROLLER_TOKEN": f"lan-client-{secrets.token_hex(8)}",
            "TENSORFLEET_KNOWN_CONTROLLERS": str(tmp / "known_controllers.json"),
            # the controller's connection file: every simulated LAN's controller is at the same address, so two
            # running at once (a test beside a benchmark) must not read each other's certificate
            "TENSORFLEET_RUNTIME_DIR": str(tmp / "runtime"),
        }
        self.controller_host = lan.hosts[controller_host]
        self.agents: dict[str, LanProcess] = {}
        self.data_dirs: dict[str, Path] = {}
        self.controller: LanProcess | None = None
        self._client: LanClient | None = None

    @property
    def address(self) -> str:
        return f"{self.controller_host.address}:{CONTROLLER_PORT}"

    def add_agent(self, host_name: str, cpu_slots: int = 1, data_dir: Path | None = None, *extra: str) -> LanProcess:
        host = self.lan.hosts[host_name]
        data_dir = data_dir or self.tmp / f"agent-{host_name}"
        self.data_dirs[host_name] = data_dir
        argv = [
            python(), "-m", "tensorfleet_agent", "--host", host.address, "--port", str(AGENT_PORT),
            "--name", f"agent-{host_name}", "--data-dir", str(data_dir), "--interfaces", host.address,
            "--cpu-slots", str(cpu_slots), "--spare-workers", "0",
            "--ready-file", str(self.tmp / f"agent-{host_name}.ready"), *extra,
        ]  # fmt: skip
        agent = LanProcess(
            f"agent-{host_name}", host, argv, self.env, self.tmp / f"agent-{host_name}.log",
            self.tmp / f"agent-{host_name}.ready",
        )  # fmt: skip
        self.agents[host_name] = agent
        return agent

    def add_controller(self, *extra: str) -> LanProcess:
        host = self.controller_host
        argv = [
            python(), "-m", "tensorfleet_desktop", "serve", "--host", host.address, "--port", str(CONTROLLER_PORT),
            "--data-dir", str(self.tmp / "controller"), "--interfaces", host.address, "--no-local-agent",
            "--ready-file", str(self.tmp / "controller.ready"), *extra,
        ]  # fmt: skip
        self.controller = LanProcess(
            "controller", host, argv, self.env, self.tmp / "controller.log", self.tmp / "controller.ready"
        )
        return self.controller

    def start(self) -> LanCluster:
        """Agents first (in parallel), then the controller, which finds them over multicast."""
        for agent in self.agents.values():
            agent.spawn()
        for agent in self.agents.values():
            agent.wait_ready()
        assert self.controller is not None
        self.controller.start()
        self.wait_online(len(self.agents))
        return self

    @property
    def client(self) -> LanClient:
        if self._client is None:
            self._client = LanClient(self.controller_host, self.address, self.env, self.tmp / "driver.log")
        return self._client

    def agent_record(self, host_name: str) -> dict[str, Any]:
        return next(a for a in self.client.agents() if a["name"] == f"agent-{host_name}")

    def wait_online(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            agents = self.client.agents()
            online = [a for a in agents if a["state"] == "ONLINE" and a["paired"]]
            if len(online) >= count:
                return online
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(online)} of {count} agents ONLINE after {timeout}s: {agents}")
            time.sleep(0.1)

    def history(self, job_id: str) -> list[dict[str, Any]]:
        """The job's stored events, checked whole against the agents' journals (see history.check_history)."""
        return check_history(self.client, job_id, self.data_dirs.values())

    def host_of(self, node_id: str) -> str:
        for name, agent in self.agents.items():
            if agent.info.get("node_id") == node_id:
                return name
        raise KeyError(node_id)

    def processes(self) -> list[LanProcess]:
        return [*self.agents.values(), *([self.controller] if self.controller else [])]

    def logs(self) -> dict[str, str]:
        out = {p.name: p.tail() for p in self.processes()}
        driver = self.tmp / "driver.log"
        if driver.exists():
            out["driver"] = driver.read_text(errors="replace")[-5000:]
        return out

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        everything = self.processes()
        for proc in everything:
            if proc.running:
                proc.terminate()
        for proc in everything:
            if proc.running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(20)
            proc.kill()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Any:
    """A size-limited tmpfs at `path` (a disk that fills up), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(path: Path) -> Path:
    """Write a filler file until the filesystem at `path` has no space left (1 MiB at a time, then 4 KiB)."""
    filler = path / "filler.bin"
    with filler.open("wb", buffering=0) as fh:  # unbuffered: nothing left to fail at close
        for chunk in (b"\0" * (1 << 20), b"\0" * 4096):
            with contextlib.suppress(OSError):
                while fh.write(chunk):
                    pass
    return filler
