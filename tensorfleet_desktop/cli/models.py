"""`tensorfleet models ...`: the model registry from the command line (same operations as the SDK). Its JSON
documents list their keys sorted."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.output import add_format_flags, csv_of, out, print_json, print_table, write_csv
from tensorfleet_desktop.client import Client

BRIEF_KEYS = ("name", "version", "algorithm", "metrics", "aliases", "tags", "size", "sha256", "created_at")


def add_parser(sub: Any) -> None:
    s = sub.add_parser("models", help="the model registry: list, show, download, alias, tag, delete, stats, compare")
    s.set_defaults(call=models)
    msub = s.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(s), required=True)
    m = msub.add_parser("list", help="one line per version, newest first")
    m.add_argument("--name")
    m.add_argument("--algorithm")
    m.add_argument("--tag")
    m.add_argument("--alias")
    m.add_argument("--min-metric", metavar="NAME=VALUE", help="e.g. test_accuracy=0.9")
    m.add_argument("--page", type=int, default=1)
    m.add_argument("--limit", type=int, default=20)
    add_format_flags(m, csv=True)
    m = msub.add_parser("show", help="one version: NAME (latest), NAME:VERSION or NAME@ALIAS")
    m.add_argument("ref")
    add_format_flags(m)
    m = msub.add_parser("download", help="write a version to a file (sha256 checked)")
    m.add_argument("ref")
    m.add_argument("-o", "--output", type=Path, required=True)
    m.add_argument(
        "--format",
        choices=("skops", "safetensors", "pickle", "joblib", "onnx"),
        help="default: the stored safe format (skops or safetensors + PATH.json); pickle/joblib only on request",
    )
    add_format_flags(m)
    m = msub.add_parser("alias", help="point NAME@ALIAS at a version, or remove an alias")
    asub = m.add_subparsers(dest="alias_command", metavar="set|rm", parser_class=type(m), required=True)
    a = asub.add_parser("set", help="models alias set REF ALIAS")
    a.add_argument("ref")
    a.add_argument("alias")
    add_format_flags(a)
    a = asub.add_parser("rm", help="models alias rm NAME ALIAS")
    a.add_argument("ref", metavar="name")
    a.add_argument("alias")
    add_format_flags(a)
    m = msub.add_parser("tag", help="add a tag to a version")
    m.add_argument("ref")
    m.add_argument("tag")
    add_format_flags(m)
    m = msub.add_parser("describe", help="set a version's description")
    m.add_argument("ref")
    m.add_argument("description")
    add_format_flags(m)
    m = msub.add_parser("delete", help="delete NAME:VERSION (refused while an alias points at it, unless --force)")
    m.add_argument("ref")
    m.add_argument("--force", action="store_true")
    add_format_flags(m)
    m = msub.add_parser("stats", help="versions per algorithm with average and best accuracy")
    add_format_flags(m, csv=True)
    m = msub.add_parser("compare", help="two versions' parameters and metrics side by side")
    m.add_argument("ref")
    m.add_argument("other")
    add_format_flags(m, csv=True)


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    return {**{k: m[k] for k in BRIEF_KEYS}, "blob_status": m.get("blob_status", "")}


def _score(metrics: dict[str, float]) -> str:
    for name in ("test_accuracy", "r2", "accuracy"):
        if name in metrics:
            return f"{name}={metrics[name]:.4f}"
    return "-"


def models(client: Client, args: argparse.Namespace) -> int:
    action = args.models_command
    if action == "list":
        page = client.models(
            args.name or "", args.algorithm or "", args.tag or "", args.alias or "", args.min_metric or "",
            args.page, args.limit,
        )  # fmt: skip
        if args.json:
            print_json(
                {"models": [_brief(m) for m in page["models"]], "pagination": page["pagination"]}, sort_keys=True
            )
            return exit_codes.OK
        if args.csv:  # this page's versions; --page and --limit pick the page
            csv_of([_brief(m) for m in page["models"]], (*BRIEF_KEYS, "blob_status"))
            return exit_codes.OK
        print_table(
            ("MODEL", "ALGORITHM", "SCORE", "ALIASES", "TAGS", "SIZE", "SHA256"),
            (
                (
                    f"{m['name']}:{m['version']}", m["algorithm"], _score(m["metrics"]), ", ".join(m["aliases"]),
                    ", ".join(m["tags"]), f"{m['size'] / 1024:.0f} KiB",
                    f"{m['sha256'][:16]} {m.get('blob_status', '')}".strip(),
                )
                for m in page["models"]
            ),
        )  # fmt: skip
        p = page["pagination"]
        out.print(f"page {p['page']} of {p['pages']} ({p['total']} versions)")
        return exit_codes.OK
    if action == "show":
        return _show(client.model(args.ref), args.json)
    if action == "download":
        record = client.download_model(args.ref, args.output, args.format or "")
        if args.json:
            print_json({**_brief(record), "format": record["format"], "path": str(args.output)}, sort_keys=True)
        else:
            extra = f" (+ {args.output}.json)" if record["format"] == "safetensors" else ""
            out.print(f"wrote {record['name']}:{record['version']} as {record['format']} to {args.output}{extra}")
        return exit_codes.OK
    if action == "alias":
        if args.alias_command == "set":
            return _show(client.set_alias(args.ref, args.alias), args.json)
        return _show(client.remove_alias(args.ref, args.alias), args.json)
    if action == "tag":
        return _show(client.tag_model(args.ref, args.tag), args.json)
    if action == "describe":
        return _show(client.describe_model(args.ref, args.description), args.json)
    if action == "delete":
        gone = client.delete_model(args.ref, args.force)
        if args.json:
            print_json(_brief(gone), sort_keys=True)
        else:
            out.print(f"deleted {gone['name']}:{gone['version']}")
        return exit_codes.OK
    if action == "stats":
        stats = client.model_stats()
        if args.json:
            print_json({**stats, "recent_models": [_brief(m) for m in stats["recent_models"]]}, sort_keys=True)
            return exit_codes.OK
        if args.csv:
            csv_of(stats["algorithm_stats"], ("algorithm", "count", "avg_accuracy", "best_accuracy"))
            return exit_codes.OK
        print_table(
            ("ALGORITHM", "VERSIONS", "AVG ACCURACY", "BEST ACCURACY"),
            (
                (row["algorithm"], str(row["count"]), fmt(row["avg_accuracy"]), fmt(row["best_accuracy"]))
                for row in stats["algorithm_stats"]
            ),
        )
        out.print(f"{stats['total_models']} versions in all")
        return exit_codes.OK
    return _compare(client.model(args.ref), client.model(args.other), args)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _show(m: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print_json(m, sort_keys=True)
        return exit_codes.OK
    out.print(f"[bold]{m['name']}:{m['version']}[/bold]  {m['algorithm']}  {m['format']}  {m['size']} bytes")
    out.print(f"  sha256      {m['sha256']}")
    if m.get("blob_status"):  # MISSING or DAMAGED: downloads of this version fail until it is restored
        out.print(f"  file        {m['blob_status']} in the controller's blob store")
    if m["description"]:
        out.print(f"  description {m['description']}")
    out.print(f"  aliases     {', '.join(m['aliases']) or '-'}   tags {', '.join(m['tags']) or '-'}")
    out.print(f"  job         {m['job_id']}   dataset {json.dumps(m['dataset'])}")
    out.print(f"  params      {json.dumps(m['hyperparameters'])}")
    out.print(f"  metrics     {json.dumps(m['metrics'])}")
    out.print(f"  versions    {json.dumps(m['framework_versions'])}")
    return exit_codes.OK


def _compare(a: dict[str, Any], b: dict[str, Any], args: argparse.Namespace) -> int:
    rows = []
    for section in ("hyperparameters", "metrics"):
        for key in sorted({*a[section], *b[section]}):
            rows.append({"section": section, "key": key, "a": a[section].get(key), "b": b[section].get(key)})
    if args.json:
        print_json(
            {"a": f"{a['name']}:{a['version']}", "b": f"{b['name']}:{b['version']}", "rows": rows}, sort_keys=True
        )
        return exit_codes.OK
    if args.csv:  # the header names the two versions, as the table's does
        refs = (f"{a['name']}:{a['version']}", f"{b['name']}:{b['version']}")
        write_csv(("section", "key", *refs), ((r["section"], r["key"], r["a"], r["b"]) for r in rows))
        return exit_codes.OK
    print_table(
        ("", "", f"{a['name']}:{a['version']}", f"{b['name']}:{b['version']}"),
        (
            (r["section"], r["key"] + ("" if r["a"] == r["b"] else " *"), json.dumps(r["a"]), json.dumps(r["b"]))
            for r in rows
        ),
    )
    return exit_codes.OK
