"""`tensorfleet datasets`' text (issue 20): list rows for versioned, old single-file and built-in datasets, the
upload line, and a page of files drawn as a tree."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from tensorfleet_desktop.cli.datasets import _tree, _versions, list_row, version_line


def _version(**fields: Any) -> dict[str, Any]:
    base = {"name": "pets", "version": 3, "source": "upload", "url": "", "files": 800, "bytes": 3 << 20}
    return {**base, "unchanged": False, "created_at": 1.0, **fields}


def test_list_rows_say_versions_files_size_and_source() -> None:
    versioned = list_row({"name": "pets", "latest_version": 3, "versions": [_version(version=2), _version()]})
    assert (versioned["versions"], versioned["files"], versioned["source"]) == (2, 800, "upload")
    assert _versions(versioned) == "2 (latest 3)"  # version 1 was deleted
    ref = list_row({"name": "s", "latest_version": 1, "versions": [_version(version=1, url="s3://b/p", source="s3")]})
    assert (ref["source"], _versions(ref)) == ("s3://b/p", "1")
    builtin = list_row({"name": "iris", "builtin": True, "versions": [], "latest_version": 0})
    assert (builtin["source"], builtin["latest_version"], _versions(builtin)) == ("builtin", 0, "-")
    old = list_row({"name": "wine", "size": 10, "created_at": 2.0, "latest_version": 1})  # stored before versions
    assert (old["versions"], old["files"], old["bytes"], old["source"]) == (1, 1, 10, "upload")


def test_the_upload_line_says_new_or_unchanged_and_what_was_sent() -> None:
    line = version_line({**_version(), "uploaded_bytes": 1024, "path": "/data/pets"})
    assert line == "dataset pets: version 3, 800 files, 3.0 MiB; uploaded 1.0 KiB"
    same = version_line({**_version(unchanged=True, files=1), "uploaded_bytes": 0, "path": "/data/pets"})
    assert same == "dataset pets: unchanged (version 3), 1 file, 3.0 MiB; uploaded 0 B"
    ref = version_line(_version(url="file:///mnt/x", source="file"))  # add: no upload
    assert ref == "dataset pets: version 3, 800 files, 3.0 MiB from file:///mnt/x"


def test_a_page_of_files_is_a_tree_of_folders() -> None:
    files = [
        {"path": "a/b/1.png", "size": 10, "chunks": 0},
        {"path": "a/b/2.png", "size": 20, "chunks": 0},
        {"path": "a/c.bin", "size": 20 << 20, "chunks": 3},
        {"path": "top.txt", "size": 1, "chunks": 0},
    ]
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(_tree("pets:3", files))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines == [
        "pets:3",
        "├── a/",
        "│   ├── b/",
        "│   │   ├── 1.png  10 B",
        "│   │   └── 2.png  20 B",
        "│   └── c.bin  20.0 MiB (3 chunks)",
        "└── top.txt  1 B",
    ]


def test_progress_in_a_pipe_is_a_line_per_tenth_of_a_large_upload(monkeypatch: Any) -> None:
    from tensorfleet_desktop.cli import datasets

    lines = io.StringIO()
    monkeypatch.setattr(datasets, "err", Console(file=lines, width=200, color_system=None))
    shown = datasets._ProgressShown()
    shown("upload", 1 << 20, 1 << 25)  # 32 MiB: too small to show
    big = 100 << 20
    shown("hash", big, big)  # every hash known from the cache: no line
    for done in range(1 << 20, big + 1, 1 << 20):
        shown("upload", done, big)
    printed = lines.getvalue().splitlines()
    assert printed[0] == "uploading: 1.0 MiB of 100.0 MiB (1%)" and printed[-1].endswith("(100%)")
    assert len(printed) == 11
