"""An s3:// dataset reference (issue 20) listed with the controller's object store client, on a nanio server (or
TENSORFLEET_TEST_S3_URI's): the prefix's objects become version 1 without a byte copied, the same listing makes no
version, a changed object makes version 2, objects outside the prefix are left out, and an unknown bucket is a
clear error."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.servers import S3_KEY, S3_SECRET, start_nanio
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller.dataset_catalog import DatasetCatalog
from tensorfleet_desktop.controller.store.blobs import S3BlobStore, open_blobs
from tensorfleet_desktop.controller.store.sqlite import SqliteJobStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("TENSORFLEET_TEST_S3_URI"):
        pytest.skip("lists a bucket of its own making on the nanio test server")
    server, endpoint = start_nanio(tmp_path_factory.mktemp("nanio"))
    yield endpoint
    server.stop()


async def test_an_s3_prefix_is_snapshotted_as_versions(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    blobs = open_blobs(f"s3://b-{uuid.uuid4().hex[:12]}?endpoint={s3_endpoint}&secure=false", tmp_path / "ctl")
    assert isinstance(blobs, S3BlobStore)
    await blobs.open()
    data = f"data-{uuid.uuid4().hex[:12]}"
    blobs.client.make_bucket(data)

    def put(key: str, body: bytes) -> None:
        blobs.client.put_object(data, key, io.BytesIO(body), len(body))

    put("imgs/cat/0.png", b"meow")
    put("imgs/dog/0.png", b"woof!")
    put("other/x.png", b"not under the prefix")
    store = SqliteJobStore(tmp_path / "tf.db")
    await store.open()
    try:
        catalog = DatasetCatalog(store, blobs)
        first, unchanged = await catalog.add_reference("pets", f"s3://{data}/imgs/")
        assert (first["version"], first["files"], first["bytes"], unchanged) == (1, 2, 9, False)
        assert first["url"] == f"s3://{data}/imgs" and first["source"] == "s3"
        tree = await catalog.tree(first)
        assert [f["path"] for f in tree] == ["cat/0.png", "dog/0.png"] and all(f["etag"] for f in tree)
        same, unchanged = await catalog.add_reference("pets", f"s3://{data}/imgs")
        assert (same["version"], unchanged) == (1, True)
        put("imgs/dog/0.png", b"WOOF!")  # same size, new ETag
        second, unchanged = await catalog.add_reference("pets", f"s3://{data}/imgs")
        assert (second["version"], unchanged) == (2, False)
        assert (await catalog.tree(second))[1]["etag"] != tree[1]["etag"]
        with pytest.raises(ValidationError, match="NoSuchBucket"):
            await catalog.add_reference("x", f"s3://nope-{uuid.uuid4().hex[:8]}/p")
        with pytest.raises(ValidationError, match="holds no files"):
            await catalog.add_reference("x", f"s3://{data}/nothing-here")
    finally:
        await store.close()
