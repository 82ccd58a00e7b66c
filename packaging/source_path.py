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


def project_runtime() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(binaries, datas) a project job needs on a packaged agent besides the code (issue 19):

    - the uv executable of the `uv` package, at bin/uv in the bundle: tensorfleet_agent.runtime.uv_run looks for
      it there when frozen (and uv's own find_uv_bin() looks next to its package, the same place);
    - the task SDK, agent/task_sdk/*.py, at tensorfleet_agent/task_sdk/: the agent puts that folder (next to its
      package, where it also is in a wheel) on a project command's PYTHONPATH. Files, not modules of the bundle:
      the user's own Python imports them.
    """
    import uv

    sdk = sorted((ROOT / "agent" / "task_sdk").glob("*.py"))
    if not sdk:
        raise SystemExit(f"no task SDK in {ROOT / 'agent' / 'task_sdk'}: a packaged agent could not run projects")
    return [(uv.find_uv_bin(), "bin")], [(str(path), "tensorfleet_agent/task_sdk") for path in sdk]


def skops_old_protocols() -> list[str]:
    """skops loads files of older protocols from skops.io.old, a folder without __init__.py that
    collect_submodules skips; list its modules by hand."""
    import skops

    folder = Path(skops.__file__).parent / "io" / "old"
    return sorted(f"skops.io.old.{p.stem}" for p in folder.glob("*.py"))
