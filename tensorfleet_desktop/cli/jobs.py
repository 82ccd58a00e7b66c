"""The jobs: `submit`, `jobs`, `status`, `cancel`, `pause`, `resume`, `retry`, `rm`, `resubmit`, `watch`,
`trials`, `metrics` and `logs`.

A project job (`submit --project [DIR] ... -- COMMAND [ARGS...]`, or `project:` / `command:` in a job file) is
snapshotted and uploaded by the SDK's `submit_project`: only the files the controller lacks travel. Everything
after the first `--` is the command, options included (`-- python -m pkg.train --lr 3e-4`), so the submit parser
splits its arguments there before argparse sees them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.project_spec import check_command, check_env_choice
from tensorfleet_agent.core.sizes import parse_size
from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.datasets import version_line
from tensorfleet_desktop.cli.exit_codes import UsageError
from tensorfleet_desktop.cli.output import (
    add_format_flags,
    csv_of,
    err,
    human_size,
    out,
    print_json,
    print_table,
    when,
)
from tensorfleet_desktop.client import TERMINAL, Client, InvalidRequest, NotFound, TensorFleetError, trial_rows
from tensorfleet_desktop.display import printable
from tensorfleet_desktop.project import DEFAULT_MAX_BYTES

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
    "submitter",  # who submitted it (issue 24: a named token's name, or the OS user)
    "waiting",  # why it waits for a placement ("over quota: ...", a capacity source's words); "" when it does not
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


PROJECT_USAGE = (
    "tensorfleet submit --project [DIR] [--env auto|none|FILE] [--max-project-size SIZE] [--workers N] [...] "
    "-- COMMAND [ARGS...]"
)
PROJECT_EXAMPLE = "tensorfleet submit --project . -- python -m pkg.train --lr 3e-4"
# Keys of a job file that describe a project job; the SDK turns them into the controller's spec.
PROJECT_KEYS = ("project", "command", "env", "max_project_size")


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _split_at_double_dash(parser: argparse.ArgumentParser) -> None:
    """Make `parser` take everything after the first `--` as the project's command (`args.project_command`,
    None without a `--`), options like `--lr` included, and parse only what comes before it."""
    plain = parser.parse_known_args

    def parse_known_args(
        args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        words = list(sys.argv[1:] if args is None else args)
        tail: list[str] | None = None
        if "--" in words:
            cut = words.index("--")
            words, tail = words[:cut], words[cut + 1 :]
        parsed, extras = plain(words, namespace)
        parsed.project_command = tail
        stray_word = parsed.file is not None and parsed.file.suffix not in (".yaml", ".yml", ".json")
        if tail is None and parsed.project is not None and (extras or stray_word):
            # `--project . python train.py --lr 1`: the command was meant, the `--` forgotten (a job file with
            # --project is fine: the flag names the folder, the file's command: runs)
            guess = [str(parsed.file)] if parsed.file is not None else []
            parser.error(
                "the command goes after `--`: tensorfleet submit --project "
                f"{shlex.quote(parsed.project)} -- {shlex.join([*guess, *extras])}"
            )
        return parsed, extras

    setattr(parser, "parse_known_args", parse_known_args)  # noqa: B010 (mypy refuses assigning to a method)


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "submit",
        usage=f"tensorfleet submit [JOB_FILE] [options]\n       {PROJECT_USAGE}",
        help="submit a job from flags, a YAML/JSON job file, or your project folder and a command",
        description="Submit a job from flags or a job file, or run your own project: "
        f"`{PROJECT_USAGE}` snapshots DIR (default: here), uploads the files the controller lacks, and runs "
        f"COMMAND there in the environment built from its uv.lock / pyproject.toml / requirements.txt. "
        f"Everything after `--` is the command. Example: {PROJECT_EXAMPLE}",
    )
    s.set_defaults(call=submit)
    _split_at_double_dash(s)
    s.add_argument("file", nargs="?", type=Path, help="job file whose keys are job spec fields")
    s.add_argument(
        "--project",
        nargs="?",
        const=".",
        metavar="DIR",
        help="run your project folder (default: the current one); the command follows `--`",
    )
    s.add_argument(
        "--env",
        metavar="auto|none|FILE",
        help="the project's environment: auto (uv.lock > pyproject.toml > requirements.txt > none; the default), "
        "none (the agent's own Python) or a requirement file in DIR",
    )
    s.add_argument(
        "--max-project-size",
        type=_size_arg,
        metavar="SIZE",
        help=f"refuse a larger project up front, e.g. 500M or 2G (default: {human_size(DEFAULT_MAX_BYTES)})",
    )
    s.add_argument("--name")
    s.add_argument("--algorithm", "-a")
    s.add_argument(
        "--dataset",
        "-d",
        help="a built-in dataset, a stored one (NAME: its latest version, or NAME:VERSION), a CSV/Parquet file to "
        "upload, or a folder to upload as a version (a path with a '/': ./images)",
    )
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
    s.add_argument(
        "--gpus", type=_gpus, metavar="N", help="whole GPUs per task (2), or a share of one GPU's memory (0.5)"
    )
    s.add_argument(
        "--gpu-memory", metavar="SIZE", help="share one GPU with other tasks: the memory each task may use, e.g. 6GiB"
    )
    s.add_argument("--priority", type=int)
    s.add_argument(
        "--preemptible",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a more important job may stop its tasks: they save a checkpoint and are queued again "
        "(default: yes below priority 0)",
    )
    s.add_argument(
        "--allow-restart",
        action="store_true",
        default=None,
        help="a preemptible task that has no checkpoint yet may be stopped too (it starts over)",
    )
    s.add_argument("--max-retries", type=int)
    s.add_argument(
        "--timeout",
        type=float,
        help="job wall-clock limit in seconds, from its start (paused time not counted; a retry starts it anew)",
    )
    s.add_argument("--on", action="append", default=[], metavar="AGENT")
    s.add_argument("--not-on", action="append", default=[], metavar="AGENT")
    s.add_argument("--label", action="append", default=[], metavar="K=V")
    s.add_argument("--model-name")
    s.add_argument("--group", help="a label the desktop app's Jobs table can group by (at most 100 characters)")
    s.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="label the job (repeatable; at most 20 tags)"
    )
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
    s.add_argument(
        "--trials-per-task",
        type=int,
        help="trials one agent task runs one after another (default: chosen from the budget; 1: one task each)",
    )
    s.add_argument(
        "--keep-models",
        choices=("best", "all", "none"),
        help="a sweep's trials' models registered: the best one (default), all of them, or none",
    )
    s.add_argument("--wait", action="store_true", help="follow the job with a progress bar on stderr")
    add_format_flags(s)

    s = sub.add_parser("jobs", help="list jobs")
    s.set_defaults(call=jobs)
    s.add_argument("--state", action="append", default=[])
    s.add_argument("--limit", type=int, default=0)
    whose = s.add_mutually_exclusive_group()
    whose.add_argument("--mine", action="store_true", help="only your jobs (the name your token stands for)")
    whose.add_argument("--user", default="", metavar="NAME", help="only this user's jobs")
    add_format_flags(s, csv=True)
    s = sub.add_parser("status", help="show a job (a project job: its code's commit and each task's environment)")
    s.set_defaults(call=status)
    s.add_argument("job")
    s.add_argument("--diff", action="store_true", help="print the uncommitted changes recorded with a project job")
    add_format_flags(s)
    for name, text, handler in (
        ("cancel", "cancel a job", _job_action("cancel", "cancelled")),
        ("pause", "pause a job", _job_action("pause", "paused")),
        ("resume", "resume a paused job", _job_action("resume", "resumed")),
        ("retry", "retry a failed or cancelled job", _job_action("retry", "retrying")),
    ):
        s = sub.add_parser(name, help=text)
        s.set_defaults(call=handler)
        s.add_argument("job")
        add_format_flags(s)
    s = sub.add_parser(
        "rm",
        help="delete ended jobs with their history (a running job is refused: cancel it first)",
        description="Delete ended jobs: each job's record, events, metrics and logs. The model versions they "
        "registered stay; their other files are freed by the next `tensorfleet gc`. A job that has not ended is "
        "refused; the others are still deleted. --json prints the deleted jobs as a list.",
    )
    s.set_defaults(call=remove)
    s.add_argument("jobs", nargs="+", metavar="JOB", help="job id or unique prefix")
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


def _gpus(text: str) -> int | float:
    """--gpus: a whole number of GPUs, or a share of one GPU below 1 (the controller's parser checks the rest)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of GPUs (2) or a share of one (0.5), not {text!r}") from None
    return int(value) if value.is_integer() else value


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
    if args.file and isinstance(spec.get("project"), str) and spec["project"].strip():  # relative to the job file
        spec["project"] = str(args.file.parent / spec["project"])
    if args.project is not None:
        spec["project"] = args.project
    if args.project_command is not None:
        spec["command"] = args.project_command
    if args.env is not None:
        spec["env"] = args.env
    if args.max_project_size is not None:
        spec["max_project_size"] = args.max_project_size
    for key in (
        "name",
        "algorithm",
        "dataset",
        "num_workers",
        "epochs",
        "gpus",
        "gpu_memory",
        "priority",
        "preemptible",
        "allow_restart",
        "max_retries",
        "timeout",
        "model_name",
        "cv",
        "group",
    ):
        value = getattr(args, key)
        if value is not None:
            spec[key] = value
    if args.param:
        spec["hyperparameters"] = {**(spec.get("hyperparameters") or {}), **_kv(args.param, "--param")}
    sweeping = (args.sweep, args.search, args.trials, args.sweep_timeout, args.sweep_metric, args.prune)
    if any(sweeping) or args.trials_per_task is not None:
        sweep = dict(spec.get("sweep") or {})
        if args.sweep:
            sweep["params"] = {**(sweep.get("params") or {}), **_kv(args.sweep, "--sweep", parse_values=False)}
        for key, value in (
            ("search", args.search),
            ("trials", args.trials),
            ("timeout", args.sweep_timeout),
            ("metric", args.sweep_metric),
            ("prune", args.prune or None),
            ("trials_per_task", args.trials_per_task),
        ):
            if value is not None:
                sweep[key] = value
        spec["sweep"] = sweep
    if args.keep_models is not None:
        spec["keep_models"] = args.keep_models
    if args.tag:
        known = spec.get("tags") or []
        spec["tags"] = [*([known] if isinstance(known, str) else known), *args.tag]  # the file's, then the flags
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
        raise UsageError(
            "nothing to submit: give a job file, --algorithm, or --project with a command "
            f"({PROJECT_EXAMPLE}; see tensorfleet submit --help)"
        )
    return spec


@dataclass(frozen=True)
class ProjectSubmission:
    """What `submit_project` is called with: the folder, the command, the env choice, the size limit, and every
    other job field (workers, gpus, dataset, name, ...) as the controller's spec spells it."""

    path: Path
    command: list[str]
    env: str
    max_bytes: int
    fields: dict[str, Any]


def project_submission(spec: dict[str, Any]) -> ProjectSubmission | None:
    """The project job a spec describes (`project:` a folder), or None for any other job. A `project:` that is
    already the controller's form (a mapping with a manifest id) is submitted as it is."""
    project = spec.get("project")
    if project is None or isinstance(project, dict):
        stray = [key for key in PROJECT_KEYS[1:] if key in spec]
        if project is None and stray:
            raise UsageError(
                f"{', '.join(stray)} go(es) with a project: add --project DIR (or project: in the job file)"
            )
        return None
    if not isinstance(project, str) or not project.strip():
        raise UsageError(f"project must be a folder path, got {project!r}")
    fields = {k: v for k, v in spec.items() if k not in PROJECT_KEYS}
    algorithm = fields.pop("algorithm", None)
    if algorithm not in (None, "project"):
        raise UsageError(f"--project runs your command; it cannot be combined with algorithm {algorithm!r}")
    if "script" in fields:
        raise UsageError("--project and --script are two ways to run your code: use one")
    if "hyperparameters" in fields:
        raise UsageError(
            "--param (hyperparameters) is for built-in algorithms: give your command its options after `--`"
        )
    try:
        env = spec.get("env", "auto")
        env = check_env_choice(env.strip() if isinstance(env, str) else env)
    except ValidationError as exc:
        raise UsageError(str(exc)) from None
    size = spec.get("max_project_size", DEFAULT_MAX_BYTES)
    if isinstance(size, str):
        try:
            size = parse_size(size)
        except ValueError as exc:
            raise UsageError(f"max_project_size: {exc}") from None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UsageError(f"max_project_size must be a size like 500M or 2G, got {size!r}")
    return ProjectSubmission(Path(project), _command(spec.get("command")), env, size, fields)


def _command(value: Any) -> list[str]:
    """A job file's `command:` (a string, split as a shell would, or a list) or the words after `--`, checked by
    the function the controller uses (core.project_spec.check_command). YAML reads `--lr 3e-4`'s number as one:
    numbers in a list are taken as the words they were written as."""
    if value is None:
        raise UsageError(
            f"a project job needs a command: give it after `--` ({PROJECT_EXAMPLE}), or command: in the job file"
        )
    if isinstance(value, list):
        value = [str(w) if isinstance(w, int | float) and not isinstance(w, bool) else w for w in value]
    try:
        return check_command(value)
    except ValidationError as exc:
        raise UsageError(str(exc)) from None


def summary(job: dict[str, Any]) -> dict[str, Any]:
    return {**{k: job[k] for k in SUMMARY_KEYS}, "artifacts": job.get("artifacts", [])}


TASK_KEYS = (
    "index",
    "state",
    "agent",
    "node_id",
    "attempt",
    "progress",
    "exit_cause",
    "error",
    "environment",
    "dataset_transfer",
)


def detail(job: dict[str, Any]) -> dict[str, Any]:
    """`status --json`: the summary, the project (None for other jobs), each task with its environment, and the
    top-level "environment" (rank 0's, as most projects have one env for every rank)."""
    tasks = [{k: t.get(k) for k in TASK_KEYS} for t in job.get("task_list", [])]
    rank0 = next((t["environment"] for t in tasks if t["index"] == 0), None)
    return {**summary(job), "project": job.get("project"), "environment": rank0, "task_list": tasks}


def submit(client: Client, args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    dataset = spec.get("dataset")
    project = project_submission(spec)  # checked before anything is uploaded
    if isinstance(dataset, str) and "/" in dataset and Path(dataset).is_dir():  # a folder: its version, by number
        version = client.upload_dataset_version(Path(dataset))
        err.print(version_line(version), markup=False)
        spec["dataset"] = f"{version['name']}:{version['version']}"
        if project is not None:
            project.fields["dataset"] = spec["dataset"]
    elif isinstance(dataset, str) and Path(dataset).is_file():  # a local CSV: upload it once, then name it
        uploaded = client.upload_dataset(Path(dataset))
        err.print(f"uploaded {dataset} as dataset {uploaded['name']} ({uploaded['rows']} rows)")
        spec["dataset"] = uploaded["name"]
        if project is not None:
            project.fields["dataset"] = uploaded["name"]
    upload: dict[str, Any] | None = None
    if project is None:
        job = client.submit(spec)
    else:
        # a spinner on a terminal (nothing in a pipe) while the folder is hashed and what the controller lacks sent
        with err.status(f"snapshotting {project.path} and uploading what the controller lacks"):
            job = client.submit_project(
                project.path, project.command, env=project.env, max_project_size=project.max_bytes, **project.fields
            )
        upload = job.get("upload")
        if upload is not None and not args.json:
            err.print(upload_line(upload), markup=False)
    if not args.wait:
        if args.json:
            print_json(_submitted(job, upload))
        else:
            out.print(f"submitted {job['id']} ({job['name']}): {job['state']}", markup=False)
        return exit_codes.OK
    err.print(f"submitted {job['id']} ({job['name']})", markup=False)
    final = follow(client, job["id"])
    if args.json:
        print_json(_submitted(final, upload))
    else:
        show_job(final)
    return exit_codes.OK if final["state"] == "SUCCEEDED" else exit_codes.JOB_FAILED


def _submitted(job: dict[str, Any], upload: dict[str, Any] | None) -> dict[str, Any]:
    """submit --json: the summary; a project job's also has its project, environment, tasks and "upload"."""
    if upload is None and not job.get("project"):
        return summary(job)
    return {**detail(job), "upload": upload}


def upload_line(upload: dict[str, Any]) -> str:
    """ "uploaded 1 of 37 files (1.2 KiB of 4.5 MiB)": what a re-submit cost, at a glance."""
    sent = upload.get("uploaded_files")
    files = f"{sent} of {upload['files']} files" if sent is not None else f"{upload['files']} files"
    return f"uploaded {files} ({human_size(upload['uploaded_bytes'])} of {human_size(upload['bytes'])})"


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
        said: set[tuple[str, int, int]] = set()  # ("preparing" | "environment", task, attempt) already printed
        for change in client.watch_jobs((job_id,)):  # leaving the loop closes the stream
            for job in change["jobs"]:
                bar.update(task, completed=job["progress"], state=_shown_state(job))
                for line in _project_steps(job, said):  # a line each, so a log of the run shows them too
                    bar.console.print(line, markup=False)
                if job["state"] in TERMINAL:
                    return dict(job)
    raise TensorFleetError(f"the controller ended the stream of job {job_id} before the job ended")


def _project_steps(job: dict[str, Any], said: set[tuple[str, int, int]]) -> list[str]:
    """The lines --wait prints once per task attempt of a project job: that it is PREPARING (materializing the
    project and building or finding its environment; uv's log goes to the task's logs), then which environment
    it got. Another job is PREPARING while its dataset version is laid out on the agent."""
    lines = []
    for t in job.get("task_list", []):
        attempt = (t["index"], t["attempt"])
        if t["state"] == "PREPARING" and ("preparing", *attempt) not in said:
            said.add(("preparing", *attempt))
            dataset_only = not job.get("project") and (job.get("spec") or {}).get("dataset_version")
            what = "its dataset (the log" if dataset_only else "the project's files and environment (uv's log"
            lines.append(f"task {t['index']}: PREPARING on {t['agent'] or '-'}: {what}: tensorfleet logs {job['id']})")
        if t.get("environment") and ("environment", *attempt) not in said:
            said.add(("environment", *attempt))
            lines.append(f"task {t['index']}: {environment_line(t['environment'])}")
    return lines


def _shown_state(job: dict[str, Any]) -> str:
    """The job's state, or PREPARING while a running job's tasks are laying out the project and building its
    environment (a step that can take a while on a cold agent: say so rather than look stuck)."""
    if job["state"] in ("QUEUED", "RUNNING") and any(t["state"] == "PREPARING" for t in job.get("task_list", [])):
        return "PREPARING"
    return str(job["state"])


def jobs(client: Client, args: argparse.Namespace) -> int:
    user = client.whoami()["name"] if args.mine else args.user.strip()
    if args.mine and not user:
        raise UsageError("--mine: the controller does not know who you are (no OS user was sent)")
    items = client.jobs(tuple(s.upper() for s in args.state), args.limit, user)
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
                    _shown_state(j),
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
    if args.diff:
        return _print_diff(job)
    if args.json:
        print_json(detail(job))
    else:
        show_job(job)
    return exit_codes.OK


def _print_diff(job: dict[str, Any]) -> int:
    """The diff as recorded (`git apply` takes it), on stdout; what it is not, on stderr."""
    project = job.get("project")
    if not project:
        raise UsageError(f"job {job['id']} is not a project job: it has no recorded code")
    git = project.get("git")
    if not git or not git.get("commit"):
        err.print(f"job {job['id']}'s project was not in a git repository (or had no commit): no diff", markup=False)
        return exit_codes.OK
    if not git.get("diff"):
        err.print(f"no uncommitted changes to tracked files at {git['commit'][:12]}", markup=False)
    sys.stdout.write(git.get("diff") or "")
    if git.get("diff_truncated"):
        err.print("the diff was cut at the recorded limit: this is its beginning only", style="yellow", markup=False)
    untracked = git.get("untracked") or []
    if untracked:
        more = f" and {len(untracked) - 10} more" if len(untracked) > 10 else ""
        err.print(f"{len(untracked)} untracked file(s) were sent too: {', '.join(untracked[:10])}{more}", markup=False)
    return exit_codes.OK


def project_lines(project: dict[str, Any]) -> list[str]:
    """A project job's code, traceable: what was sent, the command, and where it came from in git."""
    lines = [
        f"project: {project['files']} files, {human_size(project['bytes'])}, env {project.get('env') or 'auto'}, "
        f"manifest {project['manifest_id'][:12]}",
    ]
    if project.get("command"):
        lines.append(f"command: {shlex.join(project['command'])}")
    lines.append(f"git: {git_line(project.get('git'))}")
    return lines


def git_line(git: dict[str, Any] | None) -> str:
    """'3f2a1b9c0d1e on main, dirty (2 untracked)', '... clean', '... detached HEAD', or why there is nothing."""
    if not git:
        return "not in a git repository"
    commit = git.get("commit") or ""
    where = f"on {git['branch']}" if git.get("branch") else "detached HEAD"
    head = f"{commit[:12]} {where}" if commit else f"no commit yet {where}"
    subdir = f" in {git['subdir']}/" if git.get("subdir") else ""
    untracked = len(git.get("untracked") or [])
    if git.get("dirty"):
        state = f"dirty ({untracked} untracked)" if untracked else "dirty"
        if git.get("diff"):
            state += "; `tensorfleet status JOB --diff` prints the changes"
    else:
        state = "clean"
    return f"{head}{subdir}, {state}"


def environment_line(env: dict[str, Any]) -> str:
    """'environment 1a2b3c4d5e6f: cache hit (requirements.txt, python 3.11.7)', 'built in 4.2 s (...)', or the
    agent's own Python for env none."""
    if not env.get("key"):
        how = f"the agent's own Python {env['python']}" if env.get("python") else "the agent's own Python"
        return f"environment: none ({how})"
    how = "cache hit" if env.get("cache_hit") else f"built in {env.get('build_seconds', 0):.1f} s"
    about = ", ".join(x for x in (env.get("source") or "", f"python {env['python']}" if env.get("python") else "") if x)
    return f"environment {env['key'][:12]}: {how}{f' ({about})' if about else ''}"


def transfer_line(t: dict[str, Any]) -> str:
    """'dataset: 1.0 GiB from 3 peer(s), 128.0 MiB from the controller, 0 B cached, in 4.2 s' (issue 20)."""
    parts = [f"{human_size(t['bytes_from_peers'])} from {t['peers_used']} peer(s)"] if t["bytes_from_peers"] else []
    parts.append(f"{human_size(t['bytes_from_controller'])} from the controller")
    if t["bytes_from_store"]:
        parts.append(f"{human_size(t['bytes_from_store'])} from the object store")
    parts.append(f"{human_size(t['cached_bytes'])} cached")
    failures = f"; {t['peer_failures']} blob(s) a peer failed to serve" if t["peer_failures"] else ""
    return f"dataset: {', '.join(parts)}" + (f", in {t['seconds']:.1f} s" if t["seconds"] else "") + failures


def show_job(job: dict[str, Any]) -> None:
    name = escape(printable(job["name"]))  # the user's words: no markup, no control characters
    out.print(f"[bold]{job['id']}[/bold] {name}  {_shown_state(job)}  {job['progress']:.0%}")
    if job["error"]:
        out.print(f"  error: {job['error']}", markup=False)
    if job.get("waiting"):
        out.print(f"  waiting: {job['waiting']}", markup=False)
    if job.get("project"):
        for line in project_lines(job["project"]):
            out.print(f"  {line}", markup=False)
    for name, value in sorted(job["metrics"].items()):
        out.print(f"  {name} = {value:.6g}", markup=False)
    for t in job["task_list"]:
        out.print(
            f"  task {t['index']}: {t['state']} on {t['agent'] or '-'} (attempt {t['attempt']})"
            f"{' ' + t['exit_cause'] if t['exit_cause'] else ''}",
            markup=False,
        )
        if t.get("environment"):
            out.print(f"    {environment_line(t['environment'])}", markup=False)
        if t.get("dataset_transfer"):
            out.print(f"    {transfer_line(t['dataset_transfer'])}", markup=False)
    for a in job["artifacts"]:
        attempt = f", attempt {a['attempt']}" if a.get("attempt") else ""
        out.print(
            f"  artifact {printable(a['name'])} ({a['kind']}, {human_size(a['size'])}{attempt}) sha256 {a['sha256']}",
            markup=False,
        )


def _job_action(method: str, verb: str) -> Any:
    def handler(client: Client, args: argparse.Namespace) -> int:
        job = getattr(client, method)(args.job)
        if args.json:
            print_json(summary(job))
        else:
            out.print(f"{verb} {job['id']}: {job['state']}")
        return exit_codes.OK

    return handler


def remove(client: Client, args: argparse.Namespace) -> int:
    """Every job it can; each refusal is said as it comes (USAGE at the end), anything else stops it."""
    deleted, refused = [], False
    for ref in dict.fromkeys(args.jobs):
        try:
            job = client.delete_job(ref)
        except (InvalidRequest, NotFound) as exc:
            print(f"tensorfleet: refused: {exc}", file=sys.stderr)  # as the CLI says any refusal
            refused = True
            continue
        deleted.append(summary(job))
        if not args.json:
            out.print(f"deleted {job['id']} ({escape(str(job['name']))}, {job['state']})")
    if args.json:
        print_json(deleted)
    return exit_codes.USAGE if refused else exit_codes.OK


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
