"""The jobs: `submit`, `jobs`, `status`, `cancel`, `pause`, `resume`, `retry`, `resubmit`, `watch`, `trials`,
`metrics` and `logs`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.exit_codes import UsageError
from tensorfleet_desktop.cli.output import (
    add_format_flags,
    csv_of,
    err,
    out,
    print_json,
    print_table,
    when,
)
from tensorfleet_desktop.client import TERMINAL, Client, TensorFleetError, trial_rows

SUMMARY_KEYS = (
    "id",
    "name",
    "state",
    "progress",
    "tasks",
    "metrics",
    "model",
    "error",
    "created_at",
    "started_at",
    "finished_at",
)
JOBS_CSV = (
    "id",
    "name",
    "state",
    "progress",
    "tasks.completed",
    "tasks.total",
    "metrics",
    "model",
    "error",
    "created_at",
    "started_at",
    "finished_at",
)


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("submit", help="submit a job from flags or a YAML/JSON job file")
    s.set_defaults(call=submit)
    s.add_argument("file", nargs="?", type=Path, help="job file whose keys are job spec fields")
    s.add_argument("--name")
    s.add_argument("--algorithm", "-a")
    s.add_argument("--dataset", "-d", help="a built-in dataset, an uploaded one, or a CSV/Parquet file to upload")
    s.add_argument("--target", help="the target column of an uploaded dataset")
    s.add_argument(
        "--dataset-param",
        action="append",
        default=[],
        metavar="K=V",
        help="synthetic dataset parameter, e.g. n_samples=20000 (repeatable)",
    )
    s.add_argument("--param", "-p", action="append", default=[], metavar="K=V", help="hyperparameter (repeatable)")
    s.add_argument("--workers", type=int, dest="num_workers")
    s.add_argument("--epochs", type=int)
    s.add_argument("--gpus", type=int)
    s.add_argument("--priority", type=int)
    s.add_argument("--max-retries", type=int)
    s.add_argument("--timeout", type=float, help="job wall-clock limit in seconds")
    s.add_argument("--on", action="append", default=[], metavar="AGENT")
    s.add_argument("--not-on", action="append", default=[], metavar="AGENT")
    s.add_argument("--label", action="append", default=[], metavar="K=V")
    s.add_argument("--model-name")
    s.add_argument("--script", type=Path, metavar="FILE", help="run your own Python file (algorithm 'script')")
    s.add_argument("--script-arg", action="append", default=[], metavar="ARG", help="argument for the script")
    s.add_argument(
        "--requirement",
        action="append",
        default=[],
        metavar="REQ",
        help="a distribution the script needs, checked on the agent (e.g. numpy>=1.26)",
    )
    s.add_argument("--cv", type=int, help="k-fold cross-validation: one task per fold, in parallel")
    s.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="PARAM=SPEC",
        help="sweep a hyperparameter: a,b,c | int:LO:HI | float:LO:HI[:log] (repeatable)",
    )
    s.add_argument("--search", choices=("grid", "random", "tpe"), help="sweep search (default: tpe)")
    s.add_argument("--trials", type=int, help="sweep budget (default: 10; a grid's size for grid search)")
    s.add_argument("--sweep-timeout", type=float, help="stop starting trials after this many seconds")
    s.add_argument("--sweep-metric", help="what the sweep optimises (default: test_accuracy, or r2 for regression)")
    s.add_argument(
        "--prune",
        action="store_true",
        help="stop trials whose intermediate scores trail the median (iterative algorithms: mlp, gradient_boosting)",
    )
    s.add_argument("--wait", action="store_true", help="follow the job with a progress bar on stderr")
    add_format_flags(s)

    s = sub.add_parser("jobs", help="list jobs")
    s.set_defaults(call=jobs)
    s.add_argument("--state", action="append", default=[])
    s.add_argument("--limit", type=int, default=0)
    add_format_flags(s, csv=True)
    for name, text, handler in (
        ("status", "show a job", status),
        ("cancel", "cancel a job", _job_action("cancel", "cancelled")),
        ("pause", "pause a job", _job_action("pause", "paused")),
        ("resume", "resume a paused job", _job_action("resume", "resumed")),
        ("retry", "retry a failed or cancelled job", _job_action("retry", "retrying")),
    ):
        s = sub.add_parser(name, help=text)
        s.set_defaults(call=handler)
        s.add_argument("job")
        add_format_flags(s)
    s = sub.add_parser("resubmit", help="submit a copy of a job, with changed hyperparameters")
    s.set_defaults(call=resubmit)
    s.add_argument("job")
    s.add_argument("--param", "-p", action="append", default=[], metavar="K=V")
    add_format_flags(s)
    s = sub.add_parser("watch", help="follow a job's metrics and logs live")
    s.set_defaults(call=watch)
    s.add_argument("job")
    s.add_argument("--json", action="store_true", help="print every event as one JSON array when the job ends")
    s = sub.add_parser("trials", help="a sweep's trials: parameters, score, state, duration")
    s.set_defaults(call=trials)
    s.add_argument("job")
    add_format_flags(s, csv=True)
    s = sub.add_parser("metrics", help="a job's metric series")
    s.set_defaults(call=metrics)
    s.add_argument("job")
    s.add_argument("--name", action="append", default=[])
    add_format_flags(s, csv=True)
    s = sub.add_parser("logs", help="a job's log lines")
    s.set_defaults(call=logs)
    s.add_argument("job")
    s.add_argument("--task", type=int)
    add_format_flags(s, csv=True)


def _kv(items: list[str], flag: str, parse_values: bool = True) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} must look like KEY=VALUE, got {item!r}")
        value: Any = raw
        if parse_values:
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                value = raw
            if isinstance(value, dict | list):
                value = raw
        parsed[key.strip()] = value
    return parsed


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flags and/or a job file -> a job spec dict (validated by the controller's one parser)."""
    from tensorfleet_desktop.controller.jobspec import load_job_file

    spec: dict[str, Any] = load_job_file(args.file) if args.file else {}
    for key in (
        "name",
        "algorithm",
        "dataset",
        "num_workers",
        "epochs",
        "gpus",
        "priority",
        "max_retries",
        "timeout",
        "model_name",
        "cv",
    ):
        value = getattr(args, key)
        if value is not None:
            spec[key] = value
    if args.param:
        spec["hyperparameters"] = {**(spec.get("hyperparameters") or {}), **_kv(args.param, "--param")}
    if args.sweep or args.search or args.trials or args.sweep_timeout or args.sweep_metric or args.prune:
        sweep = dict(spec.get("sweep") or {})
        if args.sweep:
            sweep["params"] = {**(sweep.get("params") or {}), **_kv(args.sweep, "--sweep", parse_values=False)}
        for key, value in (
            ("search", args.search),
            ("trials", args.trials),
            ("timeout", args.sweep_timeout),
            ("metric", args.sweep_metric),
            ("prune", args.prune or None),
        ):
            if value is not None:
                sweep[key] = value
        spec["sweep"] = sweep
    if args.target is not None:
        spec["target"] = args.target
    if args.script is not None:
        try:
            source = args.script.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read script {args.script}: {exc}") from None
        spec["script"] = {
            "name": args.script.name,
            "source": source,
            "args": args.script_arg,
            "requirements": args.requirement,
        }
    if args.dataset_param:
        spec["dataset_params"] = {**(spec.get("dataset_params") or {}), **_kv(args.dataset_param, "--dataset-param")}
    if args.on or args.not_on or args.label:
        constraints = dict(spec.get("constraints") or {})
        if args.on:
            constraints["on"] = args.on
        if args.not_on:
            constraints["not_on"] = args.not_on
        if args.label:
            constraints["labels"] = _kv(args.label, "--label", parse_values=False)
        spec["constraints"] = constraints
    if not spec:
        raise UsageError("nothing to submit: give a job file or --algorithm (see tensorfleet submit --help)")
    return spec


def summary(job: dict[str, Any]) -> dict[str, Any]:
    return {**{k: job[k] for k in SUMMARY_KEYS}, "artifacts": job.get("artifacts", [])}


def submit(client: Client, args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    dataset = spec.get("dataset")
    if isinstance(dataset, str) and Path(dataset).is_file():  # a local CSV: upload it once, then name it
        uploaded = client.upload_dataset(Path(dataset))
        err.print(f"uploaded {dataset} as dataset {uploaded['name']} ({uploaded['rows']} rows)")
        spec["dataset"] = uploaded["name"]
    job = client.submit(spec)
    if not args.wait:
        if args.json:
            print_json(summary(job))
        else:
            out.print(f"submitted {job['id']} ({job['name']}): {job['state']}")
        return exit_codes.OK
    err.print(f"submitted {job['id']} ({job['name']})")
    final = follow(client, job["id"])
    if args.json:
        print_json(summary(final))
    else:
        show_job(final)
    return exit_codes.OK if final["state"] == "SUCCEEDED" else exit_codes.JOB_FAILED


def follow(client: Client, job_id: str) -> dict[str, Any]:
    """A progress bar on stderr, moved by the SDK's stream of job changes, until the job ends."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task(job_id, total=1.0, state="QUEUED")
        for change in client.watch_jobs((job_id,)):  # leaving the loop closes the stream
            for job in change["jobs"]:
                bar.update(task, completed=job["progress"], state=job["state"])
                if job["state"] in TERMINAL:
                    return dict(job)
    raise TensorFleetError(f"the controller ended the stream of job {job_id} before the job ended")


def jobs(client: Client, args: argparse.Namespace) -> int:
    items = client.jobs(tuple(s.upper() for s in args.state), args.limit)
    if args.json:
        print_json([summary(j) for j in items])
    elif args.csv:
        csv_of(items, JOBS_CSV)
    else:
        print_table(
            ("ID", "NAME", "STATE", "PROGRESS", "TASKS", "METRIC", "CREATED"),
            (
                (
                    j["id"],
                    j["name"],
                    j["state"],
                    f"{j['progress']:.0%}",
                    f"{j['tasks']['completed']}/{j['tasks']['total']}",
                    _best_metric(j),
                    when(j["created_at"]),
                )
                for j in items
            ),
        )
    return exit_codes.OK


def _best_metric(job: dict[str, Any]) -> str:
    for name in ("test_accuracy", "accuracy", "loss"):
        if name in job["metrics"]:
            return f"{name}={job['metrics'][name]:.4f}"
    return ""


def status(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.job)
    if args.json:
        print_json(summary(job))
    else:
        show_job(job)
    return exit_codes.OK


def show_job(job: dict[str, Any]) -> None:
    out.print(f"[bold]{job['id']}[/bold] {job['name']}  {job['state']}  {job['progress']:.0%}")
    if job["error"]:
        out.print(f"  error: {job['error']}")
    for name, value in sorted(job["metrics"].items()):
        out.print(f"  {name} = {value:.6g}")
    for t in job["task_list"]:
        out.print(
            f"  task {t['index']}: {t['state']} on {t['agent'] or '-'} (attempt {t['attempt']})"
            f"{' ' + t['exit_cause'] if t['exit_cause'] else ''}"
        )
    for a in job["artifacts"]:
        out.print(f"  artifact {a['name']} ({a['kind']}, {a['size']} bytes) sha256 {a['sha256']}")


def _job_action(method: str, verb: str) -> Any:
    def handler(client: Client, args: argparse.Namespace) -> int:
        job = getattr(client, method)(args.job)
        if args.json:
            print_json(summary(job))
        else:
            out.print(f"{verb} {job['id']}: {job['state']}")
        return exit_codes.OK

    return handler


def resubmit(client: Client, args: argparse.Namespace) -> int:
    job = client.resubmit(args.job, _kv(args.param, "--param"))
    if args.json:
        print_json(summary(job))
    else:
        out.print(f"resubmitted {args.job} as {job['id']}: {job['state']}")
    return exit_codes.OK


def watch(client: Client, args: argparse.Namespace) -> int:
    """Every event as it comes; the stream ends when the job does, and the SDK's wait() says how it ended."""
    events = []
    for event in client.watch(args.job):
        if args.json:
            events.append({k: v for k, v in event.items() if k != "job"})
            continue
        kind = event["kind"]
        if kind == "metrics":
            for p in event["points"]:
                out.print(f"[{p['task_index']}] step {p['step']}: {p['name']} = {p['value']:.6g}")
        elif kind == "logs":
            for line in event["lines"]:
                out.print(f"[{line['task_index']}] {line['line']}", markup=False)
        elif kind in ("job_state", "task_state"):
            who = "job" if kind == "job_state" else f"task {event['task_index']}"
            out.print(f"{who}: {event['state']} {event['message']}", markup=False)
    job = client.wait(args.job)
    if args.json:
        print_json(events)
    return exit_codes.OK if job["state"] == "SUCCEEDED" else exit_codes.JOB_FAILED


def trials(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.job)
    sweep = job["spec"].get("sweep")
    if not sweep:
        raise UsageError(f"job {job['id']} is not a sweep")
    metric = sweep["metric"]
    rows = trial_rows(job)
    if args.json:
        print_json(
            {
                "job": job["id"],
                "metric": metric,
                "direction": sweep["direction"],
                "best_trial": job["metrics"].get("best_trial"),
                "trials": rows,
            }
        )
    elif args.csv:
        csv_of(rows, ("trial", "params", "score", "state", "duration", "agent"))
    else:
        print_table(
            ("TRIAL", "PARAMS", metric.upper(), "STATE", "DURATION", "AGENT"),
            (
                (
                    str(r["trial"]),
                    json.dumps(r["params"]),
                    f"{r['score']:.4f}" if r["score"] is not None else "-",
                    r["state"],
                    f"{r['duration']:.1f}s" if r["duration"] is not None else "-",
                    r["agent"],
                )
                for r in rows
            ),
        )
    return exit_codes.OK


def metrics(client: Client, args: argparse.Namespace) -> int:
    rows = client.metrics(args.job, tuple(args.name))
    if args.json:
        print_json(rows)
    elif args.csv:
        csv_of(rows, ("task_index", "step", "name", "value", "wall_time"))
    else:
        print_table(
            ("TASK", "STEP", "NAME", "VALUE"),
            ((str(r["task_index"]), str(r["step"]), r["name"], f"{r['value']:.6g}") for r in rows),
        )
    return exit_codes.OK


def logs(client: Client, args: argparse.Namespace) -> int:
    rows = client.logs(args.job, args.task)
    if args.json:
        print_json(rows)
    elif args.csv:
        csv_of(rows, ("task_index", "time", "stream", "line"))
    else:
        for r in rows:
            sys.stdout.write(f"[{r['task_index']}] {r['line']}\n")
    return exit_codes.OK
