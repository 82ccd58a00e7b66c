"""WorkerProcess.own_rss, asked after each task (executor._lean): a read of the worker's /proc/<pid>/statm from a
file kept open while it lives, the same figure as reading it by its path, and 0 once the worker is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tensorfleet_agent.runtime import process
from tensorfleet_agent.runtime.process import WorkerProcess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


async def test_own_rss_reads_one_open_file_while_the_worker_lives(tmp_path: os.PathLike[str]) -> None:
    worker = await WorkerProcess.spawn(dict(os.environ), str(tmp_path))
    try:
        by_path = _rss_by_path(worker.pid)
        first = worker.own_rss()
        assert first > 0 and abs(first - by_path) < 16 << 20
        fd = worker._statm
        assert fd >= 0 and worker.own_rss() > 0 and worker._statm == fd  # the same file, read again
    finally:
        await worker.close()
    assert worker._statm == -1  # closed at its exit
    assert worker.own_rss() == 0 and worker._statm == -1  # gone: not opened again


async def test_a_file_that_answers_no_more_is_closed_and_the_path_read(tmp_path: os.PathLike[str]) -> None:
    """Its process reaped before exited() was told (a fork server reports exits later): ESRCH from the open file,
    which is closed; the answer is read by the path, as before there was a file."""
    worker = await WorkerProcess.spawn(dict(os.environ), str(tmp_path))
    try:
        fd = _statm_of_a_reaped_process()
        with pytest.raises(ProcessLookupError):
            os.pread(fd, 256, 0)
        worker._close_statm()
        worker._statm = fd
        assert worker.own_rss() > 0  # the worker's, by its path
        assert worker._statm == -1 and not _is_open(fd)
    finally:
        await worker.close()


def _rss_by_path(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_bytes().split()[1]) * process._PAGE


def _statm_of_a_reaped_process() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    fd = os.open(f"/proc/{gone.pid}/statm", os.O_RDONLY)
    gone.wait()
    return fd


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
