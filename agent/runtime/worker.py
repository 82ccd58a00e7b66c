"""Worker process entry point: `python -m tensorfleet_agent.runtime.worker`.

Started by the agent (never forked from it), in its own process group, or forked from the fork server
(runtime/forkserver.py) for one task. Reads one JSON command per line from --cmd-fd and reports on --evt-fd.
A worker runs one task at a time; it may be reused for the next task of the same job, or of any job for a
built-in family (docs/architecture.md, 'Warm workers').
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import ctypes
import errno
import importlib
import io
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from tensorfleet_agent import task as task_api
from tensorfleet_agent.runtime.channel import EventChannel
from tensorfleet_agent.workloads.gpu_cap import ENV as GPU_MEMORY_FRACTION_ENV

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_FULL_BELOW = 1 << 20  # free bytes under which a failure is put down to a full disk
TRIAL_HOLD = 0.5  # seconds a bundled trial's lines may wait to be written together (a long trial's are not held)


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL us when the agent dies; close the race with a ppid check."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if parent_pid and os.getppid() != parent_pid:
        os._exit(70)


def _become_subreaper() -> None:
    """Orphans of what a task starts (a process in a session of its own, a daemon's double fork) become our
    children instead of init's: the agent finds them under this worker and kills them when the task ends."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def has_children() -> bool:
    """Whether this process has a child, running or a zombie: a few microseconds, where finding them means reading
    the whole process table (no /proc/PID/task/TID/children on many kernels). As a subreaper, a worker with no
    child has no descendant at all: what its task started and left would have come back to it."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)  # WNOWAIT: a zombie stays for its owner
    except ChildProcessError:
        return False
    except OSError:  # no waitid (not Linux): assume there may be some
        return True
    return True


def alone() -> bool:
    """No process under this worker and no Python thread but this one: nothing the task started can still start a
    process, so the agent need not search the process table for leftovers (a native pool, BLAS or OpenMP, starts
    none)."""
    return _thread._count() == 0 and not has_children()  # threads started from Python, threading's or raw


def _end_leftovers() -> None:
    """Before this worker exits on its own: kill what its task left running. Once we are gone the orphans would
    be init's, out of the agent's sight."""
    with contextlib.suppress(Exception):
        if not has_children():
            return
        from tensorfleet_agent.runtime.process import kill_descendants

        kill_descendants(os.getpid(), False)


class _LogStream(io.TextIOBase):
    """sys.stdout/sys.stderr replacement that turns complete lines into log events."""

    def __init__(self, channel: EventChannel, stream: str) -> None:
        self._channel = channel
        self._stream = stream
        self._buffer = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._channel.send({"t": "log", "stream": self._stream, "line": line})
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self._channel.send({"t": "log", "stream": self._stream, "line": self._buffer})
            self._buffer = ""


def _resolve(entry: str) -> Any:
    module, _, func = entry.partition(":")
    return getattr(importlib.import_module(module), func)


_busy = threading.Event()  # a task has come: a spare's preload stops at its next module


def _preload(modules: list[str]) -> None:
    """Import in the background: a task handed to this spare starts at once instead of waiting for all
    of it (a noop needs none of it; a task that needs a module still loading waits on that module only).
    Once a task has come the rest is left to it: what it needs it imports itself, and what it does not need
    (scikit-learn for a project's command) would only take the CPU and the GIL from its start."""
    for module in modules:
        if _busy.is_set():
            return
        with contextlib.suppress(Exception):
            if module == "skops.io":  # without the torch it would load (skops_files.skops_io)
                from tensorfleet_agent.workloads.skops_files import skops_io

                skops_io()
            else:
                importlib.import_module(module)


def _disk_full_note(exc: BaseException, task_dir: Path) -> str:
    """Name a full disk plainly: torch.save, for one, reports it as an obscure stream-writer error."""
    try:
        free = shutil.disk_usage(task_dir).free
    except OSError:
        return ""
    if (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or free < _FULL_BELOW:
        return f" (disk full on this agent: {free >> 10} KiB free at {task_dir})"
    return ""


def _run_trials(
    entry: Any,
    spec: dict[str, Any],
    trials: list[dict[str, Any]],
    context: task_api.TaskContext,
    channel: EventChannel,
    streams: tuple[_LogStream, _LogStream],
) -> None:
    """A sweep's bundled trials (TaskSpec.trials), one after another in this process: no fork, no new worker, the
    imports and the dataset (workloads/datasets.load) already here, so a trial costs its fit and little else. Each
    is framed by a `trial` and a `trial_end` message (the agent tags what comes between with its index). One that
    raises ends as a failed trial and the next starts; Stopped, SystemExit and the like end the whole task, as
    they would its own run. Each starts where a task would: in the task's dir, and under fresh warning registries
    (a warning is printed once per place per process: each trial's log says it, as its own task's would).

    A trial's lines are held and written together with the next trial's `trial` line: one write, one wake-up of
    the agent per trial (two before: its start, then its lines), and still each start goes out at once (a long trial
    is seen running). The last trial's lines go when the loop ends, however it ends."""
    with contextlib.ExitStack() as holding:  # the hold of the trial that ran last
        for trial in trials:
            if context.stop:  # a pause asked between two trials: stop before the next one, as a workload would
                raise task_api.Stopped(f"stopped on request before trial {trial['index']}")
            index = int(trial["index"])
            context.spec = {**spec, "params": trial["params"], "trial": index}
            os.chdir(context.task_dir)
            channel.send({"t": "trial", "index": index})  # held behind the last trial's lines, if any
            holding.close()  # written now, with them
            holding.enter_context(channel.held(TRIAL_HOLD))  # its lines and its trial_end, until the next start
            start = time.perf_counter()
            leader = context.leader  # a trial that fails is no result: it leads no one (task.keeps_files)
            try:
                with warnings.catch_warnings():
                    entry(trial["params"])
            except task_api.Stopped:
                raise
            except Exception as exc:
                context.leader = leader
                for stream in streams:
                    stream.flush()
                channel.send(
                    {
                        "t": "trial_end",
                        "ok": False,
                        "error": f"{type(exc).__name__}: {exc}{_disk_full_note(exc, context.task_dir)}",
                        "traceback": traceback.format_exc(),
                        "seconds": time.perf_counter() - start,
                    }
                )
            else:
                for stream in streams:
                    stream.flush()
                channel.send({"t": "trial_end", "ok": True, "seconds": time.perf_counter() - start})


@contextlib.contextmanager
def _clean_slate() -> Iterator[None]:
    """A warm worker serves the next task, another job's for a built-in family (executor._shared), as a fresh fork
    would: numpy's and Python's global random state are reseeded, and the environment (the task's context
    variables, any it set), the warning filters and scikit-learn's config are put back after each task.

    The environment is compared as os.environ keeps it (its encoded bytes, copied in a fraction of a microsecond):
    dict(os.environ) decodes every variable, twice a task, a tenth of a warm worker's time per noop task."""
    env = _environ_copy()
    sklearn = sys.modules.get("sklearn")
    config = sklearn.get_config() if sklearn is not None else None
    random.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()
    try:
        with warnings.catch_warnings():
            yield
    finally:
        now = _environ_copy()
        if now != env:  # (a task sets TENSORFLEET_JOB_ID): only what changed is put back, not every variable
            decode_key, decode_value = os.environ.decodekey, os.environ.decodevalue
            for key in now.keys() - env.keys():
                del os.environ[decode_key(key)]
            if env.items() - now.items():  # a variable it had changed or removed (most add one only)
                for key, value in env.items():
                    if now.get(key) != value:
                        os.environ[decode_key(key)] = decode_value(value)
        sklearn = sys.modules.get("sklearn")
        if sklearn is not None:  # imported by the task: back to the defaults it started with
            sklearn.set_config(**(config or sys.modules["sklearn._config"]._global_config))


def _environ_copy() -> dict[Any, Any]:
    """A copy of os.environ as it keeps it, encoded keys to encoded values (what putenv was given): its store is an
    implementation detail of CPython's os module (unchanged since Python 3.2), encoded here where it is missing."""
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict):
        return data.copy()
    return {os.environ.encodekey(k): os.environ.encodevalue(v) for k, v in os.environ.items()}


_last_job = ""  # the job of the previous task this worker ran


def _forget_data() -> None:
    """Drop the data the built-in workloads keep for a job's next task (datasets.load and what is derived from it,
    sklearn_basic's split): the next task is another job's, whose memory limit must not count it (nor its process
    hold it)."""
    datasets = sys.modules.get("tensorfleet_agent.workloads.datasets")  # imported only by a task that loaded data
    if datasets is not None:
        datasets.forget()


def _run_one(command: dict[str, Any], channel: EventChannel) -> None:
    global _last_job
    spec = command["spec"]
    job_id = str(spec.get("job_id", ""))
    if job_id != _last_job:  # another job's task (a warm worker shared by a family): not the last one's data
        _forget_data()
        _last_job = job_id
    os.environ["TENSORFLEET_JOB_ID"] = job_id
    dataset_dir = str(command.get("dataset_dir") or "")
    if dataset_dir:  # the task's dataset version, read-only (runtime/datasets.py); a project's command inherits it
        os.environ[task_api.DATASET_DIR_ENV] = dataset_dir
    else:  # a reused worker: not the previous task's
        os.environ.pop(task_api.DATASET_DIR_ENV, None)
    fraction = str(command.get("gpu_memory_fraction") or "")
    if fraction:  # a task sharing its GPU: torch workloads and the task SDK cap its memory to this share (gpu_cap)
        os.environ[GPU_MEMORY_FRACTION_ENV] = fraction
    else:
        os.environ.pop(GPU_MEMORY_FRACTION_ENV, None)
    task_dir = Path(command["task_dir"])
    # Made with its inputs/ by the agent when it linked inputs there; a task with none gets an empty inputs/ only
    # when its code asks for it (task.inputs_dir; a project's command is told of one): each new dir is an inode.
    try:  # there already for most (the journal makes a task's dirs ahead): no mkdir, which would fail first
        os.chdir(task_dir)
    except OSError:
        task_dir.mkdir(parents=True, exist_ok=True)
        os.chdir(task_dir)
    context = task_api.TaskContext(spec, task_dir, Path(command["blobs_dir"]), channel)
    task_api._install(context)
    saved: tuple[TextIO, TextIO] = (sys.stdout, sys.stderr)
    out, err = _LogStream(channel, "stdout"), _LogStream(channel, "stderr")
    sys.stdout, sys.stderr = out, err
    try:  # (its versions went with its hello: the agent logs them with RUNNING, nothing is written here)
        entry = _resolve(command["entry"])
        trials = spec.get("trials") or ()
        if trials:
            _run_trials(entry, spec, trials, context, channel, (out, err))
            context.spec = spec  # the task's own run: its own params again
        entry(spec["params"])
    except task_api.Stopped as exc:  # checkpointed and stopped on request: the job is being paused
        out.flush()
        err.flush()
        channel.send(
            {"t": "done", "ok": False, "stopped": True, "error": str(exc) or "stopped on request", "alone": alone()}
        )
    except SystemExit as exc:  # a workload asked to exit: exit for real, the agent reports it
        out.flush()
        err.flush()
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            channel.send({"t": "log", "stream": "stderr", "line": str(exc.code)})
        _end_leftovers()
        os._exit(code)
    except BaseException as exc:
        out.flush()
        err.flush()
        if getattr(exc, "plain", False) is True:  # a failure the workload words itself (a project's command
            # exited with a code): its message alone, no traceback of the workload's own code
            done = {"t": "done", "ok": False, "error": str(exc), "traceback": "", "alone": alone()}
            cause = getattr(exc, "exit_cause", "")
            if isinstance(cause, str) and cause:
                done["cause"] = cause  # an ExitCause value the executor may use instead of "exception"
            channel.send(done)
            return
        channel.send(
            {
                "t": "done",
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}{_disk_full_note(exc, task_dir)}",
                "traceback": traceback.format_exc(),
                "alone": alone(),
            }
        )
    else:
        out.flush()
        err.flush()
        channel.send({"t": "done", "ok": True, "alone": alone()})
    finally:
        sys.stdout, sys.stderr = saved
        task_api._install(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tensorfleet-worker")
    parser.add_argument("--cmd-fd", type=int, required=True)
    parser.add_argument("--evt-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args(argv)
    return serve(args.cmd_fd, args.evt_fd, args.parent_pid)


def serve(cmd_fd: int, evt_fd: int, parent_pid: int) -> int:
    """Say ready, then run the agent's commands until `exit` or the end of the command pipe."""
    die_with_parent(parent_pid)
    _become_subreaper()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the agent's terminal is the agent's business
    signal.signal(signal.SIGUSR1, lambda _sig, _frame: task_api._request_stop())  # pause: checkpoint, then stop
    channel = EventChannel(evt_fd)
    # with the versions it trains with (read before the fork in a fork server's child): each task's reproducibility line
    channel.send({"t": "ready", "pid": os.getpid(), "versions": task_api.package_versions()})
    with os.fdopen(cmd_fd, "r", encoding="utf-8") as commands:
        for line in commands:
            command = json.loads(line)
            if command.get("op") == "exit":
                break
            if command.get("op") == "run":
                _busy.set()
                with _clean_slate():
                    _run_one(command, channel)
            elif command.get("op") == "preload":  # a spare worker: import ahead, while nobody waits
                modules = [str(m) for m in command.get("modules", [])]
                threading.Thread(target=_preload, args=(modules,), name="preload", daemon=True).start()
    _end_leftovers()  # asked to exit, or the agent closed the pipe: nothing the tasks started outlives us
    return 0


if __name__ == "__main__":
    sys.exit(main())
