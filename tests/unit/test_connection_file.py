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
