"""`tensorfleet registry export|import DIR`: the model registry moved between controllers. It runs on the store
directly (no controller needed, none may be running on it)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.exit_codes import UsageError
from tensorfleet_desktop.cli.output import add_format_flags, out, print_json


def add_parser(sub: Any) -> None:
    s = sub.add_parser("registry", help="export or import the model registry (runs on the store directly)")
    s.set_defaults(run=run)
    rsub = s.add_subparsers(dest="registry_command", metavar="export|import", parser_class=type(s), required=True)
    for name, text in (("export", "write every version, alias and dataset to DIR"), ("import", "read DIR back")):
        r = rsub.add_parser(name, help=text)
        r.add_argument("dir", type=Path)
        r.add_argument("--data-dir", type=Path, help="the controller's data dir (default: the usual one)")
        r.add_argument("--store", default="", help="store URI (default: the data dir's, or TENSORFLEET_MONGODB_URI)")
        r.add_argument("--blobs", default="", help="blob store URI (default: the data dir's)")
        add_format_flags(r)


def run(args: argparse.Namespace) -> int:
    from tensorfleet_desktop.controller.settings import default_data_dir, resolve_uris
    from tensorfleet_desktop.registry_transfer import TransferError, export_registry, import_registry

    data_dir = (args.data_dir or default_data_dir()).resolve()
    store, blobs = resolve_uris(data_dir, args.store, args.blobs)
    transfer = export_registry if args.registry_command == "export" else import_registry
    try:
        result = asyncio.run(transfer(store, blobs, data_dir, args.dir))
    except (TransferError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print_json(result)
    else:
        done = "exported" if args.registry_command == "export" else "imported"
        out.print(f"{done}: " + ", ".join(f"{v} {k}" for k, v in result.items()))
    return exit_codes.OK
