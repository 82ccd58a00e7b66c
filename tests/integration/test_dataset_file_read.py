"""ReadDatasetFile and GET /datasets/{ref}/files/{path} (issue 20: what the desktop app previews): a file's first
bytes of an uploaded tree (a chunked file read from its first chunk only), of an older version, of a file:// reference
(refused once the file changed after the snapshot), an unknown path named."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.controller import ControllerProcess
from helpers.http_api import HttpApi
from tensorfleet_agent.core.manifest import CHUNK_BYTES
from tensorfleet_desktop.client import Client, InvalidRequest, NotFound
from tensorfleet_desktop.controller.dataset_catalog import READ_MAX

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    root = Path(tmp_path_factory.mktemp("dataset-read"))
    proc = ControllerProcess(root / "controller", ["--no-mdns", "--http-port", "0"]).start()
    yield proc
    proc.stop()


def test_a_files_first_bytes_over_grpc_and_http(controller: ControllerProcess, tmp_path: Path) -> None:
    tree = tmp_path / "pics"
    (tree / "cat").mkdir(parents=True)
    (tree / "cat" / "a.txt").write_bytes(b"meow" * 100)
    big = os.urandom(CHUNK_BYTES + 10)
    (tree / "big.bin").write_bytes(big)
    with Client(controller.address) as client:
        assert client.upload_dataset_version(tree, "pics")["version"] == 1
        (tree / "cat" / "a.txt").write_bytes(b"purr")
        assert client.upload_dataset_version(tree, "pics")["version"] == 2

        now = client.read_dataset_file("pics", "cat/a.txt")
        assert (now["data"], now["truncated"], now["version"]["version"]) == (b"purr", False, 2)
        old = client.read_dataset_file("pics:1", "cat/a.txt", limit=10)
        assert (old["data"], old["truncated"], old["file"]["size"]) == (b"meowmeowme", True, 400)
        head = client.read_dataset_file("pics", "big.bin", limit=CHUNK_BYTES + 10)  # capped, from its first chunk
        assert head["data"] == big[:READ_MAX] and head["truncated"] and head["file"]["chunks"] == 2
        with pytest.raises(NotFound, match=r"pics:2 has no file 'nope\.txt'"):
            client.read_dataset_file("pics", "nope.txt")

        share = tmp_path / "share"
        share.mkdir()
        (share / "notes.md").write_text("# hello\n")
        client.add_dataset_reference("shared", f"file://{share}")
        assert client.read_dataset_file("shared", "notes.md")["data"] == b"# hello\n"
        (share / "notes.md").write_text("# changed, longer\n")
        with pytest.raises(InvalidRequest, match="changed since this version's snapshot"):
            client.read_dataset_file("shared", "notes.md")

    api = HttpApi.of(controller)
    answer = api.get("datasets/pics:1/files/cat/a.txt", params={"limit": 8})
    assert answer.status_code == 200 and answer.content == b"meowmeow"
    assert (answer.headers["X-File-Size"], answer.headers["X-Truncated"]) == ("400", "true")
    assert answer.headers["content-type"].startswith("text/plain")
    assert api.get("datasets/pics/files/cat/none.txt").status_code == 404
