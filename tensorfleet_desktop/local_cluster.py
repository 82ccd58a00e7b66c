"""Find the controller, or start `tensorfleet serve` (with its local agent) detached when none answers.

The desktop app calls this so a first double-click is already a one-machine cluster; the controller runs
in its own session, so closing the window leaves it (and its jobs) running. It starts one only at the local
default address and only on a free data dir: a mistyped address must never turn into a second cluster.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tensorfleet_agent.datadir_lock import holder_of
from tensorfleet_agent.runtime.process import agent_command
from tensorfleet_desktop.client import DEFAULT_CONTROLLER, AsyncClient, Client, ControllerUnreachable, TensorFleetError
from tensorfleet_desktop.connection import TOKEN_ENV
from tensorfleet_desktop.controller.settings import default_data_dir

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


class NotStarting(StartFailed):
    """Nothing answers, and starting a controller here could make a second cluster: the message says what was
    found, so the user can fix the address or stop the other process, then retry."""


@dataclass(frozen=True)
class AddressCheck:
    """What answers at an address: "answering", "refused", "timed out", "unreachable" or "invalid"."""

    address: str
    status: str
    detail: str

    @property
    def answering(self) -> bool:
        return self.status == "answering"

    def describe(self) -> str:
        return f"{self.address}: {self.detail}"


def check_address(address: str, timeout: float = 3.0) -> AddressCheck:
    """Blocking (run it off the GUI thread): a TCP connect, then GetInfo, each within `timeout`."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return AddressCheck(address, "invalid", "not HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except ConnectionRefusedError:
        return AddressCheck(address, "refused", "connection refused (nothing listens on that port)")
    except TimeoutError:
        return AddressCheck(address, "timed out", f"no answer to a connection within {timeout:g} s")
    except OSError as exc:
        return AddressCheck(address, "unreachable", f"cannot connect: {exc.strerror or exc}")
    try:
        with Client(address, timeout=timeout) as client:
            info = client.info()
    except ControllerUnreachable as exc:
        if exc.code == "DEADLINE_EXCEEDED":
            return AddressCheck(
                address, "timed out", f"something accepts connections but does not answer within {timeout:g} s"
            )
        return AddressCheck(address, "unreachable", f"not a TensorFleet controller ({exc})")
    except TensorFleetError as exc:
        if exc.code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):  # a controller, refusing us without its token
            return AddressCheck(address, "answering", f"a TensorFleet controller answers, but refuses us: {exc}")
        if exc.code == "UNIMPLEMENTED":
            return AddressCheck(address, "unreachable", "a gRPC server answers, but it is not a TensorFleet controller")
        return AddressCheck(address, "unreachable", str(exc))
    return AddressCheck(address, "answering", f"TensorFleet controller {info.get('version', '?')} answering")


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
    address: str, data_dir: Path | None = None, extra: tuple[str, ...] = (), env: dict[str, str] | None = None
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
            env=env,
        )
    return proc, ready, log_path


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def connect_or_start(
    address: str,
    data_dir: Path | None = None,
    extra: tuple[str, ...] = (),
    timeout: float = START_TIMEOUT,
    local_address: str = DEFAULT_CONTROLLER,
) -> Connection:
    """Connect to `address`; when nothing answers there, start a controller only if `address` is the local
    default and its data dir is free. Otherwise NotStarting says what was found."""
    if await answers(address):
        return Connection(address, started=False)
    if address != local_address:
        found = await asyncio.to_thread(check_address, address)
        raise NotStarting(
            f"no TensorFleet controller at {found.describe()}. The app starts its own controller only at "
            f"{local_address}: check the address in Settings, or run `tensorfleet serve` there"
        )
    base = data_dir or default_data_dir()
    holder = await asyncio.to_thread(holder_of, base)
    if holder is not None:
        where = f"address {holder.address}" if holder.address else "not serving yet"
        raise NotStarting(
            f"nothing answers at {address}, and the data dir {base} is used by pid {holder.pid} ({where}): "
            f"not starting a second controller on it. Point Settings at {holder.address or 'that controller'}, "
            "or stop that process, then retry"
        )
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


# ---- the demo cluster (`scripts/demo` / `tensorfleet gui --demo` with a display)
#
# A controller (`serve --no-local-agent`) and two agents, each in a session of its own, so they outlive the
# command and its window. The agents watch the controller's pid (--exit-with-pid): whatever stops the controller
# (the app's Quit and stop, `tensorfleet shutdown`, a kill) stops them too, with no supervisor process to keep.

#: Not 50050: a developer's own controller keeps that one. TENSORFLEET_DEMO_PORT overrides it.
DEMO_PORT = 50055
DEMO_AGENTS = ("demo-agent-1", "demo-agent-2")
LOOPBACK = "127.0.0.1"


def demo_data_dir() -> Path:
    """Where the demo cluster keeps its store, agents and logs: $TENSORFLEET_DEMO_DIR, else next to the
    user's controller data dir (…/tensorfleet/demo)."""
    return Path(os.environ.get("TENSORFLEET_DEMO_DIR") or default_data_dir().parent / "demo")


def demo_port() -> int:
    return int(os.environ.get("TENSORFLEET_DEMO_PORT") or DEMO_PORT)


@dataclass(frozen=True)
class DemoCluster:
    address: str
    data_dir: Path
    started: bool  # False: it was already running and is reused
    controller_pid: int
    agent_pids: tuple[int, ...]

    @property
    def controller_dir(self) -> Path:
        return self.data_dir / "controller"

    def describe(self) -> str:
        how = "started" if self.started else "reusing"
        return (
            f"{how} the demo cluster on {self.address} (controller pid {self.controller_pid}, data in {self.data_dir})"
        )


def demo_cluster_token(data_dir: Path) -> str:
    """The demo's cluster token (0600 in its data dir, the same across restarts): its agents pair with its
    controller and no other."""
    path = data_dir / "cluster.token"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = f"tfdemo-{secrets.token_urlsafe(16)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def demo_agent_command(data_dir: Path, name: str, watch_pid: int, ready: Path | None = None) -> list[str]:
    """A demo agent: one CPU slot, mDNS on loopback only, exits when process `watch_pid` ends."""
    cmd = [*agent_command(), "--host", LOOPBACK, "--port", "0", "--name", name]
    cmd += ["--data-dir", str(data_dir / name), "--interfaces", LOOPBACK, "--cpu-slots", "1"]
    if ready is not None:
        cmd += ["--ready-file", str(ready)]
    return [*cmd, "--exit-with-pid", str(watch_pid)]


def _start_demo_agent(data_dir: Path, name: str, watch_pid: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    ready = data_dir / f"{name}.ready"
    ready.unlink(missing_ok=True)
    # Quit and stop means stop: a task the gone controller can no longer hear from gets 1 s, not the default 60
    cmd = [*demo_agent_command(data_dir, name, watch_pid, ready), "--drain-timeout", "1"]
    with (data_dir / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


async def start_demo_cluster(
    data_dir: Path | None = None, port: int | None = None, timeout: float = START_TIMEOUT
) -> DemoCluster:
    """The running demo cluster, or a new one: reused when its controller answers at the demo address (agents
    that are gone are started again), else started detached. Returns once the controller answers and each agent
    is serving; NotStarting when something else holds the port or the data dir, StartFailed when a process of
    it does not come up."""
    data_dir = (data_dir or demo_data_dir()).resolve()
    address = f"{LOOPBACK}:{port or demo_port()}"
    controller_dir = data_dir / "controller"
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    env = {
        **os.environ,
        "TENSORFLEET_CLUSTER_TOKEN": await asyncio.to_thread(demo_cluster_token, data_dir),
        "TENSORFLEET_MDNS_INTERFACES": LOOPBACK,
    }
    holder = await asyncio.to_thread(holder_of, controller_dir)
    controller: subprocess.Popen[bytes] | None = None
    if await _demo_answers(address, controller_dir):
        if holder is None or holder.address != address:
            raise NotStarting(
                f"something else answers at {address}, not the demo cluster of {data_dir}: "
                "set TENSORFLEET_DEMO_PORT to a free port"
            )
        pid = holder.pid
    elif holder is not None:
        raise NotStarting(
            f"the demo's data dir {controller_dir} is used by {holder.describe()}, which does not answer at "
            f"{address}: stop it, or set TENSORFLEET_DEMO_DIR"
        )
    else:
        extra = ("--no-local-agent", "--interfaces", LOOPBACK)
        controller, ready, log_path = start_detached(address, controller_dir, extra, env)
        pid = controller.pid
    # the agents start beside the controller (they need only its pid), so their start-up overlaps
    agents: dict[str, subprocess.Popen[bytes] | int] = {}
    for name in DEMO_AGENTS:
        running = await asyncio.to_thread(holder_of, data_dir / name)
        agents[name] = running.pid if running else _start_demo_agent(data_dir, name, pid, env)
    if controller is not None:
        pid = await _wait_for_controller(address, controller_dir, controller, ready, log_path, timeout)
    pids = [await _wait_for_agent(data_dir, name, agent, timeout) for name, agent in agents.items()]
    return DemoCluster(address, data_dir, controller is not None, pid, tuple(pids))


async def _wait_for_agent(data_dir: Path, name: str, agent: subprocess.Popen[bytes] | int, timeout: float) -> int:
    if isinstance(agent, int):
        return agent
    ready = data_dir / f"{name}.ready"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(ready.exists):
            return agent.pid
        if agent.poll() is not None:
            holder = await asyncio.to_thread(holder_of, data_dir / name)
            if holder is not None:  # a demo launched at the same moment started this agent first
                return holder.pid
            log = data_dir / f"{name}.log"
            raise StartFailed(f"demo agent {name} exited with status {agent.returncode}; {log} ends:\n{_log_tail(log)}")
        await asyncio.sleep(0.1)
    raise StartFailed(f"demo agent {name} did not start within {timeout:.0f} s; see {data_dir / f'{name}.log'}")


async def _demo_answers(address: str, controller_dir: Path) -> bool:
    """Whether a controller answers; one that refuses us is ours when its connection file is gone (the runtime
    dir is emptied at logout): the token in its data dir is then this process's to send."""
    try:
        return await answers(address)
    except TensorFleetError as exc:
        if exc.code not in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise
    token = controller_dir / "client.token"
    if TOKEN_ENV not in os.environ and await asyncio.to_thread(token.exists):
        os.environ[TOKEN_ENV] = (await asyncio.to_thread(token.read_text)).strip()
    return True


async def _wait_for_controller(
    address: str, controller_dir: Path, proc: subprocess.Popen[bytes], ready: Path, log_path: Path, timeout: float
) -> int:
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if await asyncio.to_thread(ready.exists) and await answers(address):
                return proc.pid
            if proc.poll() is not None:
                holder = await asyncio.to_thread(holder_of, controller_dir)
                if holder is not None and holder.address == address and await answers(address):
                    return holder.pid  # a demo started at the same moment won the race
                raise StartFailed(
                    f"the demo controller exited with status {proc.returncode}; its log {log_path} ends:\n"
                    + _log_tail(log_path)
                )
            await asyncio.sleep(0.1)
    finally:
        await asyncio.to_thread(ready.unlink, missing_ok=True)
    proc.terminate()
    raise StartFailed(f"the demo controller did not answer within {timeout:.0f} s; see {log_path}")
