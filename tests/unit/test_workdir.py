from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import MODE_EXECUTABLE, MODE_FILE, ManifestEntry
from tensorfleet_agent.runtime.blobs import BlobStore
from tensorfleet_agent.runtime.workdir import BlobsMissing, materialize, missing_blobs


def _entry(store: BlobStore | None, path: str, data: bytes, mode: int = MODE_FILE) -> ManifestEntry:
    digest = hashlib.sha256(data).hexdigest()
    if store is not None and not store.has(digest):
        writer = store.writer(digest, len(data))
        writer.write(data)
        writer.commit()
    return ManifestEntry(path, mode, digest, len(data))


def _tree(store: BlobStore) -> list[ManifestEntry]:
    return [
        _entry(store, "pkg/__init__.py", b""),
        _entry(store, "pkg/model/net.py", b"WIDTH = 3\n"),
        _entry(store, "pkg/model/deep/cfg.yaml", b"lr: 0.1\n"),
        _entry(store, "run.sh", b'#!/bin/sh\necho ran "$1"\n', MODE_EXECUTABLE),
        _entry(store, "README.md", b"WIDTH = 3\n"),  # same content as net.py: one blob, two files
    ]


@pytest.mark.parametrize("link", ["copy", "hardlink"])
def test_materialize_nested_tree_with_executable(tmp_path: Path, link: str) -> None:
    store = BlobStore(tmp_path / "blobs", limit_bytes=1 << 20)
    entries = _tree(store)
    work = tmp_path / "task" / "work"
    result = materialize(store, entries, work, link=link)  # type: ignore[arg-type]
    assert (result.files, result.bytes) == (5, sum(e.size for e in entries))
    assert result.copied + result.linked == 5
    assert result.linked == (4 if link == "hardlink" else 0)  # the executable is always copied
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file()) == sorted(
        e.path for e in entries
    )
    assert (work / "pkg/model/deep/cfg.yaml").read_bytes() == b"lr: 0.1\n"
    assert stat.S_IMODE((work / "run.sh").stat().st_mode) == 0o755
    out = subprocess.run([str(work / "run.sh"), "x"], capture_output=True, text=True, check=True).stdout
    assert out == "ran x\n"
    net_mode = stat.S_IMODE((work / "pkg/model/net.py").stat().st_mode)
    assert net_mode == (0o444 if link == "hardlink" else 0o644)
    with pytest.raises(FileExistsError):  # a second run into the same dir never overwrites what is there
        materialize(store, entries, work, link=link)  # type: ignore[arg-type]


def test_missing_blobs_reported_before_disk_is_touched(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", limit_bytes=1 << 20)
    present = _entry(store, "a.py", b"a\n")
    absent1 = _entry(None, "b/b.py", b"b\n")
    absent2 = _entry(None, "c.py", b"c\n")
    twice = _entry(None, "d.py", b"b\n")  # same content as b/b.py: reported once
    entries = [present, absent1, absent2, twice]
    expected = tuple(sorted({absent1.sha256, absent2.sha256}))
    assert missing_blobs(store, entries) == expected
    work = tmp_path / "work"
    with pytest.raises(BlobsMissing) as info:
        materialize(store, entries, work)
    assert info.value.missing == expected
    assert "2 blob(s)" in str(info.value)
    assert not work.exists()
    assert missing_blobs(store, [present]) == ()


@pytest.mark.parametrize("bad", ["../escape.py", "/etc/passwd", "a/../../x"])
def test_path_outside_workdir_refused_by_validation(tmp_path: Path, bad: str) -> None:
    store = BlobStore(tmp_path / "blobs", limit_bytes=1 << 20)
    with pytest.raises(ValidationError, match="manifest"):
        materialize(store, [_entry(store, bad, b"x")], tmp_path / "work")
    assert not (tmp_path / "escape.py").exists()


def test_planted_symlink_dir_is_not_followed(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", limit_bytes=1 << 20)
    outside = tmp_path / "outside"
    outside.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    (work / "sub").symlink_to(outside)  # a valid manifest path whose parent resolves outside the dir
    with pytest.raises(ValidationError, match="outside the working dir"):
        materialize(store, [_entry(store, "sub/evil.py", b"x")], work)
    (work / "file.py").symlink_to(outside / "target.py")  # a symlink at the file itself is never written through
    with pytest.raises(FileExistsError):
        materialize(store, [_entry(store, "file.py", b"y")], work)
    assert list(outside.iterdir()) == []


def test_damaged_blob_size_is_reported(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", limit_bytes=1 << 20)
    entry = _entry(store, "a.py", b"abc")
    wrong = ManifestEntry("a.py", MODE_FILE, entry.sha256, 4)
    with pytest.raises(ValidationError, match="cache is damaged"):
        materialize(store, [wrong], tmp_path / "work")


@pytest.mark.parametrize("link", ["copy", "hardlink"])
def test_task_cannot_change_the_cached_blob(tmp_path: Path, link: str) -> None:
    store = BlobStore(tmp_path / "blobs", limit_bytes=1 << 20)
    entries = _tree(store)
    work = tmp_path / "work"
    materialize(store, entries, work, link=link)  # type: ignore[arg-type]
    net = work / "pkg/model/net.py"
    blob = store.path(hashlib.sha256(b"WIDTH = 3\n").hexdigest())
    if link == "copy":
        net.write_bytes(b"WIDTH = 99\n")  # edited in place: its own inode
        (work / "run.sh").write_bytes(b"changed")
    else:
        if os.geteuid() != 0:  # root writes through 0444; everyone else is stopped
            with pytest.raises(PermissionError):
                net.open("r+b")
        tmp = net.with_name(".net.py.new")  # what a task must do with a hardlinked file: replace it
        tmp.write_bytes(b"WIDTH = 99\n")
        os.replace(tmp, net)
    assert net.read_bytes() == b"WIDTH = 99\n"
    assert blob.read_bytes() == b"WIDTH = 3\n"
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert (work / "README.md").read_bytes() == b"WIDTH = 3\n"
    again = materialize(store, entries, tmp_path / "work2", link=link)  # type: ignore[arg-type]
    assert again.files == 5 and (tmp_path / "work2/pkg/model/net.py").read_bytes() == b"WIDTH = 3\n"


def test_timings_2k_files_copy_and_hardlink(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", limit_bytes=1 << 30)
    entries = []
    for i in range(2000):  # blobs written in place: 2,000 commits would each scan the cache to evict
        data = f"# file {i}\n".encode() * (1 + i % 50)
        entry = _entry(None, f"d{i % 40}/s{i % 7}/f{i}.py", data)
        store.path(entry.sha256).parent.mkdir(exist_ok=True)
        store.path(entry.sha256).write_bytes(data)
        entries.append(entry)
    seconds = {}
    for link in ("copy", "hardlink"):
        started = time.perf_counter()
        result = materialize(store, entries, tmp_path / link, link=link)
        seconds[link] = time.perf_counter() - started
        assert result.files == 2000
        assert (result.linked, result.copied) == ((2000, 0) if link == "hardlink" else (0, 2000))
        assert (tmp_path / link / "d3/s3/f3.py").read_bytes() == b"# file 3\n" * 4
    sys.stderr.write(f"materialize 2000 files: copy {seconds['copy']:.3f}s, hardlink {seconds['hardlink']:.3f}s\n")
    assert seconds["copy"] < 30 and seconds["hardlink"] < 30  # generous: a loaded 2-core CI box


def test_fallbacks_when_the_filesystem_cannot_link_or_copy_in_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path / "blobs", limit_bytes=16 << 20)
    big = os.urandom(3 << 20)  # several buffer lengths
    entries = [*_tree(store), _entry(store, "data/big.bin", big)]

    def refuse(*_args: object, **_kwargs: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    monkeypatch.setattr(os, "copy_file_range", refuse)
    result = materialize(store, entries, tmp_path / "work", link="hardlink")
    assert (result.linked, result.copied) == (0, 6)
    assert (tmp_path / "work/data/big.bin").read_bytes() == big
    assert (tmp_path / "work/pkg/model/net.py").read_bytes() == b"WIDTH = 3\n"
    assert stat.S_IMODE((tmp_path / "work/run.sh").stat().st_mode) == 0o755
