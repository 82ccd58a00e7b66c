"""A project folder as a content-addressed snapshot: its manifest, its id, its git state, what to upload."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tensorfleet_agent.core.digest import file_digest
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import (
    MAX_FILES,
    MODE_EXECUTABLE,
    MODE_FILE,
    ManifestEntry,
    manifest_id,
    validate_manifest,
)
from tensorfleet_desktop.project.errors import ProjectError
from tensorfleet_desktop.project.git import GitInfo, git_info
from tensorfleet_desktop.project.hash_cache import HashCache, default_cache_dir
from tensorfleet_desktop.project.walk import FoundFile, list_files

MiB = 1 << 20
DEFAULT_MAX_BYTES = 200 * MiB
_LARGEST = 5
_HASH_THREADS = min(8, os.cpu_count() or 1)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


@dataclasses.dataclass(frozen=True)
class UploadPlan:
    """What an upload sends: each missing content once; `as_json` is submit --json's "upload" object."""

    files: int
    bytes: int
    uploaded_files: int
    uploaded_bytes: int
    send: tuple[ManifestEntry, ...]

    def as_json(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes, "uploaded_bytes": self.uploaded_bytes}


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The files of a project folder as sent: `entries` sorted by path, `id` = sha256 of their canonical encoding."""

    root: Path
    entries: tuple[ManifestEntry, ...]
    id: str
    git: GitInfo | None
    scan_seconds: float
    hashed_files: int  # files read and hashed by this scan (the others came from the hash cache)

    @property
    def files(self) -> int:
        return len(self.entries)

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def blobs(self) -> set[str]:
        """The distinct contents (sha256s): what to ask the controller which it lacks (`MissingBlobs`)."""
        return {e.sha256 for e in self.entries}

    def missing(self, have: Collection[str]) -> list[ManifestEntry]:
        """One entry per content the controller lacks (the first path holding it): the files to upload."""
        seen = set(have)
        send = []
        for entry in self.entries:
            if entry.sha256 not in seen:
                seen.add(entry.sha256)
                send.append(entry)
        return send

    def plan_upload(self, have: Collection[str]) -> UploadPlan:
        send = tuple(self.missing(have))
        return UploadPlan(self.files, self.bytes, len(send), sum(e.size for e in send), send)

    def local_path(self, entry: ManifestEntry) -> Path:
        """Where to read an entry's content; the uploader must check the sha256 again (the file may have changed)."""
        return self.root / entry.path

    def manifest(self) -> list[dict[str, object]]:
        """The manifest JSON-ready (`tensorfleet_agent.core.manifest.parse_manifest` reads it back)."""
        return [e.as_dict() for e in self.entries]


def _largest_folders(found: list[FoundFile]) -> str:
    """The top-level folders holding the most bytes: a folder of many small files explains a size as well."""
    folders: dict[str, list[int]] = {}
    for f in found:
        top, sep, _ = f.path.partition("/")
        if sep:
            folder = folders.setdefault(top, [0, 0])
            folder[0] += f.size
            folder[1] += 1
    ranked = sorted(folders.items(), key=lambda kv: (-kv[1][0], kv[0]))[:_LARGEST]
    return ", ".join(f"{name}/ ({human_size(size)} in {count} files)" for name, (size, count) in ranked)


def _advice(root: Path, example: str, limit_flag: str) -> str:
    return (
        f"Leave them out with a line such as '/{example}' in {root / '.tensorfleetignore'} (or .gitignore), "
        f"ship data as a dataset (--dataset), or raise the limit ({limit_flag})"
    )


def _too_large(root: Path, found: list[FoundFile], total: int, max_bytes: int) -> ProjectError:
    largest = sorted(found, key=lambda f: (-f.size, f.path))[:_LARGEST]
    named = ", ".join(f"{f.path} ({human_size(f.size)})" for f in largest)
    folders = _largest_folders(found)
    return ProjectError(
        f"project {root} holds {human_size(total)} in {len(found)} files, over the limit of {human_size(max_bytes)}; "
        f"largest files: {named}{f'; largest folders: {folders}' if folders else ''}. "
        + _advice(root, largest[0].path if largest else "data/", "--max-project-size"),
        tuple(f.path for f in largest),
    )


def _too_many(root: Path, found: list[FoundFile], max_files: int) -> ProjectError:
    folders = _largest_folders(found)
    counts: dict[str, int] = {}
    for f in found:
        top, sep, _ = f.path.partition("/")
        if sep:
            counts[top] = counts.get(top, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:_LARGEST]
    named = ", ".join(f"{name}/ ({count} files)" for name, count in ranked)
    return ProjectError(
        f"project {root} holds {len(found)} files, over the limit of {max_files}; "
        f"folders with the most files: {named or 'none (they are all at the top)'}"
        f"{f'; largest folders: {folders}' if folders else ''}. "
        + _advice(root, (ranked[0][0] + "/") if ranked else "data/", "max_files"),
        tuple(name + "/" for name, _ in ranked),
    )


def _hash_all(root: Path, todo: list[FoundFile]) -> tuple[dict[str, tuple[str, int]], list[str]]:
    """sha256 and size of each file (threads: hashlib releases the GIL); the paths that could not be read."""
    digests: dict[str, tuple[str, int]] = {}
    unreadable: list[str] = []

    def one(found: FoundFile) -> None:
        try:
            digests[found.path] = file_digest(root / found.path)
        except OSError as exc:
            unreadable.append(f"{found.path} ({exc.strerror or exc})")

    if len(todo) < 2 * _HASH_THREADS:
        for found in todo:
            one(found)
    else:
        with ThreadPoolExecutor(_HASH_THREADS, thread_name_prefix="project-hash") as pool:
            list(pool.map(one, todo))
    return digests, sorted(unreadable)


def snapshot(
    directory: Path | str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    with_git: bool = True,
    max_files: int = MAX_FILES,
) -> Snapshot:
    """Scan, check and hash DIR (blocking: call it in a thread from async code); a ProjectError says what is wrong.

    The size limit is checked on the files' sizes before anything is read, so a folder of gigabytes is refused at
    once. `cache_dir` is where file hashes are remembered (default: the user's cache dir), `use_cache=False`
    hashes every file, `with_git=False` skips the git state; a project of more than `max_files` files is refused
    (naming the folders that hold most of them) before anything is read.
    """
    started = time.perf_counter()
    root = Path(os.path.realpath(Path(directory).expanduser())) if Path(directory).exists() else Path(directory)
    side = ThreadPoolExecutor(1, thread_name_prefix="project-git")
    try:  # git runs while the files are hashed; a refusal does not wait for it
        git = side.submit(git_info, root) if with_git and root.is_dir() else None
        entries, hashed = _scan(root, max_bytes, max_files, cache_dir, use_cache)
        info = git.result() if git is not None else None
    finally:
        side.shutdown(wait=False)
    return Snapshot(root, entries, manifest_id(entries), info, time.perf_counter() - started, hashed)


def _scan(
    root: Path, max_bytes: int, max_files: int, cache_dir: Path | None, use_cache: bool
) -> tuple[tuple[ManifestEntry, ...], int]:
    """The checked manifest of DIR and how many files were hashed (not found in the cache)."""
    found = list_files(root)
    if len(found) > max_files:
        raise _too_many(root, found, max_files)
    total = sum(f.size for f in found)
    if total > max_bytes:
        raise _too_large(root, found, total, max_bytes)
    cache = HashCache(cache_dir or default_cache_dir(), str(root)) if use_cache else None
    known: dict[str, str] = {}
    todo: list[FoundFile] = []
    for f in found:
        sha = cache.lookup(f) if cache is not None else None
        if sha is None:
            todo.append(f)
        else:
            known[f.path] = sha
    hashed_at = time.time_ns()
    digests, unreadable = _hash_all(root, todo)
    if unreadable:
        raise ProjectError(
            f"project {root} has files that cannot be read: {', '.join(unreadable[:10])}"
            f"{f' and {len(unreadable) - 10} more' if len(unreadable) > 10 else ''}; fix their permissions or "
            f"leave them out in {root / '.tensorfleetignore'}",
            tuple(unreadable),
        )
    entries = []
    for f in found:
        mode = MODE_EXECUTABLE if f.executable else MODE_FILE
        if f.path in known:
            entries.append(ManifestEntry(f.path, mode, known[f.path], f.size))
            continue
        sha, size = digests[f.path]
        entries.append(ManifestEntry(f.path, mode, sha, size))
        if cache is not None and size == f.size:  # a file that changed while read is hashed again next time
            cache.remember(f, sha, hashed_at)
    total = sum(e.size for e in entries)
    if total > max_bytes:  # files grew while read
        raise _too_large(root, found, total, max_bytes)
    try:
        checked = validate_manifest(entries, max_files=max_files)
    except ValidationError as exc:
        raise ProjectError(f"project {root} cannot be sent: {exc}") from exc
    if cache is not None:
        cache.save()
    return checked, len(todo)
