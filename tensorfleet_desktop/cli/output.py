"""How every command writes its result: a rich table or text for people, `--json` (exactly one JSON document on
stdout) or `--csv` for scripts.

Rich assumes 80 columns when it cannot ask a terminal, which cuts tables (ids, names, sha256s) that a script or
`grep` reads in full: in a pipe or a file the consoles have no width limit. An explicit COLUMNS still wins.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from tensorfleet_desktop.display import printable

UNLIMITED = 100_000  # wider than any line a command prints: tables take their content's width


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Rich exits with 1 here, which the CLI reserves for a job that did not succeed: let `cli.main` end
        the command the way it ends any other closed pipe (CLOSED_PIPE)."""
        self.quiet = True
        raise BrokenPipeError


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty())
    width = UNLIMITED if piped and not os.environ.get("COLUMNS") else None
    return _Console(stderr=stderr, highlight=False, width=width)


out = _console(stderr=False)  # results
err = _console(stderr=True)  # progress, notes and warnings: never mixed into a result a script reads


def add_format_flags(parser: argparse.ArgumentParser, csv: bool = False) -> None:
    """`--json` on every command; `--csv` on those that list rows. With both, JSON wins."""
    parser.add_argument("--json", action="store_true")
    if csv:
        parser.add_argument("--csv", action="store_true", help="one header line, then one line per row")


def print_json(value: Any, sort_keys: bool = False) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str, sort_keys=sort_keys) + "\n")


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]], title: str | None = None) -> None:
    """Every cell goes through `printable`: one row per row, whatever a name holds."""
    table = Table(*headers, title=title)
    for row in rows:
        table.add_row(*(printable(cell) if isinstance(cell, str) else cell for cell in row))
    out.print(table, markup=False)


def write_csv(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Values as they are (full ids, raw numbers, epoch seconds); a list or a dict as compact JSON; None empty."""
    writer = csv.writer(sys.stdout)
    writer.writerow(headers)
    for row in rows:
        writer.writerow([_cell(value) for value in row])


def csv_of(items: Iterable[dict[str, Any]], fields: Sequence[str]) -> None:
    """CSV of dicts: one column per field, a dotted field (`tasks.total`) reaching into a nested dict."""
    write_csv(fields, ([_dig(item, field) for field in fields] for item in items))


def _dig(item: dict[str, Any], field: str) -> Any:
    value: Any = item
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def human_size(size: int) -> str:
    """'812 bytes', '1.2 KiB', '4.5 MiB', '2.0 GiB': binary units, as --max-project-size and the limits are."""
    scaled, unit = float(size), "bytes"
    for larger in ("KiB", "MiB", "GiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, larger
    return f"{size} bytes" if unit == "bytes" else f"{scaled:.1f} {unit}"


def when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"
