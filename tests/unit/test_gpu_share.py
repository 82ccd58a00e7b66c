"""gpu_share: what a task counts for (quotas, usage) and the bytes it is promised on a GPU."""

from __future__ import annotations

from tensorfleet_desktop.controller.gpu_share import (
    UNKNOWN_SHARE,
    gpu_amount,
    memory_fraction,
    share_bytes,
    shares_gpu,
)
from tensorfleet_desktop.controller.jobspec import parse_job_spec

GIB = 1 << 30


def test_whole_gpus_count_as_gpus() -> None:
    assert gpu_amount({"gpus": 2}) == 2.0
    assert gpu_amount({"gpus": 0}) == 0.0
    assert gpu_amount({}) == 0.0
    assert not shares_gpu({"gpus": 2})
    assert share_bytes({"gpus": 1}, 16 * GIB) == 0


def test_fraction_counts_as_its_share() -> None:
    spec = {"gpus": 1, "gpu_fraction": 0.25}
    assert shares_gpu(spec)
    assert gpu_amount(spec) == 0.25
    assert gpu_amount(spec, 16 * GIB) == 0.25
    assert share_bytes(spec, 16 * GIB) == 4 * GIB
    assert share_bytes(spec, 0) == 0


def test_memory_counts_against_the_gpu_total_or_half_when_unknown() -> None:
    spec = {"gpus": 1, "gpu_memory": 6 * GIB}
    assert gpu_amount(spec, 24 * GIB) == 0.25
    assert gpu_amount(spec) == UNKNOWN_SHARE == 0.5
    assert gpu_amount(spec, 4 * GIB) == 1.0  # never more than the GPU
    assert share_bytes(spec, 16 * GIB) == 6 * GIB
    assert share_bytes(spec, 0) == 6 * GIB


def test_from_a_parsed_spec() -> None:
    stored = parse_job_spec({"algorithm": "mlp", "dataset": "iris", "gpus": 0.5}).to_dict()
    assert gpu_amount(stored, 16 * GIB) == 0.5
    stored = parse_job_spec({"algorithm": "mlp", "dataset": "iris", "gpu_memory": "6GiB"}).to_dict()
    assert gpu_amount(stored, 12 * GIB) == 0.5


def test_memory_fraction() -> None:
    assert memory_fraction(6 * GIB, 24 * GIB) == 0.25
    assert memory_fraction(0, 24 * GIB) == 0.0
    assert memory_fraction(6 * GIB, 0) == 0.0
    assert memory_fraction(30 * GIB, 24 * GIB) == 1.0


def test_agent_capacity_counts_dispatched_shares_beside_telemetry() -> None:
    from tensorfleet_desktop.controller.gpu_share import agent_capacity
    from tensorfleet_desktop.controller.ports import AgentView, GpuView

    def view(placed: set[str], *gpus: GpuView) -> AgentView:
        return AgentView(
            "n", "n", "h:1", True, True, True, max(0, 2 - len(placed)), slots_total=2, gpu_slots=2,
            placed=frozenset(placed), gpus=gpus,
        )  # fmt: skip

    empty = (GpuView(0, 16 * GIB), GpuView(1, 16 * GIB))
    # three shares sent to GPU 0 since the last sample: one slot, 12 GiB promised there
    free, free_gpu, rooms = agent_capacity(view({"a", "b", "c"}, *empty), [(0, 4 * GIB)] * 3)
    assert (free, free_gpu) == (1, 1)
    assert (rooms[0].free_memory, rooms[0].whole, rooms[1].whole) == (4 * GIB, False, True)
    # telemetry caught up (and says more is used than promised): the larger counts, nothing twice
    sampled = (GpuView(0, 16 * GIB, 14 * GIB, 12 * GIB, 3), GpuView(1, 16 * GIB))
    assert agent_capacity(view({"a", "b", "c"}, *sampled), [(0, 4 * GIB)] * 3)[2][0].free_memory == 2 * GIB
    # a whole-GPU task that the telemetry shows too: counted once, the other GPU free
    free, free_gpu, rooms = agent_capacity(view({"w"}, GpuView(0, 16 * GIB, exclusive=True), empty[1]), [])
    assert (free, free_gpu) == (1, 1) and rooms[0].exclusive and not rooms[0].whole
