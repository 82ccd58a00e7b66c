"""The files of project snapshots (issue 19), kept content-addressed in the controller's blob store.

A client asks `missing(shas)` and sends only those: each file is received with `receive(sha256, size)`, written
to incoming/ while it is hashed, and adopted into the store under its name only when size and sha256 match;
anything else is refused and nothing is adopted. Jobs then refer to the files by the manifest's sha256s, and
agents fetch them like any other blob.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import MAX_FILES
from tensorfleet_desktop.controller.store.blobs import BlobStore

MAX_FILE_BYTES = 8 << 30  # one file of a project
MAX_CHUNK = 1 << 20  # one data message


def check_sha256(value: str, field: str) -> str:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValidationError(field, f"must be 64 lowercase hex chars (a sha256), got {value[:80]!r}")
    return value


class IncomingFile:
    """One file being received: bytes are hashed as they are written; `finish` adopts it only if it is whole
    and hashes to the announced sha256. `discard` (always safe) removes what is left behind."""

    def __init__(self, blobs: BlobStore, sha256: str, size: int, tmp: Path) -> None:
        self.blobs, self.sha256, self.size, self.tmp = blobs, sha256, size, tmp
        self.received = 0
        self._hasher = hashlib.sha256()
        self._fh: IO[bytes] | None = None

    async def write(self, data: bytes) -> None:
        if len(data) > MAX_CHUNK:
            raise ValidationError("data", f"a chunk of {len(data)} bytes: at most {MAX_CHUNK} per message")
        self.received += len(data)
        if self.received > self.size:
            raise ValidationError("data", f"file {self.sha256[:12]}: more than the {self.size} bytes announced")
        self._hasher.update(data)
        if self._fh is None:
            self._fh = await asyncio.to_thread(self._open)
        await asyncio.to_thread(self._fh.write, data)

    def _open(self) -> IO[bytes]:
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp.open("wb")

    async def finish(self) -> None:
        if self.received != self.size:
            raise ValidationError(
                "header.size", f"file {self.sha256[:12]}: announced {self.size} bytes, {self.received} arrived"
            )
        digest = self._hasher.hexdigest()
        if digest != self.sha256:
            raise ValidationError(
                "header.sha256",
                f"file announced as {self.sha256} hashes to {digest}: refused (corrupted in transit or changed "
                "while it was read; upload it again)",
            )
        if self._fh is None:  # an empty file
            self._fh = await asyncio.to_thread(self._open)
        await asyncio.to_thread(self._fh.close)
        final = self.blobs.path(self.sha256)
        await asyncio.to_thread(_move, self.tmp, final)
        await self.blobs.publish(self.sha256)

    async def discard(self) -> None:
        if self._fh is not None:
            await asyncio.to_thread(self._fh.close)
        await asyncio.to_thread(self.tmp.unlink, True)


def _move(tmp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(final)  # atomic; the same content arriving twice at once lands once


class ProjectFiles:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    async def missing(self, shas: Sequence[str]) -> list[str]:
        """Those of `shas` the store lacks, in order, each once. A remote store's blob is fetched into the local
        cache when it has it (agents are served from there)."""
        if len(shas) > MAX_FILES:
            raise ValidationError("sha256", f"{len(shas)} contents: at most {MAX_FILES} per request")
        wanted = list(dict.fromkeys(check_sha256(s, "sha256") for s in shas))
        if not self.blobs.remote:  # one thread hop for the lot: a project may have thousands of files
            return await asyncio.to_thread(lambda: [s for s in wanted if not self.blobs.path(s).is_file()])
        out = []
        for sha in wanted:
            try:
                await self.blobs.ensure(sha)
            except FileNotFoundError:
                out.append(sha)
        return out

    def receive(self, sha256: str, size: int) -> IncomingFile:
        check_sha256(sha256, "header.sha256")
        if not 0 <= size <= MAX_FILE_BYTES:
            raise ValidationError("header.size", f"must be between 0 and {MAX_FILE_BYTES} bytes, got {size}")
        tmp = self.blobs.root / "incoming" / f"project-{uuid.uuid4().hex}"
        return IncomingFile(self.blobs, sha256, size, tmp)

    async def receive_all(self, parts: AsyncIterator[tuple[str, int] | bytes]) -> tuple[int, int]:
        """An UploadBlobs stream: (sha256, size) starts a file, bytes continue it. Each file is adopted once it is
        whole and verified; the first bad one ends the stream with its error (files before it stay adopted,
        it and those after it are not). Returns (files adopted, bytes received)."""
        files = received = 0
        current: IncomingFile | None = None
        try:
            async for part in parts:
                if isinstance(part, tuple):
                    if current is not None:
                        await current.finish()
                        files += 1
                    current = self.receive(*part)
                elif current is None:
                    raise ValidationError("header", "UploadBlobs must start each file with a ProjectFileHeader")
                else:
                    await current.write(part)
                    received += len(part)
            if current is not None:
                await current.finish()
                files += 1
                current = None
        finally:
            if current is not None:
                await current.discard()
        return files, received


__all__ = ["MAX_CHUNK", "MAX_FILE_BYTES", "IncomingFile", "ProjectFiles", "check_sha256"]
