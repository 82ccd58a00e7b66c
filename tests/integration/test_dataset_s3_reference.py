"""An s3:// dataset reference end to end on the nanio test server (issue 20): the controller lists the prefix
(dataset_refs.list_s3) into a snapshot, signs each object's GET with its blob store's client (dataset_push), and an
agent's dataset cache fetches them by those URLs, checks each ETag and size, and lays the version out read-only.
An object overwritten after the snapshot fails the task as DATASET_CHANGED, naming it."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.servers import S3_KEY, S3_SECRET, start_nanio
from tensorfleet_agent.core.types import ExitCause
from tensorfleet_agent.runtime.blobs import BlobStore as AgentBlobs
from tensorfleet_agent.runtime.datasets import DatasetCache, DatasetFailed
from tensorfleet_desktop.controller import dataset_refs
from tensorfleet_desktop.controller.dataset_push import DatasetPush
from tensorfleet_desktop.controller.dataset_versions import listing_bytes, listing_id
from tensorfleet_desktop.controller.store.blobs import S3BlobStore

pytestmark = pytest.mark.slow

FILES = {"cat/1.png": b"meow" * 100, "dog/1.png": b"woof" * 50, "labels.txt": b"cat\ndog\n"}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3BlobStore]:
    server, endpoint = start_nanio(tmp_path / "nanio")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    try:
        blobs = S3BlobStore(f"s3://tf-{uuid.uuid4().hex[:8]}?endpoint={endpoint}&secure=false", tmp_path / "cache")
        asyncio.run(blobs.open())
        yield blobs
    finally:
        server.stop()


def _put(store: S3BlobStore, key: str, data: bytes) -> None:
    store.client.put_object(store.bucket, key, io.BytesIO(data), len(data))


def test_an_s3_reference_is_fetched_by_signed_url_and_a_changed_object_is_named(
    store: S3BlobStore, tmp_path: Path
) -> None:
    for path, data in FILES.items():
        _put(store, f"imgs/{path}", data)
    url = f"s3://{store.bucket}/imgs"
    snapshot = listing_bytes(url, dataset_refs.list_s3(store.client, store.bucket, "imgs"))
    content_id = listing_id(snapshot)
    store.path(content_id).parent.mkdir(parents=True, exist_ok=True)
    store.path(content_id).write_bytes(snapshot)  # what the catalog stored when the reference was added
    version = {"name": "pics", "version": 1, "content_id": content_id, "source": "s3"}
    signed = asyncio.run(DatasetPush(store).signed_listing(version))

    agent_blobs = AgentBlobs(tmp_path / "agent" / "blobs", 1 << 30)
    cache = DatasetCache(tmp_path / "agent" / "datasets", agent_blobs)
    cache.load()
    sha = hashlib.sha256(signed).hexdigest()
    writer = agent_blobs.writer(sha, len(signed))
    writer.write(signed)
    writer.commit()
    held = cache.acquire(DatasetPush.mount(version, sha))
    assert {p: (held.path / p).read_bytes() for p in FILES} == FILES and held.fetched_bytes == sum(
        map(len, FILES.values())
    )

    _put(store, "imgs/dog/1.png", b"a different dog")  # overwritten in the bucket after the snapshot
    other = DatasetCache(tmp_path / "agent2" / "datasets", AgentBlobs(tmp_path / "agent2" / "blobs", 1 << 30))
    other.load()
    writer = other.blobs.writer(sha, len(signed))
    writer.write(signed)
    writer.commit()
    with pytest.raises(DatasetFailed) as failed:
        other.acquire(DatasetPush.mount(version, sha))
    assert failed.value.cause == ExitCause.DATASET_CHANGED
    assert "1 file(s)" in failed.value.message and "dog/1.png (ETag " in failed.value.message, failed.value.message
