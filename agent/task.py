"""What training code imports: the task runtime.

    from tensorfleet_agent import task
    task.report(step=10, loss=0.3, accuracy=0.91)
    task.progress(0.5)
    task.save_artifact("model.skops", kind="model")
    if task.stop_requested():   # the job is being paused: checkpoint, then
        raise task.Stopped("saved a checkpoint at step 10")

Outside TensorFleet (a script run by hand) every call still works: reports go to
stderr and paths fall back to the current directory, so scripts stay testable.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorfleet_agent.core.digest import blob_relpath
from tensorfleet_agent.core.ranking import ranks_before
from tensorfleet_agent.runtime.channel import EVENTS_FD_ENV, EventChannel

__all__ = [
    "Stopped",
    "checkpoint_dir",
    "dataset_dir",
    "input_path",
    "inputs_dir",
    "keeps_files",
    "package_versions",
    "progress",
    "rank",
    "report",
    "resume_checkpoint",
    "save_artifact",
    "save_artifact_bytes",
    "save_checkpoint",
    "spec",
    "stop_requested",
    "world_size",
]

RESUME_INPUT = "resume.ckpt"
DATASET_DIR_ENV = "TENSORFLEET_DATASET_DIR"  # the job's dataset version, read-only; set by the worker per task


class Stopped(Exception):
    """Raise after saving a checkpoint when stop_requested() is true: the task ends as stopped, not failed."""


@dataclass
class TaskContext:
    """The running task as the worker set it up."""

    spec: dict[str, Any]
    task_dir: Path
    blobs_dir: Path | None
    channel: EventChannel | None
    artifacts: list[str] = field(default_factory=list)
    stop: bool = False
    leader: tuple[float, int] | None = None  # (score, index) of the best trial this task ran so far (keeps_files)


_context: TaskContext | None = None


def _install(context: TaskContext | None) -> None:
    """Called by the worker around each task; not for training code."""
    global _context
    _context = context


def _request_stop() -> None:
    """The worker's SIGUSR1 handler: the agent asks the task to checkpoint and stop."""
    if _context is not None:
        _context.stop = True


def _current() -> TaskContext:
    global _context
    if _context is None:
        fd = os.environ.get(EVENTS_FD_ENV)
        channel = EventChannel(int(fd)) if fd and fd.isdigit() else None
        task_dir = Path(os.environ.get("TENSORFLEET_TASK_DIR", os.getcwd()))
        blobs = os.environ.get("TENSORFLEET_BLOBS_DIR")
        spec = {
            "task_id": os.environ.get("TENSORFLEET_TASK_ID", "local"),
            "job_id": os.environ.get("TENSORFLEET_JOB_ID", "local"),
            "rank": int(os.environ.get("RANK", "0")),
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "params": {},
        }
        _context = TaskContext(spec, task_dir, Path(blobs) if blobs else None, channel)
    return _context


def _send(message: dict[str, Any]) -> None:
    ctx = _current()
    if ctx.channel is not None:
        ctx.channel.send(message)
    else:
        print(f"[tensorfleet] {message}", file=sys.stderr)


def spec() -> dict[str, Any]:
    """The task's spec: task_id, job_id, workload, params, rank, world_size, ..."""
    return dict(_current().spec)


def rank() -> int:
    return int(_current().spec.get("rank", 0))


def world_size() -> int:
    return int(_current().spec.get("world_size", 1) or 1)


def report(step: int, **metrics: float) -> None:
    """Record metric values at a training step (one point per name)."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    values = {name: float(value) for name, value in metrics.items()}
    for name, number in values.items():
        if math.isnan(number):
            raise ValueError(f"metric {name!r} is NaN at step {step}")
    if values:  # one message for the call's points: one pipe write, however many metrics
        _send({"t": "metrics", "step": step, "values": values, "wall_time": time.time()})


def progress(fraction: float) -> None:
    """Fraction of the task done, 0..1 (clamped). Not sent from a sweep's bundled trial (TaskSpec.trials): it lasts
    milliseconds, and its end says it all."""
    if "trial" in _current().spec:
        return
    _send({"t": "progress", "fraction": min(1.0, max(0.0, float(fraction)))})


def keeps_files(metrics: dict[str, float]) -> bool:
    """Whether this trial's model and report are worth writing, given its final metrics: a sweep under keep_models
    best (TaskSpec.trial_files) keeps only its best trial's, so a trial that ranks behind the sweep's best when its
    task was sent (the rule's leader, whose files are kept: a worse score of the sweep's metric, or the same and a
    higher index, core.ranking's order) can never be kept and writes none, nor does a bundled trial that ranks
    behind one this task already ran. The task's own run defers to that leader only, not to the trials before it: a
    restarted controller follows the task for its own trial alone, forgetting the others, but still knows the
    leader (stored before this task's dispatch, by the same in-order writer). keep_models none writes no trial's.
    Anything not in a sweep writes them."""
    ctx = _current()
    rule = ctx.spec.get("trial_files") or {}
    keep = str(rule.get("keep") or "all")
    if keep != "best":
        return keep != "none"
    own = "trial" not in ctx.spec  # the task's own run (its index is its rank), not one of its bundle's
    value = metrics.get(str(rule.get("metric", "")))
    if value is None:
        return True  # not among these metrics (reported along the way): the controller decides
    if not math.isfinite(value):
        return own  # no score: never the sweep's best (the task's own run writes them as it always did)
    maximize = bool(rule.get("maximize"))
    mine = (value, int(ctx.spec["rank"] if own else ctx.spec["trial"]))
    sent = (float(rule["leader_score"]), int(rule["leader_index"])) if int(rule.get("leader_index", -1)) >= 0 else None
    if sent is not None and not ranks_before(mine, sent, maximize):
        return False
    if own:
        return True
    if ctx.leader is not None and not ranks_before(mine, ctx.leader, maximize):
        return False
    ctx.leader = mine
    return True


def checkpoint_dir() -> Path:
    """A directory that survives the task: write checkpoints here, then save_checkpoint()."""
    path = _current().task_dir / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


_versions: dict[str, str] | None = None


def package_versions() -> dict[str, str]:
    """The versions this process trains with (recorded with every task and every registered model). Read once per
    process (the fork server reads it before it forks: every task's worker has it): the metadata lookups cost 10-15
    ms on a loaded box, which every trial of a bundle would pay again."""
    from tensorfleet_agent.core.version import installed_version

    global _versions
    if _versions is None:
        out = {"python": sys.version.split()[0]}
        for dist in ("tensorfleet", "numpy", "scikit-learn", "torch", "skops", "safetensors"):
            version = installed_version(dist)
            if version is not None:
                out[dist] = version
        _versions = out
    return dict(_versions)


def stop_requested() -> bool:
    """True once the job is being paused: save a checkpoint, call save_checkpoint(), raise Stopped.

    Training loops check it between steps. A task that ignores it is cancelled after a grace period
    and starts over from its last periodic checkpoint when the job resumes.
    """
    return _current().stop


def resume_checkpoint() -> Path | None:
    """The checkpoint to continue from when this task is a retry, a re-placement or a resumed pause."""
    path = _inputs() / RESUME_INPUT
    return path if path.exists() else None


def inputs_dir() -> Path:
    """Where the task's input blobs (datasets) are linked under their names; an empty folder when it has none (made
    when asked for: most tasks never ask, and a folder per task costs an inode)."""
    path = _inputs()
    path.mkdir(exist_ok=True)
    return path


def _inputs() -> Path:
    """The task's inputs folder, which exists only when it has inputs or inputs_dir() was asked for."""
    return _current().task_dir / "inputs"


def dataset_dir() -> Path | None:
    """The job's dataset version (`--dataset NAME[:VERSION]` of a file tree), a read-only folder; None when the job
    names none."""
    value = os.environ.get(DATASET_DIR_ENV, "")
    return Path(value) if value else None


def input_path(name: str) -> Path:
    path = _inputs() / name
    if not path.exists():
        raise FileNotFoundError(f"input {name!r} was not sent with this task")
    return path


def save_artifact(path: str | os.PathLike[str], kind: str = "artifact", name: str | None = None) -> str:
    """Hand a finished file to the agent; returns its sha256. The controller fetches it."""
    digest, size = _store(Path(path))
    _send({"t": "artifact", "sha256": digest, "size": size, "kind": kind, "name": name or Path(path).name})
    return digest


def save_artifact_bytes(data: bytes, name: str, kind: str = "artifact") -> str:
    """save_artifact for a file made in memory (a model's skops bytes): stored under its sha256 without being
    written, read back and copied first; returns the sha256."""
    digest = hashlib.sha256(data).hexdigest()
    _adopt(digest, lambda tmp: tmp.write_bytes(data))
    _send({"t": "artifact", "sha256": digest, "size": len(data), "kind": kind, "name": name})
    return digest


def save_checkpoint(path: str | os.PathLike[str], step: int, name: str | None = None) -> str:
    """Publish a checkpoint file so that a re-placed task can resume from it."""
    digest, size = _store(Path(path))
    _send(
        {
            "t": "checkpoint",
            "sha256": digest,
            "size": size,
            "step": int(step),
            "name": name or Path(path).name,
        }
    )
    return digest


def _store(path: Path) -> tuple[str, int]:
    """Copy the file into the agent's blob store under its sha256 (atomic rename)."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    hasher = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(chunk)
    digest = hasher.hexdigest()
    size = path.stat().st_size
    _adopt(digest, lambda tmp: shutil.copyfile(path, tmp))
    return digest, size


def _adopt(digest: str, write: Callable[[Path], object]) -> None:
    """Put a blob in the agent's blob store under its sha256 unless it is there: `write` fills a temporary file
    beside it, renamed into place (atomic: a reader never sees half of it)."""
    blobs = _current().blobs_dir
    if blobs is not None:
        dest = blobs / blob_relpath(digest)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{digest}.{os.getpid()}.tmp")
            write(tmp)
            os.replace(tmp, dest)
