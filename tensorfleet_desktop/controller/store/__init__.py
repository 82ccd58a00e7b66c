"""Where the controller keeps jobs, tasks, events and agents; chosen by URI (docs/architecture.md, 'On-disk layout')."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from tensorfleet_desktop.controller.store.base import JobStore, redact_uri
from tensorfleet_desktop.controller.store.sqlite import SqliteJobStore

SUPPORTED = ("sqlite", "mongodb", "mongodb+srv")


def open_store(uri: str) -> JobStore:
    """`sqlite:///abs/path.db` (or `sqlite:relative.db`), or `mongodb://[user:password@]host:port/database`."""
    scheme = urlparse(uri).scheme
    if scheme in ("mongodb", "mongodb+srv"):
        from tensorfleet_desktop.controller.store.mongo import MongoJobStore

        return MongoJobStore(uri)
    if scheme == "sqlite":
        path = uri.removeprefix("sqlite://").removeprefix("sqlite:")
        if path.startswith("//"):  # SQLAlchemy's sqlite:////abs/path: one root, not a "//" path
            path = "/" + path.lstrip("/")
        if not path:
            raise ValueError(f"store URI {redact_uri(uri)!r} names no database file (sqlite:///path/to/tensorfleet.db)")
        return SqliteJobStore(Path(path))
    raise ValueError(
        f"unsupported store URI {redact_uri(uri)!r}: supported schemes are {', '.join(s + '://' for s in SUPPORTED)}"
    )


__all__ = ["SUPPORTED", "JobStore", "SqliteJobStore", "open_store"]
