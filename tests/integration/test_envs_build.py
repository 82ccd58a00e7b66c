"""The env cache with real uv runs against a wheelhouse built here (UV_OFFLINE, no index, a private uv cache):
builds, cache hits, one build for two tasks, uv's refusals, the agent's torch reused, LRU eviction, a crash."""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from helpers.wheelhouse import UV, build_wheel, offline_env, write_project
from tensorfleet_agent.runtime import envs
from tensorfleet_agent.runtime.envs import EnvBuildError, EnvCache, EnvSpec
from tensorfleet_agent.runtime.uv_run import run_uv

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tinyb 1.0 and 1.1, tinyc (with a console script), tinya (needs tinyb and torch), a stand-in numpy 1.0.0 (a
    release the agent does not have); torch is absent on purpose."""
    root = tmp_path_factory.mktemp("wheels")
    house = root / "house"
    build_wheel(house, root, "tinyb", "1.0.0")
    build_wheel(house, root, "tinyb", "1.1.0")
    code = "VERSION = '2.0.0'\n\ndef main() -> None:\n    print('tinyc', VERSION)\n"
    build_wheel(house, root, "tinyc", "2.0.0", code=code, scripts={"tinyc": "tinyc:main"})
    build_wheel(house, root, "tinya", "1.0.0", ("tinyb>=1", "torch>=2.0,<99"))
    build_wheel(house, root, "numpy", "1.0.0", code="__version__ = VERSION = '1.0.0'\n")
    assert not list(house.glob("torch*"))
    return house


@pytest.fixture
def uv_environ(wheelhouse: Path, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, **offline_env(wheelhouse, tmp_path / "uv-cache")}


def _requirements(text: str) -> EnvSpec:
    return EnvSpec.from_files("requirements.txt", {"requirements.txt": text.encode()})


def _run(env: envs.Env, code: str) -> str:
    out = subprocess.run([str(env.python), "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _no_uv(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a cache hit ran uv")


async def test_a_requirements_env_is_built_once_then_served_from_the_cache(
    tmp_path: Path, uv_environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = EnvCache(tmp_path / "envs", environ=uv_environ)
    spec = _requirements("tinyb==1.0.0\ntinyc\n")
    lines: list[str] = []
    started = time.monotonic()
    with await cache.ensure(spec, lines.append) as env:
        build_s = time.monotonic() - started
        assert not env.cache_hit and env.build_seconds > 0
        assert _run(env, "import tinyb, tinyc; print(tinyb.VERSION, tinyc.VERSION)") == "1.0.0 2.0.0"
        script = await asyncio.to_thread(subprocess.run, [str(env.bin_dir / "tinyc")], capture_output=True, text=True)
        assert script.stdout == "tinyc 2.0.0\n", script  # built elsewhere, renamed into place: scripts still run
    assert any("Installed 2 packages" in line for line in lines), lines  # uv's own output, streamed
    assert any(line.startswith("$ uv pip install") for line in lines)

    monkeypatch.setattr(envs, "run_uv", _no_uv)
    again = EnvCache(tmp_path / "envs", environ=uv_environ)  # a restarted agent finds it on disk
    started = time.monotonic()
    hit_lines: list[str] = []
    with await again.ensure(spec, hit_lines.append) as env2:
        hit_s = time.monotonic() - started
        assert env2.cache_hit and env2.key == env.key and env2.build_seconds == 0
    assert again.builds_started == 0
    (info,) = await again.list()
    assert (info.key, info.jobs, info.source, info.in_use) == (env.key, 2, "requirements.txt", 0)
    assert info.size > 0
    print(f"requirements env: build {build_s:.3f} s, cache hit {hit_s:.4f} s")
    assert hit_s < build_s


async def test_the_key_follows_the_files_and_the_index_settings(tmp_path: Path, uv_environ: dict[str, str]) -> None:
    a = EnvCache(tmp_path / "envs", environ=uv_environ)
    b = EnvCache(tmp_path / "envs", environ={**uv_environ, "UV_INDEX_STRATEGY": "unsafe-best-match"})
    spec = _requirements("tinyb\n")
    assert a.key(spec) == a.key(_requirements("tinyb\n"))
    assert a.key(spec) != a.key(_requirements("tinyb==1.0.0\n"))
    assert a.key(spec) != b.key(spec)


async def test_a_pyproject_env_holds_the_dependencies_not_the_project(
    tmp_path: Path, uv_environ: dict[str, str]
) -> None:
    project = write_project(tmp_path, "trainer", deps=("tinyb==1.1.0",))
    spec = EnvSpec.from_dir(project, "auto")
    assert spec is not None and spec.kind == "pyproject"
    cache = EnvCache(tmp_path / "envs", environ=uv_environ)
    with await cache.ensure(spec, lambda _l: None) as env:
        assert _run(env, "import tinyb; print(tinyb.VERSION)") == "1.1.0"
        # The code comes with each job's snapshot, so the env (keyed by pyproject.toml) must not freeze a copy.
        assert _run(env, "import importlib.util as u; print(u.find_spec('trainer'))") == "None"


async def test_a_uv_lock_project_is_synced_frozen(tmp_path: Path, uv_environ: dict[str, str]) -> None:
    project = write_project(tmp_path, "locked", deps=("tinyb",))
    lock = await asyncio.to_thread(
        subprocess.run,
        [UV, "lock", "--offline"],
        cwd=project,
        env=uv_environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lock.returncode == 0, lock.stderr
    assert 'version = "1.1.0"' in (project / "uv.lock").read_text()  # tinyb's newest in the wheelhouse
    spec = EnvSpec.from_dir(project, "auto")
    assert spec is not None and spec.kind == "uv.lock" and set(spec.files) == {"uv.lock", "pyproject.toml"}
    cache = EnvCache(tmp_path / "envs", environ=uv_environ)
    lines: list[str] = []
    with await cache.ensure(spec, lines.append) as env:
        assert _run(env, "import tinyb; print(tinyb.VERSION)") == "1.1.0"
    assert any(line.startswith("$ uv sync --frozen") for line in lines), lines


async def test_two_tasks_needing_one_env_share_one_build(tmp_path: Path, uv_environ: dict[str, str]) -> None:
    cache = EnvCache(tmp_path / "envs", environ=uv_environ)
    first: list[str] = []
    second: list[str] = []
    a, b = await asyncio.gather(
        cache.ensure(_requirements("tinyc\n"), first.append), cache.ensure(_requirements("tinyc\n"), second.append)
    )
    assert cache.builds_started == 1
    assert a.path == b.path and a.path.is_dir()
    assert any("Installed 1 package" in line for line in first)
    assert any("Installed 1 package" in line for line in second)  # the joiner sees the build's log too
    assert [i.in_use for i in await cache.list()] == [2]
    a.release()
    b.release()
    b.release()  # a second release of one hold is a no-op
    assert [i.in_use for i in await cache.list()] == [0]


async def test_an_unresolvable_requirement_fails_permanently_with_uvs_reason(
    tmp_path: Path, uv_environ: dict[str, str]
) -> None:
    cache = EnvCache(tmp_path / "envs", environ=uv_environ)
    started = time.monotonic()
    with pytest.raises(EnvBuildError) as caught:
        await cache.ensure(_requirements("tinyb>=5\n"), lambda _l: None)
    assert time.monotonic() - started < 10
    err = caught.value
    assert err.permanent
    assert "No solution found" in err.reason and "tinyb" in err.reason, err.reason
    assert await cache.list() == []
    assert list((tmp_path / "envs" / ".building").iterdir()) == []
    assert cache._in_use == {}


def _agent_torch() -> md.Distribution:
    """The torch installed next to the agent, found without importing it (seconds)."""
    return _agent_dist("torch")


def _agent_dist(name: str) -> md.Distribution:
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        pytest.skip(f"{name} is not installed next to the agent")


@pytest.mark.slow
async def test_a_torch_requirement_reuses_the_agents_torch(tmp_path: Path, uv_environ: dict[str, str]) -> None:
    torch = _agent_torch()
    torch_init = str(torch.locate_file("torch/__init__.py"))
    cache = EnvCache(tmp_path / "envs", environ=uv_environ)
    lines: list[str] = []
    with await cache.ensure(_requirements("tinya\n"), lines.append) as env:
        code = "import os, torch, tinya; print(os.path.realpath(torch.__file__)); print(torch.__version__)"
        run = await asyncio.to_thread(
            subprocess.run, [str(env.python), "-c", code], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        path, version = run.stdout.splitlines()[-2:]
        assert path == await asyncio.to_thread(os.path.realpath, torch_init)
        assert version == torch.version
        assert not list(env.path.glob("lib/python*/site-packages/torch/"))  # no second copy of torch
        assert "NumPy" not in run.stderr, run.stderr  # the agent's numpy came along: no "Failed to initialize NumPy"
    assert not any("+ torch" in line for line in lines), lines


async def test_the_agents_numpy_is_reused_unless_the_requirements_want_another(
    tmp_path: Path, uv_environ: dict[str, str]
) -> None:
    numpy = _agent_dist("numpy")
    numpy_init = await asyncio.to_thread(os.path.realpath, str(numpy.locate_file("numpy/__init__.py")))
    cache = EnvCache(tmp_path / "envs", environ=uv_environ)
    lines: list[str] = []
    show = "import os, numpy; print(os.path.realpath(numpy.__file__)); print(numpy.__version__)"
    with await cache.ensure(_requirements("numpy>=1\ntinyb\n"), lines.append) as env:
        assert _run(env, show).splitlines() == [numpy_init, numpy.version]
        assert not list(env.path.glob("lib/python*/site-packages/numpy/"))  # linked, not copied
    assert any(line.startswith("reusing the agent's") and f"numpy {numpy.version}" in line for line in lines), lines
    assert not any("+ numpy" in line for line in lines), lines
    with await cache.ensure(_requirements("numpy==1.0.0\n"), lines.append) as pinned:  # not the agent's release
        path, version = _run(pinned, show).splitlines()
        assert version == "1.0.0" and path.startswith(str(pinned.path)), path
    assert any("+ numpy==1.0.0" in line for line in lines), lines


async def test_a_torch_the_agent_cannot_satisfy_is_left_to_uv(tmp_path: Path, uv_environ: dict[str, str]) -> None:
    _agent_torch()
    cache = EnvCache(tmp_path / "envs", environ=uv_environ)
    with pytest.raises(EnvBuildError) as caught:  # torch 1.x is not the agent's and is not in the wheelhouse
        await cache.ensure(_requirements("torch<2\n"), lambda _l: None)
    assert caught.value.permanent and "torch" in caught.value.reason


@pytest.mark.slow
async def test_lru_eviction_keeps_the_env_in_use(tmp_path: Path, uv_environ: dict[str, str]) -> None:
    cache = EnvCache(tmp_path / "envs", limit_bytes=1 << 40, environ=uv_environ)
    held = await cache.ensure(_requirements("tinyb==1.0.0\n"), lambda _l: None)  # oldest, but in use
    with await cache.ensure(_requirements("tinyb==1.1.0\n"), lambda _l: None) as older:
        pass
    with await cache.ensure(_requirements("tinyc\n"), lambda _l: None) as newer:
        pass
    cache.limit_bytes = 1
    with await cache.ensure(_requirements("tinyb==1.0.0\ntinyc\n"), lambda _l: None) as newest:
        keys = {i.key for i in await cache.list()}
        assert keys == {held.key, newest.key}  # older and newer went, least recently used first; held stays
    assert not (tmp_path / "envs" / older.key).exists() and not (tmp_path / "envs" / newer.key).exists()
    assert _run(held, "import tinyb; print(tinyb.VERSION)") == "1.0.0"
    assert await cache.prune() == [newest.key]  # prune spares what a task holds
    held.release()
    assert await cache.prune() == [held.key]
    assert await cache.list() == []
    assert [p.name for p in (tmp_path / "envs").iterdir() if not p.name.startswith(".")] == []


CRASHING_AGENT = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from pathlib import Path
    from tensorfleet_agent.runtime import envs

    real = envs.run_uv

    async def slow_after_venv(args, **kw):
        await real(args, **kw)
        if args[0] == "venv":
            print("VENV-READY", flush=True)
            await asyncio.sleep(600)

    envs.run_uv = slow_after_venv
    spec = envs.EnvSpec.from_files("requirements.txt", {"requirements.txt": b"tinyc\\n"})
    asyncio.run(envs.EnvCache(Path(sys.argv[1]), environ=json.loads(sys.argv[2])).ensure(spec, print))
    """
)


@pytest.mark.slow
async def test_a_crash_mid_build_leaves_no_env_that_looks_ready(tmp_path: Path, uv_environ: dict[str, str]) -> None:
    root = tmp_path / "envs"
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_AGENT,
        str(root),
        json.dumps(uv_environ),
        stdout=asyncio.subprocess.PIPE,
        env={**uv_environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "build" / "pypath"), *sys.path])},
    )
    try:
        assert agent.stdout is not None
        async with asyncio.timeout(60):
            while b"VENV-READY" not in await agent.stdout.readline():
                pass
        assert list((root / ".building").iterdir())  # a half-built env exists
        agent.send_signal(signal.SIGKILL)
    finally:
        if agent.returncode is None:
            agent.kill()
        await agent.wait()
    assert [p.name for p in root.iterdir()] == [".building"]  # nothing under a key: nothing looks ready
    cache = EnvCache(root, environ=uv_environ)
    assert await cache.list() == []
    assert not (root / ".building").exists()  # the restart swept the half build
    with await cache.ensure(_requirements("tinyc\n"), lambda _l: None) as env:
        assert _run(env, "import tinyc; print(tinyc.VERSION)") == "2.0.0"


async def test_a_cancelled_build_kills_uv_and_leaves_nothing(
    tmp_path: Path, uv_environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = run_uv
    venv_made = asyncio.Event()

    async def slow_after_venv(args: Sequence[str], **kw: Any) -> None:
        await real(args, **kw)
        if args[0] == "venv":
            venv_made.set()
            await asyncio.sleep(600)

    monkeypatch.setattr(envs, "run_uv", slow_after_venv)
    cache = EnvCache(tmp_path / "envs", environ=uv_environ)
    task = asyncio.create_task(cache.ensure(_requirements("tinyc\n"), lambda _l: None))
    await asyncio.wait_for(venv_made.wait(), 30)
    await cache.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list((tmp_path / "envs" / ".building").iterdir()) == []
    assert await cache.list() == [] and cache._in_use == {}


async def test_an_unreachable_index_is_a_failure_worth_retrying(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    environ = {
        **os.environ,
        "UV_INDEX_URL": f"http://127.0.0.1:{port}/simple",
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "UV_NO_CONFIG": "1",
        "UV_HTTP_RETRIES": "0",
    }
    environ.pop("UV_OFFLINE", None)
    cache = EnvCache(tmp_path / "envs", environ=environ)
    with pytest.raises(EnvBuildError) as caught:
        await cache.ensure(_requirements("tinyq\n"), lambda _l: None)
    assert not caught.value.permanent
    assert "Connection refused" in caught.value.reason, caught.value.reason


async def test_a_lock_pinning_the_agents_torch_family_release_does_not_install_it(
    tmp_path: Path, wheelhouse: Path, uv_environ: dict[str, str]
) -> None:
    """torch itself cannot be locked offline here, so filelock (in torch's closure) stands in for it: a wheel of
    the agent's release is in the wheelhouse for `uv lock`, and the sync must reuse the agent's copy instead."""
    _agent_torch()
    version = md.version("filelock")
    house = tmp_path / "house"
    house.mkdir()
    for wheel in await asyncio.to_thread(lambda: list(wheelhouse.iterdir())):
        (house / wheel.name).symlink_to(wheel)
    build_wheel(house, tmp_path, "filelock", version)
    environ = {**uv_environ, **offline_env(house, tmp_path / "uv-cache")}
    project = write_project(tmp_path, "family", deps=(f"filelock=={version}", "tinyc"))
    lock = await asyncio.to_thread(
        subprocess.run, [UV, "lock", "--offline"], cwd=project, env=environ, capture_output=True, text=True
    )
    assert lock.returncode == 0, lock.stderr
    cache = EnvCache(tmp_path / "envs", environ=environ)
    lines: list[str] = []
    spec = EnvSpec.from_dir(project)
    assert spec is not None
    with await cache.ensure(spec, lines.append) as env:
        assert any("--no-install-package filelock" in line for line in lines), lines
        assert not list(env.path.glob("lib/python*/site-packages/filelock/"))
        real = await asyncio.to_thread(os.path.realpath, str(md.distribution("filelock").locate_file("filelock")))
        assert (
            _run(env, "import os, filelock, tinyc; print(os.path.dirname(os.path.realpath(filelock.__file__)))") == real
        )


async def test_included_requirement_files_are_built_and_a_vanished_env_is_rebuilt(
    tmp_path: Path, uv_environ: dict[str, str]
) -> None:
    project = tmp_path / "project"
    (project / "reqs").mkdir(parents=True)
    (project / "reqs" / "train.txt").write_text("-r base.txt\ntinyc\n")
    (project / "reqs" / "base.txt").write_text("tinyb==1.0.0\n")
    spec = EnvSpec.from_dir(project, "reqs/train.txt")
    assert spec is not None
    cache = EnvCache(tmp_path / "envs", environ=uv_environ)
    with await cache.ensure(spec, lambda _l: None) as env:
        assert _run(env, "import tinyb, tinyc; print(tinyb.VERSION)") == "1.0.0"
    await asyncio.to_thread(shutil.rmtree, tmp_path / "envs" / env.key)  # someone cleaned the disk by hand
    with await cache.ensure(spec, lambda _l: None) as again:
        assert not again.cache_hit and cache.builds_started == 2
        assert _run(again, "import tinyc; print(tinyc.VERSION)") == "2.0.0"


async def test_a_packaged_agent_builds_envs_on_an_installed_python(
    tmp_path: Path, uv_environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding 3: a frozen agent's sys.executable is the agent program; its envs are built on a Python uv
    finds on the machine, without the agent's packages linked in, and the key names that Python's version."""
    program = tmp_path / "tensorfleet-agent"
    program.write_text("#!/bin/sh\nexit 2\n")
    program.chmod(0o755)
    unfrozen = EnvCache(tmp_path / "envs", environ=uv_environ).key(_requirements("tinyb==1.0.0\n"))
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(program))
    cache = EnvCache(tmp_path / "envs", environ=uv_environ)
    python = await cache.base_python()
    assert python.found_by == "uv python find" and not python.shares_agent_packages
    lines: list[str] = []
    with await cache.ensure(_requirements("tinyb==1.0.0\n"), lines.append) as env:
        assert env.key != unfrozen  # nothing of the agent's linked in: another env
        out = _run(env, "import platform, sys, tinyb; print(platform.python_version(), tinyb.VERSION)")
        assert out == f"{python.version} 1.0.0" and env.python_version == python.version
        assert not (env.path / "tensorfleet-base").exists()
    assert any(f"--python {python.path}" in line for line in lines), lines
    assert not any("reusing the agent's" in line for line in lines), lines
    (info,) = await cache.list()
    assert info.python == f"cpython-{python.version}"
