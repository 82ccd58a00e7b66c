"""Which uv an agent runs: the `uv` package's, and in a packaged (PyInstaller) agent the one in its bundle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import uv

from tensorfleet_agent.runtime import uv_run
from tensorfleet_agent.runtime.uv_run import EnvBuildError, run_uv, uv_binary


def test_an_installed_agent_runs_the_uv_of_the_uv_package() -> None:
    assert uv_binary() == uv.find_uv_bin()
    assert Path(uv_binary()).is_file()


def test_a_packaged_agent_runs_the_uv_in_its_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundled = tmp_path / "bin" / "uv"
    bundled.parent.mkdir()
    bundled.write_bytes(b"")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert uv_binary() == str(bundled)
    bundled.unlink()  # a bundle without it: uv's own search, which looks beside the uv package
    assert uv_binary() == uv.find_uv_bin()


async def test_no_uv_at_all_is_a_retryable_build_failure_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> str:
        raise FileNotFoundError("Could not find the uv binary in any of the following locations: /nowhere")

    monkeypatch.setattr(uv_run, "uv_binary", missing)
    lines: list[str] = []
    with pytest.raises(EnvBuildError) as caught:
        await run_uv(["--version"], cwd=Path.cwd(), env={}, sink=lines.append, timeout_s=10)
    assert not caught.value.permanent  # the agent's install is broken, not the project's requirements
    assert "no uv executable" in caught.value.reason and "/nowhere" in caught.value.reason
