"""A dataset version as the client uploads it: a file or a folder snapshotted into a manifest (issue 20).

Unlike a project, every regular file under PATH is part of the dataset: no `.gitignore` rules, no size cap (only
`.git` folders are left out). Symlinks are followed, to files and to folders, wherever they point (the snapshot
holds their content); a broken link, a link loop, an unreadable path or a name that is not UTF-8 is refused with
the paths named. Every file is mode 0o644 (a dataset is data; agents materialize it read-only anyway).

A file over CHUNK_BYTES also lists the sha256 of each CHUNK_BYTES piece (`file_chunk_digests`, one read): the
pieces are the blobs it is stored and sent as, so a re-upload of an edited file sends the pieces that changed and
an interrupted upload resumes with the pieces that did not arrive. Hashes are remembered per file in the user's
cache (the project hash cache, keyed by size, mtime, ctime, inode and device) so an unchanged tree is not read
again.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tensorfleet_agent.core.digest import file_chunk_digests
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import (
    CHUNK_BYTES,
    MAX_FILES,
    MODE_FILE,
    ManifestEntry,
    manifest_id,
    validate_manifest,
)
from tensorfleet_desktop.client.errors import InvalidRequest
from tensorfleet_desktop.project.hash_cache import HashCache, default_cache_dir
from tensorfleet_desktop.project.walk import FoundFile

LEFT_OUT = frozenset({".git"})
_SHOWN = 10
_HASH_THREADS = min(8, os.cpu_count() or 1)

#: progress(phase, done, total): "hash" counts bytes hashed (cached files count at once), "upload" bytes sent.
Progress = Callable[[str, int, int], None]


class DatasetError(InvalidRequest):
    """PATH cannot be uploaded as it is; the message names the paths and what to do."""


@dataclasses.dataclass(frozen=True)
class Piece:
    """One blob to send: `size` bytes of `source` from `offset` (a whole small file, or one chunk of a large one)."""

    sha256: str
    source: Path
    offset: int
    size: int
    path: str  # the dataset path it belongs to, for messages


@dataclasses.dataclass(frozen=True)
class DatasetSnapshot:
    """`entries` sorted by path; `id` = the manifest id, the version's content id."""

    root: Path  # the folder uploaded, or the folder holding the file uploaded
    entries: tuple[ManifestEntry, ...]
    id: str
    hashed_files: int  # files read by this scan (the others came from the hash cache)
    scan_seconds: float
    file_source: Path | None  # PATH was one file (entries holds it alone, under PATH's name): where it is read

    def local_path(self, entry: ManifestEntry) -> Path:
        return self.file_source if self.file_source is not None else self.root / entry.path

    @property
    def files(self) -> int:
        return len(self.entries)

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def blobs(self) -> set[str]:
        """Every blob the version is stored as: small files and the chunks of large ones (not the manifest)."""
        return {b for e in self.entries for b in e.blobs}

    def pieces(self, missing: Collection[str]) -> list[Piece]:
        """The byte ranges to send for the blobs in `missing`, each blob once, in manifest order."""
        wanted, out = set(missing), []
        for entry in self.entries:
            if entry.chunks:
                for i, sha in enumerate(entry.chunks):
                    if sha in wanted:
                        wanted.discard(sha)
                        offset = i * CHUNK_BYTES
                        size = min(CHUNK_BYTES, entry.size - offset)
                        out.append(Piece(sha, self.local_path(entry), offset, size, entry.path))
            elif entry.sha256 in wanted:
                wanted.discard(entry.sha256)
                out.append(Piece(entry.sha256, self.local_path(entry), 0, entry.size, entry.path))
        return out


class _DatasetHashCache(HashCache):
    """The project hash cache's file format in a folder of its own; a value is "sha256" or "sha256 c1 c2 ..."."""


def default_dataset_cache_dir() -> Path:
    return default_cache_dir().parent / "dataset-hashes"


def _encode(sha: str, chunks: tuple[str, ...]) -> str:
    return " ".join((sha, *chunks))


def _decode(value: str) -> tuple[str, tuple[str, ...]]:
    sha, *chunks = value.split(" ")
    return sha, tuple(chunks)


class _Walker:
    def __init__(self) -> None:
        self.found: list[FoundFile] = []
        self.broken: list[str] = []
        self.loops: list[str] = []
        self.unreadable: list[str] = []
        self.bad_names: list[str] = []

    def walk(self, folder: str, rel: str, stack: frozenset[str]) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.unreadable.append(f"{rel or '.'}/ ({exc.strerror})")
            return
        for entry in entries:
            self._visit(entry, rel, stack)

    def _visit(self, entry: os.DirEntry[str], rel: str, stack: frozenset[str]) -> None:
        path = f"{rel}{entry.name}"
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            self.bad_names.append(repr(os.fsencode(path))[2:-1])
            return
        try:
            is_link = entry.is_symlink()
            st = entry.stat(follow_symlinks=True)
        except FileNotFoundError:
            self.broken.append(f"{path} -> {os.readlink(entry.path)}" if entry.is_symlink() else path)
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link that points at itself, or round a circle of links
                self.loops.append(path)
            else:
                self.unreadable.append(f"{path} ({exc.strerror})")
            return
        if stat.S_ISDIR(st.st_mode):
            if entry.name in LEFT_OUT:
                return
            real = os.path.realpath(entry.path)
            if is_link and real in stack:
                self.loops.append(f"{path} -> {os.readlink(entry.path)}")
                return
            self.walk(entry.path, path + "/", stack | {real})
            return
        if not stat.S_ISREG(st.st_mode):
            return  # sockets, FIFOs, devices
        self.found.append(FoundFile(path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, False))

    def problems(self) -> list[str]:
        lines = []
        for what, paths in (
            ("broken symlinks", self.broken),
            ("symlink loops", self.loops),
            ("unreadable paths", self.unreadable),
            ("names that are not UTF-8", self.bad_names),
        ):
            if paths:
                more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
                lines.append(f"{what}: {', '.join(paths[:_SHOWN])}{more}")
        return lines


def list_tree(path: Path) -> tuple[Path, list[FoundFile], Path | None]:
    """(root, the files sorted by path, the real file when PATH is one file); a DatasetError names what is
    refused."""
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    real = Path(os.path.realpath(path))
    if real.is_file():
        st = real.stat()
        found = FoundFile(path.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, False)
        return real.parent, [found], real
    if not real.is_dir():
        raise DatasetError(f"{path} is neither a file nor a folder")
    walker = _Walker()
    walker.walk(str(real), "", frozenset({str(real)}))
    problems = walker.problems()
    if problems:
        raise DatasetError(f"{path} cannot be uploaded: " + "; ".join(problems) + " (fix or remove them)")
    if not walker.found:
        raise DatasetError(f"{path} holds no file to upload")
    if len(walker.found) > MAX_FILES:
        raise DatasetError(
            f"{path} holds {len(walker.found)} files, over the limit of {MAX_FILES} per version: pack small files "
            "into shards (tar, parquet, webdataset) or upload sub-folders as datasets of their own"
        )
    walker.found.sort(key=lambda f: f.path)
    return real, walker.found, None


def snapshot_dataset(
    path: Path | str,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> DatasetSnapshot:
    """Walk and hash PATH (blocking: call it in a thread from async code). Files the hash cache knows unchanged
    are not read; the others are hashed in a few threads (hashlib releases the GIL)."""
    started = time.perf_counter()
    root, found, file_source = list_tree(Path(path).expanduser())
    cache_key = str(file_source or root)
    cache = _DatasetHashCache(cache_dir or default_dataset_cache_dir(), cache_key) if use_cache else None
    known: dict[str, tuple[str, tuple[str, ...]]] = {}
    todo: list[FoundFile] = []
    for f in found:
        value = cache.lookup(f) if cache is not None else None
        if value is None:
            todo.append(f)
        else:
            known[f.path] = _decode(value)
    total = sum(f.size for f in found)
    done = [total - sum(f.size for f in todo)]
    lock = threading.Lock()
    if progress is not None:
        progress("hash", done[0], total)
    digests: dict[str, tuple[str, int, tuple[str, ...]]] = {}
    unreadable: list[str] = []

    def one(f: FoundFile) -> None:
        try:
            digests[f.path] = file_chunk_digests(file_source or root / f.path, CHUNK_BYTES)
        except OSError as exc:
            unreadable.append(f"{f.path} ({exc.strerror or exc})")
        if progress is not None:
            with lock:
                done[0] += f.size
                progress("hash", done[0], total)

    hashed_at = time.time_ns()
    if len(todo) < 2 or _HASH_THREADS == 1:
        for f in todo:
            one(f)
    else:
        with ThreadPoolExecutor(_HASH_THREADS, thread_name_prefix="dataset-hash") as pool:
            list(pool.map(one, todo))
    if unreadable:
        unreadable.sort()
        more = f" and {len(unreadable) - _SHOWN} more" if len(unreadable) > _SHOWN else ""
        raise DatasetError(f"{path} has files that cannot be read: {', '.join(unreadable[:_SHOWN])}{more}")
    entries = []
    for f in found:
        if f.path in known:
            sha, chunks = known[f.path]
            entries.append(ManifestEntry(f.path, MODE_FILE, sha, f.size, chunks))
            continue
        sha, size, chunks = digests[f.path]
        entries.append(ManifestEntry(f.path, MODE_FILE, sha, size, chunks))
        if cache is not None and size == f.size:  # a file that changed while read is hashed again next time
            cache.remember(f, _encode(sha, chunks), hashed_at)
    try:
        checked = validate_manifest(entries)
    except ValidationError as exc:
        raise DatasetError(f"{path} cannot be uploaded: {exc}") from exc
    if cache is not None:
        cache.save()
    return DatasetSnapshot(root, checked, manifest_id(checked), len(todo), time.perf_counter() - started, file_source)
