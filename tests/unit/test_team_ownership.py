"""Issue 24 review (finding 8), in the core: a dataset name belongs to whoever made its first version, a model name
to the submitter of the job that registered its first version. Others read and use them; only the owner or an
admin adds dataset versions, moves or removes a model's aliases, tags or describes it. Refusals name the owner."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from helpers.core_harness import core, ended
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.manifest import ManifestEntry, manifest_bytes, manifest_id
from tensorfleet_agent.core.types import ArtifactReady, EnvironmentReady
from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.model import JobState
from tensorfleet_desktop.controller.principals import ADMIN, SYSTEM, USER, PermissionDenied, Principal, acting_as

ALICE, BOB, ROOT = Principal("alice", USER, True), Principal("bob", USER, True), Principal("root", ADMIN, True)


def _store(controller: Controller, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    path = controller.blobs.path(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha


def _project(controller: Controller) -> dict[str, Any]:
    data = b"print('training')\n"
    entries = [ManifestEntry("train.py", 0o644, _store(controller, data), len(data))]
    _store(controller, manifest_bytes(entries))
    return {"manifest_id": manifest_id(entries), "files": 1, "bytes": len(data), "env": "auto"}


async def _register(controller: Controller, agents: FakeAgents, submitter: str, name: str) -> None:
    """A project job of `submitter` that registers a model called `name` (its report names it)."""
    spec = {"algorithm": "project", "project": _project(controller), "command": ["python", "train.py"]}
    job = await controller.submit(spec, submitter)
    await agents.wait(lambda: len(agents.running()) == 1)
    attempt = agents.running()[0]
    onnx = f"onnx bytes of {submitter}".encode()
    model_sha = _store(controller, onnx)
    report = json.dumps({"model_name": name, "format": "onnx", "sha256": model_sha}).encode()
    report_sha = _store(controller, report)
    agents.ready(attempt, EnvironmentReady("e" * 64, True, 0.0, "requirements.txt", "3.11.2", 4, 71, 0.012))
    agents.send(
        attempt,
        ArtifactReady(model_sha, len(onnx), "model", "net.onnx"),
        ArtifactReady(report_sha, len(report), "report", "net.onnx.report.json"),
    )
    agents.finish(attempt)
    assert await ended(controller, job) is JobState.SUCCEEDED and job.model is not None


async def test_a_model_name_is_its_first_registering_submitters(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        registry = controller.registry
        await _register(controller, agents, "alice@laptop", "churn")  # stored as user@host: its user owns it
        await _register(controller, agents, "bob", "churn")  # bob's job may add a version (he builds on it)
        assert await registry.owner_of("churn") == "alice"  # the first version's submitter, not the latest's
        with acting_as(BOB):
            for change, verb in (
                (registry.set_alias("churn:2", "production"), "move its aliases"),
                (registry.tag("churn:1", "best"), "tag it"),
                (registry.describe("churn", "bob's now"), "describe it"),
            ):
                with pytest.raises(
                    PermissionDenied, match=f"^model churn belongs to alice: only alice or an admin may {verb}$"
                ):
                    await change
        with acting_as(ALICE):
            assert (await registry.set_alias("churn:1", "production"))["aliases"] == ["production"]
            assert (await registry.tag("churn:1", "best"))["tags"] == ["best"]
            assert (await registry.describe("churn:2", "v2"))["description"] == "v2"
        with acting_as(BOB), pytest.raises(PermissionDenied, match="only alice or an admin may remove its aliases"):
            await registry.remove_alias("churn", "production")
        assert (await registry.resolve("churn@production"))["version"] == 1  # still what alice's alias serves
        with acting_as(ROOT):  # an admin may
            assert (await registry.set_alias("churn:2", "production"))["version"] == 2
            await registry.remove_alias("churn", "production")
        await _register(controller, agents, "bob", "bobs-model")
        with acting_as(BOB):
            await registry.set_alias("bobs-model", "staging")  # his own


async def test_a_dataset_name_is_its_first_uploaders(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.csv").write_text("x,y\n1,2\n")
    url = f"file://{folder}"
    async with core(tmp_path / "ctl", agents, clock) as controller:
        catalog = controller.catalog
        with acting_as(ALICE):
            first, _ = await catalog.add_reference("shared", url)
        assert (first["created_by"], catalog.owner("shared")) == ("alice", "alice")
        (folder / "b.csv").write_text("x,y\n3,4\n")  # new content: a second version would be made
        with (
            acting_as(BOB),
            pytest.raises(
                PermissionDenied,
                match=r"^dataset shared belongs to alice: only alice or an admin may add versions to it$",
            ),
        ):
            await catalog.add_reference("shared", url)
        assert [r["version"] for r in catalog.versions["shared"]] == [1]  # alice's next job still trains on hers
        with acting_as(BOB), pytest.raises(PermissionDenied, match="belongs to alice"):
            await catalog.commit("shared", first["content_id"])  # checked before the manifest is read
        with acting_as(ALICE):
            second, unchanged = await catalog.add_reference("shared", url)
        assert (second["version"], unchanged, second["created_by"]) == (2, False, "alice")
        (folder / "c.csv").write_text("x,y\n5,6\n")
        with acting_as(ROOT):
            third, _ = await catalog.add_reference("shared", url)
        assert (third["version"], catalog.owner("shared")) == (3, "alice")  # an admin's version takes nothing
        with acting_as(BOB):
            await catalog.add_reference("bobs", url)  # a name of his own
        assert catalog.owner("bobs") == "bob"
        with acting_as(SYSTEM):  # in-process work (no face) owns nothing: the name stays everyone's
            await catalog.add_reference("open", url)
        assert catalog.owner("open") == ""
        with acting_as(BOB):
            (folder / "d.csv").write_text("x,y\n7,8\n")
            assert (await catalog.add_reference("open", url))[0]["version"] == 2
