"""A relative --data-dir means a folder below the working directory, in every URI built from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorfleet_desktop.controller.app import resolve_uris
from tensorfleet_desktop.store import SqliteJobStore, open_store


def test_a_relative_data_dir_gives_uris_inside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store, blobs = resolve_uris(Path("data"))
    assert store == f"sqlite://{tmp_path / 'data' / 'tensorfleet.db'}"
    assert blobs == f"file://{tmp_path / 'data' / 'blobs'}"


def test_the_store_uri_shows_the_path_it_opens(tmp_path: Path) -> None:
    """sqlite:// then the absolute path, as file:// URIs read: never sqlite://///path."""
    db = tmp_path / "data" / "tensorfleet.db"
    store, _ = resolve_uris(tmp_path / "data")
    assert store == f"sqlite://{db}"
    for written in (store, f"sqlite:///{db}", f"sqlite:{db}"):  # SQLAlchemy writes four slashes
        opened = open_store(written)
        assert isinstance(opened, SqliteJobStore)
        assert (opened.uri, str(opened.path)) == (f"sqlite://{db}", str(db)), written
