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


def test_agents_show_each_gpu_s_shares_through_the_wire() -> None:
    from tensorfleet_agent.core.types import GpuInfo, GpuTelemetry, NodeInfo, Telemetry
    from tensorfleet_desktop.cli.agents import gpu_line, gpus_cell
    from tensorfleet_desktop.controller.fleet import AgentRecord
    from tensorfleet_desktop.wire import agent_from_pb, agent_to_pb

    gib = 1 << 30
    gpus = (GpuInfo(0, "A", "GPU-0", 16 * gib), GpuInfo(1, "A", "GPU-1", 16 * gib))
    info = NodeInfo(1, "n" * 20, "box", "host", "Linux", "3.11", "", "1.5", 8, 1 << 34, 1 << 30, gpus, (), 2, 0, "0.1")
    shared = GpuTelemetry(0, 50.0, 9 * gib, 16 * gib, 40.0, 90.0, memory_reserved_bytes=12 * gib, shared_tasks=2)
    whole = GpuTelemetry(1, 99.0, 15 * gib, 16 * gib, 70.0, 300.0, exclusive=True)
    record = AgentRecord("n" * 20, "127.0.0.1:1", "manual", name="box", info=info)
    record.telemetry = Telemetry(1.0, 1.0, 1, 2, 3, (shared, whole), 2, 0, 3)
    agent = agent_from_pb(agent_to_pb(record))
    stats = agent["gpu_stats"]
    assert stats[0]["memory_reserved_bytes"] == 12 * gib and stats[0]["shared_tasks"] == 2 and stats[1]["exclusive"]
    assert gpu_line(stats[0]) == "GPU 0: 9.0 GiB of 16.0 GiB used, 12.0 GiB promised to 2 sharing tasks"
    assert gpu_line(stats[1]) == "GPU 1: 15.0 GiB of 16.0 GiB used, held whole by a task"
    assert gpus_cell(agent) == "2 (2 sharing)"
