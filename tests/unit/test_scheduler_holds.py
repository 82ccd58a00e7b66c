"""scheduler.plan holding room (review of issue 24): a job a preemption round makes room for keeps the room its
victims free (`rounds`), a rank needing several GPUs on one agent reserves like a waiting gang, and a pass with no
free slot but a shared GPU with memory left reads only the sharing requests (`sharing`), not the whole queue."""

from __future__ import annotations

from collections.abc import Iterator

from tensorfleet_desktop.controller.scheduler import Capacity, GpuRoom, Request, plan

WL = frozenset({"noop"})
GIB = 1 << 30


def cap(node: str, slots: int = 1, gpu_slots: int = 0, gpus: tuple[GpuRoom, ...] = ()) -> Capacity:
    return Capacity(node_id=node, name=node, free_slots=slots, free_gpu_slots=gpu_slots, workloads=WL, gpus=gpus)


def req(job: str, ranks: int = 1, priority: int = 0, seq: int = 0, **kw: object) -> Request:
    return Request(job_id=job, priority=priority, seq_no=seq, ranks=tuple(range(ranks)), workload="noop", **kw)  # type: ignore[arg-type]


def jobs(placements: list) -> list[str]:  # type: ignore[type-arg]
    return sorted({p.job_id for p in placements})


def test_a_gang_in_a_preemption_round_holds_the_room_its_first_victim_freed() -> None:
    # a gang of two waits for victims on a and b; a's ended first and its own task is queued again, behind the gang
    requests = [req("gang", ranks=2, priority=10, gang=True, on=("a", "b")), req("victim-a", priority=-1, seq=1)]
    caps = [cap("a"), cap("b", slots=0)]
    assert jobs(plan(requests, caps, now=0, reserve_after=300)) == ["victim-a"]  # the thrash the review saw
    assert plan(requests, caps, now=0, reserve_after=300, rounds={"gang": {"a", "b"}}) == []
    # room elsewhere stays usable: only the victims' agents and what the gang fits now are held
    more = [*caps, cap("c")]
    assert jobs(plan(requests, more, now=0, reserve_after=300, rounds={"gang": {"a", "b"}})) == ["victim-a"]
    placed = plan(requests, more, now=0, reserve_after=300, rounds={"gang": {"a", "b"}})
    assert [p.node_id for p in placed] == ["c"]
    # once both victims have ended the gang is placed there
    both = plan(requests, [cap("a"), cap("b")], now=0, reserve_after=300, rounds={"gang": {"a", "b"}})
    assert sorted((p.job_id, p.node_id) for p in both) == [("gang", "a"), ("gang", "b")]


def test_a_two_gpu_rank_in_a_round_keeps_its_victims_agent_from_one_gpu_work() -> None:
    requests = [req("big", priority=10, gpus=2), req("small", gpus=1, seq=1)]
    caps = [cap("a", slots=1, gpu_slots=1)]  # one of the two GPUs it needs is free; its victim holds the other
    assert jobs(plan(requests, caps, now=0, reserve_after=300)) == ["small"]
    assert plan(requests, caps, now=0, reserve_after=300, rounds={"big": {"a"}}) == []


def test_a_rank_needing_several_gpus_reserves_after_reserve_after_like_a_gang() -> None:
    big = req("big", priority=10, gpus=2, waiting_since=0.0)
    requests = [big, req("small", gpus=1, seq=1)]
    caps = [cap("a", slots=3, gpu_slots=1)]
    assert jobs(plan(requests, caps, now=10, reserve_after=300)) == ["small"]  # backfill while it is young
    assert plan(requests, caps, now=400, reserve_after=300) == []  # then 1-GPU work no longer takes freed GPUs
    # a 1-GPU rank waiting as long reserves nothing: any GPU that frees is its own first anyway
    one = [req("one", priority=10, gpus=1), req("cpu", seq=1)]
    assert jobs(plan(one, [cap("a", slots=1)], now=400, reserve_after=300)) == ["cpu"]


def test_with_no_free_slot_a_shared_gpu_makes_plan_read_only_the_sharing_requests() -> None:
    read: list[str] = []

    def queue(n: int) -> Iterator[Request]:
        for i in range(n):
            read.append(f"j{i}")
            yield req(f"j{i}", seq=i, gpus=1)
        read.append("share")
        yield req("share", seq=n, gpus=1, gpu_memory=2 * GIB)

    def sharing() -> Iterator[Request]:
        yield req("share", seq=10_000, gpus=1, gpu_memory=2 * GIB)

    full = [cap("a", slots=0, gpus=(GpuRoom(0, 16 * GIB, 4 * GIB, whole=False),))]
    without = plan(queue(10_000), full, 0.0, 300.0, ordered=True)
    assert jobs(without) == ["share"] and len(read) == 10_001  # the walk the review measured
    read.clear()
    placed = plan(queue(10_000), full, 0.0, 300.0, ordered=True, sharing=sharing)
    assert [(p.job_id, p.gpu, p.gpu_memory) for p in placed] == [("share", 0, 2 * GIB)] and read == []
    # with a free slot the queue is read until it is taken; a sharing job read then is not placed twice
    read.clear()
    free = [cap("a", slots=1, gpu_slots=1, gpus=(GpuRoom(0, 16 * GIB, 4 * GIB, whole=False),))]

    def front() -> Iterator[Request]:
        read.append("share")
        yield req("share", seq=0, gpus=1, gpu_memory=2 * GIB)
        for i in range(10_000):
            read.append(f"j{i}")
            yield req(f"j{i}", seq=i + 1, gpus=1)

    placed = plan(front(), free, 0.0, 300.0, ordered=True, sharing=sharing)
    assert sorted(p.job_id for p in placed) == ["j0", "share"] and read == ["share", "j0"]
