"""The TensorFleet SDK: `Client` (blocking) and `AsyncClient` (asyncio), over ControllerService.

    from tensorfleet_desktop.client import Client
    with Client() as tf:
        job = tf.submit({"algorithm": "random_forest", "dataset": "iris"})
        tf.wait(job["id"])

Jobs, agents and events come back as plain dicts (the same keys as the CLI's --json).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import platformdirs

from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent._generated import controller_pb2_grpc as cpb_grpc
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.identity import node_id_of_cert
from tensorfleet_agent.rpc.client import (
    create_channel,
    create_sync_channel,
    fetch_certificate_blocking,
    pinned_credentials,
)
from tensorfleet_agent.rpc.server import is_loopback
from tensorfleet_agent.security.secrets import register
from tensorfleet_desktop.connection import client_token, connection_path, find_connection
from tensorfleet_desktop.controller import convert

DEFAULT_CONTROLLER = "127.0.0.1:50050"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
T = TypeVar("T")


class TensorFleetError(Exception):
    """Base of SDK errors; `code` is the gRPC status name."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class InvalidRequest(TensorFleetError):
    """The controller refused the input (bad spec, wrong state); the message names the problem."""


class NotFound(TensorFleetError):
    pass


class ControllerUnreachable(TensorFleetError):
    pass


class ControllerFull(TensorFleetError):
    """The controller cannot save (its data dir is full): nothing was changed; retry once space is freed."""


class DataLoss(TensorFleetError):
    """The controller's stored data is missing or damaged (a model file that no longer hashes right)."""


def controller_address(explicit: str | None = None) -> str:
    return explicit or os.environ.get("TENSORFLEET_CONTROLLER") or DEFAULT_CONTROLLER


def submitter() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _translate(exc: grpc.RpcError, address: str) -> TensorFleetError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code else "UNKNOWN"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ControllerUnreachable(f"cannot reach the TensorFleet controller at {address}: {details}", name)
    if code in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.OUT_OF_RANGE,
    ):
        return InvalidRequest(str(details), name)
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFound(str(details), name)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and ("data dir full" in str(details) or "disk space" in str(details)):
        return ControllerFull(str(details), name)
    if code is grpc.StatusCode.DATA_LOSS:
        return DataLoss(str(details), name)
    return TensorFleetError(f"{name}: {details}", name)


def _requests() -> dict[str, Callable[..., Any]]:
    """How each SDK call builds its request; shared by the sync and async clients."""
    return {
        "info": lambda: cpb.ControllerInfoRequest(),
        "submit": lambda spec, who=None: cpb.SubmitJobRequest(spec_json=json.dumps(spec), submitter=who or submitter()),
        "jobs": lambda states=(), limit=0: cpb.ListJobsRequest(
            states=_checked(convert.job_states_to_pb, states), limit=limit
        ),
        "job": lambda job_id: cpb.JobRef(job_id=job_id),
        "resubmit": lambda job_id, params=None: cpb.ResubmitJobRequest(
            job_id=job_id, params_json=json.dumps(params or {})
        ),
        "metrics": lambda job_id, names=(): cpb.GetMetricsRequest(job_id=job_id, names=list(names)),
        "logs": lambda job_id, task=None: cpb.GetLogsRequest(
            job_id=job_id, task_index=task or 0, all_tasks=task is None
        ),
        "add_agent": lambda address: cpb.AddAgentRequest(address=address),
        "agent_ref": lambda agent: cpb.AgentRefRequest(agent=agent),
        "watch": lambda job_id, after_seq=0: cpb.WatchJobRequest(job_id=job_id, after_seq=after_seq),
        "pair": lambda agent, token, force=False: cpb.PairAgentRequest(agent=agent, token=token, force=force),
        "models": lambda name="", algorithm="", tag="", alias="", min_metric="", page=1, limit=20: (
            cpb.ListModelsRequest(
                name=name, algorithm=algorithm, tag=tag, alias=alias, min_metric=min_metric, page=page, limit=limit
            )
        ),
        "model": lambda ref: cpb.ModelRequest(ref=ref),
        "alias": lambda ref, alias: cpb.AliasRequest(ref=ref, alias=alias),
        "tag": lambda ref, tag: cpb.TagRequest(ref=ref, tag=tag),
        "delete_model": lambda ref, force=False: cpb.DeleteModelRequest(ref=ref, force=force),
    }


def _checked(to_pb: Callable[[Any], T], value: Any) -> T:
    """A request field converted to its enum; a value outside the set is the caller's error."""
    try:
        return to_pb(value)
    except ValidationError as exc:
        raise InvalidRequest(str(exc)) from None


def _model_page(resp: cpb.ListModelsResponse) -> dict[str, Any]:
    return {
        "models": [convert.model_from_pb(m) for m in resp.models],
        "pagination": {"page": resp.page, "limit": resp.limit, "total": resp.total, "pages": resp.pages},
    }


_REQ = _requests()


def _metrics(resp: cpb.GetMetricsResponse) -> list[dict[str, Any]]:
    return [
        {
            "task_index": p.task_index,
            "step": p.step,
            "name": p.name,
            "value": p.value,
            "wall_time": p.wall_time,
            "agent_task_id": p.agent_task_id,
            "seq": p.seq,
        }
        for p in resp.points
    ]


def _agents(resp: cpb.ListAgentsResponse) -> list[dict[str, Any]]:
    """The agents, then (when asked for) the refused services: state REFUSED, the reason in `refused`."""
    return [convert.agent_from_pb(a) for a in resp.agents] + [convert.refused_from_pb(r) for r in resp.refused]


def _logs(resp: cpb.GetLogsResponse) -> list[dict[str, Any]]:
    return [
        {"task_index": r.task_index, "time": r.time, "stream": convert.log_stream_from_pb(r.stream), "line": r.line}
        for r in resp.lines
    ]


def _artifacts(resp: cpb.ListArtifactsResponse) -> list[dict[str, Any]]:
    return [convert.artifact_from_pb(a) for a in resp.artifacts]


def _info(resp: cpb.ControllerInfo) -> dict[str, Any]:
    return {
        "protocol_version": resp.protocol_version,
        "version": resp.version,
        "data_dir": resp.data_dir,
        "store": resp.store_uri,
        "blobs": resp.blobs_uri,
        "pid": resp.pid,
        "started_at": resp.started_at,
        "local_agent_id": resp.local_agent_id,
        "fingerprint": resp.fingerprint,
        "cluster_id": resp.cluster_id,
    }


Metadata = tuple[tuple[str, str], ...]


def known_controllers_file() -> Path:
    override = os.environ.get("TENSORFLEET_KNOWN_CONTROLLERS")
    if override:
        return Path(override)
    return Path(platformdirs.user_config_dir("tensorfleet", appauthor=False)) / "known_controllers.json"


def channel_security(address: str) -> tuple[grpc.ChannelCredentials | None, str | None, Metadata]:
    """The client token as bearer metadata on every call (TENSORFLEET_CONTROLLER_TOKEN, else the connection
    file the controller wrote for this address). Loopback: plaintext, unless the connection file says the
    controller serves TLS there (serve --host 0.0.0.0): then TLS pinned to the file's fingerprint, and the token
    goes only to the controller presenting it. Elsewhere: TLS, pinned on first use."""
    host = address.rpartition(":")[0].strip("[]")
    token, _source = client_token(address)
    metadata: Metadata = (("authorization", f"Bearer {token}"),) if token else ()
    register(token)
    named = find_connection(address)
    loopback = is_loopback(host)
    if loopback and (named is None or not named.tls):
        return None, None, metadata  # without a token the controller's refusal says where it lives
    if not token:
        raise InvalidRequest(
            f"the controller at {address} needs its client token: set TENSORFLEET_CONTROLLER_TOKEN to it "
            f"(client.token in the controller's data dir; its own OS user's clients read {connection_path(address)})"
        )
    try:
        cert = fetch_certificate_blocking(address)
    except OSError as exc:
        raise ControllerUnreachable(f"cannot reach the TensorFleet controller at {address}: {exc}") from None
    node_id, fingerprint = node_id_of_cert(cert)
    if named is not None and (named.fingerprint or loopback) and named.fingerprint != fingerprint:
        raise InvalidRequest(
            f"the controller at {address} presents certificate {fingerprint[:16]}, not {named.fingerprint[:16]} "
            f"named in {named.path}: refusing it"
        )
    if loopback:  # pinned to the connection file of a controller of this user that is alive
        return pinned_credentials(cert), node_id, metadata
    path = known_controllers_file()
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    pinned = known.get(address)
    if pinned and pinned != fingerprint:
        raise InvalidRequest(
            f"the controller at {address} presents certificate {fingerprint[:16]}, not {pinned[:16]} seen before: "
            f"refusing it (if it was re-installed on purpose, remove its entry from {path})"
        )
    if not pinned:
        known[address] = fingerprint
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=1))
    return pinned_credentials(cert), node_id, metadata


def _write_chunks(chunks: Iterator[Any], tmp: Path) -> tuple[str, int]:
    """Write a download's data chunks to `tmp`; (sha256, size) of what arrived, for the caller to check."""
    import hashlib

    hasher, size = hashlib.sha256(), 0
    with tmp.open("wb") as fh:
        for chunk in chunks:
            hasher.update(chunk.data)
            size += len(chunk.data)
            fh.write(chunk.data)
    return hasher.hexdigest(), size


def _digest(path: Path) -> tuple[str, int]:
    from tensorfleet_agent.core.digest import file_digest

    try:
        return file_digest(path)
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc}") from None


def _dataset(msg: cpb.DatasetInfo) -> dict[str, Any]:
    return {
        "name": msg.name,
        "sha256": msg.sha256,
        "filename": msg.filename,
        "format": convert.DATASET_FORMAT.from_pb(msg.format, "format"),
        "rows": msg.rows,
        "columns": list(msg.columns),
        "size": msg.size,
        "created_at": msg.created_at,
        "source_filename": msg.source_filename,
        "source_sha256": msg.source_sha256,
    }


def trial_rows(job: dict[str, Any]) -> list[dict[str, Any]]:
    """A sweep job's trials: parameters, score on the sweep's metric, state (PRUNED too), duration, agent."""
    sweep = job["spec"].get("sweep") or {}
    metric = sweep.get("metric", "")
    return [
        {
            "trial": t["index"],
            "params": {k: (t["params"] or {}).get(k) for k in sweep.get("params", {})},
            "score": t["metrics"].get(metric),
            "state": "PRUNED" if t["exit_cause"] == "pruned" else t["state"],
            "duration": (t["finished_at"] - t["started_at"]) if t["finished_at"] and t["started_at"] else None,
            "agent": t["agent"],
        }
        for t in job["task_list"]
    ]


def _preview(r: cpb.DatasetPreview) -> dict[str, Any]:
    return {"dataset": _dataset(r.dataset), "columns": list(r.columns), "rows": [list(row.values) for row in r.rows]}


def load_model_file(path: Path, fmt: str) -> Any:
    """Load a downloaded model: skops against an allow-list, or safetensors with its PATH.json config."""
    if fmt == "skops":
        from tensorfleet_desktop.controller.registry import load_sklearn

        return load_sklearn(path)
    if fmt == "safetensors":
        from tensorfleet_agent.workloads.torch_models import rebuild

        return rebuild(json.loads(path.with_name(path.name + ".json").read_text()), path)
    raise InvalidRequest(f"{fmt} models are downloaded, not loaded, by the SDK (safe formats only)")


class Client:
    """Blocking SDK. Every method raises a TensorFleetError subclass with a clear message."""

    def __init__(self, address: str | None = None, timeout: float = 30.0) -> None:
        self.address = controller_address(address)
        self.timeout = timeout
        credentials, target, self._metadata = channel_security(self.address)
        self._channel = create_sync_channel(self.address, credentials, target)
        self._stub = cpb_grpc.ControllerServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any, convert_fn: Callable[[Any], T]) -> T:
        try:
            return convert_fn(getattr(self._stub, method)(request, timeout=self.timeout, metadata=self._metadata))
        except grpc.RpcError as exc:
            raise _translate(exc, self.address) from None

    def info(self) -> dict[str, Any]:
        return self._call("GetInfo", _REQ["info"](), _info)

    def submit(self, spec: dict[str, Any], who: str | None = None) -> dict[str, Any]:
        return self._call("SubmitJob", _REQ["submit"](spec, who), convert.job_from_pb)

    def jobs(self, states: tuple[str, ...] = (), limit: int = 0) -> list[dict[str, Any]]:
        return self._call("ListJobs", _REQ["jobs"](states, limit), lambda r: [convert.job_from_pb(j) for j in r.jobs])

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GetJob", _REQ["job"](job_id), convert.job_from_pb)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("CancelJob", _REQ["job"](job_id), convert.job_from_pb)

    def pause(self, job_id: str) -> dict[str, Any]:
        return self._call("PauseJob", _REQ["job"](job_id), convert.job_from_pb)

    def resume(self, job_id: str) -> dict[str, Any]:
        return self._call("ResumeJob", _REQ["job"](job_id), convert.job_from_pb)

    def retry(self, job_id: str) -> dict[str, Any]:
        return self._call("RetryJob", _REQ["job"](job_id), convert.job_from_pb)

    def resubmit(self, job_id: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._call("ResubmitJob", _REQ["resubmit"](job_id, params), convert.job_from_pb)

    def metrics(self, job_id: str, names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        return self._call("GetMetrics", _REQ["metrics"](job_id, names), _metrics)

    def logs(self, job_id: str, task: int | None = None) -> list[dict[str, Any]]:
        return self._call("GetLogs", _REQ["logs"](job_id, task), _logs)

    def agents(self, all: bool = False) -> list[dict[str, Any]]:
        """The agents; with all=True also the services this controller refuses (state REFUSED, `refused`)."""
        return self._call("ListAgents", cpb.ListAgentsRequest(include_refused=all), _agents)

    def add_agent(self, address: str) -> dict[str, Any]:
        return self._call("AddAgent", _REQ["add_agent"](address), convert.agent_from_pb)

    def remove_agent(self, agent: str) -> dict[str, Any]:
        return self._call("RemoveAgent", _REQ["agent_ref"](agent), convert.agent_from_pb)

    def drain_agent(self, agent: str) -> dict[str, Any]:
        return self._call("DrainAgent", _REQ["agent_ref"](agent), convert.agent_from_pb)

    def pair_agent(self, agent: str, token: str, force: bool = False) -> dict[str, Any]:
        return self._call("PairAgent", _REQ["pair"](agent, token, force), convert.agent_from_pb)

    def upload_dataset(self, path: Path, name: str | None = None) -> dict[str, Any]:
        """Upload a CSV or Parquet file once; jobs then name it (--dataset NAME --target COLUMN)."""
        digest, size = _digest(path)

        def chunks() -> Iterator[cpb.DatasetChunk]:
            header = cpb.DatasetHeader(name=name or path.stem, filename=path.name, size=size, sha256=digest)
            yield cpb.DatasetChunk(header=header)
            with path.open("rb") as fh:
                while data := fh.read(1 << 20):
                    yield cpb.DatasetChunk(data=data)

        try:
            reply = self._stub.UploadDataset(chunks(), timeout=max(self.timeout, 600), metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _translate(exc, self.address) from None
        return _dataset(reply)

    # ---- model registry

    def models(
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
        request = _REQ["models"](name, algorithm, tag, alias, min_metric, page, limit)
        return self._call("ListModels", request, _model_page)

    def model(self, ref: str) -> dict[str, Any]:
        """NAME (latest), NAME:VERSION or NAME@ALIAS."""
        return self._call("GetModel", _REQ["model"](ref), convert.model_from_pb)

    def set_alias(self, ref: str, alias: str) -> dict[str, Any]:
        return self._call("SetModelAlias", _REQ["alias"](ref, alias), convert.model_from_pb)

    def remove_alias(self, name: str, alias: str) -> dict[str, Any]:
        return self._call("RemoveModelAlias", _REQ["alias"](name, alias), convert.model_from_pb)

    def tag_model(self, ref: str, tag: str) -> dict[str, Any]:
        return self._call("TagModel", _REQ["tag"](ref, tag), convert.model_from_pb)

    def describe_model(self, ref: str, description: str) -> dict[str, Any]:
        request = cpb.DescribeModelRequest(ref=ref, description=description)
        return self._call("DescribeModel", request, convert.model_from_pb)

    def delete_model(self, ref: str, force: bool = False) -> dict[str, Any]:
        return self._call("DeleteModel", _REQ["delete_model"](ref, force), convert.model_from_pb)

    def collect_garbage(self, grace: float = 600.0) -> dict[str, int]:
        """Delete blobs nothing refers to any more and what interrupted transfers left behind:
        {"deleted" (blobs), "partials" (partial transfer files), "freed_bytes", "kept"}."""
        return self._call(
            "CollectGarbage",
            cpb.GcRequest(grace_seconds=grace),
            lambda r: {"deleted": r.deleted, "partials": r.partials, "freed_bytes": r.freed_bytes, "kept": r.kept},
        )

    def model_stats(self) -> dict[str, Any]:
        return self._call("ModelStats", cpb.ModelStatsRequest(), convert.stats_from_pb)

    def _receive(self, method: Callable[..., Any], request: Any, tmp: Path, path: Path) -> tuple[Any, str, int]:
        """A download stream: its header message, then its data written to `tmp`; (header, sha256, size)."""
        try:
            stream = iter(method(request, timeout=max(self.timeout, 600), metadata=self._metadata))
            header = next(stream).header
            digest, size = _write_chunks(stream, tmp)
        except grpc.RpcError as exc:
            tmp.unlink(missing_ok=True)
            raise _translate(exc, self.address) from None
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InvalidRequest(f"cannot write {path}: {exc}") from None
        return header, digest, size

    def download_model(self, ref: str, path: Path, fmt: str = "") -> dict[str, Any]:
        """Write the model to `path` (a torch model's config goes to PATH.json); the sha256 is checked.

        Returns the version's record with "format", "sha256" and "size" of what was written.
        """
        request = _checked(convert.download_format_to_pb, fmt)
        request.ref = ref
        tmp = path.with_name(f".{path.name}.part")
        header, digest, size = self._receive(self._stub.DownloadModel, request, tmp, path)
        if digest != header.sha256 or size != header.size:
            tmp.unlink(missing_ok=True)
            got = f"{size} bytes, sha256 {digest[:12]}"
            raise DataLoss(f"the download of {ref} arrived damaged ({got}, expected {header.sha256[:12]})", "DATA_LOSS")
        tmp.replace(path)
        config = json.loads(header.config_json or "{}")
        if config:
            path.with_name(path.name + ".json").write_text(json.dumps(config, indent=1))
        fmt = convert.MODEL_FORMAT.from_pb(header.format, "format")
        return {**convert.model_from_pb(header.model), "format": fmt, "sha256": header.sha256, "size": size}

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """The files the job's tasks saved: name, kind, task_index (-1: the controller's), size, sha256, created_at."""
        return self._call("ListArtifacts", cpb.ListArtifactsRequest(job_id=job_id), _artifacts)

    def download_artifact(self, job_id: str, name: str, dest: Path, task: int | None = None) -> dict[str, Any]:
        """Write the job's artifact NAME to `dest` (a file path, or a directory to write NAME into).

        The sha256 is checked: a damaged or cut-short transfer raises and leaves no file behind. `task` picks
        among several tasks' artifacts of one name. Returns the artifact's record with "path" added.
        """
        request = cpb.DownloadArtifactRequest(job_id=job_id, name=name, task_index=task)
        path = dest / Path(name).name if dest.is_dir() else dest
        tmp = path.with_name(f".{path.name}.part")
        first, digest, size = self._receive(self._stub.DownloadArtifact, request, tmp, path)
        header = convert.artifact_from_pb(first)
        if digest != header["sha256"] or size != header["size"]:
            tmp.unlink(missing_ok=True)
            got = f"{size} bytes, sha256 {digest[:12]}"
            raise DataLoss(
                f"artifact {name} of job {job_id} arrived damaged ({got}; expected {header['size']} bytes, "
                f"sha256 {header['sha256'][:12]}): nothing was written",
                "DATA_LOSS",
            )
        tmp.replace(path)
        return {**header, "path": str(path)}

    def load_model(self, ref: str) -> Any:
        """A ready model: a scikit-learn estimator (skops, allow-listed types only) or a torch module."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="tensorfleet-model-") as tmpdir:
            path = Path(tmpdir) / "model"
            record = self.download_model(ref, path)
            return load_model_file(path, record["format"])

    def datasets(self) -> list[dict[str, Any]]:
        return self._call("ListDatasets", cpb.ListDatasetsRequest(), lambda r: [_dataset(d) for d in r.datasets])

    def preview_dataset(self, name: str, rows: int = 10) -> dict[str, Any]:
        """{"dataset": {...}, "columns": [...], "rows": [[...], ...]} (values as text, as in the file)."""
        return self._call("PreviewDataset", cpb.DatasetRequest(name=name, rows=rows), _preview)

    def delete_dataset(self, name: str) -> dict[str, Any]:
        """Refused while a job or a registered model refers to the dataset."""
        return self._call("DeleteDataset", cpb.DatasetRequest(name=name), _dataset)

    def workloads(self) -> list[dict[str, Any]]:
        return self._call("ListWorkloads", cpb.WorkloadsRequest(), lambda r: json.loads(r.workloads_json))

    def shutdown(self) -> None:
        """Stop the controller and its local agent (which lets its running tasks finish first)."""
        self._call("Shutdown", cpb.ShutdownRequest(), lambda r: None)

    def watch(self, job_id: str, after_seq: int = 0) -> Iterator[dict[str, Any]]:
        """Job events (job_state, task_state, progress, metric, log, artifact) until the job ends."""
        try:
            for msg in self._stub.WatchJob(_REQ["watch"](job_id, after_seq), metadata=self._metadata):
                yield convert.event_from_pb(msg)
        except grpc.RpcError as exc:
            raise _translate(exc, self.address) from None

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job ends (resuming the stream after a blip); returns the final job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        after = 0
        while True:
            try:
                for event in self.watch(job_id, after):
                    after = event["seq"]
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"job {job_id} still running after {timeout}s")
                job = self.job(job_id)
                if job["state"] in TERMINAL:
                    return job
            except ControllerUnreachable:
                if deadline is not None and time.monotonic() > deadline:
                    raise
                time.sleep(1.0)


class AsyncClient:
    """The asyncio twin of Client (same operations, awaitable)."""

    def __init__(self, address: str | None = None, timeout: float = 30.0) -> None:
        self.address = controller_address(address)
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub_: Any = None
        self._metadata: Metadata = ()

    async def _stub(self) -> Any:
        """Connect on first use: fetching and pinning a remote controller's certificate blocks (a thread)."""
        if self._stub_ is None:
            credentials, target, self._metadata = await asyncio.to_thread(channel_security, self.address)
            self._channel = create_channel(self.address, credentials, target)
            self._stub_ = cpb_grpc.ControllerServiceStub(self._channel)
        return self._stub_

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, request: Any, convert_fn: Callable[[Any], T]) -> T:
        stub = await self._stub()
        try:
            return convert_fn(await getattr(stub, method)(request, timeout=self.timeout, metadata=self._metadata))
        except grpc.RpcError as exc:
            raise _translate(exc, self.address) from None

    async def info(self) -> dict[str, Any]:
        return await self._call("GetInfo", _REQ["info"](), _info)

    async def submit(self, spec: dict[str, Any], who: str | None = None) -> dict[str, Any]:
        return await self._call("SubmitJob", _REQ["submit"](spec, who), convert.job_from_pb)

    async def jobs(self, states: tuple[str, ...] = (), limit: int = 0) -> list[dict[str, Any]]:
        return await self._call(
            "ListJobs", _REQ["jobs"](states, limit), lambda r: [convert.job_from_pb(j) for j in r.jobs]
        )

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._call("GetJob", _REQ["job"](job_id), convert.job_from_pb)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._call("CancelJob", _REQ["job"](job_id), convert.job_from_pb)

    async def pause(self, job_id: str) -> dict[str, Any]:
        return await self._call("PauseJob", _REQ["job"](job_id), convert.job_from_pb)

    async def resume(self, job_id: str) -> dict[str, Any]:
        return await self._call("ResumeJob", _REQ["job"](job_id), convert.job_from_pb)

    async def retry(self, job_id: str) -> dict[str, Any]:
        return await self._call("RetryJob", _REQ["job"](job_id), convert.job_from_pb)

    async def resubmit(self, job_id: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._call("ResubmitJob", _REQ["resubmit"](job_id, params), convert.job_from_pb)

    async def metrics(self, job_id: str, names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        return await self._call("GetMetrics", _REQ["metrics"](job_id, names), _metrics)

    async def logs(self, job_id: str, task: int | None = None) -> list[dict[str, Any]]:
        return await self._call("GetLogs", _REQ["logs"](job_id, task), _logs)

    async def agents(self, all: bool = False) -> list[dict[str, Any]]:
        """The agents; with all=True also the services this controller refuses (state REFUSED, `refused`)."""
        return await self._call("ListAgents", cpb.ListAgentsRequest(include_refused=all), _agents)

    async def add_agent(self, address: str) -> dict[str, Any]:
        return await self._call("AddAgent", _REQ["add_agent"](address), convert.agent_from_pb)

    async def remove_agent(self, agent: str) -> dict[str, Any]:
        return await self._call("RemoveAgent", _REQ["agent_ref"](agent), convert.agent_from_pb)

    async def drain_agent(self, agent: str) -> dict[str, Any]:
        return await self._call("DrainAgent", _REQ["agent_ref"](agent), convert.agent_from_pb)

    async def pair_agent(self, agent: str, token: str, force: bool = False) -> dict[str, Any]:
        return await self._call("PairAgent", _REQ["pair"](agent, token, force), convert.agent_from_pb)

    async def workloads(self) -> list[dict[str, Any]]:
        return await self._call("ListWorkloads", cpb.WorkloadsRequest(), lambda r: json.loads(r.workloads_json))

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
        request = _REQ["models"](name, algorithm, tag, alias, min_metric, page, limit)
        return await self._call("ListModels", request, _model_page)

    async def model(self, ref: str) -> dict[str, Any]:
        return await self._call("GetModel", _REQ["model"](ref), convert.model_from_pb)

    async def set_alias(self, ref: str, alias: str) -> dict[str, Any]:
        return await self._call("SetModelAlias", _REQ["alias"](ref, alias), convert.model_from_pb)

    async def tag_model(self, ref: str, tag: str) -> dict[str, Any]:
        return await self._call("TagModel", _REQ["tag"](ref, tag), convert.model_from_pb)

    async def remove_alias(self, name: str, alias: str) -> dict[str, Any]:
        return await self._call("RemoveModelAlias", _REQ["alias"](name, alias), convert.model_from_pb)

    async def delete_model(self, ref: str, force: bool = False) -> dict[str, Any]:
        return await self._call("DeleteModel", _REQ["delete_model"](ref, force), convert.model_from_pb)

    async def model_stats(self) -> dict[str, Any]:
        return await self._call("ModelStats", cpb.ModelStatsRequest(), convert.stats_from_pb)

    async def download_model(self, ref: str, path: Path, fmt: str = "") -> dict[str, Any]:
        """Client.download_model in a worker thread (a file transfer; the loop stays free)."""
        return await asyncio.to_thread(self._blocking, "download_model", ref, path, fmt)

    async def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        return await self._call("ListArtifacts", cpb.ListArtifactsRequest(job_id=job_id), _artifacts)

    async def download_artifact(self, job_id: str, name: str, dest: Path, task: int | None = None) -> dict[str, Any]:
        """Client.download_artifact in a worker thread (a file transfer; the loop stays free)."""
        return await asyncio.to_thread(self._blocking, "download_artifact", job_id, name, dest, task)

    async def datasets(self) -> list[dict[str, Any]]:
        return await self._call("ListDatasets", cpb.ListDatasetsRequest(), lambda r: [_dataset(d) for d in r.datasets])

    async def upload_dataset(self, path: Path, name: str | None = None) -> dict[str, Any]:
        """Client.upload_dataset in a worker thread (it hashes and streams the file)."""
        return await asyncio.to_thread(self._blocking, "upload_dataset", path, name)

    async def preview_dataset(self, name: str, rows: int = 10) -> dict[str, Any]:
        return await self._call("PreviewDataset", cpb.DatasetRequest(name=name, rows=rows), _preview)

    async def delete_dataset(self, name: str) -> dict[str, Any]:
        return await self._call("DeleteDataset", cpb.DatasetRequest(name=name), _dataset)

    def _blocking(self, method: str, *args: Any) -> Any:
        with Client(self.address, self.timeout) as client:
            return getattr(client, method)(*args)

    async def shutdown(self) -> None:
        await self._call("Shutdown", cpb.ShutdownRequest(), lambda r: None)

    async def watch(self, job_id: str, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        stub = await self._stub()
        try:
            async for msg in stub.WatchJob(_REQ["watch"](job_id, after_seq), metadata=self._metadata):
                yield convert.event_from_pb(msg)
        except grpc.RpcError as exc:
            raise _translate(exc, self.address) from None

    async def watch_agents(self) -> AsyncIterator[dict[str, Any]]:
        stub = await self._stub()
        try:
            async for msg in stub.WatchAgents(cpb.ListAgentsRequest(), metadata=self._metadata):
                yield convert.agent_event_from_pb(msg)
        except grpc.RpcError as exc:
            raise _translate(exc, self.address) from None

    async def wait(self, job_id: str) -> dict[str, Any]:
        after = 0
        while True:
            try:
                async for event in self.watch(job_id, after):
                    after = event["seq"]
                job = await self.job(job_id)
                if job["state"] in TERMINAL:
                    return job
            except ControllerUnreachable:
                await asyncio.sleep(1.0)
