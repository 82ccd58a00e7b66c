"""The one way files are hashed: sha256 in 1 MiB chunks, so a model of gigabytes never sits in memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def file_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of a file; blocking, so callers in a loop use a thread."""
    hasher, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while data := fh.read(_CHUNK):
            hasher.update(data)
            size += len(data)
    return hasher.hexdigest(), size


def file_sha256(path: Path) -> str:
    return file_digest(path)[0]


def blob_relpath(sha256: str) -> str:
    """Where a content-addressed file lives under a blob root (agent cache, controller store, S3 bucket prefix).

    Two hex characters of fan-out keep any one directory small.
    """
    return f"{sha256[:2]}/{sha256}"


def file_chunk_digests(path: Path, chunk_bytes: int) -> tuple[str, int, tuple[str, ...]]:
    """(sha256, size, sha256 of each `chunk_bytes` piece) in one read of the file; blocking. A file of at most
    `chunk_bytes` has no pieces (it is one blob): see tensorfleet_agent.core.manifest's chunked entries."""
    whole, size, pieces = hashlib.sha256(), 0, []
    with path.open("rb") as fh:
        while True:
            piece, filled = hashlib.sha256(), 0
            while filled < chunk_bytes and (data := fh.read(min(_CHUNK, chunk_bytes - filled))):
                whole.update(data)
                piece.update(data)
                filled += len(data)
            if not filled:
                break
            size += filled
            pieces.append(piece.hexdigest())
    return whole.hexdigest(), size, tuple(pieces) if size > chunk_bytes else ()
