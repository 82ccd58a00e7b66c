"""The `script` workload: a user's Python file, run as __main__ with the task runtime available.

Every variable torchrun sets (RANK, LOCAL_RANK, GROUP_RANK, MASTER_ADDR, TORCHELASTIC_RUN_ID, ...) is set as
torchrun would set it (see torchrun.py), so `init_process_group(init_method="env://")` works unchanged.
The executor never reuses a script's worker, so every script starts in a fresh process.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

from tensorfleet_agent import task
from tensorfleet_agent.workloads.torchrun import torchrun_env


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
    os.environ.update(torchrun_env(spec))
    sys.argv = [str(path), *params["args"]]
    sys.path.insert(0, str(path.parent))
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise  # the worker exits with the script's code: FAILED, exit_code
