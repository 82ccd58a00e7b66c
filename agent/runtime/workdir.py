"""A task's working directory materialized from a project manifest and the blob cache (issue 19).

How it is meant to be used (the task runner, while the task is PREPARING; every call blocks on disk I/O, so from
async code run each one through `asyncio.to_thread`):

    entries = validate_manifest(...)                        # or parse_manifest(json) from the network
    need = missing_blobs(store, entries)                    # touches nothing; fetch exactly these first
    ... fetch `need` into `store` (controller download) ...
    result = materialize(store, entries, task_dir)          # raises BlobsMissing if one was evicted meanwhile
    # status/logs: result.files, result.bytes, result.copied, result.linked, result.seconds

Copy or hardlink. A hardlink shares its inode with the cached blob: a task that opened a project file for writing
would change the cache, and every later task of every job with that content. So the default, `link="copy"`, gives
each task its own inode (a reflink where the filesystem can clone, so copying costs no data blocks on btrfs/xfs).
`link="hardlink"` is the faster opt-in for a trusted task: each non-executable blob is made read-only (0444) before
it is linked, so a task must replace a file (write a new one, rename over it), never edit it in place; an
executable entry is always copied (the mode bits belong to the shared inode), and so is any file whose hardlink
fails (another filesystem, link count limit). 0444 stops an accident, not a task that chmods the file back: that
is why hardlinks are not the default (nor for root, whom 0444 does not stop). Measured on ext4 (no reflink), 2,000
files of 0.5 MB in all, on a loaded 2-core box: copy ~0.21 s, hardlink ~0.15 s; the copy's cost grows with bytes,
the hardlink's does not (tests/unit/test_workdir.py prints both).

On an error part of the tree may already be written: the caller removes the task dir (it owns it) and retries.

Defence in depth: the manifest is validated again here, and each file is created under a parent whose resolved
path is inside the working dir, with O_EXCL|O_NOFOLLOW (a symlink planted in the dir is never followed). Each
blob's size is checked against its entry, so a damaged cache is reported rather than run. The blobs are pinned
while they are linked or copied, so LRU eviction cannot remove one half-way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import shutil
import stat
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from tensorfleet_agent.core.digest import blob_relpath
from tensorfleet_agent.core.errors import NotFound, ValidationError
from tensorfleet_agent.core.manifest import ManifestEntry, validate_manifest
from tensorfleet_agent.runtime.blobs import SHA256_RE, BlobStore

LinkMode = Literal["copy", "hardlink"]
FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int), clone a whole file (reflink)
READ_ONLY = 0o444


class BlobsMissing(NotFound):
    """Blobs the manifest needs that the cache lacks; `missing` lists their sha256, sorted, each once."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = tuple(missing)
        shown = ", ".join(s[:12] for s in self.missing[:5]) + (" ..." if len(self.missing) > 5 else "")
        super().__init__(f"{len(self.missing)} blob(s) of the project are not in this agent's cache: {shown}")


@dataclasses.dataclass(frozen=True)
class MaterializeResult:
    """What materialize did: file count and bytes, how many were copied or hardlinked, seconds spent."""

    files: int
    bytes: int
    copied: int
    linked: int
    seconds: float


def missing_blobs(store: BlobStore, entries: Iterable[ManifestEntry]) -> tuple[str, ...]:
    """The sha256s of `entries` the cache lacks, sorted, each once. Reads only: call it before anything is written."""
    root = str(store.root)
    wanted = {e.sha256 for e in entries}
    return tuple(
        sorted(d for d in wanted if SHA256_RE.match(d) is None or not os.path.isfile(f"{root}/{blob_relpath(d)}"))
    )  # store.has, but for the Path per blob (a third of the time on 2,000 files)


def materialize(
    store: BlobStore, entries: Iterable[ManifestEntry], workdir: Path, *, link: LinkMode = "copy"
) -> MaterializeResult:
    """Create every entry under `workdir` (created if absent) from the cache; see the module docstring.

    Raises BlobsMissing before the disk is touched when a blob is absent, ValidationError for a bad entry or a path
    that would leave `workdir`, FileExistsError when a file is already there. Blocking: run it in a thread.
    """
    if link not in ("copy", "hardlink"):
        raise ValidationError("link", f"is {link!r}; 'copy' or 'hardlink'")
    checked = validate_manifest(entries)
    digests = [e.sha256 for e in checked]
    started = time.perf_counter()
    store.pin(digests)
    try:
        blobs = _blob_paths(store, checked)  # BlobsMissing / a damaged blob's error, before the disk is touched
        workdir.mkdir(parents=True, exist_ok=True)
        root = str(workdir.resolve(strict=True))
        made: set[str] = {root}
        copied = linked = total = 0
        cloner = _Cloner()
        for entry in checked:  # plain strings and os calls: pathlib's parsing was half the time on 2,000 files
            target = _target(root, entry.path, made)
            blob = blobs[entry.sha256]
            if link == "hardlink" and not entry.executable and _hardlink(blob, target):
                linked += 1
            else:
                cloner.copy(blob, target, entry.mode)
                copied += 1
            total += entry.size
        for blob in blobs.values():  # used: the cache's LRU keeps it
            with contextlib.suppress(FileNotFoundError):
                os.utime(blob)
    finally:
        store.unpin(digests)
    return MaterializeResult(len(checked), total, copied, linked, time.perf_counter() - started)


def _blob_paths(store: BlobStore, entries: Sequence[ManifestEntry]) -> dict[str, str]:
    """Each distinct blob's path in the cache, each stat'ed once: BlobsMissing naming every absent one, or a
    ValidationError when a blob's size is not its entry's (a damaged cache is reported rather than run)."""
    paths: dict[str, str] = {}
    sizes: dict[str, int] = {}
    missing: set[str] = set()
    root = str(store.root)
    for entry in entries:
        digest = entry.sha256
        if digest not in sizes and digest not in missing:
            path = f"{root}/{blob_relpath(digest)}"
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                missing.add(digest)
                continue
            if not stat.S_ISREG(st.st_mode):
                missing.add(digest)
                continue
            paths[digest], sizes[digest] = path, st.st_size
    if missing:
        raise BlobsMissing(sorted(missing))
    for entry in entries:
        if sizes[entry.sha256] != entry.size:
            raise ValidationError(
                "manifest",
                f"{entry.path!r}: the cached blob {entry.sha256[:12]} holds {sizes[entry.sha256]} bytes, the entry "
                f"says {entry.size}; the cache is damaged (remove the blob so it is fetched again)",
            )
    return paths


def _target(root: str, relpath: str, made: set[str]) -> str:
    """root/relpath with its parent dirs created, refused unless the parent resolves inside root."""
    target = f"{root}/{relpath}"
    parent = os.path.dirname(target)
    if parent not in made:
        os.makedirs(parent, exist_ok=True)
        resolved = os.path.realpath(parent, strict=True)
        if resolved != root and not resolved.startswith(root + "/"):
            raise ValidationError("manifest", f"{relpath!r} would be written outside the working dir ({resolved})")
        made.add(parent)
    if os.path.normpath(target) != target or not target.startswith(root + "/"):
        raise ValidationError("manifest", f"{relpath!r} would be written outside the working dir")
    return target


def _hardlink(blob: str, target: str) -> bool:
    """Link target to the read-only blob; False when this filesystem cannot (the caller copies instead)."""
    st = os.stat(blob)
    if stat.S_IMODE(st.st_mode) != READ_ONLY:
        os.chmod(blob, READ_ONLY)
    try:
        os.link(blob, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            return False
        raise
    return True


class _Cloner:
    """Copies a blob to a new file: reflink (FICLONE) while the filesystem supports it, then a kernel copy."""

    def __init__(self) -> None:
        self._reflink = True
        self._kernel_copy = hasattr(os, "copy_file_range")

    def copy(self, blob: str, target: str, mode: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        src = os.open(blob, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            dst = os.open(target, flags, 0o600)
            try:
                if not (self._reflink and self._clone(src, dst)):
                    self._copy(src, dst)
                os.fchmod(dst, mode)  # the manifest's mode exactly, whatever the umask
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def _copy(self, src: int, dst: int) -> None:
        """In the kernel (copy_file_range) where it can, else through a buffer (another filesystem, old kernel)."""
        if self._kernel_copy:
            try:
                while os.copy_file_range(src, dst, 1 << 30):
                    pass
                return
            except OSError:
                self._kernel_copy = False
                os.lseek(src, 0, os.SEEK_SET)
                os.lseek(dst, 0, os.SEEK_SET)
                os.ftruncate(dst, 0)
        with open(src, "rb", closefd=False) as fin, open(dst, "wb", closefd=False) as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)

    def _clone(self, src: int, dst: int) -> bool:
        try:
            fcntl.ioctl(dst, FICLONE, src)
        except OSError:
            self._reflink = False  # not on this filesystem (ext4, tmpfs, across devices): stop trying
            with contextlib.suppress(OSError):
                os.ftruncate(dst, 0)
            return False
        return True
