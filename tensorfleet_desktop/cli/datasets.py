"""`tensorfleet datasets upload|list|preview|delete`: your own CSV or Parquet files, uploaded once and named by jobs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.exit_codes import UsageError
from tensorfleet_desktop.cli.output import add_format_flags, csv_of, out, print_json, print_table, write_csv
from tensorfleet_desktop.client import Client


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("datasets", help="upload and list your datasets (CSV or Parquet)")
    s.set_defaults(call=datasets)
    dsub = s.add_subparsers(dest="datasets_command", metavar="ACTION", parser_class=type(s))
    d = dsub.add_parser("upload", help="upload a CSV or Parquet file once; jobs name it (--dataset NAME --target COL)")
    d.add_argument("file", type=Path)
    d.add_argument("--name")
    add_format_flags(d)
    d = dsub.add_parser("list", help="the uploaded datasets")
    add_format_flags(d, csv=True)
    d = dsub.add_parser("preview", help="the first rows of a dataset")
    d.add_argument("name")
    d.add_argument("--rows", type=int, default=10)
    add_format_flags(d, csv=True)
    d = dsub.add_parser("delete", help="forget a dataset (refused while a job or model refers to it)")
    d.add_argument("name")
    add_format_flags(d)


def datasets(client: Client, args: argparse.Namespace) -> int:
    if args.datasets_command == "upload":
        entry = client.upload_dataset(args.file, args.name)
        if args.json:
            print_json(entry)
        else:
            out.print(f"uploaded {entry['name']}: {entry['rows']} rows, columns {', '.join(entry['columns'])}")
        return exit_codes.OK
    if args.datasets_command == "preview":
        preview = client.preview_dataset(args.name, args.rows)
        if args.json:
            print_json(preview)
        elif args.csv:  # the file's own header and first rows
            write_csv(preview["columns"], preview["rows"])
        else:
            print_table(preview["columns"], preview["rows"], title=f"{args.name}: {preview['dataset']['rows']} rows")
        return exit_codes.OK
    if args.datasets_command == "delete":
        gone = client.delete_dataset(args.name)
        if args.json:
            print_json(gone)
        else:
            out.print(f"deleted dataset {gone['name']} ({gone['sha256'][:16]})")
        return exit_codes.OK
    if args.datasets_command != "list":
        raise UsageError("datasets needs an action: upload FILE | list | preview NAME | delete NAME")
    items = client.datasets()
    if args.json:
        print_json(items)
    elif args.csv:
        csv_of(items, ("name", "rows", "columns", "size", "sha256", "format", "created_at"))
    else:
        print_table(
            ("NAME", "ROWS", "COLUMNS", "SIZE", "SHA256"),
            ((d["name"], str(d["rows"]), ", ".join(d["columns"]), str(d["size"]), d["sha256"][:16]) for d in items),
        )
    return exit_codes.OK
