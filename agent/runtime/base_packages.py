"""Reuse the agent's own torch and numpy inside a project env: no second multi-GB download, a GPU box keeps its CUDA
build, and torch finds the numpy it was used with (without it every `import torch` warns "Failed to initialize NumPy").

The agent usually runs from a virtualenv, and `uv venv --system-site-packages` would only expose the *base*
interpreter's site dir, not that virtualenv's torch. So a new env gets, for torch and the packages it needs (its
non-extra requirement closure as installed next to the agent; numpy is a root of its own, as torch only names it
as an optional dependency):

- a link farm `<venv>/tensorfleet-base/` of symlinks to those packages' top-level modules, put on sys.path *after*
  the env's own site-packages by `tensorfleet-base.pth` (a relative line, so the env stays relocatable);
- an installed-package record (`<name>-<version>.dist-info` with the real METADATA) in the env's site-packages, so
  uv sees torch as installed: a requirement the agent's torch satisfies is left alone (uv's ordinary handling of
  already-satisfied requirements), while one it does not satisfy makes uv replace the record with a real install,
  which then shadows the link farm. The record's RECORD lists only its own files, so an uninstall by uv can never
  reach the agent's files. So `numpy` or `numpy>=1.26` reuses the agent's numpy 2.x, while `numpy==1.26.4` (or a
  package needing `numpy<2`) gets its own numpy from uv.

Only for an env whose interpreter is the agent's own kind (same implementation and ABI, not a packaged agent):
the links are compiled modules for that interpreter (envs.Interpreter.shares_agent_packages).
"""

from __future__ import annotations

import importlib.metadata as md
import os
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOTS = ("torch", "numpy")  # packages reused when installed next to the agent, with what they require
FARM = "tensorfleet-base"
INSTALLER = "tensorfleet-agent (links to the agent's own copy)\n"


@dataclass(frozen=True)
class BasePackage:
    name: str  # canonical name
    version: str
    dist: md.Distribution


def base_closure(roots: tuple[str, ...] = ROOTS) -> list[BasePackage]:
    """The installed roots and everything they require (extras left out), in a stable order; [] without any."""
    found: dict[str, BasePackage] = {}
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # not installed next to the agent: uv installs it into the env if asked for
        found[name] = BasePackage(name, dist.version, dist)
        for text in dist.requires or []:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(found.values(), key=lambda p: p.name)


def fingerprint(packages: list[BasePackage]) -> str:
    """What an env built on these packages depends on; part of the env cache key."""
    return ",".join(f"{p.name}=={p.version}" for p in packages)


def public_version(version: str) -> str:
    """2.13.0+cu128 -> 2.13.0: what a lock file records for the same release."""
    try:
        return Version(version).public
    except InvalidVersion:
        return version


def _top_levels(dist: md.Distribution) -> set[str]:
    names: set[str] = set()
    for file in dist.files or []:
        first = file.parts[0] if file.parts else ""
        if not first or first in ("..", "__pycache__") or first.endswith((".dist-info", ".egg-info", ".pth")):
            continue
        names.add(first)
    return names


def link_base_packages(site_packages: Path, packages: list[BasePackage]) -> None:
    """Expose `packages` to the env at `site_packages` (blocking: call it in a thread)."""
    if not packages:
        return
    farm = site_packages.parents[2] / FARM  # <venv>/tensorfleet-base next to <venv>/lib/pythonX.Y/site-packages
    farm.mkdir(exist_ok=True)
    for pkg in packages:
        for top in sorted(_top_levels(pkg.dist)):
            target = Path(str(pkg.dist.locate_file(top)))
            link = farm / top
            if (target.exists() or target.is_symlink()) and not link.is_symlink():
                link.symlink_to(target)  # a namespace dir shared by several packages (nvidia/) is linked once
        record = site_packages / f"{pkg.name.replace('-', '_')}-{pkg.version}.dist-info"
        record.mkdir()
        metadata = (
            pkg.dist.read_text("METADATA") or f"Metadata-Version: 2.1\nName: {pkg.name}\nVersion: {pkg.version}\n"
        )
        (record / "METADATA").write_text(metadata)
        (record / "INSTALLER").write_text(INSTALLER)
        (record / "RECORD").write_text("".join(f"{record.name}/{n},,\n" for n in ("METADATA", "INSTALLER", "RECORD")))
    (site_packages / f"{FARM}.pth").write_text(os.path.relpath(farm, site_packages) + "\n")
