"""The task SDK's unix socket: how every process of a project's command reaches the runner (issue 19).

The runner listens on TENSORFLEET_SDK_SOCKET (`sdk.sock` in the task dir, or in a private folder under the temp dir
when that path is too long for a socket: 107 bytes at most); only this user may connect (mode 0600). Each process
that uses the SDK opens its own connection (a forked child its own, after the fork), so any number of them - forked
or spawned multiprocessing children, subprocesses, a launcher's ranks - report at once: one JSON object per line,
and the reply to a request goes back on the connection that asked.

SdkServer only moves lines: what a line means is its owner's `on_line` (project_relay.Relay), which returns the
reply to send, if any. One thread serves every connection (a selector), so lines are handled one at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SOCKET_NAME = "sdk.sock"
MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107  # sun_path's size less its terminating NUL
MAX_MESSAGE = 1 << 20  # one SDK line, at most (a metrics call with thousands of values fits)
MAX_DRAIN = 16 << 20  # bytes read from one connection after the command exited: a writer that never stops
_POLL_S = 0.2  # how often the loop looks at the command when no pidfd tells it it exited
_SEND_TIMEOUT_S = 10.0  # a reply the asking process does not read for this long is dropped with its connection

Reply = dict[str, Any]


def socket_path(task_dir: Path | None) -> tuple[str, str | None]:
    """Where to listen, and the private folder made for it (to remove at the end) when the task dir's path is too
    long (or task_dir is None: its file system takes no socket)."""
    if task_dir is not None:
        path = os.path.join(task_dir, SOCKET_NAME)
        if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
            return path, None
    import tempfile  # only for a long task dir

    for base in (tempfile.gettempdir(), "/tmp"):
        if len(os.fsencode(os.path.join(base, "tf-sdk-12345678", SOCKET_NAME))) <= MAX_SOCKET_PATH:
            folder = tempfile.mkdtemp(prefix="tf-sdk-", dir=base)  # mode 0700
            return os.path.join(folder, SOCKET_NAME), folder
    raise RuntimeError(f"no folder with a path short enough for the task SDK's socket (task dir {task_dir})")


class _Connection:
    __slots__ = ("buffer", "skipping", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.skipping = False  # the rest of a line over MAX_MESSAGE is dropped up to its end


class SdkServer:
    """Listens for the SDK's connections until the command exits; `on_line` gets each line, returns the reply."""

    def __init__(self, task_dir: Path, on_line: Callable[[bytes], Reply | None], note: Callable[[str], None]) -> None:
        self.on_line = on_line
        self.note = note
        self.connections: dict[int, _Connection] = {}
        self.path, self._folder = socket_path(task_dir)
        try:
            self.listener = self._listen()
        except OSError:
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)
                raise
            self.path, self._folder = socket_path(None)  # a task dir whose file system takes no socket
            self.listener = self._listen()

    def _listen(self) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # an earlier attempt's, in a reused task dir
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
            os.chmod(self.path, 0o600)  # before listen(): nobody can connect in between
            listener.listen(socket.SOMAXCONN)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        return listener

    def serve(self, proc: subprocess.Popen[bytes]) -> int:
        """Relay until the command exits, then what its processes had sent by then; its exit code."""
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, None)
        pidfd = -1
        with contextlib.suppress(OSError, AttributeError):
            pidfd = os.pidfd_open(proc.pid)
            selector.register(pidfd, selectors.EVENT_READ, "exit")
        try:
            while proc.poll() is None:
                for key, _ in selector.select(timeout=_POLL_S if pidfd < 0 else None):
                    if key.data is None:
                        self._accept(selector)
                    elif isinstance(key.data, _Connection):
                        self._read(key.data, selector)
            self._drain()
            return proc.returncode
        finally:
            selector.close()
            if pidfd >= 0:
                os.close(pidfd)

    def close(self) -> None:
        for conn in self.connections.values():
            conn.sock.close()
        self.connections.clear()
        self.listener.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    # ---- connections

    def _accept(self, selector: selectors.BaseSelector | None) -> bool:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:  # out of fds: said, the process retries nothing but the loop goes on
            self.note(f"could not accept a task SDK connection: {exc}")
            time.sleep(0.01)
            return False
        sock.setblocking(False)
        conn = _Connection(sock)
        self.connections[sock.fileno()] = conn
        if selector is not None:
            selector.register(sock, selectors.EVENT_READ, conn)
        return True

    def _drop(self, conn: _Connection, selector: selectors.BaseSelector | None) -> None:
        if selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(conn.sock)
        self.connections.pop(conn.sock.fileno(), None)
        conn.sock.close()

    def _read(self, conn: _Connection, selector: selectors.BaseSelector | None) -> int:
        """One read of a connection; the bytes read, 0 when there was nothing (yet) or it ended."""
        try:
            chunk = conn.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            chunk = b""
        if not chunk:
            if conn.buffer.strip() and not conn.skipping:  # a last line without its newline
                self._line(conn, conn.buffer, selector)
            self._drop(conn, selector)
            return 0
        self._feed(conn, chunk, selector)
        return len(chunk)

    def _feed(self, conn: _Connection, chunk: bytes, selector: selectors.BaseSelector | None) -> None:
        data = conn.buffer + chunk
        *lines, rest = data.split(b"\n")
        for line in lines:
            if conn.skipping:
                conn.skipping = False  # the end of the long line
            elif line.strip():
                self._line(conn, line, selector)
            if conn.sock.fileno() < 0:  # dropped while replying
                return
        if len(rest) > MAX_MESSAGE:
            if not conn.skipping:
                self.note(f"ignored an SDK message of over {MAX_MESSAGE >> 10} KiB")
            conn.skipping, rest = True, b""
        conn.buffer = rest

    def _line(self, conn: _Connection, line: bytes, selector: selectors.BaseSelector | None) -> None:
        reply = self.on_line(line)
        if reply is None:
            return
        try:
            _send_all(conn.sock, (json.dumps(reply) + "\n").encode())
        except OSError as exc:  # it exited meanwhile, or stopped reading
            if not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                self.note(f"could not answer a task SDK request ({exc}); its connection is closed")
            self._drop(conn, selector)

    def _drain(self) -> None:
        """After the command's exit: every connection still waiting, and what each had sent."""
        while self._accept(None):
            pass
        for conn in list(self.connections.values()):
            read = 0
            while read < MAX_DRAIN and conn.sock.fileno() >= 0:
                got = self._read(conn, None)
                if not got:
                    break
                read += got


def _send_all(sock: socket.socket, data: bytes) -> None:
    """Send on a non-blocking socket, waiting for room at most _SEND_TIMEOUT_S in all (TimeoutError after)."""
    view = memoryview(data)
    deadline = time.monotonic() + _SEND_TIMEOUT_S
    while view:
        try:
            view = view[sock.send(view, socket.MSG_NOSIGNAL) :]
        except (BlockingIOError, InterruptedError):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the asking process read no reply for 10 s") from None
            poll = select.poll()
            poll.register(sock, select.POLLOUT)
            poll.poll(left * 1000)
