"""Private files: data dirs and journals hold what tasks printed and the daemons' keys, for their user only."""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) 0700, and tighten it if an older version or a user left it open."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


# What TensorFleet keeps in a data dir (controller's and agent's). A dir holding anything else (e.g. --data-dir ~)
# is not tightened: it is not ours to change.
DATA_DIR_ENTRIES = frozenset(
    {
        "lock",
        "identity",
        "blobs",
        "blob-cache",
        "tasks",
        "client.token",
        "config.toml",
        "local-agent",
        "local-agent.log",
        "local-agent.ready",
        "prometheus",
        "tensorfleet.db",
        "tensorfleet.db-wal",
        "tensorfleet.db-shm",
        "tensorfleet.db-journal",
    }
)


class DataDirUnusable(PermissionError):
    """The data dir cannot be used by this user; the message is a sentence naming it."""


def unusable(path: Path, exc: OSError) -> DataDirUnusable:
    """A sentence for a data dir this user cannot use: another user's, or one it cannot read or write."""
    owner = None
    for candidate in (path, path.parent):  # the dir, else the folder that hides it
        try:
            owner = candidate.stat().st_uid
            break
        except OSError:
            continue
    if owner is not None and owner != os.getuid():
        return DataDirUnusable(f"the data dir {path} belongs to another user (uid {owner}): {exc.strerror or exc}")
    return DataDirUnusable(f"the data dir {path} cannot be read or written by this user: {exc.strerror or exc}")


def make_data_dir(path: Path) -> bool:
    """Create the data dir 0700 when missing (True: created now). Its mode is left alone here: tighten_data_dir
    runs once the data dir's lock is held, so a refused second process changes nothing."""
    try:
        if path.is_dir():
            if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")
            return False
        path.mkdir(mode=DIR_MODE, parents=True)
        return True
    except FileExistsError:
        return False
    except PermissionError as exc:
        raise unusable(path, exc) from None


def tighten_data_dir(path: Path, created: bool) -> str:
    """Make the data dir 0700 when it is ours: created now, or holding nothing but TensorFleet's files. Another
    dir (a home directory, a shared folder) keeps its mode; the returned warning says so ("" when none)."""
    mode = path.stat().st_mode & 0o777
    if mode == DIR_MODE:
        return ""
    if path.stat().st_uid != os.getuid():
        return f"the data dir {path} belongs to another user: its mode {mode:o} is left as it is"
    others = sorted(entry.name for entry in path.iterdir() if entry.name not in DATA_DIR_ENTRIES)
    if created or not others:
        os.chmod(path, DIR_MODE)
        return ""
    return (
        f"the data dir {path} is readable by other users (mode {mode:o}) and holds other files "
        f"({', '.join(others[:3])}{', …' if len(others) > 3 else ''}): not changing its mode; "
        "use a directory of its own for TensorFleet"
    )


def private_opener(path: str, flags: int) -> int:
    """`open(..., opener=private_opener)`: a file created 0600, whatever the umask."""
    return os.open(path, flags, FILE_MODE)


def tighten(path: Path, mode: int) -> None:
    """chmod when looser; a file that vanished meanwhile is fine."""
    try:
        if path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)
    except FileNotFoundError:
        pass
