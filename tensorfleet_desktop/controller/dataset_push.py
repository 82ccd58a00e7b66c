"""What a task's dataset version needs on its agent (issue 20), the controller's side of dispatch: the blobs an
upload's version is stored as, or a reference's listing with a "get" per object (attempts._with_dataset sends them).

A job spec's `dataset_version` ({name, version, content_id, source}, recorded by the catalog at submit) names it:

- an upload (source "upload"): content_id is its manifest blob. An agent keeps a chunked file as the whole file
  (it assembles it from the chunks and drops them), so what it lacks is asked in two rounds: the manifest and every
  file's sha256 first, then the chunks of the chunked files it lacks whole (`upload_wants`).
- a reference (s3 / file): content_id is the listing blob {"url", "objects": [{"path", "size", "etag"}]}; the agent
  gets the same listing with "get" added to each object: a presigned GET from the controller's object-store client
  for s3://bucket/prefix (the client that listed it), the absolute path for file:///folder (mounted at the same
  path on every agent). Presigning is done once per version and reused for an hour (URLs valid for 12), so the
  ranks of one job, and jobs close together, send an agent one listing blob, not one per task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections import OrderedDict
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlparse

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import CHUNK_BYTES, MAX_MANIFEST_BYTES, ManifestEntry, manifest_from_bytes
from tensorfleet_agent.core.types import DatasetMount
from tensorfleet_desktop.controller.project_files import ProjectFilesMissing
from tensorfleet_desktop.controller.store.blobs import BlobStore

URL_LIFETIME = timedelta(hours=12)  # a presigned GET in an agent's listing
LISTING_REUSE = 3600.0  # seconds a signed listing is sent again as is (its URLs have 11 hours left then)
_KEPT = 8  # parsed manifests and signed listings remembered
_FIELD = "dataset_version"
#: A task's dataset_transfer (TaskInfo.dataset_transfer, status --json) before its agent reports.
EMPTY_TRANSFER: dict[str, int | float] = {
    "bytes_from_peers": 0,
    "bytes_from_controller": 0,
    "bytes_from_store": 0,
    "cached_bytes": 0,
    "seconds": 0.0,
    "peers_used": 0,
    "peer_failures": 0,
}


@dataclasses.dataclass(frozen=True)
class UploadPlan:
    """An upload version's blobs: each one's size (the manifest's too), and which file each chunk belongs to."""

    entries: tuple[ManifestEntry, ...]
    sizes: dict[str, int]  # blob sha256 -> bytes, for every blob the agent may be sent (files, chunks, manifest)
    owners: dict[str, str]  # blob sha256 -> a path it is (part of), for messages
    whole: dict[str, str] = dataclasses.field(default_factory=dict)  # chunk sha256 -> its file's sha256


class DatasetPush:
    """Reads dataset versions' manifests and listings from the blob store and signs reference listings."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self._manifests: OrderedDict[str, tuple[ManifestEntry, ...]] = OrderedDict()
        self._listings: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    @staticmethod
    def mount(version: dict[str, Any], blob: str) -> DatasetMount:
        """The TaskSpec's mount for `version`, naming its manifest (an upload) or the signed listing `blob`."""
        name, number = str(version["name"]), int(version["version"])
        if version["source"] == "upload":
            return DatasetMount(name, number, manifest_id=str(version["content_id"]))
        return DatasetMount(name, number, listing_id=blob)

    async def manifest(self, version: dict[str, Any]) -> UploadPlan:
        content_id = str(version["content_id"])
        entries = self._manifests.get(content_id)
        if entries is None:
            data = await self._read(version, content_id, "manifest")
            try:
                entries = await asyncio.to_thread(manifest_from_bytes, data)
            except ValidationError as exc:
                raise ProjectFilesMissing(_FIELD, f"{_ref(version)}: its manifest is invalid: {exc}") from None
            self._remember(self._manifests, content_id, entries)
        sizes: dict[str, int] = {content_id: 0}
        owners: dict[str, str] = {content_id: "the version's manifest"}
        whole: dict[str, str] = {}
        for entry in entries:
            if entry.chunks:
                for j, chunk in enumerate(entry.chunks):
                    sizes[chunk] = min(CHUNK_BYTES, entry.size - j * CHUNK_BYTES)
                    owners.setdefault(chunk, entry.path)
                    whole.setdefault(chunk, entry.sha256)
            else:
                sizes[entry.sha256] = entry.size
                owners.setdefault(entry.sha256, entry.path)
        return UploadPlan(entries, sizes, owners, whole)

    async def signed_listing(self, version: dict[str, Any]) -> bytes:
        """The reference's listing as its agent reads it: each object with its "get"."""
        content_id = str(version["content_id"])
        known = self._listings.get(content_id)
        if known is not None and time.monotonic() - known[0] < LISTING_REUSE:
            return known[1]
        data = await self._read(version, content_id, "listing")
        try:
            body = json.loads(data.decode("utf-8"))
            url, objects = str(body["url"]), list(body["objects"])
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise ProjectFilesMissing(_FIELD, f"{_ref(version)}: its listing is unreadable: {exc}") from None
        signer = await asyncio.to_thread(self._signer, version, url)
        signed = await asyncio.to_thread(lambda: [{**o, "get": signer(str(o["path"]))} for o in objects])
        out = json.dumps({"url": url, "objects": signed}, separators=(",", ":"), ensure_ascii=False).encode()
        self._remember(self._listings, content_id, (time.monotonic(), out))
        return out

    def _signer(self, version: dict[str, Any], url: str) -> Any:
        """path -> the agent's "get" for it (blocking: an S3 client may look its region up once)."""
        parsed = urlparse(url)
        where = unquote(parsed.path)
        if parsed.scheme == "file":
            return lambda path: os.path.join(where, path)
        if parsed.scheme != "s3":
            raise ProjectFilesMissing(_FIELD, f"{_ref(version)}: {url[:200]!r} is not an s3:// or file:// URL")
        client = getattr(self.blobs, "client", None)
        if client is None:
            raise ProjectFilesMissing(
                "dataset",
                f"{_ref(version)} refers to {url}, but this controller's blob store is not S3: its agents cannot be "
                "given signed URLs (run the controller with --blobs s3://... for that object store)",
            )
        bucket, prefix = parsed.netloc, where.strip("/")

        def sign(path: str) -> str:
            key = f"{prefix}/{path}" if prefix else path
            signed: str = client.presigned_get_object(bucket, key, expires=URL_LIFETIME)
            return signed

        return sign

    async def _read(self, version: dict[str, Any], sha256: str, what: str) -> bytes:
        try:
            path = await self.blobs.ensure(sha256)
        except FileNotFoundError:
            raise ProjectFilesMissing(
                "dataset",
                f"{_ref(version)}: its {what} {sha256[:12]} is no longer in the controller's blob store",
            ) from None

        def read() -> bytes | None:
            with path.open("rb") as fh:
                data = fh.read(MAX_MANIFEST_BYTES + 1)
            return None if len(data) > MAX_MANIFEST_BYTES else data

        data = await asyncio.to_thread(read)
        if data is None:
            raise ProjectFilesMissing(_FIELD, f"{_ref(version)}: its {what} is over {MAX_MANIFEST_BYTES} bytes")
        return data

    @staticmethod
    def _remember(cache: OrderedDict[str, Any], key: str, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _KEPT:
            cache.popitem(last=False)


def upload_wants(plan: UploadPlan, manifest_id: str, have_whole: set[str]) -> tuple[list[str], list[str]]:
    """(blobs the agent lacks that it must be sent now, chunks to ask about next): given what it has of the manifest
    and the files' sha256, a chunked file it has whole needs nothing, one it lacks needs its chunks asked about."""
    send = [manifest_id] if manifest_id not in have_whole else []
    ask: list[str] = []
    for entry in plan.entries:
        if entry.sha256 in have_whole:
            continue
        if entry.chunks:
            ask.extend(entry.chunks)
        else:
            send.append(entry.sha256)
    return sorted(set(send)), sorted(set(ask))


def _ref(version: dict[str, Any]) -> str:
    return f"dataset {version.get('name')}:v{version.get('version')}"
