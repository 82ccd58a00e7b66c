"""The CLI's rich consoles: the terminal's width on a terminal, and no width limit in a pipe or a file.

Rich assumes 80 columns when it cannot ask a terminal, which cuts tables (ids, names, sha256s) that a
script or `grep` reads in full. An explicit COLUMNS in the environment still wins.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

UNLIMITED = 100_000  # wider than any line a command prints: tables take their content's width


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Rich exits with 1 here, which the CLI reserves for a job that did not succeed: let `cli.main` end
        the command the way it ends any other closed pipe (141)."""
        self.quiet = True
        raise BrokenPipeError


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty())
    width = UNLIMITED if piped and not os.environ.get("COLUMNS") else None
    return _Console(stderr=stderr, highlight=False, width=width)
