"""Every ControllerService method, fed generated requests (and job specs) against a live controller: each
answer is a result or a refusal with a reason, never a crash, a hang or a dead controller.

A few dozen examples per method in CI; TENSORFLEET_FUZZ_EXAMPLES=10000 for the long run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.controller import ControllerProcess
from helpers.proto_fuzz import EXAMPLES, REFUSALS, call, message, methods
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_desktop.connection import client_token

pytestmark = pytest.mark.slow
SERVICE = cpb.DESCRIPTOR.services_by_name["ControllerService"]
# Shutdown does what it says (stops the controller): it is called once, last, on purpose.
FUZZED = [m.name for m in methods(SERVICE, skip=("Shutdown",))]


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(Path(tmp_path_factory.mktemp("controller-fuzz")) / "controller", ["--no-mdns"]).start()
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


@pytest.mark.parametrize("name", FUZZED)
def test_every_method_answers_or_refuses_with_a_reason(
    channel: grpc.Channel, token: tuple[tuple[str, str], ...], name: str
) -> None:
    method = SERVICE.methods_by_name[name]
    requests = message(method.input_type)
    strategy = st.lists(requests, max_size=4) if method.client_streaming else requests
    examples = min(EXAMPLES, 6) if method.server_streaming else EXAMPLES  # a watch may wait out its deadline
    timeout = 1.0 if method.server_streaming else 10.0

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=strategy)
    def fuzz(request: object) -> None:
        code = call(channel, SERVICE, method, request, timeout, token)
        assert code is grpc.StatusCode.OK or code in REFUSALS, f"{name} answered {code.name}"

    fuzz()
    info = SERVICE.methods_by_name["GetInfo"]
    assert call(channel, SERVICE, info, cpb.ControllerInfoRequest(), 10.0, token) is grpc.StatusCode.OK


def test_shutdown_stops_the_controller_cleanly(
    controller: ControllerProcess, channel: grpc.Channel, token: tuple[tuple[str, str], ...]
) -> None:
    shutdown = SERVICE.methods_by_name["Shutdown"]
    request = cpb.ShutdownRequest(stop_local_agent=True)
    assert call(channel, SERVICE, shutdown, request, 10.0, token) is grpc.StatusCode.OK
    assert controller.proc is not None
    assert controller.proc.wait(30) == 0
