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
