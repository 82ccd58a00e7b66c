"""Property tests against a live agent: any request message gets a clear status, never a crash or a hang.

A blob download must end in time, and a watch send its first message in time: the requests may name a blob the
agent holds and a task that has finished, so GetBlob and WatchTask get past their look-ups."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.agents import AgentProcess
from helpers.proto_fuzz import EXAMPLES, REFUSALS, call, message, methods
from helpers.waiting import eventually
from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent._generated import agent_pb2_grpc as pb_grpc
from tensorfleet_agent.core.types import TaskSpec
from tensorfleet_agent.identity import node_id_of_cert
from tensorfleet_agent.rpc.client import create_sync_channel, fetch_certificate_blocking, pinned_credentials

pytestmark = pytest.mark.slow

OK_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
}
texts = st.text(max_size=80) | st.sampled_from(["", "noop", "sleep", "a" * 64, "../../etc/passwd", "t-1"])
ints = st.integers(-(2**31), 2**31 - 1)
specs = st.builds(
    pb.TaskSpec,
    task_id=texts,
    job_id=texts,
    workload=st.sampled_from(["noop", "sleep", "emit", "fail", "random_forest", "nope", ""]),
    params_json=st.sampled_from(["", "{}", '{"seconds": 0.01}', '{"seconds": -1}', "[", '{"points": 3}', "null"]),
    rank=ints,
    world_size=ints,
    gpus=ints,
    timeout_seconds=st.floats(allow_nan=True),
    memory_limit_bytes=st.integers(-(2**63), 2**63 - 1),
    dataset=st.sampled_from(["", "iris", "mnist"]),
    partition=st.sampled_from(pb.TaskPartition.values()),
)


class _Session(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds a paired controller's session to every call, so the fuzzing reaches the handlers."""

    def __init__(self, token: str) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_Details(details, self.metadata), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_Details(details, self.metadata), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(_Details(details, self.metadata), request_iterator)

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(_Details(details, self.metadata), request_iterator)


class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, base: Any, metadata: Any) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = base.compression


KNOWN: list[str] = []  # a blob the agent holds and a task that has finished, once the agent runs


async def _session(agent: AgentProcess) -> str:
    """A paired controller's session; on the way, the objects KNOWN names."""
    async with agent.client() as client:
        token = await client.authenticate()
        blob = await client.put_bytes(os.urandom(300_000))  # a few chunks

        async def finished() -> bool:
            return any(t.task_id == "fuzz-done" and t.state.terminal for t in await client.list_tasks(True))

        await client.run_task(TaskSpec("fuzz-done", "fuzz", "noop"))
        await eventually(finished, 30, "the noop task to finish")
        KNOWN[:] = [blob, "fuzz-done"]
        return token


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    """A paired controller's channel to a live agent."""
    agent = AgentProcess(Path(tmp_path_factory.mktemp("fuzz")) / "agent", cpu_slots=2).start()
    cert = fetch_certificate_blocking(agent.address)
    channel = create_sync_channel(agent.address, pinned_credentials(cert), node_id_of_cert(cert)[0])
    yield grpc.intercept_channel(channel, _Session(asyncio.run(_session(agent))))
    channel.close()
    KNOWN.clear()
    agent.stop()
    assert "Traceback" not in agent.logs(), agent.logs()


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.AgentServiceStub:
    return pb_grpc.AgentServiceStub(channel)


SERVICE = pb.DESCRIPTOR.services_by_name["AgentService"]
# FetchBlob / PushBlob dial the URL they are given: proto_fuzz only generates loopback or unusable ones.
GENERIC = [m.name for m in methods(SERVICE)]


@pytest.mark.parametrize("name", GENERIC)
def test_every_method_answers_or_refuses_with_a_reason(channel: grpc.Channel, name: str) -> None:
    method = SERVICE.methods_by_name[name]
    requests = message(method.input_type, known=KNOWN)
    strategy = st.lists(requests, max_size=4) if method.client_streaming else requests
    timeout = 5.0 if method.server_streaming else 10.0  # a stream ends or a watch's first message comes, in time

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=strategy)
    def fuzz(request: object) -> None:
        code = call(channel, SERVICE, method, request, timeout)
        assert code is grpc.StatusCode.OK or code in OK_CODES | REFUSALS, f"{name} answered {code.name}"

    fuzz()
    assert call(channel, SERVICE, SERVICE.methods_by_name["GetInfo"], pb.GetInfoRequest(), 10.0) is grpc.StatusCode.OK


def _code(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(version=st.sampled_from([0, 1, 2, -1]), spec=specs)
def test_run_task(stub: pb_grpc.AgentServiceStub, version: int, spec: pb.TaskSpec) -> None:
    code = _code(lambda: stub.RunTask(pb.RunTaskRequest(protocol_version=version, spec=spec), timeout=10))
    assert code in OK_CODES
    if code is grpc.StatusCode.OK:
        stub.CancelTask(pb.CancelTaskRequest(task_id=spec.task_id), timeout=10)


@FUZZ
@given(task_id=texts, after=st.integers(-(2**63), 2**63 - 1), reason=st.text(max_size=5000))
def test_watch_and_cancel(stub: pb_grpc.AgentServiceStub, task_id: str, after: int, reason: str) -> None:
    assert (
        _code(lambda: list(stub.WatchTask(pb.WatchTaskRequest(task_id=task_id, after_seq=after), timeout=10)))
        in OK_CODES
    )
    assert _code(lambda: stub.CancelTask(pb.CancelTaskRequest(task_id=task_id, reason=reason), timeout=10)) in OK_CODES


@FUZZ
@given(
    digests=st.lists(texts, max_size=5),
    offset=st.integers(-(2**63), 2**63 - 1),
    period=st.floats(allow_nan=True, allow_infinity=True),
)
def test_blobs_and_telemetry(stub: pb_grpc.AgentServiceStub, digests: list[str], offset: int, period: float) -> None:
    assert _code(lambda: stub.HasBlobs(pb.HasBlobsRequest(sha256=digests), timeout=10)) in OK_CODES
    for digest in digests[:2]:
        assert (
            _code(lambda d=digest: list(stub.GetBlob(pb.GetBlobRequest(sha256=d, offset=offset), timeout=10)))
            in OK_CODES
        )

    def one_sample() -> None:
        for _ in stub.StreamTelemetry(pb.TelemetryRequest(period_seconds=period), timeout=10):
            break

    assert _code(one_sample) in OK_CODES | {grpc.StatusCode.CANCELLED}


@FUZZ
@given(
    chunks=st.lists(
        st.one_of(
            st.builds(pb.BlobChunk, header=st.builds(pb.BlobHeader, sha256=texts, size=st.integers(-10, 10**12))),
            st.builds(pb.BlobChunk, data=st.binary(max_size=64)),
        ),
        max_size=4,
    )
)
def test_put_blob(stub: pb_grpc.AgentServiceStub, chunks: list[pb.BlobChunk]) -> None:
    assert _code(lambda: stub.PutBlob(iter(chunks), timeout=10)) in OK_CODES
    assert _code(lambda: stub.GetInfo(pb.GetInfoRequest(), timeout=10)) is grpc.StatusCode.OK
