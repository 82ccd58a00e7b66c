"""Jobs that read a dataset version, through a real controller and agents (issue 20): a script job names an
uploaded tree (with a chunked file) and reads it at TENSORFLEET_DATASET_DIR, read-only; its task's events say what
the controller sent the agent; a file:// reference is read from the shared folder, and once a file there changed
the job fails at once (no retry) naming it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json
from tensorfleet_agent.core.manifest import CHUNK_BYTES
from tensorfleet_desktop.client import Client
from tensorfleet_desktop.project import hash_cache

pytestmark = pytest.mark.slow

READER = """
import hashlib, os, stat
from tensorfleet_agent import task
root = task.dataset_dir()
for dirpath, dirs, files in sorted(os.walk(root)):
    for name in sorted(files):
        path = os.path.join(dirpath, name)
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()[:12]
        print("file", os.path.relpath(path, root), digest, oct(stat.S_IMODE(os.stat(path).st_mode)))
    print("dir", os.path.relpath(dirpath, root), oct(stat.S_IMODE(os.stat(dirpath).st_mode)))
"""


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # never the user's hash cache
    monkeypatch.setattr(hash_cache, "RACY_SECONDS", 0.0)


def _expected(root: Path) -> list[str]:
    import hashlib

    return sorted(
        f"file {p.relative_to(root).as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()[:12]} 0o444"
        for p in root.rglob("*")
        if p.is_file()
    )


def test_a_script_job_reads_an_uploaded_version_and_a_file_reference(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path
) -> None:
    controller, _ = shared_cluster
    pets = tmp_path / "pets"
    for label in ("cat", "dog"):
        (pets / label).mkdir(parents=True)
        (pets / label / "1.png").write_bytes(label.encode() * 50)
    (pets / "big.bin").write_bytes(os.urandom(CHUNK_BYTES + 5000))  # two chunks, assembled on the agent
    script = tmp_path / "read.py"
    script.write_text(READER)
    with Client(controller.address) as client:
        version = client.upload_dataset_version(pets, "pets")
        assert version["version"] == 1
    job = cli_json(controller.cli("submit", "--script", str(script), "--dataset", "pets", "--wait", "--json"))
    assert job["state"] == "SUCCEEDED", job
    with Client(controller.address) as client:
        detail = client.job(job["id"])
        assert detail["spec"]["dataset_version"]["content_id"] == version["content_id"]
        lines = [r["line"] for r in client.logs(job["id"])]
    assert sorted(line for line in lines if line.startswith("file ")) == _expected(pets), lines
    assert {line for line in lines if line.startswith("dir ")} == {"dir . 0o555", "dir cat 0o555", "dir dog 0o555"}
    assert any("dataset pets:v1: 3 file(s)" in line and "1 chunked file(s) assembled" in line for line in lines)
    events = json.loads(controller.cli("watch", job["id"], "--json").stdout)
    said = [e["message"] for e in events if e["kind"] == "task_state"]
    sending = [m for m in said if m.startswith("sending dataset pets:v1 to agent-")]
    sent = [m for m in said if m.startswith("sent dataset pets:v1 to agent-")]
    assert sending and sent and " blob(s), " in sent[0] and " bytes in " in sent[0], said

    share = tmp_path / "share"
    (share / "a").mkdir(parents=True)
    (share / "a" / "x.txt").write_text("shared\n")
    (share / "y.txt").write_text("why\n")
    with Client(controller.address) as client:
        ref = client.add_dataset_reference("nas", f"file://{share}")
        assert ref["version"] == 1 and ref["source"] == "file"
    (share / "y.txt").write_text("changed\n")  # after the snapshot, before any agent read it: version 1 is gone
    result = controller.cli("submit", "--script", str(script), "--dataset", "nas:1", "--wait", "--json")
    failed = json.loads(result.stdout)
    assert failed["state"] == "FAILED" and "1 file(s)" in failed["error"] and "y.txt" in failed["error"], failed
    events = json.loads(controller.cli("watch", failed["id"], "--json").stdout)
    placed = [e for e in events if e["kind"] == "task_state" and e["message"].startswith("placed on")]
    assert len(placed) == 1, placed  # permanent: not retried elsewhere

    with Client(controller.address) as client:
        assert client.add_dataset_reference("nas", f"file://{share}")["version"] == 2
    job = cli_json(controller.cli("submit", "--script", str(script), "--dataset", "nas", "--wait", "--json"))
    assert job["state"] == "SUCCEEDED", job
    with Client(controller.address) as client:
        lines = [r["line"] for r in client.logs(job["id"])]
    assert sorted(line for line in lines if line.startswith("file ")) == _expected(share), lines
