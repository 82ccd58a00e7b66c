"""A relative --data-dir means a folder below the working directory, in every URI built from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tensorfleet_desktop.controller.settings import resolve_uris
from tensorfleet_desktop.controller.store import SqliteJobStore, open_store


def test_a_relative_data_dir_gives_uris_inside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store, blobs = resolve_uris(Path("data"))
    assert store == f"sqlite://{tmp_path / 'data' / 'tensorfleet.db'}"
    assert blobs == f"file://{tmp_path / 'data' / 'blobs'}"


def test_the_store_uri_shows_the_path_it_opens(tmp_path: Path) -> None:
    """sqlite:// then the absolute path, as file:// URIs read: never sqlite://///path."""
    db = tmp_path / "data" / "tensorfleet.db"
    store, _ = resolve_uris(tmp_path / "data")
    assert store == f"sqlite://{db}"
    for written in (store, f"sqlite:///{db}", f"sqlite:{db}"):  # SQLAlchemy writes four slashes
        opened = open_store(written)
        assert isinstance(opened, SqliteJobStore)
        assert (opened.uri, str(opened.path)) == (f"sqlite://{db}", str(db)), written


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_only_a_data_dir_of_our_own_is_tightened(tmp_path: Path) -> None:
    """A new dir, or one holding nothing but TensorFleet's files, becomes 0700; a dir holding other things (a home
    directory given as --data-dir) keeps its mode, with a warning."""
    from tensorfleet_agent.security.files import make_data_dir, tighten_data_dir

    new = tmp_path / "new" / "controller"
    assert make_data_dir(new) is True and _mode(new) == 0o700
    ours, home = tmp_path / "ours", tmp_path / "home"
    for folder, entries in ((ours, ["lock", "identity", "tensorfleet.db"]), (home, ["lock", ".bashrc", "notes"])):
        folder.mkdir()
        folder.chmod(0o755)
        for name in entries:
            (folder / name).touch()
        assert make_data_dir(folder) is False
    assert tighten_data_dir(ours, created=False) == "" and _mode(ours) == 0o700
    warning = tighten_data_dir(home, created=False)
    assert _mode(home) == 0o755 and "not changing its mode" in warning and ".bashrc" in warning


async def test_a_refused_second_controller_changes_nothing_in_the_data_dir(tmp_path: Path) -> None:
    from tensorfleet_agent.datadir_lock import DataDirInUse, DataDirLock
    from tensorfleet_desktop.controller.app import ControllerApp, ControllerConfig

    data_dir = tmp_path / "controller"
    data_dir.mkdir()
    data_dir.chmod(0o755)  # an older version's, say
    held = DataDirLock(data_dir, "tensorfleet serve")
    held.acquire()
    try:
        app = ControllerApp(ControllerConfig(data_dir=data_dir, mdns=False, local_agent=False))
        with pytest.raises(DataDirInUse):
            await app.start()
        assert _mode(data_dir) == 0o755  # the holder's dir: not chmod-ed by the process it refused
        assert sorted(p.name for p in data_dir.iterdir()) == ["lock"]
    finally:
        held.release()


OTHER_USER = """
import os, sys
from tensorfleet_desktop import cli
# imported as root: the venv and the python install may be closed to nobody
import asyncio, fractions, signal, statistics
from tensorfleet_agent import logging_setup
from tensorfleet_agent.discovery import interfaces
from tensorfleet_desktop import client
from tensorfleet_desktop.controller import app, local_agent, settings
from tensorfleet_desktop.cli import output  # rich: `serve` imports it only to print
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([]); os.setgid(gid); os.setuid(uid)
sys.exit(cli.main(["serve", "--data-dir", sys.argv[3], "--no-mdns", "--no-local-agent", "--port", "0"]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="running serve as another OS user needs root (CI runs as root)")
def test_a_data_dir_of_another_user_is_refused_with_a_sentence(tmp_path: Path) -> None:
    """As nobody: serve on root's 0700 dir (its config cannot even be looked for) and on root's 0755 dir."""
    import pwd
    import subprocess
    import sys
    import tempfile

    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="tf-other-user-"))  # pytest's tmp_path is under a 0700 dir nobody cannot enter
    top.chmod(0o755)
    for mode in (0o700, 0o755):
        data_dir = top / f"root-{mode:o}"
        data_dir.mkdir()
        data_dir.chmod(mode)
        result = subprocess.run(
            [sys.executable, "-c", OTHER_USER, str(nobody.pw_uid), str(nobody.pw_gid), str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent", "XDG_RUNTIME_DIR": "/nonexistent"},
            check=False,
        )
        out = result.stdout + result.stderr
        assert result.returncode in (1, 2) and "Traceback" not in out, out
        assert f"the data dir {data_dir} belongs to another user (uid 0)" in out, out
        assert _mode(data_dir) == mode and list(data_dir.iterdir()) == []
        data_dir.rmdir()
    top.rmdir()
