"""The data-dir lock: one holder at a time, named to whoever is refused, and free again when the holder dies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tensorfleet_agent.datadir_lock import DataDirInUse, DataDirLock, Holder, holder_of, lock_path

HOLD = """
import sys, time
from pathlib import Path
from tensorfleet_agent.datadir_lock import DataDirLock
lock = DataDirLock(Path(sys.argv[1]), "holder-test")
lock.acquire()
lock.set_address("127.0.0.1:4242")
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_lock_is_refused_with_the_holders_pid_and_address(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path, "tensorfleet serve")
    first.acquire()
    first.set_address("127.0.0.1:50050")
    body = json.loads(lock_path(tmp_path).read_text())
    assert body["pid"] == os.getpid() and body["program"] == "tensorfleet serve"
    assert body["address"] == "127.0.0.1:50050" and body["started_at"]
    with pytest.raises(DataDirInUse) as refused:
        DataDirLock(tmp_path, "tensorfleet serve").acquire(retry=0.0)
    message = str(refused.value)
    assert str(tmp_path) in message and f"pid {os.getpid()}" in message and "127.0.0.1:50050" in message
    assert "\n" not in message
    assert holder_of(tmp_path) == Holder(os.getpid(), "tensorfleet serve", "127.0.0.1:50050", body["started_at"])
    first.release()
    assert holder_of(tmp_path) is None
    again = DataDirLock(tmp_path, "tensorfleet-agent")
    again.acquire(retry=0.0)
    assert holder_of(tmp_path) is not None and holder_of(tmp_path).program == "tensorfleet-agent"  # type: ignore[union-attr]
    again.release()


def test_probing_a_free_or_missing_data_dir_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    assert holder_of(missing) is None and not missing.exists()
    assert holder_of(tmp_path) is None and list(tmp_path.iterdir()) == []


def test_the_lock_is_free_once_its_holder_is_killed(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        holder = holder_of(tmp_path)
        assert holder is not None and (holder.pid, holder.address) == (proc.pid, "127.0.0.1:4242")
        with pytest.raises(DataDirInUse, match=f"pid {proc.pid}, address 127.0.0.1:4242"):
            DataDirLock(tmp_path, "tensorfleet-agent").acquire()
    finally:
        proc.kill()  # SIGKILL: no clean-up code runs, only the kernel drops the lock
        proc.wait(10)
    assert holder_of(tmp_path) is None  # reaped: the kernel closed its files and dropped the lock
    mine = DataDirLock(tmp_path, "tensorfleet-agent")
    mine.acquire(retry=0.0)
    mine.release()
