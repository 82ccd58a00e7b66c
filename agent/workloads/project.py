"""The `project` workload: a user's own project folder, run with its command in its own environment (issue 19).

The executor prepared the task (PREPARING: the snapshot materialized into work/project, the env built) and wrote
work/project-runtime.json (core.project_layout.RUNTIME_FILE). This runner, in a fresh worker, starts the command
as a child process and stays with it until it exits:

- cwd = the project dir; PATH = the env's bin dir first, so `python` is the env's; VIRTUAL_ENV for a real env;
  PYTHONPATH = the task SDK's folder first (`import tensorfleet_task` works without installing anything);
  torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...); TENSORFLEET_TASK_ID / JOB_ID / TASK_DIR /
  OUTPUT_DIR / PROJECT_DIR / INPUTS_DIR / RESUME_CHECKPOINT (only when there is one) and the two pipes of the SDK.
  The thread caps and CUDA_VISIBLE_DEVICES are the worker's own, inherited.
- The child stays in the worker's process group (cancel kills the group) and gets PDEATHSIG, so it never outlives
  its worker. It starts with SIGUSR1 ignored until the SDK installs its handler; a pause (SIGUSR1 to the worker) is
  forwarded to it and to every process that imported the SDK, and again to one that says hello later.
- Its stdout/stderr are the worker's fd 1/2, already streamed as the task's logs.
- Its SDK messages are relayed: metrics/progress/log as tensorfleet_agent.task sends them, validated (a malformed
  line is said in a stderr log line, never fatal); file requests (artifact_file, checkpoint_file, register_model)
  are carried out here with tensorfleet_agent.task (into the blob cache) and answered on the reply pipe, so the
  SDK call returns once the file is stored and a refusal is raised in the user's code.
- Its end: exit 0 -> success; a {"t": "stopped"} message -> task_api.Stopped (the task ends as stopped); else
  CommandFailed "command `python -m pkg.train` exited with code 3" / "... was killed by SIGKILL".
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tensorfleet_agent import task as task_api
from tensorfleet_agent.core import project_layout
from tensorfleet_agent.runtime.channel import EVENTS_FD_ENV
from tensorfleet_agent.workloads.torchrun import torchrun_env

EVENTS_ID_ENV = "TENSORFLEET_EVENTS_ID"  # the SDK's names (agent/task_sdk/tensorfleet_task.py)
REPLIES_FD_ENV = "TENSORFLEET_REPLIES_FD"
FORMATS = ("skops", "safetensors", "onnx", "pickle")
MODEL_SUFFIX = {"skops": ".skops", "safetensors": ".safetensors", "onnx": ".onnx", "pickle": ".pkl"}
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
MAX_MESSAGE = 1 << 20  # one SDK line, at most (a metrics call with thousands of values fits)
_KIND = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.2  # how often the loop looks at the child when no pidfd tells it
# ExitCause values (core.types, not imported here: every import delays the command's start)
EXIT_CODE, SIGNAL, SETUP = "exit_code", "signal", "setup"


class CommandFailed(Exception):
    """The command ended badly: the task fails with this message alone (no runner traceback)."""

    plain = True  # worker.py: the error is str(exc), without a type name or traceback

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.exit_cause = cause


class _Refused(Exception):
    """A file request the runner will not carry out: answered to the SDK, which raises it as `kind`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def describe(command: list[str], limit: int = 200) -> str:
    """The command as a user would type it, shortened for error messages."""
    text = shlex.join(command)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_runtime(task_dir: Path) -> dict[str, str]:
    path = task_dir / project_layout.RUNTIME_FILE
    try:
        runtime = json.loads(path.read_text())
    except FileNotFoundError:
        raise RuntimeError(f"{path} is missing: this task was not prepared by the agent (PREPARING)") from None
    except ValueError as exc:
        raise RuntimeError(f"{path} is not JSON: {exc}") from None
    for key in ("workdir", "bin_dir"):
        if not isinstance(runtime.get(key), str) or not runtime[key]:
            raise RuntimeError(f"{path} names no {key}")
    return {k: str(v) for k, v in runtime.items() if isinstance(v, str)}


def child_environment(
    spec: dict[str, Any],
    runtime: dict[str, str],
    task_dir: Path,
    output_dir: Path,
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """The command's environment: the worker's own (thread caps, CUDA_VISIBLE_DEVICES) plus the project's."""
    env = dict(os.environ if base is None else base)
    if getattr(sys, "frozen", False):  # the packaged agent's bootloader points LD_LIBRARY_PATH at its bundle:
        # the user's programs get the one the agent was started with (PyInstaller keeps it as *_ORIG)
        original = env.pop("LD_LIBRARY_PATH_ORIG", None)
        if original is None:
            env.pop("LD_LIBRARY_PATH", None)
        else:
            env["LD_LIBRARY_PATH"] = original
    bin_dir = runtime["bin_dir"]
    env["PATH"] = os.pathsep.join(p for p in (bin_dir, env.get("PATH", "")) if p)
    env.pop("PYTHONHOME", None)
    venv = Path(bin_dir).parent
    if (venv / "pyvenv.cfg").is_file():
        env["VIRTUAL_ENV"] = str(venv)
    else:  # the agent's own Python (--env none): no venv of the agent's may leak in either
        env.pop("VIRTUAL_ENV", None)
    sdk = runtime.get("sdk_dir") or str(Path(task_api.__file__).resolve().parent / "task_sdk")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (sdk, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")  # prints reach the logs as they happen
    env.update(torchrun_env(spec))
    inputs = task_dir / "inputs"
    env.update(
        {
            "TENSORFLEET_TASK_ID": str(spec.get("task_id", "")),
            "TENSORFLEET_JOB_ID": str(spec.get("job_id", "")),
            "TENSORFLEET_TASK_DIR": str(task_dir),
            "TENSORFLEET_PROJECT_DIR": runtime["workdir"],
            "TENSORFLEET_INPUTS_DIR": str(inputs),
            project_layout.OUTPUT_DIR_ENV: str(output_dir),
        }
    )
    resume = inputs / task_api.RESUME_INPUT
    if resume.exists():
        env["TENSORFLEET_RESUME_CHECKPOINT"] = str(resume)
    else:
        env.pop("TENSORFLEET_RESUME_CHECKPOINT", None)
    return env


def resolve_program(program: str, workdir: Path, path: str) -> str:
    """The executable the command's first word names: on the child's PATH, or a path in the project."""
    if "/" in program:
        candidate = Path(program) if os.path.isabs(program) else workdir / program
        if not candidate.is_file():
            raise CommandFailed(f"command not found: {program} (no such file in {workdir})", SETUP)
        if not os.access(candidate, os.X_OK):
            raise CommandFailed(
                f"command not executable: {program} (mode {candidate.stat().st_mode & 0o777:o}; run it with"
                f" an interpreter, e.g. `bash {program}`, or make it executable in the project)",
                SETUP,
            )
        return str(candidate)
    found = shutil.which(program, path=path)
    if found is None:
        raise CommandFailed(f"command not found: {program} (PATH: {path})", SETUP)
    return found


def _output_dir(runtime: dict[str, str], params: dict[str, Any], workdir: Path) -> Path:
    named = runtime.get("output_dir") or str(params.get("output_dir") or project_layout.DEFAULT_OUTPUT_DIR)
    path = Path(named) if os.path.isabs(named) else workdir / named
    path.mkdir(parents=True, exist_ok=True)
    return path


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


class _Runner:
    """One command's life: the child, its pipes, the relay."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.context = task_api._current()
        self.spec = self.context.spec
        self.task_dir = self.context.task_dir
        self.command = [str(word) for word in params.get("command") or []]
        if not 1 <= len(self.command) <= 256 or not self.command[0]:
            raise ValueError("params.command must be a list of 1 to 256 strings, the first naming a program")
        self.runtime = read_runtime(self.task_dir)
        self.workdir = Path(self.runtime["workdir"])
        if not self.workdir.is_dir():
            raise RuntimeError(f"the project dir {self.workdir} is missing")
        self.output_dir = _output_dir(self.runtime, params, self.workdir)
        self.stop_reason: str | None = None
        self.sdk_pids: set[int] = set()
        self.proc: subprocess.Popen[bytes] | None = None
        self.replies_fd = -1
        self.models = 0
        self.bad_lines = 0

    # ---- start

    def start(self) -> None:
        env = child_environment(self.spec, self.runtime, self.task_dir, self.output_dir)
        program = resolve_program(self.command[0], self.workdir, env["PATH"])
        events_r, events_w = os.pipe()
        replies_r, replies_w = os.pipe()
        info = os.fstat(events_w)
        env[EVENTS_FD_ENV] = str(events_w)
        env[EVENTS_ID_ENV] = f"{info.st_dev}:{info.st_ino}"
        env[REPLIES_FD_ENV] = str(replies_r)
        sys.stdout.flush()
        sys.stderr.flush()
        argv = [program, *self.command[1:]]
        try:
            launcher = _launcher
            if launcher:  # exec'd (vfork) through setpriv and env: see _probe_launcher
                self.proc = subprocess.Popen(
                    [*launcher, *argv],
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    pass_fds=(events_w, replies_r),
                )
            else:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    pass_fds=(events_w, replies_r),
                    preexec_fn=_child_setup(os.getpid(), _prctl()),
                )
        except OSError as exc:
            os.close(events_r)
            os.close(replies_w)
            raise CommandFailed(f"command `{describe(self.command)}` could not start: {exc}", SETUP) from None
        finally:
            os.close(events_w)
            os.close(replies_r)
        self.events_fd, self.replies_fd = events_r, replies_w
        os.set_blocking(events_r, False)

    # ---- stop requests

    def forward_stop(self) -> None:
        """SIGUSR1 to the command and to every process of it that imported the SDK (only descendants: a pid
        that was reused by then gets nothing)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        targets = {self.proc.pid}
        if self.sdk_pids:
            import psutil  # only now: its import would delay every command's start

            with contextlib.suppress(psutil.Error):
                alive = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}
                targets |= self.sdk_pids & alive
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGUSR1)

    # ---- the relay

    def follow(self) -> int:
        assert self.proc is not None
        proc = self.proc
        selector = selectors.DefaultSelector()
        selector.register(self.events_fd, selectors.EVENT_READ, "events")
        pidfd = -1
        with contextlib.suppress(OSError, AttributeError):
            pidfd = os.pidfd_open(proc.pid)
            selector.register(pidfd, selectors.EVENT_READ, "exit")
        pending = b""
        events_open = True
        try:
            while True:
                if events_open:
                    ready = selector.select(timeout=_POLL_S if pidfd < 0 else None)
                    if any(key.data == "events" for key, _ in ready):
                        pending, events_open = self._read(pending)
                        if not events_open:
                            selector.unregister(self.events_fd)
                elif pidfd >= 0:
                    selector.select(timeout=None)
                else:
                    time.sleep(0.05)
                if proc.poll() is not None:
                    if events_open:  # what it wrote before it exited
                        pending, _ = self._read(pending)
                    if pending.strip():
                        self._handle(pending)
                    return proc.returncode
        finally:
            selector.close()
            if pidfd >= 0:
                os.close(pidfd)
            os.close(self.events_fd)
            os.close(self.replies_fd)

    def _read(self, pending: bytes) -> tuple[bytes, bool]:
        """Read what is there and handle each whole line; (the unfinished rest, the pipe still open). At most 16 MiB
        per call, so a process that never stops writing cannot keep the loop from seeing the command exit."""
        for _ in range(256):
            try:
                chunk = os.read(self.events_fd, 1 << 16)
            except BlockingIOError:
                return pending, True
            if not chunk:
                return pending, False
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    self._handle(line)
            if len(pending) > MAX_MESSAGE:
                self._note(f"ignored an SDK message of over {MAX_MESSAGE >> 10} KiB")
                pending = b""
        return pending, True

    def _note(self, text: str) -> None:
        print(f"tensorfleet: {text}", file=sys.stderr, flush=True)

    def _bad(self, line: bytes, why: str) -> None:
        self.bad_lines += 1
        if self.bad_lines <= 20:
            shown = line[:200].decode("utf-8", "replace")
            self._note(f"ignored a malformed message on the task SDK's pipe ({why}): {shown}")

    def _handle(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            self._bad(line, "not JSON")
            return
        if not isinstance(message, dict) or not isinstance(message.get("t"), str):
            self._bad(line, "not an object with a 't'")
            return
        kind = message["t"]
        try:
            if kind in ("artifact_file", "checkpoint_file", "register_model"):
                self._file_request(kind, message)
            elif kind == "metrics":
                self._metrics(message)
            elif kind == "progress":
                fraction = _number(message.get("fraction"), "fraction")
                task_api._send({"t": "progress", "fraction": min(1.0, max(0.0, fraction))})
            elif kind == "log":
                stream = "stderr" if message.get("stream") == "stderr" else "stdout"
                task_api._send({"t": "log", "stream": stream, "line": str(message.get("line", ""))[:65536]})
            elif kind == "stopped":
                self.stop_reason = str(message.get("reason") or "stopped on request")[:1000]
            elif kind == "hello":
                pid = message.get("pid")
                if isinstance(pid, int) and pid > 0:
                    self.sdk_pids.add(pid)
                if task_api.stop_requested():  # asked before its handler was there: ask again
                    self.forward_stop()
            else:
                self._bad(line, f"unknown type {kind!r}")
        except (ValueError, TypeError, KeyError) as exc:
            self._bad(line, str(exc))

    def _metrics(self, message: dict[str, Any]) -> None:
        step = message.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        values = message.get("values")
        if not isinstance(values, dict) or not values:
            raise ValueError("values must be an object of metric names to numbers")
        clean = {}
        for name, value in values.items():
            number = _number(value, f"metric {name!r}")
            if not name or len(name) > 256:
                raise ValueError(f"metric name {name[:50]!r} must be 1-256 characters")
            clean[name] = number
        wall = message.get("wall_time")
        wall_time = float(wall) if isinstance(wall, int | float) and math.isfinite(wall) else time.time()
        task_api._send({"t": "metrics", "step": step, "values": clean, "wall_time": wall_time})

    # ---- file requests

    def _file_request(self, kind: str, message: dict[str, Any]) -> None:
        ident = message.get("id")
        try:
            if kind == "artifact_file":
                reply = self._artifact(message)
            elif kind == "checkpoint_file":
                reply = self._checkpoint(message)
            else:
                reply = self._register_model(message)
        except _Refused as exc:
            self._note(f"{kind} refused: {exc}")
            reply = {"ok": False, "type": exc.kind, "error": str(exc)}
        except OSError as exc:
            self._note(f"{kind} failed: {exc}")
            reply = {"ok": False, "type": "RuntimeError", "error": f"the agent could not store the file: {exc}"}
        if ident is not None:
            self._reply({"t": "reply", "id": ident, **reply})

    def _reply(self, reply: dict[str, Any]) -> None:
        data = (json.dumps(reply) + "\n").encode()
        with contextlib.suppress(OSError):  # it exited meanwhile
            view = memoryview(data)
            while view:
                view = view[os.write(self.replies_fd, view) :]

    def _file(self, message: dict[str, Any]) -> Path:
        raw = message.get("path")
        if not isinstance(raw, str) or not raw:
            raise _Refused("ValueError", "no path given")
        path = Path(raw) if os.path.isabs(raw) else self.workdir / raw
        if not path.exists():
            raise _Refused("FileNotFoundError", f"no such file: {path}")
        if not path.is_file():
            raise _Refused("ValueError", f"{path} is not a regular file")
        return path

    def _name(self, message: dict[str, Any], path: Path) -> str:
        name = message.get("name") or path.name
        if not isinstance(name, str) or "/" in name or "\x00" in name or len(name) > 255:
            raise _Refused("ValueError", f"name must be a file name (no '/', at most 255 characters), got {name!r}")
        return name

    def _artifact(self, message: dict[str, Any]) -> dict[str, Any]:
        path = self._file(message)
        kind = message.get("kind") or "artifact"
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise _Refused("ValueError", f"kind must be 1-64 letters, digits, '.', '_' or '-', got {kind!r}")
        name = self._name(message, path)
        size = path.stat().st_size
        digest = task_api.save_artifact(path, kind=kind, name=name)
        return {"ok": True, "sha256": digest, "size": size}

    def _checkpoint(self, message: dict[str, Any]) -> dict[str, Any]:
        path = self._file(message)
        step = message.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise _Refused("ValueError", f"step must be a non-negative integer, got {step!r}")
        name = self._name(message, path)
        size = path.stat().st_size
        digest = task_api.save_checkpoint(path, step, name=name)
        return {"ok": True, "sha256": digest, "size": size}

    def _register_model(self, message: dict[str, Any]) -> dict[str, Any]:
        path = self._file(message)
        fmt = message.get("format")
        if fmt is None:
            fmt = model_format_of(path.name)
        if fmt not in FORMATS:
            raise _Refused("ValueError", f"unknown model format {fmt!r} (known: {', '.join(FORMATS)})")
        if fmt == "pickle" and message.get("allow_pickle") is not True:
            raise _Refused(
                "ValueError",
                f"refusing to register {path.name}: a pickle model runs arbitrary code when it is loaded"
                " (pass allow_pickle=True to accept that)",
            )
        name = message.get("name")
        if name is not None and (not isinstance(name, str) or not _MODEL_NAME.fullmatch(name)):
            raise _Refused("ValueError", f"model name may only hold letters, digits, '.', '_' and '-', got {name!r}")
        versions = message.get("versions")
        versions = {str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict) else {}
        file_name = model_file_name(path.name, fmt)
        size = path.stat().st_size
        digest = task_api.save_artifact(path, kind="model", name=file_name)
        self.models += 1
        report = {
            "model_name": name or "",
            "format": fmt,
            "versions": versions,
            "model_file": file_name,
            "sha256": digest,
            "size": size,
        }
        report_path = self.task_dir / f"model-report-{self.models}.json"
        report_path.write_text(json.dumps(report, indent=1))
        task_api.save_artifact(report_path, kind="report", name="model-report.json")
        return {"ok": True, "sha256": digest, "size": size}

    # ---- the end

    def outcome(self, code: int) -> None:
        if self.stop_reason is not None:
            raise task_api.Stopped(self.stop_reason)
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


def model_format_of(file_name: str) -> str:
    """The format a model file's suffix names; ValueError-like refusal when it names none."""
    suffix = Path(file_name).suffix.lower()
    for fmt, known in MODEL_SUFFIX.items():
        if suffix == known:
            return fmt
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    raise _Refused("ValueError", f"cannot tell the model format of {file_name} from its suffix; name format=")


def model_file_name(file_name: str, fmt: str) -> str:
    """The model artifact's name: the file's, with its format's suffix added when it has another one (the
    controller's registry tells formats by the name)."""
    try:
        if model_format_of(file_name) == fmt:
            return file_name
    except _Refused:
        pass
    return file_name + MODEL_SUFFIX[fmt]


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if math.isnan(number):
        raise ValueError(f"{what} is NaN")
    return number


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
    runner.outcome(code)
