"""Review of issue 24, GPU sharing (findings 4, 5, 6, 10): a share counts in a pass's quota gate what it counts once
placed, a gang's sharing ranks get distinct GPUs, the agent counts what its sharing tasks use and says which GPU it
chose, and gpu_memory is bounded."""

from __future__ import annotations

import pytest

from tensorfleet_desktop.controller.jobspec import JobSpecError, parse_job_spec

GIB = 1 << 30


def test_gpu_memory_is_bounded_by_one_pib() -> None:
    for value in (10**30, "2000TiB", 2**63, (1 << 50) + 1):
        with pytest.raises(JobSpecError, match="at most 1PiB"):
            parse_job_spec({"algorithm": "mlp", "dataset": "iris", "gpu_memory": value})
    assert parse_job_spec({"algorithm": "mlp", "dataset": "iris", "gpu_memory": "80GiB"}).gpu_memory == 80 * GIB
    assert parse_job_spec({"algorithm": "mlp", "dataset": "iris", "gpu_memory": 1 << 50}).gpu_memory == 1 << 50
