"""Dataset versions through a real controller (issue 20): a tree uploads once, an unchanged re-upload sends 0 bytes
and makes no version, an edit of one byte in a large file sends one 8 MiB chunk and makes version 2, and an upload
broken off midway resumes with only what had not arrived. The CLI lists, shows and deletes versions."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.controller import ControllerProcess, cli_json
from tensorfleet_agent.core.manifest import CHUNK_BYTES
from tensorfleet_desktop.client import Client, InvalidRequest
from tensorfleet_desktop.project import hash_cache

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(Path(tmp_path_factory.mktemp("dataset-upload")) / "controller", ["--no-mdns"]).start()
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # never the user's hash cache
    monkeypatch.setattr(hash_cache, "RACY_SECONDS", 0.0)  # files made by the test are remembered at once


def _images(root: Path) -> Path:
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            (root / label / f"{i}.png").write_bytes(f"{label}{i}".encode() * 100)
    (root / "dog" / "same.png").write_bytes(b"cat0" * 100)  # one content twice: sent once
    (root / "shards").mkdir()
    (root / "shards" / "train.bin").write_bytes(os.urandom(2 * CHUNK_BYTES + 1000))  # three chunks
    return root


def test_versions_resend_only_what_changed(controller: ControllerProcess, tmp_path: Path) -> None:
    root = _images(tmp_path / "pets")
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    with Client(controller.address) as client:
        first = client.upload_dataset_version(root, "pets")
        assert (first["version"], first["unchanged"], first["source"]) == (1, False, "upload")
        assert (first["files"], first["bytes"]) == (8, total)
        assert first["uploaded_bytes"] == total - 400 and first["uploaded_blobs"] == 6 + 3

        again = client.upload_dataset_version(root, "pets")
        assert (again["version"], again["unchanged"], again["uploaded_bytes"]) == (1, True, 0)
        assert again["content_id"] == first["content_id"] and again["hashed_files"] == 0  # the hash cache

        with (root / "shards" / "train.bin").open("r+b") as fh:  # one byte of the second chunk, changed
            fh.seek(CHUNK_BYTES + 7)
            byte = fh.read(1)
            fh.seek(CHUNK_BYTES + 7)  # back: the read moved on, where the byte written matched 1 time in 256
            fh.write(bytes([byte[0] ^ 0xFF]))
        edited = client.upload_dataset_version(root, "pets")
        assert (edited["version"], edited["unchanged"], edited["uploaded_bytes"]) == (2, False, CHUNK_BYTES)

        page = client.dataset("pets:1", prefix="shards")
        assert [(f["path"], f["chunks"]) for f in page["files"]] == [("shards/train.bin", 3)]
        assert page["version"]["content_id"] == first["content_id"] and page["next_cursor"] == ""
        with pytest.raises(InvalidRequest, match="dataset name"):
            client.upload_dataset_version(root, "bad name")

    listed = {d["name"]: d for d in cli_json(controller.cli("datasets", "list", "--json"))}
    assert [v["version"] for v in listed["pets"]["versions"]] == [1, 2] and listed["iris"]["builtin"]
    table = controller.cli("datasets", "list")
    assert table.returncode == 0 and "pets" in table.stdout and "builtin" in table.stdout, table.stdout
    shown = controller.cli("datasets", "show", "pets", "--limit", "3")
    assert shown.returncode == 0 and "pets:2" in shown.stdout and "cat/" in shown.stdout, shown.stdout
    assert "--cursor" in shown.stderr  # 8 files, 3 a page
    gone = cli_json(controller.cli("datasets", "delete", "pets:1", "--json"))
    assert [v["version"] for v in gone["versions"]] == [1]
    left = cli_json(controller.cli("datasets", "show", "pets", "--json", "--all"))
    assert [v["version"] for v in left["dataset"]["versions"]] == [2] and len(left["files"]) == 8
    assert "1 (latest 2)" in controller.cli("datasets", "list").stdout


def test_an_upload_broken_off_midway_resumes_with_what_did_not_arrive(
    controller: ControllerProcess, tmp_path: Path
) -> None:
    root = tmp_path / "shards"
    root.mkdir()
    (root / "a.bin").write_bytes(os.urandom(3 * CHUNK_BYTES + 5))  # four chunks
    (root / "b.txt").write_text("small\n")
    total = 3 * CHUNK_BYTES + 5 + 6

    def give_up(phase: str, done: int, size: int) -> None:
        if phase == "upload" and done > 2 * CHUNK_BYTES + CHUNK_BYTES // 2:  # in the third chunk
            raise ConnectionResetError("the link went down")

    with Client(controller.address) as client:
        with pytest.raises(ConnectionResetError):
            client.upload_dataset_version(root, "shards", give_up)
        assert [d for d in client.datasets() if d["name"] == "shards"] == []  # nothing committed

        resumed = client.upload_dataset_version(root, "shards")
        assert resumed["version"] == 1 and resumed["bytes"] == total
        assert resumed["uploaded_bytes"] == total - 2 * CHUNK_BYTES  # the first two chunks were kept

    result = cli_json(controller.cli("datasets", "upload", str(root), "--name", "shards", "--json"))
    assert (result["unchanged"], result["version"], result["uploaded_bytes"]) == (True, 1, 0)


def test_submit_names_a_version_or_uploads_a_folder_as_one(controller: ControllerProcess, tmp_path: Path) -> None:
    root = tmp_path / "pics"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "1.png").write_bytes(b"a1")
    (root / "b" / "1.png").write_bytes(b"b1")
    args = ("submit", "-a", "image_classifier", "--epochs", "1", "--json")
    first = controller.cli(*args, "--dataset", str(root))  # a path: uploaded, then named by its version
    assert "dataset pics: version 1, 2 files" in first.stderr, first.stderr
    (root / "b" / "2.png").write_bytes(b"b2")
    second = cli_json(controller.cli(*args, "--dataset", f"{root}/"))
    pinned = cli_json(controller.cli(*args, "--dataset", "pics:1"))  # a stored version passes through
    with Client(controller.address) as client:
        jobs = [client.job(j["id"]) for j in (cli_json(first), second, pinned)]
        for job in jobs:
            client.cancel(job["id"])  # no agent here: they would wait
    pins = [j["spec"]["dataset_version"] for j in jobs]
    assert [(p["name"], p["version"], p["source"]) for p in pins] == [
        ("pics", 1, "upload"),
        ("pics", 2, "upload"),
        ("pics", 1, "upload"),
    ]
