"""The committed protobuf code is what scripts/gen_proto.py produces from proto/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) regenerates the protocol code")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    committed = ROOT / "agent" / "_generated"
    fresh = {p.name: p.read_text() for p in tmp_path.iterdir() if p.is_file()}
    ours = {p.name: p.read_text() for p in committed.iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(ours), "generated file set differs: run scripts/gen_proto.py"
    stale = [name for name in fresh if fresh[name] != ours[name]]
    assert not stale, f"stale generated code {stale}: run scripts/gen_proto.py and commit"


def test_generated_imports_point_at_the_package_home() -> None:
    text = (ROOT / "agent" / "_generated" / "agent_pb2_grpc.py").read_text()
    assert "from tensorfleet.v1 import" not in text
    assert "from tensorfleet_agent._generated import agent_pb2" in text


def test_compiled_resources_are_fresh(tmp_path: Path) -> None:
    pytest.importorskip("PySide6", reason="pyside6-rcc (desktop extra) compiles the icons")
    out = tmp_path / "rc.py"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_resources.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )

    def body(path: Path) -> list[str]:  # the header names the Qt version that compiled it
        return [line for line in path.read_text().splitlines() if not line.startswith("#")]

    committed = ROOT / "tensorfleet_desktop" / "ui" / "_resources_rc.py"
    assert body(out) == body(committed), "stale compiled resources: run scripts/gen_resources.py and commit"
