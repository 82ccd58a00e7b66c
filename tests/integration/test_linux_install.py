"""packaging/linux/install.sh staged into a DESTDIR: what lands where, and what the systemd unit runs."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "packaging" / "linux" / "install.sh"


def fake_build(folder: Path, exe: str) -> Path:
    folder.mkdir(parents=True)
    (folder / exe).write_text("#!/bin/sh\necho 'tensorfleet-agent 0.1.0'\n")
    (folder / exe).chmod(0o755)
    (folder / "_internal").mkdir()
    return folder


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_install_stages_the_agent_service_and_the_desktop_entry(tmp_path: Path) -> None:
    agent = fake_build(tmp_path / "dist" / "tensorfleet-agent", "tensorfleet-agent")
    desktop = fake_build(tmp_path / "dist" / "tensorfleet", "tensorfleet")
    dest = tmp_path / "root"
    out = subprocess.run(
        [str(INSTALL), "--agent-from", str(agent), "--desktop-from", str(desktop)],
        env={**os.environ, "DESTDIR": str(dest)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "installed tensorfleet-agent.service" in out.stdout
    service = unit(dest / "etc/systemd/system/tensorfleet-agent.service")["Service"]
    assert service["ExecStart"].startswith("/opt/tensorfleet-agent/tensorfleet-agent --data-dir /var/lib/tensorfleet/")
    assert service["User"] == "tensorfleet" and service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) > 60  # longer than the drain
    assert (dest / "opt/tensorfleet-agent/tensorfleet-agent").stat().st_mode & 0o111
    assert os.readlink(dest / "usr/local/bin/tensorfleet-agent") == "/opt/tensorfleet-agent/tensorfleet-agent"
    env_file = dest / "etc/tensorfleet/agent.env"
    assert env_file.stat().st_mode & 0o777 == 0o640
    entry = unit(dest / "usr/share/applications/tensorfleet.desktop")["Desktop Entry"]
    assert entry["Exec"] == "/opt/tensorfleet/tensorfleet gui" and entry["Icon"] == "tensorfleet"
    assert (dest / "usr/share/icons/hicolor/scalable/apps/tensorfleet.svg").exists()
    # a second run replaces the program and keeps the edited settings
    env_file.write_text("TENSORFLEET_AGENT_ARGS=--name edited\n")
    subprocess.run([str(INSTALL), "--agent-from", str(agent)], env={**os.environ, "DESTDIR": str(dest)}, check=True)
    assert "edited" in env_file.read_text()


def test_install_refuses_a_folder_that_is_not_a_build(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(INSTALL), "--agent-from", str(tmp_path)],
        env={**os.environ, "DESTDIR": str(tmp_path / "root")},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "is not a packaged agent" in out.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_units_parse(tmp_path: Path) -> None:
    for name in ("tensorfleet-agent.service", "tensorfleet-serve.service"):
        text = (ROOT / "packaging/linux" / name).read_text().replace("@AGENT_BIN@", "/bin/true")
        text = text.replace("@TENSORFLEET_BIN@", "/bin/true")
        (tmp_path / name).write_text(text)
        out = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True)
        # any complaint about our unit: an unknown key, a value systemd cannot parse ("ignoring"), a refusal
        problems = [line for line in out.stderr.splitlines() if name in line]
        assert out.returncode == 0 and not problems, out.stderr
