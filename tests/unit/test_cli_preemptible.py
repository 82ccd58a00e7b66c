"""`tensorfleet submit --preemptible/--no-preemptible --allow-restart`: the spec keys the controller's parser reads
(left out when not given, so the default — preemptible below priority 0 — stays the parser's)."""

from __future__ import annotations

from typing import Any

from tensorfleet_desktop.cli import build_parser
from tensorfleet_desktop.cli.jobs import spec_from_args
from tensorfleet_desktop.controller.jobspec import parse_job_spec


def spec(*argv: str) -> dict[str, Any]:
    return spec_from_args(build_parser().parse_args(["submit", "-a", "noop", *argv]))


def test_the_flags_become_spec_keys() -> None:
    assert spec("--preemptible")["preemptible"] is True
    assert spec("--no-preemptible", "--priority", "-3")["preemptible"] is False
    assert spec("--preemptible", "--allow-restart")["allow_restart"] is True


def test_without_the_flags_the_parser_decides() -> None:
    body = spec("--priority", "-1")
    assert "preemptible" not in body and "allow_restart" not in body
    parsed = parse_job_spec(body)
    assert parsed.preemptible and not parsed.allow_restart
    assert not parse_job_spec(spec()).preemptible
    assert not parse_job_spec(spec("--no-preemptible", "--priority", "-1")).preemptible
