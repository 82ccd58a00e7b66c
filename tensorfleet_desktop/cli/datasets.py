"""`tensorfleet datasets upload|add|list|show|preview|delete`: versioned datasets (issue 20).

A dataset is a name with versions 1..N: an uploaded file or folder tree (any file types; files over 8 MiB travel as
8 MiB chunks, so a re-upload sends what changed and an interrupted upload resumes), or a reference to an
s3:// prefix or a file:// folder (`add`: listed, not copied). Jobs name it `--dataset NAME[:VERSION]`. A version
that is one CSV or Parquet file is also a table (`preview`, `--target COL`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.tree import Tree

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.exit_codes import UsageError
from tensorfleet_desktop.cli.output import add_format_flags, csv_of, err, out, print_json, print_table, write_csv
from tensorfleet_desktop.client import Client, InvalidRequest
from tensorfleet_desktop.display import printable
from tensorfleet_desktop.project.scan import human_size

#: Below this many bytes to hash or send, no progress is shown (it would only flicker).
PROGRESS_BYTES = 64 << 20
#: Lines in a pipe: one per this share of the total, at most.
_STEP = 0.1
TABLE_SUFFIXES = (".csv", ".parquet")
TABLE_FIELDS = ("sha256", "filename", "format", "rows", "columns", "size", "source_filename", "source_sha256")
LIST_FIELDS = ("name", "latest_version", "files", "bytes", "source", "builtin", "created_at")


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "datasets", help="versioned datasets: upload a file or folder, add an s3:// or file:// reference"
    )
    s.set_defaults(call=datasets)
    dsub = s.add_subparsers(dest="datasets_command", metavar="ACTION", parser_class=type(s))
    d = dsub.add_parser(
        "upload",
        help="upload a file or a folder tree as the next version of a dataset (only what the controller lacks)",
    )
    d.add_argument("path", type=Path, help="a file (a CSV/Parquet file is also a table) or a folder")
    d.add_argument("--name", help="the dataset's name (default: the file's stem or the folder's name)")
    add_format_flags(d)
    d = dsub.add_parser("add", help="register s3://bucket/prefix or file:///path as a version, without copying")
    d.add_argument("name")
    d.add_argument("url", help="s3://bucket/prefix (the controller's object store) or file:///absolute/folder")
    add_format_flags(d)
    d = dsub.add_parser("list", help="the datasets (built-ins too): versions, files, size, source")
    add_format_flags(d, csv=True)
    d = dsub.add_parser("show", help="a version's files as a tree, a page at a time")
    d.add_argument("ref", metavar="NAME[:VERSION]")
    d.add_argument("--prefix", default="", help="only the files under this folder")
    d.add_argument("--limit", type=int, default=200, help="files per page (default 200; at most 10000)")
    d.add_argument("--cursor", default="", help="the page after this one (printed at the end of a page)")
    d.add_argument("--all", action="store_true", help="every page")
    add_format_flags(d)
    d = dsub.add_parser("preview", help="the first rows of a dataset that is a table")
    d.add_argument("name")
    d.add_argument("--rows", type=int, default=10)
    add_format_flags(d, csv=True)
    d = dsub.add_parser(
        "delete", help="forget a dataset, or one version (NAME:VERSION); refused while a job or model refers to it"
    )
    d.add_argument("ref", metavar="NAME[:VERSION]")
    add_format_flags(d)


def datasets(client: Client, args: argparse.Namespace) -> int:
    command = args.datasets_command
    if command == "upload":
        return upload(client, args)
    if command == "add":
        return add(client, args)
    if command == "show":
        return show(client, args)
    if command == "preview":
        return preview(client, args)
    if command == "delete":
        return delete(client, args)
    if command != "list":
        raise UsageError(
            "datasets needs an action: upload PATH | add NAME URL | list | show NAME[:VERSION] | preview NAME | "
            "delete NAME[:VERSION]"
        )
    return list_datasets(client, args)


# ---- upload and add


class _ProgressShown:
    """Hashing and upload progress on stderr for large uploads: a bar on a terminal, a line per tenth in a pipe.
    The client calls it from hashing threads and from its event loop; rich's Progress takes the lock."""

    def __init__(self) -> None:
        self.bar: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.printed: dict[str, int] = {}
        self.started: set[str] = set()

    def __call__(self, phase: str, done: int, total: int) -> None:
        if total < PROGRESS_BYTES or (phase not in self.started and done >= total):
            return  # small, or all known from the hash cache: nothing to show
        self.started.add(phase)
        label = "hashing" if phase == "hash" else "uploading"
        if err.is_terminal:
            if self.bar is None:
                self.bar = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    DownloadColumn(binary_units=True),
                    TransferSpeedColumn(),
                    console=err,
                    transient=True,
                )
                self.bar.start()
            if phase not in self.tasks:
                self.tasks[phase] = self.bar.add_task(label, total=total)
            self.bar.update(self.tasks[phase], completed=done, total=total)
            return
        tenth = int(done / total / _STEP)
        if self.printed.get(phase, -1) < tenth:
            self.printed[phase] = tenth
            err.print(f"{label}: {human_size(done)} of {human_size(total)} ({done / total:.0%})", markup=False)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@contextmanager
def _progress() -> Iterator[_ProgressShown]:
    shown = _ProgressShown()
    try:
        yield shown
    finally:
        shown.stop()


def version_line(version: dict[str, Any]) -> str:
    """`upload`'s and `add`'s one line: "unchanged (version N)" or "version N", then what it holds and sent."""
    what = f"{_files(int(version['files']))}, {human_size(int(version['bytes']))}"
    where = f" from {version['url']}" if version.get("url") else ""
    sent = f"; uploaded {human_size(int(version['uploaded_bytes']))}" if "path" in version else ""
    state = f"unchanged (version {version['version']})" if version["unchanged"] else f"version {version['version']}"
    return f"dataset {version['name']}: {state}, {what}{where}{sent}"


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def upload(client: Client, args: argparse.Namespace) -> int:
    started = time.monotonic()
    with _progress() as progress:
        version = client.upload_dataset_version(args.path, args.name, progress)
    seconds = round(time.monotonic() - started, 3)
    table = _table(client, version) if str(version["path"]).lower().endswith(TABLE_SUFFIXES) else None
    if args.json:
        print_json({**version, **(table or {}), "seconds": seconds})
        return exit_codes.OK
    out.print(version_line(version), markup=False)
    if table is not None and not table.get("table_error"):
        out.print(f"a table of {table['rows']} rows, columns {', '.join(table['columns'])}", markup=False)
    elif table is not None:
        why = table["table_error"]
        err.print(f"warning: {why}; jobs read it as a file, they cannot name --target columns of it", markup=False)
    return exit_codes.OK


def _table(client: Client, version: dict[str, Any]) -> dict[str, Any]:
    """Whether a CSV/Parquet file uploaded is also the table `--dataset NAME --target COL` jobs read (the
    controller profiles it at commit): its table fields as `datasets list --json` has them (sha256 of the stored
    CSV form, filename, format, rows, columns, size, source_filename, source_sha256), or {"table_error"}."""
    ref = f"{version['name']}:{version['version']}"
    info = client.dataset(ref, limit=1)["dataset"]
    if info["format"] and info["latest_version"] == version["version"]:
        return {k: info[k] for k in TABLE_FIELDS}
    try:
        client.preview_dataset(ref, 1)
    except InvalidRequest as exc:
        return {"table_error": f"{ref} {str(exc).removeprefix('dataset: ')}"}
    return {"table_error": f"{ref} is not a table"}


def add(client: Client, args: argparse.Namespace) -> int:
    version = client.add_dataset_reference(args.name, args.url)
    if args.json:
        print_json(version)
    else:
        out.print(version_line(version), markup=False)
    return exit_codes.OK


# ---- list, show, preview, delete


def list_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A dataset as `list` shows it: its latest version's files, size and source (a built-in is "builtin"; a
    dataset stored before versions is one file, version 1)."""
    versions = entry.get("versions") or []
    latest = versions[-1] if versions else None
    if entry.get("builtin"):
        source = "builtin"
    elif latest is not None:
        source = latest["url"] or latest["source"]
    else:
        source = "upload"
    return {
        "name": entry["name"],
        "latest_version": 0
        if entry.get("builtin")
        else entry.get("latest_version") or (latest or {}).get("version", 1),
        "versions": len(versions) or (0 if entry.get("builtin") else 1),
        "files": latest["files"] if latest is not None else (0 if entry.get("builtin") else 1),
        "bytes": latest["bytes"] if latest is not None else entry.get("size", 0),
        "source": source,
        "builtin": bool(entry.get("builtin")),
        "created_at": latest["created_at"] if latest is not None else entry.get("created_at", 0.0),
    }


def _versions(row: dict[str, Any]) -> str:
    """How many versions, and the latest's number when older ones were deleted (2 versions, the latest 5)."""
    if row["builtin"]:
        return "-"
    count, latest = int(row["versions"]), int(row["latest_version"])
    return str(count) if count == latest else f"{count} (latest {latest})"


def list_datasets(client: Client, args: argparse.Namespace) -> int:
    items = client.datasets()
    if args.json:
        print_json(items)
        return exit_codes.OK
    rows = [list_row(d) for d in items]
    if args.csv:
        csv_of(rows, LIST_FIELDS)
        return exit_codes.OK
    print_table(
        ("NAME", "VERSIONS", "FILES", "SIZE", "SOURCE"),
        (
            (
                r["name"],
                _versions(r),
                "-" if r["builtin"] else str(r["files"]),
                "-" if r["builtin"] else human_size(int(r["bytes"])),
                r["source"],
            )
            for r in rows
        ),
    )
    return exit_codes.OK


def _tree(title: str, files: list[dict[str, Any]]) -> Tree:
    """The page's files as folders and leaves (a folder's node made once, at its first file)."""
    tree = Tree(title)
    nodes: dict[str, Tree] = {"": tree}
    for f in files:
        folder, _, leaf = f["path"].rpartition("/")
        node = nodes.get(folder)
        if node is None:
            parent, walked = tree, ""
            for part in folder.split("/"):
                walked = f"{walked}/{part}" if walked else part
                if walked not in nodes:
                    nodes[walked] = parent.add(printable(part) + "/")
                parent = nodes[walked]
            node = parent
        chunks = f" ({f['chunks']} chunks)" if f.get("chunks") else ""
        node.add(f"{printable(leaf)}  {human_size(int(f['size']))}{chunks}")
    return tree


def show(client: Client, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 10_000:
        raise UsageError(f"--limit must be between 1 and 10000, got {args.limit}")
    page = client.dataset(args.ref, args.prefix, args.limit, args.cursor)
    files = list(page["files"])
    while args.all and page["next_cursor"]:
        page = client.dataset(args.ref, args.prefix, args.limit, page["next_cursor"])
        files.extend(page["files"])
    version = page["version"]
    if args.json:
        print_json({**page, "files": files})
        return exit_codes.OK
    if version is None:  # a built-in: shipped with the agents, nothing stored
        out.print(
            f"{printable(args.ref)}: a built-in dataset (shipped with every agent; no files stored)", markup=False
        )
        return exit_codes.OK
    where = version["url"] or version["source"]
    size = human_size(int(version["bytes"]))
    title = (
        f"{version['name']}:{version['version']}  {_files(int(version['files']))}, {size}, {where}, "
        f"content {version['content_id'][:16]}"
    )
    out.print(_tree(printable(title), files), markup=False)
    if version.get("used_by"):
        out.print(f"used by: {', '.join(version['used_by'])}", markup=False)
    if page["next_cursor"]:
        more = f" --prefix {args.prefix}" if args.prefix else ""
        err.print(
            f"{len(files)} files shown; the next page: tensorfleet datasets show {args.ref}{more} "
            f"--cursor {page['next_cursor']} (or --all)",
            markup=False,
        )
    return exit_codes.OK


def preview(client: Client, args: argparse.Namespace) -> int:
    table = client.preview_dataset(args.name, args.rows)
    if args.json:
        print_json(table)
    elif args.csv:  # the file's own header and first rows
        write_csv(table["columns"], table["rows"])
    else:
        print_table(table["columns"], table["rows"], title=f"{args.name}: {table['dataset']['rows']} rows")
    return exit_codes.OK


def delete(client: Client, args: argparse.Namespace) -> int:
    gone = client.delete_dataset(args.ref)
    if args.json:
        print_json(gone)
    elif ":" in args.ref:
        out.print(f"deleted version {args.ref.rpartition(':')[2]} of dataset {gone['name']}", markup=False)
    else:
        out.print(f"deleted dataset {gone['name']}", markup=False)
    return exit_codes.OK
