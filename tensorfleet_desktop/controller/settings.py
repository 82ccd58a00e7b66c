"""The controller's TOML config file: where the store and blobs live, and their credentials.

    [store]
    uri = "mongodb://tensorfleet:secret@db.lan:27017/tensorfleet"

    [blobs]
    uri = "s3://models?endpoint=minio.lan:9000&secure=false"
    access_key = "..."      # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY win when set
    secret_key = "..."

Command-line flags win over environment variables, which win over the file. Keep it readable by you
only: the controller refuses a file with credentials that others can read.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

_SECTIONS = {"store": ("uri",), "blobs": ("uri", "access_key", "secret_key")}


@dataclass(frozen=True)
class FileSettings:
    store_uri: str = ""
    blobs_uri: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""


def load_settings(path: Path) -> FileSettings:
    try:
        body = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    for section, value in body.items():
        if section not in _SECTIONS or not isinstance(value, dict):
            raise ValueError(f"{path}: unknown section [{section}] (known: {', '.join(_SECTIONS)})")
        for key, item in value.items():
            if key not in _SECTIONS[section]:
                raise ValueError(f"{path}: [{section}] has no key {key!r} (known: {', '.join(_SECTIONS[section])})")
            if not isinstance(item, str):
                raise ValueError(f"{path}: [{section}] {key} must be a string")
    store, blobs = body.get("store", {}), body.get("blobs", {})
    has_secret = ":" in store.get("uri", "").split("@")[0].removeprefix("mongodb://") or "secret_key" in blobs
    if has_secret and os.name == "posix" and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        raise ValueError(f"{path} holds credentials but others can read it: chmod 600 {path}")
    return FileSettings(
        store_uri=store.get("uri", ""),
        blobs_uri=blobs.get("uri", ""),
        s3_access_key=blobs.get("access_key", ""),
        s3_secret_key=blobs.get("secret_key", ""),
    )
