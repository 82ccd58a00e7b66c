"""The journals' layout is written down beside them (tasks/FORMAT): an agent refuses a data dir whose journals a
newer agent wrote, naming the problem, instead of taking them for broken and removing them, as agents older than the
file do with today's journals (docs/architecture.md, "On-disk layout")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tensorfleet_agent.runtime.journal import FORMAT_FILE, JOURNAL_FORMAT, Journal


def test_loading_says_which_layout_it_writes(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    assert Journal(root).load() == []
    assert (root / FORMAT_FILE).read_text().strip() == str(JOURNAL_FORMAT)
    assert (root / FORMAT_FILE).stat().st_mode & 0o077 == 0
    assert Journal(root).load() == []  # its own format, again


def test_journals_of_a_newer_agent_are_refused_and_left_as_they_are(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    (root / "t1").mkdir(parents=True)
    (root / "t1" / "events.pb").write_bytes(b"a layout this agent cannot read")
    (root / FORMAT_FILE).write_text(f"{JOURNAL_FORMAT + 1}\n")
    with pytest.raises(ValueError, match=r"written by a newer agent \(journal format 3; this agent reads up to 2\)"):
        Journal(root).load()
    assert (root / "t1" / "events.pb").read_bytes() == b"a layout this agent cannot read"
    assert (root / FORMAT_FILE).read_text() == f"{JOURNAL_FORMAT + 1}\n"


def test_an_unreadable_format_file_is_named(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    root.mkdir()
    (root / FORMAT_FILE).write_text("two\n")
    with pytest.raises(ValueError, match="FORMAT: unreadable journal format"):
        Journal(root).load()


def test_the_agent_refuses_to_start_on_a_newer_agents_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "agent"
    (data / "tasks").mkdir(parents=True)
    (data / "tasks" / FORMAT_FILE).write_text(f"{JOURNAL_FORMAT + 1}\n")
    cmd = [sys.executable, "-m", "tensorfleet_agent", "--host", "127.0.0.1", "--port", "0", "--name", "too-old"]
    cmd += ["--data-dir", str(data), "--interfaces", "127.0.0.1"]
    env = {**os.environ, "TENSORFLEET_MDNS_INTERFACES": "127.0.0.1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "cannot start" in result.stderr and "written by a newer agent (journal format 3" in result.stderr
