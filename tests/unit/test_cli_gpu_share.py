"""`tensorfleet submit --gpu-memory 6GiB` and `--gpus 0.5`: what they become in the job spec, and the controller's
parser reading them (gpus 1 and a share)."""

from __future__ import annotations

import pytest

from tensorfleet_desktop.cli import build_parser
from tensorfleet_desktop.cli.jobs import spec_from_args
from tensorfleet_desktop.controller.jobspec import JobSpecError, parse_job_spec


def spec(*argv: str) -> dict[str, object]:
    return spec_from_args(build_parser().parse_args(["submit", "-a", "mlp", "-d", "iris", *argv]))


def test_gpu_memory_and_fractions_reach_the_spec() -> None:
    body = spec("--gpu-memory", "6GiB")
    assert body["gpu_memory"] == "6GiB"
    parsed = parse_job_spec(body)
    assert (parsed.gpus, parsed.gpu_memory, parsed.gpu_fraction) == (1, 6 << 30, 0.0)
    body = spec("--gpus", "0.5")
    assert body["gpus"] == 0.5
    parsed = parse_job_spec(body)
    assert (parsed.gpus, parsed.gpu_fraction) == (1, 0.5)
    assert spec("--gpus", "2")["gpus"] == 2 and isinstance(spec("--gpus", "2")["gpus"], int)


def test_bad_values_are_refused_with_their_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        spec("--gpus", "half")
    assert "a number of GPUs (2) or a share of one (0.5), not 'half'" in capsys.readouterr().err
    with pytest.raises(JobSpecError, match="gpu_memory"):
        parse_job_spec(spec("--gpu-memory", "lots"))
    with pytest.raises(JobSpecError, match="gpus"):
        parse_job_spec(spec("--gpus", "2", "--gpu-memory", "6GiB"))
