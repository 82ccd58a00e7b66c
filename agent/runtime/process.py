"""The agent's handle on one worker process (the other end is runtime/worker.py)."""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import termios
import time
from collections.abc import Callable
from typing import Any

import psutil

from tensorfleet_agent.runtime.commands import CREDENTIAL_VARIABLES as CREDENTIAL_VARIABLES
from tensorfleet_agent.runtime.commands import agent_command as agent_command

log = logging.getLogger(__name__)

OutputCallback = Callable[[str, str], None]
_MAX_LINE = 64 * 1024
_MAX_EVENT = 16 << 20  # one event line from the worker, at most
_READ_BYTES = 1 << 16
# What a worker wrote before it exited has been read by then. A process that escaped it (its own session, a daemon)
# and was not killed may hold its pipes for ever: they are closed on our side then (EOF for the readers).
_AFTER_EXIT = 1.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_KILL_ROUNDS_S = 1.0  # kill_descendants gives up on processes that SIGKILL has not ended by then (disk sleep)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The worker's pipes, and a call the moment the worker itself has exited: asyncio's Process.wait() (Python
    3.11) also waits for every pipe to close, which a process that escaped the worker may never do."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=_READ_BYTES, loop=loop)
        self.transport: asyncio.SubprocessTransport | None = None
        self.returncode: int | None = None
        self.on_exit: Callable[[int], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport

    def process_exited(self) -> None:
        super().process_exited()
        assert self.transport is not None
        self.returncode = self.transport.get_returncode()
        if self.on_exit is not None and self.returncode is not None:
            self.on_exit(self.returncode)


Output = tuple[str, asyncio.StreamReader, asyncio.BaseTransport | None]  # name, reader, its pipe (closed at exit)


class WorkerProcess:
    """A worker: a command pipe in, an event pipe out, stdout/stderr as raw log lines. The worker is a child
    subreaper (worker.py): what its task starts, also in a session of its own, stays under it while it lives.
    Spawned (`spawn`), or forked from the fork server (runtime/forking.py), which reports its exit code."""

    def __init__(
        self,
        pid: int,
        cmd: asyncio.WriteTransport,
        events: asyncio.StreamReader,
        events_pipe: asyncio.BaseTransport | None,
        outputs: list[Output],
    ):
        self.pid = pid
        self.returncode: int | None = None
        self.forked = False  # forked from the fork server (parked only for a built-in family's next task)
        self.first_rss = 0  # its resident bytes after its first task, once parked (executor._lean)
        self.versions: dict[str, str] = {}  # the package versions it trains with, from its hello
        self._cmd = cmd
        self._events = events
        self._events_pipe = events_pipe
        self._outputs = outputs
        self._partial = b""  # the start of an event line not all read yet
        self.on_output: OutputCallback | None = None
        self._pumps = [asyncio.create_task(self._pump(name, stream)) for name, stream, _pipe in outputs]
        self._exit = asyncio.Event()  # set once the worker process itself has exited
        self._known: list[psutil.Process] = []  # its descendants at the last look (terminate): killed at its exit
        # Its last task said it left no process and no other thread (worker.alone): nothing can have appeared under
        # it since, so ending it needs no search of the process table. Unknown (False) while a task runs.
        self.alone = False
        self._statm = -1  # /proc/<pid>/statm, open while the worker lives (own_rss): -1 until then, or once gone

    def exited(self, code: int) -> None:
        """The worker process has exited with `code` (negative: killed by that signal)."""
        self._close_statm()
        if self._exit.is_set():
            return
        self.returncode = code
        self._exit.set()
        asyncio.get_running_loop().call_later(_AFTER_EXIT, self._close_pipes)

    def _close_pipes(self) -> None:
        """EOF for the readers of the worker's pipes that a process which escaped it still holds."""
        for _name, _stream, pipe in self._outputs:
            if pipe is not None:
                pipe.close()
        events = self._events_pipe
        if isinstance(events, asyncio.ReadTransport) and not events.is_closing():
            if not events.is_reading():  # paused: the relay is behind, events of the task wait in the pipe
                asyncio.get_running_loop().call_later(_AFTER_EXIT, self._close_pipes)
                return
            events.close()

    @classmethod
    async def spawn(cls, env: dict[str, str], cwd: str, task_env: dict[str, str] | None = None) -> WorkerProcess:
        """Start a worker with the agent's `env` scrubbed and the task's own `task_env` on top (see
        worker_environment)."""
        loop = asyncio.get_running_loop()
        cmd_r, cmd_w = os.pipe()
        evt_r, evt_w = os.pipe()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(loop),
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
        outputs: list[Output] = []
        for fd, name, stream in ((1, "stdout", protocol.stdout), (2, "stderr", protocol.stderr)):
            if stream is not None:
                outputs.append((name, stream, transport.get_pipe_transport(fd)))
        worker = await cls.connect(transport.get_pid(), evt_r, cmd_w, outputs)
        protocol.on_exit = worker.exited
        if protocol.returncode is not None:
            worker.exited(protocol.returncode)
        await worker.ready()
        return worker

    @classmethod
    async def connect(cls, pid: int, evt_r: int, cmd_w: int, outputs: list[Output]) -> WorkerProcess:
        """The handle on worker `pid` from the agent's ends of its event and command pipes (it owns them now)."""
        loop = asyncio.get_running_loop()
        events = asyncio.StreamReader(limit=_MAX_EVENT)
        events_pipe, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(events), os.fdopen(evt_r, "rb", 0)
        )
        cmd_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(cmd_w, "wb", 0))
        return cls(pid, cmd_transport, events, events_pipe, outputs)

    async def ready(self) -> None:
        """Wait for the worker's hello; it says nothing else before its first command."""
        hello = await self.next_messages(timeout=120.0)
        if [message.get("t") for message in hello] != ["ready"]:
            self.kill()
            code = await self.wait()
            raise RuntimeError(f"worker process did not start (exit code {code})")
        versions = hello[0].get("versions")
        if isinstance(versions, dict):
            self.versions = {str(k): str(v) for k, v in versions.items()}

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

    async def drain_output(self, rounds: int = 64) -> None:
        """Emit what the worker's stdout/stderr pipes hold now, before its task's end is journaled. What a task wrote
        there (a project's command, C code) came before its `done`, but on other pipes than its events: read in the
        same loop iteration as the `done`, its lines were still to be split by the pumps (run after the relay) and
        were dropped once on_output was unset; more than a pipe's worth may still be in the kernel."""
        for _ in range(rounds):  # a bound, not a wait: a process left under the worker may write on and on
            await asyncio.sleep(0)  # the pumps woken with the `done` run first; a paused transport reads again
            if not any(_unread(pipe) for _name, _stream, pipe in self._outputs):
                return

    def send(self, command: dict[str, Any]) -> None:
        if command.get("op") == "run":
            self.alone = False
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
        return self.returncode is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def signal_worker(self, sig: int) -> None:
        """Signal the worker process alone (not the children a task started)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the worker's process group (see kill_tree for all its task started)."""
        self.signal_group(signal.SIGKILL)

    async def kill_tree(self) -> None:
        """SIGKILL the worker and every process under it, also those its task started in a session of their own or
        as a daemon (orphans come back to the worker, a child subreaper). The worker is stopped first, so that
        nothing new starts meanwhile and nothing is orphaned to init before it is found."""
        if self.alive and not self.alone:
            self._known = await asyncio.to_thread(kill_descendants, self.pid, True)
        self.kill()

    async def kill_leftovers(self) -> int:
        """SIGKILL what the last task left running under this (idle, reusable) worker; how many processes."""
        if not self.alive or self.alone:
            return 0
        return len(await asyncio.to_thread(kill_descendants, self.pid, False))

    async def terminate(self, grace: float = 1.0) -> None:
        """SIGTERM the process group and whatever else the task started (a session of its own, a daemon), SIGKILL
        all of it after `grace` seconds (at once once the worker has exited: see wait)."""
        if self.alive:
            self._known = await asyncio.to_thread(_descendants, self.pid)
        self.signal_group(signal.SIGTERM)
        for proc in self._known:
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(proc.pid) != self.pid:  # the group has had its SIGTERM
                    proc.terminate()
        try:
            await asyncio.wait_for(self._exit.wait(), grace)
        except TimeoutError:
            await self.kill_tree()
        await self.wait()

    async def wait(self) -> int:
        """The worker's exit code once the worker has exited (not once all its pipes have closed: a process that
        escaped it may hold them), its leftovers killed and its output read (at most _AFTER_EXIT after its exit)."""
        await self._exit.wait()
        self.signal_group(signal.SIGKILL)  # leftovers of the group (children the task started)
        for proc in self._known:  # and of what else it had started, found before it exited
            with contextlib.suppress(psutil.Error):
                proc.kill()
        await asyncio.gather(*self._pumps, return_exceptions=True)  # ended by _close_pipes at the latest
        self._cmd.close()
        code = self.returncode
        assert code is not None  # set with _exit
        return code

    async def close(self) -> None:
        """Ask an idle worker to exit; kill it and what is under it if it does not."""
        if self.alive:
            with contextlib.suppress(Exception):
                self.send({"op": "exit"})
            try:
                await asyncio.wait_for(self._exit.wait(), 2.0)
            except TimeoutError:
                await self.kill_tree()
        await self.wait()

    def own_rss(self) -> int:
        """Resident bytes of the worker process alone (0 once it is gone): one small read, where rss_bytes searches
        the process table for what it started. Read again and again from one open file (the executor asks after
        each task): a pread, no open and close; the file names the process itself, never one that took its pid."""
        if self._statm < 0 and self.returncode is None:
            with contextlib.suppress(OSError):
                self._statm = os.open(f"/proc/{self.pid}/statm", os.O_RDONLY)
        if self._statm >= 0:
            try:
                return int(os.pread(self._statm, 256, 0).split()[1]) * _PAGE
            except (OSError, ValueError, IndexError):  # gone (ESRCH): read by its path as below, which says so
                self._close_statm()
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as fh:
                return int(fh.read().split()[1]) * _PAGE
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, IndexError):  # no /proc (not Linux)
            try:
                return int(psutil.Process(self.pid).memory_info().rss)
            except psutil.Error:
                return 0

    def _close_statm(self) -> None:
        if self._statm >= 0:
            fd, self._statm = self._statm, -1
            os.close(fd)

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


def _unread(pipe: asyncio.BaseTransport | None) -> int:
    """Bytes waiting in an output pipe that its transport has not read yet."""
    file = pipe.get_extra_info("pipe") if pipe is not None and not pipe.is_closing() else None
    if file is None:
        return 0
    count = array.array("i", [0])
    try:
        fcntl.ioctl(file.fileno(), termios.FIONREAD, count, True)
    except (OSError, ValueError):
        return 0
    return count[0]


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _live(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_descendants(pid: int, stop_root: bool) -> list[psutil.Process]:
    """SIGKILL every live descendant of process `pid`, in rounds until none is left (one may start another
    meanwhile; orphans come back to `pid` when it is a child subreaper). `stop_root`: SIGSTOP `pid` first, so that
    it starts nothing new (the caller kills it next). Blocking (reads /proc): call it in a thread. What was found."""
    try:
        root = psutil.Process(pid)
        if stop_root:
            root.suspend()
    except psutil.Error:
        return []
    found: list[psutil.Process] = []
    deadline = time.monotonic() + _KILL_ROUNDS_S
    while True:
        try:
            alive = [proc for proc in root.children(recursive=True) if _live(proc)]
        except psutil.Error:
            break
        if not alive:
            break
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        found.extend(proc for proc in alive if proc not in found)
        if time.monotonic() > deadline:
            log.warning("process %d: %d process(es) under it did not end on SIGKILL", pid, len(alive))
            break
        time.sleep(0.005)
    return found


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


def worker_command(cmd_fd: int, evt_fd: int) -> list[str]:
    """How to start a worker, frozen (PyInstaller) or not."""
    args = ["--cmd-fd", str(cmd_fd), "--evt-fd", str(evt_fd), "--parent-pid", str(os.getpid())]
    if getattr(sys, "frozen", False):
        return [sys.executable, "--tensorfleet-worker", *args]
    return [sys.executable, "-m", "tensorfleet_agent.runtime.worker", *args]
