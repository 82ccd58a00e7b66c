"""The store contract, run against every backend: SQLite, and MongoDB through a SecantusDB server process
(or the MongoDB that TENSORFLEET_TEST_MONGODB_URI names)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pymongo.errors
import pytest

from tensorfleet_desktop.controller.model import ArtifactInfo, Job, JobEventRecord, JobState, JobTask, TaskRunState
from tensorfleet_desktop.controller.store import open_store
from tensorfleet_desktop.controller.store.base import JobStore
from tensorfleet_desktop.controller.store.sqlite import SqliteJobStore


@pytest.fixture(params=["sqlite", pytest.param("mongodb", marks=pytest.mark.slow)])  # a server process: slow
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'tf.db'}")
    else:
        s = open_store(f"{request.getfixturevalue('mongo_uri')}/tf_{uuid.uuid4().hex[:12]}")
    await s.open()
    yield s
    await s.close()


def _job(job_id: str = "j1") -> Job:
    return Job(
        id=job_id,
        spec={"algorithm": "noop"},
        submitter="me@here",
        seq_no=1,
        created_at=1.0,
        tasks=[JobTask(index=0, state=TaskRunState.RUNNING, agent_task_id=f"{job_id}-r0-a1", attempt=1)],
    )


def _metric(seq: int, agent_seq: int, attempt: str = "j1-r0-a1") -> JobEventRecord:
    return JobEventRecord(
        job_id="j1",
        seq=seq,
        time=float(seq),
        kind="metric",
        task_index=0,
        step=agent_seq,
        name="loss",
        value=1.0 / agent_seq,
        attempt_id=attempt,
        agent_seq=agent_seq,
    )


async def test_jobs_round_trip(store: JobStore) -> None:
    job = _job()
    job.metrics = {"loss": 0.5}
    store.save_job(job)
    job.state = JobState.SUCCEEDED
    store.save_job(job)
    await store.flush()
    (loaded,) = await store.load_jobs()
    assert loaded.to_dict() == job.to_dict()


async def test_events_are_idempotent_and_restore_cursors(store: JobStore) -> None:
    store.save_job(_job())
    store.append_events([_metric(1, 1), _metric(2, 2)], {"j1-r0-a1": 2})
    store.append_events([_metric(3, 2)], {"j1-r0-a1": 2})  # a replayed agent event: ignored
    store.append_events([_metric(3, 3)], {"j1-r0-a1": 3})
    await store.flush()
    rows = await store.events("j1", 0, ("metric",))
    assert [(r.seq, r.agent_seq) for r in rows] == [(1, 1), (2, 2), (3, 3)]
    assert [r.seq for r in await store.events("j1", 2)] == [3]
    (loaded,) = await store.load_jobs()
    assert loaded.tasks[0].cursor == 3 and loaded.last_event_seq == 3


async def test_events_limit_reads_a_page_in_seq_order(store: JobStore) -> None:
    """`limit` pages through a history (what WatchJob's replay does): at most that many, from after_seq + 1,
    across a missing seq (an agent event stored already takes a seq that is never stored)."""
    store.save_job(_job())
    store.append_events([_metric(i, i) for i in (7, 3, 9, 1, 5, 2, 12, 8, 4, 10, 11)], {"j1-r0-a1": 12})  # no 6
    await store.flush()
    assert [e.seq for e in await store.events("j1", 0, limit=4)] == [1, 2, 3, 4]
    assert [e.seq for e in await store.events("j1", 4, limit=4)] == [5, 7, 8, 9]
    assert [e.seq for e in await store.events("j1", 9, limit=4)] == [10, 11, 12]
    assert await store.events("j1", 12, limit=4) == []
    assert [e.seq for e in await store.events("j1", 5, ("metric",), 0, limit=2)] == [7, 8]
    assert [e.seq for e in await store.events("j1", 6)] == [7, 8, 9, 10, 11, 12]  # limit 0: all
    assert (await store.events("j1", 2, limit=1))[0] == _metric(3, 3)


async def test_delete_job_takes_its_events_and_cursors_and_nothing_else(store: JobStore) -> None:
    store.save_job(_job("j1"))
    store.save_job(_job("j2"))
    store.append_events([_metric(1, 1), _metric(2, 2)], {"j1-r0-a1": 2})
    other = [dataclasses.replace(_metric(i, i, "j2-r0-a1"), job_id="j2") for i in (1, 2)]
    store.append_events(other, {"j2-r0-a1": 2})
    store.append_events([_metric(3, 3)], {"j1-r0-a1": 3})  # still queued: applied before the deletion
    await store.delete_job("j1")  # committed when it returns
    (loaded,) = await store.load_jobs()
    assert loaded.id == "j2" and loaded.tasks[0].cursor == 2 and loaded.last_event_seq == 2
    assert await store.events("j1") == [] and [e.seq for e in await store.events("j2")] == [1, 2]
    store.save_job(_job("j1"))  # the same id again starts with nothing of the deleted one: no cursor, no events
    await store.flush()
    again = {j.id: j for j in await store.load_jobs()}["j1"]
    assert again.tasks[0].cursor == 0 and again.last_event_seq == 0
    await store.delete_job("j1")
    await store.delete_job("j1")  # already gone: nothing to do
    assert [j.id for j in await store.load_jobs()] == ["j2"]


async def test_agents(store: JobStore) -> None:
    store.save_agent("n1", {"address": "10.0.0.1:50051", "source": "manual"})
    store.save_agent("n2", {"address": "10.0.0.2:50051", "source": "manual"})
    store.delete_agent("n1")
    await store.flush()
    assert await store.load_agents() == {"n2": {"address": "10.0.0.2:50051", "source": "manual"}}


async def test_pools(store: JobStore) -> None:
    """A pool's settings (issue 25) persist by name; its allocations live in Slurm, not here."""
    body = {"name": "gpu", "partition": "a100", "max_nodes": 2, "sbatch_args": ["--gres=gpu:4"], "created_at": 1.0}
    store.save_pool("gpu", body)
    store.save_pool("cpu", {**body, "name": "cpu"})
    store.delete_pool("cpu")
    store.save_pool("gpu", {**body, "max_nodes": 3})  # an upsert
    await store.flush()
    assert await store.load_pools() == {"gpu": {**body, "max_nodes": 3}}


async def test_a_schema_3_database_gains_the_pools_table(tmp_path: Path) -> None:
    """A controller's database from before pools is migrated on open: its jobs stay, pools can be saved."""
    path = tmp_path / "tf.db"
    store = SqliteJobStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE pools")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    store = SqliteJobStore(path)
    await store.open()
    store.save_pool("p", {"name": "p"})
    await store.flush()
    assert await store.load_pools() == {"p": {"name": "p"}}
    await store.close()


async def test_many_writes_are_queued_and_batched(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 event writes, queued one by one from the loop, are all kept, in far fewer database writes than
    writes (one transaction per batch in SQLite, one bulk insert per batch in MongoDB). How fast: benchmarks/
    store_bench.py, beside plain sqlite3."""
    writes: list[int] = []
    write = store._commit  # type: ignore[attr-defined]  # the writer thread's one group of writes

    def counted(*args: object) -> object:
        writes.append(1)
        return write(*args)

    monkeypatch.setattr(store, "_commit", counted)
    store.save_job(_job())
    for i in range(1, 5001):
        store.append_events([_metric(i, i)], {"j1-r0-a1": i})
    await store.flush()
    assert [e.seq for e in await store.events("j1", 0)] == list(range(1, 5001))
    assert 1 <= len(writes) <= 500, f"{len(writes)} database writes for 5,000 queued writes"


def test_unknown_scheme_lists_supported() -> None:
    with pytest.raises(ValueError, match="supported schemes are sqlite://"):
        open_store("postgres://db/tf")


def _version(name: str = "iris-rf", algorithm: str = "random_forest", accuracy: float = 0.9) -> dict[str, object]:
    return {"name": name, "algorithm": algorithm, "created_at": 1.0, "metrics": {"test_accuracy": accuracy}}


async def test_concurrent_registrations_get_distinct_versions(store: JobStore) -> None:
    made = await asyncio.gather(*(store.register_model(_version()) for _ in range(8)))
    assert sorted(m["version"] for m in made) == list(range(1, 9))
    assert (await store.register_model(_version("other")))["version"] == 1
    listed = await store.model_versions("iris-rf")
    assert sorted(m["version"] for m in listed) == list(range(1, 9))


async def test_aliases_tags_and_deletion(store: JobStore) -> None:
    for accuracy in (0.8, 0.9):
        await store.register_model(_version(accuracy=accuracy))
    assert await store.set_alias("iris-rf", "production", 1) is True
    assert await store.set_alias("iris-rf", "production", 2) is True  # moves
    assert await store.set_alias("iris-rf", "staging", 7) is False  # no such version
    assert await store.update_model("iris-rf", 2, {"tags": ["best"], "description": "v2"}) is True
    two = await store.get_model("iris-rf", 2)
    assert two is not None and two["aliases"] == ["production"] and two["tags"] == ["best"]
    assert (await store.get_model("iris-rf", 1) or {})["aliases"] == []
    assert await store.remove_alias("iris-rf", "production") is True
    assert await store.remove_alias("iris-rf", "production") is False
    await store.set_alias("iris-rf", "production", 2)
    assert await store.delete_model("iris-rf", 2) is True
    assert await store.get_model("iris-rf", 2) is None and await store.delete_model("iris-rf", 2) is False
    assert (await store.register_model(_version()))["version"] == 3  # versions are never reused
    assert [m["aliases"] for m in await store.model_versions("iris-rf")] == [[], []]


async def test_a_failed_registry_call_keeps_the_other_writes(store: JobStore) -> None:
    """The database refuses one registration; that call fails alone: the writes queued around it are kept
    and the store goes on registering."""
    store.save_job(_job("kept"))
    if isinstance(store, SqliteJobStore):  # a NOT NULL column
        with pytest.raises(sqlite3.IntegrityError, match=r"NOT NULL constraint failed: models\.algorithm"):
            await store.register_model({"name": "broken", "algorithm": None, "created_at": 1.0})
    else:  # MongoDB has no NOT NULL: the same document id twice
        await store.register_model({"name": "broken", "algorithm": "x", "created_at": 1.0, "_id": 1})
        with pytest.raises(pymongo.errors.DuplicateKeyError, match="duplicate key"):
            await store.register_model({"name": "broken", "algorithm": "x", "created_at": 1.0, "_id": 1})
    store.save_job(_job("after"))
    assert (await store.register_model(_version("fine")))["version"] == 1
    await store.flush()
    assert sorted(j.id for j in await store.load_jobs()) == ["after", "kept"]


async def test_imported_versions_keep_their_numbers(store: JobStore) -> None:
    assert await store.put_model_version({**_version(), "version": 7, "aliases": ["production"]}) is True
    assert await store.put_model_version({**_version(), "version": 7}) is False  # already there
    assert (await store.register_model(_version()))["version"] == 8  # new ones follow the imported
    assert sorted(m["version"] for m in await store.model_versions("iris-rf")) == [7, 8]


def _sweep(trials: int = 200) -> Job:
    job = _job("jsweep")
    job.spec = {"algorithm": "decision_tree", "sweep": {"trials": trials}}
    job.tasks = [JobTask(index=i, params={"max_depth": i % 10 + 1}) for i in range(trials)]
    job.artifacts = [
        ArtifactInfo(f"{i:064x}", 10, "model" if i % 2 else "report", f"f{i}", i // 2) for i in range(2 * trials)
    ]
    return job


async def test_a_trial_save_writes_its_row_and_the_summary_not_the_whole_job(store: JobStore) -> None:
    job = _sweep()
    await store.insert_job(job)
    trial, other = job.tasks[7], job.tasks[8]
    trial.state, trial.metrics = TaskRunState.SUCCEEDED, {"test_accuracy": 0.9}
    other.state = TaskRunState.RUNNING  # changed without a save naming it: a partial save leaves its row alone
    job.metrics = {"best_trial": 7.0}
    job.artifacts.append(ArtifactInfo("f" * 64, 3, "model", "model.skops", 7))
    job.tasks.append(JobTask(index=200))  # a trial added since the last save is written with the next one
    store.save_job(job, [trial])
    await store.flush()
    (loaded,) = await store.load_jobs()
    assert loaded.metrics == {"best_trial": 7.0} and len(loaded.tasks) == 201 and len(loaded.artifacts) == 401
    assert loaded.tasks[7].state is TaskRunState.SUCCEEDED and loaded.tasks[7].metrics == {"test_accuracy": 0.9}
    assert loaded.tasks[8].state is TaskRunState.PENDING
    assert loaded.artifacts[-1].sha256 == "f" * 64 and [t.index for t in loaded.tasks] == list(range(201))
    store.save_job(job)  # everything
    job.artifacts = job.artifacts[-3:]  # trimmed (old checkpoints go): the artifact rows are rewritten
    del job.tasks[5:]  # a retried sweep starts over with fewer tasks
    store.save_job(job, [])
    await store.flush()
    (loaded,) = await store.load_jobs()
    assert loaded.to_dict() == job.to_dict()
    await store.delete_job(job.id)
    assert await store.load_jobs() == []


async def test_a_job_body_from_schema_2_keeps_its_tasks(tmp_path: Path) -> None:
    """Before schema 3 a job's body held its tasks and artifacts: such a job loads whole, and is split at its save."""
    path = tmp_path / "tf.db"
    store = SqliteJobStore(path)
    await store.open()
    job = _sweep(3)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO jobs VALUES (?, ?, ?, ?)", (job.id, "QUEUED", 1.0, json.dumps(job.to_dict())))
    (loaded,) = await store.load_jobs()
    assert loaded.to_dict() == job.to_dict()
    loaded.tasks[1].state = TaskRunState.RUNNING
    store.save_job(loaded, [loaded.tasks[1]])  # its first save since start is whole
    await store.flush()
    (again,) = await store.load_jobs()
    assert again.to_dict() == loaded.to_dict()
    await store.close()


async def test_dataset_versions(store: JobStore) -> None:
    """A row per NAME:VERSION (issue 20); a dataset stored before versions stays readable until it is migrated."""
    for version in (1, 2, 3):
        store.save_dataset_version("pets", version, {"name": "pets", "version": version, "files": version})
    store.delete_dataset_version("pets", 2)
    store.save_dataset("legacy", {"name": "legacy", "sha256": "ab" * 32})
    await store.flush()
    rows = sorted(await store.load_dataset_versions(), key=lambda r: (r["name"], r["version"]))
    assert [(r["name"], r["version"]) for r in rows] == [("pets", 1), ("pets", 3)]
    assert rows[1]["files"] == 3
    assert list(await store.load_datasets()) == ["legacy"]
