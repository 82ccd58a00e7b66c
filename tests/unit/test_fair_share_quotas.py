"""Fair share and quotas (issue 24): the pure parts (decay, the queue's merge, the quota gate in scheduler.plan) and
the core's use of them (order, held reasons as `waiting`, usage and quotas across a store reopen)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.core_harness import core, ended, until
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller.fair_share import FairQueue, Holding, Holdings, UsageBook, queue_key
from tensorfleet_desktop.controller.model import JobState
from tensorfleet_desktop.controller.quotas import Gate, Quota
from tensorfleet_desktop.controller.scheduler import Capacity, GpuRoom, Request, plan

WL = frozenset({"noop"})


def cap(node: str, slots: int = 8, gpus: int = 0) -> Capacity:
    rooms = tuple(GpuRoom(i, 16 << 30, 16 << 30, whole=True) for i in range(gpus))
    return Capacity(node_id=node, name=node, free_slots=slots, free_gpu_slots=gpus, workloads=WL, gpus=rooms)


def req(job: str, user: str, ranks: int = 1, seq: int = 0, **kw: object) -> Request:
    return Request(job_id=job, priority=0, seq_no=seq, ranks=tuple(range(ranks)), workload="noop", user=user, **kw)  # type: ignore[arg-type]


def gate(quotas: dict[str, Quota], holdings: Holdings | None = None, usage: dict[str, float] | None = None) -> Gate:
    return Gate(quotas, holdings or Holdings(), lambda u: (usage or {}).get(u, 0.0), 3600.0)


# ---- pure


def test_usage_halves_every_half_life_and_survives_its_record() -> None:
    book = UsageBook(half_life=100.0)
    book.add("alice", 80.0, now=1000.0)
    assert book.value("alice", 1100.0) == pytest.approx(40.0)
    assert book.value("alice", 1200.0) == pytest.approx(20.0)
    book.add("alice", 10.0, now=1100.0)  # decayed to 40, then 10 more
    assert book.value("alice", 1100.0) == pytest.approx(50.0)
    again = UsageBook(half_life=100.0)
    again.restore({"alice": book.record("alice"), "bad": {"usage": "x", "at": 1}})
    assert again.value("alice", 1200.0) == pytest.approx(25.0) and again.users() == ["alice"]
    with pytest.raises(ValueError, match="half-life"):
        UsageBook(half_life=0)


def test_the_merge_interleaves_users_and_orders_by_usage_within_a_priority() -> None:
    queue = FairQueue()
    queue.add_many((f"a{i}", 0, i, "alice") for i in range(500))
    queue.add("b0", 0, 1000, "bob")
    queue.add("urgent", 5, 2000, "carol")
    g = gate({})
    users = {"b0": "bob", "urgent": "carol"}
    requests = (req(job_id, users.get(job_id, "alice"), seq=i) for i, job_id in enumerate(queue.order(g.key)))
    placements = plan(requests, [cap("n1", slots=3)], 0, 60, ordered=True, gate=g)
    # carol's higher priority first; then alice's oldest (a tie at no usage); then bob, whose key is now lower
    assert [p.job_id for p in placements] == ["urgent", "a0", "b0"]
    # bob used the cluster lately: alice's queue goes first, though bob's job is older
    queue2 = FairQueue()
    queue2.add("b0", 0, 1, "bob")
    queue2.add("a0", 0, 2, "alice")
    assert list(queue2.order(gate({}, usage={"bob": 50.0}).key)) == ["a0", "b0"]
    queue2.compact({"a0"})
    assert list(queue2.order(gate({}).key)) == ["a0"] and len(queue2) == 1


def test_holding_is_valued_in_usage_seconds() -> None:
    holdings = Holdings()
    holdings.add("t1", Holding("j", 0, "alice", 0.5))
    holdings.add("t2", Holding("k", 0, "alice", 0.0))  # a CPU task: one slot
    assert holdings.running_tasks("alice") == 2 and holdings.running_gpus("alice") == 0.5
    assert holdings.charge("alice") == 1.5
    assert gate({}, holdings).key("alice") == pytest.approx(queue_key(0.0, 1.5, 3600.0))
    holdings.drop("t1")
    holdings.drop("t2")
    assert holdings.charges() == {} and holdings.running_gpus("alice") == 0


def test_a_tasks_quota_places_up_to_it_and_holds_the_rest_with_a_reason() -> None:
    holdings = Holdings()
    holdings.add("x", Holding("j0", 0, "alice", 0.0))
    held: dict[str, str] = {}
    quotas = {"alice": Quota("alice", tasks=3)}
    placements = plan(
        [req("cv", "alice", ranks=5), req("later", "alice", seq=1), req("bob", "bob", seq=2)],
        [cap("n1")],
        0,
        60,
        gate=gate(quotas, holdings),
        held=held,
    )
    assert [(p.job_id, p.rank) for p in placements] == [("cv", 0), ("cv", 1), ("bob", 0)]
    assert held == {
        "cv": "over quota: alice runs 1 of 3 tasks (quota tasks=3)",
        "later": "over quota: alice runs 3 of 3 tasks (quota tasks=3)",
    }


def test_a_gpus_quota_counts_shared_fractions_and_a_gang_waits_whole() -> None:
    holdings = Holdings()
    holdings.add("x", Holding("j0", 0, "alice", 0.5))  # a task sharing a GPU: half of one
    quotas = {"alice": Quota("alice", gpus=2)}
    held: dict[str, str] = {}
    g = gate(quotas, holdings)
    placements = plan(
        [
            req("quarters", "alice", ranks=3, gpus=1, gpu_fraction=0.25),  # 0.75 more: 1.25 of 2
            req("whole", "alice", seq=1, gpus=1),  # 2.25 > 2: held
            req("gang", "alice", ranks=2, seq=2, gang=True, gpus=1, gpu_fraction=0.25, waiting_since=-1e6),
            req("bobs", "bob", seq=3, gpus=1),
        ],
        [cap("n1", gpus=8)],
        0,
        60,
        gate=g,
        held=held,
    )
    assert {p.job_id for p in placements} == {"quarters", "gang", "bobs"}
    assert held == {"whole": "over quota: alice holds 1.25 of 2 GPUs and this job needs 1 more (quota gpus=2)"}
    assert g.running("alice") == (6, pytest.approx(1.75))
    # a gang that does not fit the quota whole waits whole, and reserves nothing for itself
    held.clear()
    placements = plan(
        [req("gang2", "alice", ranks=4, gang=True, waiting_since=-1e6), req("small", "bob", seq=1)],
        [cap("n1", slots=4)],
        0,
        60,
        gate=gate({"alice": Quota("alice", tasks=3)}),
        held=held,
    )
    assert [p.job_id for p in placements] == ["small"]
    assert held["gang2"] == "over quota: alice runs 0 of 3 tasks and this gang needs 4 at once (quota tasks=3)"


def test_limits_are_checked() -> None:
    from tensorfleet_desktop.controller.quotas import check_limit, check_user

    assert check_limit("gpus", None) is None and check_limit("gpus", -1) == -1
    for bad in (-2, True, 1.5):
        with pytest.raises(ValidationError, match="gpus"):
            check_limit("gpus", bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="user"):
        check_user(" ")
    with pytest.raises(ValidationError, match="without @host: 'alice'"):
        check_user("alice@lab")
    assert Quota("a", gpus=4, tasks=8).describe() == "gpus=4 tasks=8" and Quota("a").describe() == "none"


# ---- the core


async def test_a_colleagues_one_job_goes_first_once_a_slot_frees(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=2)
    async with core(tmp_path, agents, clock) as controller:
        trials = [await controller.submit({"algorithm": "noop"}, "alice@lab") for _ in range(500)]
        await agents.wait(lambda: len(agents.running()) == 2)
        mine = await controller.submit({"algorithm": "noop"}, "bob@desk")
        controller.placement.schedule()
        assert mine.state is JobState.QUEUED  # no free slot yet
        clock.advance(60.0)  # alice's two tasks run a minute: 120 slot-seconds of usage
        controller.placement.pass_once()
        assert controller.usage.usage.value("alice", clock.time()) == pytest.approx(120.0)
        agents.finish(trials[0].tasks[0].agent_task_id)
        await until(controller, lambda: mine.state is JobState.RUNNING)
        assert trials[2].state is JobState.QUEUED
        listed = {u["user"]: u for u in controller.usage.snapshot(controller.machine.open.values(), clock.time())}
        assert listed["alice"]["running_tasks"] == 1 and listed["alice"]["queued_jobs"] == 498
        assert listed["bob"]["running_tasks"] == 1 and listed["alice"]["share"] == 1.0


async def test_with_fair_share_off_equal_priorities_go_by_submit_order(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock, fair_share=False) as controller:
        trials = [await controller.submit({"algorithm": "noop"}, "alice@lab") for _ in range(3)]
        await agents.wait(lambda: len(agents.running()) == 1)
        mine = await controller.submit({"algorithm": "noop"}, "bob@desk")
        clock.advance(60.0)
        agents.finish(trials[0].tasks[0].agent_task_id)
        await until(controller, lambda: trials[1].state is JobState.RUNNING)  # fair share would pick bob's
        assert mine.state is JobState.QUEUED


async def test_over_quota_jobs_wait_with_the_reason_and_start_when_room_frees(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=4)
    async with core(tmp_path, agents, clock) as controller:
        controller.quotas.set("alice", tasks=1, queued=1)
        first, second, third = [await controller.submit({"algorithm": "noop"}, "alice@lab") for _ in range(3)]
        await agents.wait(lambda: len(agents.running()) == 1)
        clock.advance(1.0)
        controller.placement.pass_once()  # a tick: reasons are shown
        assert second.state is JobState.QUEUED and third.state is JobState.QUEUED
        assert second.waiting == "over quota: alice runs 1 of 1 tasks (quota tasks=1)"
        assert third.waiting == "over quota: alice has 1 queued job ahead of this one (quota queued=1)"
        agents.finish(first.tasks[0].agent_task_id)
        assert await ended(controller, first) is JobState.SUCCEEDED
        await until(controller, lambda: second.state is JobState.RUNNING)
        clock.advance(1.0)
        controller.placement.pass_once()
        assert second.waiting == "" and third.waiting == "over quota: alice runs 1 of 1 tasks (quota tasks=1)"
        controller.quotas.set("alice", tasks=-1)  # lifted: the third starts at the next pass
        controller.placement.pass_once()
        await until(controller, lambda: third.state is JobState.RUNNING)
        assert third.state is not JobState.FAILED


async def test_on_a_full_cluster_a_job_over_quota_says_quota_not_a_free_slot(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=2)
    async with core(tmp_path, agents, clock) as controller:
        controller.quotas.set("alice", tasks=1)
        await controller.submit({"algorithm": "noop"}, "alice@lab")
        await controller.submit({"algorithm": "noop"}, "bob@desk")
        await agents.wait(lambda: len(agents.running()) == 2)  # every slot taken: no placing pass from now on
        over = await controller.submit({"algorithm": "noop"}, "alice@lab")
        fits = await controller.submit({"algorithm": "noop"}, "bob@desk")
        clock.advance(2.0)
        controller.placement.pass_once()
        assert over.waiting == "over quota: alice runs 1 of 1 tasks (quota tasks=1)"
        assert fits.waiting == "waiting for a free slot"


async def test_quotas_and_usage_survive_a_store_reopen(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        controller.quotas.set("alice", gpus=4, tasks=8)
        controller.quotas.set("bob", queued=2)
        controller.quotas.set("bob", queued=-1)  # no limit left: forgotten
        await controller.submit({"algorithm": "noop"}, "alice")
        await agents.wait(lambda: len(agents.running()) == 1)
        controller.placement.pass_once()
        clock.advance(100.0)
        # stop accrues up to now and saves it
    async with core(tmp_path, FakeAgents(), clock) as again:
        assert [q.describe() for q in again.quotas.list()] == ["gpus=4 tasks=8"]
        assert again.usage.usage.value("alice", clock.time()) == pytest.approx(100.0)
        assert again.usage.holdings.running_tasks("alice") == 1  # its task is still out there: it counts


def test_a_pass_reads_a_bounded_number_of_one_users_held_jobs() -> None:
    from tensorfleet_desktop.controller.quotas import HELD_WALK

    queue = FairQueue()
    queue.add_many((f"a{i}", 0, i, "alice") for i in range(5000))
    queue.add("b0", 0, 9999, "bob")
    g = gate({"alice": Quota("alice", queued=2)}, usage={"bob": 1e12})  # alice first in the merge throughout
    read, held = [], []
    for job_id in queue.order(g.key, g.cut):
        read.append(job_id)
        if job_id != "b0" and g.queued_job("alice"):
            held.append(job_id)
    assert len(held) == HELD_WALK and read[-1] == "b0" and len(read) == 2 + HELD_WALK + 1


async def test_tasks_sharing_a_gpu_count_their_share_of_it_against_a_gpus_quota(tmp_path: Path) -> None:
    from tensorfleet_desktop.controller.ports import GpuView

    gib = 1 << 30
    agents, clock = FakeAgents(), FakeClock()
    agents.add("g", slots=8)
    agents.gpu_telemetry("g", GpuView(0, 16 * gib, 0), GpuView(1, 16 * gib, 0))
    async with core(tmp_path, agents, clock) as controller:
        controller.quotas.set("alice", gpus=1)
        jobs = [await controller.submit({"algorithm": "noop", "gpu_memory": "4GiB"}, "alice") for _ in range(3)]
        await agents.wait(lambda: len(agents.running()) == 2)  # 0.5 each until placed: the third would be 1.5
        assert controller.usage.holdings.running_gpus("alice") == pytest.approx(0.5)  # 4 of 16 GiB, twice
        controller.placement.pass_once()  # counted as placed: a quarter each, so the third fits now
        await agents.wait(lambda: len(agents.running()) == 3)
        assert all(j.state is JobState.RUNNING for j in jobs)
        assert controller.usage.holdings.running_gpus("alice") == pytest.approx(0.75)


def test_one_user_at_a_priority_is_read_in_fifo_order_without_asking_keys() -> None:
    from tensorfleet_desktop.controller.fair_share import FairQueue

    queue = FairQueue()
    for seq, job in enumerate(["a", "b", "c"]):
        queue.add(job, 0, seq, "alice")
    queue.add("urgent", 5, 9, "bob")
    asked: list[str] = []

    def key(user: str) -> float:
        asked.append(user)
        return 0.0

    assert list(queue.order(key)) == ["urgent", "a", "b", "c"] and asked == []
    cut: set[str] = set()
    reader = queue.order(key, cut)
    assert [next(reader), next(reader)] == ["urgent", "a"]
    cut.add("alice")  # a user cut while reading gets no more of their jobs handed out
    assert list(reader) == []
