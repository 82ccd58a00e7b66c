"""The fork server: `python -m tensorfleet_agent.runtime.forkserver` (docs/architecture.md, 'Warm workers').

Started by the agent like a worker (spawned, never forked from the daemon; its own session; PR_SET_PDEATHSIG), with
the agent's secrets scrubbed from its environment and every thread cap at 1. It imports every task's runtime, says it
is ready, then does nothing but fork (and, once idle, import numpy): each task's worker is a child forked from it, so
it starts warm (interpreter up, modules imported) yet fresh (nothing a previous task set, in any module, is there:
that task ran in another child).

It has one thread and no gRPC, asyncio or BLAS thread pool, so fork() is safe. threadpoolctl's search of the loaded
native pools is done here too, once per set of imports, not in each child (_Pools). The agent talks to it on a unix
SOCK_SEQPACKET socket: one JSON request per datagram, the new worker's pipe ends passed with SCM_RIGHTS; the
replies are the forked pid and, later, each child's exit code (the fork server is the children's parent and reaps
them). A request may name modules to import first ("warm"): a family's libraries, learned from its first task, so
the next task of that family forks with them loaded. Torch is never among them (CUDA must be set up per task).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import sys
from typing import Any

from tensorfleet_agent import task as task_api
from tensorfleet_agent.runtime import worker

#: Imported before the fork server says ready: every task's runtime.
BASE_MODULES = (
    "tensorfleet_agent.task",
    "tensorfleet_agent.workloads.registry",
    "tensorfleet_agent.workloads.diagnostic",
    "tensorfleet_agent.workloads.script",
    "tensorfleet_agent.workloads.project",
    "tensorfleet_agent.runtime.process",
)
#: Imported once the fork server is ready and has had no request for IDLE_BEFORE_LATER: numpy (with one BLAS thread,
#: see _caps), which most tasks use. Before, the first task of a cold agent waited for it (~0.1 s of a 0.8 s cold
#: start on a 2-core box); a child forked before it is imported imports it itself if its task needs it.
LATER_MODULES = ("numpy",)
IDLE_BEFORE_LATER = 0.25
#: What must never be imported here: CUDA is initialised per task, after CUDA_VISIBLE_DEVICES is set.
FORBIDDEN = ("torch", "tensorflow", "jax")
_MAX_REQUEST = 1 << 20
_FDS = 4  # cmd (read end), events (write end), stdout, stderr (write ends)


def _import(modules: list[str]) -> list[str]:
    """Import what is asked, skipping the forbidden and what fails (the task will report that itself)."""
    failed = []
    for name in modules:
        if name.split(".")[0] in FORBIDDEN:
            failed.append(name)
            continue
        try:
            if name == "skops.io":
                from tensorfleet_agent.workloads.skops_files import skops_io

                skops_io()
            else:
                importlib.import_module(name)
        except Exception:  # a missing optional package is the task's to report
            failed.append(name)
    return failed


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


class _Pools:
    """threadpoolctl's view of the native thread pools loaded here (BLAS, OpenMP), found once in the fork server and
    inherited by every child, which only sets their caps: the search of the loaded libraries (and threadpoolctl's
    import) cost a child 1 ms, and 30 ms on a loaded box. Searched again after an import may have loaded more."""

    def __init__(self) -> None:
        self._controller: Any = None
        self._modules = -1  # len(sys.modules) when it was made

    def refresh(self) -> None:
        """In the fork server, before a fork: make the controller if imports happened since the last one."""
        if "numpy" not in sys.modules or len(sys.modules) == self._modules:
            return
        self._modules = len(sys.modules)
        try:
            from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

            self._controller = ThreadpoolController()
        except Exception:  # no threadpoolctl: a child leaves the caps of the pools loaded here at 1
            self._controller = None

    def raise_caps(self, threads: str) -> None:
        """In a child: raise the caps of the pools loaded in the fork server (at 1 there) to the slot's. Libraries
        loaded later read the environment, which holds the slot's caps already."""
        if threads in ("", "1") or self._controller is None:
            return
        with contextlib.suppress(Exception):
            self._controller.limit(limits=int(threads))


_pools = _Pools()


def _child(request: dict[str, Any], fds: list[int], ctl: socket.socket, wakeup: tuple[int, int]) -> None:
    """In the forked child: become a fresh worker for one task, never return into the fork server's loop."""
    code = 70
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ctl.close()
        for fd in wakeup:
            os.close(fd)
        os.setsid()  # its own session and process group: cancel kills the task's whole tree
        cmd_fd, evt_fd, out_fd, err_fd = fds
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        os.environ.clear()
        os.environ.update(request["env"])  # the slot's thread caps, CUDA_VISIBLE_DEVICES: before anything loads them
        os.chdir(request["cwd"])
        _pools.raise_caps(os.environ.get("OMP_NUM_THREADS", ""))  # (numpy's random state: reseeded per task)
        code = worker.serve(cmd_fd, evt_fd, int(request["parent_pid"]))
    except BaseException:  # whatever happens, the child ends here
        with contextlib.suppress(Exception):
            import traceback

            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class _Server:
    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.wakeup = os.pipe()
        for fd in self.wakeup:
            os.set_blocking(fd, False)

    def send(self, message: dict[str, Any]) -> None:
        self.ctl.send(json.dumps(message).encode())

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.send({"t": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def fork(self, request: dict[str, Any], fds: list[int]) -> None:
        try:
            failed = _import([str(m) for m in request.get("warm", [])])
            if len(fds) != _FDS:
                raise ValueError(f"expected {_FDS} fds, got {len(fds)}")
            _pools.refresh()
            if _threads() != 1:  # an import started a thread: a fork would copy a lock some thread holds
                raise RuntimeError(f"the fork server has {_threads()} threads, it may not fork")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request, fds, self.ctl, self.wakeup)
            self.send({"t": "forked", "id": request["id"], "pid": pid, "failed": failed})
        except Exception as exc:  # the agent spawns a worker instead
            self.send({"t": "error", "id": request.get("id"), "error": f"{type(exc).__name__}: {exc}"})
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def run(self) -> int:
        signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)  # wakes the selector through the wakeup fd
        signal.set_wakeup_fd(self.wakeup[1])
        selector = selectors.DefaultSelector()
        selector.register(self.ctl, selectors.EVENT_READ, "ctl")
        selector.register(self.wakeup[0], selectors.EVENT_READ, "child")
        self.send({"t": "ready", "pid": os.getpid()})
        later = list(LATER_MODULES)
        while True:
            ready = selector.select(IDLE_BEFORE_LATER if later else None)
            if not ready and later:  # idle: the next deferred import, one module at a time
                _import([later.pop(0)])
                continue
            for key, _ in ready:
                if key.data == "child":
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wakeup[0], 512):
                            pass
                    self.reap()
                    continue
                data, fds, _flags, _addr = socket.recv_fds(self.ctl, _MAX_REQUEST, _FDS)
                if not data:  # the agent closed its end: leave (the children have their own PDEATHSIG parent: us)
                    return 0
                request = json.loads(data)
                if request.get("op") == "fork":
                    self.fork(request, fds)
                elif request.get("op") == "warm":
                    _import([str(m) for m in request.get("modules", [])])
            self.reap()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tensorfleet-forkserver")
    parser.add_argument("--ctl-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args(argv)
    worker.die_with_parent(args.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctl = socket.socket(fileno=args.ctl_fd)
    _import(list(BASE_MODULES))
    task_api.package_versions()  # read once here: every child has it (the reproducibility record of each task)
    _pools.refresh()
    return _Server(ctl).run()


if __name__ == "__main__":
    sys.exit(main())
