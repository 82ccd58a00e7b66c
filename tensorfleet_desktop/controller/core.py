"""The controller core: jobs, their tasks on agents, retries and re-placement. No Qt, no protobuf.

One asyncio loop owns all state here. Agents are dialled through the fleet's
clients; every agent event is deduplicated by (attempt, seq) against the stored
cursor, stored through the store's single writer, then fanned out to watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import secrets
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import grpc

from tensorfleet_agent.core.digest import blob_relpath, file_sha256
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.types import (
    ArtifactReady,
    BlobRef,
    CheckpointSaved,
    Finished,
    LogLine,
    MetricPoint,
    Progress,
    Rendezvous,
    StateChanged,
    TaskEvent,
    TaskSpec,
    TaskState,
)
from tensorfleet_agent.rpc.client import AgentClient
from tensorfleet_agent.security.secrets import redact, redact_value
from tensorfleet_agent.workloads.datasets import is_user_dataset
from tensorfleet_agent.workloads.registry import get_workload
from tensorfleet_desktop.controller.datasets import (
    DatasetError,
    check_features,
    head_rows,
    infer_task,
    prepare_upload,
)
from tensorfleet_desktop.controller.datasets import inspect as inspect_dataset
from tensorfleet_desktop.controller.fleet import MIN_FREE_DISK_BYTES, AgentRecord, AgentState, Fleet
from tensorfleet_desktop.controller.jobspec import JobSpecError, parse_job_spec
from tensorfleet_desktop.controller.merge import merge_forest
from tensorfleet_desktop.controller.metrics import ControllerMetrics
from tensorfleet_desktop.controller.model import (
    ArtifactInfo,
    Job,
    JobEventRecord,
    JobState,
    JobTask,
    TaskRunState,
)
from tensorfleet_desktop.controller.registry import BlobDamaged, Registry, pick_artifacts
from tensorfleet_desktop.controller.retention import referenced, stale_partials, trim_checkpoints
from tensorfleet_desktop.controller.scheduler import Capacity, RankLayout, Request, plan, rank_layout
from tensorfleet_desktop.controller.store.base import JobStore, StoreFullError, full_message, is_disk_full
from tensorfleet_desktop.controller.store.blobs import BlobStore, hashes_to
from tensorfleet_desktop.controller.sweep import Study, parse_sweep

log = logging.getLogger(__name__)

_TICK = 0.5
_RETRY_BACKOFF, _RETRY_BACKOFF_MAX = 1.0, 30.0  # a failed task's first retry after 1 s, doubling, at most 30 s
_ORPHAN_GRACE = 15.0  # after a restart, how long an unknown agent may take to reappear
_PAUSE_GRACE = 60.0  # how long a pausing task may take to save its checkpoint before it is cancelled
_SAVE_RETRY_FIRST, _SAVE_RETRY_MAX = 1.0, 60.0  # seconds between attempts to save a finished job's model
_SAVE_GIVE_UP = 1800.0  # after this long unsaved, the job fails with the cause
_CHECKPOINTING = ("torch", "script")  # workload categories that can checkpoint, stop on request and resume


class JobError(Exception):
    """A job request that cannot be honoured in the job's current state."""


class NotFoundError(Exception):
    pass


class Controller:
    def __init__(
        self,
        store: JobStore,
        fleet: Fleet,
        blobs: BlobStore,
        metrics: ControllerMetrics,
        gang_reserve_after: float = 300.0,
        max_replacements: int = 5,
        keep_checkpoints: int = 3,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.blobs = blobs
        self.blobs_dir = blobs.root  # the local side: the store itself (file://) or its cache (s3://)
        self.metrics = metrics
        self.gang_reserve_after = gang_reserve_after
        self.max_replacements = max_replacements
        self.keep_checkpoints = keep_checkpoints
        self.jobs: dict[str, Job] = {}
        self._open: dict[str, Job] = {}  # not finished: what the scheduler and fleet events look at
        self._gauges_stale, self._gauges_at = False, 0.0
        self._seq_no = 0
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._subscribers: dict[str, set[asyncio.Queue[JobEventRecord]]] = {}
        self._job_listeners: set[asyncio.Queue[Job]] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._started = time.monotonic()
        self._studies: dict[str, Study] = {}
        self._fetches: dict[str, asyncio.Task[None]] = {}
        self.datasets: dict[str, dict[str, Any]] = {}
        self.registry = Registry(store, blobs, self._refetch_model)
        self._registering: set[str] = set()
        fleet.subscribe(self._on_fleet)

    # ---- lifecycle

    async def start(self) -> None:
        self.datasets = await self.store.load_datasets()
        for job in await self.store.load_jobs():
            self.jobs[job.id] = job
            if not job.state.terminal:
                self._open[job.id] = job
            self._seq_no = max(self._seq_no, job.seq_no)
        if self._open:
            log.info("restored %d unfinished job(s) from %s", len(self._open), self.store.uri)
        for job in list(self._open.values()):  # stopped while saving its model: carry on with that
            if job.mode != "sweep" and job.tasks and all(t.state is TaskRunState.SUCCEEDED for t in job.tasks):
                if job.mode == "shards" and not any(a.task_index == -1 for a in job.artifacts):
                    self._spawn(self._merge_shards(job))
                    continue
                if job.mode == "cv" and not job.metrics:
                    job.metrics = cv_summary([t.metrics for t in job.tasks])
                self._succeed(job)
        self._update_gauges()
        self._loop_task = asyncio.create_task(self._schedule_loop(), name="scheduler")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        pending = [*self._watchers.values(), *self._background, *self._fetches.values()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # Metric and progress events are stored as they come, but a job's summary (its latest metrics, its tasks'
        # states and progress) only on state changes: save it now, or a restart would resume from the agent's
        # cursor with what the events since the last save told it forgotten (a model registered without its score).
        for job in self._open.values():
            self.store.save_job(job)
        try:
            await self.store.flush()
        except StoreFullError as exc:
            log.error("stopping with writes the store could not save: %s", exc)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- queries

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            hits = [j for j in self.jobs.values() if len(job_id) >= 4 and j.id.startswith(job_id)]
            if len(hits) == 1:
                return hits[0]
            raise NotFoundError(f"no job {job_id!r}")
        return job

    def artifact(self, job_id: str, name: str, task_index: int | None = None) -> tuple[Job, ArtifactInfo]:
        """The job's artifact by name (a task's latest one of that name); several tasks' need `task_index`."""
        job = self.get(job_id)
        hits = [a for a in job.artifacts if a.name == name and task_index in (None, a.task_index)]
        if not hits:
            where = f" from task {task_index}" if task_index is not None else ""
            known = ", ".join(sorted({a.name for a in job.artifacts})) or "none yet"
            raise NotFoundError(f"job {job.id} has no artifact {name!r}{where} (artifacts: {known})")
        tasks = sorted({a.task_index for a in hits})
        if len(tasks) > 1:
            raise ValidationError(
                "task_index", f"tasks {', '.join(map(str, tasks))} of job {job.id} each saved {name!r}: say which task"
            )
        return job, hits[-1]

    async def artifact_path(self, job: Job, artifact: ArtifactInfo) -> Path:
        """The artifact's file in the blob store, checked against its sha256 before it is served; fetched (again)
        from the agent that saved it when it is missing or damaged. BlobDamaged when no good copy can be had."""
        fetch = self._fetches.get(artifact.sha256)
        if fetch is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(fetch), 120)
        path = await self._good_copy(artifact.sha256)
        if path is not None:
            return path
        task = next((t for t in job.tasks if t.index == artifact.task_index), None)
        record = self.fleet.agents.get(task.node_id) if task is not None else None
        if record is not None:  # missing (agent away at the time) or damaged: from the agent, once more
            await self._fetch_once(record, artifact.sha256)
        path = await self._good_copy(artifact.sha256)
        if path is not None:
            return path
        if await asyncio.to_thread(self.blobs.path(artifact.sha256).exists):
            raise BlobDamaged(
                f"artifact {artifact.name!r} of job {job.id}: its file {artifact.sha256[:12]} in the controller's "
                "blob store is damaged and its agent has no good copy"
            )
        raise JobError(
            f"artifact {artifact.name!r} of job {job.id} ({artifact.sha256[:12]}) is not in the controller's "
            "blob store: the agent that saved it has not delivered it"
        )

    async def _good_copy(self, sha256: str) -> Path | None:
        """The blob's local file when it hashes to its name (fetched from the object store first if need be)."""
        try:
            path = await self.blobs.ensure(sha256)
        except FileNotFoundError:
            return None
        return path if await asyncio.to_thread(hashes_to, path, sha256) else None

    async def _refetch_model(self, record: dict[str, Any]) -> None:
        """A registered model's blob is missing or damaged: copy it again from the agent of the job that made it,
        if that agent is connected and still has it."""
        job = self.jobs.get(str(record.get("job_id", "")))
        artifact = next((a for a in job.artifacts if a.sha256 == record["sha256"]), None) if job else None
        if job is None or artifact is None:
            return
        task = next((t for t in job.tasks if t.index == artifact.task_index), None)
        agent = self.fleet.agents.get(task.node_id) if task is not None else None
        if agent is not None:
            await self._fetch_once(agent, record["sha256"])

    def list_jobs(self, states: tuple[str, ...] = (), limit: int = 0) -> list[Job]:
        jobs = sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)
        if states:
            jobs = [j for j in jobs if j.state.value in states]
        return jobs[:limit] if limit > 0 else jobs

    async def watch(self, job_id: str, after_seq: int = 0) -> AsyncIterator[JobEventRecord]:
        """Replay the stored history after `after_seq`, then follow live until the job ends."""
        job = self.get(job_id)
        queue: asyncio.Queue[JobEventRecord] = asyncio.Queue()
        self._subscribers.setdefault(job.id, set()).add(queue)
        try:
            await self.store.flush()
            last = after_seq
            for record in await self.store.events(job.id, after_seq):
                last = record.seq
                yield record
            while True:
                if job.state.terminal and queue.empty() and last >= job.last_event_seq:
                    return
                try:
                    record = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    continue
                if record.seq > last:
                    last = record.seq
                    yield record
        finally:
            self._subscribers[job.id].discard(queue)

    async def job_updates(self) -> AsyncIterator[Job]:
        queue: asyncio.Queue[Job] = asyncio.Queue()
        self._job_listeners.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._job_listeners.discard(queue)

    # ---- commands

    def _resolve_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
        """An uploaded dataset named in a spec becomes user:<sha256> with its target column and task."""
        name = body.get("dataset")
        entry = self.datasets.get(name) if isinstance(name, str) else None
        if entry is None and isinstance(name, str) and len(name) >= 8:
            hits = [d for d in self.datasets.values() if d["sha256"].startswith(name)]
            entry = hits[0] if len(hits) == 1 else None
        if entry is None:
            return body
        target = body.get("target")
        if not isinstance(target, str) or not target:
            raise JobSpecError("target", f"name the target column of {entry['name']} ({', '.join(entry['columns'])})")
        if target not in entry["columns"]:
            raise JobSpecError(
                "target", f"{target!r} is not a column of {entry['name']} (columns: {', '.join(entry['columns'])})"
            )
        profile = entry.get("profile")
        if profile is None:  # stored before uploads were profiled
            profile = inspect_dataset(self.blobs.path(entry["sha256"]), entry["filename"])[3]
            entry["profile"] = profile
        try:
            check_features(entry["columns"], profile, target)
        except DatasetError as exc:
            raise JobSpecError("dataset", f"{entry['name']}: {exc}") from None
        task = infer_task(profile[target])
        rest = {k: v for k, v in body.items() if k != "target"}
        return {
            **rest,
            "dataset": f"user:{entry['sha256']}",
            "dataset_params": {"target": target, "file": entry["filename"], "task": task},
        }

    async def upload_dataset(self, name: str, filename: str, tmp: Path) -> dict[str, Any]:
        """Adopt an uploaded file as a named dataset (Parquet is stored as its CSV form)."""
        tmp, filename, source, (fmt, rows, columns, profile) = await asyncio.to_thread(prepare_upload, tmp, filename)
        digest, size = await asyncio.to_thread(self._adopt_blob, tmp)
        await self.blobs.publish(digest)
        entry = {
            "name": name,
            "sha256": digest,
            "filename": filename,
            "format": "parquet" if source else fmt,
            "rows": rows,
            "columns": columns,
            "size": size,
            "created_at": time.time(),
            "profile": profile,
            "source": source,
        }
        self.datasets[name] = entry
        self.store.save_dataset(name, entry)
        return entry

    def dataset(self, name: str) -> dict[str, Any]:
        entry = self.datasets.get(name)
        if entry is None:
            known = ", ".join(sorted(self.datasets)) or "none uploaded yet"
            raise NotFoundError(f"no dataset {name!r} (datasets: {known})")
        return entry

    async def preview_dataset(self, name: str, rows: int) -> tuple[dict[str, Any], list[str], list[list[str]]]:
        entry = self.dataset(name)
        path = await self.blobs.ensure(entry["sha256"])
        header, body = await asyncio.to_thread(head_rows, path, rows)
        return entry, header, body

    async def delete_dataset(self, name: str) -> dict[str, Any]:
        """Forget a dataset; refused while a job or a registered model refers to it. Its file goes when unused."""
        entry = self.dataset(name)
        ref = f"user:{entry['sha256']}"
        users = [j.id for j in self.jobs.values() if j.spec.get("dataset") == ref]
        if users:
            raise JobError(f"dataset {name} is used by job(s) {', '.join(users[:5])}; delete or keep it")
        models = [m for m in await self.store.model_versions() if m.get("dataset", {}).get("sha256") == entry["sha256"]]
        if models:
            refs = ", ".join(f"{m['name']}:{m['version']}" for m in models[:5])
            raise JobError(f"dataset {name} is the training data of model(s) {refs}")
        del self.datasets[name]
        self.store.delete_dataset(name)
        if not any(d["sha256"] == entry["sha256"] for d in self.datasets.values()):
            await self.blobs.delete(entry["sha256"])
        return entry

    async def collect_garbage(self, grace: float = 600.0) -> dict[str, int]:
        """Delete blobs nothing refers to any more (see retention.py) and the partial files of interrupted transfers;
        files younger than `grace` s are spared. Returns deleted (blobs), partials, freed_bytes, kept."""
        keep = referenced(self.jobs.values(), self.datasets.values(), await self.store.model_versions())
        keep |= set(self._fetches)
        now, deleted, freed = time.time(), 0, 0
        for sha256, (size, modified) in (await self.blobs.listing()).items():
            if sha256 in keep or now - modified < grace:
                continue
            await self.blobs.delete(sha256)
            deleted, freed = deleted + 1, freed + size
        partials, removed = await self.blobs.partials(), 0
        for path in stale_partials(partials, now, grace):  # what a killed transfer left behind
            await asyncio.to_thread(path.unlink, missing_ok=True)
            removed, freed = removed + 1, freed + partials[path][0]
        log.info(
            "gc: deleted %d blob(s), removed %d partial transfer file(s), %d bytes; %d referenced",
            deleted,
            removed,
            freed,
            len(keep),
        )
        return {"deleted": deleted, "partials": removed, "freed_bytes": freed, "kept": len(keep)}

    def _adopt_blob(self, tmp: Path) -> tuple[str, int]:
        """Move a finished file into the blob store under its sha256 (blocking)."""
        digest = file_sha256(tmp)
        final = self.blobs_dir / blob_relpath(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(final)
        return digest, final.stat().st_size

    async def submit(self, body: dict[str, Any], submitter: str) -> Job:
        """Persist first, then schedule: a job the store cannot save is refused (StoreFullError), never kept
        in memory only."""
        body = self._resolve_dataset(redact_value(body))  # a token pasted into a spec is never stored
        spec = parse_job_spec(body)
        self._seq_no += 1
        now = time.time()
        job = Job(
            id=f"j{uuid.uuid4().hex[:10]}",
            spec=spec.to_dict(),
            submitter=submitter[:200],
            seq_no=self._seq_no,
            created_at=now,
            queued_since=now,
            tasks=[] if spec.sweep else [JobTask(index=i) for i in range(spec.cv or spec.num_workers)],
        )
        free = await asyncio.to_thread(_free_bytes, self.blobs_dir)
        if free is not None and free < MIN_FREE_DISK_BYTES:  # the rule agents follow: no room for its results
            raise StoreFullError(full_message(self.blobs_dir))
        await self.store.insert_job(job)
        self.jobs[job.id] = job
        self._open[job.id] = job
        self.metrics.submissions.inc()
        log.info("job %s (%s) submitted by %s", job.id, job.name, job.submitter)
        self._job_changed(job, "submitted")
        self._wake.set()
        return job

    async def resubmit(self, job_id: str, params: dict[str, Any], submitter: str) -> Job:
        old = self.get(job_id)
        body = {k: v for k, v in old.spec.items() if k not in ("epochs",)}
        hyper = dict(old.spec.get("hyperparameters", {}))
        hyper.update(params)
        body["hyperparameters"] = hyper
        if not body.get("model_name"):
            body.pop("model_name", None)
        return await self.submit(body, submitter)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state.terminal:
            raise JobError(f"job {job.id} already ended ({job.state.value})")
        self._stop_tasks(job, "cancelled by the user", TaskRunState.CANCELLED)
        self._finish(job, JobState.CANCELLED, "cancelled by the user")
        return job

    def pause(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state not in (JobState.QUEUED, JobState.RUNNING):
            raise JobError(f"only queued or running jobs can be paused; {job.id} is {job.state.value}")
        if job.id in self._registering:  # nothing runs any more: pausing would only hide the save's outcome
            raise JobError(f"all tasks of {job.id} are done; the job is saving its model")
        checkpointing = get_workload(str(job.spec["algorithm"])).category in _CHECKPOINTING
        for task in job.tasks:
            record = self.fleet.agents.get(task.node_id)
            online = record is not None and record.client is not None and record.state is AgentState.ONLINE
            if checkpointing and task.state is TaskRunState.RUNNING and online and not task.stopping:
                assert record is not None
                task.stopping = True
                self._task_event(job, task, "pausing: saving a checkpoint, then stopping")
                self._spawn(self._stop_at_checkpoint(job, task, record, task.agent_task_id))
        self._stop_tasks(job, "paused by the user", TaskRunState.PENDING)
        job.state = JobState.PAUSED
        self._job_changed(job, "paused")
        return job

    def resume(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state is not JobState.PAUSED:
            raise JobError(f"only paused jobs can be resumed; {job.id} is {job.state.value}")
        job.state, job.queued_since = JobState.QUEUED, time.time()
        self._job_changed(job, "resumed")
        self._wake.set()
        return job

    def retry(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            raise JobError(f"only failed or cancelled jobs can be retried; {job.id} is {job.state.value}")
        for task in job.tasks:
            if task.state is not TaskRunState.SUCCEEDED:
                task.state, task.failures, task.replacements, task.error, task.exit_cause = (
                    TaskRunState.PENDING,
                    0,
                    0,
                    "",
                    "",
                )
                task.retry_at = 0.0
        if job.mode == "sweep":  # a retried sweep starts over
            job.tasks = []
            self._studies.pop(job.id, None)
        job.state, job.error, job.finished_at, job.queued_since = JobState.QUEUED, "", 0.0, time.time()
        self._open[job.id] = job
        self._job_changed(job, "retried")
        self._wake.set()
        return job

    async def _stop_at_checkpoint(self, job: Job, task: JobTask, record: AgentRecord, attempt: str) -> None:
        """Pause one running attempt: the agent asks the workload to checkpoint and stop, and cancels
        it after the grace period. The watcher stays, so the checkpoint and the end are recorded."""
        try:
            assert record.client is not None
            await record.client.cancel_task(attempt, "paused by the user", timeout=10, checkpoint_grace=_PAUSE_GRACE)
        except (grpc.aio.AioRpcError, AssertionError) as exc:
            if task.agent_task_id == attempt and task.stopping:
                log.info("job %s: could not pause %s at a checkpoint (%s); cancelling it", job.id, attempt, exc)
                self._abandon_attempt(job, task, "paused by the user")
                task.state = TaskRunState.PENDING
                self._job_changed(job, "progress")

    def _stop_tasks(self, job: Job, reason: str, new_state: TaskRunState) -> None:
        for task in job.tasks:
            if task.stopping and new_state is TaskRunState.PENDING:
                continue  # already stopping at a checkpoint; it becomes PENDING when it ends
            if task.state.active:
                self._abandon_attempt(job, task, reason)
                task.state = new_state
                self._task_event(job, task, reason)
            elif task.state is TaskRunState.PENDING and new_state is TaskRunState.CANCELLED:
                task.state = new_state

    def _abandon_attempt(self, job: Job, task: JobTask, reason: str) -> None:
        """Stop caring about the current attempt: cancel it on its agent, never count its result."""
        attempt, node = task.agent_task_id, task.node_id
        task.stopping = False
        if not attempt:
            return
        task.stale_attempts.append(attempt)
        watcher = self._watchers.pop(attempt, None)
        if watcher is not None:
            watcher.cancel()
        record = self.fleet.agents.get(node)
        if record is not None:
            if record.client is not None and record.state is AgentState.ONLINE:
                # The slot stays counted as busy until the agent confirms the task has stopped.
                self._spawn(self._cancel_on_agent(record, attempt, reason))
            else:
                record.placed.discard(attempt)
        task.agent_task_id = ""
        self._wake.set()

    async def _cancel_on_agent(self, record: AgentRecord, attempt: str, reason: str) -> None:
        try:
            if record.client is not None:
                await record.client.cancel_task(attempt, reason, timeout=10)
        except grpc.aio.AioRpcError as exc:
            log.info("could not cancel %s on %s: %s", attempt, record.name, exc.code().name)
        finally:
            record.placed.discard(attempt)
            self._wake.set()

    # ---- scheduling

    async def _schedule_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _TICK)
            self._wake.clear()
            try:
                started = time.perf_counter()
                self._check_timeouts_and_orphans()
                self._schedule()
                self.metrics.schedule_pass.observe(time.perf_counter() - started)
                if self._gauges_stale and time.monotonic() - self._gauges_at >= _TICK:
                    self._update_gauges()
            except Exception:
                log.exception("scheduler pass failed")

    def _schedule(self) -> None:
        for job in list(self._open.values()):
            if job.mode == "sweep" and job.state in (JobState.QUEUED, JobState.RUNNING):
                self._feed_sweep(job)
        capacities = []
        for record in self.fleet.agents.values():
            if not record.schedulable or record.info is None:
                continue
            tel = record.telemetry
            gpu_slots = len(record.info.gpus)
            capacities.append(
                Capacity(
                    node_id=record.node_id,
                    name=record.name,
                    free_slots=record.slots_free,
                    free_gpu_slots=max(0, gpu_slots - len(record.placed)) if gpu_slots else 0,
                    gpu_free_memory=sum(g.memory_total_bytes - g.memory_used_bytes for g in tel.gpus) if tel else 0,
                    load=tel.cpu_percent if tel else 0.0,
                    labels=dict(record.info.labels),
                    workloads=frozenset(record.info.workloads),
                )
            )
        if not any(c.free_slots > 0 for c in capacities):
            return  # nothing can be placed: spare the pass over the queue
        requests = []
        now = time.time()
        for job in self._open.values():
            if job.state not in (JobState.QUEUED, JobState.RUNNING):
                continue
            pending = tuple(t.index for t in job.tasks if t.state is TaskRunState.PENDING and t.retry_at <= now)
            if not pending:
                continue
            gang = job.mode == "gang"
            if gang and len(pending) != len(job.tasks):
                continue  # wait until every rank of the gang is stopped before re-placing it
            c = job.spec.get("constraints", {})
            requests.append(
                Request(
                    job_id=job.id,
                    priority=job.priority,
                    seq_no=job.seq_no,
                    ranks=pending,
                    workload=str(job.spec["algorithm"]),
                    gpus=int(job.spec.get("gpus", 0)),
                    gang=gang,
                    on=tuple(c.get("on", ())),
                    not_on=tuple(c.get("not_on", ())),
                    labels=tuple(sorted(c.get("labels", {}).items())),
                    waiting_since=job.queued_since,
                    avoid=tuple(sorted({n for t in job.tasks if t.index in pending for n in t.failed_on})),
                )
            )
        if not requests:
            return
        placements = sorted(
            plan(requests, capacities, time.time(), self.gang_reserve_after), key=lambda p: (p.job_id, p.rank)
        )
        gangs: dict[str, dict[int, str]] = {}  # a gang is placed whole, so its layout is known here
        for p in placements:
            if self.jobs[p.job_id].mode == "gang":
                gangs.setdefault(p.job_id, {})[p.rank] = p.node_id
        layouts = {job_id: rank_layout(nodes) for job_id, nodes in gangs.items()}
        for placement in placements:
            job = self.jobs[placement.job_id]
            record = self.fleet.agents[placement.node_id]
            if job.mode == "gang" and placement.rank == 0:
                # rank 0's agent hosts the rendezvous; a fresh port for every (re)start of the gang
                job.rendezvous = {
                    "master_addr": record.address.rpartition(":")[0].strip("[]"),
                    "master_port": secrets.randbelow(30_000) + 20_000,
                }
            layout = layouts.get(job.id, {}).get(placement.rank)
            self._dispatch(job, job.tasks[placement.rank], record, layout)

    # ---- sweeps

    def _study(self, job: Job) -> Study:
        """The job's Optuna study; after a restart it is rebuilt from the stored trials."""
        study = self._studies.get(job.id)
        if study is None:
            sweep = {k: v for k, v in job.spec["sweep"].items() if k != "budget"}
            workload = get_workload(str(job.spec["algorithm"]))
            regression = sweep["metric"] in ("r2", "rmse", "mae", "train_r2")
            study = self._studies[job.id] = Study(parse_sweep(sweep, workload, regression))
            metric = str(sweep["metric"])
            for task in job.tasks:
                params = {k: (task.params or {})[k] for k in sweep["params"]}
                if task.state is TaskRunState.SUCCEEDED:
                    study.replay(params, task.metrics.get(metric))
                elif task.state in (TaskRunState.FAILED, TaskRunState.CANCELLED):
                    study.replay(params, None)
                else:
                    study.resume(task.index, params)
        return study

    def _feed_sweep(self, job: Job) -> None:
        """Ask Optuna for trials while slots are free and the budget lasts; finish the job when all are in."""
        sweep = job.spec["sweep"]
        study = self._study(job)
        in_flight = [t for t in job.tasks if t.state is TaskRunState.PENDING or t.state.active]
        deadline = (job.started_at or job.created_at) + float(sweep["timeout"]) if sweep.get("timeout") else None
        expired = deadline is not None and time.time() > deadline
        if expired:
            for task in [t for t in in_flight if t.state is TaskRunState.PENDING]:
                task.state, task.error = TaskRunState.CANCELLED, "sweep timeout"
                study.tell(task.index, None)
                self._task_event(job, task, "not started: sweep timeout")
            in_flight = [t for t in in_flight if t.state.active]
        workload = str(job.spec["algorithm"])
        parallel = sum(
            a.slots_free
            for a in self.fleet.agents.values()
            if a.schedulable and a.info is not None and workload in a.info.workloads
        )
        pending = sum(1 for t in in_flight if t.state is TaskRunState.PENDING)
        while not expired and len(job.tasks) < int(sweep["budget"]) and pending < max(1, parallel):
            index = len(job.tasks)
            trial = study.ask(index)
            task = JobTask(index=index, params={**job.spec.get("hyperparameters", {}), **trial})
            job.tasks.append(task)
            pending += 1
            in_flight.append(task)
            self._task_event(job, task, f"trial {index}: {trial}")
        if in_flight or (not expired and len(job.tasks) < int(sweep["budget"])):
            return
        metric, best = str(sweep["metric"]), None
        scored = [t for t in job.tasks if t.state is TaskRunState.SUCCEEDED and metric in t.metrics]
        if scored:
            pick = max if sweep["direction"] == "maximize" else min
            best = pick(scored, key=lambda t: t.metrics[metric])
        if best is None:
            self._finish(job, JobState.FAILED, f"no trial succeeded ({len(job.tasks)} tried)")
            return
        job.metrics = {**best.metrics, "best_trial": float(best.index), "trials_completed": float(len(scored))}
        self._succeed(job)
        self._studies.pop(job.id, None)

    def _dispatch(self, job: Job, task: JobTask, record: AgentRecord, layout: RankLayout | None = None) -> None:
        task.attempt += 1
        task.agent_task_id = f"{job.id}-r{task.index}-a{task.attempt}"
        task.node_id, task.cursor, task.progress = record.node_id, 0, 0.0
        task.sklearn_version = record.info.sklearn_version if record.info else ""
        task.state, task.error, task.exit_cause = TaskRunState.DISPATCHED, "", ""
        task.started_at, task.finished_at = time.time(), 0.0
        record.placed.add(task.agent_task_id)
        if job.state is JobState.QUEUED:
            job.state = JobState.RUNNING
            job.started_at = job.started_at or time.time()
            self._job_changed(job, "started")
        self._task_event(job, task, f"placed on {record.name}")
        self._spawn(self._run_attempt(job, task, record, task.agent_task_id, layout))

    def _task_spec(self, job: Job, task: JobTask, layout: RankLayout | None = None) -> TaskSpec:
        spec = job.spec
        local = layout or RankLayout(0, 0, 0, 0)  # local_world_size 0: alone on its agent
        return TaskSpec(
            task_id=task.agent_task_id,
            job_id=job.id,
            workload=str(spec["algorithm"]),
            params=dict(task.params if task.params is not None else spec.get("hyperparameters", {})),
            rank=task.index,
            world_size=len(job.tasks),
            gpus=int(spec.get("gpus", 0)),
            attempt=task.attempt,
            dataset=str(spec.get("dataset", "")),
            dataset_params=dict(spec.get("dataset_params") or {}),
            partition={"cv": "cv", "gang": "gang", "shards": "shard"}.get(job.mode, ""),
            single_task=job.mode == "",
            rendezvous=Rendezvous(**job.rendezvous) if job.mode == "gang" and job.rendezvous else None,
            local_rank=local.local_rank,
            local_world_size=local.local_world_size,
            group_rank=local.group_rank,
            group_world_size=local.group_world_size,
            max_restarts=int(spec.get("max_retries", 2)),
        )

    async def _run_attempt(
        self, job: Job, task: JobTask, record: AgentRecord, attempt: str, layout: RankLayout | None = None
    ) -> None:
        client = record.client
        try:
            if client is None:
                raise ConnectionError("agent has no connection")
            spec = await self._with_checkpoint(job, task, self._task_spec(job, task, layout), client)
            spec = await self._with_script(job, spec, client)
            spec = await self._with_dataset(spec, client)
            await client.run_task(spec, timeout=15)
        except (grpc.aio.AioRpcError, ConnectionError) as exc:
            if task.agent_task_id != attempt:
                return
            record.placed.discard(attempt)
            code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else grpc.StatusCode.UNAVAILABLE
            text = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            if code in (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ):
                log.info("agent %s did not take %s (%s); back to the queue", record.name, attempt, code.name)
                task.stale_attempts.append(attempt)
                task.state, task.agent_task_id = TaskRunState.PENDING, ""
                self._task_event(job, task, f"not accepted by {record.name}: {text}")
                self._requeue(job, [task], f"rank {task.index} not accepted by {record.name}")
                await asyncio.sleep(0.5)
                self._wake.set()
            else:
                self._task_finished(job, task, Finished(TaskState.FAILED, "rejected", f"{record.name}: {text}"))
            return
        self._watch_attempt(job, task, attempt)

    async def _merge_shards(self, job: Job) -> None:
        """All shards of a forest are in: merge them into the job's model, or fail with the reason."""
        versions = {t.sklearn_version for t in job.tasks}
        if len(versions) > 1:
            self._finish(
                job,
                JobState.FAILED,
                f"shards came from agents with different scikit-learn versions "
                f"({', '.join(sorted(versions))}); they cannot be merged",
            )
            return
        shards = [
            next((a for a in job.artifacts if a.kind == "model" and a.task_index == t.index), None) for t in job.tasks
        ]
        if any(s is None for s in shards):
            self._finish(job, JobState.FAILED, "a shard finished without saving its model")
            return
        paths = []
        started = time.monotonic()
        for shard in shards:
            assert shard is not None
            fetch = self._fetches.get(shard.sha256)
            if fetch is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(fetch), 120)
            try:
                paths.append(await self.blobs.ensure(shard.sha256))
            except FileNotFoundError as exc:
                self._finish(job, JobState.FAILED, f"a shard's model never reached the blob store: {exc}")
                return
        out = self.blobs_dir / "incoming" / f"{job.id}-merged.skops"
        fetched = time.monotonic()
        try:
            if is_user_dataset(str(job.spec["dataset"])):  # scored on the same data: have it here
                await self.blobs.ensure(str(job.spec["dataset"]).split(":", 1)[1])
            values = await asyncio.to_thread(
                merge_forest,
                paths,
                str(job.spec["dataset"]),
                dict(job.spec.get("dataset_params") or {}),
                out,
                self.blobs_dir,
            )
            digest = await asyncio.to_thread(file_sha256, out)
            final = self.blobs.path(digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            out.replace(final)
            await self.blobs.publish(digest)
        except (OSError, ValueError) as exc:  # FileNotFoundError included: a shard's model is gone
            self._finish(job, JobState.FAILED, f"merging the forest's shards failed: {exc}")
            return
        log.info(
            "job %s: merged %d shards (waited %.2fs for their models, merged in %.2fs)",
            job.id,
            len(paths),
            fetched - started,
            time.monotonic() - fetched,
        )
        job.artifacts.append(ArtifactInfo(digest, final.stat().st_size, "model", "model.skops", -1, 0, time.time()))
        job.metrics = {**values, "shards": float(len(job.tasks))}
        self._succeed(job)

    async def _with_dataset(self, spec: TaskSpec, client: AgentClient) -> TaskSpec:
        """User data travels to the agent by content (skipped when its cache has it)."""
        if not is_user_dataset(spec.dataset):
            return spec
        digest = spec.dataset[len("user:") :]
        await self._send_blob(client, digest)
        return dataclasses.replace(spec, inputs=(*spec.inputs, BlobRef(str(spec.dataset_params["file"]), digest)))

    async def _send_blob(self, client: AgentClient, sha256: str) -> None:
        """Get a blob onto an agent: from the object store directly when it can, else through the controller."""
        if sha256 in await client.has_blobs([sha256]):
            return
        direct = await self.blobs.direct_download(sha256)
        if direct is not None:
            try:
                await client.fetch_blob(sha256, direct[1], direct[0])
                return
            except grpc.aio.AioRpcError as exc:
                log.info("agent could not fetch %s from the object store (%s); sending it", sha256[:12], exc.details())
        await client.put_blob(await self.blobs.ensure(sha256))

    async def _with_script(self, job: Job, spec: TaskSpec, client: AgentClient) -> TaskSpec:
        """A script job sends its file to the agent (by content) and names it among the inputs."""
        script = job.spec.get("script")
        if not script:
            return spec
        digest = await client.put_bytes(str(script["source"]).encode())
        params = {
            "script": script["name"],
            "args": script["args"],
            "requirements": script["requirements"],
            "sha256": digest,
        }
        return dataclasses.replace(spec, params=params, inputs=(*spec.inputs, BlobRef(script["name"], digest)))

    async def _with_checkpoint(self, job: Job, task: JobTask, spec: TaskSpec, client: AgentClient) -> TaskSpec:
        """A re-placed, retried or resumed torch task continues from the job's latest checkpoint."""
        checkpoints = [a for a in job.artifacts if a.kind == "checkpoint"]
        if job.mode == "sweep":  # every trial has its own
            checkpoints = [a for a in checkpoints if a.task_index == task.index]
        if not checkpoints or get_workload(spec.workload).category not in _CHECKPOINTING:
            return spec
        latest = max(checkpoints, key=lambda a: a.step)
        fetch = self._fetches.get(latest.sha256)
        if fetch is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(fetch), 60)
        try:
            await self._send_blob(client, latest.sha256)
        except FileNotFoundError:
            log.warning("job %s: checkpoint %s is not in the blob store; starting over", job.id, latest.sha256[:12])
            return spec
        self._task_event(job, task, f"resuming from the checkpoint of step {latest.step}")
        return dataclasses.replace(spec, inputs=(*spec.inputs, BlobRef("resume.ckpt", latest.sha256)))

    def _watch_attempt(self, job: Job, task: JobTask, attempt: str) -> None:
        if attempt in self._watchers and not self._watchers[attempt].done():
            return
        self._watchers[attempt] = asyncio.create_task(self._follow(job, task, attempt), name=f"watch-{attempt}")

    async def _follow(self, job: Job, task: JobTask, attempt: str) -> None:
        """Stream the attempt's events from its agent, resuming from the stored cursor after any break."""
        try:
            while task.agent_task_id == attempt:
                record = self.fleet.agents.get(task.node_id)
                if record is None or record.client is None or record.state is not AgentState.ONLINE:
                    await asyncio.sleep(0.25)
                    continue
                try:
                    async for event in record.client.watch_task(attempt, after_seq=task.cursor):
                        if task.agent_task_id != attempt:
                            return
                        self._on_agent_event(job, task, event)
                        if isinstance(event.payload, Finished):
                            return
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND and task.agent_task_id == attempt:
                        self._task_finished(
                            job,
                            task,
                            Finished(TaskState.FAILED, "worker_lost", "the agent no longer knows this task"),
                        )
                        return
                    await asyncio.sleep(0.25)
        finally:
            if self._watchers.get(attempt) is asyncio.current_task():
                del self._watchers[attempt]

    # ---- agent events

    def _on_agent_event(self, job: Job, task: JobTask, event: TaskEvent) -> None:
        if event.seq <= task.cursor:
            return  # already stored: a replay after a reconnect
        task.cursor = event.seq
        p = event.payload
        base = {"attempt_id": event.task_id, "agent_seq": event.seq, "task_index": task.index}
        if isinstance(p, StateChanged):
            if p.state is TaskState.RUNNING:
                task.state = TaskRunState.RUNNING
            self._record(job, "task_state", base, state=task.state.value, message=p.message)
        elif isinstance(p, LogLine):
            self._record(job, "log", base, stream=p.stream, message=p.line)
        elif isinstance(p, MetricPoint):
            if job.mode != "gang" or task.index == 0:  # in a gang, rank 0 speaks for the job
                job.metrics[p.name] = p.value
                self.metrics.observe_metric(job.id, p.name, p.value)
            task.metrics[p.name] = p.value
            self._record(job, "metric", base, step=p.step, name=p.name, value=p.value, wall_time=p.wall_time)
            sweep = job.spec.get("sweep") or {}
            judged = sweep.get("prune") and p.name == sweep["metric"] and task.state.active
            if judged and self._study(job).report(task.index, p.step, p.value):
                self._prune(job, task, p)
        elif isinstance(p, Progress):
            task.progress = p.fraction
            self._record(job, "progress", base, value=p.fraction)
        elif isinstance(p, ArtifactReady | CheckpointSaved):
            kind = p.kind if isinstance(p, ArtifactReady) else "checkpoint"
            step = p.step if isinstance(p, CheckpointSaved) else 0
            job.artifacts.append(ArtifactInfo(p.sha256, p.size, kind, p.name, task.index, step, time.time()))
            if kind == "checkpoint":
                job.artifacts, dropped = trim_checkpoints(job.artifacts, self.keep_checkpoints)
                for gone in dropped:
                    if all(a.sha256 != gone.sha256 for a in job.artifacts):
                        self._spawn(self.blobs.delete(gone.sha256))
            self._record(job, "artifact", base, name=p.name, message=p.sha256, state=kind, value=float(p.size))
            record = self.fleet.agents.get(task.node_id)
            if record is not None and p.sha256 not in self._fetches:
                self._start_fetch(record, p.sha256)
        elif isinstance(p, Finished):
            self._task_finished(job, task, p, base)

    def _prune(self, job: Job, task: JobTask, point: MetricPoint) -> None:
        """Optuna judged this trial hopeless at this step: stop it and count it as pruned."""
        self._abandon_attempt(job, task, "pruned by the sweep")
        task.state, task.exit_cause, task.finished_at = TaskRunState.CANCELLED, "pruned", time.time()
        task.error = (
            f"pruned at step {point.step}: {point.name}={point.value:.4f} "
            "is worse than the median of completed trials at that step"
        )
        self._study(job).prune(task.index)
        self._task_event(job, task, f"trial {task.index} {task.error}")
        self._job_changed(job, "progress")
        self._wake.set()

    def _fetched(self, sha256: str, task: asyncio.Task[None]) -> None:
        if self._fetches.get(sha256) is task:
            del self._fetches[sha256]
        if not task.cancelled():
            task.exception()  # retrieved: whoever awaited it has seen it

    def _start_fetch(self, record: AgentRecord, sha256: str, strict: bool = False) -> asyncio.Task[None]:
        fetch = asyncio.create_task(self._fetch_blob(record, sha256, strict))
        self._fetches[sha256] = fetch
        fetch.add_done_callback(functools.partial(self._fetched, sha256))
        return fetch

    async def _fetch_once(self, record: AgentRecord, sha256: str, strict: bool = False) -> None:
        """Every copy of a blob from an agent goes through self._fetches: a copy of this sha256 already running
        is joined, never started twice (two copies would race on the same destination). `strict`: raise what
        went wrong: after joining a copy that only logs its failure, a strict caller copies again itself, which
        costs nothing when the joined copy landed (a file that hashes right is not copied again)."""
        running = self._fetches.get(sha256)
        if running is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
            if not strict:
                return
        await asyncio.shield(self._fetches.get(sha256) or self._start_fetch(record, sha256, strict))

    async def _fetch_blob(self, record: AgentRecord, sha256: str, strict: bool = False) -> None:
        """Copy an artifact or checkpoint into the controller's blob store, so it outlives its agent.
        A file already there is trusted only when it hashes right (a crash or a bad disk may have damaged it).
        `strict`: raise what went wrong instead of logging it."""
        dest = self.blobs.path(sha256)
        if record.client is None:
            return
        if await asyncio.to_thread(dest.exists):
            if await asyncio.to_thread(hashes_to, dest, sha256):
                return
            log.warning("blob %s in %s is damaged; fetching it again from %s", sha256[:12], self.blobs.uri, record.name)
        url = await self.blobs.direct_upload(sha256)
        if url is not None:
            try:  # straight from the agent into the object store
                await record.client.push_blob(sha256, url)
                return
            except grpc.aio.AioRpcError as exc:
                log.info(
                    "agent %s could not upload %s itself (%s); relaying it", record.name, sha256[:12], exc.details()
                )
        try:
            await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
            await record.client.get_blob(sha256, dest)
            await self.blobs.publish(sha256)
        except (grpc.aio.AioRpcError, ValueError, OSError) as exc:
            if strict:
                raise _fetch_error(exc, self.blobs_dir, record.name) from None
            log.warning("could not fetch blob %s from %s: %s", sha256[:12], record.name, exc)
        except Exception as exc:  # the object store refused it: keep the local copy, say so
            if strict:
                raise
            log.error("could not store blob %s in %s: %s", sha256[:12], self.blobs.uri, exc)

    def _task_finished(self, job: Job, task: JobTask, fin: Finished, base: dict[str, Any] | None = None) -> None:
        attempt = task.agent_task_id
        record = self.fleet.agents.get(task.node_id)
        if record is not None:
            record.placed.discard(attempt)
        task.exit_cause, task.error, task.finished_at = fin.exit_cause, fin.error, time.time()
        base = base or {"task_index": task.index}
        if task.stopping and fin.status is not TaskState.SUCCEEDED:
            task.stopping, task.state, task.agent_task_id = False, TaskRunState.PENDING, ""
            self._record(
                job, "task_state", base, state=task.state.value, message=f"paused ({fin.exit_cause}): {fin.error}"
            )
            self._job_changed(job, "progress")
            self._wake.set()
            return
        task.stopping = False
        if fin.status is TaskState.SUCCEEDED:
            task.state, task.progress = TaskRunState.SUCCEEDED, 1.0
            self._record(job, "task_state", base, state=task.state.value, message="succeeded")
            if job.mode == "sweep":
                self._study(job).tell(task.index, task.metrics.get(str(job.spec["sweep"]["metric"])))
                self._job_changed(job, "progress")
                self._wake.set()
                return
            if all(t.state is TaskRunState.SUCCEEDED for t in job.tasks):
                if job.mode == "shards":
                    self._spawn(self._merge_shards(job))
                    return
                if job.mode == "cv":
                    job.metrics = cv_summary([t.metrics for t in job.tasks])
                self._succeed(job)
            else:
                self._job_changed(job, "progress")
            self._wake.set()
            return
        lost = fin.exit_cause in ("agent_restarted", "cancelled", "drain_timeout", "worker_lost")
        task.state = TaskRunState.FAILED
        self._record(job, "task_state", base, state=task.state.value, message=f"{fin.exit_cause}: {fin.error}")
        if lost:
            self._replace(job, [task], f"rank {task.index} lost ({fin.exit_cause})")
        else:
            self._fail_task(job, task, f"rank {task.index} failed ({fin.exit_cause}): {fin.error}")
        self._wake.set()

    def _fail_task(self, job: Job, task: JobTask, reason: str) -> None:
        task.failures += 1
        if task.node_id and task.node_id not in task.failed_on:
            task.failed_on.append(task.node_id)
        max_retries = int(job.spec.get("max_retries", 2))
        if task.failures > max_retries and job.mode == "sweep":
            task.state = TaskRunState.FAILED  # a failed trial is a result of the sweep, not its end
            self._study(job).tell(task.index, None)
            self._task_event(job, task, f"trial failed: {reason}")
            self._wake.set()
            return
        if task.failures > max_retries:
            self._stop_tasks(job, "another rank failed", TaskRunState.CANCELLED)
            task.state = TaskRunState.FAILED
            self._finish(job, JobState.FAILED, f"{reason} (after {task.failures} attempt(s))")
            return
        delay = retry_delay(task.failures)
        task.retry_at = time.time() + delay
        log.info("job %s: %s; retry %d of %d in %.0fs", job.id, reason, task.failures, max_retries, delay)
        self._requeue(job, [task], f"{reason}; retrying in {delay:.0f}s")

    def _replace(self, job: Job, tasks: list[JobTask], reason: str) -> None:
        """Agent or worker lost: run elsewhere without spending max_retries (a separate budget)."""
        for task in tasks:
            task.replacements += 1
            if task.replacements > self.max_replacements:
                self._stop_tasks(job, "giving up", TaskRunState.CANCELLED)
                self._finish(job, JobState.FAILED, f"{reason}; re-placed {self.max_replacements} times, giving up")
                return
        self._requeue(job, tasks, reason)

    def _requeue(self, job: Job, tasks: list[JobTask], reason: str) -> None:
        if job.state.terminal:
            return
        if job.mode == "gang":  # a gang restarts as a whole
            tasks = job.tasks
        for task in tasks:
            if task.state.active:
                self._abandon_attempt(job, task, f"gang restart: {reason}")
            if task.state is not TaskRunState.PENDING:
                task.state = TaskRunState.PENDING
                task.agent_task_id = ""
                self._task_event(job, task, f"queued again: {reason}")
        if job.state is JobState.RUNNING and all(t.state is TaskRunState.PENDING for t in job.tasks):
            job.queued_since = time.time()
        self._job_changed(job, "requeued")

    # ---- fleet events

    def _on_fleet(self, kind: str, record: AgentRecord) -> None:
        if kind != "telemetry":  # an agent's state may have changed (connected, paired, lost, removed)
            self.metrics.active_workers.set(self._online())
        if kind == "lost":
            for job in list(self.jobs.values()):
                on_it = [t for t in job.tasks if t.state.active and t.node_id == record.node_id]
                if on_it and not job.state.terminal:
                    log.warning("job %s: agent %s lost; re-placing %d task(s)", job.id, record.name, len(on_it))
                    for task in on_it:
                        self._abandon_attempt(job, task, "agent lost")
                        task.state = TaskRunState.FAILED
                        self._task_event(job, task, f"agent {record.name} lost")
                    self._replace(job, on_it, f"agent {record.name} lost")
            self._wake.set()
        elif kind in ("added", "back", "paired"):
            self._spawn(self._reconcile(record))
            self._wake.set()
        elif kind == "telemetry" and not record.placed:
            self._wake.set()

    def _online(self) -> int:
        return sum(1 for a in self.fleet.agents.values() if a.state is AgentState.ONLINE)

    async def _reconcile(self, record: AgentRecord) -> None:
        """An agent (re)appeared: re-attach to our current attempts, cancel attempts we moved on from."""
        current = {}
        for job in self.jobs.values():
            for task in job.tasks:
                if task.state.active and task.node_id == record.node_id and task.agent_task_id:
                    current[task.agent_task_id] = (job, task)
        for attempt, (job, task) in current.items():
            record.placed.add(attempt)
            self._watch_attempt(job, task, attempt)
        if record.client is None:
            return
        try:
            running = await record.client.list_tasks(timeout=5)
        except grpc.aio.AioRpcError:
            return
        for summary in running:
            if summary.task_id in current or not summary.job_id.startswith("j"):
                continue
            if summary.job_id not in self.jobs:
                continue
            log.info("cancelling stale attempt %s on %s", summary.task_id, record.name)
            await self._cancel_on_agent(record, summary.task_id, "superseded by a newer attempt")

    def _check_timeouts_and_orphans(self) -> None:
        now = time.time()
        restarted_long_ago = time.monotonic() - self._started > _ORPHAN_GRACE
        for job in list(self._open.values()):
            if job.state is JobState.RUNNING:
                limit = job.spec.get("timeout")
                if limit and job.started_at and now - job.started_at > float(limit):
                    self._stop_tasks(job, "job timeout", TaskRunState.CANCELLED)
                    self._finish(job, JobState.FAILED, f"timed out after {float(limit):g}s")
                    continue
            if restarted_long_ago and not job.state.terminal:
                orphans = [t for t in job.tasks if t.state.active and t.node_id not in self.fleet.agents]
                if orphans:
                    for task in orphans:
                        self._abandon_attempt(job, task, "agent unknown after restart")
                        task.state = TaskRunState.FAILED
                    self._replace(job, orphans, "its agent did not come back after a controller restart")

    # ---- bookkeeping

    def _succeed(self, job: Job) -> None:
        """Register the job's model first, then mark it SUCCEEDED, so whoever waits for the job sees its version."""
        if job.state.terminal or job.id in self._registering:
            return  # already succeeded (a late duplicate event), or registering now
        self._registering.add(job.id)
        self._spawn(self._register(job))

    def _finish(self, job: Job, state: JobState, error: str) -> None:
        job.state, job.error, job.finished_at = state, error, time.time()
        self._open.pop(job.id, None)
        log.info("job %s %s%s", job.id, state.value, f": {error}" if error else "")
        self.metrics.job_ended(job.id)
        self._job_changed(job, state.value.lower())

    async def _register(self, job: Job) -> None:
        """Save the job's model (its files in the blob store, its registry entry) before the job SUCCEEDs.
        A failure (a full disk, an agent away) is retried with back-off, the job saying why meanwhile;
        after _SAVE_GIVE_UP seconds the job FAILs with the cause."""
        delay, started = _SAVE_RETRY_FIRST, time.monotonic()
        try:
            while True:
                try:
                    record = await self._save_model(job)
                    break
                except Exception as exc:
                    reason = str(exc) or type(exc).__name__
                    if time.monotonic() - started + delay > _SAVE_GIVE_UP:
                        log.error("job %s: its model could not be saved, giving up: %s", job.id, reason)
                        if not job.state.terminal:
                            self._finish(job, JobState.FAILED, f"its model could not be saved: {reason}")
                        return
                    log.warning("job %s: saving its model failed (%s); retrying in %.0fs", job.id, reason, delay)
                    job.error = f"saving its model failed: {reason}; retrying in {delay:.0f}s"
                    self._job_changed(job, job.error)
                await asyncio.sleep(delay)
                delay = min(_SAVE_RETRY_MAX, delay * 2)
                if job.state.terminal:  # cancelled meanwhile
                    return
        finally:
            self._registering.discard(job.id)
        if record is not None:
            job.model = {"name": record["name"], "version": record["version"], "sha256": record["sha256"]}
            self._record(
                job, "log", {}, stream="controller", message=f"registered as {record['name']}:{record['version']}"
            )
        if not job.state.terminal:  # not cancelled meanwhile
            job.error = ""
            self._finish(job, JobState.SUCCEEDED, "")

    async def _save_model(self, job: Job) -> dict[str, Any] | None:
        """The files registration needs, checked (fetched again from their agent when missing or damaged),
        then the registry entry."""
        for artifact in (a for a in pick_artifacts(job) if a is not None):
            fetch = self._fetches.get(artifact.sha256)
            if fetch is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(fetch), 120)
            if await self.blobs.intact(artifact.sha256, artifact.size):
                continue
            task = next((t for t in job.tasks if t.index == artifact.task_index), None)
            record = self.fleet.agents.get(task.node_id) if task is not None else None
            if record is None or record.client is None:
                raise OSError(f"{artifact.name} ({artifact.sha256[:12]}) is not saved and its agent is not connected")
            await self._fetch_once(record, artifact.sha256, strict=True)
        names = {d["sha256"]: name for name, d in self.datasets.items()}
        return await self.registry.register_job(job, names)

    def _job_changed(self, job: Job, message: str) -> None:
        self._record(job, "job_state", {}, state=job.state.value, message=message or job.error)
        self.store.save_job(job)
        self._gauges_stale = True  # counted on the scheduler's next tick, not once per change
        for queue in list(self._job_listeners):
            queue.put_nowait(job)

    def _task_event(self, job: Job, task: JobTask, message: str) -> None:
        self._record(job, "task_state", {"task_index": task.index}, state=task.state.value, message=message)
        self.store.save_job(job)

    def _record(self, job: Job, kind: str, base: dict[str, Any], **fields: Any) -> None:
        job.last_event_seq += 1
        if "message" in fields:
            fields["message"] = redact(fields["message"])
        record = JobEventRecord(
            job_id=job.id, seq=job.last_event_seq, time=time.time(), kind=kind, **{**base, **fields}
        )
        attempt = base.get("attempt_id", "")
        self.store.append_events([record], {attempt: int(base["agent_seq"])} if attempt else {})
        for queue in self._subscribers.get(job.id, ()):
            queue.put_nowait(record)

    def _update_gauges(self) -> None:
        self._gauges_stale, self._gauges_at = False, time.monotonic()
        self.metrics.active_jobs.set(sum(1 for j in self._open.values() if j.state is not JobState.PAUSED))


def retry_delay(failures: int) -> float:
    """Seconds a task waits before its next attempt after its `failures`-th failure: 1, 2, 4 … at most 30."""
    return min(_RETRY_BACKOFF_MAX, _RETRY_BACKOFF * 2.0 ** min(max(0, failures - 1), 32))


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:  # not created yet (an object store's cache)
        return None


def _fetch_error(exc: Exception, blobs_dir: Path, agent: str) -> Exception:
    if is_disk_full(exc):
        return StoreFullError(full_message(blobs_dir))
    details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
    return OSError(f"copying it from agent {agent} failed: {details}")


def cv_summary(folds: list[dict[str, float]]) -> dict[str, float]:
    """Mean and standard deviation of each metric over the folds (the job's result)."""
    out: dict[str, float] = {}
    for name in sorted(set().union(*folds)):
        values = [f[name] for f in folds if name in f]
        mean = sum(values) / len(values)
        out[name] = mean
        out[f"{name}_std"] = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return out


def job_summary(job: Job) -> dict[str, Any]:
    """The keys `tensorfleet status --json` promises."""
    model = None
    if job.model:
        model = dict(job.model)
    return {
        "id": job.id,
        "name": job.name,
        "state": job.state.value,
        "progress": round(job.progress, 4),
        "tasks": {
            "total": len(job.tasks),
            "completed": sum(1 for t in job.tasks if t.state is TaskRunState.SUCCEEDED),
            "failed": sum(1 for t in job.tasks if t.state is TaskRunState.FAILED),
            "attempts": sum(t.attempt for t in job.tasks),
        },
        "metrics": dict(job.metrics),
        "model": model,
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at or None,
        "finished_at": job.finished_at or None,
    }


__all__ = ["Controller", "JobError", "JobSpecError", "NotFoundError", "ValidationError", "dataclasses"]
