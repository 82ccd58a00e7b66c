"""Every ControllerService method, fed generated requests (and job specs) against a live controller: each
answer is a result or a refusal with a reason, never a crash, a hang or a dead controller. A download must end in
time; a watch must send its first message in time (the fleet holds a remembered agent, and the requests may name
a job that has ended, so WatchAgents and WatchJob always have something to say).

A few dozen examples per method in CI; TENSORFLEET_FUZZ_EXAMPLES=10000 for the long run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.controller import ControllerProcess
from helpers.proto_fuzz import EXAMPLES, REFUSALS, call, message, methods
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_desktop.connection import client_token
from tensorfleet_desktop.controller.security import CREDENTIAL_METHODS
from tensorfleet_desktop.controller.store import open_store

pytestmark = pytest.mark.slow
SERVICE = cpb.DESCRIPTOR.services_by_name["ControllerService"]
# Shutdown does what it says (stops the controller): it is called once, last, on purpose.
FUZZED = [m.name for m in methods(SERVICE, skip=("Shutdown",))]


async def _remember_an_agent(data_dir: Path) -> None:
    """A manually added agent from an earlier run, down now: the fleet is never empty."""
    store = open_store(f"sqlite://{data_dir / 'tensorfleet.db'}")
    await store.open()
    store.save_agent("f" * 64, {"address": "127.0.0.1:1", "source": "manual", "name": "fuzz-remembered"})
    await store.close()


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    data_dir = Path(tmp_path_factory.mktemp("controller-fuzz")) / "controller"
    data_dir.mkdir()
    asyncio.run(_remember_an_agent(data_dir))
    proc = ControllerProcess(data_dir, ["--no-mdns"]).start()
    yield proc
    proc.stop()
    assert "Traceback" not in proc.logs(), proc.logs()[-5000:]


@pytest.fixture(scope="module")
def token(controller: ControllerProcess) -> tuple[tuple[str, str], ...]:
    """The client token every ControllerService call needs (the connection file the controller wrote)."""
    return (("authorization", f"Bearer {client_token(controller.address)[0]}"),)


@pytest.fixture(scope="module")
def channel(controller: ControllerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(controller.address) as ch:
        yield ch


@pytest.fixture
def known(channel: grpc.Channel, token: tuple[tuple[str, str], ...], name: str) -> tuple[str, ...]:
    """Names the requests use besides generated ones: for a method that takes a job id, a job that has ended
    (cancelled while queued; a fresh one per method, so no earlier method has revived it), whose watch replays
    its history and ends."""
    if "job_id" not in SERVICE.methods_by_name[name].input_type.fields_by_name:
        return ()

    def rpc(name: str, request: Message, out: type[Message]) -> Any:
        unary = channel.unary_unary(
            f"/{SERVICE.full_name}/{name}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=out.FromString,
        )
        return unary(request, timeout=10, metadata=token)

    job = rpc("SubmitJob", cpb.SubmitJobRequest(spec_json=json.dumps({"algorithm": "noop"})), cpb.Job)
    assert rpc("CancelJob", cpb.JobRef(job_id=job.id), cpb.Job).state == cpb.JOB_STATE_CANCELLED
    return (job.id,)


@pytest.mark.parametrize("name", FUZZED)
def test_every_method_answers_or_refuses_with_a_reason(
    channel: grpc.Channel, token: tuple[tuple[str, str], ...], known: tuple[str, ...], name: str
) -> None:
    method = SERVICE.methods_by_name[name]
    requests = message(method.input_type, known=known)
    strategy = st.lists(requests, max_size=4) if method.client_streaming else requests
    timeout = 5.0 if method.server_streaming else 10.0  # a stream ends or a watch's first message comes, in time

    # JoinCluster is authenticated by the join credential in its request, not the client token: a bad one is refused
    # UNAUTHENTICATED (controller/security.py, CREDENTIAL_METHODS)
    by_credential = f"/{SERVICE.full_name}/{name}" in CREDENTIAL_METHODS
    refusals = REFUSALS | ({grpc.StatusCode.UNAUTHENTICATED} if by_credential else set())

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=strategy)
    def fuzz(request: object) -> None:
        code = call(channel, SERVICE, method, request, timeout, token)
        assert code is grpc.StatusCode.OK or code in refusals, f"{name} answered {code.name}"

    fuzz()
    info = SERVICE.methods_by_name["GetInfo"]
    assert call(channel, SERVICE, info, cpb.ControllerInfoRequest(), 10.0, token) is grpc.StatusCode.OK


def test_shutdown_stops_the_controller_cleanly(
    controller: ControllerProcess, channel: grpc.Channel, token: tuple[tuple[str, str], ...]
) -> None:
    shutdown = SERVICE.methods_by_name["Shutdown"]
    request = cpb.ShutdownRequest()
    assert call(channel, SERVICE, shutdown, request, 10.0, token) is grpc.StatusCode.OK
    assert controller.proc is not None
    assert controller.proc.wait(30) == 0
