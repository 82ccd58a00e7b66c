"""The dataset catalog on a real SQLite store and file blob store (issue 20): a dataset stored before versions loads
as version 1 (a table, still trained on with --target) and is stored as such; garbage collection keeps every blob
of a kept version (manifest, chunks, listing, a table's CSV form) and lets a deleted version's go; NAME[:VERSION]
and the paging of a version's tree."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import CHUNK_BYTES, ManifestEntry, manifest_bytes, manifest_id
from tensorfleet_desktop.controller.dataset_catalog import DatasetCatalog
from tensorfleet_desktop.controller.dataset_versions import files_page, parse_ref
from tensorfleet_desktop.controller.datasets import inspect
from tensorfleet_desktop.controller.jobspec import parse_job_spec
from tensorfleet_desktop.controller.store.blobs import BlobStore
from tensorfleet_desktop.controller.store.sqlite import SqliteJobStore


def _put(blobs: BlobStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    blobs.path(sha).parent.mkdir(parents=True, exist_ok=True)
    blobs.path(sha).write_bytes(data)
    return sha


async def test_an_old_single_file_dataset_loads_as_version_1_and_stays_a_table(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    csv = b"a,b,label\n" + b"".join(b"%d,%d,%d\n" % (i, i * 3, i % 2) for i in range(12))
    sha = _put(blobs, csv)
    (tmp_path / "f.csv").write_bytes(csv)
    fmt, rows, columns, profile = inspect(tmp_path / "f.csv", "f.csv")
    store = SqliteJobStore(tmp_path / "tf.db")
    await store.open()
    try:
        store.save_dataset(
            "old",
            {"name": "old", "sha256": sha, "filename": "f.csv", "format": fmt, "rows": rows, "columns": columns,
             "size": len(csv), "created_at": 5.0, "profile": profile, "source": {}},
        )  # fmt: skip
        await store.flush()
        catalog = DatasetCatalog(store, blobs)
        await catalog.load()
        (record,) = catalog.versions["old"]
        assert (record["version"], record["files"], record["table"]["rows"], record["created_at"]) == (1, 1, 12, 5.0)
        assert record["content_id"] == manifest_id([ManifestEntry("f.csv", 0o644, sha, len(csv))])
        assert blobs.path(record["content_id"]).is_file()  # its manifest: agents mount it like any version
        spec = parse_job_spec(catalog.resolve({"algorithm": "random_forest", "dataset": "old:1", "target": "label"}))
        assert spec.dataset == f"user:{sha}" and spec.dataset_version is not None
        assert spec.dataset_version["version"] == 1
        await store.flush()
        assert await store.load_datasets() == {}  # stored as a version from now on
        again = DatasetCatalog(store, blobs)
        await again.load()
        assert again.versions["old"] == [record]
    finally:
        await store.close()


async def test_gc_keeps_the_blobs_of_kept_versions_only(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    store = SqliteJobStore(tmp_path / "tf.db")
    await store.open()
    try:
        catalog = DatasetCatalog(store, blobs)
        big = os.urandom(CHUNK_BYTES + 10)
        chunks = (_put(blobs, big[:CHUNK_BYTES]), _put(blobs, big[CHUNK_BYTES:]))
        small = _put(blobs, b"small")
        entries = [
            ManifestEntry("big.bin", 0o644, hashlib.sha256(big).hexdigest(), len(big), chunks),
            ManifestEntry("s.txt", 0o644, small, 5),
        ]
        first = _put(blobs, manifest_bytes(entries))
        one, _ = await catalog.commit("d", first)
        second = _put(blobs, manifest_bytes(entries[1:]))
        two, _ = await catalog.commit("d", second)
        share = tmp_path / "share"
        share.mkdir()
        (share / "x").write_text("x")
        ref, _ = await catalog.add_reference("r", f"file://{share}")
        live = await catalog.live_blobs()
        assert {first, second, *chunks, small, ref["content_id"]} <= live
        await catalog.delete("d:1", [])
        live = await catalog.live_blobs()
        assert first not in live and not set(chunks) & live and {second, small} <= live
        with pytest.raises(ValidationError, match="not a table"):
            catalog.resolve({"algorithm": "random_forest", "dataset": "d", "target": "y"})
        assert [r["version"] for r in catalog.versions["d"]] == [two["version"]] == [2]
        assert one["version"] == 1
    finally:
        await store.close()


def test_refs_and_pages() -> None:
    assert parse_ref("pets") == ("pets", None) and parse_ref("pets:12") == ("pets", 12)
    for bad in ("pets:0", "pets:x", ":3", "a/b", ""):
        with pytest.raises(ValidationError):
            parse_ref(bad)
    files = [{"path": p} for p in ("a-b/x", "a.txt", "a/1", "a/2", "a/3", "b/1")]
    page, cursor = files_page(files, "a", 2, "")
    assert [f["path"] for f in page] == ["a/1", "a/2"] and cursor == "a/2"
    page, cursor = files_page(files, "a/", 2, cursor)
    assert [f["path"] for f in page] == ["a/3"] and cursor == ""
    page, cursor = files_page(files, "", 0, "a/3")
    assert [f["path"] for f in page] == ["b/1"] and cursor == ""
    with pytest.raises(ValidationError):
        files_page(files, "../x", 1, "")
