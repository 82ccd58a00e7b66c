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
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import MAX_FILES, MAX_MANIFEST_BYTES, ManifestEntry, manifest_from_bytes
from tensorfleet_desktop.controller.store.blobs import BlobStore

MAX_FILE_BYTES = 8 << 30  # one file of a project
MAX_CHUNK = 1 << 20  # one data message
_MANIFESTS_KEPT = 8  # parsed manifests remembered (a gang's ranks and re-submits read the same one)
_NAMED = 5  # missing files named in a refusal


class ProjectFilesMissing(ValidationError):
    """A project job refers to files the blob store does not hold (never uploaded, or lost since)."""


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


def _read_limited(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it holds more than `limit`."""
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    return None if len(data) > limit else data


def _move(tmp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(final)  # atomic; the same content arriving twice at once lands once


class ProjectFiles:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self._manifests: OrderedDict[str, tuple[ManifestEntry, ...]] = OrderedDict()

    async def manifest(self, manifest_id: str) -> tuple[ManifestEntry, ...]:
        """The entries of a stored manifest blob, checked (its bytes hash to its id, it parses and validates).
        ProjectFilesMissing when the blob store lacks it; ValidationError when it is not a valid manifest."""
        check_sha256(manifest_id, "project.manifest_id")
        known = self._manifests.get(manifest_id)
        if known is not None:
            self._manifests.move_to_end(manifest_id)
            return known
        try:
            path = await self.blobs.ensure(manifest_id)
        except FileNotFoundError:
            raise ProjectFilesMissing(
                "project.manifest_id",
                f"the controller has no manifest {manifest_id[:12]}: upload the project first "
                "(Client.upload_project / submit_project, or tensorfleet submit --project)",
            ) from None
        data = await asyncio.to_thread(_read_limited, path, MAX_MANIFEST_BYTES)
        if data is None:
            raise ValidationError(
                "project.manifest_id", f"blob {manifest_id[:12]} is over {MAX_MANIFEST_BYTES} bytes: not a manifest"
            )
        try:  # hashing and parsing up to 64 MiB: in a thread, never on the event loop
            entries = await asyncio.to_thread(_parse_manifest, data, manifest_id)
        except ValidationError as exc:
            raise ValidationError(
                "project.manifest_id", f"blob {manifest_id[:12]} is not a valid project manifest: {exc}"
            ) from None
        if entries is None:
            raise ProjectFilesMissing(
                "project.manifest_id",
                f"the stored manifest {manifest_id[:12]} is damaged (its bytes hash otherwise): upload it again",
            )
        self._manifests[manifest_id] = entries
        while len(self._manifests) > _MANIFESTS_KEPT:
            self._manifests.popitem(last=False)
        return entries

    async def check_project(self, project: dict[str, object]) -> tuple[ManifestEntry, ...]:
        """A project job's snapshot at submit: its manifest is stored and valid, it agrees with the spec's file
        count, size and env file, and every file it lists is in the blob store (a refusal says how many are
        missing and names the first few)."""
        manifest_id = str(project["manifest_id"])
        entries = await self.manifest(manifest_id)
        total = sum(e.size for e in entries)
        if (project.get("files"), project.get("bytes")) != (len(entries), total):
            raise ValidationError(
                "project",
                f"says {project.get('files')} files, {project.get('bytes')} bytes; manifest {manifest_id[:12]} "
                f"lists {len(entries)} files, {total} bytes",
            )
        env = str(project.get("env") or "auto")
        if env not in ("auto", "none") and all(e.path != env for e in entries):
            raise ValidationError("project.env", f"{env!r} is not a file of the project (manifest {manifest_id[:12]})")
        absent = set(await self.missing(sorted({e.sha256 for e in entries})))
        if absent:
            lost = [e.path for e in entries if e.sha256 in absent]
            named = ", ".join(lost[:_NAMED]) + (f" and {len(lost) - _NAMED} more" if len(lost) > _NAMED else "")
            raise ProjectFilesMissing(
                "project",
                f"{len(lost)} of the project's {len(entries)} files are not in the controller's blob store "
                f"({named}): upload the project again (upload_project sends what is missing)",
            )
        return entries

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


__all__ = ["MAX_CHUNK", "MAX_FILE_BYTES", "IncomingFile", "ProjectFiles", "ProjectFilesMissing", "check_sha256"]


def _parse_manifest(data: bytes, manifest_id: str) -> tuple[ManifestEntry, ...] | None:
    """The entries of a manifest blob; None when its bytes do not hash to its id (damaged)."""
    if hashlib.sha256(data).hexdigest() != manifest_id:
        return None
    return manifest_from_bytes(data)
