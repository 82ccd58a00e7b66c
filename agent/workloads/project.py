"""The `project` workload: a user's own project folder, run with its command in its own environment (issue 19).

The executor prepared the task (PREPARING: the snapshot materialized into work/project, the env built) and wrote
work/project-runtime.json (core.project_layout.RUNTIME_FILE). This runner, in a fresh worker, starts the command
as a child process and stays with it until it exits:

- what it runs with: project_env.py (the runtime file, cwd, PATH with the env's bin dir first, PYTHONPATH with
  the task SDK, torchrun's and the TENSORFLEET_* variables; a program not found or not executable is a
  permanent BAD_COMMAND failure);
- how it starts: project_launch.py (the worker's process group, PDEATHSIG, SIGUSR1 ignored until the SDK's
  handler; stdout/stderr are the worker's, already streamed as the task's logs);
- its SDK messages, from every process of it: project_socket.py (a unix socket, one connection per process) and
  project_relay.py / project_requests.py (what each message means; files stored and answered);
- a pause (SIGUSR1 to the worker) is forwarded to the command and to every process that said hello, and again to
  one that says hello later;
- its end: exit 0 -> success; a {"t": "stopped"} message -> task_api.Stopped (the task ends as stopped); else
  CommandFailed "command `python -m pkg.train` exited with code 3" / "... was killed by SIGKILL".
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from tensorfleet_agent import task as task_api
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.project_spec import check_command
from tensorfleet_agent.workloads import project_launch
from tensorfleet_agent.workloads.project_env import (
    BAD_COMMAND,
    EXIT_CODE,
    SIGNAL,
    CommandFailed,
    child_environment,
    describe,
    output_dir,
    read_runtime,
    resolve_program,
)
from tensorfleet_agent.workloads.project_relay import Relay, note
from tensorfleet_agent.workloads.project_requests import FileRequests
from tensorfleet_agent.workloads.project_socket import SdkServer


class _Runner:
    """One command's life: the child, the SDK's socket, the relay."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.context = task_api._current()
        self.spec = self.context.spec
        self.task_dir = self.context.task_dir
        try:
            self.command = check_command(params.get("command"), "params.command")
        except ValidationError as exc:
            raise CommandFailed(str(exc), BAD_COMMAND) from None
        self.runtime = read_runtime(self.task_dir)
        self.workdir = Path(self.runtime["workdir"])
        if not self.workdir.is_dir():
            raise RuntimeError(f"the project dir {self.workdir} is missing")
        self.output_dir = output_dir(self.runtime, params, self.workdir)
        self.relay = Relay(FileRequests(self.workdir, self.task_dir), on_hello=self._hello)
        self.proc: subprocess.Popen[bytes] | None = None
        self.server: SdkServer | None = None

    def start(self) -> None:
        self.server = SdkServer(self.task_dir, self.relay.on_line, note)
        env = child_environment(self.spec, self.runtime, self.task_dir, self.output_dir, sdk_socket=self.server.path)
        program = resolve_program(self.command[0], self.workdir, env["PATH"], self.runtime["bin_dir"])
        self.proc = project_launch.start(self.command, program, self.workdir, env)

    def follow(self) -> int:
        assert self.proc is not None and self.server is not None
        return self.server.serve(self.proc)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def forward_stop(self) -> None:
        """SIGUSR1 to the command and to every process of it that imported the SDK (only descendants: a pid
        that was reused by then gets nothing)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        targets = {self.proc.pid}
        if self.relay.sdk_pids:
            import psutil  # only now: its import would delay every command's start

            with contextlib.suppress(psutil.Error):
                alive = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}
                targets |= self.relay.sdk_pids & alive
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGUSR1)

    def _hello(self) -> None:
        if task_api.stop_requested():  # asked before its handler was there: ask again
            self.forward_stop()

    def outcome(self, code: int) -> None:
        if self.relay.stop_reason is not None:
            raise task_api.Stopped(self.relay.stop_reason)
        if code == 0:
            return
        shown = describe(self.command)
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            raise CommandFailed(f"command `{shown}` was killed by {name}", SIGNAL)
        raise CommandFailed(f"command `{shown}` exited with code {code}", EXIT_CODE)


def run(params: dict[str, Any]) -> None:
    """The workload entry point, in the worker's main thread (PDEATHSIG follows the thread that forks)."""
    runner = _Runner(params)
    previous = signal.getsignal(signal.SIGUSR1)

    def on_stop(signum: int, frame: Any) -> None:
        if callable(previous):
            previous(signum, frame)
        task_api._request_stop()
        runner.forward_stop()

    signal.signal(signal.SIGUSR1, on_stop)
    try:
        runner.start()
        if task_api.stop_requested():  # asked while it was starting
            runner.forward_stop()
        code = runner.follow()
    finally:
        signal.signal(signal.SIGUSR1, previous)
        runner.close()
    runner.outcome(code)
