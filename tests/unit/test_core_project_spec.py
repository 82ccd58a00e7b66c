"""A project job's spec, built in one place on the client (`project_job_spec`, with the command and env checked
before anything is uploaded) and parsed in one place on the controller (`parse_job_spec`); what status shows of
it on the wire (Job.project, TaskInfo.environment); a manifest blob read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tensorfleet_agent.core import project_spec
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import ManifestEntry, manifest_bytes, manifest_from_bytes
from tensorfleet_desktop import wire
from tensorfleet_desktop.cli.exit_codes import UsageError
from tensorfleet_desktop.cli.jobs import _command as cli_command
from tensorfleet_desktop.client import InvalidRequest, check_command, check_env, project_job_spec, upload_summary
from tensorfleet_desktop.controller.jobspec import JobSpecError, parse_job_spec
from tensorfleet_desktop.controller.model import Job, JobTask, TaskRunState

MANIFEST_ID = "ab" * 32
GIT = {
    "commit": "0123456789abcdef0123456789abcdef01234567",
    "branch": "main",
    "dirty": True,
    "diff": "--- a/pkg/train.py\n+++ b/pkg/train.py\n-LR = 1\n+LR = 2\n",
    "diff_truncated": False,
    "untracked": ["notes.txt"],
    "subdir": "trainer",
    "remote": "https://example.org/team/repo.git",
}
UPLOAD: dict[str, Any] = {
    "manifest_id": MANIFEST_ID,
    "manifest": [
        {"path": "pkg/train.py", "mode": 0o644, "sha256": "cd" * 32, "size": 40},
        {"path": "requirements.txt", "mode": 0o644, "sha256": "ef" * 32, "size": 6},
    ],
    "files": 2,
    "bytes": 46,
    "uploaded_files": 1,
    "uploaded_bytes": 40,
    "git": GIT,
    "path": "/home/me/trainer",
}


def test_the_sdk_builds_the_spec_the_controller_parses() -> None:
    spec = project_job_spec(UPLOAD, "python -m pkg.train --lr '3e-4'", "requirements.txt", num_workers=2, gpus=None)
    assert spec == {
        "algorithm": "project",
        "project": {"manifest_id": MANIFEST_ID, "files": 2, "bytes": 46, "env": "requirements.txt", "git": GIT},
        "command": ["python", "-m", "pkg.train", "--lr", "3e-4"],
        "num_workers": 2,
        "name": "trainer",  # the folder's name unless one is given
    }
    parsed = parse_job_spec(spec)
    assert (parsed.algorithm, parsed.name, parsed.num_workers, parsed.hyperparameters) == ("project", "trainer", 2, {})
    assert parsed.command == ["python", "-m", "pkg.train", "--lr", "3e-4"]
    assert parsed.project == {
        "manifest_id": MANIFEST_ID,
        "files": 2,
        "bytes": 46,
        "env": "requirements.txt",
        "git": GIT,
    }
    stored = parsed.to_dict()
    assert stored["project"] == parsed.project and stored["command"] == parsed.command
    assert parse_job_spec(stored).to_dict() == stored, "a stored spec parses to itself (resubmit, retry)"
    assert "project" not in parse_job_spec({"algorithm": "noop"}).to_dict(), "other jobs' specs are unchanged"
    assert upload_summary(UPLOAD) == {"files": 2, "bytes": 46, "uploaded_files": 1, "uploaded_bytes": 40}


def test_the_sdk_refuses_a_bad_command_or_env_before_uploading(tmp_path: Path) -> None:
    empties: list[list[str] | str] = [[], "", "   "]
    for empty in empties:
        with pytest.raises(InvalidRequest, match="command: is empty"):
            check_command(empty)
    with pytest.raises(InvalidRequest, match="cannot be split"):
        check_command("python -c 'unclosed")
    with pytest.raises(InvalidRequest, match=r"command\[1\]: must be a string, got 3"):
        check_command(["python", 3])  # type: ignore[list-item]
    assert check_command(("python", "train.py")) == ["python", "train.py"]

    (tmp_path / "requirements-dev.txt").write_text("pytest\n")
    with pytest.raises(InvalidRequest, match="left out of the snapshot"):
        check_env("requirements-dev.txt", {"requirements.txt"}, tmp_path)
    with pytest.raises(InvalidRequest, match="no such file is sent"):
        check_env("uv.lock", {"requirements.txt"}, tmp_path)
    with pytest.raises(InvalidRequest, match=r"holds '\.\.'"):
        check_env("../requirements.txt", None)
    assert check_env("auto", set()) == "auto" and check_env("none", set()) == "none"
    with pytest.raises(InvalidRequest, match="set by a project job itself"):
        project_job_spec(UPLOAD, ["python", "x.py"], algorithm="script")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"command": []}, "command", "is empty: say what runs in the project folder"),
        ({"command": None}, "command", "is empty: say what runs in the project folder"),
        ({"command": [""]}, "command", "empty program name"),
        ({"command": ["python", 1]}, "command[1]", "must be a string"),
        ({"command": ["x"] * 257}, "command", "at most 256"),
        ({"command": ["x", "a\x00b"]}, "command[1]", "NUL"),
        ({"project": None}, "project", "upload it first"),
        ({"project": {"manifest_id": "nope", "files": 1, "bytes": 1}}, "project.manifest_id", "64 lowercase hex"),
        ({"project": {"manifest_id": MANIFEST_ID, "files": -1, "bytes": 1}}, "project.files", "between 0"),
        (
            {"project": {"manifest_id": MANIFEST_ID, "files": 1, "bytes": 1, "env": "/etc/x"}},
            "project.env",
            "absolute path",
        ),
        ({"project": {"manifest_id": MANIFEST_ID, "files": 1, "bytes": 1, "zip": 1}}, "project.zip", "unknown"),
        (
            {"project": {"manifest_id": MANIFEST_ID, "files": 1, "bytes": 1, "git": {"dirty": "yes"}}},
            "project.git.dirty",
            "true or false",
        ),
        ({"hyperparameters": {"lr": 1}}, "hyperparameters", "pass options to its command"),
        ({"cv": 3}, "cv", ""),
        ({"sweep": {"params": {"lr": "0.1..1"}}}, "sweep", "no parameters to sweep"),
        ({"script": {"name": "a.py", "source": "x = 1"}}, "script", ""),
    ],
)
def test_the_controller_refuses_a_bad_project_spec_naming_the_field(
    change: dict[str, Any], field: str, words: str
) -> None:
    body = {**project_job_spec(UPLOAD, ["python", "-m", "pkg.train"]), **change}
    with pytest.raises(JobSpecError) as refused:
        parse_job_spec(body)
    assert refused.value.field == field and words in refused.value.message


def test_project_keys_are_refused_on_other_jobs() -> None:
    with pytest.raises(JobSpecError, match="command: is for project jobs"):
        parse_job_spec({"algorithm": "noop", "command": ["python"]})
    assert parse_job_spec({"project": project_job_spec(UPLOAD, ["x"])["project"], "command": "x"}).algorithm == (
        "project"
    )


def test_status_shows_the_project_and_each_tasks_environment() -> None:
    spec = parse_job_spec(project_job_spec(UPLOAD, ["python", "-m", "pkg.train"], "requirements.txt")).to_dict()
    environment = {
        "key": "e" * 64,
        "cache_hit": True,
        "build_seconds": 0.0,
        "source": "requirements.txt",
        "python": "3.11.2",
        "files": 2,
        "bytes": 46,
        "materialize_seconds": 0.004,
    }
    job = Job("j1", spec, "me", 1, tasks=[JobTask(0, TaskRunState.PREPARING, environment=environment), JobTask(1)])
    out = wire.job_from_pb(wire.job_to_pb(job, {}))
    assert out["project"] == {
        "manifest_id": MANIFEST_ID,
        "files": 2,
        "bytes": 46,
        "command": ["python", "-m", "pkg.train"],
        "env": "requirements.txt",
        "git": GIT,
    }
    assert [t["environment"] for t in out["task_list"]] == [environment, None]
    assert out["task_list"][0]["state"] == "PREPARING"

    outside_git = {**spec, "project": {**spec["project"], "git": None}}
    assert wire.job_from_pb(wire.job_to_pb(Job("j2", outside_git, "me", 2), {}))["project"]["git"] is None
    other = wire.job_from_pb(wire.job_to_pb(Job("j3", {"algorithm": "noop"}, "me", 3, tasks=[JobTask(0)]), {}))
    assert other["project"] is None and other["task_list"][0]["environment"] is None


def test_a_manifest_blob_reads_back_and_a_bad_one_says_why() -> None:
    entries = (ManifestEntry("b/x.py", 0o755, "cd" * 32, 3), ManifestEntry("a.txt", 0o644, "ef" * 32, 0))
    assert manifest_from_bytes(manifest_bytes(entries)) == tuple(sorted(entries))
    for bad, words in [
        (b"\xff", "UTF-8 JSON"),
        (b"[]", '"version", "files"'),
        (b'{"version": 2, "files": []}', "this version reads 1"),
        (b'{"version": 1, "files": [["a", 420, "x", 1]]}', "64 lowercase hex"),
        (b'{"version": 1, "files": [["../a", 420, "' + b"ab" * 32 + b'", 1]]}', "'..'"),
        (b'{"version": 1, "files": [["a", 420]]}', "[path, mode, sha256, size]"),
    ]:
        with pytest.raises(ValidationError, match=words.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
            manifest_from_bytes(bad)


@pytest.mark.parametrize(
    "command",
    [[], "  ", [""], ["python", None], ["x"] * 257, ["x", "a\x00b"], ["x", "y" * 40_000], "python 'unclosed", 7],
)
def test_the_sdk_the_cli_and_the_controller_refuse_a_command_in_the_same_words(command: Any) -> None:
    """One check (core.project_spec.check_command) behind all three: the same field and message everywhere."""
    with pytest.raises(ValidationError) as core_says:
        project_spec.check_command(command)
    with pytest.raises(JobSpecError) as controller_says:
        parse_job_spec({**project_job_spec(UPLOAD, ["python"]), "command": command})
    with pytest.raises(InvalidRequest) as sdk_says:
        check_command(command)
    with pytest.raises(UsageError) as cli_says:
        cli_command(command)
    said = str(core_says.value)
    assert str(controller_says.value) == str(sdk_says.value) == str(cli_says.value) == said
    assert said.startswith("command")


@pytest.mark.parametrize(
    ("env", "words"), [("", "must be"), ("/etc/x", "absolute path"), ("../r.txt", "'..'"), (3, "got 3")]
)
def test_the_env_choice_is_refused_in_the_same_words_everywhere(env: Any, words: str) -> None:
    with pytest.raises(ValidationError) as core_says:
        project_spec.check_env_choice(env)
    with pytest.raises(InvalidRequest) as sdk_says:
        check_env(env, None)
    assert str(sdk_says.value) == str(core_says.value) and words in core_says.value.message
    assert project_spec.check_env_choice("auto") == "auto" and project_spec.check_env_choice("a/req.txt") == "a/req.txt"
