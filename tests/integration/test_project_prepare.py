"""A project task's PREPARING step on a real Executor: a real blob cache, a real env cache building with real uv
from a wheelhouse made here (UV_OFFLINE, no index), real worker processes. What is checked is what the journal
says, as the controller reads it: PREPARING before RUNNING, the build log streamed, EnvironmentReady, uv's reason
for a permanent failure, a cancel that ends the build and the task at once, outputs collected on every outcome."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from helpers.agents import AgentProcess
from helpers.waiting import eventually
from helpers.wheelhouse import build_wheel, offline_env
from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.core import project_layout
from tensorfleet_agent.core.manifest import ManifestEntry, manifest_bytes, manifest_id
from tensorfleet_agent.core.types import (
    ArtifactReady,
    BlobRef,
    EnvironmentReady,
    ExitCause,
    Finished,
    LogLine,
    StateChanged,
    TaskEvent,
    TaskSpec,
    TaskState,
)
from tensorfleet_agent.metrics import AgentMetrics
from tensorfleet_agent.rpc import convert
from tensorfleet_agent.rpc.convert import events_from_batch
from tensorfleet_agent.runtime import project_prepare, uv_run
from tensorfleet_agent.runtime.blobs import BlobStore
from tensorfleet_agent.runtime.envs import EnvCache, EnvSpec
from tensorfleet_agent.runtime.executor import Executor, ExecutorConfig
from tensorfleet_agent.runtime.slots import SlotPool

_counter = iter(range(1_000_000))


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheels")
    house = root / "house"
    build_wheel(house, root, "tinyb", "1.0.0")
    return house


@pytest.fixture
def uv_environ(wheelhouse: Path, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, **offline_env(wheelhouse, tmp_path / "uv-cache")}


@pytest.fixture
async def agent(tmp_path: Path, uv_environ: dict[str, str]) -> AsyncIterator[Executor]:
    blobs = BlobStore(tmp_path / "data" / "blobs", 1 << 30)
    envs = EnvCache(tmp_path / "data" / "envs", environ=uv_environ)
    executor = Executor(
        ExecutorConfig(tmp_path / "data", spare_workers=0), SlotPool(4, [], 2), blobs, AgentMetrics(), envs
    )
    await executor.start()
    try:
        yield executor
    finally:
        await executor.close()
        await envs.close()


def _put(blobs: BlobStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    if not blobs.has(sha):
        writer = blobs.writer(sha, len(data))
        writer.write(data)
        writer.commit()
    return sha


def _project(blobs: BlobStore, files: dict[str, bytes], *, push: bool = True) -> str:
    """The project's file blobs and its manifest blob in the cache (what the controller pushes); the manifest id."""
    entries = []
    for path, data in sorted(files.items()):
        sha = _put(blobs, data) if push else hashlib.sha256(data).hexdigest()
        entries.append(ManifestEntry(path, 0o644, sha, len(data)))
    assert _put(blobs, manifest_bytes(entries)) == manifest_id(entries)
    return manifest_id(entries)


def _spec(
    manifest: str, env: str = "auto", command: tuple[str, ...] = ("python", "train.py"), **kw: object
) -> TaskSpec:
    params = {"manifest": manifest, "command": list(command), "env": env, "output_dir": "outputs"}
    n = next(_counter)
    return TaskSpec(
        task_id=f"t{n}-{time.monotonic_ns()}",
        job_id=f"job-{n}",
        workload=project_layout.WORKLOAD,
        params=params,
        inputs=(BlobRef(project_layout.MANIFEST_INPUT, manifest),),
        single_task=True,
        **kw,  # type: ignore[arg-type]
    )


async def _events(executor: Executor, task_id: str, timeout: float = 60) -> list[TaskEvent]:
    out: list[TaskEvent] = []
    async with asyncio.timeout(timeout):
        async for batch in executor.watch(task_id, 0):
            out.extend(events_from_batch(batch))
            if any(isinstance(e.payload, Finished) for e in out):
                return out
    return out


def _states(events: list[TaskEvent]) -> list[TaskState]:
    return [e.payload.state for e in events if isinstance(e.payload, StateChanged)]


def _finished(events: list[TaskEvent]) -> Finished:
    assert isinstance(events[-1].payload, Finished), events[-1]
    return events[-1].payload


def _ready(events: list[TaskEvent]) -> EnvironmentReady:
    (ready,) = [e.payload for e in events if isinstance(e.payload, EnvironmentReady)]
    return ready


def _agent_lines(events: list[TaskEvent]) -> list[str]:
    return [e.payload.line for e in events if isinstance(e.payload, LogLine) and e.payload.stream == "agent"]


def _stdout(events: list[TaskEvent]) -> list[str]:
    return [e.payload.line for e in events if isinstance(e.payload, LogLine) and e.payload.stream == "stdout"]


TRAIN = b"print('training')\n"
USES_TINYB = b"import sys, tinyb\nprint('tinyb', tinyb.VERSION, 'from', sys.prefix)\n"


async def test_a_project_is_prepared_before_it_runs_and_its_env_is_reused(agent: Executor) -> None:
    files = {"train.py": USES_TINYB, "pkg/__init__.py": b"", "requirements.txt": b"tinyb==1.0.0\n"}
    manifest = _project(agent.blobs, files)
    first = _spec(manifest)
    await agent.run_task(first)
    events = await _events(agent, first.task_id)
    assert _finished(events).status is TaskState.SUCCEEDED, _finished(events)
    assert _states(events) == [TaskState.ACCEPTED, TaskState.PREPARING, TaskState.RUNNING]
    kinds = [type(e.payload).__name__ for e in events]
    running = next(
        i for i, e in enumerate(events) if isinstance(e.payload, StateChanged) and e.payload.state is TaskState.RUNNING
    )
    assert kinds.index("EnvironmentReady") < running  # the env is ready before the command may start
    ready = _ready(events)
    assert not ready.cache_hit and ready.key and ready.source == "requirements.txt" and ready.build_seconds > 0
    assert (ready.files, ready.bytes) == (3, sum(map(len, files.values())))
    lines = _agent_lines(events)
    assert any(line.startswith("$ uv pip install") for line in lines), lines  # uv's own lines, streamed
    assert any("tinyb" in line for line in lines), lines
    # the runtime file the project workload reads
    work = agent.journal.get(first.task_id).directory / "work"
    runtime = json.loads((work / project_layout.RUNTIME_FILE).read_text())
    assert set(runtime) == {"workdir", "bin_dir", "python", "output_dir", "sdk_dir", "env_key"}
    assert runtime["env_key"] == ready.key and Path(runtime["python"]).parent == Path(runtime["bin_dir"])
    assert Path(runtime["workdir"]) == work / project_layout.WORKDIR
    assert Path(runtime["output_dir"]) == work / project_layout.WORKDIR / "outputs"
    assert Path(runtime["sdk_dir"]).name == "task_sdk"
    stdout = _stdout(events)
    env_prefix = str(Path(runtime["python"]).parent.parent)
    assert f"tinyb 1.0.0 from {env_prefix}" in stdout, stdout  # the command ran with the env's interpreter
    # the task's copy of the project goes once it ended (its files stay in the blob cache)
    await eventually(lambda: not Path(runtime["workdir"]).exists(), 10, "the project copy removed")
    assert (work / project_layout.RUNTIME_FILE).exists()
    # released when the task ended: evictable
    assert [e.in_use for e in await agent.envs.list()] == [0]

    second = _spec(manifest)
    await agent.run_task(second)
    events = await _events(agent, second.task_id)
    assert _finished(events).status is TaskState.SUCCEEDED
    again = _ready(events)
    assert again.cache_hit and again.key == ready.key and again.build_seconds == 0
    assert agent.envs.builds_started == 1


async def test_env_none_runs_with_the_agents_python(agent: Executor) -> None:
    manifest = _project(agent.blobs, {"train.py": TRAIN, "requirements.txt": b"no-such-package\n"})
    spec = _spec(manifest, env="none")
    await agent.run_task(spec)
    events = await _events(agent, spec.task_id)
    assert _finished(events).status is TaskState.SUCCEEDED
    ready = _ready(events)
    assert (ready.key, ready.source) == ("", "")
    runtime = json.loads((agent.journal.get(spec.task_id).directory / "work" / project_layout.RUNTIME_FILE).read_text())
    assert runtime["python"] == sys.executable and runtime["bin_dir"] == os.path.dirname(sys.executable)
    assert agent.envs.builds_started == 0


async def test_an_env_file_that_includes_another_is_built_from_both(agent: Executor) -> None:
    files = {
        "train.py": USES_TINYB,
        "reqs/main.txt": b"-r common.txt\n",
        "reqs/common.txt": b"tinyb==1.0.0\n",
    }
    spec = _spec(_project(agent.blobs, files), env="reqs/main.txt")
    await agent.run_task(spec)
    events = await _events(agent, spec.task_id)
    assert _finished(events).status is TaskState.SUCCEEDED, _finished(events)
    assert _ready(events).source == "reqs/main.txt"
    assert any(line.startswith("tinyb 1.0.0 from") for line in _stdout(events))


async def test_an_unresolvable_requirement_fails_once_with_uvs_reason(agent: Executor) -> None:
    manifest = _project(agent.blobs, {"train.py": TRAIN, "requirements.txt": b"tinyb==9.9.9\n"})
    spec = _spec(manifest)
    await agent.run_task(spec)
    events = await _events(agent, spec.task_id)
    finished = _finished(events)
    assert (finished.status, finished.exit_cause) == (TaskState.FAILED, ExitCause.ENV_BUILD)
    assert finished.error.startswith("the project's environment could not be built from requirements.txt: ")
    assert "tinyb==9.9.9" in finished.error and "unsatisfiable" in finished.error, finished.error
    assert TaskState.RUNNING not in _states(events)
    assert events[-1].time - events[0].time < 10  # seconds: uv says no at once, nothing is retried
    assert await agent.envs.list() == []


async def test_an_env_file_missing_from_the_project_is_a_permanent_failure(agent: Executor) -> None:
    spec = _spec(_project(agent.blobs, {"train.py": TRAIN}), env="envs/prod.txt")
    await agent.run_task(spec)
    finished = _finished(await _events(agent, spec.task_id))
    assert (finished.status, finished.exit_cause) == (TaskState.FAILED, ExitCause.ENV_BUILD)
    assert "envs/prod.txt" in finished.error


async def test_a_missing_project_file_is_a_setup_failure_naming_the_count(agent: Executor) -> None:
    _put(agent.blobs, TRAIN)
    spec = _spec(_project(agent.blobs, {"train.py": TRAIN, "a.py": b"A = 1\n", "b.py": b"B = 2\n"}, push=False))
    await agent.run_task(spec)
    finished = _finished(await _events(agent, spec.task_id))
    assert (finished.status, finished.exit_cause) == (TaskState.FAILED, ExitCause.SETUP)
    assert "2 blob(s) of the project are not in this agent's cache" in finished.error, finished.error


FAKE_UV = """\
#!/bin/sh
echo "fake uv pid $$ starting: $*"
exec sleep 60
"""


async def test_a_cancel_while_the_env_builds_kills_uv_and_ends_the_task_within_2s(
    agent: Executor, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "uv"
    fake.write_text(FAKE_UV)
    fake.chmod(0o755)
    monkeypatch.setattr(uv_run, "uv_binary", lambda: str(fake))
    spec = _spec(_project(agent.blobs, {"train.py": TRAIN, "requirements.txt": b"tinyb\n"}))
    await agent.run_task(spec)

    async def uv_started() -> list[str]:
        return [line for line in _agent_lines(await _partial(agent, spec.task_id)) if "fake uv pid" in line]

    (line,) = await eventually(uv_started, 30, "uv started")  # its line streamed while PREPARING
    uv_pid = int(line.split()[3])
    cancelled_at = time.time()
    await agent.cancel(spec.task_id, "changed my mind")
    events = await _events(agent, spec.task_id)
    finished = _finished(events)
    assert (finished.status, finished.exit_cause) == (TaskState.CANCELLED, ExitCause.CANCELLED)
    assert _states(events) == [TaskState.ACCEPTED, TaskState.PREPARING]
    assert events[-1].time - cancelled_at < 2.0  # journal timestamps: Finished within 2 s of the cancel
    # uv (its process group) is killed, and the half-built env is removed
    await eventually(lambda: _proc_state(uv_pid) == "gone", 5, "uv killed")
    await eventually(lambda: not list((agent.envs.root / ".building").glob("*")), 5, "the half build removed")
    assert await agent.envs.list() == []


async def test_a_cancel_of_one_task_leaves_the_build_another_task_waits_for(
    agent: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = uv_run.run_uv
    gate = asyncio.Event()
    started = asyncio.Event()

    async def gated(args: list[str], **kw: object) -> None:
        if args[0] == "pip":
            started.set()
            await gate.wait()
        await real(args, **kw)  # type: ignore[arg-type]

    from tensorfleet_agent.runtime import envs as envs_module

    monkeypatch.setattr(envs_module, "run_uv", gated)
    manifest = _project(agent.blobs, {"train.py": TRAIN, "requirements.txt": b"tinyb\n"})
    one, two = _spec(manifest), _spec(manifest)
    await agent.run_task(one)
    await asyncio.wait_for(started.wait(), 30)
    await agent.run_task(two)

    async def joined() -> bool:
        return any("being built for another task" in line for line in _agent_lines(await _partial(agent, two.task_id)))

    await eventually(joined, 10, "the second task joined the build")
    await agent.cancel(one.task_id, "only one")
    assert _finished(await _events(agent, one.task_id)).status is TaskState.CANCELLED
    gate.set()
    events = await _events(agent, two.task_id)
    assert _finished(events).status is TaskState.SUCCEEDED, _finished(events)
    assert not _ready(events).cache_hit and agent.envs.builds_started == 1


async def test_a_task_joining_a_build_just_stopped_by_a_cancel_gets_it_built_again(
    tmp_path: Path, uv_environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensorfleet_agent.runtime import envs as envs_module

    real = uv_run.run_uv
    gate, started = asyncio.Event(), asyncio.Event()

    async def gated(args: list[str], **kw: object) -> None:
        if args[0] == "pip":
            started.set()
            await gate.wait()
        await real(args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(envs_module, "run_uv", gated)
    cache = EnvCache(tmp_path / "envs", environ=uv_environ)
    spec = EnvSpec.from_files("requirements.txt", {"requirements.txt": b"tinyb\n"})
    first = asyncio.create_task(cache.ensure(spec, lambda _l: None))
    await asyncio.wait_for(started.wait(), 30)
    first.cancel()
    await asyncio.sleep(0)  # the cancel reaches the first caller: it was the only one, so the build is stopped
    lines: list[str] = []
    second = asyncio.create_task(cache.ensure(spec, lines.append))  # joins the build being stopped
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    with await asyncio.wait_for(second, 60) as env:
        assert not env.cache_hit and (env.python).exists()
    assert cache.builds_started == 2 and any("building it again" in line for line in lines), lines
    await cache.close()


@pytest.mark.parametrize("how", ["timeout", "drain"])
async def test_a_timeout_or_a_drain_ends_a_task_stuck_preparing(
    agent: Executor, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    fake = tmp_path / "uv"
    fake.write_text(FAKE_UV)
    fake.chmod(0o755)
    monkeypatch.setattr(uv_run, "uv_binary", lambda: str(fake))
    manifest = _project(agent.blobs, {"train.py": TRAIN, "requirements.txt": b"tinyb\n"})
    spec = _spec(manifest, timeout_seconds=1.0) if how == "timeout" else _spec(manifest)
    await agent.run_task(spec)
    if how == "drain":

        async def uv_started() -> bool:
            return any("fake uv pid" in line for line in _agent_lines(await _partial(agent, spec.task_id)))

        await eventually(uv_started, 30, "uv started")
        await agent.drain(0.2)
    events = await _events(agent, spec.task_id)
    finished = _finished(events)
    expected = ExitCause.TIMEOUT if how == "timeout" else ExitCause.DRAIN_TIMEOUT
    assert (finished.status, finished.exit_cause) == (TaskState.FAILED, expected), finished
    assert _states(events) == [TaskState.ACCEPTED, TaskState.PREPARING]
    if how == "timeout":
        assert events[-1].time - events[0].time < 1.0 + 1.5  # the limit counts PREPARING, and is kept
    await eventually(lambda: not list((agent.envs.root / ".building").glob("*")), 5, "the half build removed")


WRITES_OUTPUTS = b"""\
import os, pathlib, sys
out = pathlib.Path(os.environ["TENSORFLEET_OUTPUT_DIR"])
(out / "model").mkdir(parents=True, exist_ok=True)
(out / "metrics.json").write_text('{"loss": 0.1}')
(out / "model" / "weights.bin").write_bytes(bytes(range(256)) * 64)
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.parametrize(("code", "status"), [(0, TaskState.SUCCEEDED), (3, TaskState.FAILED)])
async def test_outputs_become_artifacts_on_success_and_on_failure(
    agent: Executor, code: int, status: TaskState
) -> None:
    files = {"train.py": WRITES_OUTPUTS, "outputs/kept.txt": b"shipped with the project\n", "notes.txt": b"no\n"}
    spec = _spec(_project(agent.blobs, files), env="none", command=("python", "train.py", str(code)))
    await agent.run_task(spec)
    events = await _events(agent, spec.task_id)
    finished = _finished(events)
    assert finished.status is status, finished
    if code:
        assert (finished.exit_cause, finished.error) == (
            ExitCause.EXIT_CODE,
            "command `python train.py 3` exited with code 3",
        )
    outputs = {e.payload.name: e.payload for e in events if isinstance(e.payload, ArtifactReady)}
    expected = {
        "kept.txt": b"shipped with the project\n",
        "metrics.json": b'{"loss": 0.1}',
        "model/weights.bin": bytes(range(256)) * 64,
    }
    assert set(outputs) == set(expected)
    for name, artifact in outputs.items():
        assert artifact.kind == project_layout.OUTPUT_ARTIFACT_KIND == "output"
        assert (artifact.sha256, artifact.size) == (hashlib.sha256(expected[name]).hexdigest(), len(expected[name]))
        assert agent.blobs.path(artifact.sha256).read_bytes() == expected[name]
    assert any(line.startswith("outputs: 3 file(s)") for line in _agent_lines(events))
    last_output = max(i for i, e in enumerate(events) if isinstance(e.payload, ArtifactReady))
    assert last_output < len(events) - 1  # before Finished


async def _partial(executor: Executor, task_id: str) -> list[TaskEvent]:
    """The events journaled so far (no waiting for Finished)."""
    entry = executor.journal.get(task_id)
    out: list[TaskEvent] = []

    async def read() -> None:
        async for batch in executor.watch(task_id, 0):
            out.extend(events_from_batch(batch))
            if len(out) >= entry.last_seq:
                return

    await asyncio.wait_for(read(), 5)
    return out


def _proc_state(pid: int) -> str:
    """The process's state letter; "gone" once it no longer exists or is a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
    return "gone" if state == "Z" else state


# ---- output collection on its own


def test_outputs_skip_links_leaving_the_output_dir_and_special_files(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs", 1 << 30)
    project = tmp_path / "project"
    out = project / "outputs"
    (out / "sub").mkdir(parents=True)
    (out / "a.txt").write_text("a")
    (out / "sub" / "b.txt").write_text("bb")
    (tmp_path / "secret").write_text("outside")
    (out / "leak").symlink_to(tmp_path / "secret")
    (out / "leakdir").symlink_to(tmp_path)
    (out / "alias.txt").symlink_to(out / "a.txt")
    os.mkfifo(out / "pipe")
    events: list[object] = []
    collected = project_prepare.collect_outputs(blobs, project, out, events.append)
    names = sorted(a.name for a in collected.artifacts)
    assert names == ["a.txt", "alias.txt", "sub/b.txt"]
    assert any("leak (a link leaving the output dir)" in s for s in collected.skipped)
    assert any("leakdir" in s for s in collected.skipped)
    assert any("pipe (not a regular file)" in s for s in collected.skipped)
    assert events[: len(names)] == collected.artifacts and isinstance(events[-1], LogLine)
    assert "left out" in events[-1].line


def test_outputs_past_the_file_cap_are_left_out_and_said(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs", 1 << 30)
    out = tmp_path / "project" / "outputs"
    out.mkdir(parents=True)
    for i in range(12):
        (out / f"f{i:02d}").write_text(str(i))
    collected = project_prepare.collect_outputs(blobs, tmp_path / "project", out, lambda _p: None, max_files=10)
    assert [a.name for a in collected.artifacts] == [f"f{i:02d}" for i in range(10)]
    assert collected.skipped == ["2 file(s) past the first 10 (sorted by path)"]


def test_an_output_dir_that_leads_outside_the_project_is_not_collected(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs", 1 << 30)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x").write_text("x")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "outputs").symlink_to(tmp_path / "elsewhere")
    collected = project_prepare.collect_outputs(
        blobs, tmp_path / "project", tmp_path / "project" / "outputs", lambda _p: None
    )
    assert collected.artifacts == [] and "not a folder inside the project" in collected.skipped[0]


def test_a_missing_output_dir_collects_nothing_and_says_nothing(tmp_path: Path) -> None:
    events: list[object] = []
    collected = project_prepare.collect_outputs(
        BlobStore(tmp_path / "blobs", 1 << 30), tmp_path, tmp_path / "outputs", events.append
    )
    assert collected.artifacts == [] and collected.skipped == [] and events == []


# ---- an agent's env cache: ListEnvs / PruneEnvs on a running agent, `tensorfleet-agent envs` on a stopped one


def _agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tensorfleet_agent", *args], capture_output=True, text=True, timeout=60
    )


async def test_an_agents_envs_are_listed_and_pruned_online_and_offline(
    tmp_path: Path, uv_environ: dict[str, str], agent_factory: type[AgentProcess]
) -> None:
    data = tmp_path / "agent"
    data.mkdir()
    cache = EnvCache(data / "envs", environ=uv_environ)  # an env a project task built before
    with await cache.ensure(EnvSpec.from_files("requirements.txt", {"requirements.txt": b"tinyb\n"}), print):
        pass
    (built,) = await cache.list()
    agent = agent_factory(data, extra_args=["--env-cache-gb", "3"]).start()
    async with agent.client() as client:
        listed = convert.list_envs_from_pb(
            await client._call(lambda md: client.stub.ListEnvs(pb.ListEnvsRequest(), metadata=md))
        )
        assert listed["limit_bytes"] == 3 << 30
        assert [(e["key"], e["size"], e["source"], e["jobs"], e["in_use"]) for e in listed["envs"]] == [
            (built.key, built.size, "requirements.txt", 1, 0)
        ]
        # offline commands refuse a running agent's data dir, naming it and saying what to run instead
        refused = await asyncio.to_thread(_agent_cli, "envs", "prune", "--data-dir", str(data))
        assert refused.returncode == 1
        assert f"pid {agent.proc.pid}" in refused.stderr and "tensorfleet agents envs AGENT --prune" in refused.stderr
        with pytest.raises(grpc.aio.AioRpcError, match="keep_bytes"):
            await client._call(lambda md: client.stub.PruneEnvs(pb.PruneEnvsRequest(keep_bytes=-1), metadata=md))
        pruned = convert.prune_envs_from_pb(
            await client._call(lambda md: client.stub.PruneEnvs(pb.PruneEnvsRequest(keep_bytes=0), metadata=md))
        )
        assert pruned == {"removed": [built.key], "freed_bytes": built.size}
        empty = await client._call(lambda md: client.stub.ListEnvs(pb.ListEnvsRequest(), metadata=md))
        assert list(empty.envs) == []
    assert agent.terminate() == 0
    with await cache.ensure(EnvSpec.from_files("requirements.txt", {"requirements.txt": b"tinyb\n"}), print):
        pass  # built again while the agent is stopped
    listed_offline = await asyncio.to_thread(_agent_cli, "envs", "list", "--data-dir", str(data), "--json")
    assert listed_offline.returncode == 0, listed_offline.stderr
    (row,) = json.loads(listed_offline.stdout)["envs"]
    assert set(row) == set(convert.ENV_SUMMARY_KEYS) and row["key"] == built.key
    table = await asyncio.to_thread(_agent_cli, "envs", "list", "--data-dir", str(data))
    assert built.key[:12] in table.stdout and "requirements.txt" in table.stdout
    gone = await asyncio.to_thread(_agent_cli, "envs", "prune", "--data-dir", str(data), "--json")
    assert json.loads(gone.stdout)["removed"] == [built.key] and json.loads(gone.stdout)["envs"] == []
    assert not (data / "envs" / built.key).exists()
    nowhere = await asyncio.to_thread(_agent_cli, "envs", "list", "--data-dir", str(tmp_path / "nope"))
    assert nowhere.returncode == 2 and "no agent data dir" in nowhere.stderr


# The command starts `sleep 300` in a session of its own (out of the worker's process group; it keeps the worker's
# stdout) and prints its pid. Such a process must neither keep the task running nor survive it (review finding 1).
ESCAPES = b"""
import subprocess, sys, time
p = subprocess.Popen(["sleep", "300"], start_new_session=True)
print("ESCAPED", p.pid, flush=True)
if sys.argv[1:] == ["wait"]:
    time.sleep(120)
"""


def _escaped(events: list[TaskEvent]) -> int:
    (pid,) = [int(line.split()[1]) for line in _stdout(events) if line.startswith("ESCAPED ")]
    return pid


def _gone(pid: int) -> bool:
    return _proc_state(pid) == "gone"


async def test_a_command_that_leaves_a_process_in_its_own_session_ends_and_takes_it_along(agent: Executor) -> None:
    spec = _spec(_project(agent.blobs, {"train.py": ESCAPES}), env="none")
    await agent.run_task(spec)
    events = await _events(agent, spec.task_id, timeout=30)
    assert _finished(events).status is TaskState.SUCCEEDED, events
    running = next(
        e.time for e in events if isinstance(e.payload, StateChanged) and e.payload.state is TaskState.RUNNING
    )
    assert events[-1].time - running < 5.0, f"the task took {events[-1].time - running:.1f}s"
    pid = _escaped(events)
    await eventually(lambda: _gone(pid), timeout=5, what=f"the escaped sleep {pid} to be gone")
    assert agent.tasks_running == 0


async def test_a_cancel_ends_what_the_command_started_in_its_own_session_within_2s(agent: Executor) -> None:
    spec = _spec(_project(agent.blobs, {"train.py": ESCAPES}), env="none", command=("python", "train.py", "wait"))
    await agent.run_task(spec)
    seen = await eventually(lambda: _partial_escaped(agent, spec.task_id), timeout=30, what="the ESCAPED line")
    asked = time.time()
    assert await agent.cancel(spec.task_id, "user asked") is True
    events = await _events(agent, spec.task_id, timeout=10)
    end = _finished(events)
    assert end.status is TaskState.CANCELLED and events[-1].time - asked < 2.0, (end, events[-1].time - asked)
    await eventually(lambda: _gone(seen), timeout=5, what=f"the escaped sleep {seen} to be gone")


async def _partial_escaped(executor: Executor, task_id: str) -> int | None:
    events = await _partial(executor, task_id)
    return next((int(line.split()[1]) for line in _stdout(events) if line.startswith("ESCAPED ")), None)
