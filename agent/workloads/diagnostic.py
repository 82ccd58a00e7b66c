"""Diagnostic workloads: health checks, benchmarks and fault injection. Base install only."""

from __future__ import annotations

import ctypes
import os
import sys
import time
from typing import Any

from tensorfleet_agent import task


def noop(params: dict[str, Any]) -> None:
    del params


def sleep(params: dict[str, Any]) -> None:
    total = float(params["seconds"])
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= total:
            break
        task.progress(elapsed / total if total else 1.0)
        time.sleep(min(0.5, total - elapsed))
    task.progress(1.0)


def emit(params: dict[str, Any]) -> None:
    points, rate, name = int(params["points"]), float(params["rate"]), str(params["name"])
    start = time.monotonic()
    for step in range(points):
        if rate > 0:
            delay = start + step / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        task.report(step=step, **{name: float(step)})
    task.progress(1.0)


def fail(params: dict[str, Any]) -> None:
    mode = params["mode"]
    print(f"fail workload: mode={mode}", file=sys.stderr)
    if mode == "exit":
        sys.stdout.flush()
        sys.exit(int(params["code"]))
    if mode == "segfault":
        sys.stdout.flush()
        sys.stderr.flush()
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    raise RuntimeError(str(params["message"]))


def artifact(params: dict[str, Any]) -> None:
    remaining = int(params["bytes"])
    path = task.checkpoint_dir().parent / "artifact.bin"
    with path.open("wb") as fh:
        while remaining > 0:
            chunk = os.urandom(min(remaining, 1 << 20))
            fh.write(chunk)
            remaining -= len(chunk)
    if params["checkpoint"]:
        task.save_checkpoint(path, step=1, name="checkpoint.bin")
    task.save_artifact(path, kind=str(params["kind"]))


def allocate(params: dict[str, Any]) -> None:
    size = int(params["megabytes"]) << 20
    block = bytearray(size)
    for offset in range(0, size, 4096):  # touch every page so it is resident
        block[offset] = 1
    task.report(step=0, allocated_mb=float(params["megabytes"]))
    time.sleep(float(params["seconds"]))
    del block
