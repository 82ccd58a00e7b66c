"""The controller's own storage under faults: a full disk, files a crash left behind, a damaged blob.

The full disk is SQLite's own size limit (PRAGMA max_page_count, set on every connection the store opens):
a write past it fails with SQLITE_FULL, the answer SQLite gives when the disk is full (ENOSPC).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tensorfleet_desktop.controller.agent_link import FleetAgents
from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.fleet import AgentRecord, AgentState, Fleet
from tensorfleet_desktop.controller.metrics import ControllerMetrics
from tensorfleet_desktop.controller.model import Job, JobEventRecord, JobState, JobTask, TaskRunState
from tensorfleet_desktop.controller.registry import DAMAGED, MISSING
from tensorfleet_desktop.controller.store import engine
from tensorfleet_desktop.controller.store.base import StoreFullError
from tensorfleet_desktop.controller.store.blobs import BlobStore
from tensorfleet_desktop.controller.store.sqlite import SqliteJobStore

FULL = r"controller data dir full \(\d+ MiB free"


class FullDisk:
    """Every connection the store opens, and a switch between full (no page beyond those the file has)
    and not."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.connections: list[sqlite3.Connection] = []
        self.full = False
        real = sqlite3.connect

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn: sqlite3.Connection = real(*args, **kwargs)
            self.connections.append(conn)
            self._limit(conn)
            return conn

        monkeypatch.setattr(sqlite3, "connect", connect)

    def _limit(self, conn: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.ProgrammingError):  # closed ones
            # a limit below the file's size is clamped to it: nothing more fits
            conn.execute(f"PRAGMA max_page_count = {1 if self.full else 1 << 30}")

    def fill(self) -> None:
        self.full = True
        for conn in self.connections:
            self._limit(conn)

    def free(self) -> None:
        self.full = False
        for conn in self.connections:
            self._limit(conn)


def _job(job_id: str, source_bytes: int = 100) -> Job:
    """A job whose stored form takes about `source_bytes` (big ones need new pages in the database)."""
    return Job(
        id=job_id,
        spec={"algorithm": "script", "script": {"name": "s.py", "source": "#" * source_bytes}},
        submitter="me@here",
        seq_no=1,
        created_at=time.time(),
    )


def _script(source_bytes: int = 20_000) -> dict[str, Any]:
    return {"algorithm": "script", "script": {"name": "s.py", "source": "# padding " + "x" * source_bytes}}


def _fleet(controller: Controller) -> Fleet:
    """The fleet behind the controller's AgentPort, where these tests put their stand-in agents."""
    assert isinstance(controller.agents, FleetAgents)
    return controller.agents.fleet


def _controller(store: SqliteJobStore, blobs: BlobStore) -> Controller:
    fleet = Fleet()
    return Controller(store, blobs, ControllerMetrics(), agents=FleetAgents(fleet))


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    return FullDisk(monkeypatch)


@pytest.fixture
async def controller(tmp_path: Path, disk: FullDisk) -> AsyncIterator[Controller]:
    store = SqliteJobStore(tmp_path / "tensorfleet.db")
    await store.open()
    blobs = BlobStore(tmp_path / "blobs")
    await blobs.open()
    controller = _controller(store, blobs)
    await controller.start()
    yield controller
    await controller.stop()
    await store.close()


async def test_the_store_holds_writes_while_the_disk_is_full_and_saves_them_when_space_returns(
    tmp_path: Path, disk: FullDisk
) -> None:
    store = SqliteJobStore(tmp_path / "tensorfleet.db")
    await store.open()
    try:
        await store.insert_job(_job("j1"))
        disk.fill()
        running = _job("j1", source_bytes=40_000)
        running.state = JobState.RUNNING
        store.save_job(running)  # an update nobody waits for: held, not lost
        with pytest.raises(StoreFullError, match=FULL):
            await store.insert_job(_job("j2", source_bytes=20_000))
        with pytest.raises(StoreFullError, match=FULL):
            await store.flush()
        store.save_job(running)  # still accepted: the store is not dead
        disk.free()
        await store.flush()  # the held writes go in with the next commit
        jobs = {job.id: job for job in await store.load_jobs()}
        assert sorted(jobs) == ["j1"] and jobs["j1"].state is JobState.RUNNING
        await store.insert_job(_job("j2", source_bytes=20_000))
        assert sorted(job.id for job in await store.load_jobs()) == ["j1", "j2"]
    finally:
        await store.close()


class _Outage(Exception):
    """The database did not answer."""


class UnansweringStore(SqliteJobStore):
    """SQLite behind a database that does not answer while `down` (as MongoDB does in an outage)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.down = False
        self.tries = 0
        self.retried = threading.Event()  # the writer tried twice while down

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        if self.down:
            self.tries += 1
            if self.tries >= 2:
                self.retried.set()
            raise _Outage("no answer")
        with super()._transaction(conn):
            yield

    def _unreachable(self, exc: Exception) -> bool:
        return isinstance(exc, _Outage)


async def test_writes_wait_while_the_database_does_not_answer_and_all_land_once_it_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "_RETRY_UNREACHABLE", 0.01)
    store = UnansweringStore(tmp_path / "tensorfleet.db")
    await store.open()
    try:
        store.down = True
        store.save_job(_job("j1"))
        metric = JobEventRecord(job_id="j1", seq=1, time=1.0, kind="metric", name="loss", value=0.5)
        store.append_events([metric], {})
        register = asyncio.create_task(store.register_model({"name": "m", "algorithm": "a", "created_at": 1.0}))
        flush = asyncio.create_task(store.flush())
        assert await asyncio.to_thread(store.retried.wait, 10)
        for _ in range(3):  # what the writer settled before its retry has reached the loop
            await asyncio.sleep(0)
        assert not flush.done() and not register.done()  # they wait for the database, neither fail nor drop
        store.down = False
        await asyncio.wait_for(flush, 10)
        assert (await register)["version"] == 1
        assert [job.id for job in await store.load_jobs()] == ["j1"]
        assert await store.events("j1") == [metric]
        store.save_job(_job("j2"))  # the store goes on
        await store.flush()
    finally:
        store.down = False  # or close() would wait for it
        await store.close()


async def test_a_submit_the_store_cannot_save_is_refused_and_leaves_no_job(
    controller: Controller, disk: FullDisk
) -> None:
    disk.fill()
    with pytest.raises(StoreFullError, match=FULL):
        await controller.submit(_script(), "me")
    assert controller.list_jobs() == []  # nothing in memory that is not saved
    disk.free()
    job = await controller.submit(_script(), "me")
    assert [j.id for j in controller.list_jobs()] == [job.id]
    assert [j.id for j in await controller.store.load_jobs()] == [job.id]


async def test_gc_removes_what_killed_transfers_left_but_not_a_transfer_in_progress(controller: Controller) -> None:
    root = controller.blobs_dir
    (root / "ab").mkdir(parents=True)
    (root / "incoming").mkdir()
    dead = [
        root / "ab" / f"{'ab' * 32}.4242.part",
        root / "ab" / f".{'ab' * 32}.77.part",
        root / "incoming" / "upload-1",
    ]
    live = root / "ab" / f"{'cd' * 32}.{os.getpid()}.part"
    hour_ago = time.time() - 3600
    for path in dead:
        path.write_bytes(b"x" * 1000)
        os.utime(path, (hour_ago, hour_ago))
    live.write_bytes(b"y" * 1000)
    freed = await controller.collect_garbage(grace=600)
    assert [p for p in dead if p.exists()] == [] and live.exists()
    assert (freed["deleted"], freed["partials"], freed["freed_bytes"]) == (0, 3, 3000)  # leftovers, not blobs


class _Agent:
    """The agent end of a blob copy: it holds the good bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sent = 0

    async def get_blob(self, sha256: str, dest: Path) -> int:
        assert hashlib.sha256(self.data).hexdigest() == sha256
        await asyncio.to_thread(dest.write_bytes, self.data)
        self.sent += 1
        return len(self.data)


async def test_a_damaged_blob_at_its_destination_is_fetched_again_from_the_agent(controller: Controller) -> None:
    data = b"model bytes " * 1000
    sha = hashlib.sha256(data).hexdigest()
    agent = _Agent(data)
    record = AgentRecord(node_id="n1", address="127.0.0.1:1", source="manual", state=AgentState.ONLINE)
    record.client = agent  # type: ignore[assignment]
    _fleet(controller).agents[record.node_id] = record
    dest = controller.blobs.path(sha)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data[: len(data) // 2])  # a crash or a bad disk cut it short
    await controller.artifacts.fetch_blob("n1", sha)
    assert dest.read_bytes() == data and agent.sent == 1
    await controller.artifacts.fetch_blob("n1", sha)  # intact now: not copied again
    assert agent.sent == 1


async def test_models_list_flags_a_version_whose_file_is_missing_or_damaged(controller: Controller) -> None:
    good, damaged, missing = (f"bytes of model {i}".encode() * 100 for i in range(3))
    records: list[dict[str, Any]] = []
    for data in (good, damaged, missing):
        sha = hashlib.sha256(data).hexdigest()
        records.append({"name": "m", "version": len(records) + 1, "sha256": sha})
        if data is not missing:
            path = controller.blobs.path(sha)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    assert [r["blob"] for r in await controller.registry.with_blob_status(records)] == ["", "", MISSING]
    path = controller.blobs.path(records[1]["sha256"])
    flipped = bytearray(damaged)
    flipped[10] ^= 0xFF
    path.write_bytes(bytes(flipped))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert [r["blob"] for r in await controller.registry.with_blob_status(records)] == ["", DAMAGED, MISSING]


async def test_a_job_stopped_while_saving_its_model_finishes_after_a_restart(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "tensorfleet.db")
    await store.open()
    job = _job("j1")
    job.spec = {"algorithm": "noop"}  # no model to register
    job.state, job.tasks = JobState.RUNNING, [JobTask(index=0, state=TaskRunState.SUCCEEDED)]
    await store.insert_job(job)
    blobs = BlobStore(tmp_path / "blobs")
    await blobs.open()
    controller = _controller(store, blobs)
    await controller.start()
    try:
        await asyncio.wait_for(controller.background.idle(), 10)  # its registration
        assert controller.get("j1").state is JobState.SUCCEEDED
    finally:
        await controller.stop()
        await store.close()


def test_a_disk_full_oserror_names_the_controllers_data_dir_and_its_free_space(tmp_path: Path) -> None:
    """The generic disk-full path (an OSError with no file name, or a relative one) names the data dir, not '.'."""
    import errno
    import re
    import shutil

    import grpc

    from tensorfleet_desktop.controller import rpc_errors

    data_dir = tmp_path / "controller"
    data_dir.mkdir()
    rpc_errors.set_data_dir(data_dir)
    try:
        for exc in (
            OSError(errno.ENOSPC, "No space left on device"),
            OSError(errno.ENOSPC, "No space left on device", "tensorfleet.db-journal"),
            OSError(errno.ENOSPC, "No space left on device", str(data_dir / "blobs" / "ab" / "x.part")),
        ):
            code, message = rpc_errors.status_of(exc)
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
            found = re.fullmatch(r"controller data dir full \((\d+) MiB free in (.+)\)", message)
            assert found is not None and Path(found[2]) == data_dir, message
            assert abs(int(found[1]) - (shutil.disk_usage(data_dir).free >> 20)) < 64, message
    finally:
        rpc_errors.set_data_dir(None)


def _job_with_artifact(controller: Controller, data: bytes, name: str = "model.skops") -> tuple[Job, Any, _Agent]:
    """A job in the controller whose task 0 ran on a connected agent that still holds `data` as artifact `name`."""
    from tensorfleet_desktop.controller.model import ArtifactInfo

    agent = _Agent(data)
    record = AgentRecord(node_id="n1", address="127.0.0.1:1", source="manual", state=AgentState.ONLINE)
    record.client = agent  # type: ignore[assignment]
    _fleet(controller).agents[record.node_id] = record
    job = _job("j-art")
    job.tasks = [JobTask(index=0, node_id="n1")]
    artifact = ArtifactInfo(hashlib.sha256(data).hexdigest(), len(data), "model", name, 0)
    job.artifacts = [artifact]
    controller.jobs[job.id] = job
    return job, artifact, agent


async def test_a_damaged_artifact_is_fetched_again_before_it_is_served(controller: Controller) -> None:
    from tensorfleet_desktop.controller.registry import BlobDamaged

    data = b"artifact bytes " * 1000
    job, artifact, agent = _job_with_artifact(controller, data)
    dest = controller.blobs.path(artifact.sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data[:-1] + b"!")  # same size, one byte flipped
    path = await controller.artifact_path(job, artifact)
    assert path.read_bytes() == data and agent.sent == 1
    await controller.artifact_path(job, artifact)  # intact now: served as is
    assert agent.sent == 1
    del _fleet(controller).agents["n1"]  # damaged again, and nobody has a good copy: data loss, not a bad request
    dest.write_bytes(data[:-1] + b"!")
    with pytest.raises(BlobDamaged, match="damaged"):
        await controller.artifact_path(job, artifact)


async def test_a_registered_models_missing_blob_is_fetched_again_from_its_agent(controller: Controller) -> None:
    data = b"model bytes " * 1000
    job, artifact, agent = _job_with_artifact(controller, data)
    record = {"name": "m", "version": 1, "sha256": artifact.sha256, "job_id": job.id}
    assert not controller.blobs.path(artifact.sha256).exists()  # deleted, or never copied
    path = await controller.registry.verified(record)
    assert path.read_bytes() == data and agent.sent == 1


async def test_concurrent_fetches_of_one_blob_copy_it_once(controller: Controller) -> None:
    data = b"shared bytes " * 1000
    job, artifact, agent = _job_with_artifact(controller, data)
    release = asyncio.Event()
    real = agent.get_blob

    async def slow_get_blob(sha256: str, dest: Path) -> int:
        await release.wait()
        return await real(sha256, dest)

    agent.get_blob = slow_get_blob  # type: ignore[method-assign]
    first = asyncio.create_task(controller.artifact_path(job, artifact))
    second = asyncio.create_task(controller.artifact_path(job, artifact))
    await asyncio.sleep(0)  # both are waiting for the agent now (no timing: release only lets them finish)
    await asyncio.sleep(0)
    release.set()
    paths = await asyncio.gather(first, second)
    assert [p.read_bytes() == data for p in paths] == [True, True]
    assert agent.sent == 1


async def test_two_copies_of_one_blob_into_one_destination_do_not_share_a_temporary_file(tmp_path: Path) -> None:
    """AgentClient.get_blob: a copy that fails must not delete, or write into, the file of another copy."""
    from tensorfleet_agent.rpc.client import AgentClient

    data = b"blob bytes " * 1000
    sha = hashlib.sha256(data).hexdigest()
    dest = tmp_path / sha
    a_wrote, b_wrote, a_fail, a_gone = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()

    class _Chunk:
        def __init__(self, part: str, payload: bytes = b"") -> None:
            self.part, self.data = part, payload
            self.header = type("H", (), {"size": len(data)})()

        def WhichOneof(self, _name: str) -> str:
            return self.part

    async def failing(_start: Any) -> Any:
        yield _Chunk("header")
        yield _Chunk("data", data[:100])
        a_wrote.set()
        await a_fail.wait()
        raise OSError("the agent went away")

    async def whole(_start: Any) -> Any:
        await a_wrote.wait()
        yield _Chunk("header")
        yield _Chunk("data", data)
        b_wrote.set()
        await a_gone.wait()  # the failed copy cleans up before this one moves its file into place

    copies = []
    for stream in (failing, whole):
        client = AgentClient.__new__(AgentClient)
        client.stub = None  # type: ignore[assignment]
        client._stream = stream  # type: ignore[method-assign,assignment]
        copies.append(client)
    a = asyncio.create_task(copies[0].get_blob(sha, dest))
    b = asyncio.create_task(copies[1].get_blob(sha, dest))
    await b_wrote.wait()
    a_fail.set()
    with pytest.raises(OSError, match="went away"):
        await a
    a_gone.set()
    assert await b == len(data)
    assert await asyncio.to_thread(dest.read_bytes) == data
    assert await asyncio.to_thread(lambda: list(tmp_path.glob("*.part"))) == []


async def test_a_job_saving_its_model_cannot_be_paused(controller: Controller) -> None:
    from tensorfleet_desktop.controller.errors import JobError

    job, _artifact, _agent = _job_with_artifact(controller, b"model bytes " * 100)
    job.state = JobState.RUNNING
    job.tasks[0].state = TaskRunState.SUCCEEDED
    del _fleet(controller).agents["n1"]  # its agent is away: the save is retried, the job stays RUNNING meanwhile
    controller.machine.succeed(job)
    await asyncio.sleep(0)
    assert job.state is JobState.RUNNING
    with pytest.raises(JobError, match="all tasks of j-art are done; the job is saving its model"):
        controller.pause(job.id)
    assert job.state is JobState.RUNNING
