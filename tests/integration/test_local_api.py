"""The controller API needs the client token on loopback too: a plain client generated from proto/ without it is
refused with a message saying where the token lives, the same OS user finds it in the connection file, another
OS user cannot, and only the standard health service is open."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from helpers.controller import ControllerProcess
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent._generated import controller_pb2_grpc as cpb_grpc
from tensorfleet_desktop import connection
from tensorfleet_desktop.client import Client, InvalidRequest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(Path(tmp_path_factory.mktemp("local-api")) / "controller", ["--no-mdns"]).start()
    yield proc
    proc.stop()


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_a_plain_grpc_client_needs_the_token_on_loopback(controller: ControllerProcess) -> None:
    path = connection.connection_path(controller.address)
    with grpc.insecure_channel(controller.address) as channel:
        stub = cpb_grpc.ControllerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListJobs(cpb.ListJobsRequest(), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        message = refused.value.details()
        assert str(path) in message, message  # where the token lives
        assert str(controller.data_dir / "client.token") in message and "TENSORFLEET_CONTROLLER_TOKEN" in message
        with pytest.raises(grpc.RpcError) as wrong:
            stub.SubmitJob(cpb.SubmitJobRequest(spec_json="{}"), timeout=10, metadata=_bearer("not-the-token"))
        assert wrong.value.code() is grpc.StatusCode.UNAUTHENTICATED

        token = json.loads(path.read_text())["token"]
        assert stub.ListJobs(cpb.ListJobsRequest(), timeout=10, metadata=_bearer(token)).jobs == []
        assert token == (controller.data_dir / "client.token").read_text().strip()  # the same across restarts

        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # the one open service

        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as hidden:
            list(reflect.ServerReflectionInfo(iter([ask]), timeout=10))
        assert hidden.value.code() is grpc.StatusCode.UNAUTHENTICATED
        listed = next(iter(reflect.ServerReflectionInfo(iter([ask]), timeout=10, metadata=_bearer(token))))
        assert "tensorfleet.v1.ControllerService" in {s.name for s in listed.list_services_response.service}


def test_the_connection_file_is_private_and_names_its_address(controller: ControllerProcess) -> None:
    path = connection.connection_path(controller.address)
    body = json.loads(path.read_text())
    assert body["address"] == controller.address and body["pid"] == controller.info["pid"]
    with Client(controller.address) as client:  # the SDK finds it by the address it dials, no setup
        info = client.info()
    assert body["fingerprint"] == info["fingerprint"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and path.parent.stat().st_uid == os.getuid()
    assert stat.S_IMODE((controller.data_dir / "client.token").stat().st_mode) == 0o600
    assert not list(path.parent.glob(".controller-*.tmp"))  # written whole, then renamed


def test_the_environment_token_overrides_the_connection_file(
    controller: ControllerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = json.loads(connection.connection_path(controller.address).read_text())["token"]
    monkeypatch.setenv("TENSORFLEET_CONTROLLER_TOKEN", "tfc-stale-token")
    with Client(controller.address) as client, pytest.raises(InvalidRequest) as refused:
        client.jobs()
    assert refused.value.code == "UNAUTHENTICATED" and "TENSORFLEET_CONTROLLER_TOKEN" in str(refused.value)
    monkeypatch.setenv("TENSORFLEET_RUNTIME_DIR", str(tmp_path / "elsewhere"))  # no connection file here
    monkeypatch.setenv("TENSORFLEET_CONTROLLER_TOKEN", token)
    with Client(controller.address) as client:
        assert client.jobs() == []


OTHER_USER = """
import os, sys
from pathlib import Path
import grpc
from tensorfleet_desktop.client import Client, TensorFleetError
uid, gid, path, address = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
os.setgroups([]); os.setgid(gid); os.setuid(uid)   # everything below runs as that user
try:
    path.read_text()
    print("READ THE CONNECTION FILE")
except PermissionError:
    print("file: permission denied")
try:
    with Client(address, timeout=10) as client:
        client.jobs()
    print("ACCEPTED")
except TensorFleetError as exc:
    print("refused:", exc.code)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="running a client as another OS user needs root (CI runs as root)")
def test_another_os_user_is_refused(controller: ControllerProcess) -> None:
    """Imports happen as root (the venv may live where `nobody` cannot read), then the process drops to
    nobody before it touches the connection file or the controller."""
    nobody = pwd.getpwnam("nobody")
    path = connection.connection_path(controller.address)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": nobody.pw_dir,
        "TENSORFLEET_RUNTIME_DIR": str(path.parent),  # even pointed at the owner's directory
        "TENSORFLEET_KNOWN_CONTROLLERS": "/nonexistent/known.json",
    }
    ids = [str(nobody.pw_uid), str(nobody.pw_gid)]
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(OTHER_USER), *ids, str(path), controller.address],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["file: permission denied", "refused: UNAUTHENTICATED"], result.stdout


def test_a_clean_stop_removes_the_connection_file(controller: ControllerProcess) -> None:
    """Last in this module: it stops the module's controller."""
    path = connection.connection_path(controller.address)
    assert connection.read_connection(path) is not None
    controller.stop()
    assert not path.exists()
