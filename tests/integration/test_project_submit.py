"""Project jobs through a real controller and the SDK (issue 19): `submit_project` uploads only what the
controller lacks (an unchanged re-submit 0 bytes, a one-line change one file) and the job carries its project's
git state; a spec naming a manifest or files the controller does not hold is refused with what is missing; an
agent's env cache is listed and pruned through the controller, an unknown agent is NOT_FOUND; and a project job
runs on the controller's local agent: PREPARING, its environment on the task, its outputs as artifacts."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from helpers.controller import ControllerProcess
from helpers.project_tree import git, write_tree
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent._generated import controller_pb2_grpc as cpb_grpc
from tensorfleet_agent.core.manifest import manifest_bytes
from tensorfleet_desktop import connection
from tensorfleet_desktop.client import Client, InvalidRequest, NotFound
from tensorfleet_desktop.project import snapshot

pytestmark = pytest.mark.slow

NOWHERE = {"on": ["no-such-agent"]}  # a job that stays queued: what these tests look at is its submit


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(Path(tmp_path_factory.mktemp("project-submit")) / "controller", ["--no-mdns"])
    proc.local_agent = True
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # never the user's hash cache


def _project(root: Path) -> Path:
    return write_tree(
        root,
        {
            "pkg/__init__.py": "",
            "pkg/train.py": "import sys\n\nLR = 3e-4\nprint('training', LR, sys.argv[1:])\n",
            "pkg/model.py": "WIDTH = 64\n" * 200,
            "requirements.txt": "numpy\n",
            ".gitignore": "*.log\n",
            "run.log": "ignored\n",
        },
    )


def test_a_resubmit_uploads_nothing_and_a_one_line_change_one_file(
    controller: ControllerProcess, tmp_path: Path
) -> None:
    root = _project(tmp_path / "trainer")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    commit = git(root, "rev-parse", "HEAD").strip()
    with Client(controller.address) as client:
        first = client.submit_project(root, ["python", "-m", "pkg.train", "--lr", "3e-4"], constraints=NOWHERE)
        files = {p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts and p.suffix != ".log"}
        assert first["upload"] == {
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
            "uploaded_files": len(files),
            "uploaded_bytes": sum(p.stat().st_size for p in files),
        }
        assert first["name"] == "trainer" and first["algorithm"] == "project" and first["state"] == "QUEUED"
        project = first["project"]
        assert project["command"] == ["python", "-m", "pkg.train", "--lr", "3e-4"] and project["env"] == "auto"
        assert (project["files"], project["git"]["commit"], project["git"]["branch"], project["git"]["dirty"]) == (
            len(files),
            commit,
            "main",
            False,
        )
        assert client.job(first["id"])["project"] == project  # as status shows it

        again = client.submit_project(root, "python -m pkg.train --lr 3e-4", constraints=NOWHERE)
        assert again["upload"]["uploaded_files"] == again["upload"]["uploaded_bytes"] == 0
        assert again["project"]["manifest_id"] == project["manifest_id"]

        train = root / "pkg" / "train.py"
        train.write_text(train.read_text().replace("LR = 3e-4", "LR = 1e-3"))
        changed = client.submit_project(
            root, ["python", "-m", "pkg.train"], env="requirements.txt", constraints=NOWHERE
        )
        assert changed["upload"]["uploaded_files"] == 1
        assert changed["upload"]["uploaded_bytes"] == train.stat().st_size
        assert changed["project"]["git"]["dirty"] is True and "LR = 1e-3" in changed["project"]["git"]["diff"]
        assert changed["project"]["env"] == "requirements.txt"

        with pytest.raises(InvalidRequest, match="command: is empty"):
            client.submit_project(root, [])
        with pytest.raises(InvalidRequest, match="left out of the snapshot"):
            client.submit_project(root, ["python", "x.py"], env="run.log")
        for job in (first, again, changed):
            client.cancel(job["id"])


def _auth(controller: ControllerProcess) -> tuple[tuple[str, str]]:
    token = json.loads(connection.connection_path(controller.address).read_text())["token"]
    return (("authorization", f"Bearer {token}"),)


def test_a_spec_naming_what_the_controller_lacks_is_refused_clearly(
    controller: ControllerProcess, tmp_path: Path
) -> None:
    root = _project(tmp_path / "proj")
    with Client(controller.address) as client:
        uploaded = client.upload_project(root)
        spec = {
            "algorithm": "project",
            "project": {"manifest_id": "0" * 64, "files": 1, "bytes": 1, "env": "auto"},
            "command": ["python", "-m", "pkg.train"],
        }
        with pytest.raises(InvalidRequest, match="has no manifest 000000000000: upload the project first"):
            client.submit(spec)

        # A manifest the controller holds, listing two files it never received.
        write_tree(root, {"pkg/extra.py": "EXTRA = 1\n", "pkg/more.py": "MORE = 2\n"})
        snap = snapshot(root, with_git=False)
        data = manifest_bytes(snap.entries)
        assert hashlib.sha256(data).hexdigest() == snap.id
        channel = grpc.insecure_channel(controller.address)
        with channel:
            stub = cpb_grpc.ControllerServiceStub(channel)
            parts = [
                cpb.ProjectFileChunk(header=cpb.ProjectFileHeader(sha256=snap.id, size=len(data))),
                cpb.ProjectFileChunk(data=data),
            ]
            assert stub.UploadBlobs(iter(parts), timeout=30, metadata=_auth(controller)).files == 1
        spec["project"] = {"manifest_id": snap.id, "files": snap.files, "bytes": snap.bytes, "env": "auto"}
        with pytest.raises(InvalidRequest) as refused:
            client.submit(spec)
        message = str(refused.value)
        assert f"2 of the project's {snap.files} files are not in the controller's blob store" in message
        assert "pkg/extra.py, pkg/more.py" in message and "upload the project again" in message
        assert uploaded["files"] == snap.files - 2


def test_envs_of_an_agent_through_the_controller_and_an_unknown_agent(controller: ControllerProcess) -> None:
    with Client(controller.address) as client:
        with pytest.raises(NotFound, match="no agent 'no-such-agent'") as unknown:
            client.agent_envs("no-such-agent")
        assert unknown.value.code == "NOT_FOUND"
        with pytest.raises(NotFound, match="no agent 'no-such-agent'"):
            client.prune_agent_envs("no-such-agent")
        with pytest.raises(InvalidRequest, match="keep_bytes must be >= 0"):
            client.prune_agent_envs("no-such-agent", keep_bytes=-1)
        local = client.info()["local_agent_id"]
        listed = client.agent_envs(local)
        assert listed["limit_bytes"] > 0 and isinstance(listed["envs"], list)
        assert client.prune_agent_envs(local[:12], keep_bytes=0)["freed_bytes"] >= 0


def test_a_project_job_runs_on_an_agent_with_its_outputs_as_artifacts(
    controller: ControllerProcess, tmp_path: Path
) -> None:
    root = write_tree(
        tmp_path / "tiny",
        {
            "tiny/__init__.py": "",
            "tiny/main.py": (
                "import os, pathlib, sys\n"
                "out = pathlib.Path(os.environ['TENSORFLEET_OUTPUT_DIR'])\n"
                "out.mkdir(parents=True, exist_ok=True)\n"
                "(out / 'result.txt').write_text('answer ' + ' '.join(sys.argv[1:]))\n"
                "print('ran from', pathlib.Path.cwd().name)\n"
            ),
        },
    )
    with Client(controller.address) as client:
        job = client.submit_project(root, [sys.executable, "-m", "tiny.main", "42"], env="none", max_retries=0)
        states = []
        for event in client.watch(job["id"]):
            if event["kind"] == "task_state":
                states.append(event["state"])
        done = client.job(job["id"])
        assert done["state"] == "SUCCEEDED", (done["error"], states, controller.logs()[-3000:])
        assert states.index("PREPARING") < states.index("RUNNING")
        environment = done["task_list"][0]["environment"]
        assert environment is not None and environment["key"] == "" and environment["files"] == 2
        outputs = [a for a in client.artifacts(job["id"]) if a["kind"] == "output"]
        assert [a["name"] for a in outputs] == ["result.txt"]
        saved = client.download_artifact(job["id"], "result.txt", tmp_path / "result.txt")
        assert Path(saved["path"]).read_text() == "answer 42"
        lines = [row["line"] for row in client.logs(job["id"])]
        assert any("ran from project" in line for line in lines), lines[-20:]


def test_a_model_the_project_registers_is_in_the_registry_with_the_jobs_lineage(
    controller: ControllerProcess, tmp_path: Path
) -> None:
    root = write_tree(
        tmp_path / "modeller",
        {
            "fit.py": (
                "import pathlib\n"
                "import tensorfleet_task as task\n"
                "out = task.output_dir()\n"
                "out.mkdir(parents=True, exist_ok=True)\n"
                "(out / 'net.onnx').write_bytes(b'not really onnx, the registry keeps the bytes as they are')\n"
                "task.report(1, accuracy=0.91)\n"
                "task.register_model(out / 'net.onnx', name='tiny-net')\n"
            ),
        },
    )
    with Client(controller.address) as client:
        job = client.submit_project(root, [sys.executable, "fit.py"], env="none", max_retries=0)
        done = client.wait(job["id"], timeout=120)
        assert done["state"] == "SUCCEEDED", (done["error"], controller.logs()[-3000:])
        assert done["model"] == {"name": "tiny-net", "version": 1}
        record = client.model("tiny-net:1")
        assert (record["format"], record["job_id"], record["algorithm"]) == ("onnx", job["id"], "project")
        assert record["metrics"] == {"accuracy": 0.91}
        got = client.download_model("tiny-net:1", tmp_path / "net.onnx")
        assert (tmp_path / "net.onnx").read_bytes().startswith(b"not really onnx") and got["format"] == "onnx"
        with pytest.raises(InvalidRequest, match="it downloads as onnx"):
            client.download_model("tiny-net:1", tmp_path / "net.skops", fmt="skops")
        with pytest.raises(InvalidRequest, match="downloaded, not loaded"):
            client.load_model("tiny-net:1")
