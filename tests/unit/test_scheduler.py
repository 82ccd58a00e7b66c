"""Placement rules: priority then FIFO, gangs all-or-nothing, backfill, reservation, constraints."""

from __future__ import annotations

from typing import Any

from tensorfleet_desktop.controller.scheduler import Capacity, GpuRoom, Request, plan

WL = frozenset({"noop", "sleep", "svm"})


def cap(node: str, slots: int = 1, **kw: Any) -> Capacity:
    return Capacity(node_id=node, name=f"name-{node}", free_slots=slots, workloads=WL, **kw)


def req(job: str, ranks: int = 1, priority: int = 0, seq: int = 0, **kw: Any) -> Request:
    return Request(
        job_id=job, priority=priority, seq_no=seq, ranks=tuple(range(ranks)), gang=ranks > 1, workload="noop", **kw
    )


def placed(placements: list) -> dict[str, list[str]]:  # type: ignore[type-arg]
    out: dict[str, list[str]] = {}
    for p in placements:
        out.setdefault(p.job_id, []).append(p.node_id)
    return out


def test_priority_then_fifo() -> None:
    result = placed(
        plan(
            [req("late", seq=2), req("early", seq=1), req("urgent", priority=5, seq=3)],
            [cap("a"), cap("b")],
            now=0,
            reserve_after=60,
        )
    )
    assert set(result) == {"urgent", "early"}


def test_gang_is_all_or_nothing_and_smaller_jobs_backfill() -> None:
    result = placed(
        plan(
            [req("gang", ranks=3, priority=10, seq=1, waiting_since=0), req("small", seq=2)],
            [cap("a"), cap("b")],
            now=10,
            reserve_after=60,
        )
    )
    assert result == {"small": ["a"]} or result == {"small": ["b"]}


def test_waiting_gang_reserves_slots() -> None:
    result = plan(
        [req("gang", ranks=3, priority=10, seq=1, waiting_since=0), req("small", seq=2)],
        [cap("a"), cap("b")],
        now=61,
        reserve_after=60,
    )
    assert result == []


def test_gang_spreads_over_agents_and_uses_multi_slot_agents() -> None:
    result = placed(plan([req("gang", ranks=3)], [cap("a", 2), cap("b", 1)], now=0, reserve_after=60))
    assert sorted(result["gang"]) == ["a", "a", "b"]


def test_constraints_on_not_on_labels_and_workloads() -> None:
    caps = [cap("aaaaaa1"), cap("bbbbbb2", labels={"gpu": "a100"}), cap("cccccc3")]
    assert placed(plan([req("j", on=("name-cccccc3",))], caps, 0, 60)) == {"j": ["cccccc3"]}
    assert placed(plan([req("j", on=("bbbbbb",))], caps, 0, 60)) == {"j": ["bbbbbb2"]}  # id prefix
    assert placed(plan([req("j", labels=(("gpu", "a100"),))], caps, 0, 60)) == {"j": ["bbbbbb2"]}
    result = placed(plan([req("j", not_on=("aaaaaa1", "cccccc3"))], caps, 0, 60))
    assert result == {"j": ["bbbbbb2"]}
    other = Request("x", 0, 0, (0,), workload="torch_mlp")
    assert plan([other], caps, 0, 60) == []


def test_least_loaded_and_most_gpu_memory_first() -> None:
    caps = [cap("busy", load=90.0), cap("idle", load=5.0)]
    assert plan([req("j")], caps, 0, 60)[0].node_id == "idle"
    caps = [
        cap("small", free_gpu_slots=1, gpu_free_memory=8 << 30),
        cap("big", free_gpu_slots=1, gpu_free_memory=40 << 30),
    ]
    assert plan([req("g", gpus=1)], caps, 0, 60)[0].node_id == "big"
    assert plan([req("g", gpus=2)], caps, 0, 60) == []


def test_capacity_is_consumed_across_requests() -> None:
    result = plan([req(f"j{i}", seq=i) for i in range(5)], [cap("a", 2), cap("b", 1)], 0, 60)
    assert len(result) == 3


def test_a_retry_prefers_agents_its_attempts_did_not_fail_on() -> None:
    caps = [cap("failed-here", load=1.0), cap("other", load=80.0)]
    assert plan([req("j", avoid=("failed-here",))], caps, 0, 60)[0].node_id == "other"
    # only where nothing else fits does it go back (a preference, not a ban)
    assert plan([req("j", avoid=("failed-here",))], [cap("failed-here")], 0, 60)[0].node_id == "failed-here"


def test_a_pass_leaves_the_callers_room_as_it_was_and_spreads_single_slot_work_by_load() -> None:
    """plan() takes room from copies made as it writes (the caller's capacities serve the rest of the pass: the
    reasons it gives waiting jobs, the offers to pools), and puts one-slot ranks on the least loaded agent first."""
    caps = [cap("busy", 2, load=80.0), cap("idle", 2, load=5.0), cap("full", 0)]
    result = plan([Request("j1", 0, 1, (0, 1, 2), workload="noop"), req("j2", seq=2), req("j3", seq=3)], caps, 0, 60)
    assert [(p.job_id, p.rank, p.node_id) for p in result] == [
        ("j1", 0, "idle"),
        ("j1", 1, "idle"),
        ("j1", 2, "busy"),
        ("j2", 0, "busy"),
    ]
    assert [c.free_slots for c in caps] == [2, 2, 0]  # the caller's, untouched


def test_gpu_and_gpu_sharing_ranks_that_keep_what_fits_leave_the_callers_room_as_it_was() -> None:
    """Ranks that are not a gang take their room as they are placed (no trial first), from the pass's own copies:
    whole GPUs and shares by memory are counted across requests, and the caller's capacities stay as they were."""
    gib = 1 << 30

    def gpu_cap(node: str, load: float) -> Capacity:
        rooms = (GpuRoom(0, 16 * gib, 16 * gib, whole=True), GpuRoom(1, 16 * gib, 16 * gib, whole=True))
        return cap(node, 4, free_gpu_slots=2, gpus=rooms, load=load)

    caps = [gpu_cap("a", 5.0), gpu_cap("b", 50.0)]
    requests = [
        Request("whole", 0, 1, (0, 1, 2), workload="noop", gpus=1),
        Request("share", 0, 2, (0, 1), workload="noop", gpu_memory=6 * gib),
    ]
    result = plan(requests, caps, 0, 60)
    assert [(p.job_id, p.rank, p.node_id, p.gpu) for p in result] == [
        ("whole", 0, "a", -1),
        ("whole", 1, "a", -1),
        ("whole", 2, "b", -1),
        ("share", 0, "b", 1),  # the one GPU left whole takes both shares (best fit: the fullest after)
        ("share", 1, "b", 1),
    ]
    assert [p.gpu_memory for p in result[3:]] == [6 * gib, 6 * gib]
    assert [(c.free_slots, c.free_gpu_slots) for c in caps] == [(4, 2), (4, 2)]
    assert all(g.whole and g.free_memory == 16 * gib for c in caps for g in c.gpus)
