#!/usr/bin/env python3
"""Compile resources/ (icons) into the Qt resource module the app imports; run after changing an icon.

The output is committed, so the app never compiles resources at run time; a test fails when it is stale.
Format version 1 carries no file times, so the output depends only on the files' contents.

Usage: python scripts/gen_resources.py [--out FILE]   (default: tensorfleet_desktop/ui/_resources_rc.py)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QRC = ROOT / "resources" / "tensorfleet.qrc"
DEFAULT_OUT = ROOT / "tensorfleet_desktop" / "ui" / "_resources_rc.py"


def rcc() -> str:
    here = Path(sys.executable).parent / "pyside6-rcc"
    found = str(here) if here.exists() else shutil.which("pyside6-rcc")
    if not found:
        sys.exit("pyside6-rcc not found: pip install 'tensorfleet[desktop]'")
    return found


def generate(out: Path) -> None:
    subprocess.run(
        [rcc(), "-g", "python", "--format-version", "1", QRC.name, "-o", str(out.resolve())],
        cwd=QRC.parent,
        check=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    generate(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
