"""What a peer serves (issue 20): a blob of a dataset version it holds, for a ticket naming that version.

An agent keeps a chunked file assembled as the whole file and drops its chunk blobs (runtime/datasets.py), so a
chunk is served as a byte range of that file: each held manifest gives a chunk -> (file, offset, length) index,
parsed once per content id and kept while the manifest stays in the cache. A chunk blob still in the cache (the
file not yet assembled) is served as it is. No duplicate chunk blob is kept to serve peers.

    blobs = PeerBlobs(store)
    source = blobs.locate(ticket.content_ids, sha256)   # NotFound / PermissionDenied naming why
    for data in blobs.read(source, offset): ...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tensorfleet_agent.core.errors import NotFound, PermissionDenied, ValidationError
from tensorfleet_agent.core.manifest import CHUNK_BYTES, MAX_MANIFEST_BYTES, manifest_from_bytes
from tensorfleet_agent.runtime.blobs import BlobStore, check_sha256

READ_BYTES = 1 << 20  # a BlobChunk message's data at most (the agent's gRPC limit is 8 MiB)
_INDEXES = 64  # parsed manifests kept
SERVE_THREADS = 4  # threads reading blobs for peers (their own: serving never queues the agent's other file work)


@dataclass(frozen=True)
class Piece:
    """Where a blob's bytes are: `length` bytes of blob `blob` from `offset` (the whole blob: offset 0)."""

    blob: str
    offset: int
    length: int


@dataclass(frozen=True)
class _Index:
    size: int  # the manifest blob's size: a replaced blob is indexed again
    pieces: dict[str, list[Piece]]  # sha256 -> where it may be read: its own blob first, then inside a file


class PeerBlobs:
    """The blobs this agent can serve to peers; thread-safe."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._indexes: OrderedDict[str, _Index] = OrderedDict()
        self._readers: ThreadPoolExecutor | None = None  # made on first use (an agent that never serves has none)

    async def stream(self, piece: Piece, offset: int = 0) -> AsyncIterator[bytes]:
        """`read` from the event loop: each READ_BYTES read in this server's own SERVE_THREADS, so many peers'
        streams at once never fill the loop's default executor (telemetry samples and blob writes go there: an
        agent serving seven readers was declared LOST for lack of telemetry)."""
        if self._readers is None:
            self._readers = ThreadPoolExecutor(SERVE_THREADS, thread_name_prefix="peer-serve")
        loop = asyncio.get_running_loop()
        chunks = self.read(piece, offset)
        try:
            while (data := await loop.run_in_executor(self._readers, next, chunks, None)) is not None:
                yield data
        finally:
            with contextlib.suppress(ValueError):  # a read still running in its thread: it ends with the file
                chunks.close()

    def locate(self, content_ids: Iterable[str], sha256: str) -> Piece:
        """Where `sha256` is here, if one of `content_ids` is held here and names it."""
        check_sha256(sha256, "sha256")
        held = [cid for cid in sorted(content_ids) if self.store.has(cid)]
        if not held:
            raise NotFound("this agent holds none of the ticket's dataset versions")
        if sha256 in held:  # a version's manifest itself
            return Piece(sha256, 0, self.store.size(sha256))
        named = False
        for cid in held:
            for piece in self._index(cid).pieces.get(sha256, ()):
                named = True
                try:
                    size = self.store.size(piece.blob)
                except NotFound:
                    continue
                if piece.offset + piece.length <= size:
                    return piece
        if not named:
            raise PermissionDenied(
                f"blob {sha256[:12]} is not part of the dataset versions the ticket names "
                f"({', '.join(c[:12] for c in held)})"
            )
        raise NotFound(f"blob {sha256[:12]} is not in this agent's cache (evicted or not fetched yet)")

    def read(self, piece: Piece, offset: int = 0) -> Generator[bytes]:
        """The piece's bytes from `offset` (a resumed download), READ_BYTES at a time."""
        if not 0 <= offset <= piece.length:
            raise ValidationError("offset", f"must be between 0 and the blob's size {piece.length}, got {offset}")
        try:
            fh = self.store.path(piece.blob).open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {piece.blob[:12]} was evicted meanwhile") from None
        self.store.touch(piece.blob)
        with fh:
            fh.seek(piece.offset + offset)
            left = piece.length - offset
            while left > 0 and (data := fh.read(min(READ_BYTES, left))):
                left -= len(data)
                yield data
        if left:
            raise NotFound(f"blob {piece.blob[:12]} is shorter than its manifest says")

    def _index(self, content_id: str) -> _Index:
        path = self.store.path(content_id)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise NotFound(f"dataset version {content_id[:12]} was evicted meanwhile") from None
        with self._lock:
            index = self._indexes.get(content_id)
            if index is not None and index.size == size:
                self._indexes.move_to_end(content_id)
                return index
        if size > MAX_MANIFEST_BYTES:
            raise NotFound(f"dataset version {content_id[:12]}: its manifest is too large to serve from")
        try:
            entries = manifest_from_bytes(path.read_bytes())
        except FileNotFoundError:
            raise NotFound(f"dataset version {content_id[:12]} was evicted meanwhile") from None
        except ValidationError:
            raise NotFound(f"{content_id[:12]} is not a dataset manifest this agent can read") from None
        pieces: dict[str, list[Piece]] = {}
        for entry in entries:
            pieces.setdefault(entry.sha256, []).insert(0, Piece(entry.sha256, 0, entry.size))
            for j, chunk in enumerate(entry.chunks):
                length = min(CHUNK_BYTES, entry.size - j * CHUNK_BYTES)
                where = pieces.setdefault(chunk, [])
                if not where or where[0].blob != chunk:
                    where.insert(0, Piece(chunk, 0, length))  # the chunk blob itself, while it is still there
                where.append(Piece(entry.sha256, j * CHUNK_BYTES, length))  # inside the assembled file
        index = _Index(size, pieces)
        with self._lock:
            self._indexes[content_id] = index
            while len(self._indexes) > _INDEXES:
                self._indexes.popitem(last=False)
        return index
