"""What upload_project streams: per file a header then chunks of at most 1 MiB; a file that changed since the
snapshot ends the stream with a ProjectError naming it (the controller would refuse the bytes anyway)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tensorfleet_desktop.client.aio import UPLOAD_CHUNK, _project_chunks
from tensorfleet_desktop.project import ProjectError, Snapshot, snapshot


def _collect(snap: Snapshot, changed: list[ProjectError]) -> list[Any]:
    async def run() -> list[Any]:
        return [m async for m in _project_chunks(snap, snap.plan_upload(set()).send, changed)]

    return asyncio.run(run())


def test_each_file_is_a_header_then_chunks_of_at_most_one_mib(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * (UPLOAD_CHUNK * 2 + 7))
    (tmp_path / "empty.py").write_text("")
    snap = snapshot(tmp_path, cache_dir=tmp_path / ".." / "cache", with_git=False)
    changed: list[ProjectError] = []
    parts = _collect(snap, changed)
    assert not changed
    kinds = [(m.WhichOneof("part"), m.header.size if m.HasField("header") else len(m.data)) for m in parts]
    assert kinds == [
        ("header", UPLOAD_CHUNK * 2 + 7),
        ("data", UPLOAD_CHUNK),
        ("data", UPLOAD_CHUNK),
        ("data", 7),
        ("header", 0),
    ]


def test_a_file_changed_after_the_snapshot_ends_the_stream_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "b.py").write_text("B = 1\n")
    snap = snapshot(tmp_path, cache_dir=tmp_path / ".." / "cache", with_git=False)
    (tmp_path / "a.py").write_text("A = 2\n")  # same size, other bytes
    changed: list[ProjectError] = []
    parts = _collect(snap, changed)
    assert [m.WhichOneof("part") for m in parts] == ["header", "data"]  # b.py never started
    assert len(changed) == 1 and "a.py changed while the project was uploaded" in str(changed[0])

    (tmp_path / "a.py").write_text("A = 1\n# longer now\n")
    changed.clear()
    _collect(snap, changed)
    assert "a.py" in str(changed[0])
