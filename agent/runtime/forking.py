"""The agent's handle on its fork server (the other end is runtime/forkserver.py).

`ForkServer.start` spawns it as a worker is spawned (own session, PDEATHSIG, the agent's secrets scrubbed, thread
caps at 1); `fork` hands it the new worker's pipe ends and gets back a `WorkerProcess` for a child that has said
ready. The fork server is the children's parent: it reports each one's exit code, which goes to its handle. If the
fork server itself dies, its children die with it (their PDEATHSIG): each is then reported killed by SIGKILL once
it is gone.

The next task's child is forked ahead (the spare): once a fork hands out its child, another is forked with the same
environment and waits, ready, for its first command. A task whose environment and imports it has takes it: the
fork, the child's setup and its hello (~5 ms of a noop task's ~14 ms on the dev box) are no longer on its path. It is
still a fresh child of the fork server, forked after the previous task's, never a reused worker. Spares are kept per
environment (at most MAX_SPARES): tasks alternating between two GPUs each find theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from tensorfleet_agent.runtime.process import Output, WorkerProcess, _Protocol, worker_environment

log = logging.getLogger(__name__)

_START_TIMEOUT = 120.0
#: Environments with a child forked ahead (see the module's docstring): a GPU agent's slots each have their own.
MAX_SPARES = 4
Env = frozenset[tuple[str, str]]


class ForkServer:
    def __init__(self, transport: asyncio.SubprocessTransport, protocol: _Protocol, ctl: socket.socket) -> None:
        self._transport = transport
        self.pid = transport.get_pid()
        self._ctl = ctl
        self._ids = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._children: dict[int, WorkerProcess | None] = {}  # None: forked, its handle not made yet
        self._codes: dict[int, int] = {}  # exits reported before the child's handle was made
        self._watches: set[asyncio.Task[None]] = set()  # children of a dead fork server, until they are gone
        self._ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.warmed: set[str] = set()  # modules asked for beyond the base set
        self.last_fork = time.monotonic()
        self._cwd = "/"  # where a spare child waits (a task's worker goes to its own directory when it runs)
        # the next task's child, forked ahead, per environment (the last used last): its fork and the imports it has
        self._spares: dict[Env, tuple[asyncio.Task[WorkerProcess], frozenset[str]]] = {}
        self._spare_pids: set[int] = set()  # children forked as spares, not taken (yet)
        self.returncode: int | None = None
        self._gone = asyncio.Event()
        self._idle = asyncio.Event()  # no child of it runs
        self._idle.set()
        protocol.on_exit = self._died
        asyncio.get_running_loop().add_reader(ctl.fileno(), self._readable)

    @classmethod
    async def start(cls, env: dict[str, str], cwd: str) -> ForkServer:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(loop),
                *forkserver_command(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=None,  # the agent's: a fork server's traceback is the agent's to log
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                env=worker_environment(env),
                cwd=cwd,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        server = cls(transport, protocol, ours)
        server._cwd = cwd
        try:
            await asyncio.wait_for(asyncio.shield(server._ready), _START_TIMEOUT)
        except BaseException:
            await server.close()
            raise
        return server

    @property
    def alive(self) -> bool:
        return self.returncode is None

    @property
    def busy(self) -> bool:
        """Children of it still run (closing it would kill them); the spare, which has no task, is not one."""
        return any(pid not in self._spare_pids for pid in self._children)

    def _readable(self) -> None:
        while True:
            try:
                data = self._ctl.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._lost("its control socket closed")
                return
            self._message(json.loads(data))

    def _message(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "ready":
            if not self._ready.done():
                self._ready.set_result(message)
        elif kind in ("forked", "error"):
            if kind == "forked":
                self._children[int(message["pid"])] = None
                self._check_idle()
            future = self._pending.pop(int(message.get("id") or 0), None)
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "exit":
            pid, code = int(message["pid"]), int(message["code"])
            worker = self._children.pop(pid, None)
            if worker is not None:
                worker.exited(code)
            else:
                self._codes[pid] = code
            self._spare_pids.discard(pid)
            self._check_idle()

    def _check_idle(self) -> None:
        if self.busy:
            self._idle.clear()
        else:
            self._idle.set()

    def _lost(self, why: str) -> None:
        """The fork server is gone: no more forks; its children die of their PDEATHSIG."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            loop.remove_reader(self._ctl.fileno())
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeError(f"the fork server is gone: {why}"))
        self._pending.clear()
        if not self._ready.done():
            self._ready.set_exception(RuntimeError(f"the fork server did not start: {why}"))
        for pid, worker in list(self._children.items()):
            if worker is not None:
                self._watch(worker)
            else:
                self._codes[pid] = -signal.SIGKILL
        self._children = {}
        self._idle.set()

    def _watch(self, worker: WorkerProcess) -> None:
        task = asyncio.get_running_loop().create_task(_await_gone(worker))
        self._watches.add(task)
        task.add_done_callback(self._watches.discard)

    def _died(self, code: int) -> None:
        self.returncode = code
        self._gone.set()
        if code != 0:
            log.warning("the fork server exited with code %d", code)
        self._lost(f"exit code {code}")

    async def fork(self, env: dict[str, str], cwd: str, warm: Sequence[str] = ()) -> WorkerProcess:
        """A fresh worker forked from the fork server, with `env` as its whole environment (scrubbed here) and
        `cwd`; the fork server imports `warm` first (kept for the next forks). The spare child when it was forked
        with this environment after these imports; then the next one is forked ahead."""
        if not self.alive:
            raise RuntimeError("the fork server is gone")
        env = worker_environment(env)
        key = frozenset(env.items())
        worker = await self._take_spare(key, warm)
        if worker is None:
            worker = await self._fork(env, cwd, warm)
        self.last_fork = time.monotonic()
        self._fork_spare(key, env)
        return worker

    async def _take_spare(self, key: Env, warm: Sequence[str]) -> WorkerProcess | None:
        """The spare child of this environment, ready, if it has `warm` (a family imported since it was forked: it
        is ended)."""
        spare, warmed = self._spares.pop(key, (None, frozenset[str]()))
        if spare is None:
            return None
        if warmed.issuperset(warm):
            try:
                worker = await asyncio.shield(spare)  # still being forked: sooner than a fork from now
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():  # the task is being cancelled, not the spare
                    _background(self._discard(spare))
                    raise
                return None  # the fork server is closing
            except Exception:  # its fork failed: fork now instead
                return None
            if worker.alive:
                self._spare_pids.discard(worker.pid)
                self._check_idle()
                return worker
        _background(self._discard(spare))
        return None

    def _fork_spare(self, key: Env, env: dict[str, str]) -> None:
        """A child forked ahead for the next task of this environment, unless one is there; at most MAX_SPARES
        environments keep one (a GPU agent's slots differ in CUDA_VISIBLE_DEVICES), the least recently used ends."""
        if not self.alive:
            return
        if key in self._spares:
            self._spares[key] = self._spares.pop(key)  # the last used last
            return
        while len(self._spares) >= MAX_SPARES:
            oldest, _ = self._spares.pop(next(iter(self._spares)))
            _background(self._discard(oldest))
        spare = asyncio.get_running_loop().create_task(self._fork(env, self._cwd, (), spare=True))
        spare.add_done_callback(_quiet)
        self._spares[key] = (spare, frozenset(self.warmed))

    async def _discard(self, spare: asyncio.Task[WorkerProcess]) -> None:
        """End a spare that will not be taken (it stays a spare, not a running task, until its exit)."""
        try:
            worker = await spare
        except Exception:
            return
        await worker.close()

    async def _fork(self, env: dict[str, str], cwd: str, warm: Sequence[str], spare: bool = False) -> WorkerProcess:
        loop = asyncio.get_running_loop()
        pipes = [os.pipe() for _ in range(4)]  # cmd, events, stdout, stderr
        theirs = [pipes[0][0], pipes[1][1], pipes[2][1], pipes[3][1]]
        self._ids += 1
        request_id = self._ids
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[request_id] = future
        request = {
            "op": "fork",
            "id": request_id,
            "env": env,  # scrubbed by fork(), the one caller (its spares too)
            "cwd": cwd,
            "warm": list(warm),
            "parent_pid": self.pid,
        }
        try:
            socket.send_fds(self._ctl, [json.dumps(request).encode()], theirs)
        except BaseException:
            self._pending.pop(request_id, None)
            for r, w in pipes:
                os.close(r)
                os.close(w)
            raise
        finally:
            for fd in theirs:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.warmed.update(warm)
        ours = [pipes[0][1], pipes[1][0], pipes[2][0], pipes[3][0]]
        try:
            reply = await future
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        if reply.get("t") != "forked":
            for fd in ours:
                os.close(fd)
            raise RuntimeError(f"the fork server could not fork: {reply.get('error', '')}")
        pid = int(reply["pid"])
        if spare:
            self._spare_pids.add(pid)
            self._check_idle()
        outputs: list[Output] = []
        for name, fd in (("stdout", ours[2]), ("stderr", ours[3])):
            reader = asyncio.StreamReader(limit=1 << 16)
            pipe, _ = await loop.connect_read_pipe(_reading(reader), os.fdopen(fd, "rb", 0))
            outputs.append((name, reader, pipe))
        worker = await WorkerProcess.connect(pid, ours[1], ours[0], outputs)
        if pid in self._codes:
            worker.exited(self._codes.pop(pid))
        elif pid in self._children:
            self._children[pid] = worker
        else:  # the fork server died meanwhile
            self._watch(worker)
        await worker.ready()
        return worker

    async def retire(self) -> None:
        """Stop the fork server once no child of it runs any more (a replacement serves the new tasks)."""
        await self._idle.wait()
        await self.close()

    async def close(self) -> None:
        """Stop the fork server (its children, if any, die with it: the spare too)."""
        spares, self._spares = self._spares, {}
        for spare, _ in spares.values():
            if not spare.done():
                spare.cancel()
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._ctl.fileno())
        self._ctl.close()  # EOF: it exits
        if self.alive:
            try:
                await asyncio.wait_for(self._gone.wait(), 2.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
        self._transport.close()


_tasks: set[asyncio.Task[None]] = set()


def _background(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _quiet(task: asyncio.Task[WorkerProcess]) -> None:
    """A spare's fork that failed is logged here (the next task forks its own)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("the spare child could not be forked: %s", task.exception())


def _reading(reader: asyncio.StreamReader) -> Callable[[], asyncio.StreamReaderProtocol]:
    return lambda: asyncio.StreamReaderProtocol(reader)


async def _await_gone(worker: WorkerProcess) -> None:
    """A child of a dead fork server: reparented and reaped by init; reported killed once its pid is gone."""
    while worker.alive:
        try:
            os.kill(worker.pid, 0)
        except ProcessLookupError:
            worker.exited(-signal.SIGKILL)
            return
        await asyncio.sleep(0.05)


def forkserver_command(ctl_fd: int) -> list[str]:
    """How to start the fork server, frozen (PyInstaller) or not."""
    args = ["--ctl-fd", str(ctl_fd), "--parent-pid", str(os.getpid())]
    if getattr(sys, "frozen", False):
        return [sys.executable, "--tensorfleet-forkserver", *args]
    return [sys.executable, "-m", "tensorfleet_agent.runtime.forkserver", *args]
