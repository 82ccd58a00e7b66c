"""Issue 25's scenario on a real Slurm (munged + slurmctld + slurmd on 127.0.0.1, tests/helpers/slurm.py): a pool
with --max-nodes 1 scales from zero for 4 queued jobs (one allocation in squeue, its agent joins by JoinCluster,
the 4 jobs succeed on it), the job that waits says which allocation it waits for, and the pool is back at zero
allocations within the idle timeout + 30 s; a cancelled job's allocation is released at once (not at the idle
timeout)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from helpers.controller import ControllerProcess
from helpers.slurm import SlurmCluster, slurm_cluster
from helpers.waiting import wait_until
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent._generated import controller_pb2_grpc as cpb_grpc

pytestmark = pytest.mark.slow
IDLE = 4.0  # the pool's idle timeout in the scenario (seconds)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with slurm_cluster(Path(tmp_path_factory.mktemp("slurm"))) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def controller(slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    base = Path(tmp_path_factory.mktemp("pool-controller"))
    proc = ControllerProcess(base / "controller")
    proc.env = {**proc.env, **slurm.env, "TENSORFLEET_POOL_DATA_ROOT": str(base / "nodes")}
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api(controller: ControllerProcess) -> Iterator[tuple[cpb_grpc.ControllerServiceStub, list[tuple[str, str]]]]:
    token = (controller.data_dir / "client.token").read_text().strip()
    with grpc.insecure_channel(controller.address) as channel:
        yield cpb_grpc.ControllerServiceStub(channel), [("authorization", f"Bearer {token}")]


def _submit(api: tuple[cpb_grpc.ControllerServiceStub, list[tuple[str, str]]], spec: dict[str, object]) -> str:
    stub, auth = api
    return str(stub.SubmitJob(cpb.SubmitJobRequest(spec_json=json.dumps(spec), submitter="t"), metadata=auth).id)


def test_a_pool_scales_from_zero_to_one_allocation_runs_four_jobs_and_back_to_zero(
    slurm: SlurmCluster,
    controller: ControllerProcess,
    api: tuple[cpb_grpc.ControllerServiceStub, list[tuple[str, str]]],
) -> None:
    stub, auth = api
    stub.AddPool(cpb.Pool(name="local", partition="debug", max_nodes=1, idle_timeout_seconds=IDLE), metadata=auth)
    assert slurm.jobs() == []  # scaled to zero
    spec = {"algorithm": "sleep", "hyperparameters": {"seconds": 0.5}, "pool": "local"}
    ids = [_submit(api, {**spec, "name": f"burst-{i}"}) for i in range(4)]
    allocations: set[str] = set()
    waits: set[str] = set()
    pool_agents: set[str] = set()  # ids of the agents listed with source POOL while the jobs ran

    def all_done() -> bool:
        allocations.update(slurm.jobs())
        jobs = [stub.GetJob(cpb.JobRef(job_id=i), metadata=auth, timeout=10) for i in ids]
        waits.update(j.waiting for j in jobs if j.waiting)
        listed = stub.ListAgents(cpb.ListAgentsRequest(), metadata=auth, timeout=10).agents
        pool_agents.update(a.id for a in listed if a.source == cpb.AGENT_SOURCE_POOL and a.labels["pool"] == "local")
        assert all(j.state not in (cpb.JOB_STATE_FAILED, cpb.JOB_STATE_CANCELLED) for j in jobs), jobs
        return all(j.state == cpb.JOB_STATE_SUCCEEDED for j in jobs)

    wait_until(all_done, 90, "the 4 jobs to succeed through the pool")
    ended = time.monotonic()
    assert len(allocations) == 1, f"max-nodes 1 asked Slurm for {sorted(allocations)}"
    (allocation,) = allocations
    assert any(f"Slurm allocation {allocation}" in w for w in waits), waits
    pool = stub.GetPool(cpb.PoolRef(name="local"), metadata=auth)
    assert [a.id for a in pool.allocations] in ([allocation], [])
    placed = {stub.GetJob(cpb.JobRef(job_id=i), metadata=auth).task_list[0].node_id for i in ids}
    assert len(placed) == 1 and placed <= pool_agents, (placed, pool_agents)  # all on the allocation's one agent

    wait_until(lambda: slurm.jobs() == [], IDLE + 30, "the allocation to end after the idle timeout")
    wait_until(lambda: not stub.GetPool(cpb.PoolRef(name="local"), metadata=auth).allocations, 10, "pool at zero")
    listed = stub.ListAgents(cpb.ListAgentsRequest(), metadata=auth).agents
    assert not placed & {a.id for a in listed}  # its agent is forgotten with its allocation, not left LOST
    print(f"pool back at zero {time.monotonic() - ended:.1f}s after the last job ended (idle timeout {IDLE:g}s)")
    stub.RemovePool(cpb.PoolRef(name="local"), metadata=auth)


def test_cancelling_the_only_job_of_an_allocation_releases_it(
    slurm: SlurmCluster, api: tuple[cpb_grpc.ControllerServiceStub, list[tuple[str, str]]]
) -> None:
    stub, auth = api
    stub.AddPool(cpb.Pool(name="hold", partition="debug", max_nodes=1, idle_timeout_seconds=600), metadata=auth)
    job = _submit(api, {"algorithm": "sleep", "hyperparameters": {"seconds": 120}, "pool": "hold", "name": "c"})
    wait_until(lambda: len(slurm.jobs()) == 1, 30, "an allocation for the job")
    wait_until(
        lambda: stub.GetJob(cpb.JobRef(job_id=job), metadata=auth).state == cpb.JOB_STATE_RUNNING,
        30,
        "the job to run on the allocation's agent",
    )
    stub.CancelJob(cpb.JobRef(job_id=job), metadata=auth)
    cancelled = time.monotonic()
    wait_until(lambda: slurm.jobs() == [], 20, "the cancelled job's allocation to be released (idle timeout 600 s)")
    print(f"allocation released {time.monotonic() - cancelled:.1f}s after the cancel")
    wait_until(lambda: not stub.GetPool(cpb.PoolRef(name="hold"), metadata=auth).allocations, 10, "pool at zero")
    stub.RemovePool(cpb.PoolRef(name="hold"), metadata=auth)
