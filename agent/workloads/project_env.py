"""What a project's command runs with (issue 19): the runtime file PREPARING wrote, the command's environment and
the program its first word names; and how its failures are worded (CommandFailed with an ExitCause value).

The environment: the worker's own (thread caps, CUDA_VISIBLE_DEVICES) plus PATH = the env's bin dir first (so
`python` is the env's), VIRTUAL_ENV for a real env, PYTHONPATH = the task SDK's folder first (`import
tensorfleet_task` works without installing anything), torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, ...), TENSORFLEET_TASK_ID / JOB_ID / TASK_DIR / OUTPUT_DIR / PROJECT_DIR / INPUTS_DIR /
RESUME_CHECKPOINT (only when there is one) and TENSORFLEET_SDK_SOCKET (the runner's socket, project_socket.py).

A program that is not found or not executable is a BAD_COMMAND failure: permanent (the controller fails the job at
once: no retry or other agent finds it), worded with the env's bin dir rather than the agent's whole PATH.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from tensorfleet_agent import task as task_api
from tensorfleet_agent.core import project_layout
from tensorfleet_agent.workloads.torchrun import torchrun_env

# ExitCause values (core.types, not imported here: every import delays the command's start; a test checks them)
BAD_COMMAND, EXIT_CODE, SIGNAL, SETUP = "bad_command", "exit_code", "signal", "setup"
SDK_SOCKET_ENV = "TENSORFLEET_SDK_SOCKET"  # the SDK's name (agent/task_sdk/tensorfleet_task.py)
# The worker's own channel to the agent (and the SDK's former pipes): never the command's, its fds are not passed.
_NOT_INHERITED = ("TENSORFLEET_EVENTS_FD", "TENSORFLEET_EVENTS_ID", "TENSORFLEET_REPLIES_FD")


class CommandFailed(Exception):
    """The command ended badly or could not start: the task fails with this message alone (no runner traceback)."""

    plain = True  # worker.py: the error is str(exc), without a type name or traceback

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.exit_cause = cause


def describe(command: list[str], limit: int = 200) -> str:
    """The command as a user would type it, shortened for error messages."""
    text = shlex.join(command)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_runtime(task_dir: Path) -> dict[str, str]:
    """work/project-runtime.json: where the project and its env are (written when PREPARING ended)."""
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


def output_dir(runtime: dict[str, str], params: dict[str, Any], workdir: Path) -> Path:
    """The folder whose files become the job's artifacts (created)."""
    named = runtime.get("output_dir") or str(params.get("output_dir") or project_layout.DEFAULT_OUTPUT_DIR)
    path = Path(named) if os.path.isabs(named) else workdir / named
    path.mkdir(parents=True, exist_ok=True)
    return path


def child_environment(
    spec: dict[str, Any],
    runtime: dict[str, str],
    task_dir: Path,
    output_dir: Path,
    base: dict[str, str] | None = None,
    sdk_socket: str = "",
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
    inputs.mkdir(exist_ok=True)  # TENSORFLEET_INPUTS_DIR names a folder, empty when the task has no inputs
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
    for name in _NOT_INHERITED:
        env.pop(name, None)
    if sdk_socket:
        env[SDK_SOCKET_ENV] = sdk_socket
    else:
        env.pop(SDK_SOCKET_ENV, None)
    resume = inputs / task_api.RESUME_INPUT
    if resume.exists():
        env["TENSORFLEET_RESUME_CHECKPOINT"] = str(resume)
    else:
        env.pop("TENSORFLEET_RESUME_CHECKPOINT", None)
    return env


def resolve_program(program: str, workdir: Path, path: str, bin_dir: str) -> str:
    """The executable the command's first word names: on the child's PATH (the env's bin dir first), or a path in
    the project. CommandFailed(BAD_COMMAND) naming where it looked when there is none or it cannot be run."""
    if "/" in program:
        candidate = Path(program) if os.path.isabs(program) else workdir / program
        if not candidate.is_file():
            where = "" if os.path.isabs(program) else f" in the project ({workdir})"
            raise CommandFailed(f"command not found: {program} (no such file{where})", BAD_COMMAND)
        if not os.access(candidate, os.X_OK):
            raise CommandFailed(
                f"command not executable: {program} (mode {candidate.stat().st_mode & 0o777:o}; run it with"
                f" an interpreter, e.g. `bash {program}`, or make it executable in the project)",
                BAD_COMMAND,
            )
        return str(candidate)
    found = shutil.which(program, path=path)
    if found is not None:
        return found
    candidate = Path(bin_dir) / program
    if candidate.is_file():  # which() skips a file it cannot execute
        raise CommandFailed(
            f"command not executable: {program} in the env's bin dir {bin_dir}"
            f" (mode {candidate.stat().st_mode & 0o777:o})",
            BAD_COMMAND,
        )
    hint = _near(program, bin_dir)
    raise CommandFailed(
        f"command not found: {program} (not in the env's bin dir {bin_dir} nor on the agent's PATH){hint}", BAD_COMMAND
    )


def _near(program: str, bin_dir: str) -> str:
    """ "; did you mean python?" when the env's bin dir has a program named much like it."""
    import difflib  # only on this failure

    try:
        names = os.listdir(bin_dir)
    except OSError:
        return ""
    close = difflib.get_close_matches(program, names, n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""
