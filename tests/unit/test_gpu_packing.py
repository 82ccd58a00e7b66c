"""scheduler.plan packing ranks that share a GPU by memory: best fit, fractions, whole vs shared."""

from __future__ import annotations

from tensorfleet_desktop.controller.scheduler import Capacity, GpuRoom, Request, plan

GIB = 1 << 30


def room(index: int, free_gib: float, total_gib: int = 16, *, whole: bool = False, exclusive: bool = False) -> GpuRoom:
    return GpuRoom(index, total_gib * GIB, int(free_gib * GIB), whole, exclusive)


def agent(node: str, *rooms: GpuRoom, free_slots: int | None = None) -> Capacity:
    empty = sum(1 for r in rooms if r.whole)
    return Capacity(
        node_id=node,
        name=node,
        free_slots=empty if free_slots is None else free_slots,
        free_gpu_slots=empty,
        gpu_free_memory=sum(r.free_memory for r in rooms),
        workloads=frozenset({"w"}),
        gpus=rooms,
    )


def req(job: str, seq: int, ranks: int = 1, gpus: int = 1, **kw: object) -> Request:
    return Request(job, 0, seq, tuple(range(ranks)), workload="w", gpus=gpus, **kw)  # type: ignore[arg-type]


def test_best_fit_takes_the_fullest_gpu_that_fits_across_agents() -> None:
    caps = [agent("a", room(0, 10), room(1, 16, whole=True)), agent("b", room(0, 5))]
    placed = plan([req("j", 1, gpu_memory=4 * GIB)], caps, 0, 60)
    assert [(p.node_id, p.gpu, p.gpu_memory) for p in placed] == [("b", 0, 4 * GIB)]
    placed = plan([req("j", 1, gpu_memory=6 * GIB)], caps, 0, 60)  # 5 GiB is too little: the 10 GiB one
    assert [(p.node_id, p.gpu) for p in placed] == [("a", 0)]


def test_fractions_pack_two_halves_per_gpu_then_the_next_gpu() -> None:
    caps = [agent("a", room(0, 16, whole=True), room(1, 16, whole=True))]
    placed = plan([req("j", 1, ranks=5, gpu_fraction=0.5)], caps, 0, 60)
    assert [p.gpu for p in placed] == [0, 0, 1, 1]  # a fifth half fits nowhere
    assert all(p.gpu_memory == 8 * GIB for p in placed)


def test_whole_gpu_tasks_and_shares_never_mix() -> None:
    caps = [agent("a", room(0, 10), room(1, 16, whole=True))]  # GPU 0 shared already, GPU 1 empty
    assert plan([req("two", 1, gpus=2)], caps, 0, 60) == []
    placed = plan([req("whole", 1), req("share", 2, gpu_memory=12 * GIB), req("small", 3, gpu_memory=GIB)], caps, 0, 60)
    # the whole task takes the empty GPU; 12 GiB fits on no GPU left to share; 1 GiB joins GPU 0
    assert [(p.job_id, p.gpu) for p in placed] == [("whole", -1), ("small", 0)]
    held_whole = [agent("a", room(0, 16, exclusive=True), room(1, 16, whole=True), free_slots=1)]
    assert [p.gpu for p in plan([req("s", 1, gpu_memory=GIB)], held_whole, 0, 60)] == [1]


def test_an_empty_gpu_needs_a_free_slot_a_shared_one_does_not() -> None:
    caps = [agent("a", room(0, 4), room(1, 16, whole=True), free_slots=0)]
    caps[0].free_gpu_slots = 0  # a CPU task holds the agent's last slot
    placed = plan(
        [req("cpu", 1, gpus=0), req("big", 2, gpu_memory=8 * GIB), req("s", 3, gpu_memory=3 * GIB)], caps, 0, 60
    )
    assert [(p.job_id, p.gpu) for p in placed] == [("s", 0)]  # placed although no slot is free


def test_shares_already_placed_in_a_pass_are_counted() -> None:
    caps = [agent("a", room(0, 16, whole=True))]
    placed = plan([req(f"j{i}", i, gpu_memory=6 * GIB) for i in range(4)], caps, 0, 60)
    assert [p.job_id for p in placed] == ["j0", "j1"]  # 2 x 6 of 16 GiB; a third would over-promise
