"""TensorFleet's task SDK when it is importable, else the few calls this project uses, done locally.

Inside TensorFleet the agent puts `tensorfleet_task` on the path (nothing to install). Run by hand, e.g.
`python -m spirals.train`, the same code writes to ./outputs and ./checkpoints and prints its metrics."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

try:
    import tensorfleet_task as task

    Stopped: type[Exception] = task.Stopped  # raised on a pause request: the task ends as stopped, not failed
except ImportError:  # not inside TensorFleet, and the SDK file is not on PYTHONPATH
    task = None
    Stopped = SystemExit


def report(step: int, **metrics: float) -> None:
    if task is not None:
        task.report(step, **metrics)
    else:
        print(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


def progress(fraction: float) -> None:
    if task is not None:
        task.progress(fraction)


def output_dir() -> Path:
    if task is not None:
        return task.output_dir()
    path = Path(os.environ.get("TENSORFLEET_OUTPUT_DIR", "outputs"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def resume_checkpoint() -> Path | None:
    return task.resume_checkpoint() if task is not None else None


def save_checkpoint(path: Path, step: int) -> None:
    if task is not None:
        task.save_checkpoint(path, step)
    else:
        Path("checkpoints").mkdir(exist_ok=True)
        shutil.copy(path, Path("checkpoints") / f"step{step}.pt")


def stop_requested() -> bool:
    return task.stop_requested() if task is not None else False


def checkpoint_dir() -> Path:
    if task is not None:
        return task.checkpoint_dir()
    path = Path("checkpoints")
    path.mkdir(exist_ok=True)
    return path
