"""A project snapshot reaches a real controller with only what it lacks: the first upload sends every byte, an
unchanged re-upload none, a one-line change one file; a file whose bytes do not hash to its announced sha256 is
refused with a clear error and never adopted."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from helpers.controller import ControllerProcess
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent._generated import controller_pb2_grpc as cpb_grpc
from tensorfleet_desktop import connection
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(Path(tmp_path_factory.mktemp("project-upload")) / "controller", ["--no-mdns"]).start()
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # never the user's hash cache


def _project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "train.py").write_text("import sys\n\nLR = 3e-4\nprint('training', LR, sys.argv[1:])\n")
    (root / "pkg" / "model.py").write_text("WIDTH = 64\n" * 200)
    (root / "requirements.txt").write_text("numpy\n")
    (root / "pkg" / "model_copy.py").write_text("WIDTH = 64\n" * 200)  # the same content: sent once
    (root / "data.bin").write_bytes(bytes(range(256)) * 9000)  # > 2 MiB: several chunks
    (root / ".gitignore").write_text("*.log\n")
    (root / "run.log").write_text("ignored\n")
    return root


def _stub(controller: ControllerProcess) -> tuple[grpc.Channel, cpb_grpc.ControllerServiceStub, tuple[tuple[str, str]]]:
    token = json.loads(connection.connection_path(controller.address).read_text())["token"]
    channel = grpc.insecure_channel(controller.address)
    return channel, cpb_grpc.ControllerServiceStub(channel), (("authorization", f"Bearer {token}"),)


def test_only_what_the_controller_lacks_is_uploaded(controller: ControllerProcess, tmp_path: Path) -> None:
    root = _project(tmp_path / "proj")
    sizes = {p: p.stat().st_size for p in root.rglob("*") if p.is_file() and p.suffix != ".log"}
    with Client(controller.address) as client:
        first = client.upload_project(root)
        assert first["files"] == len(sizes) == 7 and first["bytes"] == sum(sizes.values())
        copy = sizes[root / "pkg" / "model_copy.py"]
        assert first["uploaded_bytes"] == first["bytes"] - copy and first["uploaded_files"] == 6
        assert {e["path"] for e in first["manifest"]} == {str(p.relative_to(root)) for p in sizes}
        assert len(first["manifest_id"]) == 64 and first["git"] is None  # not a repository

        again = client.upload_project(root)
        assert (again["uploaded_bytes"], again["uploaded_files"]) == (0, 0)
        assert again["manifest_id"] == first["manifest_id"] and again["bytes"] == first["bytes"]

        train = root / "pkg" / "train.py"
        train.write_text(train.read_text().replace("LR = 3e-4", "LR = 1e-3"))
        changed = client.upload_project(root)
        assert changed["uploaded_files"] == 1 and changed["uploaded_bytes"] == train.stat().st_size
        assert changed["manifest_id"] != first["manifest_id"]

    blobs = [p for p in (controller.data_dir / "blobs").rglob("*") if p.is_file() and len(p.name) == 64]
    stored = {p.name: p.read_bytes() for p in blobs}
    for path in [*sizes, train]:
        data = path.read_bytes()
        assert stored[hashlib.sha256(data).hexdigest()] == data


def test_bytes_that_do_not_hash_to_the_announced_sha_are_refused_and_not_adopted(
    controller: ControllerProcess,
) -> None:
    good = b"print('hello')\n"
    claimed = hashlib.sha256(good).hexdigest()
    ok = b"VALID = True\n"
    ok_sha = hashlib.sha256(ok).hexdigest()
    channel, stub, auth = _stub(controller)
    with channel:
        assert list(stub.MissingBlobs(cpb.MissingBlobsRequest(sha256=[claimed]), metadata=auth).sha256) == [claimed]
        parts = [
            cpb.ProjectFileChunk(header=cpb.ProjectFileHeader(sha256=ok_sha, size=len(ok))),
            cpb.ProjectFileChunk(data=ok),
            cpb.ProjectFileChunk(header=cpb.ProjectFileHeader(sha256=claimed, size=len(good))),
            cpb.ProjectFileChunk(data=b"print('HELLO')\n"),  # same size, other bytes
        ]
        with pytest.raises(grpc.RpcError) as refused:
            stub.UploadBlobs(iter(parts), timeout=30, metadata=auth)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        message = refused.value.details() or ""
        assert claimed in message and "hashes to" in message and "refused" in message, message

        missing = stub.MissingBlobs(cpb.MissingBlobsRequest(sha256=[claimed, ok_sha, claimed]), metadata=auth)
        assert list(missing.sha256) == [claimed]  # the bad one was not adopted; the good one before it was

        short = [
            cpb.ProjectFileChunk(header=cpb.ProjectFileHeader(sha256=claimed, size=len(good) + 5)),
            cpb.ProjectFileChunk(data=good),
        ]
        with pytest.raises(grpc.RpcError) as truncated:
            stub.UploadBlobs(iter(short), timeout=30, metadata=auth)
        assert "announced" in (truncated.value.details() or "")
        with pytest.raises(grpc.RpcError) as bad_sha:
            stub.MissingBlobs(cpb.MissingBlobsRequest(sha256=["../etc/passwd"]), metadata=auth)
        assert bad_sha.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "sha256" in (bad_sha.value.details() or "")
        again = stub.MissingBlobs(cpb.MissingBlobsRequest(sha256=[claimed]), metadata=auth)
        assert list(again.sha256) == [claimed]
    assert not list((controller.data_dir / "blobs").rglob(claimed))
    assert not [p for p in (controller.data_dir / "blobs" / "incoming").glob("project-*")]  # nothing left behind
