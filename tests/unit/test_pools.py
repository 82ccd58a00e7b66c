"""Slurm pools as units: settings and their refusals, the join credential, the parsers of Slurm's real output, the
batch script, and the pool manager's decisions against a fake driver (what it submits, cancels, and says)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import pytest

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.security.join_credential import CredentialError, read_claims
from tensorfleet_desktop.controller.capacity import Waiting
from tensorfleet_desktop.controller.pools.credentials import Credentials, load_or_create_key
from tensorfleet_desktop.controller.pools.manager import JoinRefused, JoinRequest, PoolManager
from tensorfleet_desktop.controller.pools.script import batch_script, sbatch_args
from tensorfleet_desktop.controller.pools.settings import check_settings, time_limit_seconds
from tensorfleet_desktop.controller.pools.slurm import (
    SlurmError,
    SlurmJob,
    parse_sacct,
    parse_sbatch,
    parse_squeue,
    slurm_environment,
)
from tensorfleet_desktop.controller.scheduler import Request

# ---- settings


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad Name", "partition": "p"}, "name"),
        ({"name": "a", "partition": ""}, "partition"),
        ({"name": "a", "partition": "p", "max_nodes": 0}, "max_nodes"),
        ({"name": "a", "partition": "p", "max_nodes": True}, "max_nodes"),
        ({"name": "a", "partition": "p", "time_limit": "4 hours"}, "time_limit"),
        ({"name": "a", "partition": "p", "kind": "pbs"}, "kind"),
        ({"name": "a", "partition": "p", "idle_timeout_seconds": 0}, "idle_timeout_seconds"),
        ({"name": "a", "partition": "p", "login": "-oProxyCommand=x"}, "login"),
        ({"name": "a", "partition": "p", "sbatch_args": ["--nodes=4"]}, "sbatch_args[0]"),
        ({"name": "a", "partition": "p", "sbatch_args": ["--gres=gpu:1", "a\nb"]}, "sbatch_args[1]"),
    ],
)
def test_settings_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_settings(body)
    assert info.value.field == field


def test_settings_and_slurm_time_formats() -> None:
    s = check_settings({"name": "gpu-a", "partition": "gpu", "max_nodes": 4, "time_limit": "4:00:00"})
    assert (s.max_nodes, s.job_name, s.idle_timeout_seconds) == (4, "tensorfleet-gpu-a", 300.0)
    assert check_settings(s.to_dict()) == s  # what the store keeps reads back the same
    cases = {"90": 5400, "1:30": 90, "4:00:00": 14400, "1-12": 129600, "1-0:30": 88200, "2-1:0:5": 176405}
    assert {k: time_limit_seconds(k) for k in cases} == cases
    assert time_limit_seconds("") is None and time_limit_seconds("UNLIMITED") is None


# ---- credentials


def test_credential_round_trip_and_refusals(tmp_path: Any) -> None:
    key = load_or_create_key(tmp_path)
    assert load_or_create_key(tmp_path) == key and (tmp_path / "join-credential.key").stat().st_mode & 0o077 == 0
    creds = Credentials(key, "ab" * 32, tls=True)
    token = creds.mint("gpu-a", 60, scope="s1")
    claims = creds.verify(token)
    assert (claims.pool, claims.scope, claims.fingerprint, claims.tls) == ("gpu-a", "s1", "ab" * 32, True)
    assert read_claims(token) == claims  # the agent reads the same, unverified
    with pytest.raises(CredentialError, match="expired"):
        creds.verify(creds.mint("gpu-a", 60), now=time.time() + 120)
    with pytest.raises(CredentialError, match="not signed"):
        Credentials(b"x" * 32, "", False).verify(token)
    prefix, _payload, sig = token.split(".")  # a payload edited by hand keeps the old signature
    other = creds.mint("other", 60, scope="s1").split(".")[1]
    with pytest.raises(CredentialError, match="not signed"):
        creds.verify(f"{prefix}.{other}.{sig}")
    with pytest.raises(CredentialError, match="not a join credential"):
        creds.verify("tfj-plain-join-token")


# ---- Slurm's output (as Slurm 22.05 prints it; 23.x's shapes too)


SQUEUE_2205 = {
    "jobs": [
        {"job_id": 7, "job_state": "PENDING", "state_reason": "Resources", "node_count": 2, "submit_time": 100,
         "start_time": 0, "name": "tensorfleet-a", "nodes": ""},
        {"job_id": 8, "job_state": "RUNNING", "state_reason": "None", "node_count": 1, "submit_time": 101,
         "start_time": 105, "name": "tensorfleet-a", "nodes": "n1"},
    ]
}  # fmt: skip
SQUEUE_23 = {
    "jobs": [
        {"job_id": 9, "job_state": ["RUNNING"], "state_reason": "None", "node_count": {"set": True, "number": 3},
         "submit_time": {"set": True, "number": 200}, "start_time": {"set": True, "number": 210}, "nodes": "n[1-3]"},
    ]
}  # fmt: skip


def test_parsers() -> None:
    assert parse_sbatch("1234\n") == "1234" and parse_sbatch("55;cluster\n") == "55"
    with pytest.raises(SlurmError):
        parse_sbatch("sbatch: error: Batch job submission failed\n")
    pending, running = parse_squeue(json.dumps(SQUEUE_2205))
    assert (pending.id, pending.state, pending.reason, pending.nodes, pending.started_at) == (
        "7",
        "PENDING",
        "Resources",
        2,
        0,
    )
    assert (running.state, running.reason, running.started_at, running.hosts) == ("RUNNING", "", 105.0, "n1")
    (new,) = parse_squeue(json.dumps(SQUEUE_23))
    assert (new.id, new.state, new.nodes, new.started_at) == ("9", "RUNNING", 3, 210.0)
    with pytest.raises(SlurmError):
        parse_squeue("squeue: error: Invalid user")
    sacct = "JobID|State\n12|CANCELLED by 0\n12.batch|CANCELLED\n13|COMPLETED\n"
    assert parse_sacct(sacct, "12") == "CANCELLED" and parse_sacct(sacct, "13") == "COMPLETED"
    assert parse_sacct(sacct, "14") == "" and parse_sacct("", "1") == ""


def test_slurm_commands_never_see_the_controllers_secrets() -> None:
    env = {"PATH": "/bin", "SLURM_CONF": "/x", "TENSORFLEET_CLUSTER_TOKEN": "t", "TENSORFLEET_CONTROLLER_TOKEN": "c",
           "AWS_SECRET_ACCESS_KEY": "k", "TENSORFLEET_POOL_DATA_ROOT": "/scratch"}  # fmt: skip
    assert slurm_environment(env) == {"PATH": "/bin", "SLURM_CONF": "/x", "TENSORFLEET_POOL_DATA_ROOT": "/scratch"}


def test_batch_script_runs_one_agent_per_node_and_keeps_the_credential_off_command_lines() -> None:
    pool = check_settings({"name": "a", "partition": "gpu", "account": "ml", "time_limit": "1:00:00",
                           "sbatch_args": ["--gres=gpu:2"], "idle_timeout_seconds": 120})  # fmt: skip
    args = sbatch_args(pool, 3)
    assert "--nodes=3" in args and "--job-name=tensorfleet-a" in args and args[-1] == "--gres=gpu:2"
    assert "--account=ml" in args and "--time=1:00:00" in args and "--ntasks-per-node=1" in args
    script = batch_script(pool, "ctl:50050", "tfjc1.x.y", ["/opt/py", "-m", "tensorfleet_agent"])
    assert "export TENSORFLEET_JOIN_CREDENTIAL=tfjc1.x.y" in script
    assert script.count("tfjc1.x.y") == 1  # only in the environment, never an argument
    assert "srun" in script and "--exit-when-idle 120" in script and "--label pool=a" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # it parses


# ---- the manager's decisions


class FakeDriver:
    def __init__(self) -> None:
        self.submitted: list[tuple[str, list[str]]] = []
        self.cancelled: list[str] = []
        self.jobs: dict[str, SlurmJob] = {}
        self.fail = ""

    async def submit(self, script: str, args: Sequence[str]) -> str:
        if self.fail:
            raise SlurmError(self.fail)
        job_id = str(1000 + len(self.submitted))
        self.submitted.append((script, list(args)))
        nodes = int(next(a for a in args if a.startswith("--nodes=")).split("=")[1])
        self.jobs[job_id] = SlurmJob(job_id, "PENDING", "Resources", nodes, time.time(), 0.0)
        return job_id

    async def queue(self, job_name: str) -> list[SlurmJob]:
        return list(self.jobs.values())

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)
        self.jobs.pop(job_id, None)

    async def final_state(self, job_id: str) -> str:
        return "COMPLETED"


class FakeStore:
    def __init__(self) -> None:
        self.pools: dict[str, dict[str, Any]] = {}

    def save_pool(self, name: str, body: dict[str, Any]) -> None:
        self.pools[name] = body

    def delete_pool(self, name: str) -> None:
        self.pools.pop(name, None)

    async def load_pools(self) -> dict[str, dict[str, Any]]:
        return dict(self.pools)


class FakeAgents:
    def __init__(self) -> None:
        self.busy_nodes: set[str] = set()
        self.forgotten: list[str] = []

    def busy(self, node_id: str) -> bool:
        return node_id in self.busy_nodes

    async def forget(self, node_id: str) -> None:
        self.forgotten.append(node_id)

    def members(self, allocation_id: str) -> list[str]:
        return []


def waiting(
    job_id: str, ranks: int = 1, gang: bool = False, pool: str = "", waited: float = 30.0, **constraints: Any
) -> Waiting:
    request = Request(job_id, 0, 0, tuple(range(ranks)), "noop", gang=gang, **constraints)
    return Waiting(request, job_id, {"pool": pool} if pool else {}, waited)


async def manager_with(**pool: Any) -> tuple[PoolManager, FakeDriver, dict[str, str], FakeAgents]:
    driver, states, agents = FakeDriver(), {}, FakeAgents()
    creds = Credentials(b"k" * 32, "", tls=False)

    def state(job_id: str) -> str:
        return states.get(job_id, "QUEUED")  # a job the test did not end is queued

    m = PoolManager(FakeStore(), creds, "127.0.0.1:1", lambda p: ["agent"], state, lambda p: driver, 3600, 3600)
    m.agents = agents
    await m.start()
    for name, body in pool.items():
        m.add({"name": name, "partition": "debug", **body})
    return m, driver, states, agents


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_four_jobs_one_node_one_allocation_then_reasons_follow_squeue() -> None:
    m, driver, _states, _ = await manager_with(a={"max_nodes": 1})
    jobs = [waiting(f"j{i}") for i in range(4)]
    reasons = m.offer(jobs, [], 0)
    assert set(reasons) == {"j0", "j1", "j2", "j3"}
    await settle()
    assert len(driver.submitted) == 1 and "--nodes=1" in driver.submitted[0][1]
    await m.poll_once(m.pools["a"])
    assert m.offer(jobs, [], 0)["j3"] == "waiting for Slurm allocation 1000 (Resources)"
    assert m.offer(jobs, [], 0) and len(driver.submitted) == 1  # asked again: no second allocation
    alloc = m.pools["a"].allocations[0]
    assert alloc.jobs == ["j0", "j1", "j2", "j3"] and alloc.to_dict()["state"] == "PENDING"
    await m.stop()


async def test_a_gang_gets_one_allocation_of_n_nodes_and_waits_for_room() -> None:
    m, driver, _, _ = await manager_with(a={"max_nodes": 3})
    reasons = m.offer([waiting("g", ranks=3, gang=True), waiting("h", ranks=2, gang=True)], [], 0)
    await settle()
    assert next(a for _, a in driver.submitted).count("--nodes=3") == 1 and len(driver.submitted) == 1
    assert reasons["h"] == "waiting for room in pool a (3 of 3 node(s) allocated)"
    too_big = m.offer([waiting("k", ranks=4, gang=True)], [], 0)
    assert too_big["k"] == "pool a has at most 3 node(s); this gang needs 4"
    await m.stop()


async def test_work_naming_no_pool_bursts_only_after_a_while_and_when_a_pool_agent_could_run_it() -> None:
    m, driver, _, _ = await manager_with(a={"max_nodes": 4})
    reasons = m.offer(
        [
            waiting("fresh", waited=2.0),  # the LAN's agents may free a slot any moment
            waiting("desk", on=("desk-7",)),  # names a LAN agent
            waiting("labelled", labels=(("gpu", "a100"),)),  # a label no pool agent has
        ],
        [],
        0,
    )
    await settle()
    assert reasons == {} and driver.submitted == []
    assert m.offer([waiting("late")], [], 0)["late"].startswith("waiting for a Slurm allocation of pool a")
    await m.stop()


async def test_named_pool_only_and_unknown_pool_said() -> None:
    m, driver, _, _ = await manager_with(a={"max_nodes": 1}, b={"max_nodes": 1})
    reasons = m.offer([waiting("x", pool="b"), waiting("y", pool="nope")], [], 0)
    await settle()
    assert driver.submitted and "--job-name=tensorfleet-b" in driver.submitted[0][1]
    assert reasons["y"] == "pool nope does not exist (tensorfleet pools list)"
    await m.stop()


async def test_cancelled_job_releases_its_allocation_but_finished_work_waits_for_the_idle_timeout() -> None:
    m, driver, states, agents = await manager_with(a={"max_nodes": 2})
    m.offer([waiting("c")], [], 0)
    await settle()
    pool = m.pools["a"]
    driver.jobs["1000"] = SlurmJob("1000", "RUNNING", "", 1, 0.0, 1.0)
    m.joined(pool.allocations[0], "node-1")
    agents.busy_nodes.add("node-1")
    states["c"] = "CANCELLED"
    await m.poll_once(pool)
    assert driver.cancelled == []  # its agent still runs the cancelled task: not yet
    agents.busy_nodes.clear()
    await m.poll_once(pool)
    assert driver.cancelled == ["1000"]
    await m.poll_once(pool)  # squeue no longer lists it (twice): ended, its agent forgotten
    await m.poll_once(pool)
    await settle()
    assert pool.allocations == [] and agents.forgotten == ["node-1"]
    m.offer([waiting("d")], [], 0)  # a job that succeeded: the allocation stays for the idle timeout
    await settle()
    driver.jobs["1001"] = SlurmJob("1001", "RUNNING", "", 1, 0.0, 1.0)
    states["d"] = "SUCCEEDED"
    await m.poll_once(pool)
    assert driver.cancelled == ["1000"] and len(pool.allocations) == 1
    await m.stop()


async def test_submit_failure_is_the_pools_error_and_the_job_is_offered_again() -> None:
    m, driver, _, _ = await manager_with(a={})
    driver.fail = "sbatch failed (1): invalid partition specified: debug"
    m.offer([waiting("j")], [], 0)
    await settle()
    assert "invalid partition specified: debug (next try in 5 s)" in m.get("a")["error"]
    assert m.get("a")["allocations"] == []
    again = m.offer([waiting("j")], [], 0)["j"]  # the next tick: no second sbatch yet, the job says why
    await settle()
    assert "invalid partition specified" in again and driver.submitted == []
    m.pools["a"].submit_after = 0.0  # the back-off has passed, and Slurm takes it now
    driver.fail = ""
    m.offer([waiting("j")], [], 0)
    await settle()
    assert len(driver.submitted) == 1 and m.get("a")["error"] == ""
    await m.stop()


async def test_an_allocation_whose_agent_never_joined_backs_the_pool_off() -> None:
    m, driver, _, _ = await manager_with(a={})
    m.offer([waiting("j")], [], 0)
    await settle()
    driver.jobs.clear()  # the batch script exited at once (no agent on the nodes): squeue no longer lists it
    for _ in range(2):
        await m.poll_once(m.pools["a"])
    await settle()
    assert "before its agent joined" in m.get("a")["error"] and "(next try in 5 s)" in m.get("a")["error"]
    m.offer([waiting("j")], [], 0)
    await settle()
    assert len(driver.submitted) == 1  # not again at once
    await m.stop()


async def test_join_admission() -> None:
    m, _driver, _, _ = await manager_with(a={"max_nodes": 1})
    m.offer([waiting("j")], [], 0)
    await settle()
    alloc = m.pools["a"].allocations[0]
    good = m.credentials.mint("a", 60, scope=alloc.scope)
    request = JoinRequest(good, "127.0.0.1:5", "n1", "", "a", "1000", "host")
    assert m.admit(request) is alloc
    m.joined(alloc, "n1")
    with pytest.raises(JoinRefused, match="already has its 1 agent"):
        m.admit(JoinRequest(good, "127.0.0.1:6", "n2", "", "a", "1000", "host"))
    with pytest.raises(JoinRefused, match="not 999"):
        m.admit(JoinRequest(good, "127.0.0.1:5", "n1", "", "a", "999", "host"))
    with pytest.raises(JoinRefused, match="not b"):
        m.admit(JoinRequest(good, "127.0.0.1:5", "n1", "", "b", "", "host"))
    with pytest.raises(JoinRefused, match="has ended"):
        m.admit(JoinRequest(m.credentials.mint("a", 60, scope="gone"), "127.0.0.1:5", "n1", "", "a", "", "h"))
    assert m.admit(JoinRequest(m.credentials.mint("k8s", 60), "127.0.0.1:5", "n9", "", "", "", "h")) is None
    await m.stop()


async def test_pools_persist_and_remove_refuses_while_work_runs() -> None:
    m, driver, states, _agents = await manager_with(a={"max_nodes": 1})
    assert m.store.pools["a"]["partition"] == "debug"  # type: ignore[attr-defined]
    m.offer([waiting("j")], [], 0)
    await settle()
    states["j"] = "RUNNING"
    from tensorfleet_desktop.controller.errors import JobError

    with pytest.raises(JobError, match="run work"):
        await m.remove("a")
    states["j"] = "SUCCEEDED"
    await m.remove("a")
    assert driver.cancelled == ["1000"] and "a" not in m.store.pools  # type: ignore[attr-defined]
    await m.stop()


async def test_a_join_credential_cannot_take_over_an_agent_added_otherwise() -> None:
    from tensorfleet_desktop.controller.fleet import AgentRecord, Fleet
    from tensorfleet_desktop.controller.pools.members import join

    m, _driver, _, _ = await manager_with(a={"max_nodes": 1})
    m.offer([waiting("j")], [], 0)
    await settle()
    alloc = m.pools["a"].allocations[0]
    fleet = Fleet()
    fleet.agents["n1"] = AgentRecord("n1", "10.0.0.5:50051", "manual", "desk-5")
    request = JoinRequest(m.credentials.mint("a", 60, scope=alloc.scope), "10.0.0.5:50051", "n1", "", "a", "", "h")
    with pytest.raises(JoinRefused, match="agent desk-5 is already in this fleet as a manual agent"):
        await join(m, fleet, request)
    assert fleet.agents["n1"].source == "manual" and alloc.agents == []
    await m.stop()


def capacity(node_id: str, slots: int = 2, workloads: frozenset[str] = frozenset({"noop"})) -> Any:
    from tensorfleet_desktop.controller.scheduler import Capacity

    return Capacity(node_id, node_id, slots, workloads=workloads)


async def test_a_joined_agent_not_yet_schedulable_keeps_its_allocation_starting() -> None:
    m, driver, _, _ = await manager_with(a={"max_nodes": 3})
    m.offer([waiting("j")], [], 0)
    await settle()
    driver.jobs["1000"] = SlurmJob("1000", "RUNNING", "", 1, 0.0, 1.0)
    await m.poll_once(m.pools["a"])
    m.joined(m.pools["a"].allocations[0], "n1")  # JoinCluster answered; pairing and telemetry follow
    reasons = m.offer([waiting("j"), waiting("k")], [], 1.0)
    await settle()
    assert len(driver.submitted) == 1  # neither the job nor a newcomer asks for another allocation meanwhile
    assert reasons["j"] == "waiting for the agents of Slurm allocation 1000 to come online (joined)"
    assert m._assigned["k"] is m.pools["a"].allocations[0]
    await m.stop()


async def test_work_no_agent_of_the_pool_can_run_backs_off_and_says_why() -> None:
    m, driver, _, _ = await manager_with(a={"max_nodes": 3})
    job = waiting("j")
    m.offer([job], [], 0)
    await settle()
    driver.jobs["1000"] = SlurmJob("1000", "RUNNING", "", 1, 0.0, 1.0)
    await m.poll_once(m.pools["a"])
    m.joined(m.pools["a"].allocations[0], "n1")
    up = [
        capacity("n1", workloads=frozenset({"torch_mlp"}))
    ]  # it came online, without the job's workload: the job was not placed on it
    for now in (1.0, 2.0, 300.0):
        reasons = m.offer([job], up, now)
        await settle()
    assert len(driver.submitted) == 1  # no allocation after allocation
    assert reasons["j"].startswith("Slurm allocation 1000 of pool a cannot run it (agent n1 has no workload noop)")
    assert reasons["j"].endswith("pool a is asked again in 301 s")
    assert "j" not in m._assigned  # the allocation idles out: the job does not hold it
    m.offer([job], up, 602.0)  # the back-off passed: asked again once
    await settle()
    assert len(driver.submitted) == 2
    await m.stop()


async def test_a_joining_agent_is_added_with_its_credentials_pool() -> None:
    from tensorfleet_desktop.controller.fleet import AgentRecord, Fleet
    from tensorfleet_desktop.controller.pools.members import join

    added: list[str] = []

    class Recording(Fleet):
        async def add(self, address: str, source: str = "manual", pair_token: str = "", pool: str = "") -> AgentRecord:
            added.append(pool)
            return AgentRecord("n9", address, source, pool=pool)

    m, _driver, _, _ = await manager_with(a={"max_nodes": 1})
    request = JoinRequest(m.credentials.mint("k8s", 60), "10.0.0.9:50051", "n9", "", "", "", "h")
    assert (await join(m, Recording(), request)).pool == "k8s" and added == ["k8s"]
    await m.stop()
