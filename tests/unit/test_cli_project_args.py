"""`tensorfleet submit --project`: what the command line and a job file turn into before anything is uploaded
(everything after `--` is the command, options included; DIR defaults to "."; sizes; a job file's paths), the
errors a user gets (each names how to fix it, exit code 2), and how status shows a project job. No controller:
every refusal here happens before the SDK dials one (the address is a closed port)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tensorfleet_desktop.cli import build_parser, exit_codes, main
from tensorfleet_desktop.cli.exit_codes import UsageError
from tensorfleet_desktop.cli.jobs import (
    SUMMARY_KEYS,
    ProjectSubmission,
    _project_steps,
    _shown_state,
    detail,
    environment_line,
    git_line,
    parse_size,
    project_submission,
    spec_from_args,
    upload_line,
)
from tensorfleet_desktop.cli.output import human_size, printable
from tensorfleet_desktop.project import DEFAULT_MAX_BYTES

DEAD = "127.0.0.1:1"  # nothing listens: a command that reached the network would fail with UNREACHABLE (3)


def submission(*argv: str) -> ProjectSubmission | None:
    return project_submission(spec_from_args(build_parser().parse_args(["submit", *argv])))


def run(*argv: str) -> int:
    return main(["--controller", DEAD, *argv])


def test_everything_after_double_dash_is_the_command_options_included() -> None:
    sub = submission("--project", ".", "--workers", "2", "--", "python", "-m", "pkg.train", "--lr", "3e-4", "-v")
    assert sub == ProjectSubmission(
        Path("."), ["python", "-m", "pkg.train", "--lr", "3e-4", "-v"], "auto", DEFAULT_MAX_BYTES, {"num_workers": 2}
    )
    # a second `--` belongs to the command (torchrun-style launchers pass one on)
    sub = submission("--project", "--", "torchrun", "--nproc-per-node", "2", "t.py", "--", "--json")
    assert sub is not None and sub.command == ["torchrun", "--nproc-per-node", "2", "t.py", "--", "--json"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--project", "--", "python", "t.py"],  # a bare --project right before --
        ["--project", "--wait", "--", "python", "t.py"],  # ... or before another option
        ["--wait", "--project", "--", "python", "t.py"],
    ],
)
def test_project_without_a_value_is_the_current_folder(argv: list[str]) -> None:
    sub = submission(*argv)
    assert sub is not None and sub.path == Path(".") and sub.command == ["python", "t.py"]


def test_flags_become_the_project_job_fields() -> None:
    sub = submission(
        "--project",
        "src",
        "--env",
        "requirements/train.txt",
        "--max-project-size",
        "500M",
        "--gpus",
        "1",
        "--name",
        "exp-1",
        "--dataset",
        "iris",
        "--on",
        "gpu-box",
        "--",
        "python",
        "train.py",
    )
    assert sub == ProjectSubmission(
        Path("src"),
        ["python", "train.py"],
        "requirements/train.txt",
        500 << 20,
        {"gpus": 1, "name": "exp-1", "dataset": "iris", "constraints": {"on": ["gpu-box"]}},
    )


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1000", 1000),
        ("500M", 500 << 20),
        ("500m", 500 << 20),
        ("2G", 2 << 30),
        ("1.5GiB", 3 << 29),
        ("200MB", 200 << 20),
        ("64k", 64 << 10),
        ("1T", 1 << 40),
        (" 3 G ", 3 << 30),
    ],
)
def test_sizes_are_bytes_or_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "5X", "-1G", "0", "0.1", "1.5.2G", "5iB", "G5", "1e9"])
def test_a_bad_size_is_refused_with_what_a_size_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_a_bad_size_flag_exits_with_the_usage_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run("submit", "--project", "--max-project-size", "lots", "--", "python", "t.py")
    assert exited.value.code == exit_codes.USAGE
    assert "500M, 2G" in capsys.readouterr().err


def test_a_forgotten_double_dash_gets_the_corrected_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run("submit", "--project", ".", "python", "train.py", "--lr", "1")
    assert exited.value.code == exit_codes.USAGE
    assert "the command goes after `--`: tensorfleet submit --project . -- python train.py --lr 1" in (
        capsys.readouterr().err
    )


def test_a_job_file_with_project_flag_needs_no_double_dash(tmp_path: Path) -> None:
    job = tmp_path / "job.yml"
    job.write_text("project: code\ncommand: python x.py\n")
    sub = submission(str(job), "--project", "elsewhere")
    assert sub is not None and (sub.path, sub.command) == (Path("elsewhere"), ["python", "x.py"])


def test_a_missing_command_says_how_to_give_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("submit", "--project", ".") == exit_codes.USAGE
    message = capsys.readouterr().err
    assert "needs a command" in message and "-- python -m pkg.train" in message
    assert run("submit", "--project", ".", "--") == exit_codes.USAGE  # `--` with nothing after it
    assert "command: is empty: say what runs in the project folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--project", "--algorithm", "svm", "--", "python", "t.py"], "cannot be combined with algorithm 'svm'"),
        (["--project", "-p", "lr=0.1", "--", "python", "t.py"], "give your command its options after `--`"),
        (["--env", "none", "--algorithm", "svm"], "env go(es) with a project"),
        (["--algorithm", "svm", "--", "python", "t.py"], "command go(es) with a project"),
    ],
)
def test_project_keys_that_do_not_fit_the_job_are_refused(argv: list[str], expected: str) -> None:
    with pytest.raises(UsageError) as refused:
        submission(*argv)
    assert expected in str(refused.value)


def test_project_and_script_are_refused_together(tmp_path: Path) -> None:
    script = tmp_path / "t.py"
    script.write_text("print(1)\n")
    with pytest.raises(UsageError, match="--project and --script"):
        submission("--project", "--script", str(script), "--", "python", "t.py")


def test_a_job_file_project_is_relative_to_the_job_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "train.yaml"
    job.write_text(
        "name: from-file\nproject: ../code\ncommand: python -m pkg.train --msg 'two words'\n"
        "env: none\nmax_project_size: 2G\nnum_workers: 2\n"
    )
    monkeypatch.chdir(tmp_path / "jobs")  # any working folder: the path is the job file's
    sub = submission(str(job))
    assert sub == ProjectSubmission(
        job.parent / "../code",
        ["python", "-m", "pkg.train", "--msg", "two words"],
        "none",
        2 << 30,
        {"name": "from-file", "num_workers": 2},
    )
    # flags override the file: --project is relative to here, the words after `--` replace command:
    sub = submission(str(job), "--project", "other", "--max-project-size", "1M", "--", "python", "x.py")
    assert sub is not None and (sub.path, sub.command, sub.max_bytes) == (Path("other"), ["python", "x.py"], 1 << 20)


def test_a_job_file_command_list_takes_yaml_numbers_as_words(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("project: /abs/code\ncommand: [python, train.py, --epochs, 3, --lr, 0.001]\n")
    sub = submission(str(job))
    assert sub is not None and sub.path == Path("/abs/code")
    assert sub.command == ["python", "train.py", "--epochs", "3", "--lr", "0.001"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("project: .\n", "needs a command"),
        ("project: .\ncommand: []\n", "command: is empty"),
        ('project: .\ncommand: "python \'unclosed"\n', "command: cannot be split into arguments"),
        ("project: .\ncommand: [python, {a: 1}]\n", "command[1]: must be a string"),
        ("project: .\ncommand: 7\n", "command: must be a list of strings or one string"),
        ("project: .\ncommand: x\nmax_project_size: huge\n", "max_project_size"),
        ("project: .\ncommand: x\nmax_project_size: 0\n", "max_project_size"),
        ("project: .\ncommand: x\nenv: ''\n", 'env: must be "auto", "none" or a requirement file'),
        ("project: .\ncommand: x\nenv: ../requirements.txt\n", "env: '../requirements.txt' holds '..'"),
        ("project: ''\ncommand: x\n", "project must be a folder path"),
        ("command: python x.py\n", "command go(es) with a project"),
    ],
)
def test_bad_project_keys_in_a_job_file_are_named(tmp_path: Path, body: str, expected: str) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(body)
    with pytest.raises(UsageError) as refused:
        submission(str(job))
    assert expected in str(refused.value)


def test_a_controller_form_project_spec_is_submitted_as_it_is(tmp_path: Path) -> None:
    """A spec saved from `status --json` (project: a mapping with a manifest id) is not snapshotted again."""
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"algorithm": "project", "project": {"manifest_id": "0" * 64}, "command": ["x"]}))
    assert submission(str(job)) is None


def test_project_folder_problems_exit_with_the_usage_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The snapshot refuses before any upload: a missing folder, a symlink out of it, a project over the limit."""
    assert run("submit", "--project", str(tmp_path / "nowhere"), "--", "python", "t.py") == exit_codes.USAGE
    assert "does not exist" in capsys.readouterr().err

    escaping = tmp_path / "escaping"
    escaping.mkdir()
    (escaping / "train.py").write_text("print(1)\n")
    (tmp_path / "secret.txt").write_text("outside\n")
    os.symlink(tmp_path / "secret.txt", escaping / "link.txt")
    assert run("submit", "--project", str(escaping), "--", "python", "train.py") == exit_codes.USAGE
    assert "link.txt" in capsys.readouterr().err

    large = tmp_path / "large"
    large.mkdir()
    (large / "train.py").write_text("print(1)\n")
    (large / "weights.bin").write_bytes(b"\0" * 4096)
    assert run("submit", "--project", str(large), "--max-project-size", "2K", "--", "python", "train.py") == (
        exit_codes.USAGE
    )
    message = capsys.readouterr().err
    assert "weights.bin" in message and "over the limit" in message


def test_keep_gb_goes_with_prune(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("agents", "envs", "box", "--keep-gb", "5") == exit_codes.USAGE
    assert "--keep-gb goes with --prune" in capsys.readouterr().err


def test_the_upload_line_says_what_a_submit_sent() -> None:
    upload = {"files": 37, "bytes": 4_718_592, "uploaded_files": 1, "uploaded_bytes": 1229}
    assert upload_line(upload) == "uploaded 1 of 37 files (1.2 KiB of 4.5 MiB)"
    assert upload_line({**upload, "uploaded_files": 0, "uploaded_bytes": 0}) == (
        "uploaded 0 of 37 files (0 bytes of 4.5 MiB)"
    )
    assert [human_size(n) for n in (0, 1023, 1024, 200 << 20, 3 << 30)] == [
        "0 bytes",
        "1023 bytes",
        "1.0 KiB",
        "200.0 MiB",
        "3.0 GiB",
    ]


def test_git_state_reads_as_commit_branch_and_dirtiness() -> None:
    git: dict[str, Any] = {
        "commit": "3f2a1b9c0d1e2f3a4b5c",
        "branch": "main",
        "dirty": True,
        "diff": "diff --git a/x b/x\n",
        "untracked": ["notes.txt", "new.py"],
        "subdir": "",
    }
    assert (
        git_line(git) == "3f2a1b9c0d1e on main, dirty (2 untracked); `tensorfleet status JOB --diff` prints the changes"
    )
    assert git_line({**git, "dirty": False, "diff": "", "untracked": []}) == "3f2a1b9c0d1e on main, clean"
    assert git_line({**git, "branch": "", "subdir": "ml", "diff": "", "untracked": []}) == (
        "3f2a1b9c0d1e detached HEAD in ml/, dirty"
    )
    assert git_line(None) == "not in a git repository"


def test_an_environment_reads_as_key_prefix_and_how_it_was_had() -> None:
    env = {
        "key": "ab" * 32,
        "cache_hit": False,
        "build_seconds": 4.25,
        "source": "requirements.txt",
        "python": "3.11.7",
    }
    assert environment_line(env) == "environment abababababab: built in 4.2 s (requirements.txt, python 3.11.7)"
    assert environment_line({**env, "cache_hit": True}) == (
        "environment abababababab: cache hit (requirements.txt, python 3.11.7)"
    )
    assert environment_line({**env, "key": "", "source": ""}) == "environment: none (the agent's own Python 3.11.7)"


def test_status_json_has_the_project_each_tasks_environment_and_rank_0s_on_top() -> None:
    env0 = {"key": "a" * 64, "cache_hit": True}
    env1 = {"key": "b" * 64, "cache_hit": False}
    job: dict[str, Any] = {
        **{k: None for k in SUMMARY_KEYS},  # what the SDK's job dict always has
        "project": {"manifest_id": "c" * 64, "files": 3},
        "task_list": [
            {"index": 1, "state": "PREPARING", "attempt": 1, "environment": env1},
            {"index": 0, "state": "RUNNING", "attempt": 1, "environment": env0},
        ],
    }
    shown = detail(job)
    assert shown["project"] == job["project"] and shown["environment"] == env0
    assert [(t["index"], t["state"], t["environment"]) for t in shown["task_list"]] == [
        (1, "PREPARING", env1),
        (0, "RUNNING", env0),
    ]
    assert detail({**job, "project": None, "task_list": []})["environment"] is None


def test_wait_says_preparing_then_the_environment_once_per_attempt() -> None:
    """What `submit --wait` prints as WatchJobs brings the job again and again."""
    env = {"key": "ab" * 16, "cache_hit": True, "source": "uv.lock", "python": "3.11.7"}

    def job(state: str, attempt: int = 1, environment: dict[str, Any] | None = None) -> dict[str, Any]:
        task = {"index": 0, "state": state, "agent": "box", "attempt": attempt, "environment": environment}
        return {"id": "j1", "state": "RUNNING", "task_list": [task]}

    said: set[tuple[str, int, int]] = set()
    preparing = "task 0: PREPARING on box: the project's files and environment (uv's log: tensorfleet logs j1)"
    ready = "task 0: environment abababababab: cache hit (uv.lock, python 3.11.7)"
    assert _project_steps(job("ASSIGNED"), said) == []
    assert _project_steps(job("PREPARING"), said) == [preparing]
    assert _project_steps(job("PREPARING"), said) == []  # the same change again: nothing new
    assert _project_steps(job("RUNNING", environment=env), said) == [ready]
    assert _project_steps(job("RUNNING", environment=env), said) == []
    assert _project_steps(job("PREPARING", attempt=2), said) == [preparing]  # a retry prepares again
    assert _shown_state(job("PREPARING")) == "PREPARING" and _shown_state(job("RUNNING")) == "RUNNING"
    image_job = {**job("PREPARING"), "project": None, "spec": {"dataset_version": {"name": "shapes", "version": 1}}}
    assert _project_steps(image_job, set()) == ["task 0: PREPARING on box: its dataset (the log: tensorfleet logs j1)"]
    assert _shown_state({**job("PREPARING"), "state": "CANCELLED"}) == "CANCELLED"


def test_names_with_control_characters_are_shown_escaped_on_one_line() -> None:
    assert printable("ok.txt") == "ok.txt" and printable("résumé ü.txt") == "résumé ü.txt"
    assert printable("two\nlines\x1b[31mred\u202egnp.exe\x00") == "two\\nlines\\x1b[31mred\\u202egnp.exe\\x00"
