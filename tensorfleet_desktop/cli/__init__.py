"""`tensorfleet`: the command line. One module per command group; this one assembles the parser, runs the command
and turns each error into its exit code (`exit_codes`). With --json, stdout holds exactly one JSON document.

`tensorfleet serve` builds only its own parser and imports no other command (nor the client SDK, nor rich): it
starts its local agent first thing, so the agent's start-up overlaps the controller's imports (a cold start)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.version import AGENT_VERSION
from tensorfleet_desktop.cli import exit_codes, serve
from tensorfleet_desktop.cli.exit_codes import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(exit_codes.USAGE)


def build_parser(serve_only: bool = False) -> argparse.ArgumentParser:
    """Each command sets `run` (takes the arguments) or `call` (takes a connected Client and the arguments).
    `serve_only`: the `serve` command alone (the first one), for `tensorfleet serve ...`."""
    p = _Parser(prog="tensorfleet", description="TensorFleet: train ML models on the machines you already have.")
    p.add_argument("--version", action="version", version=f"tensorfleet {AGENT_VERSION}")
    p.add_argument(
        "--controller",
        help="controller address HOST:PORT (default: $TENSORFLEET_CONTROLLER or 127.0.0.1:50050)",
    )
    p.add_argument("--log-level", default="WARNING")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    serve.add_serve_parser(sub)
    if serve_only:
        return p
    from tensorfleet_desktop.cli import (
        agents,
        artifacts,
        datasets,
        demo,
        desk_tray,
        gui,
        jobs,
        models,
        pools,
        quota,
        registry,
        team,
    )

    gui.add_parser(sub)
    serve.add_shutdown_parser(sub)
    jobs.add_parsers(sub)
    agents.add_parsers(sub)
    pools.add_parsers(sub)
    team.add_parsers(sub)
    quota.add_parsers(sub)
    datasets.add_parsers(sub)
    models.add_parser(sub)
    artifacts.add_parser(sub)
    serve.add_gc_parser(sub)
    registry.add_parser(sub)
    agents.add_algorithms_parser(sub)
    demo.add_parser(sub)
    desk_tray.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # a reader that left (`| head`) shows here, not as an error at exit
        return code
    except BrokenPipeError:  # as Python's docs recommend: nothing more goes to the closed pipe, no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return exit_codes.CLOSED_PIPE  # not JOB_FAILED: the job may well have succeeded


def _main(argv: list[str] | None) -> int:
    parser = build_parser(serve_only=(sys.argv[1:] if argv is None else argv)[:1] == ["serve"])
    args = parser.parse_args(argv)
    from tensorfleet_agent.logging_setup import configure_logging

    configure_logging(args.log_level if args.command != "serve" else "INFO")
    if args.command is None:  # no command: the window, with the gui command's defaults
        args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "gui"])
    try:
        if "run" in args:
            return int(args.run(args))
        from tensorfleet_desktop.client import Client

        with Client(args.controller) as client:
            return int(args.call(client, args))
    except (UsageError, ValidationError) as exc:
        print(f"tensorfleet: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    except KeyboardInterrupt:
        return exit_codes.INTERRUPTED
    except Exception as exc:  # what the SDK and projects raise: their classes imported only then
        code = _exit_code(exc)
        if code is None:
            raise
        return code


def _exit_code(exc: Exception) -> int | None:
    """The exit code of an error a command raised, its message on stderr; None for any other error."""
    from tensorfleet_desktop.client import (
        ControllerFull,
        ControllerUnreachable,
        DataLoss,
        InvalidRequest,
        NotFound,
        TensorFleetError,
    )
    from tensorfleet_desktop.project import ProjectError

    if isinstance(exc, ProjectError):  # the folder cannot be sent as it is: the message says what to change
        print(f"tensorfleet: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    if isinstance(exc, (InvalidRequest, NotFound)):
        print(f"tensorfleet: refused: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    if isinstance(exc, ControllerUnreachable):
        print(
            f"tensorfleet: {exc}\n  start one with `tensorfleet serve`, or point --controller / "
            f"TENSORFLEET_CONTROLLER at a running one",
            file=sys.stderr,
        )
        return exit_codes.UNREACHABLE
    if isinstance(exc, ControllerFull):
        print(f"tensorfleet: the controller cannot save: {exc}\n  free space there, then try again", file=sys.stderr)
        return exit_codes.CONTROLLER_FULL
    if isinstance(exc, DataLoss):
        print(f"tensorfleet: stored data damaged: {exc}", file=sys.stderr)
        return exit_codes.DATA_LOSS
    if isinstance(exc, TensorFleetError):
        print(f"tensorfleet: error: {exc}", file=sys.stderr)
        return exit_codes.JOB_FAILED
    return None
