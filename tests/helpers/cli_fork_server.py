"""Run `python -m tensorfleet_desktop ARGS` in a fresh process without paying for a fresh interpreter each time.

The suite runs a few hundred `tensorfleet` commands; each one used to spend ~0.4 s (on CI's 2 cores) starting Python
and importing what the CLI stands on (grpc, protobuf, cryptography, rich, the client) before doing its millisecond
of work. Here one server process imports those once; every command is a fork of it that takes the caller's stdin,
fresh stdout/stderr pipes, environment, working directory and argv, then runs `tensorfleet_desktop/__main__.py`
with runpy exactly as `python -m` does, importing the CLI's own modules (tensorfleet_desktop.cli.*) itself. So
each command is still its own process, with its own exit code (a negative one when a signal killed it), stdout,
stderr, the CLI's import-time look at its terminal and environment, and interpreter shutdown (atexit, flushing the
std streams); only the interpreter start and the imports below the CLI are shared. What a command imports lazily
(sklearn, onnx, ...) it still imports itself.

The server is a grandchild of the test process (it double-forks): it is suite infrastructure, not a process a test
left running (tests/helpers/suite_policy.py). It exits when the test process closes its end of the socket, which
the kernel does when the test process ends, however it ends.

TENSORFLEET_TEST_CLI_SUBPROCESS=1 runs every command as a plain subprocess instead (helpers/controller.py).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import locale
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_CLI = "tensorfleet_desktop.cli"
_MAX_REQUEST = 1 << 20  # argv + environment as JSON; SEQPACKET keeps each request one message


def _decode(data: bytes) -> str:
    """What subprocess.run(text=True) makes of a pipe's bytes: the locale's encoding, universal newlines."""
    text = data.decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


class CliForkServer:
    def __init__(self, log_path: Path) -> None:
        self._lock = threading.Lock()
        self._log_path = log_path
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with log_path.open("ab") as log:
                launcher = subprocess.Popen(
                    [sys.executable, __file__, str(theirs.fileno())],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=os.getcwd(),
                )
            if launcher.wait(60) != 0:
                raise RuntimeError(f"the CLI fork server did not start (exit {launcher.returncode}): see {log_path}")
        finally:
            theirs.close()
        self._sock.settimeout(120)
        try:
            ready = self._sock.recv(64)
        except OSError as exc:
            raise RuntimeError(f"the CLI fork server did not start: {exc}; see {log_path}") from exc
        finally:
            self._sock.settimeout(None)
        if ready != b"ready":
            raise RuntimeError(f"the CLI fork server did not start ({ready!r}): see {log_path}")

    def close(self) -> None:
        self._sock.close()  # the server sees EOF and exits; commands still running finish on their own
        with contextlib.suppress(OSError):
            if self._log_path.stat().st_size == 0:  # nothing went wrong: no log left behind
                self._log_path.unlink()

    def run(self, args: list[str], env: dict[str, str], timeout: float | None) -> subprocess.CompletedProcess[str]:
        """Like subprocess.run([sys.executable, "-m", "tensorfleet_desktop", *args], capture_output=True,
        text=True, timeout=timeout, env=env): raises subprocess.TimeoutExpired after killing the command."""
        cmd = [sys.executable, "-m", "tensorfleet_desktop", *args]
        request = json.dumps({"argv": list(args), "env": env, "cwd": os.getcwd()}).encode()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            with self._lock:
                socket.send_fds(self._sock, [request], [0, out_w, err_w, status_w])
        finally:
            for fd in (out_w, err_w, status_w):
                os.close(fd)
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks: dict[int, list[bytes]] = {out_r: [], err_r: [], status_r: []}
        with selectors.DefaultSelector() as selector:
            for fd in chunks:
                selector.register(fd, selectors.EVENT_READ)
            try:
                while selector.get_map():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise subprocess.TimeoutExpired(
                            cmd, timeout or 0, output=b"".join(chunks[out_r]), stderr=b"".join(chunks[err_r])
                        )
                    for key, _ in selector.select(left):
                        data = os.read(key.fd, 65536)
                        if data:
                            chunks[key.fd].append(data)
                        else:
                            selector.unregister(key.fd)
            except BaseException:  # a timeout, or the test interrupted: as subprocess.run, kill the command
                self._kill(chunks[status_r])
                raise
            finally:
                for fd in chunks:
                    os.close(fd)
        status = b"".join(chunks[status_r]).split()
        if len(status) != 2:
            raise RuntimeError(f"the CLI fork server lost the command {args}: status {status!r}")
        return subprocess.CompletedProcess(
            cmd, int(status[1]), _decode(b"".join(chunks[out_r])), _decode(b"".join(chunks[err_r]))
        )

    @staticmethod
    def _kill(status: list[bytes]) -> None:
        """Kill the command if it still runs: the status pipe has its pid and not yet its exit code (once that
        is there, the pid may belong to another process)."""
        lines = b"".join(status).splitlines()
        if len(lines) == 1:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(lines[0]), signal.SIGKILL)


def _command(sock: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    """In a fork of the server: fork the command, tell its pid, wait for it, tell its exit code."""
    stdin, out, err, status = fds
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # as in a fresh interpreter; and waitpid needs it
    pid = os.fork()
    if pid == 0:
        sock.close()
        os.close(status)
        for target, fd in ((0, stdin), (1, out), (2, err)):
            os.dup2(fd, target)
        for fd in {stdin, out, err} - {0, 1, 2}:
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        import runpy

        sys.argv = [str(Path(_package_main()).resolve()), *request["argv"]]
        # As `python -m tensorfleet_desktop`: __main__.py calls sys.exit(main()); SystemExit (or any exception)
        # unwinds out of this process's whole stack into the interpreter's own exit: its exit code, a traceback,
        # atexit and the std streams' final flush are the interpreter's, as for the real command.
        runpy.run_module("tensorfleet_desktop", run_name="__main__", alter_sys=True)
        sys.exit(0)
    try:
        for fd in (stdin, out, err):
            os.close(fd)
        with contextlib.suppress(BrokenPipeError):  # the caller gave up (a timeout): it killed the command
            os.write(status, f"{pid}\n".encode())
        _, wait_status = os.waitpid(pid, 0)
        with contextlib.suppress(BrokenPipeError):
            os.write(status, f"{os.waitstatus_to_exitcode(wait_status)}\n".encode())
    finally:
        os._exit(0)  # never back into the server's loop


def _package_main() -> str:
    import tensorfleet_desktop

    return os.path.join(os.path.dirname(tensorfleet_desktop.__file__), "__main__.py")


def _preload() -> None:
    """Import what `import tensorfleet_desktop.cli` imports, except the CLI's own modules (tensorfleet_desktop.cli.*):
    those run in each command, in its own environment and with its own stdout, as in a fresh interpreter (the CLI's
    consoles look at the terminal and $COLUMNS when their module is imported). What lies below them (libraries,
    protobuf messages, the client) has no import-time state that depends on the process: it is shared. The list
    comes from a throwaway fork that does the import, so it follows the code."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        import tensorfleet_desktop.cli  # noqa: F401

        os.write(write, "\n".join(sys.modules).encode())  # a pipe's buffer holds the few KiB
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        names = [n for n in pipe.read().decode().split() if n != "__main__" and not _per_command(n)]
    os.waitpid(pid, 0)
    tops = list(dict.fromkeys(n.split(".")[0] for n in names))
    for name in [*tops, *names]:  # packages first: they import their submodules in their own order
        if name not in sys.modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)
    loaded = [n for n in sys.modules if _per_command(n)]
    assert not loaded, f"preloading imported modules each command must import itself: {loaded}"


def _per_command(module: str) -> bool:
    return module == _CLI or module.startswith(_CLI + ".")


def _serve(fd: int) -> None:
    if os.fork() != 0:  # the launcher exits at once: the server is nobody's child in the test process
        os._exit(0)
    os.setsid()
    sock = socket.socket(fileno=fd)
    # as `python -m` from the caller's directory: sys.path[0] is that directory, not tests/helpers
    sys.path[0] = os.getcwd()
    _preload()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the per-command forks reap themselves
    sock.send(b"ready")
    while True:
        message, fds, _flags, _addr = socket.recv_fds(sock, _MAX_REQUEST, 4)
        if not message:  # the test process closed its end, or ended
            os._exit(0)
        if os.fork() == 0:
            _command(sock, json.loads(message), fds)
        for received in fds:
            os.close(received)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
