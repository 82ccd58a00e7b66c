"""How a project's command is started as the worker's child (issue 19).

The child stays in the worker's process group (cancel kills the group) and gets PDEATHSIG, so it never outlives its
worker; it starts with SIGUSR1 ignored until the task SDK installs its handler (a pause must not kill it), and with
SIGINT at its default (the worker ignores Ctrl-C; user code gets the usual). Its stdin is /dev/null, its stdout and
stderr the worker's fd 1/2, already streamed as the task's logs.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from tensorfleet_agent.workloads.project_env import BAD_COMMAND, SETUP, CommandFailed, describe

_PR_SET_PDEATHSIG = 1
# What exec refuses for the program itself (a script's #! naming no interpreter, a binary of another machine):
# no retry mends it. Anything else (out of memory, of processes) may pass.
_BAD_PROGRAM = frozenset({errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR, errno.EISDIR})


def start(command: list[str], program: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `program` with command[1:] as its arguments; CommandFailed when it cannot be."""
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [program, *command[1:]]
    try:
        launcher = _launcher
        if launcher:  # exec'd (vfork) through setpriv and env: see _probe_launcher
            return subprocess.Popen([*launcher, *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL)
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, preexec_fn=_child_setup(os.getpid(), _prctl())
        )
    except OSError as exc:
        cause = BAD_COMMAND if exc.errno in _BAD_PROGRAM else SETUP
        raise CommandFailed(f"command `{describe(command)}` could not start: {exc}", cause) from None


def _child_setup(parent: int, prctl: Callable[..., int] | None) -> Callable[[], None]:
    """What the child does between fork and exec (nothing that imports or allocates much: other threads may
    hold locks at the fork)."""

    def setup() -> None:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the SDK's handler: a pause must not kill it
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the worker ignores Ctrl-C; user code gets the usual
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the worker (the spawning thread)
        if os.getppid() != parent:  # the worker died before prctl took hold
            os._exit(70)

    return setup


def _probe_launcher() -> tuple[str, ...]:
    """`setpriv --pdeathsig KILL -- env --ignore-signal=USR1 --default-signal=INT --`, when this system's
    util-linux (>= 2.33) and coreutils (>= 8.31) have those options and they work (a probe that signals itself
    must survive), else () and the command starts through _child_setup.

    Why: a preexec_fn makes CPython fork the whole worker instead of vfork/exec, and a spare worker holds
    numpy/scikit-learn: its fork took 35-45 ms against 5 ms for these two small execs (2-core box, loaded).
    What they do is _child_setup's work, but for its check that the worker was still alive at the prctl: a
    command whose worker dies in that millisecond is left to the executor's kill of the worker's group."""
    if not sys.platform.startswith("linux"):
        return ()
    setpriv, env, shell = shutil.which("setpriv"), shutil.which("env"), shutil.which("sh")
    if not (setpriv and env and shell):
        return ()
    prefix = (setpriv, "--pdeathsig", "KILL", "--", env, "--ignore-signal=USR1", "--default-signal=INT", "--")
    try:
        probe = subprocess.run(
            [*prefix, shell, "-c", "kill -USR1 $$"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return prefix if probe.returncode == 0 else ()


_launcher: tuple[str, ...] = ()  # set by the probe; until then (or without them) _child_setup is used


def _probe() -> None:
    global _launcher
    _launcher = _probe_launcher()


# Probed once per worker, in the background from the import on (a spare imports this module while it waits; a
# fresh worker's first command may start before the probe ends, through _child_setup: its fork is cheap).
threading.Thread(target=_probe, name="launcher-probe", daemon=True).start()


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
