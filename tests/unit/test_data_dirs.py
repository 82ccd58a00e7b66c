"""A relative --data-dir means a folder below the working directory, in every URI built from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorfleet_desktop.controller.app import resolve_uris


def test_a_relative_data_dir_gives_uris_inside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store, blobs = resolve_uris(Path("data"))
    assert store == f"sqlite:///{tmp_path / 'data' / 'tensorfleet.db'}"
    assert blobs == f"file://{tmp_path / 'data' / 'blobs'}"
