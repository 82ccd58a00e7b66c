"""Real database and object-store servers for the backend suites: SecantusDB (MongoDB wire protocol) and
nanio (S3). Or the real thing, when TENSORFLEET_TEST_MONGODB_URI / TENSORFLEET_TEST_S3_URI name one."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Path, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"{what} did not listen on {port} in {timeout}s:\n{log.read_text()}")


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (pip install -e '.[dev]')")
    return found


class ServerProcess:
    def __init__(self, command: list[str], port: int, log: Path, what: str, env: dict[str, str] | None = None) -> None:
        self.port, self.log, self.what = port, log, what
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )
        _wait_for_port(self.proc, port, log, what)

    def pause(self) -> None:
        self.proc.send_signal(19)  # SIGSTOP: the server hangs, connections stay open

    def resume(self) -> None:
        self.proc.send_signal(18)  # SIGCONT

    def stop(self) -> None:
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_secantus(workdir: Path) -> tuple[ServerProcess, str]:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    command = [_tool("secantusd-py"), "--host", "127.0.0.1", "--port", str(port), "--storage-path", ":memory:"]
    server = ServerProcess(command, port, workdir / "secantus.log", "SecantusDB")
    return server, f"mongodb://127.0.0.1:{port}"


S3_KEY, S3_SECRET = "tensorfleet-test", "tensorfleet-test-secret"


def start_nanio(workdir: Path) -> tuple[ServerProcess, str]:
    port = free_port()
    data = workdir / "nanio-data"
    data.mkdir(parents=True, exist_ok=True)
    command = [_tool("nanio"), "serve", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)]
    env = {"NANIO_ACCESS_KEY": S3_KEY, "NANIO_SECRET_KEY": S3_SECRET}
    server = ServerProcess(command, port, workdir / "nanio.log", "nanio", env)
    return server, f"127.0.0.1:{port}"
