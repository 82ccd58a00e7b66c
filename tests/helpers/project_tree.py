"""Project folders for the snapshot tests: written from a dict or generated; git with a throw-away identity."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    """Each `path: content` written under root (folders made); returns root."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def generate_project(root: Path, files: int, size: int = 2048) -> Path:
    """A synthetic project of `files` modules in 50 packages, each `size` bytes of distinct text."""
    for i in range(files):
        path = root / f"pkg{i % 50:02d}" / f"mod{i:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        line = f"VALUE_{i} = {i}  # generated module {i}\n"
        path.write_text((line * (size // len(line) + 1))[:size], encoding="utf-8")
    return root


def git(root: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        # no user excludes file (~/.config/git/ignore): the snapshot does not read one either
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.excludesFile",
        "GIT_CONFIG_VALUE_0": os.devnull,
    }
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, env=env, check=True)
    return done.stdout
