"""Where the controller keeps jobs, tasks, events and agents; chosen by URI (DESIGN decision 9)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from tensorfleet_desktop.store.base import JobStore
from tensorfleet_desktop.store.sqlite import SqliteJobStore

SUPPORTED = ("sqlite",)


def open_store(uri: str) -> JobStore:
    """`sqlite:///abs/path.db` (or `sqlite:relative.db`)."""
    scheme = urlparse(uri).scheme
    if scheme == "sqlite":
        path = uri.removeprefix("sqlite://").removeprefix("sqlite:")
        if not path:
            raise ValueError(f"store URI {uri!r} names no database file (sqlite:///path/to/tensorfleet.db)")
        return SqliteJobStore(Path(path))
    raise ValueError(f"unsupported store URI {uri!r}: supported schemes are {', '.join(s + '://' for s in SUPPORTED)}")


__all__ = ["SUPPORTED", "JobStore", "SqliteJobStore", "open_store"]
