"""Example training projects for the end-to-end project tests and benchmarks/project_bench.py (issue 19).

Everything here is built locally and offline: the one third-party package the projects need, `tfdemo-util`, is a
wheel built into a wheelhouse with `uv build` (helpers/wheelhouse.py), and an agent given `agent_uv_env(house,
cache)` resolves from that wheelhouse only (UV_OFFLINE, UV_NO_INDEX, UV_FIND_LINKS). torch is never installed:
a project that needs it names none (or `torch`, which the agent's own torch satisfies).

    house = demo_wheelhouse(tmp / "wheels")              # tfdemo_util-1.0.0-py3-none-any.whl
    trainer_project(tmp / "p")                           # python -m trainer.train --config configs/base.json
    uv_lock_project(tmp / "locked", house, cache)        # uv.lock made offline against the wheelhouse
    ddp_project(tmp / "ddp")                             # 2 ranks, torch.distributed gloo, env://
    failing_requirement_project(tmp / "bad")             # requirements.txt names a package no index has
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

from helpers.project_tree import write_tree
from helpers.wheelhouse import UV, build_wheel, offline_env

UTIL_NAME = "tfdemo-util"
UTIL_VERSION = "1.0.0"
UTIL_CODE = textwrap.dedent(
    """\
    VERSION = "1.0.0"


    def scale(value: float, factor: float = 2.0) -> float:
        return value * factor
    """
)
MISSING_PACKAGE = "tfdemo-nowhere"  # in no wheelhouse, on no index: uv cannot resolve it
FIRST_LINE = "trainer start"  # the first line the trainer prints, followed by time.time()
TRAIN_COMMAND = ["python", "-m", "trainer.train", "--config", "configs/base.json"]

TRAIN_PY = '''\
"""Train the toy model: reads a config, reports a loss per step, writes outputs (result.json, curve.csv)."""

import argparse
import json
import sys
import time
from pathlib import Path

print(f"trainer start {time.time():.6f}", flush=True)  # first: the benchmarks time submit -> this line

import tensorfleet_task as task
import tfdemo_util

from trainer import model
from trainer.data import points


def main(argv=None):
    parser = argparse.ArgumentParser(prog="trainer.train")
    parser.add_argument("--config", default="configs/base.json")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to wait after training (cancel tests)")
    parser.add_argument("--exit-code", type=int, default=0, help="fail on purpose, after writing outputs")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    lr = args.lr if args.lr is not None else config["lr"]
    print(f"tfdemo_util {tfdemo_util.VERSION} model {model.MODEL_VERSION} lr {lr}", flush=True)
    weight, curve = 0.0, []
    data = points(config["points"])
    for step in range(config["steps"]):
        weight, loss = model.update(weight, data, lr)
        curve.append(loss)
        task.report(step, loss=loss, scaled=tfdemo_util.scale(loss))
        task.progress((step + 1) / config["steps"])
    out = task.output_dir()
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({"weight": weight, "loss": curve[-1], "model": model.MODEL_VERSION}))
    (out / "plots" / "curve.csv").write_text("".join(f"{i},{v}\\n" for i, v in enumerate(curve)))
    print(f"done weight={weight:.4f} loss={curve[-1]:.6f}", flush=True)
    if args.sleep:
        print(f"sleeping {args.sleep}", flush=True)
        time.sleep(args.sleep)
    if args.exit_code:
        print(f"failing on purpose with {args.exit_code}", file=sys.stderr, flush=True)
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
'''

MODEL_PY = '''\
"""One step of least squares on y = 3x: the gradient of the mean squared error, by hand."""

MODEL_VERSION = "v1"


def update(weight, data, lr):
    grad = sum(2 * (weight * x - y) * x for x, y in data) / len(data)
    weight -= lr * grad
    loss = sum((weight * x - y) ** 2 for x, y in data) / len(data)
    return weight, loss
'''

DATA_PY = '''\
"""The toy data set: points on y = 3x."""


def points(n):
    return [(i / n, 3 * i / n) for i in range(1, n + 1)]
'''

DDP_PY = '''\
"""Two ranks meet through torch.distributed (gloo, env://) and sum their ranks."""

import json
import os

import tensorfleet_task as task
import torch
import torch.distributed as dist

print(f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']} starting", flush=True)
dist.init_process_group("gloo", init_method="env://")
value = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(value)
task.report(0, total=float(value.item()), world=float(dist.get_world_size()), rank=float(task.rank()))
out = task.output_dir()
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{task.rank()}.json").write_text(json.dumps({"total": value.item(), "world": task.world_size()}))
print(f"rank {dist.get_rank()} total {value.item()}", flush=True)
dist.destroy_process_group()
'''


def demo_wheelhouse(root: Path) -> Path:
    """A wheelhouse holding tfdemo-util 1.0.0 (built offline with `uv build`); returns its folder."""
    house = root / "house"
    build_wheel(house, root / "build", UTIL_NAME, UTIL_VERSION, code=UTIL_CODE)
    return house


def agent_uv_env(house: Path, cache: Path) -> dict[str, str]:
    """What an agent's environment needs to build envs from `house` alone (never the network)."""
    return {**offline_env(house, cache), "GLOO_SOCKET_IFNAME": "lo"}


def trainer_files(requirements: str | None = f"{UTIL_NAME}=={UTIL_VERSION}\n") -> dict[str, str | bytes]:
    """The trainer package: several modules, a config, a .gitignore, a requirements.txt (None: no env file)."""
    files: dict[str, str | bytes] = {
        "trainer/__init__.py": '"""A toy trainer in several modules."""\n',
        "trainer/train.py": TRAIN_PY,
        "trainer/model.py": MODEL_PY,
        "trainer/data.py": DATA_PY,
        "configs/base.json": json.dumps({"steps": 5, "lr": 0.3, "points": 20}) + "\n",
        ".gitignore": "data/\n*.log\nouts/\n",
        "README.md": "Toy trainer: `python -m trainer.train --config configs/base.json`\n",
    }
    if requirements is not None:
        files["requirements.txt"] = requirements
    return files


def trainer_project(root: Path, requirements: str | None = f"{UTIL_NAME}=={UTIL_VERSION}\n") -> Path:
    """A multi-module project (`python -m trainer.train`) needing tfdemo-util from the wheelhouse."""
    return write_tree(root, trainer_files(requirements))


def uv_lock_project(root: Path, house: Path, cache: Path) -> Path:
    """The trainer as a uv project: pyproject.toml + a uv.lock made here, offline, against `house`."""
    files = trainer_files(requirements=None)
    files["pyproject.toml"] = textwrap.dedent(
        f"""\
        [project]
        name = "locked-trainer"
        version = "0.1.0"
        requires-python = ">=3.11"
        dependencies = ["{UTIL_NAME}>={UTIL_VERSION}"]
        """
    )
    write_tree(root, files)
    subprocess.run(
        [UV, "lock", "--offline"],
        cwd=root,
        env={**os.environ, **offline_env(house, cache)},
        check=True,
        capture_output=True,
        timeout=120,
    )
    return root


def ddp_project(root: Path) -> Path:
    """A 2-rank torch.distributed project; its requirements.txt names torch, which the agent's torch satisfies."""
    return write_tree(root, {"ddp/__init__.py": "", "ddp/allreduce.py": DDP_PY, "requirements.txt": "torch\n"})


def failing_requirement_project(root: Path) -> Path:
    """The trainer whose requirements.txt also names a package that exists nowhere: uv must refuse it."""
    return trainer_project(root, requirements=f"{UTIL_NAME}=={UTIL_VERSION}\n{MISSING_PACKAGE}==9.9\n")


def add_large_ignored_file(root: Path, size: int = 300 << 20) -> Path:
    """A sparse `data/huge.bin` of `size` bytes (over the 200 MiB limit), ignored by the project's .gitignore."""
    path = root / "data" / "huge.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


def add_escaping_symlink(root: Path) -> Path:
    """`configs/secrets.json` -> a file outside the project: the snapshot must refuse it."""
    outside = root.parent / f"{root.name}-outside.json"
    outside.write_text('{"token": "not for the cluster"}\n')
    link = root / "configs" / "secrets.json"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(outside, link.parent))
    return link


SLOW_NAME = "tfdemo-slow"
SLOW_BACKEND = '''\
"""A build backend that stalls: it writes its pid, then sleeps (a stand-in for a long compile)."""

import os
import time

PIDFILE = {pidfile!r}


def _stall(*_args, **_kwargs):
    with open(PIDFILE, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(600)
    raise RuntimeError("the slow backend never builds")


def get_requires_for_build_wheel(config_settings=None):
    return []


prepare_metadata_for_build_wheel = build_wheel = build_sdist = _stall
'''


def add_slow_sdist(house: Path, pidfile: Path) -> str:
    """An sdist `tfdemo-slow` in `house` whose in-tree build backend writes its pid to `pidfile` and sleeps for
    10 minutes: requiring it keeps a task PREPARING for as long as a test needs. Returns the requirement."""
    import io
    import tarfile

    base = "tfdemo_slow-1.0.0"
    members = {
        "pyproject.toml": textwrap.dedent(
            f"""\
            [project]
            name = "{SLOW_NAME}"
            version = "1.0.0"

            [build-system]
            requires = []
            build-backend = "slowbackend"
            backend-path = ["_backend"]
            """
        ),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {SLOW_NAME}\nVersion: 1.0.0\n",
        "_backend/slowbackend.py": SLOW_BACKEND.format(pidfile=str(pidfile)),
    }
    house.mkdir(parents=True, exist_ok=True)
    with tarfile.open(house / f"{base}.tar.gz", "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return f"{SLOW_NAME}==1.0.0"
