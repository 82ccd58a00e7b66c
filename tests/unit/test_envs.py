"""The env cache's pure parts: keys, specs, uv's failures classified, disk usage, the torch link farm."""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import os
from pathlib import Path

import pytest

from tensorfleet_agent.runtime import base_packages, envs
from tensorfleet_agent.runtime.envs import EnvSpec, index_settings, key_for
from tensorfleet_agent.runtime.uv_run import REASON_MAX_LINES, classify_failure, uv_reason

NO_SOLUTION = """\
Using Python 3.11.7 environment at: venv
error: No solution found when resolving dependencies
  cause: Because tinyb was not found in the provided package locations and you require tinyb>=5, we can conclude \
that your requirements are unsatisfiable.

hint: Packages were unavailable because the network was disabled. When the network is disabled, registry packages \
may only be read from the cache.""".splitlines()
CONNECT_REFUSED = """\
Using Python 3.11.7 environment at: v2
error: Failed to fetch: http://127.0.0.1:9/simple/tinyq/
  cause: error sending request for url (http://127.0.0.1:9/simple/tinyq/)
  cause: client error (Connect)
  cause: tcp connect error
  cause: Connection refused (os error 111)""".splitlines()
NOT_FOUND_URL = """\
error: Failed to download `tinyq @ http://127.0.0.1:8765/tinyq-1.0-py3-none-any.whl`
  cause: Failed to fetch: http://127.0.0.1:8765/tinyq-1.0-py3-none-any.whl
  cause: HTTP status client error (404 File not found) for url (http://127.0.0.1:8765/tinyq-1.0-py3-none-any.whl)\
""".splitlines()
SERVER_ERROR = """\
error: Failed to fetch: https://mirror.lan/simple/numpy/
  cause: HTTP status server error (503 Service Unavailable) for url (https://mirror.lan/simple/numpy/)""".splitlines()
DISK_FULL = ["error: Failed to install: numpy-2.0.whl", "  cause: No space left on device (os error 28)"]
BAD_LINE = ["error: Failed to parse: `tinyb>=>5`", "  Caused by: Expected a version"]


@pytest.mark.parametrize(
    ("code", "lines", "permanent"),
    [
        (1, NO_SOLUTION, True),
        (2, BAD_LINE, True),
        (1, NOT_FOUND_URL, True),
        (2, CONNECT_REFUSED, False),
        (2, SERVER_ERROR, False),
        (2, DISK_FULL, False),
        (-9, ["Resolved 3 packages in 5ms"], False),
    ],
)
def test_uv_failures_are_classified_by_what_uv_said(code: int, lines: list[str], permanent: bool) -> None:
    err = classify_failure(code, lines)
    assert err.permanent is permanent
    headline = next(line for line in lines if line.startswith("error:")).removeprefix("error: ") if code >= 0 else ""
    assert err.reason.startswith("uv was killed by SIGKILL") if code < 0 else err.reason.startswith(headline)


def test_the_reason_is_uvs_own_message_from_its_error_line_laid_out_evenly() -> None:
    """After "... could not be built from requirements.txt: " comes uv's headline, then its cause and hint lines,
    each four spaces in (uv indents cause by two, hint not at all), no blank lines, nothing uv said before the error."""
    assert uv_reason(NO_SOLUTION) == (
        "No solution found when resolving dependencies\n"
        "    cause: Because tinyb was not found in the provided package locations and you require tinyb>=5, we can "
        "conclude that your requirements are unsatisfiable.\n"
        "    hint: Packages were unavailable because the network was disabled. When the network is disabled, registry "
        "packages may only be read from the cache."
    )
    assert uv_reason(["a", "b"]) == "a\n    b" and uv_reason([]) == "uv printed nothing"


def test_uvs_boxed_form_and_a_parse_errors_caret_keep_their_layout() -> None:
    boxed = [
        "Resolved 3 packages in 2ms",
        "  \u00d7 No solution found when resolving dependencies:",
        "  \u2570\u2500\u25b6 Because nosuchpkg was not found in the package registry and you require nosuchpkg, we "
        "can conclude that your requirements are unsatisfiable.",
    ]
    assert uv_reason(boxed) == "No solution found when resolving dependencies:\n  " + boxed[2]
    parse = [
        "error: Couldn't parse requirement in `r3.txt` at position 0",
        '  cause: no such comparison operator "====", must be one of ~= == != <= >= < > ===',
        "         foo ==== 1",
        "             ^^^^^^",
    ]
    assert uv_reason(parse) == "\n".join(["Couldn't parse requirement in `r3.txt` at position 0", *parse[1:]]).replace(
        "\n", "\n  "
    )  # the caret still points at "===="


def test_a_long_reason_is_cut_saying_how_much_was_left_out() -> None:
    lines = ["error: Failed to build `bad @ file:///p/bad`", *(f"      line {i}" for i in range(100))]
    reason = uv_reason(lines).splitlines()
    assert len(reason) == REASON_MAX_LINES and reason[-1] == "    ... (62 more line(s) in the task's log)"
    assert reason[1] == "        line 0"


def test_a_killed_uv_says_so_then_what_it_printed_last() -> None:
    err = classify_failure(-9, ["Resolved 3 packages in 5ms", "Prepared 1 package"])
    assert (
        err.reason
        == "uv was killed by SIGKILL; what it printed last:\n  Resolved 3 packages in 5ms\n      Prepared 1 package"
    )


BASE = {"files": {"requirements.txt": b"numpy\n"}, "python": "cpython-3.11.7", "platform": "linux-x86_64-glibc"}


@pytest.mark.parametrize(
    "change",
    [
        {"files": {"requirements.txt": b"numpy==2\n"}},
        {"files": {"reqs/requirements.txt": b"numpy\n"}},
        {"python": "cpython-3.12.1"},
        {"platform": "linux-aarch64-glibc"},
        {"index": {"UV_INDEX_URL": "http://mirror.lan/simple"}},
        {"base": "torch==2.13.0+cu128"},
    ],
)
def test_every_input_of_the_key_changes_it(change: dict[str, object]) -> None:
    args: dict[str, object] = {**BASE, "index": {}, "base": "torch==2.13.0+cpu"}
    before = key_for(**args)  # type: ignore[arg-type]
    assert key_for(**args) == before  # type: ignore[arg-type]
    assert key_for(**{**args, **change}) != before  # type: ignore[arg-type]
    assert len(before) == 32 and int(before, 16) >= 0


def test_index_settings_take_uvs_variables_and_its_config_file(tmp_path: Path) -> None:
    config = tmp_path / "uv.toml"
    config.write_text('index-url = "http://mirror.lan/simple"\n')
    env = {"UV_OFFLINE": "1", "UV_FIND_LINKS": "/wheels", "UV_CONFIG_FILE": str(config), "HOME": str(tmp_path)}
    settings = index_settings(env)
    assert settings["UV_OFFLINE"] == "1" and settings["UV_FIND_LINKS"] == "/wheels"
    assert settings[f"file:{config}"] == config.read_text()
    user = tmp_path / "xdg" / "uv" / "uv.toml"
    user.parent.mkdir(parents=True)
    user.write_text('extra-index-url = ["http://other/simple"]\n')
    xdg = index_settings({"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)})
    assert xdg[f"file:{user}"] == user.read_text()
    assert index_settings({"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "UV_NO_CONFIG": "1"}) == {"UV_NO_CONFIG": "1"}


@pytest.mark.parametrize(
    ("source", "files", "problem"),
    [
        ("/etc/requirements.txt", {"/etc/requirements.txt": b""}, "relative path"),
        ("../requirements.txt", {"../requirements.txt": b""}, "relative path"),
        ("requirements.txt", {"other.txt": b""}, "not among the files"),
        ("uv.lock", {"uv.lock": b""}, "needs the pyproject.toml"),
        ("requirements.txt", {}, "at least"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_problem(source: str, files: dict[str, bytes], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        EnvSpec(source=source, files=files)


def test_env_auto_prefers_the_lock_then_pyproject_then_requirements(tmp_path: Path) -> None:
    assert EnvSpec.from_dir(tmp_path) is None
    (tmp_path / "requirements.txt").write_text("numpy\n")
    assert EnvSpec.from_dir(tmp_path).kind == "requirements"  # type: ignore[union-attr]
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\nversion='1'\n")
    assert EnvSpec.from_dir(tmp_path).kind == "pyproject"  # type: ignore[union-attr]
    (tmp_path / "uv.lock").write_text("version = 1\n")
    spec = EnvSpec.from_dir(tmp_path)
    assert spec is not None and spec.kind == "uv.lock" and set(spec.files) == {"uv.lock", "pyproject.toml"}
    assert EnvSpec.from_dir(tmp_path, "none") is None
    assert EnvSpec.from_dir(tmp_path, "requirements.txt").kind == "requirements"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="no such file"):
        EnvSpec.from_dir(tmp_path, "requirements-gpu.txt")


@pytest.mark.parametrize("choice", ["/etc/hostname", "../requirements.txt", "sub/../../requirements.txt", "a\\b.txt"])
def test_an_env_file_outside_the_project_is_refused(tmp_path: Path, choice: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "requirements.txt").write_text("tinyb\n")  # exists, but outside the project
    with pytest.raises(ValueError, match=r"^--env: .*(absolute path|'\.\.'|backslash)"):
        EnvSpec.from_dir(project, choice)


def test_an_env_file_linking_out_of_the_project_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "secret.txt").write_text("tinyb\n")
    (project / "requirements.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ValueError, match="leads outside the project"):
        EnvSpec.from_dir(project, "auto")


def test_disk_usage_counts_a_hardlinked_file_once(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 100_000)
    alone = envs.disk_usage(tmp_path)
    os.link(tmp_path / "d" / "a", tmp_path / "b")
    (tmp_path / "c").symlink_to("/usr")
    assert alone >= 100_000 and envs.disk_usage(tmp_path) < alone + 8192
    assert envs.disk_usage(tmp_path / "missing") == 0


def test_public_version_drops_the_local_build_tag() -> None:
    assert base_packages.public_version("2.13.0+cu128") == "2.13.0"
    assert base_packages.public_version("not a version") == "not a version"


def test_the_torch_closure_is_torch_and_what_it_requires() -> None:
    try:
        md.distribution("torch")
    except md.PackageNotFoundError:
        pytest.skip("torch is not installed next to the agent")
    closure = {p.name: p.version for p in base_packages.base_closure()}
    assert closure["torch"] == md.version("torch")
    with contextlib.suppress(md.PackageNotFoundError):  # a root of its own: torch names it only as optional
        assert closure["numpy"] == md.version("numpy")
    assert {"filelock", "sympy", "mpmath"} <= closure.keys()  # mpmath: required by sympy, not by torch itself
    assert "optree" not in closure  # an extra of torch's, not installed with it
    assert base_packages.base_closure(("no-such-package-here",)) == []


def test_the_link_farm_exposes_packages_and_records_only_its_own_files(tmp_path: Path) -> None:
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (filelock,) = base_packages.base_closure(("filelock",))
    base_packages.link_base_packages(site, [filelock])
    farm = tmp_path / "venv" / base_packages.FARM
    assert (farm / "filelock").resolve() == Path(str(filelock.dist.locate_file("filelock"))).resolve()
    assert (site / "tensorfleet-base.pth").read_text() == "../../../tensorfleet-base\n"
    (record,) = site.glob("filelock-*.dist-info")
    assert (record / "METADATA").read_text() == filelock.dist.read_text("METADATA")
    assert all(line.startswith(record.name + "/") for line in (record / "RECORD").read_text().splitlines())


def test_a_lock_reuses_the_agents_packages_only_at_the_locked_release(tmp_path: Path) -> None:
    dist = md.distribution("packaging")
    mine = base_packages.BasePackage("packaging", dist.version + "+local", dist)
    lock = tmp_path / "uv.lock"
    lock.write_text(
        f'version = 1\n[[package]]\nname = "packaging"\nversion = "{dist.version}"\n'
        '[[package]]\nname = "tinyb"\nversion = "1.0.0"\n'
    )
    assert envs._lock_reuses(lock, [mine]) == ["packaging"]
    lock.write_text('version = 1\n[[package]]\nname = "packaging"\nversion = "0.1"\n')
    assert envs._lock_reuses(lock, [mine]) == []
    lock.write_text("not [ toml")
    with pytest.raises(envs.EnvBuildError, match="not a readable uv lock"):
        envs._lock_reuses(lock, [mine])


def test_a_requirements_file_brings_the_files_it_includes(tmp_path: Path) -> None:
    (tmp_path / "reqs").mkdir()
    (tmp_path / "reqs" / "gpu.txt").write_text("-r base.txt\n--constraint=../constraints.txt\n-r https://x/y.txt\n")
    (tmp_path / "reqs" / "base.txt").write_text("-rcommon.txt\nnumpy\n")
    (tmp_path / "reqs" / "common.txt").write_text("tinyb\n")
    (tmp_path / "constraints.txt").write_text("numpy<3\n")
    spec = EnvSpec.from_dir(tmp_path, "reqs/gpu.txt")
    assert spec is not None and spec.kind == "requirements"
    assert sorted(spec.files) == ["constraints.txt", "reqs/base.txt", "reqs/common.txt", "reqs/gpu.txt"]
    (tmp_path / "reqs" / "common.txt").write_text("-r ../../outside.txt\n")
    with pytest.raises(ValueError, match="outside the project"):
        EnvSpec.from_dir(tmp_path, "reqs/gpu.txt")
    (tmp_path / "reqs" / "common.txt").write_text("-r missing.txt\n")
    with pytest.raises(ValueError, match=r"reqs/missing\.txt .* is not a file"):
        EnvSpec.from_dir(tmp_path, "reqs/gpu.txt")
