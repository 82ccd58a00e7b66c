"""The controller's side of peer-to-peer dataset transfer (issue 20): which blobs it still pushes, which peers and
ticket a reader gets, what the holders index learns and forgets, and each task's dataset_transfer."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.manifest import CHUNK_BYTES, ManifestEntry, exchange_order, manifest_bytes
from tensorfleet_agent.core.types import DatasetTransfer, ExitCause, TaskEvent
from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.dataset_holders import Holders, spread
from tensorfleet_desktop.controller.metrics import ControllerMetrics
from tensorfleet_desktop.controller.model import Job, JobTask, TaskRunState
from tensorfleet_desktop.controller.scheduler import Capacity, Request, plan
from tensorfleet_desktop.controller.store.blobs import BlobStore
from tensorfleet_desktop.controller.store.sqlite import SqliteJobStore

tickets: list[tuple[str, list[str], float, str]] = []


def _tickets(reader: str, content_ids: list[str], ttl: float, job_id: str) -> tuple[bytes, bytes]:
    tickets.append((reader, content_ids, ttl, job_id))
    return f"ticket:{reader}".encode(), b"signature"


async def _controller(tmp_path: Path, agents: FakeAgents, peer_transfer: bool = True) -> Controller:
    store = SqliteJobStore(tmp_path / "tensorfleet.db")
    await store.open()
    blobs = BlobStore(tmp_path / "blobs")
    await blobs.open()
    return Controller(
        store,
        blobs,
        ControllerMetrics(),
        agents=agents,
        clock=FakeClock(),
        tickets=_tickets,
        peer_transfer=peer_transfer,
    )


def _version(blobs: BlobStore, files: int = 6) -> tuple[dict[str, Any], list[str]]:
    entries, shas = [], []
    for i in range(files):
        data = f"file {i}".encode() * (i + 1)
        sha = hashlib.sha256(data).hexdigest()
        blobs.path(sha).parent.mkdir(parents=True, exist_ok=True)
        blobs.path(sha).write_bytes(data)
        entries.append(ManifestEntry(f"f{i}.txt", 0o644, sha, len(data)))
        shas.append(sha)
    body = manifest_bytes(entries)
    mid = hashlib.sha256(body).hexdigest()
    blobs.path(mid).parent.mkdir(parents=True, exist_ok=True)
    blobs.path(mid).write_bytes(body)
    return {"name": "pets", "version": 1, "content_id": mid, "source": "upload"}, sorted(shas)


def _job(version: dict[str, Any], *nodes: str) -> Job:
    tasks = [
        JobTask(i, TaskRunState.DISPATCHED, 1, f"j1.t{i}.a1", node_id=node) for i, node in enumerate(nodes)
    ]  # fmt: skip
    return Job("j1", {"algorithm": "script", "dataset_version": version}, "me", 1, tasks=tasks)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Controller, FakeAgents, dict[str, Any], list[str]]]:
    agents = FakeAgents()
    for node in ("a", "bb", "ccc"):
        agents.add(node)
    controller = await _controller(tmp_path, agents)
    version, shas = _version(controller.blobs)
    tickets.clear()
    yield controller, agents, version, shas
    await controller.store.close()


async def _send(controller: Controller, job: Job, index: int) -> Any:
    task = job.tasks[index]
    agent = controller.agents.agent(task.node_id)
    assert agent is not None
    return await controller.attempts._push_version(job, task, job.spec["dataset_version"], agent)


async def test_a_reader_gets_from_a_peer_holding_the_version_and_only_the_manifest_from_the_controller(
    setup: tuple[Controller, FakeAgents, dict[str, Any], list[str]],
) -> None:
    controller, agents, version, shas = setup
    mid = version["content_id"]
    controller.attempts.holders.holds_version("bb", mid)  # it mounted the version earlier
    job = _job(version, "a")
    peers, ticket, signature = await _send(controller, job, 0)
    assert agents.pushed == [("a", mid)]  # the manifest only
    assert [(p.node_id, p.address, sorted(p.sha256)) for p in peers] == [("bb", "10.0.0.2:50051", shas)]
    assert (ticket, signature) == (b"ticket:a", b"signature")
    assert tickets == [("a", [mid], pytest.approx(1800.0), "j1")]  # scoped to the reader and this version
    assert job.tasks[0].dataset_transfer is not None and job.tasks[0].dataset_transfer["bytes_from_controller"] == 0


async def test_without_peer_transfer_or_a_peer_online_the_controller_sends_it_all(tmp_path: Path) -> None:
    agents = FakeAgents()
    for node in ("a", "bb", "ccc"):
        agents.add(node)
    controller = await _controller(tmp_path, agents, peer_transfer=False)
    version, shas = _version(controller.blobs)
    everything = sorted([*shas, version["content_id"]])
    controller.attempts.holders.holds_version("bb", version["content_id"])
    peers, ticket, _ = await _send(controller, _job(version, "a"), 0)
    assert (peers, ticket) == ((), b"") and sorted(s for n, s in agents.pushed if n == "a") == everything
    controller.attempts.peer_transfer = True
    agents.lose("bb")  # a LOST holder is no peer; "a" holds it all now (pushed)
    peers, _, _ = await _send(controller, _job(version, "ccc"), 0)
    assert [p.node_id for p in peers] == ["a"] and [s for n, s in agents.pushed if n == "ccc"] == [
        version["content_id"]
    ]
    await controller.store.close()


async def _shares_sent(controller: Controller) -> None:
    """The readers' shares, pushed in the background while their tasks start."""
    shares = [t for t in controller.attempts.background.tasks if (t.get_name() or "").startswith("share-")]
    await asyncio.gather(*shares)


async def test_readers_dispatched_together_share_one_copy_from_the_controller(
    setup: tuple[Controller, FakeAgents, dict[str, Any], list[str]],
) -> None:
    controller, agents, version, shas = setup
    job = _job(version, "a", "bb", "ccc")
    results = await asyncio.gather(*(_send(controller, job, i) for i in range(3)))
    await _shares_sent(controller)
    files = [(node, sha) for node, sha in agents.pushed if sha in shas]
    assert sorted(sha for _, sha in files) == shas  # each file sent once, spread over the three readers
    assert len({node for node, _ in files}) > 1
    for (peers, ticket, _), node in zip(results, ("a", "bb", "ccc"), strict=True):
        mine = {sha for n, sha in files if n == node}
        assert {sha for p in peers for sha in p.sha256} == set(shas) - mine  # the rest from the others
        assert all(p.node_id != node for p in peers) and ticket == f"ticket:{node}".encode()
    assert sum(t.dataset_transfer["bytes_from_controller"] for t in job.tasks if t.dataset_transfer) == sum(
        len(controller.blobs.path(s).read_bytes()) for s in shas
    )


async def test_a_retry_after_a_setup_failure_is_sent_everything_by_the_controller(
    setup: tuple[Controller, FakeAgents, dict[str, Any], list[str]],
) -> None:
    controller, agents, version, shas = setup
    controller.attempts.holders.holds_version("bb", version["content_id"])
    job = _job(version, "a")
    controller.machine.jobs[job.id] = job
    task = job.tasks[0]
    task.exit_cause = ExitCause.SETUP  # a peer failed it (no holder left for some blobs)
    agent = controller.agents.agent("a")
    assert agent is not None
    controller.attempts.dispatch(job, task, agent)  # the retry's placement: RunTask with what it sends
    await agents.wait(lambda: ("run", "a", task.agent_task_id) in agents.calls)
    mount = agents.fleet["a"].tasks[task.agent_task_id].spec.dataset_mount
    assert mount is not None and mount.peers == () and mount.manifest_id == version["content_id"]
    assert set(shas) <= {s for n, s in agents.pushed if n == "a"}


async def test_an_agents_transfer_event_is_kept_with_the_controllers_bytes_and_makes_it_a_holder(
    setup: tuple[Controller, FakeAgents, dict[str, Any], list[str]],
) -> None:
    controller, _, version, _ = setup
    job = _job(version, "a")
    controller.machine.jobs[job.id] = job
    task = job.tasks[0]
    task.dataset_transfer = {"bytes_from_controller": 300}
    event = TaskEvent(task.agent_task_id, 1, 0.0, DatasetTransfer(1000, 0, 0, 500, 1.25, 2, 1))
    controller.attempts.ingest.apply(job, task, event)
    assert task.dataset_transfer == {
        "bytes_from_peers": 1000,
        "bytes_from_controller": 300,
        "bytes_from_store": 0,
        "cached_bytes": 200,
        "seconds": 1.25,
        "peers_used": 2,
        "peer_failures": 1,
    }
    assert controller.attempts.holders.holders("x" * 64, version["content_id"]) == {"a"}


def test_the_holders_index_learns_and_forgets() -> None:
    holders = Holders()
    holders.saw("a", ["f1", "f2"])
    holders.holds_version("b", "v1")
    assert holders.holders("f1", "v1") == {"a", "b"}
    assert holders.holders("chunk", "v2", whole="f2") == {"a"}  # a chunk of a file it holds whole
    holders.saw("a", [], lacks=["f1"])  # evicted
    holders.saw("b", [], lacks=["v1"])  # its manifest is gone: the tree too
    assert holders.holders("f1", "v1") == set()
    holders.holds_version("b", "v1")
    holders.cache_listed("b", ["v2"])
    assert holders.holders("f1", "v1") == set() and holders.holders("f1", "v2") == {"b"}
    holders.forget("b")
    assert holders.holders("f1", "v2") == set()


def test_spread_names_each_blob_with_a_few_holders_balancing_the_first_choice() -> None:
    named = spread({f"s{i}": ["a", "b", "c", "d"] for i in range(8)}, {f"s{i}": 10 for i in range(8)}, per_blob=2)
    assert sum(len(v) for v in named.values()) == 16
    assert {node for node, shas in named.items() if shas} == {"a", "b", "c", "d"}


async def test_a_queued_jobs_dataset_is_staged_once_over_its_likely_agents_and_not_after_it_is_placed(
    setup: tuple[Controller, FakeAgents, dict[str, Any], list[str]],
) -> None:
    controller, agents, version, shas = setup
    mid = version["content_id"]
    job = _job(version, "", "")
    for task in job.tasks:
        task.state = TaskRunState.PENDING
    controller.attempts.stage(job, ["a", "bb"])
    controller.attempts.stage(job, ["a", "bb"])  # once per job
    await controller.background.idle()
    files = [(node, sha) for node, sha in agents.pushed if sha in shas]
    assert sorted(sha for _, sha in files) == shas and {node for node, _ in files} == {"a", "bb"}
    assert sorted(node for node, sha in agents.pushed if sha == mid) == ["a", "bb"]
    placed = _job({**version}, "ccc")
    placed.id = "j2"
    controller.attempts.stage(placed, ["ccc"])  # its task is dispatched already: its dispatch sends it
    await controller.background.idle()
    assert not [n for n, _ in agents.pushed if n == "ccc"]


def test_placement_prefers_agents_holding_the_data_without_waiting_for_them() -> None:
    caps = [
        Capacity("a", "a", 1, workloads=frozenset({"script"})),
        Capacity("b", "b", 1, workloads=frozenset({"script"})),
    ]
    request = Request("j", 0, 1, (0,), workload="script", prefer=("b",))
    assert [p.node_id for p in plan([request], caps, 0.0, 300.0)] == ["b"]
    caps[1].free_slots = 0  # the holder is busy: the job runs elsewhere now
    assert [p.node_id for p in plan([request], caps, 0.0, 300.0)] == ["a"]


async def test_big_blobs_nobody_holds_go_one_per_reader_so_every_reader_can_serve_the_others(tmp_path: Path) -> None:
    agents = FakeAgents()
    for node in ("a", "bb", "ccc"):
        agents.add(node)
    controller = await _controller(tmp_path, agents)
    entries, shas = [], []
    for i in range(3):  # three chunk-sized blobs
        data = bytes([i]) * (1 << 20)
        sha = hashlib.sha256(data).hexdigest()
        controller.blobs.path(sha).parent.mkdir(parents=True, exist_ok=True)
        controller.blobs.path(sha).write_bytes(data)
        entries.append(ManifestEntry(f"big{i}.bin", 0o644, sha, len(data)))
        shas.append(sha)
    body = manifest_bytes(entries)
    mid = hashlib.sha256(body).hexdigest()
    controller.blobs.path(mid).parent.mkdir(parents=True, exist_ok=True)
    controller.blobs.path(mid).write_bytes(body)
    version = {"name": "big", "version": 1, "content_id": mid, "source": "upload"}
    job = _job(version, "a", "bb", "ccc")
    results = await asyncio.gather(*(_send(controller, job, i) for i in range(3)))
    for (peers, _, _), node in zip(results, ("a", "bb", "ccc"), strict=True):  # each named the other two
        assert sorted(p.node_id for p in peers) == sorted({"a", "bb", "ccc"} - {node})
    await _shares_sent(controller)
    files = sorted((node, sha) for node, sha in agents.pushed if sha in shas)
    assert sorted(sha for _, sha in files) == sorted(shas) and [n for n, _ in files] == ["a", "bb", "ccc"]
    await controller.store.close()


def test_exchange_order_puts_chunks_in_file_order_then_whole_files_biggest_first() -> None:
    entries = [
        ManifestEntry("a.bin", 0o644, "a" * 64, CHUNK_BYTES + 1, ("c" * 64, "d" * 64)),
        ManifestEntry("b.txt", 0o644, "b" * 64, 10),
        ManifestEntry("e.bin", 0o644, "e" * 64, CHUNK_BYTES + 2, ("f" * 64, "0" * 64)),
        ManifestEntry("g.txt", 0o644, "1" * 64, 20),
    ]
    order = exchange_order(entries)
    assert sorted(order, key=order.__getitem__) == ["c" * 64, "d" * 64, "f" * 64, "0" * 64, "1" * 64, "b" * 64]


async def test_shares_are_dealt_and_pushed_in_exchange_order_so_files_complete_early(tmp_path: Path) -> None:
    """Consecutive chunks of a file go to different readers and each reader is pushed its share in file order (the
    order readers ask their peers in): every reader holds its piece of the first file first."""
    agents = FakeAgents()
    for node in ("a", "bb", "ccc"):
        agents.add(node)
    controller = await _controller(tmp_path, agents)
    entries = []
    for i in range(2):  # two files of three chunks each
        data = os.urandom(2 * CHUNK_BYTES + (2 << 20))  # (a last chunk under SHARE_BIG would go beside)
        chunks = tuple(hashlib.sha256(data[o : o + CHUNK_BYTES]).hexdigest() for o in range(0, len(data), CHUNK_BYTES))
        for o, sha in zip(range(0, len(data), CHUNK_BYTES), chunks, strict=True):
            controller.blobs.path(sha).parent.mkdir(parents=True, exist_ok=True)
            controller.blobs.path(sha).write_bytes(data[o : o + CHUNK_BYTES])
        entries.append(ManifestEntry(f"f{i}.bin", 0o644, hashlib.sha256(data).hexdigest(), len(data), chunks))
    body = manifest_bytes(entries)
    mid = hashlib.sha256(body).hexdigest()
    controller.blobs.path(mid).parent.mkdir(parents=True, exist_ok=True)
    controller.blobs.path(mid).write_bytes(body)
    version = {"name": "big", "version": 1, "content_id": mid, "source": "upload"}
    job = _job(version, "a", "bb", "ccc")
    await asyncio.gather(*(_send(controller, job, i) for i in range(3)))
    await _shares_sent(controller)
    order = exchange_order(entries)
    pushed = [(node, sha) for node, sha in agents.pushed if sha in order]
    assert sorted(sha for _, sha in pushed) == sorted(order)  # one copy
    for node in ("a", "bb", "ccc"):
        mine = [sha for n, sha in pushed if n == node]
        assert mine == sorted(mine, key=order.__getitem__) and len(mine) == 2, (node, mine)
        assert mine[0] in entries[0].chunks and mine[1] in entries[1].chunks  # its piece of f0, then of f1
    await controller.store.close()


async def test_a_job_left_waiting_by_placement_is_staged_once_it_has_waited_a_while(
    setup: tuple[Controller, FakeAgents, dict[str, Any], list[str]],
) -> None:
    controller, agents, version, _ = setup
    for node in agents.fleet:
        agents.hold(node, "busy")  # every slot taken: the job waits
    job = _job(version, "", "")
    for task in job.tasks:
        task.state = TaskRunState.PENDING
    controller.attempts.holders.holds_version("ccc", version["content_id"])
    job.queued_since = controller.attempts.clock.time()
    controller.machine.restore([job])
    controller.placement.schedule()
    assert job.id not in controller.attempts.staged  # it may be placed in a moment
    job.queued_since -= 10
    controller.placement.schedule()
    assert job.id in controller.attempts.staged
    await controller.background.idle()
    assert {node for node, _ in agents.pushed} == {"ccc", "a"}  # the holder first, then one more for two ranks
