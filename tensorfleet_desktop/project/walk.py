"""Which files of a project folder are sent: git's ignore rules, read with `pathspec` (no git needed).

Rules, as git applies them: `.gitignore` in DIR and in every folder below it (a deeper file wins over a shallower
one, the last matching line of a file wins, `!` re-includes, a trailing `/` matches folders only, a leading or
inner `/` anchors to the file's folder), a folder that is ignored is not entered (so nothing under it can be
re-included), and when DIR lies inside a git repository the `.gitignore` files of the folders between the
repository's top and DIR and its `.git/info/exclude` apply too (unless the repository ignores DIR itself: then DIR
stands on its own rules). A `.tensorfleetignore` next to any `.gitignore` has the same syntax and is read after
it (so it may also `!`-re-include what `.gitignore` ignores). The user's global excludes file (`core.excludesFile`)
is not read: what is sent must not depend on who sends it.

Never sent, whatever the rules: `.git`, `__pycache__`, virtualenvs (a folder holding `pyvenv.cfg`, or named
`.venv` / `venv`) and conda envs (a folder holding `conda-meta`). Sockets, FIFOs and devices are skipped, as git
skips them.

Symlinks are followed when their target lies inside DIR: a link to a file is sent as a regular file with the
target's content, a link to a folder as that folder's files under the link's path. A link whose target is outside
DIR, a broken link and a link loop are refused (unless an ignore rule excludes the link).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pathspec

from tensorfleet_desktop.project.errors import ProjectError

IGNORE_FILES = (".gitignore", ".tensorfleetignore")
NEVER_SENT = frozenset({".git", "__pycache__", ".venv", "venv"})
ENV_MARKERS = ("pyvenv.cfg", "conda-meta")
_SHOWN = 10


@dataclasses.dataclass(frozen=True)
class FoundFile:
    """A file to send: its posix path under DIR and the stat facts the hash cache is keyed by."""

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int
    executable: bool


@dataclasses.dataclass(frozen=True)
class _Level:
    """The rules of one folder: a path under DIR is matched as `prefix + path[strip:]` (relative to that folder)."""

    strip: int
    prefix: str
    spec: pathspec.GitIgnoreSpec


def _read_rules(folder: str, names: tuple[str, ...]) -> list[str]:
    lines: list[str] = []
    for name in names:
        try:
            with open(os.path.join(folder, name), encoding="utf-8", errors="surrogateescape") as fh:
                lines.extend(fh.read().splitlines())
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
        except OSError as exc:
            raise ProjectError(f"cannot read {os.path.join(folder, name)}: {exc.strerror}") from exc
    return lines


def _level(folder: str, strip: int, prefix: str, names: tuple[str, ...] = IGNORE_FILES) -> _Level | None:
    lines = _read_rules(folder, names)
    if not any(line.strip() and not line.startswith("#") for line in lines):
        return None
    return _Level(strip, prefix, pathspec.GitIgnoreSpec.from_lines(lines))


def _prefix(root: str, base: str) -> str:
    """What to put before a path under DIR to make it relative to `base`, a folder at or above DIR."""
    return "" if root == base else os.path.relpath(root, base) + "/"


def _repository_levels(root: str) -> list[_Level]:
    """The rules of the git repository DIR lies inside, from its top down to DIR's parent (DIR's own come later).

    None when DIR, or a folder between the repository's top and DIR, is itself ignored there: DIR is then not part
    of the repository's tree, and the user who names it wants its files, so it is taken on its own rules.
    """
    chain: list[str] = []
    folder = root
    while not os.path.lexists(os.path.join(folder, ".git")):
        parent = os.path.dirname(folder)
        if parent == folder:
            return []  # not inside a repository
        folder = parent
        chain.append(folder)
    top = folder
    ancestors = list(reversed(chain))  # top first, DIR's parent last
    per_folder: list[tuple[str, _Level]] = []
    if os.path.isdir(os.path.join(top, ".git")):
        exclude = _level(os.path.join(top, ".git", "info"), 0, "", ("exclude",))
        if exclude is not None:
            per_folder.append((top, exclude))
    for ancestor in ancestors:
        level = _level(ancestor, 0, "")
        if level is not None:
            per_folder.append((ancestor, level))
    for inner in [*ancestors[1:], root]:
        ignored = False
        for base, level in per_folder:
            if inner.startswith(base + os.sep):
                result = level.spec.check_file(os.path.relpath(inner, base) + "/")
                if result.include is not None:
                    ignored = result.include
        if ignored:
            return []
    return [dataclasses.replace(level, prefix=_prefix(root, base)) for base, level in per_folder]


def _ignored(levels: list[_Level], rel: str, is_dir: bool) -> bool:
    decision = False
    tail = "/" if is_dir else ""
    for level in levels:
        result = level.spec.check_file(level.prefix + rel[level.strip :] + tail)
        if result.include is not None:
            decision = result.include
    return decision


def _is_environment(folder: str) -> bool:
    return any(os.path.lexists(os.path.join(folder, marker)) for marker in ENV_MARKERS)


class _Walker:
    def __init__(self, root: str) -> None:
        self.root = root
        self.found: list[FoundFile] = []
        self.escapes: list[str] = []
        self.broken: list[str] = []
        self.loops: list[str] = []
        self.unreadable: list[str] = []
        self.bad_names: list[str] = []

    def _inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root + os.sep)

    def walk(self, folder: str, rel: str, levels: list[_Level], stack: frozenset[str]) -> None:
        """Files of `folder` (reached as `rel`, '' for DIR); `stack` holds the real paths of the folders above."""
        level = _level(folder, len(rel), "")
        if level is not None:
            levels = [*levels, level]
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.unreadable.append(f"{rel or '.'}/ ({exc.strerror})")
            return
        for entry in entries:
            self._visit(entry, rel, levels, stack)

    def _visit(self, entry: os.DirEntry[str], rel: str, levels: list[_Level], stack: frozenset[str]) -> None:
        path = f"{rel}{entry.name}"
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            self.bad_names.append(repr(os.fsencode(path))[2:-1])
            return
        try:
            is_link = entry.is_symlink()
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError as exc:
            self.unreadable.append(f"{path} ({exc.strerror})")
            return
        if entry.name in NEVER_SENT and (is_dir or entry.name == ".git"):
            return
        if _ignored(levels, path, is_dir):
            return
        if is_dir and _is_environment(entry.path):
            return
        real = entry.path
        if is_link:
            real = os.path.realpath(entry.path)
            if not self._inside(real):
                self.escapes.append(f"{path} -> {os.readlink(entry.path)}")
                return
            if not os.path.exists(real):
                self.broken.append(f"{path} -> {os.readlink(entry.path)}")
                return
        if is_dir:
            if is_link and real in stack:
                self.loops.append(f"{path} -> {os.readlink(entry.path)}")
                return
            self.walk(entry.path, path + "/", levels, stack | {real})
            return
        try:
            st = entry.stat(follow_symlinks=True)
        except OSError as exc:
            self.unreadable.append(f"{path} ({exc.strerror})")
            return
        if not stat.S_ISREG(st.st_mode):
            return  # sockets, FIFOs, devices: git skips them too
        executable = bool(st.st_mode & stat.S_IXUSR)
        self.found.append(FoundFile(path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, executable))

    def problems(self) -> Iterator[tuple[str, list[str], str]]:
        yield "symlinks that leave the project", self.escapes, "replace them with the files, or ignore them"
        yield "broken symlinks", self.broken, "remove them, or ignore them"
        yield "symlink loops", self.loops, "remove them, or ignore them"
        yield "unreadable paths", self.unreadable, "fix their permissions, or ignore them"
        yield "names that are not UTF-8", self.bad_names, "rename them, or ignore them"


def list_files(directory: Path) -> list[FoundFile]:
    """The files of DIR that a snapshot sends, sorted by path; a ProjectError lists every path refused."""
    if not directory.exists():
        raise ProjectError(f"project folder {directory} does not exist")
    if not directory.is_dir():
        raise ProjectError(f"project folder {directory} is not a folder")
    root = os.path.realpath(directory)
    walker = _Walker(root)
    walker.walk(root, "", _repository_levels(root), frozenset({root}))
    lines: list[str] = []
    listed: list[str] = []
    for what, paths, advice in walker.problems():
        if paths:
            more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
            lines.append(f"{what}: {', '.join(paths[:_SHOWN])}{more} ({advice})")
            listed.extend(paths)
    if not lines and not walker.found:
        raise ProjectError(
            f"project {root} has no file to send: every file in it is ignored (.gitignore, .tensorfleetignore) "
            "or lies in .git, a virtualenv or __pycache__"
        )
    if lines:
        hint = f"to leave a path out, add it to {os.path.join(root, '.tensorfleetignore')}"
        raise ProjectError(f"project {root} cannot be sent: " + "; ".join(lines) + f"; {hint}", tuple(listed))
    walker.found.sort(key=lambda f: f.path)
    return walker.found
