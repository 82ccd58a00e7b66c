#!/usr/bin/env python3
"""Build the packaged executables with PyInstaller (one-folder builds) and print their sizes and times as JSON.

    python packaging/build.py agent           # dist/tensorfleet-agent        (no torch: scikit-learn boxes)
    python packaging/build.py agent-torch     # dist/tensorfleet-agent-torch  (bundles the installed torch)
    python packaging/build.py desktop         # dist/tensorfleet              (app + CLI + controller + local agent)
    python packaging/build.py all

Run it in the environment that has TensorFleet installed (`pip install -e '.[all]' pyinstaller`), on the OS you
build for: PyInstaller does not cross-compile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = {
    "agent": ("tensorfleet-agent.spec", {"TENSORFLEET_FLAVOUR": "cpu"}, "tensorfleet-agent"),
    "agent-torch": ("tensorfleet-agent.spec", {"TENSORFLEET_FLAVOUR": "torch"}, "tensorfleet-agent-torch"),
    "desktop": ("tensorfleet.spec", {}, "tensorfleet"),
}


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def build(target: str, dist: Path, work: Path) -> dict[str, object]:
    spec, env, folder = TARGETS[target]
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            str(dist),
            "--workpath",
            str(work / target),
            str(HERE / spec),
        ],
        check=True,
        env={**os.environ, **env},
    )
    out = dist / folder
    return {
        "target": target,
        "path": str(out),
        "seconds": round(time.monotonic() - started, 1),
        "size_mib": round(folder_size(out) / 2**20, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("targets", nargs="+", choices=[*TARGETS, "all"])
    parser.add_argument("--dist", type=Path, default=HERE.parent / "dist")
    parser.add_argument("--work", type=Path, default=HERE.parent / "build" / "pyinstaller")
    args = parser.parse_args()
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        sys.exit("PyInstaller is not installed: pip install 'pyinstaller>=6.10'")
    targets = list(TARGETS) if "all" in args.targets else args.targets
    results = [build(t, args.dist, args.work) for t in targets]
    print(json.dumps({"builds": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
