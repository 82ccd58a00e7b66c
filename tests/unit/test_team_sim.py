"""A small run of the team simulation (benchmarks/team_sim.py): the real controller core on a simulated clock, 40 jobs
on 4 one-GPU agents. What users rely on: a light user's job is not starved behind a colleague's flood of trials (its
wait is bounded by one trial's length, where submit order makes it wait for the flood), and a high-priority job
starts within moments of its submit, by preempting a trial, rather than when a trial ends."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _team_sim() -> ModuleType:
    spec = importlib.util.spec_from_file_location("team_sim", ROOT / "benchmarks" / "team_sim.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["team_sim"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


team_sim = _team_sim()
TRIAL = 5 * 60.0  # small_workload's trial length


async def _run(variant: str, tmp_path: Path) -> dict[str, Any]:
    jobs, quotas = team_sim.small_workload(random.Random(7))
    sim = team_sim.Simulation(jobs, quotas, team_sim.Cluster(agents=4, gpus_per_agent=1))
    report: dict[str, Any] = await sim.run(variant, tmp_path / variant, team_sim.configure)
    return report


async def test_the_light_user_is_not_starved_and_the_urgent_job_preempts(tmp_path: Path) -> None:
    fair = await _run("fair", tmp_path)
    assert fair["states"] == {"SUCCEEDED": 40}
    assert {"fair share", "preemption"} <= set(fair["features"])
    erin, alice, bob = (fair["users"][u] for u in ("erin", "alice", "bob"))
    # each of erin's jobs takes the next GPU a trial frees (a trial lasts 5 min), never waiting for the flood
    assert erin["wait_s"]["max"] <= TRIAL + team_sim.MAX_STEP, erin
    # the priority-10 job stops a trial (5 s to stop) instead of waiting up to 5 min for one to end
    assert bob["wait_s"]["max"] <= team_sim.STOP_SECONDS + 1.0, bob
    assert alice["preemptions"] >= 1 and alice["gpu_seconds_lost_to_preemption"] > 0  # trials restart from scratch
    assert bob["preemptions"] == 0 and erin["preemptions"] == 0  # neither is preemptible

    fifo = await _run("fifo", tmp_path)  # the same with submit order among equal priorities: the flood goes first
    assert fifo["states"] == {"SUCCEEDED": 40}
    assert fifo["users"]["erin"]["wait_s"]["max"] > 3 * TRIAL, fifo["users"]["erin"]
