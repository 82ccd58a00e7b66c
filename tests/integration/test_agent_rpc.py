"""A real agent process on loopback, driven through every AgentService RPC."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from helpers.agents import AgentProcess
from helpers.waiting import eventually
from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.core.types import (
    ArtifactReady,
    BlobRef,
    CheckpointSaved,
    Finished,
    LogLine,
    MetricPoint,
    Progress,
    StateChanged,
    TaskEvent,
    TaskSpec,
    TaskState,
)
from tensorfleet_agent.core.version import PROTOCOL_VERSION
from tensorfleet_agent.discovery.browse import AgentBrowser, DiscoveredAgent
from tensorfleet_agent.rpc.client import AgentClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One agent (2 slots, no spare worker) for the module's tests, each with task ids of its own: a test that
    counts free slots waits for its own tasks to end. Tests that need another configuration start their own."""
    shared = AgentProcess(tmp_path_factory.mktemp("rpc") / "agent").start()
    yield shared
    shared.stop()


async def run(client: AgentClient, spec: TaskSpec) -> list[TaskEvent]:
    await client.run_task(spec)
    return [e async for e in client.watch_task(spec.task_id)]


def finished(events: list[TaskEvent]) -> Finished:
    last = events[-1].payload
    assert isinstance(last, Finished), events
    return last


async def test_found_over_mdns_on_loopback(agent: AgentProcess) -> None:
    found: asyncio.Queue[DiscoveredAgent] = asyncio.Queue()
    browser = AgentBrowser(["127.0.0.1"], lambda _name, a: found.put_nowait(a) if a else None)
    await browser.start()
    try:
        while True:
            hit = await asyncio.wait_for(found.get(), 10)
            if hit.node_id == agent.info["node_id"]:
                break
    finally:
        await browser.stop()
    assert hit.port == agent.port and hit.addresses == ("127.0.0.1",)
    assert hit.protocol_version == PROTOCOL_VERSION and hit.txt["slots"] == "2" and hit.txt["gpus"] == "0"


async def test_get_info_and_telemetry(agent: AgentProcess) -> None:
    async with agent.client() as client:
        info = await client.get_info()
        assert info.node_id == agent.info["node_id"] and info.name == "test-agent"
        assert info.protocol_version == PROTOCOL_VERSION and info.slots_total == 2 and info.slots_free == 2
        assert info.cpu_count >= 1 and info.memory_total_bytes > 0 and info.disk_free_bytes > 0
        assert {"noop", "sleep", "emit", "fail"} <= set(info.workloads)
        assert info.gpus == ()  # no NVML here: no GPUs, no error
        # periodic: 6 samples at 0.2 s, one per tick (not a burst), none missing for long; generous margins
        # (cadence figures: benchmarks/agent_bench.py). A stream that stops fails here, not at the suite timeout.
        samples = []
        async with asyncio.timeout(15):
            async for sample in client.telemetry(0.2):
                samples.append(sample)
                if len(samples) == 6:
                    break
        gaps = [b.time - a.time for a, b in itertools.pairwise(samples)]
        assert all(g > 0 for g in gaps) and samples[-1].time - samples[0].time >= 5 * 0.2 * 0.5, gaps
        assert max(gaps) < 10 * 0.2, gaps
        assert all(0 <= s.cpu_percent <= 100 and s.memory_total_bytes > s.memory_used_bytes for s in samples)
        assert all(0 < s.disk_free_bytes <= s.disk_total_bytes for s in samples)  # the Fleet view's disk bar
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in client.telemetry(-1):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "period_seconds" in str(err.value.details())


async def test_emit_1000_points_arrive_once_in_order(agent: AgentProcess) -> None:
    async with agent.client() as client:
        events = await run(client, TaskSpec("emit-1k", "j", "emit", {"points": 1000}))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    steps = [e.payload.step for e in events if isinstance(e.payload, MetricPoint)]
    assert steps == list(range(1000))
    assert finished(events).status is TaskState.SUCCEEDED


async def test_a_replay_sends_many_events_per_message(agent: AgentProcess) -> None:
    """WatchTask sends the journal's records as they are, many to a message (the path of a metric point)."""
    async with agent.client() as client:
        events = await run(client, TaskSpec("emit-batch", "j", "emit", {"points": 1000}))
        request = pb.WatchTaskRequest(task_id="emit-batch", after_seq=2)
        metadata = await client.session_metadata()
        messages = [m async for m in client.stub.WatchTask(request, metadata=metadata)]
    assert [e.seq for m in messages for e in m.events] == [e.seq for e in events][2:]
    assert len(messages) <= 10, f"{len(messages)} messages for {len(events)} events"


async def test_watcher_resumes_after_seq_without_gap_or_duplicate(agent: AgentProcess) -> None:
    async with agent.client() as client:
        await client.run_task(TaskSpec("resume", "j", "emit", {"points": 600, "rate": 1000}))
        first: list[TaskEvent] = []
        async for event in client.watch_task("resume"):
            first.append(event)
            if len(first) == 150:
                break  # the watcher goes away mid-stream
    async with agent.client() as client:  # a new connection, as after a crash
        rest = [e async for e in client.watch_task("resume", after_seq=first[-1].seq)]
        two_watchers = await asyncio.gather(*(_all(client, "resume") for _ in range(3)))
    seqs = [e.seq for e in first + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    assert finished(rest).status is TaskState.SUCCEEDED
    assert all([e.seq for e in w] == seqs for w in two_watchers)


async def _all(client: AgentClient, task_id: str) -> list[TaskEvent]:
    return [e async for e in client.watch_task(task_id)]


async def test_cancel_kills_within_two_seconds(agent: AgentProcess) -> None:
    async with agent.client() as client:
        await client.run_task(TaskSpec("long", "j", "sleep", {"seconds": 60}))
        async for event in client.watch_task("long"):
            if isinstance(event.payload, Progress):
                break  # the workload itself is running (it reports progress 0 as it starts sleeping)
        asked = time.time()
        assert await client.cancel_task("long", "user asked") is True
        events = await _all(client, "long")
        end = events[-1]
        assert isinstance(end.payload, Finished) and end.payload.status is TaskState.CANCELLED
        assert end.payload.exit_cause == "cancelled" and end.payload.error == "user asked"
        assert end.time - asked < 2.0, f"cancel took {end.time - asked:.2f}s"
        assert await client.cancel_task("long") is False  # already over
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.cancel_task("never-existed")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert (await client.get_info()).slots_free == 2


async def test_a_task_that_ignores_a_checkpoint_stop_is_cancelled_after_the_grace(agent: AgentProcess) -> None:
    """Pausing asks the workload to checkpoint and stop; `sleep` never looks, so the grace period ends it."""
    async with agent.client() as client:
        await client.run_task(TaskSpec("deaf", "j", "sleep", {"seconds": 60}))
        async for event in client.watch_task("deaf"):
            if isinstance(event.payload, StateChanged) and event.payload.state is TaskState.RUNNING:
                break
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.cancel_task("deaf", "pause", checkpoint_grace=-1)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "checkpoint_grace" in str(err.value.details())
        asked = time.time()
        assert await client.cancel_task("deaf", "paused by the user", checkpoint_grace=1.0) is True
        events = await _all(client, "deaf")
        end = finished(events)
        assert end.status is TaskState.CANCELLED and "did not stop at a checkpoint within 1s" in end.error
        assert 1.0 <= events[-1].time - asked < 4.0
        lines = [e.payload.line for e in events if isinstance(e.payload, LogLine)]
        assert "asked to save a checkpoint and stop: paused by the user" in lines


@pytest.mark.parametrize(
    ("params", "cause", "error"),
    [
        ({"mode": "exception", "message": "kaboom"}, "exception", "RuntimeError: kaboom"),
        ({"mode": "exit", "code": 7}, "exit_code", "worker exited with code 7"),
        ({"mode": "segfault"}, "signal", "worker killed by SIGSEGV"),
    ],
)
async def test_fail_modes_become_failed_events(
    agent: AgentProcess, params: dict[str, object], cause: str, error: str
) -> None:
    async with agent.client() as client:
        events = await run(client, TaskSpec(f"fail-{params['mode']}", "j", "fail", params))
        end = finished(events)
        assert (end.status, end.exit_cause, end.error) == (TaskState.FAILED, cause, error)
        logs = [e.payload.line for e in events if isinstance(e.payload, LogLine)]
        assert any("fail workload" in line for line in logs)
        if cause == "exception":
            assert any("Traceback" in line for line in logs)
        # the daemon keeps serving
        assert (await client.get_info()).slots_free == 2
        assert (
            finished(await run(client, TaskSpec(f"after-{params['mode']}", "j", "noop"))).status is TaskState.SUCCEEDED
        )


async def test_timeout_and_memory_limit(agent: AgentProcess) -> None:
    async with agent.client() as client:
        events = await run(client, TaskSpec("slow", "j", "sleep", {"seconds": 30}, timeout_seconds=1.0))
        end = finished(events)
        assert (end.status, end.exit_cause) == (TaskState.FAILED, "timeout") and "1s" in end.error
        assert end.duration_seconds < 3.0
        events = await run(
            client,
            TaskSpec("hungry", "j2", "allocate", {"megabytes": 400, "seconds": 20}, memory_limit_bytes=150 << 20),
        )
        end = finished(events)
        assert (end.status, end.exit_cause) == (TaskState.FAILED, "memory_limit"), end
        assert "150 MiB" in end.error and end.duration_seconds < 10


def _running_pid(events: list[TaskEvent]) -> int:
    (running,) = [e for e in events if isinstance(e.payload, StateChanged) and e.payload.state is TaskState.RUNNING]
    assert isinstance(running.payload, StateChanged)
    return int(running.payload.message.split()[-1])


async def test_built_in_tasks_of_any_job_share_a_warm_child_of_the_fork_server(agent: AgentProcess) -> None:
    """Warm across jobs: a built-in diagnostic task's worker, a child of the one fork server (which has no torch),
    serves the next task of its family, whatever its job (tests/integration/test_warm_worker_reuse.py: what is
    never reused, and what a task leaves behind that the next does not see)."""
    import psutil

    pid = 0
    async with agent.client() as client:
        pids = [_running_pid(await run(client, TaskSpec(f"fresh-{i}", job, "noop"))) for i, job in enumerate("aab")]
        await client.run_task(TaskSpec("fresh-sleep", "c", "sleep", {"seconds": 30}))
        try:
            async for event in client.watch_task("fresh-sleep"):
                if isinstance(event.payload, StateChanged) and event.payload.state is TaskState.RUNNING:
                    pid = int(event.payload.message.split()[-1])
                    break
            parent = psutil.Process(pid).parent()
            assert parent is not None and "runtime.forkserver" in " ".join(parent.cmdline())
            assert agent.proc is not None and parent.ppid() == agent.proc.pid
            assert not any("/torch/" in m.path for m in parent.memory_maps())  # CUDA is set up per task
        finally:
            await client.cancel_task("fresh-sleep")
    assert len({*pids, pid}) == 1


_LEAK_SCRIPT = """
import os, sys, numpy, threadpoolctl
import tensorfleet_agent.workloads.diagnostic as diag
seen = getattr(diag, "SET_BY_A_JOB", None)
diag.SET_BY_A_JOB = os.environ["TENSORFLEET_JOB_ID"]
caps = {p["internal_api"]: p["num_threads"] for p in threadpoolctl.threadpool_info()}
print(f"seen={seen} caps={caps} omp={os.environ['OMP_NUM_THREADS']} draw={numpy.random.random()}")
print(f"torch={'torch' in sys.modules}")
sys.exit(3 if seen is not None else 0)
"""


async def test_no_state_leaks_between_jobs_and_each_slot_keeps_its_thread_caps(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    """A module-level global set by one job's task is not seen by the next job's, on the same fork server; the
    slot's thread caps (all the cores: one slot) hold for the BLAS loaded before the fork; numpy's global random
    state differs per task."""
    agent = agent_factory(tmp_path / "caps-agent", cpu_slots=1).start()
    script = tmp_path / "leak.py"
    script.write_text(_LEAK_SCRIPT)
    lines = []
    async with agent.client() as client:
        digest = await client.put_blob(script)
        for i in range(2):
            params = {"script": "leak.py", "args": [], "sha256": digest}
            spec = TaskSpec(f"leak-{i}", f"leak-job-{i}", "script", params, inputs=(BlobRef("leak.py", digest),))
            events = await run(client, spec)
            lines.append(" ".join(e.payload.line for e in events if isinstance(e.payload, LogLine)))
            assert finished(events).status is TaskState.SUCCEEDED, lines[-1]
    for line in lines:
        assert "seen=None" in line and "torch=False" in line, line
        omp = re.search(r"omp=(\d+)", line)
        assert omp is not None and int(omp.group(1)) == (os.cpu_count() or 1), line
        assert f"'openblas': {omp.group(1)}" in line, line
    draws = [re.findall(r"draw=(\S+)", line) for line in lines]
    assert draws[0] != draws[1]


async def test_a_family_s_libraries_are_imported_once_in_the_fork_server(agent: AgentProcess) -> None:
    """After a first scikit-learn task, the fork server holds scikit-learn (not torch): the next forks have it."""
    import psutil

    async with agent.client() as client:
        spec = TaskSpec("family-0", "family-a", "decision_tree", {"max_depth": 3}, dataset="iris")
        assert finished(await run(client, spec)).status is TaskState.SUCCEEDED
    assert agent.proc is not None
    (server,) = [c for c in psutil.Process(agent.proc.pid).children() if "forkserver" in " ".join(c.cmdline())]
    maps = [m.path for m in server.memory_maps()]
    assert any("/sklearn/" in p for p in maps) and not any("/torch/" in p for p in maps)


async def test_the_fork_server_imports_numpy_once_idle(tmp_path: Path) -> None:
    """numpy, which most tasks use, is not among what the fork server imports before it says ready (a cold agent's
    first task would wait ~0.1 s for it) but is imported once it is idle: the forks after have it loaded."""
    import psutil

    agent = AgentProcess(tmp_path / "agent", cpu_slots=1).start()
    try:
        async with agent.client() as client:
            assert finished(await run(client, TaskSpec("first", "j", "noop"))).status is TaskState.SUCCEEDED
        assert agent.proc is not None
        (server,) = [c for c in psutil.Process(agent.proc.pid).children() if "forkserver" in " ".join(c.cmdline())]
        await eventually(lambda: any("/numpy/" in m.path for m in server.memory_maps()), 30, "numpy in the server")
    finally:
        agent.stop()


async def test_list_tasks(agent: AgentProcess) -> None:
    async with agent.client() as client:
        await run(client, TaskSpec("listed", "jobx", "noop"))
        await client.run_task(TaskSpec("running", "jobx", "sleep", {"seconds": 30}))
        active = await client.list_tasks()
        everything = await client.list_tasks(include_finished=True)
        await client.cancel_task("running")
        await _all(client, "running")  # ended: the module's next test finds the agent idle
    assert [t.task_id for t in active] == ["running"]
    by_id = {t.task_id: t for t in everything}
    assert by_id["listed"].state is TaskState.SUCCEEDED and by_id["listed"].exit_cause == "completed"
    assert by_id["listed"].job_id == "jobx" and by_id["listed"].workload == "noop" and by_id["listed"].last_seq >= 3


async def test_blobs_round_trip_and_inputs(agent: AgentProcess, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "data.bin"
    src.write_bytes(data)
    async with agent.client() as client:
        digest = await client.put_blob(src)
        assert digest == hashlib.sha256(data).hexdigest()
        assert await client.has_blobs([digest, "0" * 64]) == {digest}
        assert await client.put_blob(src) == digest  # second upload is skipped
        dest = tmp_path / "back.bin"
        assert await client.get_blob(digest, dest) == len(data)
        assert dest.read_bytes() == data
        # a task that names an input finds it linked under its name
        events = await run(client, TaskSpec("with-input", "j", "noop", inputs=(BlobRef("data.bin", digest),)))
        assert finished(events).status is TaskState.SUCCEEDED
        link = Path(agent.data_dir) / "tasks" / "with-input" / "work" / "inputs" / "data.bin"
        assert link.read_bytes() == data
        # missing input blob
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.run_task(TaskSpec("no-input", "j", "noop", inputs=(BlobRef("x.csv", "e" * 64),)))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "PutBlob" in str(err.value.details())

        # corrupted upload
        async def corrupt():  # type: ignore[no-untyped-def]
            yield pb.BlobChunk(header=pb.BlobHeader(sha256="f" * 64, size=4))
            yield pb.BlobChunk(data=b"abcd")

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.stub.PutBlob(corrupt(), metadata=await client.session_metadata())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "header.sha256" in str(err.value.details())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.get_blob("d" * 64, tmp_path / "none")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_artifacts_and_checkpoints_are_fetchable(agent: AgentProcess, tmp_path: Path) -> None:
    """save_artifact()/save_checkpoint() in a task -> events -> GetBlob returns the same bytes."""
    async with agent.client() as client:
        events = await run(client, TaskSpec("art", "j", "artifact", {"bytes": 2_500_000, "checkpoint": True}))
        assert finished(events).status is TaskState.SUCCEEDED
        (art,) = [e.payload for e in events if isinstance(e.payload, ArtifactReady)]
        (ckpt,) = [e.payload for e in events if isinstance(e.payload, CheckpointSaved)]
        assert (art.size, art.kind, ckpt.step, ckpt.sha256) == (2_500_000, "report", 1, art.sha256)
        dest = tmp_path / "art.bin"
        assert await client.get_blob(art.sha256, dest) == art.size
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == art.sha256


async def test_bad_requests_are_refused_by_field(agent: AgentProcess) -> None:
    async with agent.client() as client:
        cases = [
            (TaskSpec("a", "j", "no_such_workload"), grpc.StatusCode.INVALID_ARGUMENT, "spec.workload"),
            (
                TaskSpec("b", "j", "sleep", {"seconds": -2}),
                grpc.StatusCode.INVALID_ARGUMENT,
                "spec.params.seconds",
            ),
            (
                TaskSpec("c", "j", "noop", timeout_seconds=-1),
                grpc.StatusCode.INVALID_ARGUMENT,
                "spec.timeout_seconds",
            ),
            (TaskSpec("d" * 300, "j", "noop"), grpc.StatusCode.INVALID_ARGUMENT, "spec.task_id"),
            (TaskSpec("e", "j", "noop", gpus=1), grpc.StatusCode.RESOURCE_EXHAUSTED, "GPU"),
        ]
        for spec, code, text in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.run_task(spec)
            assert err.value.code() == code and text in str(err.value.details()), err.value
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.stub.RunTask(
                pb.RunTaskRequest(protocol_version=99, spec=pb.TaskSpec(task_id="x")),
                metadata=await client.session_metadata(),
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "protocol 99" in str(err.value.details())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.stub.RunTask(
                pb.RunTaskRequest(protocol_version=PROTOCOL_VERSION), metadata=await client.session_metadata()
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "spec" in str(err.value.details())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in client.watch_task("x", after_seq=-1):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "after_seq" in str(err.value.details())
        # slots: two long tasks fill the agent, the third is refused
        await client.run_task(TaskSpec("fill-1", "j", "sleep", {"seconds": 30}))
        await client.run_task(TaskSpec("fill-2", "j", "sleep", {"seconds": 30}))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.run_task(TaskSpec("fill-3", "j", "noop"))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "0 of 2 free" in str(err.value.details())
        # same id, same spec: idempotent; same id, other spec: refused
        assert await client.run_task(TaskSpec("fill-1", "j", "sleep", {"seconds": 30})) is not None
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.run_task(TaskSpec("fill-1", "j", "noop"))
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        await client.cancel_task("fill-1")
        await client.cancel_task("fill-2")
        await asyncio.gather(_all(client, "fill-1"), _all(client, "fill-2"))  # ended: the agent is idle again
        assert (await client.get_info()).slots_total == 2


async def test_prometheus_metrics(agent_factory: type[AgentProcess], tmp_path: Path) -> None:
    agent = agent_factory(tmp_path / "m", extra_args=["--metrics-port", "0"]).start()
    async with agent.client() as client:
        await run(client, TaskSpec("m1", "j", "noop"))
        await run(client, TaskSpec("m2", "j", "fail", {"mode": "exception"}))
    url = f"http://127.0.0.1:{agent.info['metrics_port']}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert re.search(r'worker_tasks_completed_total\{workload="noop"\} 1\.0', text)
    assert re.search(r'worker_tasks_failed_total\{cause="exception",workload="fail"\} 1\.0', text)
    assert "worker_task_duration_seconds_bucket" in text and "worker_slots_in_use 0.0" in text
    assert re.search(r"worker_events_streamed_total [1-9]", text)


CLASSIFIERS = ["random_forest", "logistic_regression", "svm", "decision_tree", "gradient_boosting", "knn", "mlp"]
CASES = (
    [(a, "iris", {}) for a in CLASSIFIERS]
    + [(a, "diabetes", {}) for a in CLASSIFIERS if a != "logistic_regression"]
    + [
        (
            "random_forest",
            "make_classification",
            {"n_samples": 300, "n_features": 8, "n_informative": 4, "n_classes": 3},
        ),
        ("knn", "make_regression", {"n_samples": 300, "n_features": 5, "n_informative": 3, "noise": 1.0}),
    ]
)


@pytest.fixture(scope="module")
def sk_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One agent for all the scikit-learn cases: they share a job, so its warm worker imports sklearn once."""
    agent = AgentProcess(tmp_path_factory.mktemp("sklearn") / "agent", cpu_slots=1).start()
    yield agent
    agent.stop()


@pytest.mark.parametrize(("algorithm", "dataset", "dataset_params"), CASES, ids=lambda v: str(v)[:24])
async def test_sklearn_workloads_report_and_save_a_model(
    sk_agent: AgentProcess, tmp_path: Path, algorithm: str, dataset: str, dataset_params: dict[str, object]
) -> None:
    agent = sk_agent
    from skops.io import get_untrusted_types, load

    task_id = f"sk-{algorithm}-{dataset}"
    params = {"max_iter": 300} if algorithm == "mlp" else {}
    async with agent.client() as client:
        spec = TaskSpec(task_id, "j", algorithm, params, dataset=dataset, dataset_params=dataset_params)
        events = await run(client, spec)
        assert finished(events).status is TaskState.SUCCEEDED, events
        metrics = {e.payload.name: e.payload.value for e in events if isinstance(e.payload, MetricPoint)}
        regression = dataset in ("diabetes", "make_regression")
        expected = {"train_r2", "r2", "rmse", "mae"} if regression else {"train_accuracy", "test_accuracy", "f1_macro"}
        per_epoch = {"loss"} if algorithm == "mlp" else set()  # an MLP reports its loss each epoch
        assert set(metrics) == expected | {"training_time"} | per_epoch
        if not regression:
            assert metrics["test_accuracy"] > 0.6
        artifacts = {e.payload.kind: e.payload for e in events if isinstance(e.payload, ArtifactReady)}
        assert set(artifacts) == {"model", "report"} and artifacts["model"].name == "model.skops"
        await client.get_blob(artifacts["model"].sha256, tmp_path / "model.skops")
        await client.get_blob(artifacts["report"].sha256, tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["split_seed"] == 42 and report["dataset"] == dataset and report["features"]
    if not regression:
        assert len(report["confusion_matrix"]) == len(report["classes"])
    estimator = load(tmp_path / "model.skops", trusted=get_untrusted_types(file=tmp_path / "model.skops"))
    assert type(estimator).__module__.startswith("sklearn.")
    assert ("Regressor" in type(estimator).__name__ or type(estimator).__name__ == "SVR") == regression


async def test_sklearn_refuses_what_it_cannot_learn(agent: AgentProcess) -> None:
    async with agent.client() as client:
        cases = [
            (
                TaskSpec("b1", "j", "logistic_regression", dataset="diabetes"),
                "is a classifier; diabetes is a regression",
            ),
            (TaskSpec("b2", "j", "svm", dataset="mnist"), "unknown dataset 'mnist'"),
            (TaskSpec("b3", "j", "knn"), "knn needs a dataset"),
            (TaskSpec("b4", "j", "noop", dataset="iris"), "noop takes no dataset"),
            (TaskSpec("b5", "j", "mlp", {"hidden_layer_sizes": "64,x"}, dataset="iris"), "hidden_layer_sizes"),
            (
                TaskSpec("b6", "j", "knn", dataset="make_regression", dataset_params={"n_features": 2}),
                "n_informative: must be at most n_features",
            ),
            (
                TaskSpec("b7", "j", "knn", dataset="make_regression", dataset_params={"rows": 2}),
                "spec.dataset_params.rows: unknown parameter",
            ),
        ]
        for spec, text in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.run_task(spec)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in str(err.value.details()), spec
