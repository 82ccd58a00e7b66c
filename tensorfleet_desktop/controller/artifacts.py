"""Artifacts: checkpoints and models copied from agents into the controller's blob store (so they outlive their
agent), served back checked against their sha256, merged (a forest's shards) and registered as models."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from pathlib import Path
from typing import Any

from tensorfleet_agent.core.digest import file_sha256
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.workloads.datasets import is_user_dataset
from tensorfleet_desktop.controller.background import Background
from tensorfleet_desktop.controller.errors import AgentCallError, JobError, NotFoundError
from tensorfleet_desktop.controller.events import EventLog
from tensorfleet_desktop.controller.jobs import JobMachine
from tensorfleet_desktop.controller.merge import merge_forest
from tensorfleet_desktop.controller.model import ArtifactInfo, Job, JobState, JobTask
from tensorfleet_desktop.controller.ports import AgentPort, Clock
from tensorfleet_desktop.controller.registry import BlobDamaged, Registry, pick_artifacts
from tensorfleet_desktop.controller.retention import referenced, stale_partials, trim_checkpoints
from tensorfleet_desktop.controller.store.base import JobStore, StoreFullError, full_message, is_disk_full
from tensorfleet_desktop.controller.store.blobs import BlobStore, hashes_to
from tensorfleet_desktop.controller.trials import keep_models, ranks_before, score

log = logging.getLogger(__name__)

_SAVE_RETRY_FIRST, _SAVE_RETRY_MAX = 1.0, 60.0  # seconds between attempts to save a finished job's model
_SAVE_GIVE_UP = 1800.0  # after this long unsaved, the job fails with the cause


class Artifacts:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        agents: AgentPort,
        machine: JobMachine,
        events: EventLog,
        clock: Clock,
        background: Background,
        datasets: dict[str, dict[str, Any]],
        keep_checkpoints: int,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.blobs_dir = blobs.root  # the local side: the store itself (file://) or its cache (s3://)
        self.agents = agents
        self.machine = machine
        self.events = events
        self.clock = clock
        self.background = background
        self.datasets = datasets
        self.keep_checkpoints = keep_checkpoints
        self.fetches: dict[str, asyncio.Task[None]] = {}  # sha256 -> its copy from an agent, while it runs
        self.leaders: dict[str, tuple[float, int]] = {}  # sweep job id -> (score, index) of its best-so-far trial
        self.registry = Registry(store, blobs, self._refetch_model)

    # ---- serving

    def artifact(self, job: Job, name: str, task_index: int | None = None, attempt: int | None = None) -> ArtifactInfo:
        """The job's artifact by name: the latest attempt's (a project's outputs are saved again by every attempt)
        unless `attempt` says which; several tasks' need `task_index`."""
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
        if attempt is not None:
            chosen = [a for a in hits if a.attempt == attempt]
            if not chosen:
                did = ", ".join(str(n) for n in sorted({a.attempt for a in hits}))
                raise NotFoundError(f"attempt {attempt} of job {job.id} saved no {name!r} (attempts that did: {did})")
            return chosen[-1]
        latest = max(a.attempt for a in hits)
        return [a for a in hits if a.attempt == latest][-1]

    async def path(self, job: Job, artifact: ArtifactInfo) -> Path:
        """The artifact's file in the blob store, checked against its sha256 before it is served; fetched (again)
        from the agent that saved it when it is missing or damaged. BlobDamaged when no good copy can be had."""
        await self.copied(artifact.sha256, 120)
        path = await self._good_copy(artifact.sha256)
        if path is not None:
            return path
        node = _node_of(job, artifact)
        if node and self.agents.agent(node) is not None:  # missing (agent away then) or damaged: once more
            await self.fetch_once(node, artifact.sha256)
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
        job = self.machine.jobs.get(str(record.get("job_id", "")))
        artifact = next((a for a in job.artifacts if a.sha256 == record["sha256"]), None) if job else None
        if job is None or artifact is None:
            return
        node = _node_of(job, artifact)
        if node and self.agents.agent(node) is not None:
            await self.fetch_once(node, record["sha256"])

    # ---- copies from agents

    def on_saved(self, job: Job, task: JobTask, artifact: ArtifactInfo, node: str = "") -> None:
        """An agent reported a file the task saved: keep the newest checkpoints, copy the file here (from `node`,
        the agent of the attempt that saved it: the task's current one unless said)."""
        node = node or task.node_id
        job.artifacts.append(artifact)
        if artifact.kind == "checkpoint":
            job.artifacts, dropped = trim_checkpoints(job.artifacts, self.keep_checkpoints)
            for gone in dropped:
                if all(a.sha256 != gone.sha256 for a in job.artifacts):
                    self.background.spawn(self.blobs.delete(gone.sha256))
        if not self._worth_copying(job, task, artifact):
            return  # stays on its agent: fetched on demand (path) or at the sweep's end (_save) if it matters
        if self.agents.agent(node) is not None and artifact.sha256 not in self.fetches:
            self._start_fetch(node, artifact.sha256)

    def _worth_copying(self, job: Job, task: JobTask, artifact: ArtifactInfo) -> bool:
        """Whether a saved file is copied here as soon as it is reported. Everything is, except a sweep trial's
        model, report and config: with keep_models best only the best-so-far trial's (so losing its agent loses
        nothing that matters; a trial overtaken later leaves garbage for gc), with all every trial's, with none
        no trial's. A trial's score is known when it saves its files (workloads report, then save)."""
        if artifact.kind == "checkpoint" or job.mode != "sweep":
            return True  # a trial's checkpoints serve its own retry on another agent
        keep = keep_models(job)
        if keep != "best":
            return keep == "all"
        value = task.metrics.get(str(job.spec["sweep"]["metric"]))
        if value is None or not math.isfinite(value):
            return False  # no score yet: _save fetches it at the end should it be the best
        leader = self.leaders.get(job.id)
        if leader is None:  # the first trial to save, or the first since a controller restart
            scored = [(v, t.index) for t in job.tasks if (v := score(job, t)) is not None and t is not task]
            for other in scored:
                if leader is None or ranks_before(job, other, leader):
                    leader = other
        if leader is not None and leader[1] == task.index:
            return True  # the leader's next file
        if leader is None or ranks_before(job, (value, task.index), leader):
            self.leaders[job.id] = (value, task.index)
            return True
        self.leaders[job.id] = leader
        return False

    async def copied(self, sha256: str, timeout: float) -> None:
        """Until a running copy of this blob from an agent ends (at most `timeout` s)."""
        fetch = self.fetches.get(sha256)
        if fetch is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(fetch), timeout)

    def _fetched(self, sha256: str, task: asyncio.Task[None]) -> None:
        if self.fetches.get(sha256) is task:
            del self.fetches[sha256]
        if not task.cancelled():
            task.exception()  # retrieved: whoever awaited it has seen it

    def _start_fetch(self, node_id: str, sha256: str, strict: bool = False) -> asyncio.Task[None]:
        fetch = asyncio.create_task(self.fetch_blob(node_id, sha256, strict))
        self.fetches[sha256] = fetch
        fetch.add_done_callback(functools.partial(self._fetched, sha256))
        return fetch

    async def fetch_once(self, node_id: str, sha256: str, strict: bool = False) -> None:
        """Every copy of a blob from an agent goes through self.fetches: a copy of this sha256 already running
        is joined, never started twice (two copies would race on the same destination). `strict`: raise what
        went wrong: after joining a copy that only logs its failure, a strict caller copies again itself, which
        costs nothing when the joined copy landed (a file that hashes right is not copied again)."""
        running = self.fetches.get(sha256)
        if running is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
            if not strict:
                return
        await asyncio.shield(self.fetches.get(sha256) or self._start_fetch(node_id, sha256, strict))

    async def fetch_blob(self, node_id: str, sha256: str, strict: bool = False) -> None:
        """Copy an artifact or checkpoint into the controller's blob store, so it outlives its agent.
        A file already there is trusted only when it hashes right (a crash or a bad disk may have damaged it).
        `strict`: raise what went wrong instead of logging it."""
        dest = self.blobs.path(sha256)
        agent = self.agents.agent(node_id)
        if agent is None or not agent.connected:
            return
        if await asyncio.to_thread(dest.exists):
            if await asyncio.to_thread(hashes_to, dest, sha256):
                return
            log.warning("blob %s in %s is damaged; fetching it again from %s", sha256[:12], self.blobs.uri, agent.name)
        url = await self.blobs.direct_upload(sha256)
        if url is not None:
            try:  # straight from the agent into the object store
                await self.agents.push_blob(node_id, sha256, url)
                return
            except AgentCallError as exc:
                log.info("agent %s could not upload %s itself (%s); relaying it", agent.name, sha256[:12], exc)
        try:
            await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
            await self.agents.get_blob(node_id, sha256, dest)
            await self.blobs.publish(sha256)
        except (AgentCallError, ValueError, OSError) as exc:
            if strict:
                raise _fetch_error(exc, self.blobs_dir, agent.name) from None
            log.warning("could not fetch blob %s from %s: %s", sha256[:12], agent.name, exc)
        except Exception as exc:  # the object store refused it: keep the local copy, say so
            if strict:
                raise
            log.error("could not store blob %s in %s: %s", sha256[:12], self.blobs.uri, exc)

    # ---- a finished job's model

    def save_model(self, job: Job) -> None:
        if pick_artifacts(job)[0] is None and not (job.mode == "sweep" and keep_models(job) == "all"):
            self._done_saving(job)  # no model (a noop, cv folds): nothing to wait for, no task and no loop turn
            self._saved(job, None, {})
            return
        self.background.spawn(self._register(job))

    def _done_saving(self, job: Job) -> None:
        self.machine.registering.discard(job.id)
        self.leaders.pop(job.id, None)

    def _saved(self, job: Job, record: dict[str, Any] | None, registered: dict[int, dict[str, Any]]) -> None:
        """The model is registered (`record`, None: the job has none; `registered`: a sweep's other trials): the job
        SUCCEEDS, unless it was cancelled meanwhile."""
        if record is not None:
            job.model = {"name": record["name"], "version": record["version"], "sha256": record["sha256"]}
            self.events.record(
                job, "log", {}, stream="controller", message=f"registered as {record['name']}:{record['version']}"
            )
        if registered:
            self.events.record(job, "log", {}, stream="controller", message=_trials_line(registered))
        if not job.state.terminal:  # not cancelled meanwhile
            job.error = ""
            self.machine.finish(job, JobState.SUCCEEDED, "")

    async def _register(self, job: Job) -> None:
        """Save the job's model (its files in the blob store, its registry entry) before the job SUCCEEDs.
        A failure (a full disk, an agent away) is retried with back-off, the job saying why meanwhile;
        after _SAVE_GIVE_UP seconds the job FAILs with the cause."""
        delay, started = _SAVE_RETRY_FIRST, self.clock.monotonic()
        registered: dict[int, dict[str, Any]] = {}  # a sweep's trials registered by an earlier try (keep_models all)
        try:
            while True:
                try:
                    record = await self._save(job, registered)
                    break
                except Exception as exc:
                    reason = str(exc) or type(exc).__name__
                    if self.clock.monotonic() - started + delay > _SAVE_GIVE_UP:
                        log.error("job %s: its model could not be saved, giving up: %s", job.id, reason)
                        if not job.state.terminal:
                            self.machine.finish(job, JobState.FAILED, f"its model could not be saved: {reason}")
                        return
                    log.warning("job %s: saving its model failed (%s); retrying in %.0fs", job.id, reason, delay)
                    job.error = f"saving its model failed: {reason}; retrying in {delay:.0f}s"
                    self.events.job_changed(job, job.error)
                await self.clock.sleep(delay)
                delay = min(_SAVE_RETRY_MAX, delay * 2)
                if job.state.terminal:  # cancelled meanwhile
                    return
        finally:
            self._done_saving(job)
        self._saved(job, record, registered)

    async def _save(self, job: Job, registered: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
        """The files registration needs, checked (fetched again from their agent when missing or damaged),
        then the registry entry. A sweep registers its best trial's model (keep_models best), every succeeded
        trial's with the best last, so NAME (the latest version) is the best (all), or none (none); the
        others' files stay on their agents."""
        if job.mode == "sweep" and keep_models(job) == "none":
            return None
        await self._ensure(job, pick_artifacts(job), strict=True)
        names = {d["sha256"]: name for name, d in self.datasets.items()}
        if job.mode == "sweep" and keep_models(job) == "all":
            best = int(job.metrics.get("best_trial", -1))
            for task in job.tasks:
                if task.index == best or task.index in registered or score(job, task) is None:
                    continue
                files = pick_artifacts(job, task.index)
                if files[0] is None or not await self._ensure(job, files, strict=False):
                    continue  # its agent is gone with it: said in the job's log
                record = await self.registry.register_job(job, names, trial=task.index)
                if record is not None:
                    registered[task.index] = record
        return await self.registry.register_job(job, names)

    async def _ensure(self, job: Job, files: tuple[ArtifactInfo | None, ...], strict: bool) -> bool:
        """Whether these files are in the blob store, intact, fetched from their agent when need be. Not
        `strict`: a file that cannot be had is said in the job's log and False returned, instead of raised."""
        for artifact in (a for a in files if a is not None):
            await self.copied(artifact.sha256, 120)
            if await self.blobs.intact(artifact.sha256, artifact.size):
                continue
            node = _node_of(job, artifact)
            agent = self.agents.agent(node) if node else None
            try:
                if agent is None or not agent.connected:
                    raise OSError(
                        f"{artifact.name} ({artifact.sha256[:12]}) is not saved and its agent is not connected"
                    )
                await self.fetch_once(node, artifact.sha256, strict=True)
            except OSError as exc:
                if strict:
                    raise
                message = f"trial {artifact.task_index}'s model is not kept: {exc}"
                self.events.record(job, "log", {}, stream="controller", message=message)
                return False
        return True

    def merge_shards(self, job: Job) -> None:
        self.background.spawn(self._merge_shards(job))

    async def _merge_shards(self, job: Job) -> None:
        """All shards of a forest are in: merge them into the job's model, or fail with the reason."""
        versions = {t.sklearn_version for t in job.tasks}
        if len(versions) > 1:
            self.machine.finish(
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
            self.machine.finish(job, JobState.FAILED, "a shard finished without saving its model")
            return
        paths = []
        started = time.monotonic()
        for shard in shards:
            assert shard is not None
            await self.copied(shard.sha256, 120)
            try:
                paths.append(await self.blobs.ensure(shard.sha256))
            except FileNotFoundError as exc:
                self.machine.finish(job, JobState.FAILED, f"a shard's model never reached the blob store: {exc}")
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
            self.machine.finish(job, JobState.FAILED, f"merging the forest's shards failed: {exc}")
            return
        log.info(
            "job %s: merged %d shards (waited %.2fs for their models, merged in %.2fs)",
            job.id,
            len(paths),
            fetched - started,
            time.monotonic() - fetched,
        )
        size = final.stat().st_size
        job.artifacts.append(ArtifactInfo(digest, size, "model", "model.skops", -1, 0, self.clock.time()))
        job.metrics = {**values, "shards": float(len(job.tasks))}
        self.machine.succeed(job)

    # ---- garbage

    async def collect_garbage(self, grace: float = 600.0, also_keep: set[str] | None = None) -> dict[str, int]:
        """Delete blobs nothing refers to any more (see retention.py) and the partial files of interrupted transfers;
        files younger than `grace` s are spared; `also_keep` (the project snapshots' files) never goes.
        Returns deleted (blobs), partials, freed_bytes, kept."""
        for job_id in [j for j in self.leaders if j not in self.machine.open]:  # cancelled or failed sweeps'
            del self.leaders[job_id]
        keep = referenced(self.machine.jobs.values(), self.datasets.values(), await self.store.model_versions())
        keep |= set(self.fetches) | (also_keep or set())
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


def _trials_line(registered: dict[int, dict[str, Any]]) -> str:
    """The job's log line for the trials registered beside the best (keep_models all)."""
    versions = sorted(r["version"] for r in registered.values())
    name = next(iter(registered.values()))["name"]
    return f"registered {len(versions)} other trials' models as {name}:{versions[0]}..{versions[-1]}"


def _node_of(job: Job, artifact: ArtifactInfo) -> str:
    """The agent of the task that saved the artifact ("" for the controller's own, e.g. a merged forest)."""
    task = next((t for t in job.tasks if t.index == artifact.task_index), None)
    return task.node_id if task is not None else ""


def _fetch_error(exc: Exception, blobs_dir: Path, agent: str) -> Exception:
    if is_disk_full(exc):
        return StoreFullError(full_message(blobs_dir))
    return OSError(f"copying it from agent {agent} failed: {exc}")
