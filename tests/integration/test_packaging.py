"""The folder agent/ installs as tensorfleet_agent, from the editable install and from a built wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import tensorfleet_agent
from tensorfleet_agent.core.project_layout import SDK_MODULE

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

IMPORT_ALL = """
import importlib, pkgutil, sys, tensorfleet_agent, tensorfleet_desktop
for pkg in (tensorfleet_agent, tensorfleet_desktop):
    for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if mod.name != "tensorfleet_desktop.__main__":
            importlib.import_module(mod.name)
print(tensorfleet_agent.__file__)
"""


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    # every folder of .py files: packages, and folders of modules without __init__.py (the task SDK)
    for folder, name in (("agent", "tensorfleet_agent"), ("tensorfleet_desktop", "tensorfleet_desktop")):
        for module in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in module.parts:
                rel = module.parent.relative_to(ROOT / folder).parts
                found.add(".".join((name, *rel)))
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}; stale: {sorted(listed - found)}"


def test_editable_install_maps_agent_folder() -> None:
    assert Path(tensorfleet_agent.__file__).resolve().parent == ROOT / "agent"


def test_built_wheel_installs_tensorfleet_agent(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="the dev extra builds wheels")
    dist = tmp_path / "dist"
    # from a copy of the sources: a build in the tree reuses build/lib, where a module since moved or deleted
    # lingers and ships in the wheel
    source = tmp_path / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("agent", "tensorfleet_desktop"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("tensorfleet-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    # Dependencies come from this interpreter's site-packages; a plain path entry does not run its .pth
    # files, so the editable install of the source tree stays invisible to the fresh venv.
    site = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = subprocess.run([py, "-c", IMPORT_ALL], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(env_dir), out.stdout
    version = subprocess.run([env_dir / "bin" / "tensorfleet-agent", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("tensorfleet-agent "), version
    generated = site / "tensorfleet_agent" / "_generated"
    assert (generated / "agent_pb2.py").exists() and (generated / "agent_pb2.pyi").exists()
    # the task SDK a project command imports, where the agent looks for it (next to the installed package)
    sdk = site / "tensorfleet_agent" / "task_sdk" / f"{SDK_MODULE}.py"
    assert sdk.read_bytes() == (ROOT / "agent" / "task_sdk" / f"{SDK_MODULE}.py").read_bytes()
