"""Waking on demand: which sleeping agents the capacity source wakes for queued work, how often, and what the jobs
say meanwhile; then the same source in the controller core, whose woken agent comes online and runs the job."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from helpers.core_harness import core
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_desktop.controller.capacity import DEMAND_AFTER, Waiting
from tensorfleet_desktop.controller.placement import TICK
from tensorfleet_desktop.controller.scheduler import Capacity, Request
from tensorfleet_desktop.controller.waking import Sleeper, WakeSource


@dataclass
class Port:
    wake_timeout: float = 60.0
    asleep: dict[str, Sleeper] = field(default_factory=dict)
    woken: list[str] = field(default_factory=list)

    def sleepers(self) -> list[Sleeper]:
        return list(self.asleep.values())

    def wake_soon(self, node_id: str) -> None:
        self.woken.append(node_id)
        s = self.asleep[node_id]
        self.asleep[node_id] = Sleeper(s.node_id, s.name, True, s.capacity, s.wakeable, 0.0)


def sleeper(name: str, slots: int = 2, gpus: int = 0, wakeable: bool = True, **labels: str) -> Sleeper:
    cap = Capacity(name, name, slots, gpus, labels=labels, workloads=frozenset({"noop", "torch_mlp"}))
    return Sleeper(name, name, False, cap, wakeable)


def waiting(job: str, ranks: int = 1, workload: str = "noop", gpus: int = 0, **kw: object) -> Waiting:
    request = Request(job, 0, 0, tuple(range(ranks)), workload=workload, gpus=gpus, **kw)  # type: ignore[arg-type]
    return Waiting(request, job, {}, 5.0)


def test_wakes_only_an_eligible_sleeper_and_says_so() -> None:
    port = Port(asleep={s.node_id: s for s in (sleeper("cpu-box"), sleeper("gpu-box", gpus=2, gpu="a100"))})
    source = WakeSource(port)
    reasons = source.offer([waiting("j1", gpus=1, labels=(("gpu", "a100"),))], [], 1000.0)
    assert port.woken == ["gpu-box"]
    assert reasons == {"j1": "waking agent gpu-box (magic packet sent 0 s ago)"}
    # the next tick: it is waking already: no second packet, and the time since it counts up
    reasons = source.offer([waiting("j1", gpus=1, labels=(("gpu", "a100"),))], [], 1007.0)
    assert port.woken == ["gpu-box"]
    assert reasons == {"j1": "waking agent gpu-box (magic packet sent 7 s ago)"}


def test_one_waking_agent_covers_several_jobs_up_to_its_slots() -> None:
    port = Port(asleep={s.node_id: s for s in (sleeper("a", slots=2), sleeper("b", slots=2))})
    source = WakeSource(port)
    reasons = source.offer([waiting("j1"), waiting("j2"), waiting("j3")], [], 0.0)
    assert port.woken == ["a", "b"]  # j1 and j2 share a's two slots; j3 needs b
    assert reasons["j3"].startswith("waking agent b")
    assert set(reasons) == {"j1", "j2", "j3"}


def test_no_wol_says_so_and_nothing_eligible_leaves_the_job_to_the_plain_reason() -> None:
    port = Port(asleep={"n": sleeper("n", wakeable=False)})
    source = WakeSource(port)
    assert source.offer([waiting("j1")], [], 0.0) == {
        "j1": "no online agent can run workload noop; agent n could, but it sleeps and reports no interface with "
        "Wake-on-LAN on"
    }
    assert source.offer([waiting("j2", workload="image_classifier")], [], 0.0) == {}
    assert source.offer([waiting("j3", on=("elsewhere",))], [], 0.0) == {}
    assert port.woken == []


def test_a_machine_that_does_not_wake_is_retried_after_a_growing_back_off() -> None:
    port = Port(wake_timeout=10.0, asleep={"n": sleeper("n")})
    source = WakeSource(port)
    source.offer([waiting("j1")], [], 0.0)
    assert port.woken == ["n"]
    port.asleep["n"] = sleeper("n")  # the fleet's timeout: SLEEPING again
    reasons = source.offer([waiting("j1")], [Capacity("x", "x", 0, workloads=frozenset({"noop"}))], 11.0)
    assert reasons == {"j1": "agent n did not wake within 10 s; waiting for a free slot"}
    source.offer([waiting("j1")], [], 20.0)
    assert port.woken == ["n"]  # backing off: 10 s after the failure
    source.offer([waiting("j1")], [], 21.5)
    assert port.woken == ["n", "n"]
    port.asleep["n"] = sleeper("n")
    source.offer([waiting("j1")], [], 32.0)  # second failure: 20 s
    source.offer([waiting("j1")], [], 51.0)
    assert port.woken == ["n", "n"]
    source.offer([waiting("j1")], [], 52.5)
    assert port.woken == ["n", "n", "n"]


class Unsent(Port):
    def wake_soon(self, node_id: str) -> None:
        self.woken.append(node_id)  # the packet never goes out: the agent stays SLEEPING


def test_a_wake_that_cannot_be_sent_is_not_asked_again_every_tick_and_backs_off() -> None:
    """The controller is not on the sleeper's subnet and no agent there relays: the fleet's wake fails and the
    agent stays SLEEPING (not WAKING). It is asked once per wake timeout, then backs off, and the job says so."""
    port = Unsent(wake_timeout=10.0, asleep={"n": sleeper("n")})
    source = WakeSource(port)
    source.offer([waiting("j1")], [], 0.0)
    port.asleep["n"] = Sleeper("n", "n", False, port.asleep["n"].capacity, True, error="no magic packet could be sent")
    for now in (0.5, 1.0, 5.0, 9.5):  # ticks within the timeout: counted as coming, not asked again
        reasons = source.offer([waiting("j1")], [], now)
    assert port.woken == ["n"]
    assert reasons == {"j1": "waking agent n (asked 10 s ago; no magic packet could be sent)"}
    reasons = source.offer([waiting("j1")], [], 10.5)  # the timeout: a failure, and the back-off
    assert reasons["j1"].startswith("agent n did not wake within 10 s") and port.woken == ["n"]
    source.offer([waiting("j1")], [], 20.0)
    assert port.woken == ["n"]
    source.offer([waiting("j1")], [], 21.0)
    assert port.woken == ["n", "n"]


def test_a_gang_wakes_enough_machines_for_all_its_ranks() -> None:
    port = Port(asleep={s: sleeper(s, slots=1) for s in ("a", "b", "c")})
    WakeSource(port).offer([waiting("g", ranks=2, gang=True)], [], 0.0)
    assert port.woken == ["a", "b"]


@dataclass
class FleetOfFakes:
    """The port over FakeAgents: a woken agent comes online (as a real one does after its magic packet)."""

    agents: FakeAgents
    wake_timeout: float = 60.0
    asleep: dict[str, Sleeper] = field(default_factory=dict)

    def sleepers(self) -> list[Sleeper]:
        return list(self.asleep.values())

    def wake_soon(self, node_id: str) -> None:
        self.asleep.pop(node_id)
        self.agents.add(node_id, slots=1)


async def test_queued_work_wakes_a_sleeping_agent_which_then_runs_it(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    port = FleetOfFakes(agents, asleep={"desk-7": sleeper("desk-7", slots=1)})
    async with core(tmp_path, agents, clock) as controller:
        controller.add_capacity_source(WakeSource(port))
        job = await controller.submit({"algorithm": "noop"}, "me")
        clock.advance(max(TICK, DEMAND_AFTER))
        controller.placement.pass_once()
        assert job.waiting == "waking agent desk-7 (magic packet sent 0 s ago)"
        await agents.wait(lambda: agents.running() == [f"{job.id}-r0-a1"])
        assert agents.running()[0] in agents.fleet["desk-7"].tasks
