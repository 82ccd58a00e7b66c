"""The controller's TOML config file: where the store and blobs live, their credentials, and the HTTP API.

    [store]
    uri = "mongodb://tensorfleet:secret@db.lan:27017/tensorfleet"

    [blobs]
    uri = "s3://models?endpoint=minio.lan:9000&secure=false"
    access_key = "..."      # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY win when set
    secret_key = "..."

    [http]
    port = 8080             # serve the HTTP API (/api/v1) on this port (0: a free one); --http-port wins
    host = "0.0.0.0"        # the address it listens on (default: serve's --host); HTTPS off loopback

    [datasets]
    peer_transfer = true    # agents fetch dataset blobs from peers that hold them; --no-peer-transfer wins

    [scheduler]
    fair_share = true             # among equal priorities, the user who used least goes first (false: submit order)
    fair_share_half_life = 3600   # seconds: how fast a user's past usage stops counting in the queue's order
    preempt_grace = 30            # seconds a preempted task has to save a checkpoint and stop (at most 3600)

Command-line flags win over environment variables, which win over the file. Keep it readable by you
only: the controller refuses a file with credentials that others can read.
"""

from __future__ import annotations

import logging
import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from tensorfleet_agent.datadir_lock import DataDirLock
from tensorfleet_agent.security.files import make_data_dir, tighten_data_dir

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("tensorfleet", appauthor=False)) / "controller"


def claim_data_dir(data_dir: Path) -> DataDirLock:
    """Make the controller's data dir and lock it (DataDirInUse naming the holder) before the store, blobs,
    identity or the dir's mode are touched; then tighten it to 0700 when it is ours (store, blobs, client token,
    logs). Light on imports: `serve` calls it before it imports the controller."""
    created = make_data_dir(data_dir)  # a sentence, not a traceback, when it is another user's
    lock = DataDirLock(data_dir, "tensorfleet serve")
    lock.acquire()
    warning = tighten_data_dir(data_dir, created)
    if warning:
        log.warning("%s", warning)
    return lock


def resolve_uris(data_dir: Path, store_uri: str = "", blobs_uri: str = "") -> tuple[str, str]:
    """The store and blob store a controller with this data dir uses, given what the user named."""
    data_dir = data_dir.resolve()  # a relative dir would turn into a path from / inside the URIs
    store = store_uri or os.environ.get("TENSORFLEET_MONGODB_URI") or f"sqlite://{data_dir / 'tensorfleet.db'}"
    return store, blobs_uri or f"file://{data_dir / 'blobs'}"


_SECTIONS: dict[str, dict[str, type]] = {
    "store": {"uri": str},
    "blobs": {"uri": str, "access_key": str, "secret_key": str},
    "http": {"port": int, "host": str},
    "datasets": {"peer_transfer": bool},
    "scheduler": {"fair_share": bool, "fair_share_half_life": float, "preempt_grace": float},
}


_MAX_PREEMPT_GRACE = 3600.0  # the agent's MAX_CHECKPOINT_GRACE


@dataclass(frozen=True)
class FileSettings:
    store_uri: str = ""
    blobs_uri: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    http_port: int | None = None  # [http] port: serve the HTTP API there when --http-port is not given
    http_host: str = ""  # [http] host: its address when --http-host is not given
    peer_transfer: bool = True  # [datasets] peer_transfer: dataset blobs from peer agents (issue 20)
    fair_share: bool = True  # [scheduler]: equal priorities by each user's usage (False: by submit order)
    fair_share_half_life: float = 3600.0  # [scheduler]: seconds for a user's usage to count half (issue 24)
    preempt_grace: float = 30.0  # [scheduler]: seconds a preempted task has to checkpoint and stop (issue 24)


def _check_value(path: Path, section: str, key: str, item: object) -> None:
    """A value of the type its key takes (a TOML integer is never a string here, nor a bool an integer)."""
    if _SECTIONS[section][key] is bool:
        if not isinstance(item, bool):
            raise ValueError(f"{path}: [{section}] {key} must be true or false (no quotes), got {item!r}")
    elif _SECTIONS[section][key] is float:
        if isinstance(item, bool) or not isinstance(item, int | float) or not 0 < item < float("inf"):
            raise ValueError(f"{path}: [{section}] {key} must be a number of seconds > 0 (no quotes), got {item!r}")
        if key == "preempt_grace" and item > _MAX_PREEMPT_GRACE:  # what an agent's CancelTask takes
            raise ValueError(f"{path}: [{section}] {key} must be at most {_MAX_PREEMPT_GRACE:g} seconds, got {item!r}")
    elif _SECTIONS[section][key] is int:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ValueError(f"{path}: [{section}] {key} must be an integer (no quotes), got {item!r}")
        if section == "http" and key == "port" and not 0 <= item <= 65535:
            raise ValueError(f"{path}: [http] port must be between 0 and 65535 (0: a free port), got {item}")
    elif not isinstance(item, str):
        raise ValueError(f"{path}: [{section}] {key} must be a string (in quotes), got {item!r}")


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
            _check_value(path, section, key, item)
    store, blobs, http = body.get("store", {}), body.get("blobs", {}), body.get("http", {})
    datasets, scheduler = body.get("datasets", {}), body.get("scheduler", {})
    has_secret = ":" in store.get("uri", "").split("@")[0].removeprefix("mongodb://") or "secret_key" in blobs
    if has_secret and os.name == "posix" and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        raise ValueError(f"{path} holds credentials but others can read it: chmod 600 {path}")
    return FileSettings(
        store_uri=store.get("uri", ""),
        blobs_uri=blobs.get("uri", ""),
        s3_access_key=blobs.get("access_key", ""),
        s3_secret_key=blobs.get("secret_key", ""),
        http_port=http.get("port"),
        http_host=http.get("host", ""),
        peer_transfer=datasets.get("peer_transfer", True),
        fair_share=scheduler.get("fair_share", True),
        fair_share_half_life=float(scheduler.get("fair_share_half_life", 3600.0)),
        preempt_grace=float(scheduler.get("preempt_grace", 30.0)),
    )


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_value(value: str | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _toml_string(value) if isinstance(value, str) else str(value)


def save_settings(path: Path, settings: FileSettings) -> None:
    """Write the config file readable by its owner only (it may hold credentials); empty values are left out."""
    lines: list[str] = []
    sections: dict[str, tuple[tuple[str, str | float | bool | None], ...]] = {
        "store": (("uri", settings.store_uri),),
        "blobs": (
            ("uri", settings.blobs_uri),
            ("access_key", settings.s3_access_key),
            ("secret_key", settings.s3_secret_key),
        ),
        "http": (("port", settings.http_port), ("host", settings.http_host)),
        "datasets": (("peer_transfer", None if settings.peer_transfer else False),),  # written when turned off
        "scheduler": (
            ("fair_share", None if settings.fair_share else False),  # written when turned off
            (
                "fair_share_half_life",
                None if settings.fair_share_half_life == 3600.0 else settings.fair_share_half_life,
            ),
            ("preempt_grace", None if settings.preempt_grace == 30.0 else settings.preempt_grace),
        ),
    }
    for section, items in sections.items():
        present = [(k, v) for k, v in items if v is not None and v != ""]
        if present:
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in present]
            lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def check_backends(settings: FileSettings, data_dir: Path, timeout: float = 5.0) -> list[str]:
    """Connect to the configured store and blob store (blocking); one line per backend, errors as ValueError."""
    from tensorfleet_desktop.controller.store.base import redact_uri

    report = []
    store = settings.store_uri
    if store.startswith(("mongodb://", "mongodb+srv://")):
        from tensorfleet_desktop.controller.store.mongo import connect

        client = connect(store, int(timeout * 1000))
        try:
            version = client.server_info().get("version", "?")
        except Exception:  # it answered a ping: a server that does not say its version
            version = "?"
        finally:
            client.close()
        report.append(f"MongoDB {version} at {redact_uri(store)}: OK")
    elif store:
        report.append(f"store {redact_uri(store)}: local file, nothing to test")
    else:
        report.append("store: embedded SQLite in the data dir")
    blobs = settings.blobs_uri
    if blobs.startswith("s3://"):
        from tensorfleet_desktop.controller.store.blobs import S3BlobStore

        keys = (settings.s3_access_key, settings.s3_secret_key)
        try:
            s3 = S3BlobStore(blobs, data_dir / "blob-cache", keys)
            s3.check_bucket()
        except Exception as exc:
            raise ValueError(f"S3 at {blobs.split('?')[0]}: {str(exc)[:300]}") from None
        report.append(f"S3 bucket {s3.bucket} at {blobs.split('?')[0]}: OK")
    elif blobs:
        report.append(f"blobs {blobs}: local folder, nothing to test")
    else:
        report.append("blobs: local files in the data dir")
    return report
