"""`tensorfleet serve` starts its local agent before it imports the controller: what it loads up to then, and that
its serve-only parser is the full CLI's `serve` (same flags, same help, same errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tensorfleet_desktop.cli import build_parser

# what the controller needs later, but the agent must not wait for: the cold start runs both side by side
NOT_BEFORE_THE_AGENT = (
    "asyncio",
    "psutil",
    "grpc",
    "rich",
    "zeroconf",
    "cryptography",
    "tensorfleet_desktop.client",
    "yaml",
)


def test_serve_loads_no_asyncio_grpc_rich_or_sdk_before_it_starts_its_local_agent(tmp_path: Path) -> None:
    """What `tensorfleet serve` has imported when it starts its agent (the agent's start is refused here)."""
    code = (
        "import json, sys\n"
        "def hook(event, args):\n"
        "    if event == 'subprocess.Popen' and 'tensorfleet_agent' in ' '.join(map(str, args[1] or ())):\n"
        "        print(json.dumps(sorted(sys.modules)), flush=True)\n"
        "        raise SystemExit(0)\n"
        "sys.addaudithook(hook)\n"
        "from tensorfleet_desktop.cli import main\n"
        "sys.exit(main(['serve', '--port', '0', '--no-mdns', '--data-dir', sys.argv[1]]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout, run.stderr
    loaded = json.loads(run.stdout)
    offenders = [m for m in loaded if m.split(".")[0] in NOT_BEFORE_THE_AGENT or m.startswith(NOT_BEFORE_THE_AGENT)]
    assert not offenders, f"serve loads {offenders} before its local agent starts"
    assert "tensorfleet_desktop.controller.local_agent" in loaded  # the check looked at serve's real imports


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
