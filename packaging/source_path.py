"""Where PyInstaller finds our packages: `agent/` is the package tensorfleet_agent only through the editable
install's import hook, which PyInstaller's analysis does not run, so the specs put a folder of links on pathex."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def package_path() -> str:
    links = ROOT / "build" / "pyinstaller-path"
    links.mkdir(parents=True, exist_ok=True)
    for name, folder in (("tensorfleet_agent", "agent"), ("tensorfleet_desktop", "tensorfleet_desktop")):
        link = links / name
        if not link.exists():
            os.symlink(ROOT / folder, link, target_is_directory=True)
    return str(links)


def skops_old_protocols() -> list[str]:
    """skops loads files of older protocols from skops.io.old, a folder without __init__.py that
    collect_submodules skips; list its modules by hand."""
    import skops

    folder = Path(skops.__file__).parent / "io" / "old"
    return sorted(f"skops.io.old.{p.stem}" for p in folder.glob("*.py"))
