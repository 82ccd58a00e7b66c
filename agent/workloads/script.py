"""The `script` workload: a user's Python file, run as __main__ with the task runtime available.

RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT are set for multi-rank scripts, as torchrun would.
The executor never reuses a script's worker, so every script starts in a fresh process.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

from tensorfleet_agent import task


def missing_requirements(requirements: list[str]) -> list[str]:
    """Which of the requirement strings ("numpy", "scikit-learn>=1.5") this Python cannot satisfy."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    missing = []
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            missing.append(f"{text} (not a valid requirement)")
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(f"{text} (not installed)")
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            missing.append(f"{text} (installed: {installed})")
    return missing


def run(params: dict[str, Any]) -> None:
    spec = task.spec()
    path = task.input_path(str(params["script"]))
    rank, world = task.rank(), task.world_size()
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": "0"})
    rdv = spec.get("rendezvous") or {}
    if rdv:
        os.environ.update({"MASTER_ADDR": str(rdv["master_addr"]), "MASTER_PORT": str(rdv["master_port"])})
    sys.argv = [str(path), *params["args"]]
    sys.path.insert(0, str(path.parent))
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise  # the worker exits with the script's code: FAILED, exit_code
