"""`tensorfleet`: the command line. Exit codes: 0 ok, 1 the waited-for job did not succeed,
2 refused input, 3 controller unreachable, 4 the controller cannot save (data dir full), 5 stored data
damaged, 141 the reader of stdout left (a closed pipe, as `yes | head` gives: 128 + SIGPIPE). With --json, stdout
holds exactly one JSON document."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.version import AGENT_VERSION

EXIT_INPUT = 2
EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE: what a shell reports for a writer whose reader left (`yes | head`)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tensorfleet", description="TensorFleet: train ML models on the machines you already have.")
    p.add_argument("--version", action="version", version=f"tensorfleet {AGENT_VERSION}")
    p.add_argument(
        "--controller",
        help="controller address HOST:PORT (default: $TENSORFLEET_CONTROLLER or 127.0.0.1:50050)",
    )
    p.add_argument("--log-level", default="WARNING")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("serve", help="run the controller (and a local agent) in the foreground")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=50050)
    s.add_argument("--data-dir", type=Path)
    s.add_argument("--interfaces", help="mDNS interfaces (default: $TENSORFLEET_MDNS_INTERFACES or all)")
    s.add_argument("--no-mdns", action="store_true", help="do not browse for agents")
    s.add_argument("--no-local-agent", action="store_true")
    s.add_argument("--local-agent-slots", type=int, help="slots of the local agent (default: its own default)")
    s.add_argument(
        "--local-agent-metrics-port",
        type=int,
        metavar="P",
        help="the local agent serves Prometheus /metrics on 127.0.0.1:P (0: a free port; see `agents --json`)",
    )
    s.add_argument("--agent", action="append", default=[], metavar="HOST:PORT", help="a manual agent (repeatable)")
    s.add_argument(
        "--store",
        default="",
        help="sqlite:///path (default: in the data dir) or mongodb://user@host:port/db; a password here shows in "
        "`ps`: put a URI with a password under [store] in the config file or in TENSORFLEET_MONGODB_URI",
    )
    s.add_argument(
        "--blobs",
        default="",
        help="file:///path (default: in the data dir) or s3://BUCKET?endpoint=HOST:PORT&secure=false "
        "(credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
    )
    s.add_argument("--config", type=Path, help="TOML file with [store] and [blobs] (default: DATA_DIR/config.toml)")
    s.add_argument("--keep-checkpoints", type=int, default=3, help="latest checkpoints kept per job (default: 3)")
    s.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    s.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address /metrics listens on (default: 127.0.0.1; 0.0.0.0 for a Prometheus on another machine)",
    )
    s.add_argument(
        "--prometheus-sd",
        type=Path,
        help="file_sd targets file listing this controller and the agents serving /metrics "
        "(default: DATA_DIR/prometheus/targets.json)",
    )
    s.add_argument("--telemetry-period", type=float, default=1.0)
    s.add_argument(
        "--gang-reserve-after",
        type=float,
        default=300.0,
        help="seconds a waiting multi-rank job lets smaller jobs backfill before reserving slots",
    )
    s.add_argument(
        "--insecure", action="store_true", help="plaintext to agents without pairing (loopback development only)"
    )
    s.add_argument("--ready-file", type=Path, help=argparse.SUPPRESS)

    s = sub.add_parser("gui", help="open the desktop app (the default when no command is given)")
    s.add_argument(
        "--controller",
        default=argparse.SUPPRESS,  # `tensorfleet --controller X gui` keeps X
        help="controller address HOST:PORT (default: $TENSORFLEET_CONTROLLER, Settings, or 127.0.0.1:50050; "
        "the app starts a controller only at 127.0.0.1:50050)",
    )
    s.add_argument("--data-dir", type=Path, help="data dir of the controller the app starts when none answers")
    s.add_argument("--no-start", action="store_true", help="only connect; never start a controller")
    s.add_argument("--screenshot", type=Path, help=argparse.SUPPRESS)  # smoke tests of packaged builds

    sub.add_parser("shutdown", help="stop the controller (and its local agent)")

    s = sub.add_parser("submit", help="submit a job from flags or a YAML/JSON job file")
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
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("jobs", help="list jobs")
    s.add_argument("--state", action="append", default=[])
    s.add_argument("--limit", type=int, default=0)
    s.add_argument("--json", action="store_true")
    for name, text in (
        ("status", "show a job"),
        ("cancel", "cancel a job"),
        ("pause", "pause a job"),
        ("resume", "resume a paused job"),
        ("retry", "retry a failed or cancelled job"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("job")
        s.add_argument("--json", action="store_true")
    s = sub.add_parser("resubmit", help="submit a copy of a job, with changed hyperparameters")
    s.add_argument("job")
    s.add_argument("--param", "-p", action="append", default=[], metavar="K=V")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("watch", help="follow a job's metrics and logs live")
    s.add_argument("job")
    s.add_argument("--json", action="store_true", help="print every event as one JSON array when the job ends")
    s = sub.add_parser("trials", help="a sweep's trials: parameters, score, state, duration")
    s.add_argument("job")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("metrics", help="a job's metric series")
    s.add_argument("job")
    s.add_argument("--name", action="append", default=[])
    s.add_argument("--csv", action="store_true")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("logs", help="a job's log lines")
    s.add_argument("job")
    s.add_argument("--task", type=int)
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("agents", help="list agents; add, drain or remove one")
    s.add_argument("--json", action="store_true")
    s.add_argument("--all", action="store_true", help="also list the services this controller refuses, and why")
    asub = s.add_subparsers(dest="agents_command", metavar="ACTION", parser_class=_Parser)
    a = asub.add_parser("add", help="add an agent by HOST:PORT")
    a.add_argument("address")
    a.add_argument("--json", action="store_true")
    a = asub.add_parser("pair", help="pair with an agent using the join token it printed")
    a.add_argument("agent", help="id, id prefix or name")
    a.add_argument("--token", required=True, help="join token (`tensorfleet-agent token` prints a new one)")
    a.add_argument("--force", action="store_true", help="accept a changed agent certificate (deliberate re-pair)")
    a.add_argument("--json", action="store_true")
    for name in ("drain", "rm"):
        a = asub.add_parser(name, help=f"{name} an agent by id or name")
        a.add_argument("agent")
        a.add_argument("--json", action="store_true")

    s = sub.add_parser("datasets", help="upload and list your datasets (CSV or Parquet)")
    dsub = s.add_subparsers(dest="datasets_command", metavar="ACTION", parser_class=_Parser)
    d = dsub.add_parser("upload", help="upload a CSV or Parquet file once; jobs name it (--dataset NAME --target COL)")
    d.add_argument("file", type=Path)
    d.add_argument("--name")
    d.add_argument("--json", action="store_true")
    d = dsub.add_parser("list", help="the uploaded datasets")
    d.add_argument("--json", action="store_true")
    d = dsub.add_parser("preview", help="the first rows of a dataset")
    d.add_argument("name")
    d.add_argument("--rows", type=int, default=10)
    d.add_argument("--json", action="store_true")
    d = dsub.add_parser("delete", help="forget a dataset (refused while a job or model refers to it)")
    d.add_argument("name")
    d.add_argument("--json", action="store_true")
    from tensorfleet_desktop import cli_models

    cli_models.add_parser(sub, _Parser)
    from tensorfleet_desktop import cli_artifacts

    cli_artifacts.add_parser(sub, _Parser)
    s = sub.add_parser(
        "gc", help="delete blobs nothing refers to any more (deleted versions, datasets, old checkpoints)"
    )
    s.add_argument(
        "--grace", type=float, default=600.0, help="spare blobs younger than this many seconds (default 600)"
    )
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("registry", help="export or import the model registry (runs on the store directly)")
    rsub = s.add_subparsers(dest="registry_command", metavar="export|import", parser_class=_Parser, required=True)
    for name, text in (("export", "write every version, alias and dataset to DIR"), ("import", "read DIR back")):
        r = rsub.add_parser(name, help=text)
        r.add_argument("dir", type=Path)
        r.add_argument("--data-dir", type=Path, help="the controller's data dir (default: the usual one)")
        r.add_argument("--store", default="", help="store URI (default: the data dir's, or TENSORFLEET_MONGODB_URI)")
        r.add_argument("--blobs", default="", help="blob store URI (default: the data dir's)")
        r.add_argument("--json", action="store_true")
    s = sub.add_parser("algorithms", help="the workloads and their parameters")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("demo", help="a throw-away cluster on this machine running the demo jobs")
    s.add_argument("--data-dir", type=Path)
    s.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # a reader that left (`| head`) shows here, not as an error at exit
        return code
    except BrokenPipeError:  # as Python's docs recommend: nothing more goes to the closed pipe, no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE  # not 1: that says the waited-for job did not succeed


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from tensorfleet_agent.logging_setup import configure_logging

    configure_logging(args.log_level if args.command != "serve" else "INFO")
    if args.command is None:  # no command: the window, with the gui command's defaults
        args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "gui"])
    from tensorfleet_desktop import cli_commands
    from tensorfleet_desktop.cli_commands import (
        EXIT_CONTROLLER_FULL,
        EXIT_DATA_LOSS,
        EXIT_JOB_FAILED,
        EXIT_UNREACHABLE,
        UsageError,
    )
    from tensorfleet_desktop.client import (
        ControllerFull,
        ControllerUnreachable,
        DataLoss,
        InvalidRequest,
        NotFound,
        TensorFleetError,
    )

    try:
        return cli_commands.run(args)
    except (UsageError, ValidationError) as exc:
        print(f"tensorfleet: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except (InvalidRequest, NotFound) as exc:
        print(f"tensorfleet: refused: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except ControllerUnreachable as exc:
        print(
            f"tensorfleet: {exc}\n  start one with `tensorfleet serve`, or point --controller / "
            f"TENSORFLEET_CONTROLLER at a running one",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    except ControllerFull as exc:
        print(f"tensorfleet: the controller cannot save: {exc}\n  free space there, then try again", file=sys.stderr)
        return EXIT_CONTROLLER_FULL
    except DataLoss as exc:
        print(f"tensorfleet: stored data damaged: {exc}", file=sys.stderr)
        return EXIT_DATA_LOSS
    except TensorFleetError as exc:
        print(f"tensorfleet: error: {exc}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
