"""`tensorfleet models ...`: the model registry from the command line (same operations as the SDK)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from tensorfleet_desktop.cli_console import console
from tensorfleet_desktop.client import Client

out = console()
EXIT_OK = 0


def add_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("models", help="the model registry: list, show, download, alias, tag, delete, stats, compare")
    msub = s.add_subparsers(dest="models_command", metavar="ACTION", parser_class=parser_class, required=True)
    m = msub.add_parser("list", help="one line per version, newest first")
    m.add_argument("--name")
    m.add_argument("--algorithm")
    m.add_argument("--tag")
    m.add_argument("--alias")
    m.add_argument("--min-metric", metavar="NAME=VALUE", help="e.g. test_accuracy=0.9")
    m.add_argument("--page", type=int, default=1)
    m.add_argument("--limit", type=int, default=20)
    m.add_argument("--json", action="store_true")
    m = msub.add_parser("show", help="one version: NAME (latest), NAME:VERSION or NAME@ALIAS")
    m.add_argument("ref")
    m.add_argument("--json", action="store_true")
    m = msub.add_parser("download", help="write a version to a file (sha256 checked)")
    m.add_argument("ref")
    m.add_argument("-o", "--output", type=Path, required=True)
    m.add_argument(
        "--format",
        choices=("skops", "safetensors", "pickle", "joblib", "onnx"),
        help="default: the stored safe format (skops or safetensors + PATH.json); pickle/joblib only on request",
    )
    m.add_argument("--json", action="store_true")
    m = msub.add_parser("alias", help="point NAME@ALIAS at a version, or remove an alias")
    asub = m.add_subparsers(dest="alias_command", metavar="set|rm", parser_class=parser_class, required=True)
    a = asub.add_parser("set", help="models alias set REF ALIAS")
    a.add_argument("ref")
    a.add_argument("alias")
    a.add_argument("--json", action="store_true")
    a = asub.add_parser("rm", help="models alias rm NAME ALIAS")
    a.add_argument("ref", metavar="name")
    a.add_argument("alias")
    a.add_argument("--json", action="store_true")
    m = msub.add_parser("tag", help="add a tag to a version")
    m.add_argument("ref")
    m.add_argument("tag")
    m.add_argument("--json", action="store_true")
    m = msub.add_parser("describe", help="set a version's description")
    m.add_argument("ref")
    m.add_argument("description")
    m.add_argument("--json", action="store_true")
    m = msub.add_parser("delete", help="delete NAME:VERSION (refused while an alias points at it, unless --force)")
    m.add_argument("ref")
    m.add_argument("--force", action="store_true")
    m.add_argument("--json", action="store_true")
    m = msub.add_parser("stats", help="versions per algorithm with average and best accuracy")
    m.add_argument("--json", action="store_true")
    m = msub.add_parser("compare", help="two versions' parameters and metrics side by side")
    m.add_argument("ref")
    m.add_argument("other")
    m.add_argument("--json", action="store_true")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "version", "algorithm", "metrics", "aliases", "tags", "size", "sha256", "created_at")
    return {**{k: m[k] for k in keys}, "blob_status": m.get("blob_status", "")}


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
            _print_json({"models": [_brief(m) for m in page["models"]], "pagination": page["pagination"]})
            return EXIT_OK
        table = Table("MODEL", "ALGORITHM", "SCORE", "ALIASES", "TAGS", "SIZE", "SHA256")
        for m in page["models"]:
            table.add_row(
                f"{m['name']}:{m['version']}", m["algorithm"], _score(m["metrics"]), ", ".join(m["aliases"]),
                ", ".join(m["tags"]), f"{m['size'] / 1024:.0f} KiB",
                f"{m['sha256'][:16]} {m.get('blob_status', '')}".strip(),
            )  # fmt: skip
        out.print(table)
        p = page["pagination"]
        out.print(f"page {p['page']} of {p['pages']} ({p['total']} versions)")
        return EXIT_OK
    if action == "show":
        return _show(client.model(args.ref), args.json)
    if action == "download":
        record = client.download_model(args.ref, args.output, args.format or "")
        if args.json:
            _print_json({**_brief(record), "format": record["format"], "path": str(args.output)})
        else:
            extra = f" (+ {args.output}.json)" if record["format"] == "safetensors" else ""
            out.print(f"wrote {record['name']}:{record['version']} as {record['format']} to {args.output}{extra}")
        return EXIT_OK
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
            _print_json(_brief(gone))
        else:
            out.print(f"deleted {gone['name']}:{gone['version']}")
        return EXIT_OK
    if action == "stats":
        stats = client.model_stats()
        if args.json:
            _print_json({**stats, "recent_models": [_brief(m) for m in stats["recent_models"]]})
            return EXIT_OK
        table = Table("ALGORITHM", "VERSIONS", "AVG ACCURACY", "BEST ACCURACY")
        for row in stats["algorithm_stats"]:
            table.add_row(row["algorithm"], str(row["count"]), fmt(row["avg_accuracy"]), fmt(row["best_accuracy"]))
        out.print(table)
        out.print(f"{stats['total_models']} versions in all")
        return EXIT_OK
    return _compare(client.model(args.ref), client.model(args.other), args.json)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _show(m: dict[str, Any], as_json: bool) -> int:
    if as_json:
        _print_json(m)
        return EXIT_OK
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
    return EXIT_OK


def _compare(a: dict[str, Any], b: dict[str, Any], as_json: bool) -> int:
    rows = []
    for section in ("hyperparameters", "metrics"):
        for key in sorted({*a[section], *b[section]}):
            rows.append({"section": section, "key": key, "a": a[section].get(key), "b": b[section].get(key)})
    if as_json:
        _print_json({"a": f"{a['name']}:{a['version']}", "b": f"{b['name']}:{b['version']}", "rows": rows})
        return EXIT_OK
    table = Table("", "", f"{a['name']}:{a['version']}", f"{b['name']}:{b['version']}")
    for r in rows:
        mark = "" if r["a"] == r["b"] else " *"
        table.add_row(r["section"], r["key"] + mark, json.dumps(r["a"]), json.dumps(r["b"]))
    out.print(table)
    return EXIT_OK
