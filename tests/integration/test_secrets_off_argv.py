"""No secret on a command line or in a log: the desktop app's controller on MongoDB (with a password) and S3 (with
keys) gets them from the 0600 config file Settings writes, so `ps` and the logs never show them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.servers import S3_KEY, S3_SECRET, ServerProcess, free_port, start_nanio, start_secantus
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client
from tensorfleet_desktop.controller.settings import FileSettings, save_settings
from tensorfleet_desktop.local_cluster import connect_or_start

pytestmark = pytest.mark.slow

MONGO_PASSWORD = "mongo-pw-7Hq2xZ"


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(store URI with a password, blobs URI): SecantusDB with a user, nanio with keys."""
    import pymongo

    mongo, uri = start_secantus(tmp_path / "mongo")
    s3: ServerProcess | None = None
    try:
        admin: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)  # type: ignore[type-arg]
        admin.admin.command("createUser", "tf", pwd=MONGO_PASSWORD, roles=["root"])
        admin.close()
        s3, endpoint = start_nanio(tmp_path / "s3")
        store = f"mongodb://tf:{MONGO_PASSWORD}@{uri.removeprefix('mongodb://')}/tensorfleet?authSource=admin"
        yield store, f"s3://secret-test?endpoint={endpoint}&secure=false"
    finally:
        mongo.stop()
        if s3 is not None:
            s3.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    done, _status = os.waitpid(pid, os.WNOHANG)
    return done == 0


def test_the_apps_controller_keeps_store_and_s3_secrets_off_argv_and_out_of_logs(
    backends: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, blobs = backends
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TENSORFLEET_MONGODB_URI"):
        monkeypatch.delenv(name, raising=False)  # the config file is the only source of the secrets
    data_dir = tmp_path / "controller"
    # what Settings saves, then how the window starts its controller
    save_settings(data_dir / "config.toml", FileSettings(store, blobs, S3_KEY, S3_SECRET))
    address = f"127.0.0.1:{free_port()}"
    connection = asyncio.run(
        connect_or_start(address, data_dir, ("--telemetry-period", "1", "--no-mdns"), timeout=60, local_address=address)
    )
    secrets = (MONGO_PASSWORD, S3_SECRET, S3_KEY)
    try:
        assert connection.started
        with Client(address) as client:
            info = client.info()
        assert info["store"].startswith("mongodb://tf:***@") and info["blobs"].startswith("s3://secret-test")
        command_lines = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        mine = [line for line in command_lines.splitlines() if str(data_dir) in line]
        assert len(mine) >= 2, command_lines  # the controller and its local agent
        for secret in secrets:
            assert secret not in command_lines
        with Client(address) as client:
            client.shutdown()
        wait_until(lambda: not _alive(connection.pid), 60, "the controller to exit")
    finally:
        if _alive(connection.pid):
            os.killpg(connection.pid, signal.SIGKILL)
    logs = [data_dir / "serve.log", data_dir / "local-agent.log"]
    said = "".join(path.read_text(errors="replace") for path in logs)
    assert "controller serving ControllerService" in said
    for secret in secrets:
        assert secret not in said
