"""What each `tensorfleet` command does (argument parsing lives in cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tensorfleet_desktop import cli_artifacts, cli_models
from tensorfleet_desktop.cli_console import console
from tensorfleet_desktop.client import TERMINAL, Client, trial_rows

EXIT_OK, EXIT_JOB_FAILED, EXIT_INPUT, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_CONTROLLER_FULL, EXIT_DATA_LOSS = 4, 5  # the controller cannot save; its stored data is damaged

out = console()


class UsageError(Exception):
    pass


def _kv(items: list[str], flag: str, parse_values: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
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
        out[key.strip()] = value
    return out


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


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _summary(job: dict[str, Any]) -> dict[str, Any]:
    keys = (
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
    out = {k: job[k] for k in keys}
    out["artifacts"] = job.get("artifacts", [])
    return out


def _agent_summary(agent: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "name",
        "address",
        "state",
        "source",
        "paired",
        "slots_total",
        "slots_free",
        "gpus",
        "labels",
        "last_seen",
        "state_since",
        "fingerprint",
        "cluster_id",
        "error",
    )
    # metrics_port: where Prometheus scrapes the agent on its host (0: none; refused services have none)
    return {**{k: agent[k] for k in keys}, "metrics_port": agent.get("metrics_port", 0)}


def write_csv(rows: list[dict[str, Any]]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(["task_index", "step", "name", "value", "wall_time"])
    for r in rows:
        writer.writerow([r["task_index"], r["step"], r["name"], r["value"], r["wall_time"]])


err = console(stderr=True)


def run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return serve(args)
    if args.command == "registry":
        return registry_transfer(args)
    if args.command == "gui":
        return gui(args)
    if args.command == "demo":
        from tensorfleet_desktop.demo import run_demo

        return run_demo(args.data_dir, args.json)
    with Client(args.controller) as client:
        return int(_HANDLERS[args.command](client, args))


# ---- desktop app


def gui(args: argparse.Namespace) -> int:
    """Open the window (desktop extra); without a display or the extra, say what to do instead."""
    import importlib.util

    missing = [m for m in ("PySide6", "pyqtgraph") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"tensorfleet: the desktop app needs {' and '.join(missing)}: pip install 'tensorfleet[desktop]'\n"
            "  (the CLI works without it: tensorfleet --help)",
            file=sys.stderr,
        )
        return EXIT_INPUT
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    )
    if headless:
        print(
            "tensorfleet: no display to open the window on (DISPLAY / WAYLAND_DISPLAY unset);\n"
            "  use the CLI (tensorfleet --help), or set QT_QPA_PLATFORM=offscreen",
            file=sys.stderr,
        )
        return EXIT_INPUT
    from tensorfleet_desktop.ui.app import run as run_gui

    return run_gui(
        args.controller,
        args.data_dir,
        autostart=not args.no_start,
        screenshot=args.screenshot,
    )


# ---- controller


def serve(args: argparse.Namespace) -> int:
    from tensorfleet_agent.discovery.interfaces import parse_interfaces
    from tensorfleet_agent.rpc.server import is_loopback
    from tensorfleet_desktop.controller.app import ControllerApp, ControllerConfig, default_data_dir

    if args.insecure and not is_loopback(args.host):
        raise UsageError(f"--insecure serves plaintext without pairing: only on loopback, not on --host {args.host}")
    for flag, port in (
        ("--metrics-port", args.metrics_port),
        ("--local-agent-metrics-port", args.local_agent_metrics_port),
    ):
        if port is not None and not 0 <= port <= 65535:
            raise UsageError(f"{flag} must be between 0 and 65535 (0: a free port), got {port}")
    from tensorfleet_agent.security.files import unusable
    from tensorfleet_desktop.controller.settings import FileSettings, load_settings

    data_dir = (args.data_dir or default_data_dir()).resolve()
    config_path = args.config or (data_dir / "config.toml")
    try:
        settings = load_settings(config_path) if args.config or config_path.exists() else FileSettings()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except PermissionError as exc:  # another user's data dir, or one this user cannot read
        if args.config:
            raise UsageError(f"cannot read {config_path}: {exc.strerror or exc}") from None
        raise UsageError(str(unusable(data_dir, exc))) from None
    env_store = os.environ.get("TENSORFLEET_MONGODB_URI", "")
    _guard_secrets(args.store, args.store or env_store or settings.store_uri, settings, config_path)
    try:
        config = ControllerConfig(
            data_dir=data_dir,
            host=args.host,
            port=args.port,
            interfaces=parse_interfaces(args.interfaces),
            mdns=not args.no_mdns,
            local_agent=not args.no_local_agent,
            local_agent_slots=args.local_agent_slots,
            local_agent_metrics_port=args.local_agent_metrics_port,
            agents=args.agent,
            store_uri=args.store or env_store or settings.store_uri,
            blobs_uri=args.blobs or settings.blobs_uri,
            s3_credentials=(settings.s3_access_key, settings.s3_secret_key),
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
            prometheus_sd=args.prometheus_sd,
            telemetry_period=args.telemetry_period,
            gang_reserve_after=args.gang_reserve_after,
            keep_checkpoints=args.keep_checkpoints,
            ready_file=args.ready_file,
            insecure=args.insecure,
            cluster_token=os.environ.get("TENSORFLEET_CLUSTER_TOKEN", ""),
            client_token=os.environ.get("TENSORFLEET_CONTROLLER_TOKEN", ""),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    async def main() -> int:
        app = ControllerApp(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, app.request_stop)
        try:
            await app.start()
        except ValueError as exc:  # configuration: a bad URI, an unreachable store, a missing driver
            err.print(f"tensorfleet serve: cannot start: {exc}", soft_wrap=True, markup=False)
            return EXIT_INPUT
        except (RuntimeError, OSError) as exc:  # the data dir in use, a port taken
            err.print(f"tensorfleet serve: cannot start: {exc}", soft_wrap=True, markup=False)
            return EXIT_JOB_FAILED
        err.print(f"TensorFleet controller on {app.address} (data in {config.data_dir}); Ctrl-C stops it")
        await app.stopped.wait()
        await app.stop()
        return EXIT_OK

    return asyncio.run(main())


def _guard_secrets(flag_store: str, store: str, settings: Any, config_path: Path) -> None:
    """Mask the store password and S3 keys in every log line; warn when the password came on the command line,
    where every user of this machine can read it (`ps`)."""
    from tensorfleet_agent.security.secrets import register
    from tensorfleet_desktop.controller.store.base import uri_password

    if uri_password(flag_store):
        err.print(
            f"tensorfleet serve: warning: the password in --store shows in `ps` to every user of this machine; "
            f"put the URI under [store] in {config_path} (chmod 600) or in TENSORFLEET_MONGODB_URI",
            soft_wrap=True,
            markup=False,
        )
    for secret in (uri_password(store), settings.s3_access_key, settings.s3_secret_key):
        register(secret)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        register(os.environ.get(name, ""))


def shutdown(client: Client, args: argparse.Namespace) -> int:
    client.shutdown()
    err.print(f"asked the controller at {client.address} to stop")
    return EXIT_OK


# ---- jobs


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
            _print_json(_summary(job))
        else:
            out.print(f"submitted {job['id']} ({job['name']}): {job['state']}")
        return EXIT_OK
    err.print(f"submitted {job['id']} ({job['name']})")
    final = follow(client, job["id"])
    if args.json:
        _print_json(_summary(final))
    else:
        show_job(final)
    return EXIT_OK if final["state"] == "SUCCEEDED" else EXIT_JOB_FAILED


def follow(client: Client, job_id: str) -> dict[str, Any]:
    """A progress bar on stderr until the job ends."""
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
        after = 0
        while True:
            for event in client.watch(job_id, after):
                after = event["seq"]
                if event["kind"] == "job_state" and "job" in event:
                    bar.update(task, completed=event["job"]["progress"], state=event["job"]["state"])
                elif event["kind"] == "progress":
                    bar.update(task, advance=0)
            job = client.job(job_id)
            bar.update(task, completed=job["progress"], state=job["state"])
            if job["state"] in TERMINAL:
                return job


def jobs(client: Client, args: argparse.Namespace) -> int:
    items = client.jobs(tuple(s.upper() for s in args.state), args.limit)
    if args.json:
        _print_json([_summary(j) for j in items])
        return EXIT_OK
    table = Table("ID", "NAME", "STATE", "PROGRESS", "TASKS", "METRIC", "CREATED")
    for j in items:
        metric = _best_metric(j)
        table.add_row(
            j["id"],
            j["name"],
            j["state"],
            f"{j['progress']:.0%}",
            f"{j['tasks']['completed']}/{j['tasks']['total']}",
            metric,
            _when(j["created_at"]),
        )
    out.print(table)
    return EXIT_OK


def _best_metric(job: dict[str, Any]) -> str:
    for name in ("test_accuracy", "accuracy", "loss"):
        if name in job["metrics"]:
            return f"{name}={job['metrics'][name]:.4f}"
    return ""


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def status(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.job)
    if args.json:
        _print_json(_summary(job))
    else:
        show_job(job)
    return EXIT_OK


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
            _print_json(_summary(job))
        else:
            out.print(f"{verb} {job['id']}: {job['state']}")
        return EXIT_OK

    return handler


def resubmit(client: Client, args: argparse.Namespace) -> int:
    job = client.resubmit(args.job, _kv(args.param, "--param"))
    if args.json:
        _print_json(_summary(job))
    else:
        out.print(f"resubmitted {args.job} as {job['id']}: {job['state']}")
    return EXIT_OK


def watch(client: Client, args: argparse.Namespace) -> int:
    events = []
    after = 0
    while True:
        for event in client.watch(args.job, after):
            after = event["seq"]
            if args.json:
                events.append({k: v for k, v in event.items() if k != "job"})
                continue
            kind = event["kind"]
            if kind == "metric":
                out.print(f"[{event['task_index']}] step {event['step']}: {event['name']} = {event['value']:.6g}")
            elif kind == "log":
                out.print(f"[{event['task_index']}] {event['message']}", markup=False)
            elif kind in ("job_state", "task_state"):
                who = "job" if kind == "job_state" else f"task {event['task_index']}"
                out.print(f"{who}: {event['state']} {event['message']}", markup=False)
        job = client.job(args.job)
        if job["state"] in TERMINAL:
            break
    if args.json:
        _print_json(events)
    return EXIT_OK if job["state"] == "SUCCEEDED" else EXIT_JOB_FAILED


def trials(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.job)
    sweep = job["spec"].get("sweep")
    if not sweep:
        raise UsageError(f"job {job['id']} is not a sweep")
    metric = sweep["metric"]
    rows = trial_rows(job)
    if args.json:
        _print_json(
            {
                "job": job["id"],
                "metric": metric,
                "direction": sweep["direction"],
                "best_trial": job["metrics"].get("best_trial"),
                "trials": rows,
            }
        )
        return EXIT_OK
    table = Table("TRIAL", "PARAMS", metric.upper(), "STATE", "DURATION", "AGENT")
    for r in rows:
        score = f"{r['score']:.4f}" if r["score"] is not None else "-"
        took = f"{r['duration']:.1f}s" if r["duration"] is not None else "-"
        table.add_row(str(r["trial"]), json.dumps(r["params"]), score, r["state"], took, r["agent"])
    out.print(table)
    return EXIT_OK


def metrics(client: Client, args: argparse.Namespace) -> int:
    rows = client.metrics(args.job, tuple(args.name))
    if args.json:
        _print_json(rows)
    elif args.csv:
        write_csv(rows)
    else:
        table = Table("TASK", "STEP", "NAME", "VALUE")
        for r in rows:
            table.add_row(str(r["task_index"]), str(r["step"]), r["name"], f"{r['value']:.6g}")
        out.print(table)
    return EXIT_OK


def logs(client: Client, args: argparse.Namespace) -> int:
    rows = client.logs(args.job, args.task)
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            sys.stdout.write(f"[{r['task_index']}] {r['line']}\n")
    return EXIT_OK


# ---- agents and workloads


def agents(client: Client, args: argparse.Namespace) -> int:
    action = args.agents_command
    if action is None:
        everything = client.agents(all=True)
        items = everything if args.all else [a for a in everything if "refused" not in a]
        if args.json:
            rows = [_agent_summary(a) for a in items]
            if args.all:  # every row says whether it is refused, and why
                rows = [{**row, "refused": a.get("refused", "")} for row, a in zip(rows, items, strict=True)]
            _print_json(rows)
            return EXIT_OK
        table = Table("ID", "NAME", "ADDRESS", "STATE", "PAIRED", "SOURCE", "SLOTS", "GPUS", "CPU", "FINGERPRINT")
        for a in items:
            table.add_row(
                a["id"][:12],
                escape(a["name"]),
                escape(a["address"]),
                a["state"],
                "-" if "refused" in a else "yes" if a["paired"] else "NO",
                a["source"],
                f"{a['slots_free']}/{a['slots_total']}",
                str(a["gpus"]),
                f"{a.get('cpu_percent', 0):.0f}%",
                a["fingerprint"][:16],
            )
        out.print(table)
        for a in items:
            if a["error"]:
                err.print(f"[yellow]{escape(a['name'] or a['id'][:12])}: {escape(a['error'])}[/yellow]", markup=True)
        hidden = len(everything) - len(items)
        if hidden:
            plural = "s" if hidden > 1 else ""
            err.print(f"{hidden} refused service{plural}: see `tensorfleet agents --all`", markup=False)
        return EXIT_OK
    if action == "add":
        agent = client.add_agent(args.address)
    elif action == "pair":
        agent = client.pair_agent(args.agent, args.token, args.force)
    elif action == "drain":
        agent = client.drain_agent(args.agent)
    else:
        agent = client.remove_agent(args.agent)
    if args.json:
        _print_json(_agent_summary(agent))
    else:
        out.print(f"{action}: {agent['name']} ({agent['id']}) at {agent['address']}: {agent['state']}")
    return EXIT_OK


def datasets(client: Client, args: argparse.Namespace) -> int:
    if args.datasets_command == "upload":
        entry = client.upload_dataset(args.file, args.name)
        if args.json:
            _print_json(entry)
        else:
            out.print(f"uploaded {entry['name']}: {entry['rows']} rows, columns {', '.join(entry['columns'])}")
        return EXIT_OK
    if args.datasets_command == "preview":
        preview = client.preview_dataset(args.name, args.rows)
        if args.json:
            _print_json(preview)
            return EXIT_OK
        table = Table(*preview["columns"], title=f"{args.name}: {preview['dataset']['rows']} rows")
        for row in preview["rows"]:
            table.add_row(*row)
        out.print(table)
        return EXIT_OK
    if args.datasets_command == "delete":
        gone = client.delete_dataset(args.name)
        if args.json:
            _print_json(gone)
        else:
            out.print(f"deleted dataset {gone['name']} ({gone['sha256'][:16]})")
        return EXIT_OK
    if args.datasets_command != "list":
        raise UsageError("datasets needs an action: upload FILE | list | preview NAME | delete NAME")
    items = client.datasets()
    if args.json:
        _print_json(items)
        return EXIT_OK
    table = Table("NAME", "ROWS", "COLUMNS", "SIZE", "SHA256")
    for d in items:
        table.add_row(d["name"], str(d["rows"]), ", ".join(d["columns"]), str(d["size"]), d["sha256"][:16])
    out.print(table)
    return EXIT_OK


def registry_transfer(args: argparse.Namespace) -> int:
    from tensorfleet_desktop.controller.app import default_data_dir, resolve_uris
    from tensorfleet_desktop.registry_transfer import TransferError, export_registry, import_registry

    data_dir = (args.data_dir or default_data_dir()).resolve()
    store, blobs = resolve_uris(data_dir, args.store, args.blobs)
    run = export_registry if args.registry_command == "export" else import_registry
    try:
        result = asyncio.run(run(store, blobs, data_dir, args.dir))
    except (TransferError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        _print_json(result)
    else:
        done = "exported" if args.registry_command == "export" else "imported"
        out.print(f"{done}: " + ", ".join(f"{v} {k}" for k, v in result.items()))
    return EXIT_OK


def gc(client: Client, args: argparse.Namespace) -> int:
    freed = client.collect_garbage(args.grace)
    if args.json:
        _print_json(freed)
    else:
        out.print(
            f"deleted {freed['deleted']} blob(s), removed {freed['partials']} partial transfer file(s), "
            f"freed {freed['freed_bytes'] / 2**20:.1f} MiB; {freed['kept']} kept"
        )
    return EXIT_OK


def algorithms(client: Client, args: argparse.Namespace) -> int:
    items = client.workloads()
    if args.json:
        _print_json(items)
        return EXIT_OK
    for w in items:
        out.print(f"[bold]{w['name']}[/bold] ({w['category']}): {w['summary']}")
        if w["datasets"]:
            out.print(f"  datasets: {', '.join(w['datasets'])}")
        for p in w["params"]:
            bounds = f" one of {p['choices']}" if p["choices"] else ""
            out.print(f"  {p['name']}: {p['type']} = {json.dumps(p['default'])}{bounds}  {p['help']}")
    return EXIT_OK


_HANDLERS = {
    "shutdown": shutdown,
    "submit": submit,
    "jobs": jobs,
    "status": status,
    "cancel": _job_action("cancel", "cancelled"),
    "pause": _job_action("pause", "paused"),
    "resume": _job_action("resume", "resumed"),
    "retry": _job_action("retry", "retrying"),
    "resubmit": resubmit,
    "watch": watch,
    "metrics": metrics,
    "trials": trials,
    "models": cli_models.models,
    "artifacts": cli_artifacts.artifacts,
    "gc": gc,
    "logs": logs,
    "agents": agents,
    "algorithms": algorithms,
    "datasets": datasets,
}

__all__ = ["EXIT_INPUT", "run"]
