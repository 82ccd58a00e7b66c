"""The agent's handle on one worker process (the other end is runtime/worker.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import psutil

log = logging.getLogger(__name__)

OutputCallback = Callable[[str, str], None]
_MAX_LINE = 64 * 1024
_MAX_EVENT = 16 << 20  # one event line from the worker, at most
_READ_BYTES = 1 << 16


class WorkerProcess:
    """A spawned worker: a command pipe in, an event pipe out, stdout/stderr as raw log lines."""

    def __init__(self, proc: asyncio.subprocess.Process, cmd: asyncio.WriteTransport, events: asyncio.StreamReader):
        self.proc = proc
        self.pid = proc.pid
        self._cmd = cmd
        self._events = events
        self._partial = b""  # the start of an event line not all read yet
        self.on_output: OutputCallback | None = None
        self._pumps = [asyncio.create_task(self._pump(name, stream)) for name, stream in self._streams()]

    @classmethod
    async def spawn(cls, env: dict[str, str], cwd: str, task_env: dict[str, str] | None = None) -> WorkerProcess:
        """Start a worker with the agent's `env` scrubbed and the task's own `task_env` on top (see
        worker_environment)."""
        loop = asyncio.get_running_loop()
        cmd_r, cmd_w = os.pipe()
        evt_r, evt_w = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *worker_command(cmd_r, evt_w),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(cmd_r, evt_w),
                start_new_session=True,  # own process group: cancel kills the whole tree
                env=worker_environment(env, task_env),
                cwd=cwd,
            )
        finally:
            os.close(cmd_r)
            os.close(evt_w)
        events = asyncio.StreamReader(limit=_MAX_EVENT)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(events), os.fdopen(evt_r, "rb", 0))
        cmd_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(cmd_w, "wb", 0))
        worker = cls(proc, cmd_transport, events)
        hello = await worker.next_messages(timeout=120.0)  # the worker says nothing else before its first command
        if [message.get("t") for message in hello] != ["ready"]:
            worker.kill()
            await worker.wait()
            raise RuntimeError(f"worker process did not start (exit code {proc.returncode})")
        return worker

    def _streams(self) -> list[tuple[str, asyncio.StreamReader]]:
        out = []
        if self.proc.stdout is not None:
            out.append(("stdout", self.proc.stdout))
        if self.proc.stderr is not None:
            out.append(("stderr", self.proc.stderr))
        return out

    async def _pump(self, name: str, stream: asyncio.StreamReader) -> None:
        """Turn raw fd output (C extensions, subprocesses) into log lines."""
        pending = b""
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > _MAX_LINE:
                lines.append(pending)
                pending = b""
            for raw in lines:
                self._emit(name, raw)
        if pending:
            self._emit(name, pending)

    def _emit(self, name: str, raw: bytes) -> None:
        line = raw[:_MAX_LINE].decode("utf-8", "replace").rstrip("\r")
        if self.on_output is not None:
            self.on_output(name, line)
        else:
            log.debug("worker %d %s: %s", self.pid, name, line)

    def send(self, command: dict[str, Any]) -> None:
        self._cmd.write((json.dumps(command) + "\n").encode())

    async def next_messages(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """The worker's events that have arrived, in order (one read for all of them, however many), or [] once
        its event pipe closed (it exited) or after `timeout` seconds."""
        while b"\n" not in self._partial:
            try:
                chunk = await asyncio.wait_for(self._events.read(_READ_BYTES), timeout)
            except TimeoutError:
                return []
            if not chunk:
                return []
            self._partial += chunk
            if len(self._partial) > _MAX_EVENT:
                raise ValueError(f"worker {self.pid} sent an event of over {_MAX_EVENT >> 20} MiB")
        *lines, self._partial = self._partial.split(b"\n")
        return [json.loads(line) for line in lines]

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def signal_worker(self, sig: int) -> None:
        """Signal the worker process alone (not the children a task started)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)

    async def terminate(self, grace: float = 1.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds."""
        self.signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            self.kill()
        await self.wait()

    async def wait(self) -> int:
        code = await self.proc.wait()
        self.signal_group(signal.SIGKILL)  # leftovers of the group (children the task started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._pumps, return_exceptions=True), 2.0)
        self._cmd.close()
        return code

    async def close(self) -> None:
        """Ask an idle worker to exit; kill it if it does not."""
        if self.alive:
            with contextlib.suppress(Exception):
                self.send({"op": "exit"})
            try:
                await asyncio.wait_for(self.proc.wait(), 2.0)
            except TimeoutError:
                self.kill()
        await self.wait()

    def rss_bytes(self) -> int:
        """Resident memory of the worker and every process it started."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total


CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# The agent's package-index settings (a mirror URL may carry a password): used by its own env builds (envs.py reads
# the agent's environment), never handed to user code.
INDEX_PREFIXES = ("UV_", "PIP_")


def worker_environment(env: dict[str, str], task_env: dict[str, str] | None = None) -> dict[str, str]:
    """What a worker (user code) starts with: the agent's environment `env` without any TENSORFLEET_* variable
    (the agent's secrets live there: cluster, join and controller tokens, store URIs with passwords, and its own
    settings), without the AWS credential variables (a controller's S3 keys must not reach jobs) and without the
    agent's uv / pip index settings (UV_INDEX_URL, PIP_INDEX_URL, ... may hold a mirror's password); then the
    task's own `task_env`, which may set AWS_* (the submitter's choice) but no TENSORFLEET_* name. The worker then
    sets TENSORFLEET_JOB_ID itself, on purpose (tensorfleet_agent.task reads it). Removing the variables is the
    protection: masking strings in output is not (a task can print a token reversed or encoded)."""
    out = {
        name: value
        for name, value in env.items()
        if not name.startswith(("TENSORFLEET_", *INDEX_PREFIXES)) and name not in CREDENTIAL_VARIABLES
    }
    out.update({name: value for name, value in (task_env or {}).items() if not name.startswith("TENSORFLEET_")})
    return out


def agent_command() -> list[str]:
    """How to start an agent daemon: `python -m tensorfleet_agent`, or the frozen executable's agent mode."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "--tensorfleet-agent"]
    return [sys.executable, "-m", "tensorfleet_agent"]


def worker_command(cmd_fd: int, evt_fd: int) -> list[str]:
    """How to start a worker, frozen (PyInstaller) or not."""
    args = ["--cmd-fd", str(cmd_fd), "--evt-fd", str(evt_fd), "--parent-pid", str(os.getpid())]
    if getattr(sys, "frozen", False):
        return [sys.executable, "--tensorfleet-worker", *args]
    return [sys.executable, "-m", "tensorfleet_agent.runtime.worker", *args]
