"""UploadBlobs' parts for a dataset version: byte ranges of files (small files whole, large ones chunk by chunk).

The controller adopts each blob once it arrived whole and hashes to its announced sha256, and keeps what it
adopted when a stream breaks off (project_files.receive_all). So an upload that is interrupted (Ctrl-C, a lost
connection, a file that changed) resumes by itself: the next upload asks MissingBlobs again and sends only what
did not arrive. Pieces go in streams of at most BATCH_BYTES each, so no single call runs for long.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import IO

from tensorfleet_desktop.client.dataset_tree import DatasetError, Piece

#: Bytes per UploadBlobs data message (the controller's limit) and per UploadBlobs call.
UPLOAD_CHUNK = 1 << 20
BATCH_BYTES = 256 << 20


def batches(pieces: Sequence[Piece], limit: int = BATCH_BYTES) -> list[list[Piece]]:
    """Consecutive pieces grouped into calls of at most `limit` bytes (a larger piece goes alone)."""
    out: list[list[Piece]] = []
    size = limit
    for piece in pieces:
        if size + piece.size > limit or not out:
            out.append([])
            size = 0
        out[-1].append(piece)
        size += piece.size
    return out


def _open_at(piece: Piece) -> IO[bytes]:
    fh = piece.source.open("rb")
    fh.seek(piece.offset)
    return fh


def _read_small(piece: Piece) -> bytes:
    """A piece of at most one message, read in one go (one thread hop per small file, not three)."""
    with piece.source.open("rb") as fh:
        fh.seek(piece.offset)
        return fh.read(piece.size)


async def piece_parts(
    pieces: Sequence[Piece],
    manifest: tuple[str, bytes] | None,
    failures: list[BaseException],
    sent: Callable[[int], None],
) -> AsyncIterator[tuple[str, int] | bytes]:
    """UploadBlobs' parts, which the client's aio turns into messages: per piece a header (sha256, size), then
    its bytes in parts of at most 1 MiB, hashed again as read; then the manifest blob when given. A piece that
    cannot be read or no longer hashes right, or a `sent` callback that raises (a caller giving up), ends the
    stream early and is reported through `failures`: the controller keeps the pieces before it and refuses the
    one cut short."""
    for piece in pieces:
        yield piece.sha256, piece.size
        hasher, size = hashlib.sha256(), 0
        try:
            if piece.size <= UPLOAD_CHUNK:
                data = await asyncio.to_thread(_read_small, piece)
                fh = None
            else:
                fh = await asyncio.to_thread(_open_at, piece)
        except OSError as exc:
            failures.append(DatasetError(f"{piece.path}: cannot read it any more ({exc}); upload again"))
            return
        if fh is None:
            size = len(data)
            hasher.update(data)
            if data:
                yield data
            try:
                sent(size)
            except Exception as exc:  # the caller's progress callback giving up
                failures.append(exc)
                return
        else:
            try:
                while size < piece.size:
                    data = await asyncio.to_thread(fh.read, min(UPLOAD_CHUNK, piece.size - size))
                    if not data:
                        break
                    size += len(data)
                    hasher.update(data)
                    yield data
                    sent(len(data))
            except Exception as exc:  # a read error, or the caller's progress callback giving up
                failures.append(exc)
                return
            finally:
                fh.close()
        if size != piece.size or hasher.hexdigest() != piece.sha256:
            failures.append(DatasetError(f"{piece.path} changed while it was uploaded; upload it again"))
            return
    if manifest is not None:
        sha, data = manifest
        yield sha, len(data)
        for offset in range(0, len(data), UPLOAD_CHUNK):
            yield data[offset : offset + UPLOAD_CHUNK]
