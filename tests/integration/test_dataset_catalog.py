"""The controller's side of dataset versions (issue 20) over its gRPC API, on a real controller on loopback, with
the RPCs alone (no client library): CommitDatasetVersion after UploadBlobs (N+1, unchanged, a missing chunk
refused by name), a one-CSV version profiled as a table that `--dataset NAME --target COL` jobs still train on,
GetDataset's paged tree, ListDatasets with versions and built-ins, file:// references snapshotted (unchanged /
changed), NAME[:VERSION] pinned in a job spec, and DeleteDataset refused while a job refers to the version."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.controller import ControllerProcess
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent.core.manifest import CHUNK_BYTES, ManifestEntry, manifest_bytes, manifest_id
from tensorfleet_desktop import wire
from tensorfleet_desktop.client.aio import AsyncClient
from tensorfleet_desktop.client.errors import InvalidRequest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(Path(tmp_path_factory.mktemp("dataset-catalog")) / "controller", ["--no-mdns"]).start()
    yield proc
    proc.stop()


def _entry(path: str, data: bytes) -> tuple[ManifestEntry, dict[str, bytes]]:
    """A manifest entry and the blobs it travels as (chunks for a file over CHUNK_BYTES)."""
    sha = hashlib.sha256(data).hexdigest()
    if len(data) <= CHUNK_BYTES:
        return ManifestEntry(path, 0o644, sha, len(data)), {sha: data}
    pieces = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
    blobs = {hashlib.sha256(p).hexdigest(): p for p in pieces}
    return ManifestEntry(path, 0o644, sha, len(data), tuple(hashlib.sha256(p).hexdigest() for p in pieces)), blobs


async def _blobs(client: AsyncClient, blobs: dict[str, bytes]) -> None:
    async def parts() -> AsyncIterator[cpb.ProjectFileChunk]:
        for sha, data in blobs.items():
            yield wire.project_file_header_to_pb(sha, len(data))
            for i in range(0, len(data), 1 << 20):
                yield cpb.ProjectFileChunk(data=data[i : i + (1 << 20)])

    stub = await client._stub()
    await stub.UploadBlobs(parts(), metadata=client._metadata)


async def _commit(client: AsyncClient, name: str, files: dict[str, bytes], send: bool = True) -> dict[str, Any]:
    entries, blobs = [], {}
    for path, data in files.items():
        entry, pieces = _entry(path, data)
        entries.append(entry)
        blobs.update(pieces)
    body = manifest_bytes(entries)
    await _blobs(client, {**(blobs if send else {}), manifest_id(entries): body})
    request = cpb.CommitDatasetVersionRequest(name=name, manifest_id=manifest_id(entries))
    return await client._call("CommitDatasetVersion", request, wire.dataset_version_from_pb)


async def _get(client: AsyncClient, ref: str, **kw: Any) -> dict[str, Any]:
    return await client._call("GetDataset", cpb.GetDatasetRequest(ref=ref, **kw), wire.get_dataset_from_pb)


def test_tree_versions_tables_references_and_deletes(controller: ControllerProcess, tmp_path: Path) -> None:
    asyncio.run(_scenario(controller, tmp_path))


async def _scenario(controller: ControllerProcess, tmp_path: Path) -> None:
    big = os.urandom(CHUNK_BYTES + 100)
    tree = {"cat/0.png": b"meow" * 50, "dog/0.png": b"woof" * 50, "shards/train.bin": big}
    async with AsyncClient(controller.address) as client:
        first = await _commit(client, "pets", tree)
        assert (first["version"], first["unchanged"], first["files"], first["bytes"]) == (1, False, 3, len(big) + 400)
        again = await _commit(client, "pets", tree)
        assert (again["version"], again["unchanged"]) == (1, True)
        with pytest.raises(InvalidRequest, match=r"1 of the 3 files .*shards/train.bin"):  # its new chunk is absent
            await _commit(client, "pets", {**tree, "shards/train.bin": big[:-1] + bytes([big[-1] ^ 1])}, send=False)
        second = await _commit(client, "pets", {**tree, "dog/1.png": b"yap"})
        assert (second["version"], second["files"]) == (2, 4)

        page = await _get(client, "pets", limit=2)
        assert [f["path"] for f in page["files"]] == ["cat/0.png", "dog/0.png"] and page["version"]["version"] == 2
        rest = await _get(client, "pets", limit=2, cursor=page["next_cursor"])
        assert [f["path"] for f in rest["files"]] == ["dog/1.png", "shards/train.bin"] and not rest["next_cursor"]
        assert rest["files"][1]["chunks"] == 2 and rest["files"][1]["sha256"] == hashlib.sha256(big).hexdigest()
        old = await _get(client, "pets:1", prefix="dog")
        assert [f["path"] for f in old["files"]] == ["dog/0.png"]
        assert [v["version"] for v in old["dataset"]["versions"]] == [1, 2] and old["dataset"]["latest_version"] == 2

        # one CSV: a table as single-file datasets always were, trained on with --target
        csv = b"x,y,label\n" + b"".join(b"%d,%d,%s\n" % (i, i * 2, b"ab"[i % 2 : i % 2 + 1]) for i in range(30))
        table = await _commit(client, "flowers", {"flowers.csv": csv})
        listed = await client._call("ListDatasets", cpb.ListDatasetsRequest(), lambda r: r)
        by_name = {d["name"]: d for d in map(wire.dataset_from_pb, listed.datasets)}
        assert (by_name["flowers"]["rows"], by_name["flowers"]["columns"]) == (30, ["x", "y", "label"])
        assert by_name["flowers"]["sha256"] == hashlib.sha256(csv).hexdigest()
        assert by_name["pets"]["latest_version"] == 2 and by_name["pets"]["format"] == ""
        assert by_name["iris"]["builtin"]
        spec = {"algorithm": "random_forest", "dataset": "flowers", "target": "label"}
        job = await client._call("SubmitJob", cpb.SubmitJobRequest(spec_json=json.dumps(spec)), lambda r: r)
        recorded = json.loads(job.spec_json)
        assert recorded["dataset"] == f"user:{hashlib.sha256(csv).hexdigest()}"
        assert recorded["dataset_version"] == {
            "name": "flowers", "version": 1, "content_id": table["content_id"], "source": "upload"
        }  # fmt: skip
        project_like = {"algorithm": "noop", "dataset": "pets:1"}
        mounted = json.loads(
            (
                await client._call("SubmitJob", cpb.SubmitJobRequest(spec_json=json.dumps(project_like)), lambda r: r)
            ).spec_json
        )
        assert mounted["dataset"] == "" and mounted["dataset_version"]["content_id"] == first["content_id"]
        with pytest.raises(InvalidRequest, match="not a table"):
            spec = {"algorithm": "random_forest", "dataset": "pets", "target": "label"}
            await client._call("SubmitJob", cpb.SubmitJobRequest(spec_json=json.dumps(spec)), lambda r: r)

        with pytest.raises(InvalidRequest, match=f"flowers:1 is used by job\\(s\\) {job.id}"):
            await client._call("DeleteDataset", cpb.DatasetRequest(name="flowers"), lambda r: r)
        with pytest.raises(InvalidRequest, match="pets:1 is used by job"):
            await client._call("DeleteDataset", cpb.DatasetRequest(name="pets:1"), lambda r: r)
        gone = await client._call("DeleteDataset", cpb.DatasetRequest(name="pets:2"), wire.dataset_from_pb)
        assert [v["version"] for v in gone["versions"]] == [2]
        assert (await _get(client, "pets"))["version"]["version"] == 1

        # a file:// reference: a snapshot of the folder; the same listing makes no version, a change makes N+1
        share = tmp_path / "share"
        (share / "a").mkdir(parents=True)
        (share / "a" / "one.txt").write_text("1")
        (share / "two.txt").write_text("22")
        add = cpb.AddDatasetReferenceRequest(name="shared", url=f"file://{share}")
        ref = await client._call("AddDatasetReference", add, wire.dataset_version_from_pb)
        assert (ref["version"], ref["source"], ref["files"], ref["bytes"], ref["url"]) == (
            1, "file", 2, 3, f"file://{share}"
        )  # fmt: skip
        same = await client._call("AddDatasetReference", add, wire.dataset_version_from_pb)
        assert (same["version"], same["unchanged"]) == (1, True)
        (share / "two.txt").write_text("333")
        changed = await client._call("AddDatasetReference", add, wire.dataset_version_from_pb)
        assert (changed["version"], changed["bytes"]) == (2, 4)
        files = (await _get(client, "shared:2"))["files"]
        assert [f["path"] for f in files] == ["a/one.txt", "two.txt"] and files[1]["etag"].endswith(":3")
        with pytest.raises(InvalidRequest, match="not a folder"):
            bad = cpb.AddDatasetReferenceRequest(name="x", url=f"file://{tmp_path / 'nowhere'}")
            await client._call("AddDatasetReference", bad, lambda r: r)
        with pytest.raises(InvalidRequest, match="s3:// references are listed with the controller's object store"):
            s3 = cpb.AddDatasetReferenceRequest(name="x", url="s3://bucket/prefix")
            await client._call("AddDatasetReference", s3, lambda r: r)
