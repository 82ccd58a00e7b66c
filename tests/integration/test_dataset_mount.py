"""A task's dataset version on a real Executor (issue 20): real blob cache, real worker processes (forked from the
fork server and spawned). A project's command and a script read the version's files at TENSORFLEET_DATASET_DIR
(the SDK's dataset_dir()), cannot change them, and a second task reuses the tree the first one made; a chunked file
arrives assembled; a damaged chunk fails the task, naming the file."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tensorfleet_agent.core import project_layout
from tensorfleet_agent.core.manifest import CHUNK_BYTES, ManifestEntry, manifest_bytes, manifest_id
from tensorfleet_agent.core.types import (
    BlobRef,
    DatasetMount,
    DatasetTransfer,
    ExitCause,
    Finished,
    LogLine,
    TaskEvent,
    TaskSpec,
    TaskState,
)
from tensorfleet_agent.metrics import AgentMetrics
from tensorfleet_agent.rpc.convert import events_from_batch
from tensorfleet_agent.runtime.blobs import BlobStore
from tensorfleet_agent.runtime.executor import Executor, ExecutorConfig
from tensorfleet_agent.runtime.slots import SlotPool

pytestmark = pytest.mark.slow

BIG = os.urandom(1024) * (CHUNK_BYTES // 1024 + 3)  # just over one chunk: two pieces
# Reads every file under the dataset dir, says what it found, and tries to change one and add one.
READER = b"""
import hashlib, os, stat, sys
import tensorfleet_task as task
root = task.dataset_dir()
assert root is not None and str(root) == os.environ["TENSORFLEET_DATASET_DIR"], (root, os.environ)
for dirpath, dirs, files in sorted(os.walk(root)):
    for name in sorted(files):
        path = os.path.join(dirpath, name)
        data = open(path, "rb").read()
        mode = stat.S_IMODE(os.stat(path).st_mode)
        print("file", os.path.relpath(path, root), len(data), hashlib.sha256(data).hexdigest()[:12], oct(mode))
    print("dir", os.path.relpath(dirpath, root), oct(stat.S_IMODE(os.stat(dirpath).st_mode)))
for attempt in (lambda: open(os.path.join(root, "cat", "1.txt"), "ab"), lambda: open(os.path.join(root, "n"), "w")):
    if os.geteuid() == 0:  # root writes through any mode: it would change the shared tree
        continue
    try:
        attempt().close()
        print("write", "allowed")
    except PermissionError:
        print("write", "refused")
"""


def _put(blobs: BlobStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    if not blobs.has(sha):
        writer = blobs.writer(sha, len(data))
        writer.write(data)
        writer.commit()
    return sha


def _dataset(blobs: BlobStore, files: dict[str, bytes]) -> tuple[DatasetMount, list[ManifestEntry]]:
    """What the controller pushes before RunTask: file blobs, a large file's chunks, the manifest blob."""
    entries = []
    for path, data in sorted(files.items()):
        if len(data) > CHUNK_BYTES:
            chunks = tuple(_put(blobs, data[i : i + CHUNK_BYTES]) for i in range(0, len(data), CHUNK_BYTES))
            entries.append(ManifestEntry(path, 0o644, hashlib.sha256(data).hexdigest(), len(data), chunks))
        else:
            entries.append(ManifestEntry(path, 0o644, _put(blobs, data), len(data)))
    _put(blobs, manifest_bytes(entries))
    return DatasetMount("pets", 1, manifest_id=manifest_id(entries)), entries


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Executor]:
    blobs = BlobStore(tmp_path / "data" / "blobs", 1 << 30)
    executor = Executor(ExecutorConfig(tmp_path / "data", spare_workers=0), SlotPool(2, [], 1), blobs, AgentMetrics())
    await executor.start()
    try:
        yield executor
    finally:
        await executor.close()


_n = iter(range(1_000_000))


def _project_spec(blobs: BlobStore, mount: DatasetMount) -> TaskSpec:
    entries = [ManifestEntry("read.py", 0o644, _put(blobs, READER), len(READER))]
    project = _put(blobs, manifest_bytes(entries))
    n = next(_n)
    return TaskSpec(
        task_id=f"p{n}-{time.monotonic_ns()}",
        job_id=f"job-{n}",
        workload=project_layout.WORKLOAD,
        params={"manifest": project, "command": ["python", "read.py"], "env": "none", "output_dir": "outputs"},
        inputs=(BlobRef(project_layout.MANIFEST_INPUT, project),),
        single_task=True,
        dataset_mount=mount,
    )


def _script_spec(blobs: BlobStore, mount: DatasetMount) -> TaskSpec:
    script = b"import sys, tensorfleet_agent.task as t\n" + READER.replace(b"import tensorfleet_task as task", b"")
    script = script.replace(b"task.dataset_dir()", b"t.dataset_dir()")
    sha = _put(blobs, script)
    n = next(_n)
    return TaskSpec(
        task_id=f"s{n}-{time.monotonic_ns()}",
        job_id=f"job-{n}",
        workload="script",
        params={"script": "read.py", "args": [], "requirements": [], "sha256": sha},
        inputs=(BlobRef("read.py", sha),),
        env={"READER": "1"},  # a task env of its own: a spawned worker, not one forked from the fork server
        dataset_mount=mount,
    )


async def _run(executor: Executor, spec: TaskSpec) -> list[TaskEvent]:
    await executor.run_task(spec)
    out: list[TaskEvent] = []
    async with asyncio.timeout(60):
        async for batch in executor.watch(spec.task_id, 0):
            out.extend(events_from_batch(batch))
            if any(isinstance(e.payload, Finished) for e in out):
                return out
    return out


def _lines(events: list[TaskEvent], stream: str) -> list[str]:
    return [e.payload.line for e in events if isinstance(e.payload, LogLine) and e.payload.stream == stream]


def _transfer(events: list[TaskEvent]) -> DatasetTransfer:
    (transfer,) = [e.payload for e in events if isinstance(e.payload, DatasetTransfer)]
    return transfer


def _finished(events: list[TaskEvent]) -> Finished:
    payload = events[-1].payload
    assert isinstance(payload, Finished), events[-1]
    return payload


async def test_a_project_and_a_script_read_the_version_read_only_and_share_one_tree(agent: Executor) -> None:
    files = {"cat/1.txt": b"meow", "dog/1.txt": b"woof", "big.bin": BIG}
    mount, _entries = _dataset(agent.blobs, files)
    # A ticket (bytes) rides along: the task's record and its worker get the spec without it.
    mount = dataclasses.replace(mount, ticket=b"\x00\xff ticket", ticket_signature=b"\x01sig")
    agent.blobs.note_received(hashlib.sha256(b"meow").hexdigest(), 4, "controller")  # as PutBlob notes it
    first = await _run(agent, _project_spec(agent.blobs, mount))
    assert _finished(first).status is TaskState.SUCCEEDED, (_finished(first), _lines(first, "stderr"))
    stdout = _lines(first, "stdout")
    expected = sorted(
        f"file {path} {len(data)} {hashlib.sha256(data).hexdigest()[:12]} 0o444" for path, data in files.items()
    )
    assert sorted(line for line in stdout if line.startswith("file")) == expected  # the chunked file, assembled
    assert {line for line in stdout if line.startswith("dir")} == {"dir . 0o555", "dir cat 0o555", "dir dog 0o555"}
    if os.geteuid() != 0:  # root writes through any mode: only the bits can be checked then
        assert [line for line in stdout if line.startswith("write")] == ["write refused", "write refused"]
    agent_lines = _lines(first, "agent")
    assert any("dataset pets:v1: 3 file(s)" in line and "materialized read-only" in line for line in agent_lines)
    assert any("1 chunked file(s) assembled" in line for line in agent_lines), agent_lines
    total = sum(len(d) for d in files.values())
    assert _transfer(first) == DatasetTransfer(
        bytes_from_controller=4, cached_bytes=total - 4, seconds=_transfer(first).seconds
    )

    second = await _run(agent, _script_spec(agent.blobs, mount))  # a script, in a worker of its own
    assert _finished(second).status is TaskState.SUCCEEDED, (_finished(second), _lines(second, "stderr"))
    assert sorted(line for line in _lines(second, "stdout") if line.startswith("file")) == expected
    assert any("already on this agent" in line for line in _lines(second, "agent")), _lines(second, "agent")
    assert _transfer(second).cached_bytes == total and _transfer(second).bytes_from_controller == 0
    (tree,) = agent.datasets.trees()  # what ListCache shows
    assert (tree.name, tree.version, tree.content_id, tree.files, tree.bytes) == (
        "pets",
        1,
        mount.manifest_id,
        3,
        total,
    )
    assert [p.name for p in (agent.datasets.root).iterdir() if not p.name.endswith(".json")] == [mount.manifest_id]

    plain = await _run(agent, TaskSpec(f"n{time.monotonic_ns()}", "job-x", "noop"))  # no dataset: nothing set
    assert _finished(plain).status is TaskState.SUCCEEDED


async def test_a_damaged_chunk_fails_the_task_naming_the_file(agent: Executor) -> None:
    mount, entries = _dataset(agent.blobs, {"big.bin": BIG})
    chunk = agent.blobs.path(entries[0].chunks[0])
    chunk.write_bytes(b"\0" * chunk.stat().st_size)
    events = await _run(agent, _project_spec(agent.blobs, mount))
    finished = _finished(events)
    assert finished.status is TaskState.FAILED and finished.exit_cause == ExitCause.SETUP
    assert "'big.bin': chunk 1 of 2" in finished.error and "damaged" in finished.error, finished.error
    assert not (agent.datasets.root / mount.manifest_id).exists()
