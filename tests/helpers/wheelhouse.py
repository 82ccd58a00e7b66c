"""A local wheelhouse of tiny packages, built with `uv build` (uv's own build backend, no index), and the uv
settings that make uv use it and nothing else: tests never reach a package index."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import uv

UV = uv.find_uv_bin()


def write_project(
    root: Path,
    name: str,
    version: str = "1.0.0",
    deps: tuple[str, ...] = (),
    *,
    code: str = "",
    build: bool = True,
    scripts: dict[str, str] | None = None,
) -> Path:
    """A minimal src-layout project `name` at root/name; `code` is its __init__.py, `scripts` its console scripts."""
    project = root / name
    module = name.replace("-", "_")
    (project / "src" / module).mkdir(parents=True)
    (project / "src" / module / "__init__.py").write_text(code or f"VERSION = {version!r}\n")
    deps_toml = ", ".join(f'"{d}"' for d in deps)
    backend = '\n[build-system]\nrequires = ["uv_build>=0.8,<0.20"]\nbuild-backend = "uv_build"\n' if build else "\n"
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "{name}"
            version = "{version}"
            requires-python = ">=3.11"
            dependencies = [{deps_toml}]
            """
        )
        + backend
        + "".join(f'\n[project.scripts]\n{k} = "{v}"\n' for k, v in (scripts or {}).items())
    )
    return project


def build_wheel(
    wheelhouse: Path,
    root: Path,
    name: str,
    version: str = "1.0.0",
    deps: tuple[str, ...] = (),
    *,
    code: str = "",
    scripts: dict[str, str] | None = None,
) -> Path:
    """Build `name`==`version` (requiring `deps`) into `wheelhouse`; returns the wheel."""
    project = write_project(root / f"{name}-{version}", name, version, deps, code=code, scripts=scripts)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [UV, "build", "--offline", "--wheel", "--out-dir", str(wheelhouse), str(project)],
        check=True,
        capture_output=True,
        env={**os.environ, **offline_env(wheelhouse, root / "uv-cache")},
        timeout=120,
    )
    (wheel,) = wheelhouse.glob(f"{name.replace('-', '_')}-{version}-*.whl")
    return wheel


def offline_env(wheelhouse: Path, cache: Path) -> dict[str, str]:
    """uv settings: packages from `wheelhouse` only, never the network, a private cache."""
    return {
        "UV_FIND_LINKS": str(wheelhouse),
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        "UV_CACHE_DIR": str(cache),
        "UV_NO_CONFIG": "1",
        "UV_PYTHON_DOWNLOADS": "never",
    }
