"""Connection files: where they live, who can read them, and that a dead controller's file is never used."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tensorfleet_desktop import connection


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("TENSORFLEET_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("TENSORFLEET_CONTROLLER_TOKEN", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_runtime_dir_is_the_users_own(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = home / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert connection.runtime_dir() == runtime / "tensorfleet"


def test_an_unusable_runtime_dir_falls_back_to_a_private_one_in_the_data_dir(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = home / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could plant or swap files here
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    assert connection.runtime_dir() == home / "data" / "tensorfleet" / "runtime"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    if not Path(f"/run/user/{os.getuid()}").is_dir():  # CI as root: no /run/user/0, never /tmp/runtime-0
        assert connection.runtime_dir() == home / "data" / "tensorfleet" / "runtime"
    path = connection.write_connection("127.0.0.1:50050", "ab" * 32, "tfc-token")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_written_0600_in_a_0700_dir_tightening_an_old_one(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = home / "runtime"
    folder.mkdir(mode=0o755)
    monkeypatch.setenv("TENSORFLEET_RUNTIME_DIR", str(folder))
    path = connection.write_connection("127.0.0.1:50123", "ab" * 32, "tfc-token")
    assert path == folder / "controller-127.0.0.1-50123.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {
        "address": "127.0.0.1:50123",
        "fingerprint": "ab" * 32,
        "token": "tfc-token",
        "pid": os.getpid(),
        "tls": False,
    }
    assert connection.client_token("localhost:50123") == ("tfc-token", str(path))  # another loopback name
    assert connection.client_token("127.0.0.1:50124") == ("", "")  # another port
    monkeypatch.setenv("TENSORFLEET_CONTROLLER_TOKEN", "tfc-from-env")
    assert connection.client_token("127.0.0.1:50123") == ("tfc-from-env", "TENSORFLEET_CONTROLLER_TOKEN")
    connection.remove_connection(path)
    assert not path.exists()


def test_a_dead_controllers_file_is_ignored_then_overwritten(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = home / "runtime"
    monkeypatch.setenv("TENSORFLEET_RUNTIME_DIR", str(folder))
    folder.mkdir(mode=0o700)
    stale = folder / "controller-127.0.0.1-50050.json"
    other = folder / "controller-127.0.0.1-50051.json"
    for path in (stale, other):
        body = {"address": "127.0.0.1:50050", "fingerprint": "", "token": "tfc-old", "pid": _dead_pid()}
        path.write_text(json.dumps(body))
    assert connection.read_connection(stale) is None
    assert connection.client_token("127.0.0.1:50050") == ("", "")
    connection.write_connection("127.0.0.1:50050", "", "tfc-new")
    assert connection.client_token("127.0.0.1:50050")[0] == "tfc-new"
    assert not other.exists()  # swept when a controller writes its own


def test_a_wildcard_controller_is_found_from_loopback_only(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORFLEET_RUNTIME_DIR", str(home / "runtime"))
    connection.write_connection("0.0.0.0:50050", "", "tfc-any")
    assert connection.client_token("127.0.0.1:50050")[0] == "tfc-any"
    assert connection.client_token("192.0.2.7:50050") == ("", "")  # never another host's token by port alone


def test_a_tls_controller_on_loopback_is_dialled_over_tls_pinned_to_its_connection_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve --host 0.0.0.0 speaks TLS on 127.0.0.1 too: its connection file says so, and the client dials TLS
    pinned to the file's fingerprint; a certificate other than the file's gets no token, even from the env."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from tensorfleet_agent.identity import load_or_create_identity
    from tensorfleet_agent.rpc.client import create_sync_channel
    from tensorfleet_agent.rpc.server import tls_server_credentials
    from tensorfleet_desktop.client import InvalidRequest, channel_security

    monkeypatch.setenv("TENSORFLEET_RUNTIME_DIR", str(home / "runtime"))
    monkeypatch.setenv("TENSORFLEET_KNOWN_CONTROLLERS", str(home / "known.json"))
    identity = load_or_create_identity(home / "identity", "controller")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", tls_server_credentials(identity.key_pem, identity.cert_pem))
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        path = connection.write_connection(f"0.0.0.0:{port}", identity.fingerprint, "tfc-tls", tls=True)
        named = connection.read_connection(path)
        assert named is not None and named.tls
        credentials, target, metadata = channel_security(address)
        assert credentials is not None and metadata == (("authorization", "Bearer tfc-tls"),)
        channel = create_sync_channel(address, credentials, target)
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        finally:
            channel.close()
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        monkeypatch.setenv("TENSORFLEET_CONTROLLER_TOKEN", "tfc-from-env")
        connection.write_connection(f"0.0.0.0:{port}", "cd" * 32, "tfc-tls", tls=True)  # names another certificate
        with pytest.raises(InvalidRequest, match="presents certificate"):
            channel_security(address)
        assert not (home / "known.json").exists()  # loopback pins by the connection file, not on first use
    finally:
        server.stop(None)
