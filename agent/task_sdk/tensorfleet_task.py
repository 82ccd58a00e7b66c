"""TensorFleet's task SDK for your own project: one dependency-free module (standard library only, Python >= 3.9).

The agent puts this file's folder on PYTHONPATH when it runs a project's command, so training code imports it
without installing anything into its environment:

    import tensorfleet_task as task

    data = task.dataset_dir()                       # the job's --dataset version, read-only (None: no dataset)
    ckpt = task.resume_checkpoint()                 # a Path when this run continues an earlier one, else None
    for step in range(start, steps):
        loss = train_step()
        task.report(step, loss=loss)                # metrics, shown live and kept with the job
        task.progress(step / steps)
        if task.stop_requested():                   # the job is being paused: checkpoint, then stop
            torch.save(state, "ckpt.pt")
            task.save_checkpoint("ckpt.pt", step)
            raise task.Stopped(f"paused at step {step}")
    task.register_model("outputs/model.safetensors", name="my-model")

print() works as usual: stdout and stderr stream as the task's logs. Files written under output_dir() become the
job's artifacts when the task ends. Outside TensorFleet (the script run by hand) every call still works: messages
are printed to stderr, paths fall back to the current directory, so the same code runs on a laptop.

Any number of processes of one task may use it: forked or spawned multiprocessing children, subprocesses,
torchrun's or accelerate's ranks.

How it talks to the agent (the project runner, tensorfleet_agent.workloads.project): each process connects to the
unix socket TENSORFLEET_SDK_SOCKET on its first call (a forked child again, on its own connection) and says hello;
one JSON object per line. Requests about files ("artifact_file", "checkpoint_file", "register_model") carry an
"id" and wait for the runner's {"t": "reply", "id", "ok", ...} on the same connection, so a call returns once the
file is stored (the file may be overwritten right after) and a refusal is raised here. SIGUSR1 sets the stop flag
(the runner sends it to every process that said hello with the SDK's handler); an uncaught Stopped sends
{"t": "stopped", "reason"} and the task ends as stopped, not failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Union

__all__ = [
    "FORMATS",
    "Stopped",
    "checkpoint_dir",
    "dataset_dir",
    "gpu_memory_fraction",
    "input_path",
    "inputs_dir",
    "limit_gpu_memory",
    "local_rank",
    "output_dir",
    "progress",
    "rank",
    "register_model",
    "report",
    "resume_checkpoint",
    "save_artifact",
    "save_checkpoint",
    "stop",
    "stop_requested",
    "world_size",
]

PROTOCOL = 2  # 2: a unix socket, one connection per process (1: two inherited pipes, one process only)
SOCKET_ENV = "TENSORFLEET_SDK_SOCKET"  # the runner's unix socket; absent outside TensorFleet

#: register_model formats; a file's suffix names its format when format= is not given.
FORMATS = ("skops", "safetensors", "onnx", "pickle")
_SUFFIXES = {
    ".skops": "skops",
    ".safetensors": "safetensors",
    ".onnx": "onnx",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".joblib": "pickle",
}
_MODEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")  # what the controller's model registry accepts
_KIND = re.compile(r"[A-Za-z0-9._-]{1,64}")
_VERSIONED = ("numpy", "scikit-learn", "torch", "skops", "safetensors", "onnx", "onnxruntime", "joblib")

PathLike = Union[str, "os.PathLike[str]"]


class Stopped(Exception):
    """Raise after saving a checkpoint when stop_requested() is true: the task ends as stopped, not failed."""


# ---- the connection to the runner


class _Connection:
    """This process's connection to the runner: one per process (a forked child opens its own), shared by its
    threads under a lock, so a reply is read by the process and thread that asked."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.pid = os.getpid()
        self.lock = threading.Lock()  # one message, or one request and its reply, at a time
        self.pending = b""  # reply bytes read past a line end
        self.counter = 0

    def _write(self, message: dict[str, Any]) -> None:
        self.sock.sendall((json.dumps(message, separators=(",", ":")) + "\n").encode(), _NOSIGNAL)

    def send(self, message: dict[str, Any]) -> None:
        with self.lock:
            self._write(message)

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request and wait for the runner's reply to it."""
        with self.lock:
            self.counter += 1
            ident = f"{self.pid}-{self.counter}"
            self._write(dict(message, id=ident))
            while True:
                while b"\n" not in self.pending:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise RuntimeError(
                            "the TensorFleet agent closed the task SDK's connection (is the task ending?)"
                        )
                    self.pending += chunk
                line, self.pending = self.pending.split(b"\n", 1)
                reply = json.loads(line)
                if isinstance(reply, dict) and reply.get("id") == ident:
                    return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()  # this process's copy only: the parent's connection stays open


_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)  # a closed connection is an error here, never a SIGPIPE
_connection_now: _Connection | None = None
_open_lock = threading.Lock()
_unreachable_pid = 0  # the process that could not connect (it reports to stderr, once said so)
_stop = threading.Event()
_stopped_sent = False


def _inside() -> bool:
    """Run by TensorFleet (the runner's socket is named), not by hand."""
    return bool(os.environ.get(SOCKET_ENV))


def _connection() -> _Connection | None:
    """This process's connection, opened on first use (and in a forked child, again); None outside TensorFleet or
    when the runner cannot be reached (said once on stderr)."""
    global _connection_now, _unreachable_pid
    path = os.environ.get(SOCKET_ENV, "")
    if not path:
        return None
    pid = os.getpid()
    conn = _connection_now
    if conn is not None and conn.pid == pid:
        return conn
    with _open_lock:
        conn = _connection_now
        if conn is not None and conn.pid == pid:
            return conn
        if conn is not None:  # inherited through a fork the at-fork hook did not see
            conn.close()
            _connection_now = None
        if _unreachable_pid == pid:
            return None
        try:
            conn = _Connection(path)
            # signals: this process takes the SDK's SIGUSR1 handler (its own or, forked, its parent's), so the
            # runner may send it a pause; a process without it would be killed by SIGUSR1 or not hear it
            handler = signal.getsignal(signal.SIGUSR1) is _on_sigusr1
            conn.send({"t": "hello", "pid": pid, "protocol": PROTOCOL, "signals": handler})
        except OSError as exc:
            _unreachable_pid = pid
            sys.stderr.write(
                f"tensorfleet_task: cannot reach the TensorFleet agent at {path} ({exc}); reporting to stderr\n"
            )
            return None
        _connection_now = conn
        return conn


def _after_fork_in_child() -> None:
    """A forked child must not use its parent's connection (their replies would mix): it opens its own on first
    use. A lock another thread held at the fork is held forever in the child: new locks."""
    global _connection_now, _open_lock
    conn, _connection_now = _connection_now, None
    _open_lock = threading.Lock()
    if conn is not None:
        conn.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _send(message: dict[str, Any]) -> None:
    conn = _connection()
    if conn is not None:
        try:
            conn.send(message)
            return
        except OSError as exc:  # the runner is gone (the task is ending): not worth the user's process
            sys.stderr.write(f"tensorfleet_task: the TensorFleet agent's connection failed ({exc})\n")
    print(f"[tensorfleet] {json.dumps(message)}", file=sys.stderr)


def _request(message: dict[str, Any]) -> dict[str, Any] | None:
    """A file request: the runner's reply, or None outside TensorFleet. A refusal is raised as its error type;
    inside TensorFleet without a runner to store the file, RuntimeError (the file would be silently lost)."""
    conn = _connection()
    if conn is None:
        print(f"[tensorfleet] {json.dumps(message)}", file=sys.stderr)
        if _inside():
            raise RuntimeError(
                f"{message['t']}: the TensorFleet agent cannot be reached at {os.environ.get(SOCKET_ENV)}: not stored"
            )
        return None
    try:
        reply = conn.request(message)
    except OSError as exc:
        raise RuntimeError(f"{message['t']}: the TensorFleet agent's connection failed ({exc}): not stored") from None
    if not reply.get("ok"):
        error = str(reply.get("error") or "the agent refused the request")
        raise {"FileNotFoundError": FileNotFoundError, "ValueError": ValueError}.get(
            str(reply.get("type")), RuntimeError
        )(error)
    return reply


# ---- where things are


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name, "")
    return Path(value) if value else default


def rank() -> int:
    """This process's rank in the job (torchrun's RANK): 0 for a one-rank job."""
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    """The rank among the job's ranks on this machine: the GPU to use is cuda:local_rank()."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def world_size() -> int:
    """How many ranks the job has (torchrun's WORLD_SIZE)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def gpu_memory_fraction() -> float:
    """The share of its GPU's memory this task may use when it shares the GPU with others (`--gpu-memory 6GiB`,
    `--gpus 0.5`), in (0, 1]; 0.0 when it has its GPUs whole (or runs outside TensorFleet)."""
    try:
        value = float(os.environ.get("TENSORFLEET_GPU_MEMORY_FRACTION", "") or 0)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and 0 < value <= 1 else 0.0


def limit_gpu_memory(device: Any = None) -> float:
    """Call once CUDA is up (after torch.cuda.set_device): a task sharing its GPU caps its torch allocator to its
    share (torch.cuda.set_per_process_memory_fraction), so going over it is this task's out-of-memory error, not
    its neighbours'. Returns the fraction applied; 0.0 (nothing done) when the task has its GPU whole, or torch is
    not imported or sees no GPU."""
    fraction = gpu_memory_fraction()
    if not fraction:
        return 0.0
    torch = sys.modules.get("torch")  # this module imports nothing beyond the standard library: torch if in use
    if torch is None or not torch.cuda.is_available():
        return 0.0
    if device is None:
        index = torch.cuda.current_device()
    elif isinstance(device, int):
        index = device
    else:  # "cuda:1", torch.device("cuda", 1)
        index = torch.device(device).index or 0
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return fraction


def output_dir() -> Path:
    """Write results here: every file under it becomes an artifact of the job when the task ends (also on failure).
    Outside TensorFleet: ./outputs."""
    path = _env_path("TENSORFLEET_OUTPUT_DIR", Path.cwd() / "outputs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def dataset_dir() -> Path | None:
    """The job's dataset version (`--dataset NAME[:VERSION]`): a read-only folder of its files, shared with the
    agent's other tasks (write elsewhere). None when the job names no dataset (or outside TensorFleet)."""
    value = os.environ.get("TENSORFLEET_DATASET_DIR", "")
    return Path(value) if value else None


def inputs_dir() -> Path:
    """Where the task's input files are, under their names. Outside TensorFleet: the current dir."""
    return _env_path("TENSORFLEET_INPUTS_DIR", Path.cwd())


def input_path(name: str) -> Path:
    """One of the task's inputs by name; FileNotFoundError naming it when the job was not given it."""
    path = inputs_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"input {name!r} was not sent with this task (looked in {inputs_dir()})")
    return path


def checkpoint_dir() -> Path:
    """A folder outside the project's output dir for checkpoint files (they are not collected as outputs)."""
    path = _env_path("TENSORFLEET_TASK_DIR", Path.cwd()) / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def resume_checkpoint() -> Path | None:
    """The checkpoint to continue from when this run is a retry, a re-placement or a resumed pause; else None."""
    value = os.environ.get("TENSORFLEET_RESUME_CHECKPOINT", "")
    if value and os.path.exists(value):
        return Path(value)
    return None


# ---- reporting


def report(step: int, **metrics: float) -> None:
    """Record metric values at a training step, e.g. report(10, loss=0.3, accuracy=0.91)."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    values: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                number = float(value)  # numpy and torch scalars
            except (TypeError, ValueError):
                raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}") from None
        else:
            number = float(value)
        if math.isnan(number):
            raise ValueError(f"metric {name!r} is NaN at step {step}")
        values[name] = number
    if values:  # one message for the call's points
        _send({"t": "metrics", "step": step, "values": values, "wall_time": time.time()})


def progress(fraction: float) -> None:
    """How much of the task is done, 0..1 (clamped)."""
    number = float(fraction)
    if math.isnan(number):
        raise ValueError("progress fraction is NaN")
    _send({"t": "progress", "fraction": min(1.0, max(0.0, number))})


# ---- files


def _existing_file(path: PathLike, what: str) -> Path:
    resolved = Path(os.path.abspath(os.fspath(path)))
    if not resolved.exists():
        raise FileNotFoundError(f"{what}: no such file: {resolved}")
    if not resolved.is_file():
        raise ValueError(f"{what}: {resolved} is not a regular file (a folder? archive it first)")
    return resolved


def _name(name: str | None, path: Path) -> str:
    value = path.name if name is None else name
    if not isinstance(value, str) or not value or "/" in value or "\x00" in value or len(value) > 255:
        raise ValueError(f"name must be a file name (no '/', at most 255 characters), got {value!r}")
    return value


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def save_artifact(path: PathLike, kind: str = "artifact", name: str | None = None) -> str:
    """Store a finished file as an artifact of the job; returns its sha256. Returns once it is stored: the file may
    be changed or removed right after."""
    file = _existing_file(path, "save_artifact")
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ValueError(f"kind must be 1-64 letters, digits, '.', '_' or '-', got {kind!r}")
    message = {"t": "artifact_file", "path": str(file), "kind": kind, "name": _name(name, file)}
    reply = _request(message)
    return str(reply["sha256"]) if reply and reply.get("sha256") else _sha256(file)


def save_checkpoint(path: PathLike, step: int, name: str | None = None) -> str:
    """Publish a checkpoint file, so that a resumed, retried or re-placed run continues from it (see
    resume_checkpoint()); returns its sha256 once it is stored: overwrite the file freely afterwards."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    file = _existing_file(path, "save_checkpoint")
    message = {"t": "checkpoint_file", "path": str(file), "step": step, "name": _name(name, file)}
    reply = _request(message)
    return str(reply["sha256"]) if reply and reply.get("sha256") else _sha256(file)


def model_format(path: PathLike, format: str | None = None) -> str:
    """The register_model format of a file: `format` checked, or the one its suffix names."""
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"unknown model format {format!r} (known: {', '.join(FORMATS)})")
        return format
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix not in _SUFFIXES:
        known = ", ".join(sorted(_SUFFIXES))
        raise ValueError(
            f"cannot tell the model format of {Path(os.fspath(path)).name} from its suffix ({known});"
            f" pass format= one of {', '.join(FORMATS)}"
        )
    return _SUFFIXES[suffix]


def _versions() -> dict[str, str]:
    """The versions the model was made with (in this process's environment, not the agent's)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def register_model(
    path: PathLike, name: str | None = None, format: str | None = None, allow_pickle: bool = False
) -> str:
    """Register a model file in TensorFleet's model registry with the job's lineage; returns its sha256.

    Formats: skops, safetensors, onnx (from the suffix when format= is not given). A pickle (.pkl, .pickle,
    .joblib) runs arbitrary code when loaded, so it is refused unless allow_pickle=True. `name` defaults to the
    job's model name.
    """
    file = _existing_file(path, "register_model")
    chosen = model_format(file, format)
    if chosen == "pickle" and allow_pickle is not True:
        raise ValueError(
            f"refusing to register {file.name}: a pickle model runs arbitrary code when it is loaded. Save it with"
            " skops, safetensors or ONNX, or pass allow_pickle=True if you trust everyone who will load it"
        )
    if name is not None and (not isinstance(name, str) or not _MODEL_NAME.fullmatch(name)):
        raise ValueError(f"model name may only hold letters, digits, '.', '_' and '-' (1-128), got {name!r}")
    message = {
        "t": "register_model",
        "path": str(file),
        "name": name,
        "format": chosen,
        "allow_pickle": bool(allow_pickle),
        "versions": _versions(),
    }
    reply = _request(message)
    return str(reply["sha256"]) if reply and reply.get("sha256") else _sha256(file)


# ---- stopping


def stop_requested() -> bool:
    """True once the job is being paused: save a checkpoint, save_checkpoint() it, then raise Stopped.

    A run that ignores it is cancelled after a grace period and resumes from its last checkpoint.
    """
    if not _stop.is_set() and _inside():
        _connection()  # a forked child that only asks this says hello, so that the pause reaches it too
    return _stop.is_set()


def _send_stopped(reason: str) -> None:
    global _stopped_sent
    if _stopped_sent:
        return
    _stopped_sent = True
    with contextlib.suppress(OSError):
        _send({"t": "stopped", "reason": reason or "stopped on request"})


def stop(reason: str = "") -> None:
    """End this run as stopped (not failed), e.g. after saving a checkpoint: raises Stopped."""
    _send_stopped(reason)
    raise Stopped(reason)


def _on_sigusr1(signum: int, frame: Any) -> None:
    _stop.set()
    if callable(_previous_handler):
        _previous_handler(signum, frame)


def _excepthook(kind: Any, value: Any, tb: Any) -> None:
    if isinstance(value, Stopped):
        reason = str(value) or "stopped on request"
        _send_stopped(reason)
        sys.stderr.write(f"tensorfleet: stopped: {reason}\n")
        sys.stderr.flush()
        return
    _previous_hook(kind, value, tb)


_previous_handler: Any = None
_previous_hook = sys.excepthook


def _install() -> None:
    """Inside a task: take SIGUSR1 (the runner forwards the pause request), end on Stopped as stopped, say hello
    (a pause requested before this point is forwarded again)."""
    global _previous_handler
    if not _inside():
        return
    if threading.current_thread() is threading.main_thread():  # the handler first: hello may bring a pause
        previous = signal.getsignal(signal.SIGUSR1)
        _previous_handler = previous if callable(previous) else None
        signal.signal(signal.SIGUSR1, _on_sigusr1)
    sys.excepthook = _excepthook
    _connection()


_install()
