"""The controller's side of a task's dataset version (controller/dataset_push.py, issue 20): what an agent is sent
of an upload (a chunked file it holds whole needs nothing; one it lacks needs its chunks asked about), and a
reference's listing as the agent reads it (a "get" per object: the file's path, or a presigned URL)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tensorfleet_agent.core.manifest import CHUNK_BYTES, ManifestEntry, manifest_bytes, manifest_id
from tensorfleet_agent.core.types import DatasetMount
from tensorfleet_desktop.controller.dataset_push import DatasetPush, upload_wants
from tensorfleet_desktop.controller.project_files import ProjectFilesMissing
from tensorfleet_desktop.controller.store.blobs import BlobStore


def _store(blobs: BlobStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    blobs.path(sha).parent.mkdir(parents=True, exist_ok=True)
    blobs.path(sha).write_bytes(data)
    return sha


def test_an_upload_sends_what_the_agent_lacks_whole_or_in_chunks(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    big = ManifestEntry("big.bin", 0o644, "b" * 64, CHUNK_BYTES + 10, ("c" * 64, "d" * 64))
    small = ManifestEntry("a.txt", 0o644, "a" * 64, 5)
    mid = _store(blobs, manifest_bytes([big, small]))
    assert mid == manifest_id([big, small])
    version = {"name": "pets", "version": 2, "content_id": mid, "source": "upload"}
    plan = asyncio.run(DatasetPush(blobs).manifest(version))
    assert plan.sizes == {mid: 0, "a" * 64: 5, "c" * 64: CHUNK_BYTES, "d" * 64: 10}
    assert plan.owners["d" * 64] == "big.bin"
    assert upload_wants(plan, mid, set()) == (sorted([mid, "a" * 64]), ["c" * 64, "d" * 64])
    assert upload_wants(plan, mid, {mid, "a" * 64, "b" * 64}) == ([], [])  # the agent holds the big file whole
    assert DatasetPush.mount(version, "") == DatasetMount("pets", 2, manifest_id=mid)


def _reference(blobs: BlobStore, url: str) -> dict[str, Any]:
    objects = [{"path": "a/x.txt", "size": 3, "etag": "e1"}, {"path": "y.txt", "size": 4, "etag": "e2"}]
    listing = json.dumps({"url": url, "objects": objects}).encode()
    return {"name": "nas", "version": 1, "content_id": _store(blobs, listing), "source": url[:2]}


def test_a_file_reference_listing_gets_each_objects_path(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    version = _reference(blobs, "file:///mnt/share/data")
    signed = json.loads(asyncio.run(DatasetPush(blobs).signed_listing(version)))
    assert [o["get"] for o in signed["objects"]] == ["/mnt/share/data/a/x.txt", "/mnt/share/data/y.txt"]
    assert signed["objects"][0]["etag"] == "e1" and signed["url"] == "file:///mnt/share/data"
    assert DatasetPush.mount(version, "f" * 64) == DatasetMount("nas", 1, listing_id="f" * 64)


class _Signer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, timedelta]] = []

    def presigned_get_object(self, bucket: str, key: str, expires: timedelta) -> str:
        self.calls.append((bucket, key, expires))
        return f"https://s3.example/{bucket}/{key}?sig=1"


def test_an_s3_reference_is_signed_once_with_the_blob_stores_client(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    version = _reference(blobs, "s3://bucket/imgs")
    with pytest.raises(ProjectFilesMissing, match="blob store is not S3"):
        asyncio.run(DatasetPush(blobs).signed_listing(version))
    signer = _Signer()
    blobs.client = signer  # type: ignore[attr-defined]  # what S3BlobStore has
    push = DatasetPush(blobs)
    first = asyncio.run(push.signed_listing(version))
    assert [o["get"] for o in json.loads(first)["objects"]] == [
        "https://s3.example/bucket/imgs/a/x.txt?sig=1",
        "https://s3.example/bucket/imgs/y.txt?sig=1",
    ]
    assert asyncio.run(push.signed_listing(version)) == first and len(signer.calls) == 2  # reused, not re-signed
    blobs.path(version["content_id"]).unlink()
    with pytest.raises(ProjectFilesMissing, match="nas:v1: its manifest"):
        asyncio.run(DatasetPush(blobs).manifest(version))
