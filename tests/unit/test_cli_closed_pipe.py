"""A reader that leaves (`tensorfleet … | head -1`) ends the CLI quietly with 141 (128 + SIGPIPE, as a shell reports
`yes | head`), not 1, which means the waited-for job did not succeed."""

from __future__ import annotations

import os
import subprocess
import sys

# a command's output, as `tensorfleet metrics JOB --csv` prints it, without needing a controller
PRINTS_A_TABLE = """
import sys
from tensorfleet_desktop import cli
def _main(argv):
    for i in range(10000):
        print(f"{i},loss,0.5")
    return 0
cli._main = _main
sys.exit(cli.main([]))
"""


def test_a_closed_stdout_pipe_exits_141_without_a_traceback() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte
    try:
        proc = subprocess.run(
            [sys.executable, "-c", PRINTS_A_TABLE],
            stdout=write,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr, proc.stderr
