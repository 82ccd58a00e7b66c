"""Where a project's code came from, when its folder is in a git repository: commit, branch, dirty diff.

Read with the `git` executable (a subprocess with a timeout per call); without git, outside a repository, or when
git fails (a repository owned by another user, a timeout), there is no information and no error: a job is never
refused for its git state. Status, diff and untracked files are those under DIR (`-- .`); paths are relative to the
repository's top, so `git checkout COMMIT && git apply DIFF` in a clone, then `cd SUBDIR`, rebuilds the code.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path

DIFF_LIMIT = 1 << 20
MAX_UNTRACKED = 1000
GIT_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class GitInfo:
    """The git state of a project folder, JSON-ready through `as_dict` (stored with the job)."""

    commit: str  # '' in a repository without commits
    branch: str  # '' on a detached HEAD
    dirty: bool  # tracked changes or untracked (not ignored) files under DIR
    diff: str  # `git diff HEAD -- DIR`, cut at `diff_limit` bytes
    diff_truncated: bool
    untracked: tuple[str, ...]  # untracked, not ignored files under DIR (repository-relative), at most MAX_UNTRACKED
    subdir: str  # DIR relative to the repository's top ('' at the top)
    remote: str  # origin's URL without credentials, '' when none

    def as_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "untracked": list(self.untracked)}


class _GitFailed(Exception):
    pass


def _git(directory: Path, args: list[str], limit: int = DIFF_LIMIT, timeout: float = GIT_TIMEOUT) -> tuple[bytes, bool]:
    """(stdout cut at `limit` bytes, whether it was cut); _GitFailed on a non-zero exit or a timeout."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    # no user excludes file: the untracked files listed are those the snapshot sends (walk.py does not read it)
    config = ["-c", "core.fsmonitor=false", "-c", "color.ui=false", "-c", f"core.excludesFile={os.devnull}"]
    cmd = ["git", *config, "-C", str(directory), *args]
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
    except OSError as exc:
        raise _GitFailed(str(exc)) from exc
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        data = proc.stdout.read(limit + 1)
        cut = len(data) > limit
        if cut:
            proc.kill()
        else:
            proc.stdout.read()
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.stdout is not None:
            proc.stdout.close()
    if cut:
        return data[:limit], True
    if code != 0:
        raise _GitFailed(f"{args[0]} exited {code}")
    return data, False


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").strip()


def _without_credentials(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def git_info(directory: Path, *, diff_limit: int = DIFF_LIMIT, timeout: float = GIT_TIMEOUT) -> GitInfo | None:
    """The git state of DIR, or None (no git, not a repository, git failed); blocking, run it in a thread."""
    if shutil.which("git") is None:
        return None
    try:
        subdir = _text(_git(directory, ["rev-parse", "--show-prefix"], timeout=timeout)[0]).rstrip("/")
        try:
            commit = _text(_git(directory, ["rev-parse", "--verify", "-q", "HEAD"], timeout=timeout)[0])
        except _GitFailed:
            commit = ""
        try:
            branch = _text(_git(directory, ["symbolic-ref", "-q", "--short", "HEAD"], timeout=timeout)[0])
        except _GitFailed:
            branch = ""
        status, _ = _git(
            directory, ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--", "."], timeout=timeout
        )
        records = [r for r in status.decode("utf-8", errors="replace").split("\0") if r]
        untracked = [r[3:] for r in records if r.startswith("?? ")]
        diff, cut = b"", False
        if commit:
            diff, cut = _git(
                directory, ["diff", "HEAD", "--no-ext-diff", "--no-textconv", "--", "."], diff_limit, timeout
            )
        try:
            remote = _text(_git(directory, ["remote", "get-url", "origin"], timeout=timeout)[0])
        except _GitFailed:
            remote = ""
    except _GitFailed:
        return None
    return GitInfo(
        commit=commit,
        branch=branch,
        dirty=bool(records),
        diff=diff.decode("utf-8", errors="replace"),
        diff_truncated=cut,
        untracked=tuple(untracked[:MAX_UNTRACKED]),
        subdir=subdir,
        remote=_without_credentials(remote),
    )
