"""A dataset file over CHUNK_BYTES travels as pieces: the manifest lists them, and a project's manifest id (no
chunked entry) is what it was before chunks existed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tensorfleet_agent.core.digest import file_chunk_digests
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import (
    CHUNK_BYTES,
    ManifestEntry,
    manifest_bytes,
    manifest_from_bytes,
    manifest_id,
    parse_manifest,
    validate_manifest,
)

SMALL = ManifestEntry("a.txt", 0o644, "a" * 64, 5)
BIG = ManifestEntry("big.bin", 0o644, "b" * 64, 2 * CHUNK_BYTES + 1, ("c" * 64, "d" * 64, "e" * 64))


def test_an_unchunked_manifest_keeps_the_id_it_had() -> None:
    before = b'{"version":1,"files":[["a.txt",420,"' + b"a" * 64 + b'",5]]}'
    assert manifest_bytes([SMALL]) == before
    assert manifest_id([SMALL]) == hashlib.sha256(before).hexdigest()


def test_a_chunked_entry_round_trips_through_bytes_and_json() -> None:
    assert manifest_from_bytes(manifest_bytes([BIG, SMALL])) == (SMALL, BIG)
    assert parse_manifest([BIG.as_dict(), SMALL.as_dict()]) == (SMALL, BIG)
    assert BIG.blobs == BIG.chunks and SMALL.blobs == (SMALL.sha256,)


@pytest.mark.parametrize(
    ("entry", "field", "says"),
    [
        (ManifestEntry("f", 0o644, "b" * 64, 2 * CHUNK_BYTES + 1, ("c" * 64,)), "manifest[0].chunks", "make 3"),
        (ManifestEntry("f", 0o644, "b" * 64, 10, ("c" * 64,)), "manifest[0].chunks", "only files over"),
        (ManifestEntry("f", 0o644, "b" * 64, CHUNK_BYTES + 1, ("c" * 64, "X")), "manifest[0].chunks[1]", "hex"),
    ],
)
def test_wrong_chunks_are_refused_naming_the_entry(entry: ManifestEntry, field: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_manifest([entry])
    assert caught.value.field == field and says in str(caught.value)


@pytest.mark.parametrize("size", [0, 99, 100, 101, 250])
def test_file_chunk_digests_hashes_the_whole_and_each_piece(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    sha, n, pieces = file_chunk_digests(path, 100)
    assert (sha, n) == (hashlib.sha256(data).hexdigest(), size)
    expected = [hashlib.sha256(data[i : i + 100]).hexdigest() for i in range(0, size, 100)] if size > 100 else []
    assert list(pieces) == expected
