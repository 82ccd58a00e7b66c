"""A project snapshot's manifest: which files, at which relative paths, with which content (issue 19).

The client builds one (`tensorfleet_desktop.project.snapshot`); the controller and the agent receive one from the
network, so both call `validate_manifest` on it before any path is joined to a directory: no absolute path, no
`..`, no duplicate, no file that is also a directory. It is pure (no I/O) so every layer can import it.

The snapshot's id is `manifest_id`: the sha256 of `manifest_bytes`, a canonical encoding of the sorted entries, so
the same files give the same id on every machine.

A dataset version is the same kind of manifest. A file larger than CHUNK_BYTES may list `chunks`: the sha256 of each
CHUNK_BYTES piece in order (the last one shorter). Such a file travels and is stored as those chunk blobs, so a
re-upload of an edited file sends only the pieces that changed and an agent can fetch pieces from several sources;
its own sha256 still checks the whole after assembly. An entry without chunks is one blob, encoded as before, so a
project's id does not change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence

from tensorfleet_agent.core.errors import ValidationError

# Git's two file modes: a file is executable or it is not (owner/group/other bits are not part of the content).
MODE_FILE = 0o644
MODE_EXECUTABLE = 0o755
MAX_FILES = 200_000
MAX_PATH = 4096
MAX_COMPONENT = 255
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 64 << 20  # a manifest blob: MAX_FILES entries of long paths fit well under this
CHUNK_BYTES = 8 << 20  # a chunked file's piece size: large enough for few blobs, small enough to resume cheaply

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclasses.dataclass(frozen=True, order=True)
class ManifestEntry:
    """One file: posix path relative to the project root, mode (0o644 or 0o755), content sha256, size in bytes,
    and for a chunked file the sha256 of each CHUNK_BYTES piece (empty: the file is one blob)."""

    path: str
    mode: int
    sha256: str
    size: int
    chunks: tuple[str, ...] = ()

    @property
    def executable(self) -> bool:
        return self.mode == MODE_EXECUTABLE

    @property
    def blobs(self) -> tuple[str, ...]:
        """The blobs this file is stored and sent as: its chunks, or the file itself."""
        return self.chunks or (self.sha256,)

    def as_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"path": self.path, "mode": self.mode, "sha256": self.sha256, "size": self.size}
        if self.chunks:
            body["chunks"] = list(self.chunks)
        return body


def chunk_count(size: int) -> int:
    """How many CHUNK_BYTES pieces a chunked file of `size` bytes has."""
    return max(1, -(-size // CHUNK_BYTES))


def check_path(path: str, field: str = "path") -> str:
    """A relative posix path that stays under the directory it is joined to, or a ValidationError naming why."""
    if not isinstance(path, str) or not path:
        raise ValidationError(field, "is empty")
    shown = path[:200]
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(field, f"{shown!r} is not valid UTF-8") from None
    if len(encoded) > MAX_PATH:
        raise ValidationError(field, f"is {len(encoded)} bytes long; at most {MAX_PATH} allowed")
    if path[0] == "/" or _DRIVE.match(path):
        raise ValidationError(field, f"{shown!r} is an absolute path; a manifest holds paths relative to the project")
    if "\\" in path:
        raise ValidationError(field, f"{shown!r} holds a backslash; manifest paths use '/' only")
    if _CONTROL.search(path):
        raise ValidationError(field, f"{shown!r} holds a control character")
    parts = path.split("/")
    if ".." in parts:
        raise ValidationError(field, f"{shown!r} holds '..'; a manifest path may not leave the project")
    if "" in parts or "." in parts:
        raise ValidationError(field, f"{shown!r} has an empty or '.' component; write it normalized")
    if len(encoded) > MAX_COMPONENT and any(len(part.encode("utf-8")) > MAX_COMPONENT for part in parts):
        raise ValidationError(field, f"{shown!r} has a component over {MAX_COMPONENT} bytes")
    return path


def _check_entry(entry: ManifestEntry, field: str) -> None:
    check_path(entry.path, f"{field}.path")
    if type(entry.mode) is not int or entry.mode not in (MODE_FILE, MODE_EXECUTABLE):
        raise ValidationError(f"{field}.mode", f"is {entry.mode!r}; only 0o644 and 0o755 are file modes here")
    if not isinstance(entry.sha256, str) or not _SHA256.match(entry.sha256):
        raise ValidationError(f"{field}.sha256", f"is not 64 lowercase hex digits: {str(entry.sha256)[:80]!r}")
    if type(entry.size) is not int or entry.size < 0:
        raise ValidationError(f"{field}.size", f"is {entry.size!r}; a size is a whole number of bytes, at least 0")
    if not isinstance(entry.chunks, tuple):
        raise ValidationError(f"{field}.chunks", f"is a {type(entry.chunks).__name__}, not a tuple of sha256")
    if entry.chunks:
        if entry.size <= CHUNK_BYTES:
            raise ValidationError(
                f"{field}.chunks", f"are listed for {entry.size} bytes; only files over {CHUNK_BYTES} are chunked"
            )
        if len(entry.chunks) != chunk_count(entry.size):
            raise ValidationError(
                f"{field}.chunks",
                f"lists {len(entry.chunks)}; {entry.size} bytes in pieces of {CHUNK_BYTES} "
                f"make {chunk_count(entry.size)}",
            )
        for j, chunk in enumerate(entry.chunks):
            if not isinstance(chunk, str) or not _SHA256.match(chunk):
                raise ValidationError(f"{field}.chunks[{j}]", f"is not 64 lowercase hex digits: {str(chunk)[:80]!r}")


def validate_manifest(
    entries: Iterable[ManifestEntry], *, max_files: int = MAX_FILES, max_bytes: int | None = None
) -> tuple[ManifestEntry, ...]:
    """The entries checked and sorted by path; a ValidationError names the first bad entry (`manifest[i]...`)."""
    checked: list[ManifestEntry] = []
    total = 0
    for i, entry in enumerate(entries):
        if len(checked) >= max_files:
            raise ValidationError("manifest", f"holds more than {max_files} files")
        if not isinstance(entry, ManifestEntry):
            raise ValidationError(f"manifest[{i}]", f"is a {type(entry).__name__}, not a ManifestEntry")
        _check_entry(entry, f"manifest[{i}]")
        total += entry.size
        checked.append(entry)
    if max_bytes is not None and total > max_bytes:
        raise ValidationError("manifest", f"holds {total} bytes; at most {max_bytes} allowed")
    checked.sort(key=lambda e: e.path)
    for before, after in itertools.pairwise(checked):
        if before.path == after.path:
            raise ValidationError("manifest", f"lists {after.path!r} twice")
    # A file that is also a directory ("a" and "a/b") cannot be materialized. Sorted by path, "a/b" need not follow
    # "a" directly ("a.txt" sorts between), so every folder on a path is looked up among the files (each folder once).
    files = {e.path for e in checked}
    folders: set[str] = set()
    for entry in checked:
        folder = entry.path.rpartition("/")[0]
        while folder and folder not in folders:
            if folder in files:
                raise ValidationError("manifest", f"{folder!r} is a file and also the directory of {entry.path!r}")
            folders.add(folder)
            folder = folder.rpartition("/")[0]
    return tuple(checked)


def parse_manifest(
    value: object, *, max_files: int = MAX_FILES, max_bytes: int | None = None
) -> tuple[ManifestEntry, ...]:
    """A manifest from JSON-ready data (a list of {"path", "mode", "sha256", "size"[, "chunks"]} objects),
    validated."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ValidationError("manifest", f"is a {type(value).__name__}, not a list of files")
    entries = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ValidationError(f"manifest[{i}]", f"is a {type(item).__name__}, not an object")
        unknown = sorted(set(item) - {"path", "mode", "sha256", "size", "chunks"})
        if unknown:
            raise ValidationError(f"manifest[{i}]", f"has unknown keys {unknown}")
        missing = sorted({"path", "mode", "sha256", "size"} - set(item))
        if missing:
            raise ValidationError(f"manifest[{i}]", f"lacks {missing}")
        chunks = item.get("chunks", [])
        if not isinstance(chunks, list):
            raise ValidationError(f"manifest[{i}].chunks", f"is a {type(chunks).__name__}, not a list of sha256")
        entries.append(ManifestEntry(item["path"], item["mode"], item["sha256"], item["size"], tuple(chunks)))
    return validate_manifest(entries, max_files=max_files, max_bytes=max_bytes)


def manifest_bytes(entries: Sequence[ManifestEntry]) -> bytes:
    """The canonical encoding the id is taken of: compact JSON of the entries sorted by path, UTF-8. A chunked
    file's row has a fifth column, its chunks; other rows keep four, so unchunked manifests keep their ids."""
    rows = [
        [e.path, e.mode, e.sha256, e.size, list(e.chunks)] if e.chunks else [e.path, e.mode, e.sha256, e.size]
        for e in sorted(entries, key=lambda e: e.path)
    ]
    text = json.dumps({"version": MANIFEST_VERSION, "files": rows}, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def exchange_order(entries: Sequence[ManifestEntry]) -> dict[str, int]:
    """The order peers exchange a dataset version's blobs in (issue 20): the chunks of chunked files in manifest
    order, so each file is complete (and assembled) as early as it can be, then the whole files biggest first (long
    transfers start early, small ones fill the gaps). The controller shares a version out and pushes a reader's share
    in this order, and readers ask their peers in it, so a holder is asked for what it is receiving next. A blob not
    in it (the manifest itself) sorts last."""
    order: dict[str, int] = {}
    for entry in entries:
        for chunk in entry.chunks:
            order.setdefault(chunk, len(order))
    for entry in sorted((e for e in entries if not e.chunks), key=lambda e: (-e.size, e.sha256)):
        order.setdefault(entry.sha256, len(order))
    return order


def manifest_id(entries: Sequence[ManifestEntry]) -> str:
    """The snapshot's id: sha256 hex of `manifest_bytes`."""
    return hashlib.sha256(manifest_bytes(entries)).hexdigest()


def manifest_from_bytes(
    data: bytes, *, max_files: int = MAX_FILES, max_bytes: int | None = None
) -> tuple[ManifestEntry, ...]:
    """The entries of a manifest blob (`manifest_bytes`' encoding, as the controller and agents store it),
    validated; a ValidationError says what is wrong. The caller checks the blob's sha256 (its id) itself."""
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("manifest", f"is not UTF-8 JSON: {exc}") from None
    if not isinstance(body, dict) or set(body) != {"version", "files"}:
        raise ValidationError("manifest", 'must be an object {"version", "files"}')
    if body["version"] != MANIFEST_VERSION:
        raise ValidationError("manifest.version", f"is {body['version']!r}; this version reads {MANIFEST_VERSION}")
    rows = body["files"]
    if not isinstance(rows, list):
        raise ValidationError("manifest.files", "must be a list of [path, mode, sha256, size] rows")
    entries = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) not in (4, 5) or (len(row) == 5 and not isinstance(row[4], list)):
            raise ValidationError(f"manifest[{i}]", "must be a [path, mode, sha256, size] or [..., chunks] row")
        path, mode, sha256, size = row[:4]
        entries.append(ManifestEntry(path, mode, sha256, size, tuple(row[4]) if len(row) == 5 else ()))
    return validate_manifest(entries, max_files=max_files, max_bytes=max_bytes)
