"""One process per data dir: an OS lock on DATA_DIR/lock that the kernel drops when its holder dies.

Two controllers on one data dir would open the same SQLite file and run two local agents on one journal;
two agents would share a journal and a blob cache. The lock file also says who holds it (JSON: pid,
program, address, started_at), so the process that is refused can name the holder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_NAME = "lock"
#: A refused lock is retried this long: a probe (the desktop app checking a data dir) holds it for microseconds.
RETRY_SECONDS = 0.2

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    _LOCK_OFFSET = 1 << 30  # a byte far past the JSON, so other processes can still read who holds the lock

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - a platform with neither fcntl nor msvcrt
        fcntl = None  # type: ignore[assignment]

    def _try_lock(fd: int) -> bool:
        if fcntl is None:  # pragma: no cover
            log.warning("no file locking on this platform: nothing stops a second process on this data dir")
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Holder:
    """Who holds a data dir, as its lock file says (fields may be empty while the holder is starting)."""

    pid: int = 0
    program: str = ""
    address: str = ""
    started_at: str = ""

    def describe(self) -> str:
        who = f"{self.program or 'another process'} (pid {self.pid or '?'}"
        return who + (f", address {self.address})" if self.address else ", no address yet)")


class DataDirInUse(RuntimeError):
    """Another live process holds the data dir."""

    def __init__(self, data_dir: Path, holder: Holder) -> None:
        self.data_dir = data_dir
        self.holder = holder
        super().__init__(
            f"the data dir {data_dir} is in use by {holder.describe()}; stop that process or choose another data dir"
        )


def lock_path(data_dir: Path) -> Path:
    return data_dir / LOCK_NAME


def read_holder(data_dir: Path) -> Holder:
    """What the lock file says (an empty Holder when it is missing or half-written)."""
    try:
        body: Any = json.loads(lock_path(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Holder()
    if not isinstance(body, dict):
        return Holder()
    pid = body.get("pid")
    return Holder(
        pid=pid if isinstance(pid, int) else 0,
        program=str(body.get("program", "")),
        address=str(body.get("address", "")),
        started_at=str(body.get("started_at", "")),
    )


class DataDirLock:
    """The exclusive lock of one data dir, held until `release()` or until this process dies."""

    def __init__(self, data_dir: Path, program: str) -> None:
        self.data_dir = data_dir
        self.program = program
        self._fd: int | None = None
        self._started_at = ""

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, retry: float = RETRY_SECONDS) -> None:
        """Take the lock or raise DataDirInUse naming the holder; writes nothing unless the lock is ours.

        The data dir must exist (the caller creates it: creating a missing dir cannot hurt another process).
        """
        if self._fd is not None:
            return
        fd = os.open(lock_path(self.data_dir), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + retry
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                os.close(fd)
                raise DataDirInUse(self.data_dir, read_holder(self.data_dir))
            time.sleep(0.02)
        self._fd = fd
        self._started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._write("")

    def set_address(self, address: str) -> None:
        """Record where the holder serves, once its server is bound."""
        if self._fd is not None:
            self._write(address)

    def _write(self, address: str) -> None:
        assert self._fd is not None
        body = {"pid": os.getpid(), "program": self.program, "address": address, "started_at": self._started_at}
        data = (json.dumps(body) + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Give the lock back (the file stays: removing it would race with a process opening it)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        _unlock(self._fd)
        os.close(self._fd)
        self._fd = None


def holder_of(data_dir: Path) -> Holder | None:
    """Who holds the data dir now, or None when it is free (or missing). Creates nothing."""
    try:
        fd = os.open(lock_path(data_dir), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if _try_lock(fd):
            _unlock(fd)
            return None
        return read_holder(data_dir)
    finally:
        os.close(fd)


def wait_until_free(data_dir: Path, timeout: float) -> Holder | None:
    """Wait (blocking) for the holder of a data dir to go; the holder still there at the deadline, or None."""
    deadline = time.monotonic() + timeout
    said = False
    while (holder := holder_of(data_dir)) is not None:
        if time.monotonic() >= deadline:
            return holder
        if not said:
            log.warning("waiting up to %.0f s for %s to leave %s", timeout, holder.describe(), data_dir)
            said = True
        time.sleep(0.1)
    return None
