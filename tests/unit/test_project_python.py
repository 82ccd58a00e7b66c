"""The interpreter project envs are built on (review finding 3): the agent's own Python when it is one, a real
interpreter when the agent is packaged (PyInstaller: sys.executable is the agent program), --python /
$TENSORFLEET_PROJECT_PYTHON when given, and a clear permanent error saying how to fix it when there is none.
A packaged agent is imitated by setting sys.frozen and pointing sys.executable at a program that is no Python."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tensorfleet_agent import __main__ as agent_main
from tensorfleet_agent.daemon import AgentDaemon
from tensorfleet_agent.runtime import envs
from tensorfleet_agent.runtime.envs import EnvBuildError, EnvCache, EnvSpec, Interpreter, find_python

SPEC = EnvSpec.from_files("requirements.txt", {"requirements.txt": b"tinyb\n"})


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This process looks like a packaged agent: frozen, its executable a program that is not a Python."""
    program = tmp_path / "bundle" / "tensorfleet-agent"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\necho 'I am the agent, not a Python' >&2\nexit 2\n")
    program.chmod(0o755)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(program))
    return program


def _path_with(tmp_path: Path, **links: str) -> str:
    """A PATH holding only `links` (name -> target)."""
    folder = tmp_path / "path"
    folder.mkdir(exist_ok=True)
    for name, target in links.items():
        (folder / name).symlink_to(target)
    return str(folder)


def _version_of(python: Path) -> str:
    code = "import platform; print(platform.python_version())"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def _no_python(why: str) -> Interpreter:
    raise EnvBuildError(envs.NO_PYTHON.format(why=why, min="3.9"), permanent=True)


def test_an_unpackaged_agent_builds_envs_on_its_own_python() -> None:
    python = find_python(None, {})
    assert python.path == sys.executable and python.version == platform.python_version()
    assert python.shares_agent_packages and python.bin_dir == os.path.dirname(sys.executable)


def test_a_packaged_agent_finds_an_installed_python_with_uv(frozen: Path, tmp_path: Path) -> None:
    python = find_python(None, dict(os.environ), link_dir=tmp_path / "links")
    assert python.found_by == "uv python find"
    assert python.path != str(frozen) and Path(python.path).is_file()
    assert not python.shares_agent_packages  # the packaged agent's own packages are not for this interpreter
    assert Path(python.bin_dir) == tmp_path / "links"
    assert _version_of(Path(python.bin_dir) / "python") == python.version  # `python` in a command runs it
    assert _version_of(Path(python.bin_dir) / "python3") == python.version


def test_a_packaged_agent_falls_back_to_python3_on_path(
    frozen: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envs, "_uv_python_find", lambda _environ: None)  # uv finds none (or is missing)
    python = find_python(None, {"PATH": _path_with(tmp_path, python3=_real_python())}, link_dir=tmp_path / "links")
    assert python.found_by == "python3 on PATH" and python.path == str(tmp_path / "path" / "python3")
    assert _version_of(Path(python.bin_dir) / "python") == python.version


def _real_python() -> str:
    """A real interpreter, whatever this test process pretends to be."""
    return sys._base_executable if hasattr(sys, "_base_executable") else "/usr/bin/python3"


def test_a_packaged_agent_without_python_says_how_to_fix_it(
    frozen: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envs, "_uv_python_find", lambda _environ: None)
    with pytest.raises(EnvBuildError) as caught:
        find_python(None, {"PATH": _path_with(tmp_path)})
    err = caught.value
    assert err.permanent
    assert "no Python interpreter for project jobs" in err.reason
    assert "install python3 (>= 3.9)" in err.reason and "--python PATH" in err.reason
    assert "TENSORFLEET_PROJECT_PYTHON" in err.reason


def test_a_packaged_agent_skips_a_python3_that_is_too_old_or_broken(
    frozen: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envs, "_uv_python_find", lambda _environ: None)
    old = tmp_path / "python3.8"
    old.write_text('#!/bin/sh\necho \'{"implementation": "cpython", "version": "3.8.10", "abi": ""}\'\n')
    old.chmod(0o755)
    with pytest.raises(EnvBuildError) as caught:
        find_python(None, {"PATH": _path_with(tmp_path, python3=str(old))})
    assert "is Python 3.8.10; project jobs need 3.9 or newer" in caught.value.reason, caught.value.reason


@pytest.mark.parametrize("configured", ["/nonexistent/python3", "no-such-python-anywhere"])
def test_a_configured_python_that_does_not_exist_is_named(configured: str) -> None:
    with pytest.raises(EnvBuildError) as caught:
        find_python(configured, {"PATH": "/nonexistent"})
    assert caught.value.permanent and f"--python {configured}" in caught.value.reason


def test_a_configured_program_that_is_no_python_is_refused(frozen: Path) -> None:
    with pytest.raises(EnvBuildError) as caught:
        find_python(str(frozen), {})
    assert "is not a Python interpreter that runs here (I am the agent, not a Python)" in caught.value.reason


def test_a_configured_python_wins_and_shares_the_agents_packages_only_with_its_abi(tmp_path: Path) -> None:
    python = find_python(_real_python(), {"PATH": os.environ["PATH"]}, link_dir=tmp_path / "links")
    assert python.found_by == "--python" and python.version == platform.python_version()
    assert python.shares_agent_packages  # an unpackaged agent, the same ABI: its torch and numpy can be linked


def test_the_variable_configures_the_cache(tmp_path: Path, frozen: Path) -> None:
    cache = EnvCache(tmp_path / "envs", environ={"PATH": "/nonexistent", envs.PYTHON_VAR: _real_python()})
    python = cache.interpreter()
    assert python.found_by == "--python" and python.path == _real_python()
    assert (tmp_path / "envs" / ".python" / "bin" / "python").is_symlink()


async def test_the_key_holds_the_chosen_interpreters_version_and_a_packaged_agent_links_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interp(version: str, shares: bool) -> Interpreter:
        return Interpreter("/opt/py/bin/python3", "cpython", version, "cpython-3xx", shares, "/opt/py/bin", "--python")

    keys = {}
    for version in ("3.10.4", "3.12.1"):
        monkeypatch.setattr(envs, "find_python", lambda *_a, version=version, **_k: interp(version, False))
        cache = EnvCache(tmp_path / version, environ={})
        keys[version] = cache.key(SPEC)
        assert cache._base_packages() == []  # not the agent's ABI: no torch or numpy links
        assert (await cache.base_python()).version == version
    assert keys["3.10.4"] != keys["3.12.1"]


async def test_a_cache_without_python_fails_each_env_permanently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envs, "find_python", lambda *_a, **_k: _no_python("none here"))
    cache = EnvCache(tmp_path / "envs", environ={})
    with pytest.raises(EnvBuildError) as caught:
        await cache.ensure(SPEC, lambda _line: None)
    assert caught.value.permanent and "none here" in caught.value.reason
    assert cache.builds_started == 0


async def test_the_agent_says_at_start_when_project_jobs_have_no_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(envs, "find_python", lambda *_a, **_k: _no_python("none here"))
    with caplog.at_level(logging.WARNING, logger="tensorfleet_agent.daemon"):
        await AgentDaemon._check_project_python(EnvCache(tmp_path / "envs", environ={}))
    (record,) = [r for r in caplog.records if "no Python interpreter" in r.getMessage()]
    assert record.levelno == logging.WARNING and "--python PATH" in record.getMessage()


def test_the_agent_option_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(agent_main.PYTHON_VAR, raising=False)
    assert agent_main.PYTHON_VAR == envs.PYTHON_VAR
    assert agent_main._project_python(None) is None
    assert agent_main._project_python("python3") == "python3"
    monkeypatch.setenv(agent_main.PYTHON_VAR, _real_python())
    assert agent_main._project_python(None) == _real_python()
    assert agent_main.build_parser().parse_args(["--python", "/x/python"]).python == "/x/python"
    with pytest.raises(ValueError, match="--python /nonexistent/python: not an executable file"):
        agent_main._project_python("/nonexistent/python")
    monkeypatch.setenv(agent_main.PYTHON_VAR, "/nonexistent/python")
    with pytest.raises(ValueError, match=r"\$TENSORFLEET_PROJECT_PYTHON /nonexistent/python"):
        agent_main._project_python(None)
