"""The controller core: jobs, their tasks on agents, retries and re-placement. No Qt, no protobuf, no gRPC.

`Controller` is the face the service and the app use; the work is done by its collaborators, one job each:
JobMachine (jobs.py: the state machine), Attempts (attempts.py: tasks on agents, behind the AgentPort),
Ingest and EventLog (ingest.py, events.py: agent events into each job's numbered history), Artifacts
(artifacts.py: blobs, merged shards, registered models), DatasetCatalog (dataset_catalog.py), SweepRunner
(trials.py) and Placement (placement.py: the scheduling loop). One asyncio loop owns all their state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.security.secrets import redact_value
from tensorfleet_desktop.controller.artifacts import Artifacts
from tensorfleet_desktop.controller.attempts import Attempts
from tensorfleet_desktop.controller.background import Background
from tensorfleet_desktop.controller.capacity import CapacitySource
from tensorfleet_desktop.controller.dataset_catalog import DatasetCatalog
from tensorfleet_desktop.controller.dataset_holders import Holders
from tensorfleet_desktop.controller.errors import JobError
from tensorfleet_desktop.controller.events import EventLog
from tensorfleet_desktop.controller.fair_share import DEFAULT_HALF_LIFE
from tensorfleet_desktop.controller.ingest import Ingest
from tensorfleet_desktop.controller.jobs import JobMachine
from tensorfleet_desktop.controller.jobspec import JobSpec, parse_job_spec
from tensorfleet_desktop.controller.metrics import ControllerMetrics
from tensorfleet_desktop.controller.model import ArtifactInfo, Job, JobEventRecord, JobTask
from tensorfleet_desktop.controller.placement import Placement
from tensorfleet_desktop.controller.ports import MIN_FREE_DISK_BYTES, AgentPort, Clock, SystemClock, TicketMaker
from tensorfleet_desktop.controller.preempter import PREEMPT_GRACE
from tensorfleet_desktop.controller.project_files import ProjectFiles
from tensorfleet_desktop.controller.quotas import Quotas
from tensorfleet_desktop.controller.retention import project_manifests
from tensorfleet_desktop.controller.store.base import JobStore, StoreFullError, full_message
from tensorfleet_desktop.controller.store.blobs import BlobStore
from tensorfleet_desktop.controller.team_usage import TeamUsage
from tensorfleet_desktop.controller.trials import SweepRunner

log = logging.getLogger(__name__)
MAX_BATCH_SUBMIT = 1000  # job specs in one SubmitJobs call
FREE_BYTES_TTL = 1.0  # seconds a reading of the blobs' free space is good for (a submit checks it)


class Controller:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        metrics: ControllerMetrics,
        gang_reserve_after: float = 300.0,
        max_replacements: int = 5,
        keep_checkpoints: int = 3,
        *,
        agents: AgentPort,
        clock: Clock | None = None,
        tickets: TicketMaker | None = None,
        peer_transfer: bool = True,
        fair_share: bool = True,
        fair_share_half_life: float = DEFAULT_HALF_LIFE,
        preempt_grace: float = PREEMPT_GRACE,
    ) -> None:
        """`agents` is the core's only way to its agents."""
        clock = clock or SystemClock()
        self.store = store
        self.agents = agents
        self.blobs = blobs
        self.blobs_dir = blobs.root  # the local side: the store itself (file://) or its cache (s3://)
        self.metrics = metrics
        self.background = Background()
        self.events = EventLog(store, clock)
        self.machine = JobMachine(self.events, clock, metrics, max_replacements)
        self.catalog = DatasetCatalog(store, blobs)
        self.project_files = ProjectFiles(blobs)  # project snapshot files (issue 19)
        self.sweeps = SweepRunner(self.machine, self.events)
        self.artifacts = Artifacts(
            store,
            blobs,
            agents,
            self.machine,
            self.events,
            clock,
            self.background,
            self.catalog.entries,
            keep_checkpoints,
        )
        holders = Holders()  # which agents hold which dataset blobs: dispatch names them as peers (issue 20)
        ingest = Ingest(self.events, self.artifacts, self.sweeps, metrics, clock, holders)
        self.attempts = Attempts(
            agents,
            self.machine,
            self.events,
            ingest,
            self.artifacts,
            metrics,
            clock,
            self.background,
            self.project_files,
            holders,
            tickets,
            peer_transfer,
        )
        self.quotas = Quotas(store)  # per user (issue 24); fair share's usage in self.usage
        self.usage = TeamUsage(
            store,
            self.quotas,
            fair_share_half_life,
            fair=fair_share,
            agents=agents.agents,
            shares=self.attempts.gpu_shares,
        )
        self.placement = Placement(
            agents,
            self.machine,
            self.events,
            self.attempts,
            self.sweeps,
            metrics,
            clock,
            gang_reserve_after,
            self.usage,
        )
        self.placement.preempter.grace = preempt_grace  # what a preempted task has to checkpoint and stop
        self.machine.effects = _Effects(self.attempts, self.artifacts, self.sweeps)
        self.jobs = self.machine.jobs
        self.datasets = self.catalog.entries
        self.registry = self.artifacts.registry
        self._loop_task: asyncio.Task[None] | None = None
        self._free: tuple[float, int | None] = (-FREE_BYTES_TTL, None)  # (monotonic time asked, answer)

    def add_capacity_source(self, source: CapacitySource) -> None:
        """Offer queued work that no online agent takes to `source` every scheduling tick (capacity.py)."""
        self.placement.sources.append(source)

    # ---- lifecycle

    async def start(self) -> None:
        await self.catalog.load()
        await self.quotas.load()
        await self.usage.load()
        self.machine.restore(await self.store.load_jobs())
        self.usage.rescan(self.machine.open.values())  # what runs holds its quota from the first pass
        if self.machine.open:
            log.info("restored %d unfinished job(s) from %s", len(self.machine.open), self.store.uri)
        self.placement.update_gauges()
        self._loop_task = asyncio.create_task(self.placement.run(), name="scheduler")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        pending = [*self.attempts.watchers.values(), *self.background.tasks, *self.artifacts.fetches.values()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self.events.record_held_progress()
        # Metric and progress events are stored as they come, but a job's summary (its latest metrics, its tasks'
        # states and progress) only on state changes: save it now, or a restart would resume from the agent's
        # cursor with what the events since the last save told it forgotten (a model registered without its score).
        for job in self.machine.open.values():
            self.store.save_job(job)
        self.usage.tick(self.machine.clock.time(), self.machine.open)  # usage up to now, then saved
        self.usage.save(self.machine.clock.time())
        try:
            await self.store.flush()
        except StoreFullError as exc:
            log.error("stopping with writes the store could not save: %s", exc)

    # ---- queries

    def get(self, job_id: str) -> Job:
        return self.machine.get(job_id)

    def list_jobs(self, states: tuple[str, ...] = (), limit: int = 0) -> list[Job]:
        return self.machine.list_jobs(states, limit)

    def artifact(
        self, job_id: str, name: str, task_index: int | None = None, attempt: int | None = None
    ) -> tuple[Job, ArtifactInfo]:
        """The job's artifact by name (the latest attempt's unless `attempt` says); several tasks' need
        `task_index`."""
        job = self.get(job_id)
        return job, self.artifacts.artifact(job, name, task_index, attempt)

    async def artifact_path(self, job: Job, artifact: ArtifactInfo) -> Path:
        return await self.artifacts.path(job, artifact)

    async def watch(self, job_id: str, after_seq: int = 0) -> AsyncIterator[JobEventRecord]:
        """Replay the stored history after `after_seq`, then follow live until the job ends."""
        async for record in self.events.watch(self.get(job_id), after_seq):
            yield record

    async def history(self, job_id: str, after_seq: int = 0) -> AsyncIterator[JobEventRecord]:
        """The stored history after `after_seq`, up to the job's last event now; no following."""
        job = self.get(job_id)
        async for record in self.events.history(job, after_seq, job.last_event_seq):
            yield record

    def add_job_listener(self, fn: Callable[[Job], None]) -> Callable[[], None]:
        """`fn(job)` runs on the loop after every change a job list shows (state, tasks, progress, agents, error,
        results); call the result to unsubscribe."""
        return self.events.add_job_listener(fn)

    # ---- commands

    async def submit(self, body: dict[str, Any], submitter: str) -> Job:
        """Persist first, then schedule: a job the store cannot save is refused (StoreFullError), never kept
        in memory only."""
        job = self.machine.new_job(await self._checked(body), submitter)
        await self._check_room()
        await self.store.insert_job(job)
        self.machine.admit(job)
        return job

    async def _checked(self, body: dict[str, Any], projects: set[str] | None = None) -> JobSpec:
        """The parsed spec; `projects`: the projects a batch checked already (many jobs of one project: once)."""
        body = self.catalog.resolve(redact_value(body))  # a token pasted into a spec is never stored
        spec = parse_job_spec(body)
        if spec.project is not None:  # its manifest and every file it lists are here, or the submit is refused
            key = json.dumps(spec.project, sort_keys=True)
            if projects is None or key not in projects:
                await self.project_files.check_project(spec.project)
            if projects is not None:
                projects.add(key)
        return spec

    async def _check_room(self) -> None:
        free = await self._free_bytes()
        if free is not None and free < MIN_FREE_DISK_BYTES:  # the rule agents follow: no room for its results
            raise StoreFullError(full_message(self.blobs_dir))

    async def submit_many(self, bodies: Sequence[dict[str, Any]], submitter: str) -> list[Job]:
        """Submit's checks on every spec first (a bad one refuses them all, naming its index), then one store write
        for all, then they are queued in order: an SDK's batch of small jobs costs one call and one commit."""
        if not 1 <= len(bodies) <= MAX_BATCH_SUBMIT:
            raise ValidationError("spec_json", f"must hold 1 to {MAX_BATCH_SUBMIT} job specs, got {len(bodies)}")
        specs, projects = [], set[str]()
        for i, body in enumerate(bodies):
            try:
                specs.append(await self._checked(body, projects))
            except ValidationError as exc:
                raise ValidationError(f"spec_json[{i}].{exc.field}", exc.message) from None
        jobs = [self.machine.new_job(spec, submitter) for spec in specs]
        await self._check_room()
        await self.store.insert_jobs(jobs)
        for job in jobs:
            self.machine.admit(job)
        return jobs

    async def _free_bytes(self) -> int | None:
        """The blobs' free disk space, asked at most once per FREE_BYTES_TTL: a burst of submits pays one thread
        hop, not one each."""
        asked, free = self._free
        now = self.machine.clock.monotonic()
        if now - asked >= FREE_BYTES_TTL:
            free = await asyncio.to_thread(_free_bytes, self.blobs_dir)
            self._free = (now, free)
        return free

    async def resubmit(self, job_id: str, params: dict[str, Any], submitter: str) -> Job:
        old = self.get(job_id)
        body = {k: v for k, v in old.spec.items() if k not in ("epochs",)}
        hyper = dict(old.spec.get("hyperparameters", {}))
        hyper.update(params)
        body["hyperparameters"] = hyper
        if not body.get("model_name"):
            body.pop("model_name", None)
        return await self.submit(body, submitter)

    def set_quota(self, user: str, limits: dict[str, int]) -> dict[str, Any]:
        """Set the given limits of a user ("gpus", "tasks", "queued"; -1 removes one); the quota now. Jobs it held
        back are looked at again at once."""
        quota = self.quotas.set(user, **limits)
        self.machine.wake.set()
        return quota.to_dict()

    def quota_report(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
        """Every quota, each user's holdings, queued jobs, decayed usage and share now, and the usage's half-life."""
        usage = self.usage.snapshot(self.machine.open.values(), self.machine.clock.time())
        return [q.to_dict() for q in self.quotas.list()], usage, self.usage.half_life

    def cancel(self, job_id: str) -> Job:
        return self.machine.cancel(job_id)

    def pause(self, job_id: str) -> Job:
        return self.machine.pause(job_id)

    def resume(self, job_id: str) -> Job:
        return self.machine.resume(job_id)

    def retry(self, job_id: str) -> Job:
        return self.machine.retry(job_id)

    async def delete_job(self, job_id: str) -> Job:
        """Delete an ended job: its record and its whole history, in the store and here. Models it registered
        stay (the registry is independent); its files become garbage for `collect_garbage`. A running job is
        refused: cancel it first. Watchers of the job end, and job lists hear it is gone."""
        job = self.get(job_id)
        if not job.state.terminal:
            raise JobError(f"job {job.id} is {job.state.value}; cancel it first (tensorfleet cancel {job.id})")
        if job.id in self.machine.registering:  # cancelled while its model is saved: that ends in a moment
            raise JobError(f"job {job.id} is still saving its model; try again in a moment")
        attempts = {a for t in job.tasks for a in (t.agent_task_id, *t.stale_attempts) if a}
        for task in list(self.background.tasks):  # a cancelled attempt followed for its outputs (Attempts._drain)
            if task.get_name().removeprefix("drain-") in attempts:
                task.cancel()
        for attempt in attempts:
            watcher = self.attempts.watchers.pop(attempt, None)
            if watcher is not None:
                watcher.cancel()
        self.machine.remove(job)  # nothing changes it from here on: no retry, no late event
        try:
            await self.store.delete_job(job.id)
        except BaseException:
            self.machine.put_back(job)
            raise
        self.sweeps.forget(job)
        self.metrics.job_ended(job.id)
        log.info("job %s (%s) deleted", job.id, job.name)
        self.events.touched(job)  # job lists (WatchJobs) look it up and find it gone
        return job

    # ---- datasets and blobs

    async def upload_dataset(self, name: str, filename: str, tmp: Path) -> dict[str, Any]:
        return await self.catalog.upload(name, filename, tmp)

    def dataset(self, name: str) -> dict[str, Any]:
        return self.catalog.get(name)

    async def preview_dataset(self, name: str, rows: int) -> tuple[dict[str, Any], list[str], list[list[str]]]:
        return await self.catalog.preview(name, rows)

    async def delete_dataset(self, ref: str) -> list[dict[str, Any]]:
        """NAME (every version) or NAME:VERSION; the versions deleted."""
        return await self.catalog.delete(ref, self.jobs.values())

    async def collect_garbage(self, grace: float = 600.0) -> dict[str, int]:
        keep = await self.project_blobs() | await self.catalog.live_blobs()  # dataset versions' blobs too
        return await self.artifacts.collect_garbage(grace, keep)

    async def project_blobs(self) -> set[str]:
        """Every blob of the kept project jobs' snapshots: their manifests and the files they list. A manifest
        that cannot be read is kept itself (its files cannot be told, so nothing of it is claimed)."""
        keep: set[str] = set()
        for manifest_id in project_manifests(self.machine.jobs.values()):
            keep.add(manifest_id)
            try:
                entries = await self.project_files.manifest(manifest_id)
            except ValidationError as exc:
                log.warning("gc: the snapshot of a project job cannot be read (%s); its files may go", exc)
                continue
            keep.update(e.sha256 for e in entries)
        return keep


class _Effects:
    """What the job state machine asks of the other collaborators."""

    def __init__(self, attempts: Attempts, artifacts: Artifacts, sweeps: SweepRunner) -> None:
        self.attempts, self.artifacts, self.sweeps = attempts, artifacts, sweeps

    def abandon(self, job: Job, task: JobTask, reason: str) -> None:
        self.attempts.abandon(job, task, reason)

    def checkpoint_and_stop(self, job: Job, task: JobTask) -> bool:
        return self.attempts.checkpoint_and_stop(job, task)

    def save_model(self, job: Job) -> None:
        self.artifacts.save_model(job)

    def merge_shards(self, job: Job) -> None:
        self.artifacts.merge_shards(job)

    def trial_result(self, job: Job, task: JobTask, value: float | None) -> None:
        self.sweeps.tell(job, task, value)

    def restart_sweep(self, job: Job) -> None:
        self.sweeps.forget(job)


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:  # not created yet (an object store's cache)
        return None
