"""ControllerService: the gRPC face of the controller core."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent._generated import controller_pb2_grpc as cpb_grpc
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.version import AGENT_VERSION, PROTOCOL_VERSION
from tensorfleet_agent.rpc import handlers
from tensorfleet_agent.security.secrets import redact, register
from tensorfleet_agent.workloads.registry import all_workloads
from tensorfleet_desktop import wire
from tensorfleet_desktop.controller import operations, principals
from tensorfleet_desktop.controller.agent_link import FleetAgents
from tensorfleet_desktop.controller.audit import AuditLog
from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.dataset_versions import files_page, parse_ref, table_entry
from tensorfleet_desktop.controller.errors import AgentBusy, AgentCallError, JobError
from tensorfleet_desktop.controller.fleet import AgentRecord, Fleet
from tensorfleet_desktop.controller.job_feed import JobFeed
from tensorfleet_desktop.controller.jobspec import MAX_SPEC_JSON
from tensorfleet_desktop.controller.model import Job, JobEventRecord
from tensorfleet_desktop.controller.pools.manager import JoinRefused, JoinRequest, PoolManager
from tensorfleet_desktop.controller.pools.members import join as join_pool
from tensorfleet_desktop.controller.rpc_errors import set_data_dir, status_of
from tensorfleet_desktop.controller.tokens import TokenBook

log = logging.getLogger(__name__)
R = TypeVar("R")
COALESCE_SECONDS = 0.05  # WatchJob(s): how long a live change waits for others to go out with it


_unary = handlers.unary(status_of)
_stream = handlers.stream(status_of)


def _json_object(text: str, field: str) -> dict[str, Any]:
    return operations.parse_json_object(text, field, MAX_SPEC_JSON)


async def _batches(
    items: AsyncIterator[R], limit: int, window: float, urgent: Callable[[R], bool] = lambda _: False
) -> AsyncIterator[list[R]]:
    """The items as they come, grouped: what is there already goes out together (a replay in groups of `limit`).
    A live item after a quiet spell goes out at once (a job's first log line is not held back); one that follows
    within `window` seconds of the last message waits up to `window` for others (a metric every few ms: one
    message, not one each), unless an `urgent` item (a state change) is among them: that goes out at once, with
    whatever came before it."""
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue(limit)
    loop = asyncio.get_running_loop()
    last_sent = -window
    hurry = asyncio.Event()  # an urgent item (or the end) is in the queue

    async def pump() -> None:
        try:
            async for item in items:
                await queue.put((True, item))
                if urgent(item):
                    hurry.set()
        except Exception as exc:  # handed to the stream, which ends with it
            await queue.put((False, exc))
        else:
            await queue.put((False, None))
        hurry.set()

    task = asyncio.create_task(pump())
    try:
        while True:
            group: list[R] = []
            more, item = await queue.get()
            if more and not urgent(item) and queue.empty() and loop.time() - last_sent < window:
                hurry.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(window):
                        await hurry.wait()
            while more:
                group.append(item)
                if queue.empty() or len(group) >= limit:
                    break
                more, item = queue.get_nowait()
            if group:
                yield group
                last_sent = loop.time()
            if not more:
                if item is not None:
                    raise item
                return
    finally:
        task.cancel()


def _state_change(record: JobEventRecord) -> bool:
    """A record WatchJob sends at once: a job's or task's state (its end above all), never held back."""
    return record.kind in ("job_state", "task_state")


@contextlib.asynccontextmanager
async def _asking(record: AgentRecord, what: str) -> AsyncIterator[None]:
    """An agent's refusal or absence as an error that names the agent and what was asked of it."""
    try:
        yield
    except AgentBusy as exc:
        state = record.public_state()
        raise AgentCallError(
            f"agent {record.name} ({record.node_id[:12]}) cannot {what} now: it is not connected"
            f"{f' ({state})' if state else ''} ({exc})"
        ) from None
    except AgentCallError as exc:
        raise AgentCallError(f"agent {record.name} ({record.node_id[:12]}) could not {what}: {exc}") from None


CONTROLLER_SERVICE = cpb.DESCRIPTOR.services_by_name["ControllerService"].full_name  # for health and reflection


class ControllerServicer(cpb_grpc.ControllerServiceServicer):
    def __init__(
        self,
        controller: Controller,
        fleet: Fleet,
        info: Callable[[], cpb.ControllerInfo],
        shutdown: Callable[[], None],
        data_dir: Path | None = None,
    ) -> None:
        self.c = controller
        self.fleet = fleet
        self.agent_calls = FleetAgents(fleet)  # calls for a user on one agent, outside the core (envs)
        set_data_dir(data_dir)  # disk-full refusals name it (one controller per process)
        self.jobs_feed = JobFeed(controller.add_job_listener)
        self.info = info
        self.shutdown = shutdown

    def register(self, server: grpc.aio.Server) -> None:
        cpb_grpc.add_ControllerServiceServicer_to_server(self, server)

    def _names(self) -> dict[str, str]:
        return {a.node_id: a.name for a in self.fleet.agents.values()}

    def _job(self, job: Any) -> cpb.Job:
        return wire.job_to_pb(job, self._names())

    def _jobs(self, jobs: Iterable[Job]) -> list[cpb.Job]:
        names = self._names()  # once per answer or change, not once per job
        return [wire.job_to_pb(j, names) for j in jobs]

    @_unary
    async def GetInfo(self, request: cpb.ControllerInfoRequest, context: Any) -> cpb.ControllerInfo:
        info = self.info()
        info.caller.CopyFrom(wire.principal_to_pb(principals.current()))  # who the controller takes us for
        return info

    @_unary
    async def SubmitJob(self, request: cpb.SubmitJobRequest, context: Any) -> cpb.Job:
        body = _json_object(request.spec_json, "spec_json")
        return self._job(await self.c.submit(body, principals.submitter_for(principals.current(), request.submitter)))

    @_unary
    async def SubmitJobs(self, request: cpb.SubmitJobsRequest, context: Any) -> cpb.SubmitJobsResponse:
        bodies = [_json_object(text, f"spec_json[{i}]") for i, text in enumerate(request.spec_json)]
        who = principals.submitter_for(principals.current(), request.submitter)
        return cpb.SubmitJobsResponse(jobs=self._jobs(await self.c.submit_many(bodies, who)))

    @_unary
    async def ListJobs(self, request: cpb.ListJobsRequest, context: Any) -> cpb.ListJobsResponse:
        if request.limit < 0:
            raise ValidationError("limit", f"must be >= 0, got {request.limit}")
        states, whose = wire.job_states_from_pb(request.states), principals.user_of(request.submitter)
        if whose:  # by the user part: jobs submitted as `user@host` before named tokens are theirs too
            with contextlib.closing(self.c.jobs.newest_first(states)) as newest:  # read until the page is full
                theirs = (j for j in newest if principals.user_of(j.submitter) == whose)
                jobs = list(itertools.islice(theirs, request.limit) if request.limit else theirs)
        else:
            jobs = self.c.list_jobs(states, request.limit)  # from the index: the newest, no sort of every job
        return cpb.ListJobsResponse(jobs=self._jobs(jobs))

    @_unary
    async def GetJob(self, request: cpb.JobRef, context: Any) -> cpb.Job:
        return self._job(self.c.get(request.job_id))

    @_stream
    async def WatchJob(self, request: cpb.WatchJobRequest, context: Any) -> AsyncIterator[cpb.JobEvent]:
        if request.after_seq < 0:
            raise ValidationError("after_seq", f"must be >= 0, got {request.after_seq}")
        job = self.c.get(request.job_id)
        live = self.c.watch(job.id, request.after_seq)
        async for records in _batches(live, wire.MAX_BATCH, COALESCE_SECONDS, _state_change):
            for event in wire.job_events_to_pb(records, job, self._names()):
                yield event

    @_stream
    async def WatchJobs(self, request: cpb.WatchJobsRequest, context: Any) -> AsyncIterator[cpb.JobsChange]:
        if request.limit < 0:
            raise ValidationError("limit", f"must be >= 0, got {request.limit}")
        only = {self.c.get(ref).id for ref in request.job_ids}
        ended_only = request.ended_only
        feed = self.jobs_feed
        with feed.watcher(only) as watcher:  # from here on no change is missed
            missed = feed.changed_since(request.resume_token) if request.resume_token else None
            if missed is None:
                if only:  # those jobs alone, not a sort of every job (a Client.wait per job of a big queue)
                    jobs = sorted((self.c.jobs[i] for i in only), key=lambda j: j.created_at, reverse=True)
                else:
                    jobs = self.c.list_jobs()
                jobs = jobs[: request.limit] if request.limit else jobs
                if ended_only:
                    jobs = [j for j in jobs if j.state.terminal]
                yield cpb.JobsChange(snapshot=True, jobs=self._jobs(jobs), resume_token=feed.token())
            else:
                yield self._jobs_now(missed, only, feed.token(), ended_only)
            window = COALESCE_SECONDS
            while True:
                await watcher.wake.wait()
                if not watcher.urgent.is_set():  # a burst of changes (metric points) goes out once
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(window):
                            await watcher.urgent.wait()  # unless a state changes meanwhile: that goes out now
                started = time.perf_counter()
                change = self._jobs_now(watcher.take(), only, feed.token(), ended_only)
                # A big job (a sweep's 1,000 trials and their files) takes ms to convert, and a running one changes
                # all the time: its watcher waits ten times that before the next non-urgent change, so watching it
                # costs the loop at most ~10 % (it took ~30 % of the controller during a 1,000-trial sweep)
                window = max(COALESCE_SECONDS, 10 * (time.perf_counter() - started))
                if change.jobs or change.removed_job_ids:
                    yield change

    def _jobs_now(self, job_ids: set[str], only: set[str], token: str, ended_only: bool = False) -> cpb.JobsChange:
        """The changed jobs as they are now (`ended_only`: those that ended); those no longer known were deleted since
        (DeleteJob)."""
        jobs: list[Job] = []
        removed: list[str] = []
        for job_id in job_ids:
            if only and job_id not in only:
                continue
            job = self.c.jobs.get(job_id)
            if job is None:
                removed.append(job_id)
            elif job.state.terminal or not ended_only:
                jobs.append(job)
        ordered = sorted(jobs, key=lambda j: j.created_at, reverse=True)
        return cpb.JobsChange(jobs=self._jobs(ordered), removed_job_ids=sorted(removed), resume_token=token)

    @_unary
    async def CancelJob(self, request: cpb.JobRef, context: Any) -> cpb.Job:
        return self._job(self.c.cancel(request.job_id))

    @_unary
    async def PauseJob(self, request: cpb.JobRef, context: Any) -> cpb.Job:
        return self._job(self.c.pause(request.job_id))

    @_unary
    async def ResumeJob(self, request: cpb.JobRef, context: Any) -> cpb.Job:
        return self._job(self.c.resume(request.job_id))

    @_unary
    async def RetryJob(self, request: cpb.JobRef, context: Any) -> cpb.Job:
        return self._job(self.c.retry(request.job_id))

    @_unary
    async def DeleteJob(self, request: cpb.JobRef, context: Any) -> cpb.Job:
        return self._job(await self.c.delete_job(request.job_id))

    @_unary
    async def ResubmitJob(self, request: cpb.ResubmitJobRequest, context: Any) -> cpb.Job:
        params = _json_object(request.params_json, "params_json")
        old, who = self.c.get(request.job_id), principals.current()
        submitter = principals.submitter_for(who, "") if who.name else old.submitter  # the new job is the caller's
        return self._job(await self.c.resubmit(old.id, params, submitter))

    @_unary
    async def GetMetrics(self, request: cpb.GetMetricsRequest, context: Any) -> cpb.GetMetricsResponse:
        rows = await operations.metric_rows(self.c, request.job_id, set(request.names))
        return cpb.GetMetricsResponse(points=[wire.metric_row_to_pb(r) for r in rows])

    @_unary
    async def GetLogs(self, request: cpb.GetLogsRequest, context: Any) -> cpb.GetLogsResponse:
        rows = await operations.log_rows(self.c, request.job_id, None if request.all_tasks else request.task_index)
        return cpb.GetLogsResponse(lines=[wire.log_row_to_pb(r) for r in rows])

    @_unary
    async def ListAgents(self, request: cpb.ListAgentsRequest, context: Any) -> cpb.ListAgentsResponse:
        agents = sorted(self.fleet.agents.values(), key=lambda a: (a.name, a.node_id))
        refused = sorted(self.fleet.refused.values(), key=lambda r: (r.name, r.key))
        return cpb.ListAgentsResponse(
            agents=[wire.agent_to_pb(a) for a in agents],
            refused=[wire.refused_to_pb(r) for r in refused] if request.include_refused else [],
        )

    @_stream
    async def WatchAgents(self, request: cpb.ListAgentsRequest, context: Any) -> AsyncIterator[cpb.AgentEvent]:
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=10_000)

        def listener(kind: str, record: Any) -> None:
            if not queue.full():
                queue.put_nowait((kind, wire.agent_to_pb(record)))

        for record in list(self.fleet.agents.values()):
            yield wire.agent_event_to_pb("added", wire.agent_to_pb(record), time.time())
        unsubscribe = self.fleet.subscribe(listener)
        try:
            while True:
                kind, agent = await queue.get()
                yield wire.agent_event_to_pb(kind, agent, time.time())
        finally:
            unsubscribe()

    @_unary
    async def AddAgent(self, request: cpb.AddAgentRequest, context: Any) -> cpb.Agent:
        address = request.address.strip()
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValidationError("address", f"must look like HOST:PORT, got {address[:80]!r}")
        record = await self.fleet.add(address, "manual")  # remembers it, with its pin
        return wire.agent_to_pb(record)

    @_unary
    async def RemoveAgent(self, request: cpb.AgentRefRequest, context: Any) -> cpb.Agent:
        return wire.agent_to_pb(await operations.remove_agent(self.c, self.fleet, request.agent))

    @_unary
    async def DrainAgent(self, request: cpb.AgentRefRequest, context: Any) -> cpb.Agent:
        return wire.agent_to_pb(self.fleet.drain(request.agent))

    @_unary
    async def WakeAgent(self, request: cpb.AgentRefRequest, context: Any) -> cpb.Agent:
        return wire.agent_to_pb(await self.fleet.wake(request.agent))

    @_unary
    async def ListAgentEnvs(self, request: cpb.AgentRefRequest, context: Any) -> pb.ListEnvsResponse:
        record = self.fleet.resolve(request.agent)
        async with _asking(record, "list its project envs"):
            envs = await self.agent_calls.list_envs(record.node_id)
        return wire.agent_envs_to_pb(envs)

    @_unary
    async def GetAgentCache(self, request: cpb.AgentRefRequest, context: Any) -> pb.ListCacheResponse:
        """The agent's blob cache and dataset trees; what it holds now also corrects the holders index."""
        record = self.fleet.resolve(request.agent)
        return wire.cache_to_pb(await operations.agent_cache(self.c, self.fleet, record))

    @_unary
    async def PruneAgentEnvs(self, request: cpb.PruneAgentEnvsRequest, context: Any) -> pb.PruneEnvsResponse:
        if request.keep_bytes < 0:
            raise ValidationError("keep_bytes", f"must be >= 0, got {request.keep_bytes}")
        record = self.fleet.resolve(request.agent)
        async with _asking(record, "prune its project envs"):
            pruned = await self.agent_calls.prune_envs(record.node_id, request.keep_bytes)
        log.info("agent %s pruned %d env(s), %d bytes", record.name, len(pruned["removed"]), pruned["freed_bytes"])
        return wire.prune_envs_to_pb(pruned)

    @_unary
    async def PairAgent(self, request: cpb.PairAgentRequest, context: Any) -> cpb.Agent:
        if not request.token:
            raise ValidationError(
                "token", "is required: the agent prints one at first start (`tensorfleet-agent token`)"
            )
        register(request.token)
        return wire.agent_to_pb(await self.fleet.pair(request.agent, request.token, request.force))

    @_unary
    async def UploadDataset(self, request_iterator: AsyncIterator[cpb.DatasetChunk], context: Any) -> cpb.DatasetInfo:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise ValidationError("header", "the first message of UploadDataset must be a DatasetHeader")
        header = first.header
        chunks = (chunk.data async for chunk in request_iterator)
        entry = await operations.receive_dataset(
            self.c, header.name, header.filename, header.size, header.sha256, chunks
        )
        return wire.dataset_to_pb(entry, self.c.catalog.versions.get(entry["name"]))

    @_unary
    async def MissingBlobs(self, request: cpb.MissingBlobsRequest, context: Any) -> cpb.MissingBlobsResponse:
        return cpb.MissingBlobsResponse(sha256=await self.c.project_files.missing(list(request.sha256)))

    @_unary
    async def UploadBlobs(
        self, request_iterator: AsyncIterator[cpb.ProjectFileChunk], context: Any
    ) -> cpb.UploadBlobsResponse:
        parts = (wire.project_file_part_from_pb(m) async for m in request_iterator)
        files, received = await self.c.project_files.receive_all(parts)
        return cpb.UploadBlobsResponse(files=files, bytes=received)

    @_unary
    async def ListDatasets(self, request: cpb.ListDatasetsRequest, context: Any) -> cpb.ListDatasetsResponse:
        catalog = self.c.catalog
        stored = [wire.dataset_to_pb(*catalog.info(name)) for name in sorted(catalog.versions)]
        builtin = [wire.builtin_dataset_to_pb(n) for n in catalog.builtin_names() if n not in catalog.versions]
        return cpb.ListDatasetsResponse(datasets=[*stored, *builtin])

    @_unary
    async def PreviewDataset(self, request: cpb.DatasetRequest, context: Any) -> cpb.DatasetPreview:
        if not 0 <= request.rows <= 1000:
            raise ValidationError("rows", f"must be between 0 and 1000, got {request.rows}")
        entry, header, rows = await self.c.preview_dataset(request.name, request.rows or 10)
        return cpb.DatasetPreview(
            dataset=wire.dataset_to_pb(entry),
            columns=header,
            rows=[cpb.DatasetRow(values=r) for r in rows],
        )

    @_unary
    async def DeleteDataset(self, request: cpb.DatasetRequest, context: Any) -> cpb.DatasetInfo:
        """NAME: the dataset (every version); NAME:VERSION: that version. Answers what was deleted."""
        gone = await self.c.delete_dataset(request.name)
        return wire.dataset_to_pb(table_entry(gone[-1]["name"], gone[-1]), gone)  # versions: those deleted

    @_unary
    async def CommitDatasetVersion(
        self, request: cpb.CommitDatasetVersionRequest, context: Any
    ) -> cpb.DatasetVersionInfo:
        record, unchanged = await self.c.catalog.commit(request.name, request.manifest_id)
        return wire.dataset_version_to_pb(record, unchanged=unchanged)

    @_unary
    async def AddDatasetReference(
        self, request: cpb.AddDatasetReferenceRequest, context: Any
    ) -> cpb.DatasetVersionInfo:
        record, unchanged = await self.c.catalog.add_reference(request.name, request.url)
        return wire.dataset_version_to_pb(record, unchanged=unchanged)

    @_unary
    async def GetDataset(self, request: cpb.GetDatasetRequest, context: Any) -> cpb.GetDatasetResponse:
        catalog = self.c.catalog
        name, _ = parse_ref(request.ref)
        if name not in catalog.versions and name in catalog.builtin_names():
            return cpb.GetDatasetResponse(dataset=wire.builtin_dataset_to_pb(name))
        record = catalog.version(request.ref)
        files, cursor = files_page(await catalog.tree(record), request.prefix, request.limit, request.cursor)
        used_by = await catalog.used_by(record, self.c.jobs.values())
        return cpb.GetDatasetResponse(
            dataset=wire.dataset_to_pb(*catalog.info(name)),
            version=wire.dataset_version_to_pb(record, used_by=used_by),
            files=[wire.dataset_file_to_pb(f) for f in files],
            next_cursor=cursor,
        )

    @_unary
    async def ReadDatasetFile(self, request: cpb.ReadDatasetFileRequest, context: Any) -> cpb.DatasetFileData:
        """A file's first bytes (a preview): the version's file as GetDataset lists it, and at most `limit` bytes."""
        record, found, data = await self.c.catalog.read_file(request.ref, request.path, request.limit)
        return cpb.DatasetFileData(
            version=wire.dataset_version_to_pb(record),
            file=wire.dataset_file_to_pb(found),
            data=data,
            truncated=len(data) < found["size"],
        )

    @_unary
    async def ListWorkloads(self, request: cpb.WorkloadsRequest, context: Any) -> cpb.WorkloadsResponse:
        return cpb.WorkloadsResponse(workloads_json=json.dumps([w.to_dict() for w in all_workloads()]))

    # ---- model registry

    @_unary
    async def ListModels(self, request: cpb.ListModelsRequest, context: Any) -> cpb.ListModelsResponse:
        found = await operations.list_models(
            self.c,
            request.name,
            request.algorithm,
            request.tag,
            request.alias,
            request.min_metric,
            request.page or 1,
            request.limit or 20,
        )
        return cpb.ListModelsResponse(
            models=[wire.model_to_pb(i) for i in found.models],
            page=found.page,
            limit=found.limit,
            total=found.total,
            pages=found.pages,
        )

    @_unary
    async def GetModel(self, request: cpb.ModelRequest, context: Any) -> cpb.ModelVersion:
        record = await self.c.registry.resolve(request.ref)
        return wire.model_to_pb((await self.c.registry.with_blob_status([record]))[0])

    @_stream
    async def DownloadModel(self, request: cpb.DownloadModelRequest, context: Any) -> AsyncIterator[cpb.ModelChunk]:
        async with operations.exported_model(self.c, request.ref, wire.download_format_from_pb(request)) as model:
            header = cpb.ModelDownloadHeader(
                model=wire.model_to_pb(model.record),
                format=wire.MODEL_FORMAT.to_pb(model.format, "format"),
                size=model.size,
                sha256=model.sha256,
                config_json=json.dumps(model.config),
            )
            yield cpb.ModelChunk(header=header)
            with model.path.open("rb") as fh:
                while data := await asyncio.to_thread(fh.read, 1 << 20):
                    yield cpb.ModelChunk(data=data)

    @_unary
    async def SetModelAlias(self, request: cpb.AliasRequest, context: Any) -> cpb.ModelVersion:
        return wire.model_to_pb(await self.c.registry.set_alias(request.ref, request.alias))

    @_unary
    async def RemoveModelAlias(self, request: cpb.AliasRequest, context: Any) -> cpb.ModelVersion:
        return wire.model_to_pb(await self.c.registry.remove_alias(request.ref, request.alias))

    @_unary
    async def TagModel(self, request: cpb.TagRequest, context: Any) -> cpb.ModelVersion:
        return wire.model_to_pb(await self.c.registry.tag(request.ref, request.tag))

    @_unary
    async def DescribeModel(self, request: cpb.DescribeModelRequest, context: Any) -> cpb.ModelVersion:
        return wire.model_to_pb(await self.c.registry.describe(request.ref, request.description))

    @_unary
    async def DeleteModel(self, request: cpb.DeleteModelRequest, context: Any) -> cpb.ModelVersion:
        return wire.model_to_pb(await self.c.registry.delete(request.ref, request.force))

    @_unary
    async def CollectGarbage(self, request: cpb.GcRequest, context: Any) -> cpb.GcResponse:
        grace = request.grace_seconds if request.HasField("grace_seconds") else 600.0
        if not 0 <= grace <= 365 * 86400:
            raise ValidationError("grace_seconds", f"must be between 0 and a year, got {grace:g}")
        return cpb.GcResponse(**await self.c.collect_garbage(grace))

    # ---- artifacts

    @_unary
    async def ListArtifacts(self, request: cpb.ListArtifactsRequest, context: Any) -> cpb.ListArtifactsResponse:
        job = self.c.get(request.job_id)
        return cpb.ListArtifactsResponse(job_id=job.id, artifacts=[wire.artifact_to_pb(a) for a in job.artifacts])

    @_stream
    async def DownloadArtifact(
        self, request: cpb.DownloadArtifactRequest, context: Any
    ) -> AsyncIterator[cpb.ArtifactChunk]:
        task = request.task_index if request.HasField("task_index") else None
        attempt = request.attempt if request.HasField("attempt") else None
        job, artifact = self.c.artifact(request.job_id, request.name, task, attempt)
        path = await self.c.artifact_path(job, artifact)
        yield cpb.ArtifactChunk(header=wire.artifact_to_pb(artifact))
        with path.open("rb") as fh:
            while data := await asyncio.to_thread(fh.read, 1 << 20):
                yield cpb.ArtifactChunk(data=data)

    @_unary
    async def ModelStats(self, request: cpb.ModelStatsRequest, context: Any) -> cpb.ModelStatsResponse:
        return wire.stats_to_pb(await self.c.registry.stats())

    # ---- quotas and fair share (issue 24); who may set them: principals.RULES

    @_unary
    async def SetQuota(self, request: cpb.SetQuotaRequest, context: Any) -> cpb.Quota:
        body = wire.set_quota_from_pb(request)
        return wire.quota_to_pb(self.c.set_quota(body.pop("user"), body))

    @_unary
    async def ListQuotas(self, request: cpb.ListQuotasRequest, context: Any) -> cpb.ListQuotasResponse:
        return wire.quotas_to_pb(*self.c.quota_report())

    # ---- pools (issue 25): Slurm allocations whose agents join by JoinCluster

    pools: PoolManager | None = None  # set by the app (controller/app.py)

    def _pools(self) -> PoolManager:
        if self.pools is None:
            raise JobError("this controller runs no pools (it was started without them)")
        return self.pools

    @_unary
    async def AddPool(self, request: cpb.Pool, context: Any) -> cpb.Pool:
        return wire.pool_to_pb(self._pools().add(wire.pool_settings_from_pb(request)))

    @_unary
    async def ListPools(self, request: cpb.ListPoolsRequest, context: Any) -> cpb.ListPoolsResponse:
        return cpb.ListPoolsResponse(pools=[wire.pool_to_pb(p) for p in self._pools().list()])

    @_unary
    async def GetPool(self, request: cpb.PoolRef, context: Any) -> cpb.Pool:
        return wire.pool_to_pb(self._pools().get(request.name.strip()))

    @_unary
    async def RemovePool(self, request: cpb.PoolRef, context: Any) -> cpb.Pool:
        return wire.pool_to_pb(await self._pools().remove(request.name.strip()))

    @_unary
    async def CreateJoinCredential(self, request: cpb.JoinCredentialRequest, context: Any) -> cpb.JoinCredential:
        made = self._pools().long_lived_credential(request.pool.strip(), request.ttl_seconds)
        return cpb.JoinCredential(**made)

    async def JoinCluster(self, request: cpb.JoinClusterRequest, context: Any) -> cpb.JoinClusterResponse:
        """No client token (security.CREDENTIAL_METHODS): the join credential admits the caller, or it is refused
        UNAUTHENTICATED; every other refusal is the usual status."""
        try:
            record = await join_pool(self._pools(), self.fleet, JoinRequest(**wire.join_request_from_pb(request)))
        except JoinRefused as exc:
            log.warning("JoinCluster refused (%s from %s): %s", request.address[:80], context.peer(), exc)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"join refused: {exc}")
            raise AssertionError("unreachable") from exc
        except Exception as exc:
            await context.abort(*status_of(exc))
            raise AssertionError("unreachable") from exc
        return cpb.JoinClusterResponse(agent_id=record.node_id)

    # ---- team (issue 24): named tokens and the audit log; the interceptor (security.py) checked the role

    tokens: TokenBook | None = None  # set by the app (controller/app.py)
    audit: AuditLog | None = None

    def _tokens(self) -> TokenBook:
        if self.tokens is None:
            raise JobError("this controller keeps no named tokens (it was started without them)")
        return self.tokens

    @_unary
    async def CreateToken(self, request: cpb.CreateTokenRequest, context: Any) -> cpb.TokenSecret:
        record, token = self._tokens().create(request.name, request.role, principals.current().name or "admin")
        return cpb.TokenSecret(info=wire.token_info_to_pb(record.public()), token=token)

    @_unary
    async def ListTokens(self, request: cpb.ListTokensRequest, context: Any) -> cpb.ListTokensResponse:
        found = self._tokens().list(request.include_revoked)
        return cpb.ListTokensResponse(tokens=[wire.token_info_to_pb(r.public()) for r in found])

    @_unary
    async def RevokeToken(self, request: cpb.TokenRef, context: Any) -> cpb.TokenInfo:
        return wire.token_info_to_pb(self._tokens().revoke(request.name).public())

    @_unary
    async def ListAudit(self, request: cpb.ListAuditRequest, context: Any) -> cpb.ListAuditResponse:
        if self.audit is None:
            raise JobError("this controller keeps no audit log (it was started without one)")
        if request.limit < 0:
            raise ValidationError("limit", f"must be >= 0, got {request.limit}")
        user = principals.audit_user(principals.current(), request.user.strip())
        found = await self.audit.entries(user, request.action.strip(), request.since, request.limit or 200)
        return cpb.ListAuditResponse(entries=[wire.audit_entry_to_pb(e) for e in found])

    @_unary
    async def Shutdown(self, request: cpb.ShutdownRequest, context: Any) -> cpb.ShutdownResponse:
        log.info("shutdown requested over gRPC")
        asyncio.get_running_loop().call_later(0.2, self.shutdown)
        return cpb.ShutdownResponse()


def controller_info(
    data_dir: str,
    store_uri: str,
    blobs_uri: str,
    started_at: float,
    local_agent_id: str,
    fingerprint: str,
    cluster_id: str,
) -> cpb.ControllerInfo:
    return cpb.ControllerInfo(
        protocol_version=PROTOCOL_VERSION,
        version=AGENT_VERSION,
        data_dir=data_dir,
        store_uri=redact(store_uri),
        blobs_uri=redact(blobs_uri),
        pid=os.getpid(),
        started_at=started_at,
        local_agent_id=local_agent_id,
        fingerprint=fingerprint,
        cluster_id=cluster_id,
    )
