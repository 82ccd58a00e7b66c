"""Connection files: how a controller hands its client token to clients of the same OS user (as Jupyter does).

The controller writes one file per address it serves, `controller-HOST-PORT.json` (address, certificate
fingerprint, token, pid, whether it speaks TLS there), mode 0600 in a 0700 per-user directory; clients look it up
by the address they dial. Another OS user cannot read it, so they get no token. Shared by the controller and every
client: no Qt, no controller or store imports.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

TOKEN_ENV = "TENSORFLEET_CONTROLLER_TOKEN"
RUNTIME_ENV = "TENSORFLEET_RUNTIME_DIR"
_LOOPBACK_ALIASES = ("127.0.0.1", "localhost", "::1")
_WILDCARDS = ("0.0.0.0", "::")


@dataclass(frozen=True)
class Connection:
    address: str
    fingerprint: str
    token: str
    pid: int
    path: Path
    tls: bool = False  # the controller serves TLS at this address (serve --host 0.0.0.0 also on 127.0.0.1)


def split_address(address: str) -> tuple[str, str]:
    """("host", "port") of "host:port" or "[v6]:port"."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host in ("localhost", "::1")


def _owned_private(path: Path) -> bool:
    """A directory only this user can enter (so nobody else can plant or swap files in it)."""
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def runtime_dir() -> Path:
    """Where connection files live: TENSORFLEET_RUNTIME_DIR, else the user's runtime dir (XDG_RUNTIME_DIR,
    /run/user/UID), else `runtime/` in the user's data dir (never a guessable directory under /tmp)."""
    override = os.environ.get(RUNTIME_ENV)
    if override:
        return Path(override)
    if os.name != "posix":
        return Path(platformdirs.user_runtime_dir("tensorfleet", appauthor=False))
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    if _owned_private(Path(base)) and os.access(base, os.W_OK | os.X_OK):
        return Path(base) / "tensorfleet"
    return Path(platformdirs.user_data_dir("tensorfleet", appauthor=False)) / "runtime"


def file_name(address: str) -> str:
    host, port = split_address(address)
    return f"controller-{re.sub(r'[^A-Za-z0-9._-]', '_', host)}-{re.sub(r'[^0-9]', '_', port)}.json"


def connection_path(address: str, directory: Path | None = None) -> Path:
    return (directory or runtime_dir()) / file_name(address)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user: refusing to keep connection files there")
    os.chmod(path, 0o700)
    return path


def write_connection(
    address: str, fingerprint: str, token: str, directory: Path | None = None, tls: bool = False
) -> Path:
    """Write (atomically, 0600) the connection file for `address`; an older one for it is overwritten. `tls`:
    the controller serves TLS there (clients then dial TLS pinned to `fingerprint`, loopback included)."""
    folder = _private_dir(directory or runtime_dir())
    path = folder / file_name(address)
    _sweep(folder)
    body = {"address": address, "fingerprint": fingerprint, "token": token, "pid": os.getpid(), "tls": tls}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".controller-", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(body, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _sweep(folder: Path) -> None:
    """Remove the files of controllers that are gone (killed ones leave theirs behind)."""
    for stale in folder.glob("controller-*.json"):
        try:
            pid = int(json.loads(stale.read_text()).get("pid", 0))
        except (OSError, ValueError, AttributeError):
            continue
        if not _alive(pid):
            stale.unlink(missing_ok=True)


def remove_connection(path: Path) -> None:
    """Remove a connection file this process wrote (not one a newer controller has written since)."""
    with contextlib.suppress(OSError, ValueError):
        if int(json.loads(path.read_text()).get("pid", 0)) == os.getpid():
            path.unlink()


def read_connection(path: Path) -> Connection | None:
    """The connection in `path`, or None when it is missing, unreadable, damaged or its controller is gone."""
    try:
        body = json.loads(path.read_text())
        conn = Connection(
            str(body["address"]),
            str(body.get("fingerprint", "")),
            str(body["token"]),
            int(body["pid"]),
            path,
            body.get("tls") is True,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return conn if conn.token and _alive(conn.pid) else None


def candidates(address: str, directory: Path | None = None) -> list[Path]:
    """The files that may hold the token for `address`: its own, then for loopback the other loopback names
    and a controller serving every interface on that port. Never a file for another host."""
    host, port = split_address(address)
    hosts = [host]
    if _is_loopback(host):
        hosts += [h for h in (*_LOOPBACK_ALIASES, *_WILDCARDS) if h != host]
    folder = directory or runtime_dir()
    return [folder / file_name(f"{h}:{port}") for h in hosts]


def find_connection(address: str) -> Connection | None:
    for path in candidates(address):
        conn = read_connection(path)
        if conn is not None:
            return conn
    return None


def client_token(address: str) -> tuple[str, str]:
    """(token, where it came from) for dialing `address`: TENSORFLEET_CONTROLLER_TOKEN wins, then the
    connection file; ("", "") when there is none."""
    token = os.environ.get(TOKEN_ENV, "")
    if token:
        return token, TOKEN_ENV
    conn = find_connection(address)
    if conn is not None:
        return conn.token, str(conn.path)
    return "", ""
