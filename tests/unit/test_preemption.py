"""preemption.choose: which running tasks a more important job stops (fewest, lowest priority, least work lost,
with a checkpoint), which it never stops (not preemptible, equal or higher priority, no checkpoint without
allow_restart), gangs whole, GPUs and eligibility as scheduler.plan counts them."""

from __future__ import annotations

from tensorfleet_desktop.controller.preemption import Running, can_lose, choose
from tensorfleet_desktop.controller.scheduler import Capacity, GpuRoom, Request


def cap(node: str, free: int = 0, gpus: int = 0, free_gpus: int = 0, **labels: str) -> Capacity:
    return Capacity(node, node, free_slots=free, free_gpu_slots=free_gpus, labels=labels, workloads=frozenset({"w"}))


def req(priority: int = 10, ranks: int = 1, gpus: int = 0, gang: bool = False, **kw: object) -> Request:
    return Request("want", priority, 1, tuple(range(ranks)), workload="w", gpus=gpus, gang=gang, **kw)  # type: ignore[arg-type]


def run(
    job: str,
    node: str,
    rank: int = 0,
    priority: int = -1,
    started: float = 0.0,
    checkpoint: bool = True,
    **kw: object,
) -> Running:
    return Running(
        job_id=job,
        rank=rank,
        attempt=f"{job}-r{rank}-a1",
        node_id=node,
        priority=priority,
        preemptible=bool(kw.pop("preemptible", True)),
        started_at=started,
        has_checkpoint=checkpoint,
        **kw,  # type: ignore[arg-type]
    )


def ids(victims: tuple[Running, ...]) -> list[str]:
    return sorted(v.attempt for v in victims)


def test_nothing_is_stopped_for_a_job_that_fits_already() -> None:
    assert choose(req(), [cap("a", free=1)], [run("low", "a")]) == ()


def test_one_task_is_enough_for_one_rank() -> None:
    victims = choose(req(), [cap("a"), cap("b")], [run("x", "a"), run("y", "b")])
    assert len(victims) == 1


def test_never_an_equal_or_higher_priority_or_non_preemptible_job() -> None:
    running = [
        run("same", "a", priority=10),
        run("higher", "a", priority=20),
        run("pinned", "a", priority=-5, preemptible=False),
    ]
    assert choose(req(priority=10), [cap("a")], running) == ()
    assert not can_lose(running[0], 10) and not can_lose(running[1], 10) and not can_lose(running[2], 10)


def test_lowest_priority_first() -> None:
    running = [run("mid", "a", priority=5), run("low", "b", priority=-3), run("lower", "c", priority=-1)]
    caps = [cap("a"), cap("b"), cap("c")]
    assert ids(choose(req(), caps, running)) == ["low-r0-a1"]


def test_most_recently_started_first_among_equal_priorities() -> None:
    running = [run("old", "a", started=100.0), run("new", "b", started=500.0), run("mid", "c", started=300.0)]
    assert ids(choose(req(), [cap("a"), cap("b"), cap("c")], running)) == ["new-r0-a1"]


def test_least_work_lost_first_a_fresh_checkpoint_counts_as_a_fresh_start() -> None:
    # "long" started first but saved a checkpoint a moment ago: stopping it loses 10 s, "young" would lose 200 s,
    # and "bare" (no checkpoint, may restart) everything since its start
    running = [
        run("long", "a", started=100.0, saved_at=990.0),
        run("young", "b", started=800.0, saved_at=0.0, checkpoint=True),
        run("bare", "c", started=700.0, checkpoint=False, allow_restart=True),
    ]
    assert ids(choose(req(), [cap("a"), cap("b"), cap("c")], running)) == ["long-r0-a1"]


def test_with_a_checkpoint_first_when_all_else_is_equal() -> None:
    running = [
        run("bare", "a", checkpoint=False, allow_restart=True),
        run("saved", "b", checkpoint=True),
    ]
    assert ids(choose(req(), [cap("a"), cap("b")], running)) == ["saved-r0-a1"]


def test_a_task_without_a_checkpoint_only_when_its_job_allows_a_restart() -> None:
    assert choose(req(), [cap("a")], [run("bare", "a", checkpoint=False)]) == ()
    victims = choose(req(), [cap("a")], [run("bare", "a", checkpoint=False, allow_restart=True)])
    assert ids(victims) == ["bare-r0-a1"]


def test_fewest_tasks_beats_lower_priority() -> None:
    # Two GPUs wanted: one task holding two beats two tasks of lower priority holding one each.
    caps = [cap("a", gpus=2), cap("b", gpus=2)]
    running = [
        run("big", "a", priority=-1, slots=2, gpu_slots=2),
        run("s1", "b", priority=-9, gpu_slots=1),
        run("s2", "b", priority=-9, gpu_slots=1),
    ]
    assert ids(choose(req(gpus=2), caps, running)) == ["big-r0-a1"]


def test_tasks_on_one_agent_together_when_a_rank_needs_their_room() -> None:
    caps = [cap("a", free=1, free_gpus=1), cap("b", free=0)]
    running = [
        run("g1", "a", started=1.0, gpu_slots=1),
        run("g2", "a", started=2.0, gpu_slots=1),
        run("cpu", "b", started=9.0),  # frees no GPU: no use
    ]
    assert ids(choose(req(gpus=2), caps, running)) == ["g2-r0-a1"]  # one more GPU on a is enough
    caps[0] = cap("a", free=0, free_gpus=0)
    assert ids(choose(req(gpus=2), caps, running)) == ["g1-r0-a1", "g2-r0-a1"]


def test_only_agents_the_job_may_use() -> None:
    caps = [cap("a", gpu="a100"), cap("b", gpu="t4")]
    running = [run("on-a", "a", started=1.0), run("on-b", "b", started=9.0)]
    assert ids(choose(req(labels=(("gpu", "a100"),)), caps, running)) == ["on-a-r0-a1"]
    assert ids(choose(req(not_on=("a",)), caps, running)) == ["on-b-r0-a1"]
    assert choose(req(on=("c",)), caps, running) == ()
    other = Capacity("c", "c", 0, workloads=frozenset({"other"}))
    assert choose(req(on=("c",)), [*caps, other], [run("on-c", "c")]) == ()  # c cannot run the workload


def test_a_gang_victim_is_stopped_whole() -> None:
    caps = [cap("a"), cap("b")]
    running = [run("gang", "a", rank=0, gang=True), run("gang", "b", rank=1, gang=True)]
    assert ids(choose(req(), caps, running)) == ["gang-r0-a1", "gang-r1-a1"]


def test_a_gang_is_not_stopped_when_one_of_its_ranks_may_not_be() -> None:
    caps = [cap("a"), cap("b")]
    running = [
        run("gang", "a", rank=0, gang=True),
        run("gang", "b", rank=1, gang=True, checkpoint=False),
    ]
    assert choose(req(), caps, running) == ()


def test_a_single_task_beats_a_gang() -> None:
    caps = [cap("a"), cap("b"), cap("c")]
    running = [
        run("gang", "a", rank=0, gang=True, priority=-9, started=9.0),
        run("gang", "b", rank=1, gang=True, priority=-9, started=9.0),
        run("solo", "c", priority=-1, started=0.0),
    ]
    assert ids(choose(req(), caps, running)) == ["solo-r0-a1"]


def test_a_waiting_gang_gets_room_for_every_rank_or_nothing() -> None:
    caps = [cap("a"), cap("b"), cap("c")]
    running = [run("x", "a"), run("y", "b"), run("keep", "c", priority=50)]
    assert ids(choose(req(ranks=2, gang=True), caps, running)) == ["x-r0-a1", "y-r0-a1"]
    assert choose(req(ranks=3, gang=True), caps, running) == ()  # c's task is more important


def test_a_job_of_independent_ranks_gets_room_for_as_many_as_can_be_had() -> None:
    caps = [cap("a"), cap("b"), cap("c")]
    running = [run("x", "a"), run("y", "b"), run("keep", "c", priority=50)]
    assert ids(choose(req(ranks=3), caps, running)) == ["x-r0-a1", "y-r0-a1"]


def test_free_room_counts_first() -> None:
    caps = [cap("a", free=1), cap("b")]
    running = [run("x", "b", started=5.0), run("y", "b", started=1.0)]
    assert ids(choose(req(ranks=2, gang=True), caps, running)) == ["x-r0-a1"]


def test_the_pair_search_finds_fewer_tasks_than_greedy_order() -> None:
    # Greedy by preference would take the two 1-GPU tasks of lowest priority first; a pair of 2-GPU tasks on two
    # agents is what a gang of two 2-GPU ranks needs, and nothing smaller does.
    caps = [cap("a"), cap("b"), cap("c")]
    running = [
        run("big1", "a", priority=-1, slots=2, gpu_slots=2),
        run("big2", "b", priority=-1, slots=2, gpu_slots=2),
        run("s1", "c", priority=-9, gpu_slots=1),
        run("s2", "c", priority=-9, gpu_slots=1),
    ]
    assert ids(choose(req(ranks=2, gpus=2, gang=True), caps, running)) == ["big1-r0-a1", "big2-r0-a1"]


def test_a_large_cluster_is_searched_quickly() -> None:
    import time

    caps = [cap(f"n{i}", gpus=4) for i in range(60)]
    running = [
        run(f"j{i}-{k}", f"n{i}", priority=-(k % 3) - 1, started=float(i * 4 + k), gpu_slots=1)
        for i in range(60)
        for k in range(4)
    ]
    started = time.perf_counter()
    victims = choose(req(gpus=4), caps, running)
    assert time.perf_counter() - started < 1.0
    assert len(victims) == 4 and len({v.node_id for v in victims}) == 1
    started = time.perf_counter()
    victims = choose(req(ranks=3, gpus=4, gang=True), caps, running)
    assert time.perf_counter() - started < 1.0
    assert len(victims) == 12 and len({v.node_id for v in victims}) == 3


GiB = 2**30


def gpu_cap(node: str, free_memory: int, whole: bool = False, free: int = 0, free_gpus: int = 0) -> Capacity:
    room = GpuRoom(0, 16 * GiB, free_memory, whole=whole)
    return Capacity(node, node, free, free_gpus, free_memory, workloads=frozenset({"w"}), gpus=(room,))


def test_a_sharing_victim_gives_back_its_memory_on_its_gpu() -> None:
    # A GPU shared by two tasks (4 GiB free): an 8 GiB share fits once one 6 GiB share stops, on a full agent.
    caps = [gpu_cap("a", free_memory=4 * GiB)]
    running = [
        run("s1", "a", started=1.0, gpu_share=(0, 6 * GiB)),
        run("s2", "a", started=2.0, gpu_share=(0, 6 * GiB)),
    ]
    assert ids(choose(req(gpu_memory=8 * GiB), caps, running)) == ["s2-r0-a1"]
    assert ids(choose(req(gpu_memory=14 * GiB), caps, running)) == ["s1-r0-a1", "s2-r0-a1"]
    assert choose(req(gpu_memory=4 * GiB), caps, running) == ()  # it fits already


def test_shares_free_no_slot_for_a_whole_gpu() -> None:
    # Whether a share was its GPU's last is not known here: a whole-GPU job is not preempted for with shares.
    caps = [gpu_cap("a", free_memory=4 * GiB)]
    running = [run("s1", "a", gpu_share=(0, 6 * GiB)), run("s2", "a", gpu_share=(0, 6 * GiB))]
    assert choose(req(gpus=1), caps, running) == ()
