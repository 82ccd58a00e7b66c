"""The README's first command, `scripts/demo`: the demo cluster trains the seed jobs and prints what it made.

scripts/demo is `scripts/setup-venv` (the venv this suite already runs in: CI makes it with that same script)
followed by `.venv/bin/tensorfleet demo`; the test runs that second step, the same executable with the same
environment default, on the embedded store (SQLite + files) in a temp data dir, and checks the printed table
against the controller's registry left in that data dir.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tensorfleet_agent.core.digest import file_sha256
from tensorfleet_desktop.controller.settings import resolve_uris
from tensorfleet_desktop.controller.store import open_store
from tensorfleet_desktop.controller.store.blobs import BlobStore

ROOT = Path(__file__).resolve().parents[2]
#: The README's promise: four seed jobs, a 6-trial sweep and, with PyTorch, a 2-rank job across both agents.
#: (job, algorithm, dataset, registered model name, agents it runs on)
SEED_JOBS = [
    ("iris-random-forest", "random_forest", "iris", "iris-rf", 1),
    ("wine-logistic-regression", "logistic_regression", "wine", "wine-logreg", 1),
    ("iris-svm", "svm", "iris", "iris-svm", 1),
    ("breast-cancer-decision-tree", "decision_tree", "breast_cancer", "breast-cancer-tree", 1),
    ("wine-svm-sweep", "svm", "wine", "svm-wine", 1),
]
TORCH_JOB = ("digits-mlp-2-ranks", "torch_mlp", "digits", "torch_mlp-digits", 2)
COLUMNS = ("JOB", "ALGORITHM", "DATASET", "STATE", "TEST ACCURACY", "AGENT", "REGISTERED AS", "MODEL (sha256)")


def test_scripts_demo_is_setup_venv_then_tensorfleet_demo() -> None:
    """What the slow test below runs is what scripts/demo runs once its venv is set up."""
    lines = [line for line in (ROOT / "scripts" / "demo").read_text().splitlines() if not line.startswith("#")]
    assert "scripts/setup-venv" in lines
    assert "export TENSORFLEET_MDNS_INTERFACES=${TENSORFLEET_MDNS_INTERFACES:-127.0.0.1}" in lines
    assert lines[-1] == 'exec .venv/bin/tensorfleet demo "$@"'
    assert lines.index("scripts/setup-venv") < len(lines) - 1


def _table(stdout: str) -> tuple[str, list[dict[str, str]]]:
    """The title and the rows of the demo's result table (rich's box drawing)."""
    title = next(line.strip() for line in stdout.splitlines() if "TensorFleet demo:" in line)
    header, *rows = [
        [cell.strip() for cell in line.strip().strip("┃│").split("┃" if "┃" in line else "│")]
        for line in stdout.splitlines()
        if line.lstrip().startswith(("┃", "│"))
    ]
    assert tuple(header) == COLUMNS, header
    return title, [dict(zip(COLUMNS, row, strict=True)) for row in rows]


async def _registry(controller_dir: Path) -> list[dict[str, Any]]:
    store = open_store(resolve_uris(controller_dir)[0])
    await store.open()
    try:
        return await store.model_versions()
    finally:
        await store.close()


@pytest.mark.slow
def test_demo_trains_the_seed_jobs_and_prints_their_models(tmp_path: Path) -> None:
    executable = Path(sys.executable).with_name("tensorfleet")  # the console script scripts/demo execs
    assert executable.exists(), f"{executable}: the venv has no tensorfleet command (pip install -e .)"
    data_dir, user_data, runtime = tmp_path / "demo", tmp_path / "xdg-data", tmp_path / "runtime"
    user_data.mkdir()
    runtime.mkdir(mode=0o700)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TENSORFLEET_", "XDG_")) and k not in ("DISPLAY", "WAYLAND_DISPLAY")
    }  # no token, store or controller of the caller's; no display: the table (with one, the app opens instead)
    env |= {
        "TENSORFLEET_MDNS_INTERFACES": "127.0.0.1",  # scripts/demo's default
        "XDG_DATA_HOME": str(user_data),  # where the user's real data dir would be: must stay empty
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "TENSORFLEET_RUNTIME_DIR": str(runtime),  # the controller's connection file: removed when it stops
        "COLUMNS": "220",  # the table unwrapped
    }
    result = subprocess.run(
        [str(executable), "demo", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=170,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "found 2 agents over mDNS: demo-agent-1, demo-agent-2" in result.stderr

    expected = SEED_JOBS + ([TORCH_JOB] if importlib.util.find_spec("torch") else [])
    title, rows = _table(result.stdout)
    assert re.fullmatch(rf"TensorFleet demo: {len(expected)} jobs in [0-9.]+s", title), title
    assert [r["JOB"] for r in rows] == [job for job, *_ in expected]
    registry = {(m["name"], m["version"]): m for m in asyncio.run(_registry(data_dir / "controller"))}
    blobs = BlobStore(data_dir / "controller" / "blobs")
    for (_, algorithm, dataset, model_name, ranks), row in zip(expected, rows, strict=True):
        assert (row["ALGORITHM"], row["DATASET"], row["STATE"]) == (algorithm, dataset, "SUCCEEDED"), row
        chance = 0.1 if dataset == "digits" else 0.5  # 10 classes; 2 or 3 (a short torch run scores less)
        assert chance < float(row["TEST ACCURACY"]) <= 1.0, row
        agents = set(row["AGENT"].split(", "))
        assert agents <= {"demo-agent-1", "demo-agent-2"} and len(agents) >= ranks, row
        name, _, version = row["REGISTERED AS"].rpartition(":")
        assert name == model_name, row
        model = registry.pop((name, int(version)))  # registered by this run, and each job its own version
        assert (model["algorithm"], model["dataset"]["name"]) == (algorithm, dataset), model
        assert re.fullmatch("[0-9a-f]{16}", row["MODEL (sha256)"]) and model["sha256"].startswith(row["MODEL (sha256)"])
        assert file_sha256(blobs.path(model["sha256"])) == model["sha256"], f"{name}: the stored model file"
    assert not registry, f"versions the table does not show: {sorted(registry)}"

    for agent in ("demo-agent-1", "demo-agent-2"):  # mDNS on loopback only, as scripts/demo promises
        adverts = re.findall(r"advertised \S+ on (\S+) port", (data_dir / f"{agent}.log").read_text())
        assert adverts == ["127.0.0.1"], adverts
    assert not any(user_data.iterdir()), "the demo wrote into the user's data dir"
    assert not any(runtime.iterdir()), "the demo left its controller's connection file behind"
