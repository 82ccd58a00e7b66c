"""The blob store contract, on the file backend and on S3 (a nanio server process, or TENSORFLEET_TEST_S3_URI)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from helpers.servers import S3_KEY, S3_SECRET, start_nanio
from tensorfleet_desktop.controller.store.blobs import BlobStore, open_blobs


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("TENSORFLEET_TEST_S3_URI"):
        yield ""
        return
    server, endpoint = start_nanio(tmp_path_factory.mktemp("nanio"))
    yield endpoint
    server.stop()


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.slow)])  # a server process: slow
async def blobs(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[BlobStore]:
    if request.param == "file":
        store = open_blobs(f"file://{tmp_path / 'blobs'}", tmp_path)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        uri = (
            os.environ.get("TENSORFLEET_TEST_S3_URI")
            or f"s3://b-{uuid.uuid4().hex[:12]}?endpoint={endpoint}&secure=false"
        )
        if endpoint:
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        store = open_blobs(uri, tmp_path / "controller")
    await store.open()
    yield store


def _http(request: urllib.request.Request) -> bytes:
    with urllib.request.urlopen(request) as response:
        body: bytes = response.read()
    return body


def _put(store: BlobStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    store.path(sha).parent.mkdir(parents=True, exist_ok=True)
    store.path(sha).write_bytes(data)
    return sha


async def test_published_blobs_survive_the_local_copy(blobs: BlobStore) -> None:
    data = os.urandom(3 * 2**20 + 17)
    sha = _put(blobs, data)
    await blobs.publish(sha)
    listed = await blobs.listing()
    assert listed[sha][0] == len(data)
    if blobs.uri.startswith("s3://"):
        blobs.path(sha).unlink()  # only the bucket has it now
        assert (await blobs.ensure(sha)).read_bytes() == data
        url, size = await blobs.direct_download(sha) or ("", 0)
        assert size == len(data) and await asyncio.to_thread(_http, urllib.request.Request(url)) == data
    else:
        assert await blobs.direct_download(sha) is None and await blobs.direct_upload(sha) is None
    await blobs.delete(sha)
    assert sha not in await blobs.listing()
    with pytest.raises(FileNotFoundError):
        await blobs.ensure(sha)


async def test_direct_uploads_land_in_the_store(blobs: BlobStore) -> None:
    data = b"straight from an agent"
    sha = hashlib.sha256(data).hexdigest()
    url = await blobs.direct_upload(sha)
    if blobs.uri.startswith("file://"):
        assert url is None  # agents' files come through the controller
        return
    assert url is not None
    request = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Length": str(len(data))})
    await asyncio.to_thread(_http, request)
    assert (await blobs.ensure(sha)).read_bytes() == data
