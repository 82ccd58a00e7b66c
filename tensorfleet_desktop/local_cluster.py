"""Find the controller, or start `tensorfleet serve` (with its local agent) detached when none answers.

The desktop app calls this so a first double-click is already a one-machine cluster; the controller runs
in its own session, so closing the window leaves it (and its jobs) running.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tensorfleet_agent.rpc.server import is_loopback
from tensorfleet_desktop.client import AsyncClient, ControllerUnreachable
from tensorfleet_desktop.controller.app import default_data_dir

START_TIMEOUT = 90.0


@dataclass(frozen=True)
class Connection:
    address: str
    started: bool  # True when this call started the controller
    pid: int = 0
    log_path: Path | None = None

    def describe(self) -> str:
        if self.started:
            return f"started a local controller on {self.address} (pid {self.pid}, log {self.log_path})"
        return f"connected to the controller on {self.address}"


class StartFailed(RuntimeError):
    """The detached controller exited or did not come up; the message quotes its log."""


def serve_command(
    host: str, port: int, ready_file: Path, data_dir: Path | None, extra: tuple[str, ...] = ()
) -> list[str]:
    """How to run `tensorfleet serve`, from a source install or a frozen (PyInstaller) executable."""
    base = [sys.executable] if getattr(sys, "frozen", False) else [sys.executable, "-m", "tensorfleet_desktop"]
    cmd = [*base, "serve", "--host", host, "--port", str(port), "--ready-file", str(ready_file)]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    return cmd + list(extra)


async def answers(address: str, timeout: float = 2.0) -> bool:
    client = AsyncClient(address, timeout=timeout)
    try:
        await client.info()
        return True
    except ControllerUnreachable:
        return False
    finally:
        await client.close()


def start_detached(
    address: str, data_dir: Path | None = None, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Spawn the controller in a new session (it survives the app); returns (process, ready file, log)."""
    host, _, port = address.rpartition(":")
    base = data_dir or default_data_dir()
    base.mkdir(parents=True, exist_ok=True)
    log_path = base / "serve.log"
    ready = base / f"serve-{os.getpid()}-{time.monotonic_ns()}.ready"
    ready.unlink(missing_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            serve_command(host, int(port), ready, data_dir, extra),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return proc, ready, log_path


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def connect_or_start(
    address: str, data_dir: Path | None = None, extra: tuple[str, ...] = (), timeout: float = START_TIMEOUT
) -> Connection:
    """Connect to `address`; when nothing answers there and it is on this machine, start a controller."""
    if await answers(address):
        return Connection(address, started=False)
    host = address.rpartition(":")[0]
    if not is_loopback(host):
        raise ControllerUnreachable(f"no TensorFleet controller answers at {address}")
    proc, ready, log_path = start_detached(address, data_dir, extra)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if ready.exists() and await answers(address):
                return Connection(address, started=True, pid=proc.pid, log_path=log_path)
            if proc.poll() is not None:
                if await answers(address):  # another app instance won the race for the port
                    return Connection(address, started=False)
                raise StartFailed(
                    f"`tensorfleet serve` exited with status {proc.returncode}; its log {log_path} ends:\n"
                    + _log_tail(log_path)
                )
            await asyncio.sleep(0.2)
    finally:
        ready.unlink(missing_ok=True)
    proc.terminate()
    raise StartFailed(f"`tensorfleet serve` did not answer within {timeout:.0f} s; see {log_path}")
