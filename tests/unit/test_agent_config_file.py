"""The agent's config file: a [desk] section a workstation's owner keeps across restarts, flags winning over it,
and every mistake refused with the file and the key named (a typo must never lend a machine by surprise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tensorfleet_agent.__main__ import build_parser
from tensorfleet_agent.config_file import load_config
from tensorfleet_agent.desk.cli import desk_config
from tensorfleet_agent.desk.monitor import DeskConfig


def _desk(tmp_path: Path, toml: str, *flags: str) -> DeskConfig | None:
    (tmp_path / "agent.toml").write_text(toml, encoding="utf-8")
    args = build_parser().parse_args(["--data-dir", str(tmp_path), *flags])
    return desk_config(args, load_config(args.config, tmp_path).get("desk"))


def test_the_desk_section_turns_desk_mode_on_and_flags_win(tmp_path: Path) -> None:
    toml = '[desk]\nenabled = true\nidle = 600\nhours = "19:00-08:00"\ngpu_memory = "1GiB"\ncpu_percent = 40\n'
    desk = _desk(tmp_path, toml)
    assert desk is not None
    assert desk.idle_seconds == 600 and desk.cpu_percent == 40 and desk.gpu_memory_bytes == 1 << 30
    assert desk.hours is not None
    flagged = _desk(tmp_path, toml, "--desk-idle", "90s", "--desk-cpu-percent", "10")
    assert flagged is not None
    assert flagged.idle_seconds == 90 and flagged.cpu_percent == 10
    assert flagged.gpu_memory_bytes == 1 << 30  # from the file still


def test_without_a_file_or_enabled_the_flags_alone_decide(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--data-dir", str(tmp_path)])
    assert load_config(None, tmp_path) == {} and desk_config(args, None) is None
    on = desk_config(build_parser().parse_args(["--desk", "--desk-idle", "5m"]), None)
    assert on is not None and on.idle_seconds == 300 and on.cpu_percent == 25.0
    assert _desk(tmp_path, '[desk]\nidle = "5m"\n') is None  # settings kept, lending off until enabled


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[desk]\nidel = 600\n", "[desk] has no setting 'idel'"),
        ("[desks]\nenabled = true\n", "unknown section [desks]"),
        ('[desk]\nenabled = "yes"\n', "[desk] enabled (or --desk) must be true or false"),
        (
            '[desk]\nenabled = true\ncpu_percent = "lots"\n',
            "[desk] cpu_percent (or --desk-cpu-percent) must be a number",
        ),
        ("[desk]\nenabled = true\ncpu_percent = 150\n", "must be between 0 and 100, got 150"),
        ('[desk]\nenabled = true\nidle = "soon"\n', "--desk-idle must be a duration"),
        ("[desk\n", "is not valid TOML"),
    ],
)
def test_mistakes_in_the_file_are_refused_by_name(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        _desk(tmp_path, toml)
    assert message in str(err.value)


def test_the_agent_refuses_to_start_on_a_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "office.toml"
    bad.write_text("[desk]\nenabled = true\nhours = 7\n", encoding="utf-8")
    for config, message in (
        (bad, "[desk] hours (or --desk-hours) must be a string"),
        (tmp_path / "nope.toml", "no such file"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "tensorfleet_agent", "--data-dir", str(tmp_path / "d"), "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and message in done.stderr, done.stderr
