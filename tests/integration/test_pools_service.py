"""The pools' service side over real gRPC against a real controller (no Slurm needed): JoinCluster's refusals and
its exemption from the client token (only it), and a real agent that joins with a long-lived credential, is paired
by it (no cluster token anywhere), runs a job that names its pool, and exits by itself after its idle timeout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from helpers.waiting import wait_until
from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent._generated import controller_pb2_grpc as cpb_grpc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(Path(tmp_path_factory.mktemp("pools-service")) / "controller").start()
    yield proc
    proc.stop()


@pytest.fixture
def stub(controller: ControllerProcess) -> Iterator[tuple[cpb_grpc.ControllerServiceStub, list[tuple[str, str]]]]:
    token = (controller.data_dir / "client.token").read_text().strip()
    with grpc.insecure_channel(controller.address) as channel:
        yield cpb_grpc.ControllerServiceStub(channel), [("authorization", f"Bearer {token}")]


def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        assert callable(call)
        call()
    err = info.value
    return err.code(), err.details()  # type: ignore[attr-defined]


def test_join_cluster_is_the_only_call_without_the_token_and_checks_its_credential(
    stub: tuple[cpb_grpc.ControllerServiceStub, list[tuple[str, str]]],
) -> None:
    s, auth = stub
    code, text = _code(lambda: s.ListPools(cpb.ListPoolsRequest(), timeout=10))
    assert code is grpc.StatusCode.UNAUTHENTICATED  # every other call still needs the client token
    req = cpb.JoinClusterRequest(credential="tfjc1.e30.AAAA", address="127.0.0.1:1", node_id="n")
    code, text = _code(lambda: s.JoinCluster(req, timeout=10))
    assert code is grpc.StatusCode.UNAUTHENTICATED and text.startswith("join refused:"), text
    forged = s.CreateJoinCredential(cpb.JoinCredentialRequest(pool="x", ttl_seconds=60), metadata=auth).credential
    prefix, payload, _sig = forged.split(".")
    code, text = _code(lambda: s.JoinCluster(cpb.JoinClusterRequest(
        credential=f"{prefix}.{payload}.{'A' * 43}", address="127.0.0.1:1", node_id="n"), timeout=10))  # fmt: skip
    assert code is grpc.StatusCode.UNAUTHENTICATED and "not signed by this controller" in text
    code, text = _code(lambda: s.JoinCluster(cpb.JoinClusterRequest(credential=forged, address="nohost", node_id="n")))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "address" in text
    code, text = _code(
        lambda: s.CreateJoinCredential(cpb.JoinCredentialRequest(pool="x", ttl_seconds=0), metadata=auth)
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "ttl_seconds" in text
    code, text = _code(lambda: s.GetPool(cpb.PoolRef(name="nope"), metadata=auth))
    assert code is grpc.StatusCode.NOT_FOUND and "nope" in text
    code, text = _code(
        lambda: s.AddPool(cpb.Pool(name="a", partition="p", max_nodes=1, sbatch_args=["--nodes=9"]), metadata=auth)
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "sbatch_args[0]" in text


def test_an_agent_joins_with_a_credential_runs_its_pools_job_and_sigterm_requeues_its_work(
    controller: ControllerProcess,
    stub: tuple[cpb_grpc.ControllerServiceStub, list[tuple[str, str]]],
    tmp_path: Path,
) -> None:
    """No cluster token anywhere: the credential pairs the agent. Slurm's time limit or a preemption reaches it as
    SIGTERM: its running task is preempted and the job queued again, not failed. (--exit-when-idle, which ends an
    allocation, is proven by the Slurm scenario in test_slurm_pool.py.)"""
    s, auth = stub
    credential = s.CreateJoinCredential(cpb.JoinCredentialRequest(pool="k8s", ttl_seconds=600), metadata=auth)
    agent = AgentProcess(
        tmp_path / "agent",
        env={"TENSORFLEET_JOIN_CREDENTIAL": credential.credential, "SLURM_JOB_ID": "4242"},
        extra_args=["--no-advertise", "--join", controller.address],
    ).start()
    try:

        def joined() -> cpb.Agent | None:
            listed = s.ListAgents(cpb.ListAgentsRequest(), metadata=auth, timeout=10).agents
            return next((a for a in listed if a.paired and a.state == cpb.AGENT_STATE_ONLINE), None)

        found = wait_until(joined, 20, "the joining agent paired and online")
        assert found.source == cpb.AGENT_SOURCE_POOL and found.labels["pool"] == "k8s"
        assert (found.pool, found.allocation_id) == ("k8s", "4242")  # from its NodeInfo
        assert found.address == agent.address and found.fingerprint == agent.info["fingerprint"]

        def submit(spec: dict[str, object]) -> str:
            return str(s.SubmitJob(cpb.SubmitJobRequest(spec_json=json.dumps(spec), submitter="t"), metadata=auth).id)

        def state(job_id: str) -> int:
            return int(s.GetJob(cpb.JobRef(job_id=job_id), metadata=auth, timeout=10).state)

        quick = submit({"algorithm": "noop", "pool": "k8s", "name": "on-the-pool"})
        wait_until(lambda: state(quick) == cpb.JOB_STATE_SUCCEEDED, 30, "the pool's job to succeed")
        long = submit({"algorithm": "sleep", "hyperparameters": {"seconds": 120}, "pool": "k8s", "name": "preempted"})

        def task_running(job_id: str) -> bool:  # the agent's own word: its worker runs (not only dispatched)
            job = s.GetJob(cpb.JobRef(job_id=job_id), metadata=auth, timeout=10)
            return bool(job.task_list) and job.task_list[0].state == cpb.JOB_TASK_STATE_RUNNING

        wait_until(lambda: task_running(long), 30, "the long job's task to run on the joined agent")
        assert agent.terminate(timeout=30) == 0
        after = s.GetJob(cpb.JobRef(job_id=long), metadata=auth)
        assert after.state not in (cpb.JOB_STATE_FAILED, cpb.JOB_STATE_CANCELLED), after
        task = after.task_list[0]
        assert task.state == cpb.JOB_TASK_STATE_PENDING and task.failures == 0, after  # queued again, no failure
        print(f"after SIGTERM: exit cause {pb.ExitCause.Name(task.exit_cause)}, replacements {task.replacements}")
        assert "Slurm allocation 4242 is ending" in agent.logs()
        s.CancelJob(cpb.JobRef(job_id=long), metadata=auth)
    finally:
        agent.stop()
