"""AsyncClient: the SDK's API, written once (Client runs it on a private loop)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc

from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent._generated import controller_pb2_grpc as cpb_grpc
from tensorfleet_agent.core import project_spec
from tensorfleet_agent.core.digest import file_digest
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import manifest_bytes
from tensorfleet_agent.core.project_layout import WORKLOAD as PROJECT_WORKLOAD
from tensorfleet_agent.rpc.client import create_channel
from tensorfleet_desktop import wire
from tensorfleet_desktop.client.connect import Metadata, channel_security, controller_address, submitter
from tensorfleet_desktop.client.dataset_tree import DatasetSnapshot, Progress, snapshot_dataset
from tensorfleet_desktop.client.dataset_upload import batches, piece_parts
from tensorfleet_desktop.client.errors import (
    ControllerUnreachable,
    DataLoss,
    InvalidRequest,
    TensorFleetError,
    translate,
)
from tensorfleet_desktop.client.models import load_model_file
from tensorfleet_desktop.project import DEFAULT_MAX_BYTES, ManifestEntry, ProjectError, Snapshot, snapshot

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
#: The reconnect pause of wait() after the controller stopped answering.
RETRY_SECONDS = 1.0
#: sha256s per MissingBlobs request, and bytes per UploadBlobs data message (the controller's limit).
MISSING_BATCH = 10_000
UPLOAD_CHUNK = 1 << 20
#: A dataset's name, as the controller checks it (checked here too, before a tree of gigabytes is hashed).
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: What `project_job_spec` builds itself; a caller's field of one of these names is refused.
_PROJECT_KEYS = ("algorithm", "project", "command", "script", "hyperparameters")
T = TypeVar("T")


def _checked(to_pb: Callable[[Any], T], value: Any) -> T:
    """A request field converted to its enum; a value outside the set is the caller's error."""
    try:
        return to_pb(value)
    except ValidationError as exc:
        raise InvalidRequest(str(exc)) from None


def _same(msg: T) -> T:
    return msg


def _jobs(resp: cpb.ListJobsResponse | cpb.SubmitJobsResponse) -> list[dict[str, Any]]:
    return [wire.job_from_pb(j) for j in resp.jobs]


def _datasets(resp: cpb.ListDatasetsResponse) -> list[dict[str, Any]]:
    return [wire.dataset_from_pb(d) for d in resp.datasets]


def _artifacts(resp: cpb.ListArtifactsResponse) -> list[dict[str, Any]]:
    return [wire.artifact_from_pb(a) for a in resp.artifacts]


class AsyncClient:
    """The SDK over asyncio. Every method raises a TensorFleetError subclass with a clear message; jobs, agents
    and events come back as plain dicts (the same keys as the CLI's --json)."""

    def __init__(self, address: str | None = None, timeout: float = 30.0) -> None:
        self.address = controller_address(address)
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub_: Any = None
        self._metadata: Metadata = ()

    async def connect(self) -> None:
        """Find the token and, for TLS, fetch and pin the controller's certificate; the first call does it
        otherwise. Fetching a remote certificate blocks, so it runs in a thread."""
        if self._stub_ is None:
            credentials, target, metadata = await asyncio.to_thread(channel_security, self.address)
            self._metadata = (*metadata, *_user_metadata())
            self._channel = create_channel(self.address, credentials, target)
            self._stub_ = cpb_grpc.ControllerServiceStub(self._channel)

    async def _stub(self) -> Any:
        await self.connect()
        return self._stub_

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, request: Any, convert: Callable[[Any], T]) -> T:
        stub = await self._stub()
        try:
            return convert(await getattr(stub, method)(request, timeout=self.timeout, metadata=self._metadata))
        except grpc.RpcError as exc:
            raise translate(exc, self.address) from None

    async def _stream(self, method: str, request: Any, convert: Callable[[Any], T]) -> AsyncIterator[T]:
        stub = await self._stub()
        call = getattr(stub, method)(request, metadata=self._metadata)
        try:
            async for msg in call:
                yield convert(msg)
        except grpc.RpcError as exc:
            raise translate(exc, self.address) from None
        finally:
            call.cancel()  # a caller that stops reading ends the stream now, not when the call is collected

    # ---- jobs

    async def info(self) -> dict[str, Any]:
        return await self._call("GetInfo", cpb.ControllerInfoRequest(), wire.info_from_pb)

    async def submit(self, spec: dict[str, Any], who: str | None = None) -> dict[str, Any]:
        request = cpb.SubmitJobRequest(spec_json=json.dumps(spec), submitter=who or submitter())
        return await self._call("SubmitJob", request, wire.job_from_pb)

    async def submit_many(self, specs: Sequence[dict[str, Any]], who: str | None = None) -> list[dict[str, Any]]:
        """Many jobs in one call (SubmitJobs), the jobs in the order of `specs`: all are checked, then stored
        together, or none is (the error names the bad one, spec_json[INDEX]). At most 1,000 specs (the
        controller's limit): send a longer list in parts, each stored whole or not at all."""
        if not specs:
            return []
        request = cpb.SubmitJobsRequest(spec_json=[json.dumps(spec) for spec in specs], submitter=who or submitter())
        return await self._call("SubmitJobs", request, _jobs)

    async def jobs(self, states: tuple[str, ...] = (), limit: int = 0, submitter: str = "") -> list[dict[str, Any]]:
        """Newest first; `submitter`: only that user's jobs (`whoami()["name"]`: yours)."""
        request = cpb.ListJobsRequest(states=_checked(wire.job_states_to_pb, states), limit=limit, submitter=submitter)
        return await self._call("ListJobs", request, _jobs)

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._call("GetJob", cpb.JobRef(job_id=job_id), wire.job_from_pb)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._call("CancelJob", cpb.JobRef(job_id=job_id), wire.job_from_pb)

    async def pause(self, job_id: str) -> dict[str, Any]:
        return await self._call("PauseJob", cpb.JobRef(job_id=job_id), wire.job_from_pb)

    async def resume(self, job_id: str) -> dict[str, Any]:
        return await self._call("ResumeJob", cpb.JobRef(job_id=job_id), wire.job_from_pb)

    async def retry(self, job_id: str) -> dict[str, Any]:
        return await self._call("RetryJob", cpb.JobRef(job_id=job_id), wire.job_from_pb)

    async def delete_job(self, job_id: str) -> dict[str, Any]:
        """Delete an ended job and its history (a running one is refused: cancel it first); its registered
        models stay. The job as it was."""
        return await self._call("DeleteJob", cpb.JobRef(job_id=job_id), wire.job_from_pb)

    async def resubmit(self, job_id: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request = cpb.ResubmitJobRequest(job_id=job_id, params_json=json.dumps(params or {}))
        return await self._call("ResubmitJob", request, wire.job_from_pb)

    async def metrics(self, job_id: str, names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        request = cpb.GetMetricsRequest(job_id=job_id, names=list(names))
        return await self._call("GetMetrics", request, lambda r: [wire.metric_row_from_pb(p) for p in r.points])

    async def logs(self, job_id: str, task: int | None = None) -> list[dict[str, Any]]:
        request = cpb.GetLogsRequest(job_id=job_id, task_index=task or 0, all_tasks=task is None)
        return await self._call("GetLogs", request, lambda r: [wire.log_row_from_pb(row) for row in r.lines])

    def watch(self, job_id: str, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The job's events (see wire.job_event_from_pb for their keys) from after `after_seq`, until the job
        ends; metric points and log lines come in batches."""
        request = cpb.WatchJobRequest(job_id=job_id, after_seq=after_seq)
        return self._stream("WatchJob", request, wire.job_event_from_pb)

    def watch_messages(self, job_id: str, after_seq: int = 0) -> AsyncIterator[cpb.JobEvent]:
        """`watch` as the protobuf messages themselves, for a reader that converts them in bulk (the desktop
        app's bridge turns metric rows into numpy arrays without a dict per point)."""
        request = cpb.WatchJobRequest(job_id=job_id, after_seq=after_seq)
        return self._stream("WatchJob", request, _same)

    def watch_jobs(
        self, job_ids: Sequence[str] = (), limit: int = 0, resume_token: str = "", ended_only: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Job changes: {"snapshot", "jobs", "removed_job_ids", "resume_token"} (see JobsChange in
        controller.proto). First the matching jobs (snapshot True), then the jobs that changed, as they are now,
        and the ids of those deleted; `ended_only`: only jobs that ended. Pass the last resume_token to a new call
        after a disconnect to get what changed meanwhile. It never ends on its own."""
        request = cpb.WatchJobsRequest(
            job_ids=list(job_ids), limit=limit, resume_token=resume_token, ended_only=ended_only
        )
        return self._stream("WatchJobs", request, wire.jobs_change_from_pb)

    async def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The job once it ended, following WatchJobs (and resuming it after the controller was away).

        Raises TimeoutError when `timeout` seconds pass first."""
        try:
            async with asyncio.timeout(timeout):
                return next(iter((await self._wait((job_id,))).values()))
        except TimeoutError:
            raise TimeoutError(f"job {job_id} still running after {timeout}s") from None

    async def wait_all(self, job_ids: Sequence[str], timeout: float | None = None) -> list[dict[str, Any]]:
        """Every job once it ended, in the order of `job_ids` (full ids), following one WatchJobs stream for them
        all (Ray's `ray.get` of a list); raises TimeoutError naming how many still run when `timeout` passes."""
        ended: dict[str, dict[str, Any]] = {}
        try:
            async with asyncio.timeout(timeout):
                ended = await self._wait(job_ids, ended)
        except TimeoutError:
            left = len(set(job_ids) - set(ended))
            raise TimeoutError(f"{left} of {len(set(job_ids))} jobs still running after {timeout}s") from None
        return [ended[job_id] for job_id in job_ids]

    async def _wait(
        self, job_ids: Sequence[str], ended: dict[str, dict[str, Any]] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Job id -> the job once ended, for each of `job_ids` (filled into `ended` as they end)."""
        ended = {} if ended is None else ended
        waiting, token = set(job_ids), ""
        while True:
            try:
                async for change in self.watch_jobs(tuple(waiting), resume_token=token, ended_only=True):
                    token = change["resume_token"]
                    for job in change["jobs"]:
                        if job["state"] in TERMINAL and job["id"] in waiting:
                            waiting.discard(job["id"])
                            ended[job["id"]] = dict(job)
                        elif job["state"] in TERMINAL and len(job_ids) == 1:  # a prefix of its id was given
                            waiting.clear()
                            ended[job["id"]] = dict(job)
                    if not waiting:
                        return ended
            except ControllerUnreachable:
                await asyncio.sleep(RETRY_SECONDS)
            except TensorFleetError as exc:
                if exc.code != "CANCELLED":  # the controller stopping ends its streams so
                    raise
                await asyncio.sleep(RETRY_SECONDS)

    # ---- agents

    async def agents(self, all: bool = False) -> list[dict[str, Any]]:
        """The agents; with all=True also the services this controller refuses (state REFUSED, `refused`)."""
        return await self._call("ListAgents", cpb.ListAgentsRequest(include_refused=all), wire.agents_from_pb)

    def watch_agents(self) -> AsyncIterator[dict[str, Any]]:
        """{"kind", "agent", "time"}: every agent as "added" first, then each change."""
        return self._stream("WatchAgents", cpb.ListAgentsRequest(), wire.agent_event_from_pb)

    async def add_agent(self, address: str) -> dict[str, Any]:
        return await self._call("AddAgent", cpb.AddAgentRequest(address=address), wire.agent_from_pb)

    async def remove_agent(self, agent: str) -> dict[str, Any]:
        return await self._call("RemoveAgent", cpb.AgentRefRequest(agent=agent), wire.agent_from_pb)

    async def drain_agent(self, agent: str) -> dict[str, Any]:
        return await self._call("DrainAgent", cpb.AgentRefRequest(agent=agent), wire.agent_from_pb)

    async def wake_agent(self, agent: str) -> dict[str, Any]:
        """Send a sleeping agent's machine a Wake-on-LAN magic packet (by the controller, or relayed by an online
        agent on its subnet); the agent is WAKING until it answers. Conflict when it is awake or cannot be woken
        (no MAC known, no route to its subnet), naming why."""
        return await self._call("WakeAgent", cpb.AgentRefRequest(agent=agent), wire.agent_from_pb)

    async def pair_agent(self, agent: str, token: str, force: bool = False) -> dict[str, Any]:
        request = cpb.PairAgentRequest(agent=agent, token=token, force=force)
        return await self._call("PairAgent", request, wire.agent_from_pb)

    async def agent_envs(self, agent: str) -> dict[str, Any]:
        """The agent's cached project envs: {"envs": [{"key", "size", "last_used", "jobs", "python",
        "source", "build_seconds", "in_use"}, ...] (most recently used first), "limit_bytes"}. `agent` is a node
        id, a unique id prefix or a name; NotFound when there is no such agent."""
        request = cpb.AgentRefRequest(agent=agent)
        return await self._call("ListAgentEnvs", request, wire.agent_envs_from_pb)

    async def agent_cache(self, agent: str) -> dict[str, Any]:
        """The agent's blob cache and the dataset versions materialized there: {"blobs", "blob_bytes",
        "limit_bytes", "trees": [{"name", "version", "content_id", "bytes", "files", "last_used", "in_use"}]}.
        NotFound when there is no such agent."""
        return await self._call("GetAgentCache", cpb.AgentRefRequest(agent=agent), wire.cache_from_pb)

    async def prune_agent_envs(self, agent: str, keep_bytes: int = 0) -> dict[str, Any]:
        """Remove the agent's cached envs no running task uses, least recently used first, until at most
        `keep_bytes` remain (0: every unused one). Returns {"removed": [keys], "freed_bytes"}."""
        if keep_bytes < 0:
            raise InvalidRequest(f"keep_bytes must be >= 0, got {keep_bytes}")
        request = cpb.PruneAgentEnvsRequest(agent=agent, keep_bytes=keep_bytes)
        return await self._call("PruneAgentEnvs", request, wire.prune_envs_from_pb)

    async def workloads(self) -> list[dict[str, Any]]:
        return await self._call("ListWorkloads", cpb.WorkloadsRequest(), lambda r: json.loads(r.workloads_json))

    # ---- datasets

    async def upload_dataset(self, path: Path, name: str | None = None) -> dict[str, Any]:
        """Upload a CSV or Parquet file once; jobs then name it (--dataset NAME --target COLUMN)."""
        digest, size = await asyncio.to_thread(_digest, path)
        header = cpb.DatasetHeader(name=name or path.stem, filename=path.name, size=size, sha256=digest)

        async def chunks() -> AsyncIterator[cpb.DatasetChunk]:
            yield cpb.DatasetChunk(header=header)
            fh = await asyncio.to_thread(path.open, "rb")
            try:
                while data := await asyncio.to_thread(fh.read, 1 << 20):
                    yield cpb.DatasetChunk(data=data)
            finally:
                fh.close()

        stub = await self._stub()
        try:
            reply = await stub.UploadDataset(chunks(), timeout=max(self.timeout, 600), metadata=self._metadata)
        except grpc.RpcError as exc:
            raise translate(exc, self.address) from None
        return wire.dataset_from_pb(reply)

    # ---- projects

    async def upload_project(self, path: Path | str, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
        """Snapshot a project folder and upload the files the controller lacks, and the manifest itself (a blob
        whose sha256 is the manifest id) when it lacks that (ProjectError says what is wrong with the folder).
        Returns {"manifest_id", "manifest", "files", "bytes", "uploaded_files", "uploaded_bytes", "git", "path"}:
        what a project job is submitted with, and submit --json's "upload" numbers (project files only: the
        manifest is not counted, so an unchanged project uploads 0 files, 0 bytes)."""
        snap = await asyncio.to_thread(snapshot, path, max_bytes)
        return await self._upload_snapshot(snap)

    async def _missing(self, wanted: Sequence[str]) -> list[str]:
        """Those of `wanted` the controller's blob store lacks (MissingBlobs, in batches)."""
        missing: list[str] = []
        for start in range(0, len(wanted), MISSING_BATCH):
            request = cpb.MissingBlobsRequest(sha256=wanted[start : start + MISSING_BATCH])
            missing += await self._call("MissingBlobs", request, lambda r: list(r.sha256))
        return missing

    async def _upload_snapshot(self, snap: Snapshot) -> dict[str, Any]:
        manifest = manifest_bytes(snap.entries)
        wanted = sorted(snap.blobs() | {snap.id})
        stub = await self._stub()
        missing = await self._missing(wanted)
        send_manifest = snap.id in missing and snap.id not in snap.blobs()
        plan = snap.plan_upload(set(wanted) - set(missing))
        if plan.send or send_manifest:
            changed: list[ProjectError] = []
            chunks = _project_chunks(snap, plan.send, changed, manifest if send_manifest else None)
            try:
                reply = await stub.UploadBlobs(chunks, timeout=max(self.timeout, 600), metadata=self._metadata)
            except grpc.RpcError as exc:
                if changed:
                    raise changed[0] from None
                raise translate(exc, self.address) from None
            if changed:
                raise changed[0]
            stored = wire.upload_blobs_from_pb(reply)
            extra_files, extra_bytes = (1, len(manifest)) if send_manifest else (0, 0)
            sent = {"files": len(plan.send) + extra_files, "bytes": plan.uploaded_bytes + extra_bytes}
            if stored != sent:
                raise DataLoss(
                    f"the controller stored {stored['files']} file(s), {stored['bytes']} bytes of the "
                    f"{sent['files']} file(s), {sent['bytes']} bytes sent; upload the project again"
                )
        return {
            "manifest_id": snap.id,
            "manifest": snap.manifest(),
            "files": plan.files,
            "bytes": plan.bytes,
            "uploaded_files": plan.uploaded_files,
            "uploaded_bytes": plan.uploaded_bytes,
            "git": snap.git.as_dict() if snap.git is not None else None,
            "path": str(snap.root),
        }

    async def submit_project(
        self,
        /,
        path: Path | str,
        command: Sequence[str] | str,
        env: str = "auto",
        max_project_size: int = DEFAULT_MAX_BYTES,
        who: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Run a project folder's command as a job: snapshot the folder, upload what the controller lacks,
        submit. `command` is a list of strings (or one string, split as a shell would); `env` is "auto"
        (uv.lock > pyproject.toml > requirements.txt > none), "none" (the agent's own Python) or a requirement
        file of the project; `fields` are the other job spec fields (name, num_workers, gpus, dataset,
        max_retries, timeout, priority, constraints, model_name, ...). Returns the job, with "upload":
        {"files", "bytes", "uploaded_files", "uploaded_bytes"}. InvalidRequest names a bad command, env or
        field; ProjectError what is wrong with the folder."""
        argv = check_command(command)
        snap = await asyncio.to_thread(snapshot, path, max_project_size)
        check_env(env, {e.path for e in snap.entries}, snap.root)
        upload = await self._upload_snapshot(snap)
        job = await self.submit(project_job_spec(upload, argv, env, **fields), who)
        return {**job, "upload": upload_summary(upload)}

    async def datasets(self) -> list[dict[str, Any]]:
        return await self._call("ListDatasets", cpb.ListDatasetsRequest(), _datasets)

    # ---- dataset versions (issue 20)

    async def upload_dataset_version(
        self,
        path: Path | str,
        name: str | None = None,
        progress: Progress | None = None,
        *,
        cache_dir: Path | None = None,
        use_cache: bool = True,
    ) -> dict[str, Any]:
        """Upload a file or a folder tree as a version of dataset `name` (default: the file's stem or the folder's
        name): snapshot it (dataset_tree: files over 8 MiB as 8 MiB chunks; hashes cached per file), send only
        the files and chunks the controller lacks, then the manifest, then commit. Content equal to the latest
        version makes none ("unchanged": True, that version's number); otherwise version N+1. An interrupted
        upload resumes: the next one sends only what did not arrive. `progress(phase, done, total)` is called
        with phase "hash" (from hashing threads) and "upload" (bytes sent). Returns the version ({"name",
        "version", "source", "url", "content_id", "files", "bytes", "created_at", "created_by", "unchanged",
        "used_by"}) with "uploaded_bytes" and "uploaded_blobs" (what this call sent, the manifest not counted),
        "hashed_files" (files read, not known from the cache) and "path". DatasetError names what is wrong
        with PATH."""

        def scan() -> tuple[str, DatasetSnapshot]:  # the name is checked before anything is read
            checked = dataset_name(name, Path(path).expanduser())
            return checked, snapshot_dataset(path, cache_dir=cache_dir, use_cache=use_cache, progress=progress)

        checked, snap = await asyncio.to_thread(scan)
        sent = await self._upload_dataset_blobs(snap, progress)
        request = cpb.CommitDatasetVersionRequest(name=checked, manifest_id=snap.id)
        version = await self._call("CommitDatasetVersion", request, wire.dataset_version_from_pb)
        version["uploaded_bytes"] = sent["bytes"]
        return {
            **version,
            "uploaded_blobs": sent["blobs"],
            "hashed_files": snap.hashed_files,
            "path": str(snap.file_source or snap.root),
        }

    async def _upload_dataset_blobs(self, snap: DatasetSnapshot, progress: Progress | None) -> dict[str, int]:
        """MissingBlobs of every file/chunk and the manifest, then UploadBlobs of those missing (the manifest
        last), in calls of at most dataset_upload.BATCH_BYTES. {"blobs", "bytes"} sent, the manifest not
        counted."""
        missing = set(await self._missing(sorted(snap.blobs() | {snap.id})))
        pieces = snap.pieces(missing)
        total, done = sum(p.size for p in pieces), 0

        def sent(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress("upload", done, total)

        groups = batches(pieces)
        send_manifest = snap.id in missing
        if send_manifest and not groups:
            groups = [[]]
        stub = await self._stub()
        for i, group in enumerate(groups):
            manifest = (snap.id, manifest_bytes(snap.entries)) if send_manifest and i == len(groups) - 1 else None
            failures: list[BaseException] = []
            messages = _blob_messages(piece_parts(group, manifest, failures, sent))
            try:
                reply = await stub.UploadBlobs(messages, timeout=max(self.timeout, 600), metadata=self._metadata)
            except grpc.RpcError as exc:
                if failures:
                    raise failures[0] from None
                raise translate(exc, self.address) from None
            if failures:
                raise failures[0]
            stored = wire.upload_blobs_from_pb(reply)
            extra = len(manifest[1]) if manifest is not None else 0
            expected = {"files": len(group) + (manifest is not None), "bytes": sum(p.size for p in group) + extra}
            if stored != expected:
                raise DataLoss(
                    f"the controller stored {stored['files']} blob(s), {stored['bytes']} bytes of the "
                    f"{expected['files']}, {expected['bytes']} bytes sent; upload again (what arrived is kept)"
                )
        return {"blobs": len(pieces), "bytes": total}

    async def add_dataset_reference(self, name: str, url: str) -> dict[str, Any]:
        """Register s3://bucket/prefix or file:///absolute/path as a version of dataset `name`, without copying:
        the controller snapshots the listing (paths, sizes, ETag or mtime+size). An unchanged listing makes no
        version ("unchanged": True). The version as upload_dataset_version returns it."""
        request = cpb.AddDatasetReferenceRequest(name=dataset_name(name, None), url=url)
        return await self._call("AddDatasetReference", request, wire.dataset_version_from_pb)

    async def dataset(self, ref: str, prefix: str = "", limit: int = 0, cursor: str = "") -> dict[str, Any]:
        """NAME (the latest version) or NAME:VERSION: {"dataset" (with its "versions"), "version", "files":
        [{"path", "size", "sha256", "etag", "chunks"}, ...] (a page, sorted by path, under `prefix`),
        "next_cursor" ("" on the last page: pass it as `cursor` for the next)}."""
        request = cpb.GetDatasetRequest(ref=ref, prefix=prefix, limit=limit, cursor=cursor)
        return await self._call("GetDataset", request, wire.get_dataset_from_pb)

    async def read_dataset_file(self, ref: str, path: str, limit: int = 0) -> dict[str, Any]:
        """The first `limit` bytes (0: 1 MiB, at most 4 MiB) of one file of NAME[:VERSION]: {"version", "file"
        (its whole size), "data", "truncated"}; what the desktop app previews."""
        request = cpb.ReadDatasetFileRequest(ref=ref, path=path, limit=limit)
        return await self._call("ReadDatasetFile", request, wire.dataset_file_data_from_pb)

    async def preview_dataset(self, name: str, rows: int = 10) -> dict[str, Any]:
        """{"dataset": {...}, "columns": [...], "rows": [[...], ...]} (values as text, as in the file)."""
        return await self._call("PreviewDataset", cpb.DatasetRequest(name=name, rows=rows), wire.preview_from_pb)

    async def delete_dataset(self, name: str) -> dict[str, Any]:
        """NAME: the dataset and all its versions; NAME:VERSION: that version. Refused while a job or a registered
        model refers to it (the refusal names them)."""
        return await self._call("DeleteDataset", cpb.DatasetRequest(name=name), wire.dataset_from_pb)

    # ---- model registry

    async def models(
        self,
        name: str = "",
        algorithm: str = "",
        tag: str = "",
        alias: str = "",
        min_metric: str = "",
        page: int = 1,
        limit: int = 20,
    ) -> dict[str, Any]:
        """{"models": [...one per version...], "pagination": {page, limit, total, pages}}."""
        request = cpb.ListModelsRequest(
            name=name, algorithm=algorithm, tag=tag, alias=alias, min_metric=min_metric, page=page, limit=limit
        )
        return await self._call("ListModels", request, wire.model_page_from_pb)

    async def model(self, ref: str) -> dict[str, Any]:
        """NAME (latest), NAME:VERSION or NAME@ALIAS."""
        return await self._call("GetModel", cpb.ModelRequest(ref=ref), wire.model_from_pb)

    async def set_alias(self, ref: str, alias: str) -> dict[str, Any]:
        return await self._call("SetModelAlias", cpb.AliasRequest(ref=ref, alias=alias), wire.model_from_pb)

    async def remove_alias(self, name: str, alias: str) -> dict[str, Any]:
        return await self._call("RemoveModelAlias", cpb.AliasRequest(ref=name, alias=alias), wire.model_from_pb)

    async def tag_model(self, ref: str, tag: str) -> dict[str, Any]:
        return await self._call("TagModel", cpb.TagRequest(ref=ref, tag=tag), wire.model_from_pb)

    async def describe_model(self, ref: str, description: str) -> dict[str, Any]:
        request = cpb.DescribeModelRequest(ref=ref, description=description)
        return await self._call("DescribeModel", request, wire.model_from_pb)

    async def delete_model(self, ref: str, force: bool = False) -> dict[str, Any]:
        return await self._call("DeleteModel", cpb.DeleteModelRequest(ref=ref, force=force), wire.model_from_pb)

    async def model_stats(self) -> dict[str, Any]:
        return await self._call("ModelStats", cpb.ModelStatsRequest(), wire.stats_from_pb)

    async def collect_garbage(self, grace: float = 600.0) -> dict[str, int]:
        """Delete blobs nothing refers to any more and what interrupted transfers left behind:
        {"deleted" (blobs), "partials" (partial transfer files), "freed_bytes", "kept"}."""
        return await self._call(
            "CollectGarbage",
            cpb.GcRequest(grace_seconds=grace),
            lambda r: {"deleted": r.deleted, "partials": r.partials, "freed_bytes": r.freed_bytes, "kept": r.kept},
        )

    async def download_model(self, ref: str, path: Path, fmt: str = "") -> dict[str, Any]:
        """Write the model to `path` (a torch model's config goes to PATH.json); the sha256 is checked.

        Returns the version's record with "format", "sha256" and "size" of what was written.
        """
        request = _checked(wire.download_format_to_pb, fmt)
        request.ref = ref
        tmp = path.with_name(f".{path.name}.part")
        header, digest, size = await self._receive("DownloadModel", request, tmp, path)
        if digest != header.sha256 or size != header.size:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
            got = f"{size} bytes, sha256 {digest[:12]}"
            raise DataLoss(f"the download of {ref} arrived damaged ({got}, expected {header.sha256[:12]})", "DATA_LOSS")
        await asyncio.to_thread(tmp.replace, path)
        config = json.loads(header.config_json or "{}")
        if config:
            await asyncio.to_thread(path.with_name(path.name + ".json").write_text, json.dumps(config, indent=1))
        fmt = wire.MODEL_FORMAT.from_pb(header.format, "format")
        return {**wire.model_from_pb(header.model), "format": fmt, "sha256": header.sha256, "size": size}

    async def load_model(self, ref: str) -> Any:
        """A ready model: a scikit-learn estimator (skops, allow-listed types only) or a torch module."""
        with tempfile.TemporaryDirectory(prefix="tensorfleet-model-") as tmpdir:
            path = Path(tmpdir) / "model"
            record = await self.download_model(ref, path)
            return await asyncio.to_thread(load_model_file, path, record["format"])

    # ---- artifacts

    async def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """The files the job's tasks saved: name, kind, task_index (-1: the controller's), attempt (0: the
        controller's), size, sha256, created_at."""
        return await self._call("ListArtifacts", cpb.ListArtifactsRequest(job_id=job_id), _artifacts)

    async def download_artifact(
        self, job_id: str, name: str, dest: Path, task: int | None = None, attempt: int | None = None
    ) -> dict[str, Any]:
        """Write the job's artifact NAME to `dest` (a file path, or a directory to write NAME into).

        The sha256 is checked: a damaged or cut-short transfer raises and leaves no file behind. `task` picks
        among several tasks' artifacts of one name; `attempt` one attempt's file of that name (default: the
        latest attempt's). Returns the artifact's record (its "attempt" says which) with "path" added.
        """
        request = cpb.DownloadArtifactRequest(job_id=job_id, name=name, task_index=task, attempt=attempt)
        path = dest / Path(name).name if await asyncio.to_thread(dest.is_dir) else dest
        tmp = path.with_name(f".{path.name}.part")
        first, digest, size = await self._receive("DownloadArtifact", request, tmp, path)
        header = wire.artifact_from_pb(first)
        if digest != header["sha256"] or size != header["size"]:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
            got = f"{size} bytes, sha256 {digest[:12]}"
            raise DataLoss(
                f"artifact {name} of job {job_id} arrived damaged ({got}; expected {header['size']} bytes, "
                f"sha256 {header['sha256'][:12]}): nothing was written",
                "DATA_LOSS",
            )
        await asyncio.to_thread(tmp.replace, path)
        return {**header, "path": str(path)}

    async def _receive(self, method: str, request: Any, tmp: Path, path: Path) -> tuple[Any, str, int]:
        """A download stream: its header message, then its data written to `tmp`; (header, sha256, size)."""
        stub = await self._stub()
        hasher, size = hashlib.sha256(), 0
        fh: IO[bytes] | None = None
        try:
            stream = aiter(getattr(stub, method)(request, timeout=max(self.timeout, 600), metadata=self._metadata))
            first = await anext(stream, None)
            if first is None:
                raise DataLoss(f"the download of {path.name} ended before it began", "DATA_LOSS")
            fh = await asyncio.to_thread(tmp.open, "wb")
            async for chunk in stream:
                hasher.update(chunk.data)
                size += len(chunk.data)
                await asyncio.to_thread(fh.write, chunk.data)
            await asyncio.to_thread(fh.close)
        except grpc.RpcError as exc:
            await _discard(fh, tmp)
            raise translate(exc, self.address) from None
        except OSError as exc:
            await _discard(fh, tmp)
            raise InvalidRequest(f"cannot write {path}: {exc}") from None
        return first.header, hasher.hexdigest(), size

    # ---- pools (Slurm allocations that agents join from; the controller submits and ends them)

    async def add_pool(
        self,
        name: str,
        partition: str,
        *,
        kind: str = "slurm",
        account: str = "",
        max_nodes: int = 1,
        time_limit: str = "",
        sbatch_args: Sequence[str] = (),
        idle_timeout_seconds: float = 300.0,
        login: str = "",
    ) -> dict[str, Any]:
        """Register a pool: {"name", "kind", "partition", "account", "max_nodes", "time_limit", "sbatch_args",
        "idle_timeout_seconds", "login", "allocations": [...], "created_at", "error"}. InvalidRequest names the
        field the controller refused; the pool starts with no allocation (it scales from zero)."""
        spec = {
            "name": name,
            "kind": kind,
            "partition": partition,
            "account": account,
            "max_nodes": max_nodes,
            "time_limit": time_limit,
            "sbatch_args": list(sbatch_args),
            "idle_timeout_seconds": idle_timeout_seconds,
            "login": login,
        }
        return await self._call("AddPool", wire.pool_spec_to_pb(spec), wire.pool_from_pb)

    async def list_pools(self) -> list[dict[str, Any]]:
        """Every pool with its allocations not yet ended (each {"id", "state", "reason", "nodes", "submitted_at",
        "started_at", "agents", "jobs"})."""
        return await self._call("ListPools", cpb.ListPoolsRequest(), lambda r: [wire.pool_from_pb(p) for p in r.pools])

    async def get_pool(self, name: str) -> dict[str, Any]:
        return await self._call("GetPool", cpb.PoolRef(name=name), wire.pool_from_pb)

    async def remove_pool(self, name: str) -> dict[str, Any]:
        """Forget the pool; refused (InvalidRequest) while one of its allocations runs work."""
        return await self._call("RemovePool", cpb.PoolRef(name=name), wire.pool_from_pb)

    async def create_join_credential(self, pool: str, ttl_seconds: float) -> dict[str, Any]:
        """A long-lived join credential for agents the controller cannot find by mDNS (a Kubernetes DaemonSet:
        `tensorfleet-agent --join HOST:PORT --join-credential-file F`): {"credential", "expires_at", "pool"}. The
        agents get the label pool=POOL. A secret: whoever holds it can add agents until it expires."""
        request = cpb.JoinCredentialRequest(pool=pool, ttl_seconds=ttl_seconds)
        return await self._call(
            "CreateJoinCredential",
            request,
            lambda r: {"credential": r.credential, "expires_at": r.expires_at, "pool": r.pool},
        )

    # ---- the controller

    async def shutdown(self) -> None:
        """Stop the controller and its local agent (which lets its running tasks finish first)."""
        await self._call("Shutdown", cpb.ShutdownRequest(), lambda r: None)

    # ---- team (issue 24): who am I, named tokens, the audit log

    async def whoami(self) -> dict[str, Any]:
        """Who the controller takes this client for: {"name", "role", "named_token"}."""
        info = await self.info()
        caller: dict[str, Any] = info["caller"]
        return caller

    async def create_token(self, name: str, role: str = "user") -> dict[str, Any]:
        """A named token for `name` (admin only): its info and "token", shown this once."""
        return await self._call("CreateToken", cpb.CreateTokenRequest(name=name, role=role), wire.token_secret_from_pb)

    async def tokens(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        request = cpb.ListTokensRequest(include_revoked=include_revoked)
        return await self._call("ListTokens", request, lambda r: [wire.token_info_from_pb(t) for t in r.tokens])

    async def revoke_token(self, name: str) -> dict[str, Any]:
        return await self._call("RevokeToken", cpb.TokenRef(name=name), wire.token_info_from_pb)

    async def audit(self, user: str = "", action: str = "", since: float = 0.0, limit: int = 0) -> list[dict[str, Any]]:
        """Audit entries newest first (an admin sees everyone's; others their own); `since`: unix seconds."""
        request = cpb.ListAuditRequest(user=user, action=action, since=since, limit=limit)
        return await self._call("ListAudit", request, lambda r: [wire.audit_entry_from_pb(e) for e in r.entries])

    # ---- quotas and fair share (issue 24)

    async def set_quota(
        self, user: str, *, gpus: int | None = None, tasks: int | None = None, queued: int | None = None
    ) -> dict[str, Any]:
        """Set the given limits of `user` (admin only): running GPUs (a shared GPU counts its fraction), running
        tasks, queued jobs; -1 removes that limit, None leaves it. The quota now: {"user", "gpus", "tasks",
        "queued"} (-1: no limit). A job over quota waits, never fails."""
        given = {k: v for k, v in (("gpus", gpus), ("tasks", tasks), ("queued", queued)) if v is not None}
        return await self._call("SetQuota", wire.set_quota_to_pb(user, given), wire.quota_from_pb)

    async def list_quotas(self) -> dict[str, Any]:
        """{"quotas": [...], "usage": [{"user", "running_tasks", "running_gpus", "queued_jobs", "usage" (decayed
        GPU-seconds, slot-seconds for CPU tasks), "share"}], "half_life_seconds"}."""
        return await self._call("ListQuotas", cpb.ListQuotasRequest(), wire.quotas_from_pb)


def _user_metadata() -> Metadata:
    """The OS user this client runs as, on every call: with the controller's own token it is who we are (a named
    token's name overrides it on the controller's side)."""
    user = submitter().split("@", 1)[0]
    return (("x-tensorfleet-user", user),) if user.isascii() and user.isprintable() and user else ()


async def _discard(fh: IO[bytes] | None, tmp: Path) -> None:
    if fh is not None:
        await asyncio.to_thread(fh.close)
    await asyncio.to_thread(tmp.unlink, missing_ok=True)


async def _blob_messages(parts: AsyncIterator[tuple[str, int] | bytes]) -> AsyncIterator[cpb.ProjectFileChunk]:
    """UploadBlobs' messages of (sha256, size) headers and data parts."""
    async for part in parts:
        if isinstance(part, tuple):
            yield wire.project_file_header_to_pb(*part)
        else:
            yield cpb.ProjectFileChunk(data=part)


async def _project_chunks(
    snap: Snapshot, send: Sequence[ManifestEntry], changed: list[ProjectError], manifest: bytes | None = None
) -> AsyncIterator[cpb.ProjectFileChunk]:
    """UploadBlobs' messages: the manifest's bytes first when given (a blob named by the manifest id), then per
    file its header and its bytes in chunks of 1 MiB, hashed again as they are read. A file that changed since
    the snapshot ends the stream (the controller refuses what it got) and is reported through `changed`."""
    if manifest is not None:
        yield wire.project_file_header_to_pb(snap.id, len(manifest))
        for offset in range(0, len(manifest), UPLOAD_CHUNK):
            yield cpb.ProjectFileChunk(data=manifest[offset : offset + UPLOAD_CHUNK])
    for entry in send:
        yield wire.project_file_header_to_pb(entry.sha256, entry.size)
        local = snap.local_path(entry)
        try:
            fh = await asyncio.to_thread(local.open, "rb")
        except OSError as exc:
            changed.append(ProjectError(f"{entry.path}: cannot read it any more ({exc}); submit again"))
            return
        hasher, size = hashlib.sha256(), 0
        try:
            while data := await asyncio.to_thread(fh.read, min(UPLOAD_CHUNK, entry.size + 1 - size)):
                size += len(data)
                hasher.update(data)
                if size > entry.size:
                    break
                yield cpb.ProjectFileChunk(data=data)
        finally:
            fh.close()
        if size != entry.size or hasher.hexdigest() != entry.sha256:
            changed.append(ProjectError(f"{entry.path} changed while the project was uploaded; submit again"))
            return


# ---- project jobs: the spec, built in one place (the SDK, the CLI and the GUI all submit through these)


def check_command(command: Sequence[str] | str) -> list[str]:
    """A project job's command as a list of strings (a string is split as a shell would), checked by the function
    the controller uses (core.project_spec.check_command); an InvalidRequest in its words otherwise."""
    try:
        return project_spec.check_command(command)
    except ValidationError as exc:
        raise InvalidRequest(str(exc)) from None


def check_env(env: str, paths: Collection[str] | None, root: Path | str = "") -> str:
    """The env choice checked against the snapshot's files: "auto", "none", or the path (relative to the project
    folder) of a file that is sent; otherwise an InvalidRequest saying why (a file that is ignored is named as
    such). `paths` None: only the form is checked (core.project_spec.check_env_choice, as the controller)."""
    try:
        env = project_spec.check_env_choice(env)
    except ValidationError as exc:
        raise InvalidRequest(str(exc)) from None
    if env in project_spec.ENV_CHOICES:
        return env
    if paths is not None and env not in paths:
        where = f" {root}" if root else ""
        exists = bool(root) and (Path(root) / env).is_file()
        why = (
            "it is there but left out of the snapshot (.gitignore or .tensorfleetignore)"
            if exists
            else "no such file is sent"
        )
        raise InvalidRequest(
            f'env {env!r} is not a file of the project{where}: {why}; use "auto", "none" or a file it sends '
            "(uv.lock, pyproject.toml, requirements.txt, ...)"
        )
    return env


def project_job_spec(
    upload: dict[str, Any], command: Sequence[str] | str, env: str = "auto", **fields: Any
) -> dict[str, Any]:
    """The SubmitJob spec of a project job from `upload_project`'s result: {"algorithm": "project", "project":
    {manifest_id, files, bytes, env, git}, "command": [...], **fields}. The job's name defaults to the
    project folder's name. The controller parses it again (jobspec.parse_job_spec)."""
    clash = sorted(set(fields) & set(_PROJECT_KEYS))
    if clash:
        raise InvalidRequest(
            f"{', '.join(clash)}: set by a project job itself; leave {'it' if len(clash) == 1 else 'them'} out"
        )
    argv = check_command(command)
    manifest = upload.get("manifest")
    check_env(env, {str(e["path"]) for e in manifest} if manifest is not None else None, upload.get("path") or "")
    spec: dict[str, Any] = {
        "algorithm": PROJECT_WORKLOAD,
        "project": {
            "manifest_id": upload["manifest_id"],
            "files": int(upload["files"]),
            "bytes": int(upload["bytes"]),
            "env": env,
            "git": upload.get("git"),
        },
        "command": argv,
    }
    folder = Path(str(upload.get("path") or "")).name
    if not fields.get("name") and folder:
        fields = {**fields, "name": folder}
    return {**spec, **{k: v for k, v in fields.items() if v is not None}}


def upload_summary(upload: dict[str, Any]) -> dict[str, int]:
    """submit --json's "upload" object: what the project holds and what this submit sent of it."""
    return {k: int(upload[k]) for k in ("files", "bytes", "uploaded_files", "uploaded_bytes")}


def dataset_name(name: str | None, path: Path | None) -> str:
    """The name a dataset is uploaded as: `name`, or the file's stem / the folder's name; checked as the
    controller checks it, before anything is read."""
    if not name and path is not None:
        name = (path.stem if path.is_file() else path.resolve().name) or ""
    if not name or not DATASET_NAME.match(name):
        got = f"got {name!r}" if name else "none given"
        raise InvalidRequest(
            f"a dataset name holds letters, digits, '.', '_' and '-' (at most 128, starting with a letter or digit); "
            f"{got}{': name it with --name' if path is not None else ''}"
        )
    return name


def _digest(path: Path) -> tuple[str, int]:
    try:
        return file_digest(path)
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc}") from None
