"""The controller core in process with project jobs (issue 19): a submit is refused unless the controller holds the
snapshot's manifest and every file it lists; the manifest and only the files the agent lacks are pushed before
RunTask (HasBlobs in batches of at most 10,000); the task is PREPARING until its EnvironmentReady arrives, which the
task keeps; an unresolvable requirement (ENV_BUILD) fails the job once, with uv's reason, never retried or placed
elsewhere; garbage collection keeps the snapshot of every kept project job; a model the project registered is
registered under the name and format its report gives."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from helpers.core_harness import core, ended, until
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import ManifestEntry, manifest_bytes, manifest_id
from tensorfleet_agent.core.project_layout import MANIFEST_INPUT
from tensorfleet_agent.core.types import (
    ArtifactReady,
    BlobRef,
    CheckpointSaved,
    EnvironmentReady,
    LogLine,
    TaskState,
)
from tensorfleet_agent.rpc.service import MAX_HAS_BLOBS
from tensorfleet_desktop.controller import attempts
from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.errors import NotFoundError
from tensorfleet_desktop.controller.jobs import retry_delay
from tensorfleet_desktop.controller.model import Job, JobState, TaskRunState

UV_REASON = (
    "Because nosuchpkg was not found in the package registry, we can conclude that requirements are unsatisfiable."
)


def _store(controller: Controller, data: bytes) -> str:
    """Put bytes into the controller's blob store as an upload would; their sha256."""
    sha = hashlib.sha256(data).hexdigest()
    path = controller.blobs.path(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha


def _project(controller: Controller, files: dict[str, bytes], env: str = "auto", store: bool = True) -> dict[str, Any]:
    """A project's files and manifest in the blob store (as upload_project leaves them); the spec's "project"."""
    entries = []
    for path, data in files.items():
        sha = _store(controller, data) if store else hashlib.sha256(data).hexdigest()
        entries.append(ManifestEntry(path, 0o644, sha, len(data)))
    _store(controller, manifest_bytes(entries))
    return {
        "manifest_id": manifest_id(entries),
        "files": len(entries),
        "bytes": sum(e.size for e in entries),
        "env": env,
        "git": {"commit": "c0ffee" * 6 + "abcd", "branch": "main", "dirty": False, "diff": ""},
    }


FILES = {
    "pkg/__init__.py": b"",
    "pkg/train.py": b"import sys\nprint('training', sys.argv[1:])\n",
    "pkg/model.py": b"WIDTH = 64\n",
    "requirements.txt": b"numpy\n",
}


def _spec(project: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"algorithm": "project", "project": project, "command": ["python", "-m", "pkg.train", "--lr", "3e-4"],
            **fields}  # fmt: skip


def _env(key: str = "e" * 64, cache_hit: bool = False) -> EnvironmentReady:
    return EnvironmentReady(key, cache_hit, 0.0 if cache_hit else 4.25, "requirements.txt", "3.11.2", 4, 71, 0.012)


async def test_the_manifest_and_only_the_files_the_agent_lacks_are_pushed_before_the_task(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    a1 = agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        project = _project(controller, FILES)
        shas = {hashlib.sha256(d).hexdigest() for d in FILES.values()}
        already = hashlib.sha256(FILES["requirements.txt"]).hexdigest()
        a1.blobs.add(already)  # in its cache from an earlier job
        job = await controller.submit(_spec(project), "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        pushed = {sha for node, sha in agents.pushed}
        assert pushed == (shas | {project["manifest_id"]}) - {already}
        assert len(agents.pushed) == len(pushed), "each blob is sent once"

        spec = agents.task(agents.running()[0]).spec
        assert spec.workload == "project"
        assert spec.params == {
            "manifest": project["manifest_id"],
            "command": ["python", "-m", "pkg.train", "--lr", "3e-4"],
            "env": "auto",
            "output_dir": "outputs",
        }
        assert BlobRef(MANIFEST_INPUT, project["manifest_id"]) in spec.inputs

        # The same snapshot again (an unchanged re-submit): the agent has it all, nothing travels.
        agents.pushed.clear()
        again = await controller.submit(_spec(project), "me")
        agents.finish(job.tasks[0].agent_task_id)
        await agents.wait(lambda: any(t.startswith(again.id) for t in agents.running()))
        assert agents.pushed == []

        # While files travel the task says so (it is DISPATCHED meanwhile); nothing to send, nothing said.
        await controller.store.flush()
        sending = [r.message for r in await controller.store.events(job.id, 0) if "sending" in r.message]
        size = sum(len(d) for p, d in FILES.items() if p != "requirements.txt")
        assert sending == [f"sending 3 project file(s) ({size / 1024:.1f} KiB) to a1; 1 already there"]
        assert not [r for r in await controller.store.events(again.id, 0) if "sending" in r.message]


async def test_has_blobs_is_asked_in_batches_within_the_agents_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert attempts.HAS_BLOBS_BATCH == MAX_HAS_BLOBS  # the agent refuses a longer HasBlobs request
    monkeypatch.setattr(attempts, "HAS_BLOBS_BATCH", 7)  # the same loop, without writing 10,001 files
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        files = {f"data/{i:02}.txt": f"{i}\n".encode() for i in range(20)}
        project = _project(controller, files, env="none")
        await controller.submit(_spec(project), "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        assert [n for _, n in agents.has_blobs_calls] == [7, 7, 7]  # 21 sha256s
        assert len(agents.pushed) == 21  # 20 files and the manifest, each once


async def test_preparing_then_the_environment_is_kept_on_the_task_and_logged(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(_spec(_project(controller, FILES)), "me")
        task = job.tasks[0]
        await until(controller, lambda: task.state is TaskRunState.PREPARING)
        assert task.environment is None
        attempt = task.agent_task_id
        agents.send(attempt, LogLine("agent", "Resolved 3 packages in 12ms"))
        agents.ready(attempt, _env())
        await until(controller, lambda: task.state is TaskRunState.RUNNING)
        assert task.environment == {
            "key": "e" * 64,
            "cache_hit": False,
            "build_seconds": 4.25,
            "source": "requirements.txt",
            "python": "3.11.2",
            "files": 4,
            "bytes": 71,
            "materialize_seconds": 0.012,
        }
        agents.finish(attempt)
        assert await ended(controller, job) is JobState.SUCCEEDED
        await controller.store.flush()
        history = await controller.store.events(job.id, 0)
        states = [r.state for r in history if r.kind == "task_state"]
        assert states.index("PREPARING") < states.index("RUNNING") < states.index("SUCCEEDED")
        logs = [r.message for r in history if r.kind == "log"]
        assert "Resolved 3 packages in 12ms" in logs
        assert any(
            m.startswith("rank 0: 4 project file(s)") and "built from requirements.txt in 4.2s" in m for m in logs
        )

    # The environment is stored with the task: a restarted controller still has it.
    async with core(tmp_path, FakeAgents(), clock) as controller:
        assert controller.get(job.id).tasks[0].environment == task.environment


@pytest.mark.parametrize(
    ("cause", "error"),
    [
        ("env_build", f"the project's environment could not be built from requirements.txt: {UV_REASON}"),
        ("bad_command", "command not found: pyhton (not in the env's bin dir /envs/ab12/bin nor on the PATH)"),
    ],
)
async def test_a_failure_no_retry_can_mend_fails_the_job_once_never_retried(
    tmp_path: Path, cause: str, error: str
) -> None:
    """An unresolvable requirement (env_build) or a command that cannot be started (bad_command)."""
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    agents.add("a2")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(_spec(_project(controller, FILES), max_retries=3), "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        agents.finish(agents.running()[0], TaskState.FAILED, cause, error)
        assert await ended(controller, job) is JobState.FAILED
        assert job.error == error
        task = job.tasks[0]
        assert (task.state, task.exit_cause, task.failures, task.attempt) == (TaskRunState.FAILED, cause, 1, 1)
        clock.advance(retry_delay(1) + 60)
        controller.machine.wake.set()
        controller.placement.schedule()
        assert [c for c in agents.calls if c[0] == "run"] == [("run", task.node_id, f"{job.id}-r0-a1")]
        assert agents.running() == []


async def test_a_gangs_ranks_on_one_agent_send_each_file_once(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=3)
    async with core(tmp_path, agents, clock) as controller:
        project = _project(controller, FILES)
        await controller.submit(_spec(project, num_workers=3), "me")
        await agents.wait(lambda: len(agents.running()) == 3)
        assert sorted(sha for _, sha in agents.pushed) == sorted(
            {project["manifest_id"], *(hashlib.sha256(d).hexdigest() for d in FILES.values())}
        )


async def test_a_gang_whose_env_cannot_be_built_fails_with_its_other_ranks_cancelled(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=2)
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(_spec(_project(controller, FILES), num_workers=2), "me")
        await agents.wait(lambda: len(agents.running()) == 2)
        agents.finish(agents.running()[1], TaskState.FAILED, "env_build", f"could not be built: {UV_REASON}")
        assert await ended(controller, job) is JobState.FAILED
        assert UV_REASON in job.error
        await agents.wait(lambda: agents.running() == [])
        assert len([c for c in agents.calls if c[0] == "run"]) == 2, "no rank placed again"


async def test_a_flaky_setup_failure_is_retried_as_usual(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(_spec(_project(controller, FILES)), "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        agents.finish(agents.running()[0], TaskState.FAILED, "setup", "uv: connection reset while downloading")
        await until(controller, lambda: job.tasks[0].failures == 1 and job.tasks[0].state is TaskRunState.PENDING)
        clock.advance(retry_delay(1))
        controller.machine.wake.set()
        await agents.wait(lambda: len(agents.running()) == 1)
        assert job.tasks[0].attempt == 2 and job.state is JobState.RUNNING


async def test_a_paused_project_job_resumes_from_its_checkpoint_with_its_project(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    a1 = agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        project = _project(controller, FILES)
        job = await controller.submit(_spec(project), "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        first = agents.running()[0]
        agents.ready(first, _env())
        await until(controller, lambda: job.tasks[0].state is TaskRunState.RUNNING)
        controller.pause(job.id)
        assert job.tasks[0].stopping, "a project's command is asked to checkpoint and stop (SIGUSR1), not killed"
        await agents.wait(lambda: agents.task(first).checkpoint_grace > 0)
        checkpoint = _store(controller, b"step 7 weights")
        a1.blobs.add(checkpoint)
        agents.send(first, CheckpointSaved(checkpoint, 14, 7, "ckpt-7.pt"))
        agents.finish(first, TaskState.CANCELLED, "stopped", "paused by the user")
        await until(controller, lambda: not job.tasks[0].stopping)
        assert job.tasks[0].state is TaskRunState.PENDING and job.tasks[0].failures == 0
        controller.resume(job.id)
        await agents.wait(lambda: len(agents.running()) == 1)
        spec = agents.task(agents.running()[0]).spec
        assert {(i.name, i.sha256) for i in spec.inputs} == {
            ("resume.ckpt", checkpoint),
            (MANIFEST_INPUT, project["manifest_id"]),
        }
        assert spec.params["command"] == ["python", "-m", "pkg.train", "--lr", "3e-4"]
        assert job.tasks[0].environment is None, "the new attempt's env is its own, once its agent says"


async def test_a_cancelled_project_task_keeps_the_outputs_it_saves_as_it_ends(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(_spec(_project(controller, FILES)), "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        attempt = agents.running()[0]
        agents.ready(attempt, _env())
        await until(controller, lambda: job.tasks[0].state is TaskRunState.RUNNING)
        result = b'{"loss": 0.3}'
        sha = _store(controller, result)  # as copied from the agent
        left_out = "outputs: 1 file(s), 0.0 MiB stored from outputs/ in 0.01 s; left out: big.bin (9.0 MiB: over ...)"
        agents.on_cancel = [
            ArtifactReady(sha, len(result), "output", "result.json"),
            LogLine("agent", left_out),
            LogLine("stdout", "a line of the program's, after the cancel"),
        ]
        controller.cancel(job.id)
        assert job.state is JobState.CANCELLED
        await until(controller, lambda: any(a.name == "result.json" for a in job.artifacts))
        _, artifact = controller.artifact(job.id, "result.json")
        assert (artifact.kind, artifact.sha256, artifact.task_index, artifact.attempt) == ("output", sha, 0, 1)
        await controller.background.idle()
        await controller.store.flush()
        history = await controller.store.events(job.id, 0, ("artifact",))
        assert [(r.name, r.attempt_id) for r in history] == [("result.json", attempt)]
        logs = [r.message for r in await controller.store.events(job.id, 0, ("log",)) if r.attempt_id == attempt]
        assert left_out in logs and not any("after the cancel" in m for m in logs), "the agent's word on its outputs"
    async with core(tmp_path, FakeAgents(), clock) as controller:  # kept with the finished job
        assert [a.name for a in controller.get(job.id).artifacts] == ["result.json"]


async def test_a_submit_is_refused_without_the_manifest_or_with_files_missing(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    async with core(tmp_path, agents, clock) as controller:
        project = _project(controller, FILES)
        gone = {**project, "manifest_id": "f" * 64}
        with pytest.raises(ValidationError, match="has no manifest ffffffffffff: upload the project first"):
            await controller.submit(_spec(gone), "me")

        files = {**FILES, "pkg/extra.py": b"X = 1\n", "pkg/more.py": b"Y = 2\n"}
        partial = _project(controller, files)
        for path in ("pkg/extra.py", "pkg/more.py"):
            controller.blobs.path(hashlib.sha256(files[path]).hexdigest()).unlink()
        with pytest.raises(ValidationError) as refused:
            await controller.submit(_spec(partial), "me")
        assert "2 of the project's 6 files are not in the controller's blob store (pkg/extra.py, pkg/more.py)" in str(
            refused.value
        )

        with pytest.raises(ValidationError, match="says 3 files"):
            await controller.submit(_spec({**project, "files": 3}), "me")
        with pytest.raises(ValidationError, match=r"'uv\.lock' is not a file of the project"):
            await controller.submit(_spec({**project, "env": "uv.lock"}), "me")
        not_a_manifest = _store(controller, b'{"not": "a manifest"}')
        with pytest.raises(ValidationError, match="is not a valid project manifest"):
            await controller.submit(_spec({**project, "manifest_id": not_a_manifest}), "me")
        assert controller.list_jobs() == [], "nothing refused was kept"


async def test_project_files_lost_before_placement_fail_the_job_with_what_is_missing(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    async with core(tmp_path, agents, clock) as controller:
        project = _project(controller, FILES)
        job = await controller.submit(_spec(project), "me")
        controller.blobs.path(hashlib.sha256(FILES["pkg/model.py"]).hexdigest()).unlink()  # a bad disk, a hand
        agents.add("a1")
        assert await ended(controller, job) is JobState.FAILED
        assert "pkg/model.py" in job.error and "submit the project again" in job.error
        assert agents.running() == []


async def test_gc_keeps_the_snapshot_of_every_kept_project_job(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        project = _project(controller, FILES)
        job = await controller.submit(_spec(project), "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        agents.finish(agents.running()[0])
        assert await ended(controller, job) is JobState.SUCCEEDED
        stray = _store(controller, b"uploaded, never submitted\n")
        result = await controller.collect_garbage(grace=0)
        assert result["deleted"] == 1 and not controller.blobs.path(stray).exists()
        for sha in [project["manifest_id"], *(hashlib.sha256(d).hexdigest() for d in FILES.values())]:
            assert controller.blobs.path(sha).is_file(), f"{sha[:12]} of a kept project job was collected"
        again = await controller.resubmit(job.id, {}, "me")  # what the kept files are for
        assert again.spec["project"] == job.spec["project"] and again.spec["command"] == job.spec["command"]
        with pytest.raises(ValidationError, match="a project job takes none"):
            await controller.resubmit(job.id, {"lr": 0.1}, "me")


async def test_a_model_the_project_registered_is_named_and_typed_by_its_report(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(_spec(_project(controller, FILES), model_name="fallback"), "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        attempt = agents.running()[0]
        onnx = b"\x08\x07onnx-bytes"
        model_sha = _store(controller, onnx)  # copied from the agent
        report = json.dumps(
            {"model_name": "digits-net", "format": "onnx", "versions": {"torch": "2.4"}, "sha256": model_sha}
        ).encode()
        report_sha = _store(controller, report)
        output_sha = _store(controller, b"loss,0.1\n")
        agents.ready(attempt, _env(cache_hit=True))
        agents.send(
            attempt,
            ArtifactReady(model_sha, len(onnx), "model", "net.onnx"),
            ArtifactReady(report_sha, len(report), "report", "net.onnx.report.json"),
            ArtifactReady(output_sha, 9, "output", "metrics/loss.csv"),
        )
        agents.finish(attempt)
        assert await ended(controller, job) is JobState.SUCCEEDED
        assert job.model is not None and job.model["name"] == "digits-net"
        record = await controller.registry.resolve("digits-net")
        assert (record["format"], record["sha256"], record["framework_versions"]) == (
            "onnx",
            model_sha,
            {"torch": "2.4"},
        )
        assert controller.artifact(job.id, "metrics/loss.csv")[1].kind == "output"
        out = tmp_path / "export.onnx"
        assert await controller.registry.export(record, "", out) == controller.blobs.path(model_sha)
        from tensorfleet_desktop.controller.registry import RegistryError

        with pytest.raises(RegistryError, match="it downloads as onnx"):
            await controller.registry.export(record, "skops", out)

        # Plain tensors (no TensorFleet config to rebuild a module from): stored and served as they are, no ONNX.
        second = await controller.submit(_spec(_project(controller, FILES)), "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        attempt = agents.running()[0]
        tensors = b"{}" + b"\0" * 8
        report = json.dumps({"model_name": "", "format": "safetensors", "versions": {}}).encode()
        model_sha, report_sha = _store(controller, tensors), _store(controller, report)
        agents.ready(attempt, _env(cache_hit=True))
        agents.send(
            attempt,
            ArtifactReady(model_sha, len(tensors), "model", "weights.safetensors"),
            ArtifactReady(report_sha, len(report), "report", "weights.safetensors.report.json"),
        )
        agents.finish(attempt)
        assert await ended(controller, second) is JobState.SUCCEEDED
        record = await controller.registry.resolve(second.name)  # no name given: the job's (the folder's) name
        assert (record["format"], record["config"]) == ("safetensors", {})
        with pytest.raises(RegistryError, match="it downloads as safetensors"):
            await controller.registry.export(record, "onnx", out)


async def test_a_stored_manifest_whose_bytes_hash_otherwise_is_refused_as_damaged(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    async with core(tmp_path, agents, clock) as controller:
        project = _project(controller, FILES)
        controller.blobs.path(project["manifest_id"]).write_bytes(manifest_bytes([]))  # bit rot on disk
        with pytest.raises(ValidationError, match=r"is damaged .* upload it again"):
            await controller.submit(_spec(project), "me")


async def test_each_attempts_outputs_are_kept_with_its_number_and_the_latest_is_served_by_default(
    tmp_path: Path,
) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(_spec(_project(controller, FILES), max_retries=1), "me")
        saved = []
        for number, data in ((1, b"first"), (2, b"second")):
            await agents.wait(lambda: len(agents.running()) == 1)
            attempt = agents.running()[0]
            sha = _store(controller, data)
            saved.append(sha)
            agents.send(attempt, ArtifactReady(sha, len(data), "output", "ok.txt"))
            if number == 1:
                agents.finish(attempt, TaskState.FAILED, "exit_code", "command `python` exited with code 1")
                await until(controller, lambda: job.tasks[0].failures == 1)
                clock.advance(retry_delay(1))
                controller.machine.wake.set()
            else:
                agents.finish(attempt)
        assert await ended(controller, job) is JobState.SUCCEEDED
        assert [(a.name, a.attempt, a.sha256) for a in job.artifacts] == [
            ("ok.txt", 1, saved[0]),
            ("ok.txt", 2, saved[1]),
        ]
        assert controller.artifact(job.id, "ok.txt")[1].sha256 == saved[1], "the latest attempt's by default"
        assert controller.artifact(job.id, "ok.txt", attempt=1)[1].sha256 == saved[0]
        with pytest.raises(NotFoundError, match=r"attempt 3 of job .* saved no 'ok\.txt' \(attempts that did: 1, 2\)"):
            controller.artifact(job.id, "ok.txt", attempt=3)
    async with core(tmp_path, FakeAgents(), clock) as controller:  # the numbers are kept with the job
        assert [a.attempt for a in controller.get(job.id).artifacts] == [1, 2]


def test_a_stored_job_from_before_artifact_attempts_still_loads() -> None:
    body = Job("j1", {"algorithm": "noop"}, "me", 1).to_dict()
    body["artifacts"] = [{"sha256": "a" * 64, "size": 1, "kind": "output", "name": "x", "task_index": 0}]
    assert Job.from_dict(body).artifacts[0].attempt == 0
