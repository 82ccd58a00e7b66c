"""`tensorfleet serve` starts its local agent before it imports the controller: what it loads up to then, and that
its serve-only parser is the full CLI's `serve` (same flags, same help, same errors)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tensorfleet_desktop.cli import build_parser

# what the controller needs later, but the agent must not wait for: the cold start runs both side by side
NOT_BEFORE_THE_AGENT = ("grpc", "rich", "zeroconf", "cryptography", "tensorfleet_desktop.client", "yaml")


def test_serve_loads_no_grpc_rich_or_sdk_before_it_starts_its_local_agent() -> None:
    code = (
        "import json, sys\n"
        "from tensorfleet_desktop.cli import build_parser\n"
        "from tensorfleet_desktop.controller import local_agent, settings\n"
        "from tensorfleet_agent.discovery import interfaces\n"
        "build_parser(serve_only=True).parse_args(['serve', '--port', '0'])\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    offenders = [m for m in loaded if m.split(".")[0] in NOT_BEFORE_THE_AGENT or m.startswith(NOT_BEFORE_THE_AGENT)]
    assert not offenders, f"serve loads {offenders} before its local agent starts"
    assert "tensorfleet_desktop.controller.local_agent" in loaded  # the check looked at a real import


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--help"],
        ["serve", "--port", "many"],
        ["serve", "--wake-timeout", "0"],
        ["serve", "--no-such-flag"],
        ["serve", "--port", "1", "extra"],
    ],
)
def test_the_serve_only_parser_says_what_the_full_one_says(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    said = []
    for parser in (build_parser(), build_parser(serve_only=True)):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        captured = capsys.readouterr()
        said.append((exit_.value.code, captured.out, captured.err))
    assert said[0] == said[1]
    assert said[0][1] or said[0][2]  # it did say something


def test_the_serve_only_parser_gives_serve_the_same_arguments() -> None:
    argv = ["serve", "--port", "0", "--local-agent-slots", "2", "--agent", "10.0.0.2:50051", "--no-mdns"]
    assert vars(build_parser(serve_only=True).parse_args(argv)) == vars(build_parser().parse_args(argv))
