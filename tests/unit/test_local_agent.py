"""serve's local agent (controller/local_agent.py): started at once when its data dir is free, else once the agent
still draining on it leaves; its join token on stdin, never in its environment; stopped with the controller."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tensorfleet_agent.datadir_lock import DataDirLock
from tensorfleet_desktop.controller import local_agent as module
from tensorfleet_desktop.controller.local_agent import LocalAgent

FAKE_AGENT = """
import json, os, sys, time
argv = sys.argv[1:]
ready = argv[argv.index("--ready-file") + 1]
token = sys.stdin.readline().strip() if "--join-token-stdin" in argv else ""
secrets = sorted(name for name in os.environ if name.startswith("TENSORFLEET_") or name.startswith("AWS_"))
with open(ready + ".tmp", "w") as fh:
    json.dump({"port": 4321, "token": token, "argv": argv, "secrets": secrets}, fh)
os.replace(ready + ".tmp", ready)
time.sleep(60)
"""


@pytest.fixture
def fake_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "agent_command", lambda: [sys.executable, "-c", FAKE_AGENT])
    monkeypatch.setenv("TENSORFLEET_CLUSTER_TOKEN", "tfc-cluster")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-secret")
    monkeypatch.setenv("TENSORFLEET_MDNS_INTERFACES", "127.0.0.1")  # a setting, not a secret: it stays


async def test_it_starts_at_once_on_a_free_dir_with_its_token_on_stdin(tmp_path: Path, fake_agent: None) -> None:
    agent = LocalAgent(tmp_path, slots=2, metrics_port=0)
    assert agent.spawn_if_free()
    try:
        assert await agent.wait_ready() == 4321
        said = json.loads(agent.ready_file.read_text())
        assert said["token"] == agent.join_token and agent.join_token.startswith("tfj-")
        names = said["secrets"]  # the environment's TENSORFLEET_* and AWS_* names
        assert "TENSORFLEET_CLUSTER_TOKEN" not in names and "AWS_SECRET_ACCESS_KEY" not in names
        assert "TENSORFLEET_MDNS_INTERFACES" in names
        argv = said["argv"]
        assert argv[argv.index("--data-dir") + 1] == str(tmp_path / "local-agent")
        assert argv[argv.index("--cpu-slots") + 1] == "2" and argv[argv.index("--metrics-port") + 1] == "0"
        assert "--no-advertise" in argv and "--exit-with-pid" in argv
    finally:
        await agent.stop(timeout=5)
    assert agent.proc is not None and agent.proc.poll() is not None


async def test_it_waits_for_the_agent_still_draining_on_its_dir(tmp_path: Path, fake_agent: None) -> None:
    (tmp_path / "local-agent").mkdir()
    draining = DataDirLock(tmp_path / "local-agent", "tensorfleet-agent")
    draining.acquire()
    agent = LocalAgent(tmp_path, insecure=True)
    try:
        assert not agent.spawn_if_free() and agent.proc is None
        agent.launch()
        ready = asyncio.create_task(agent.wait_ready())
        await asyncio.sleep(0.5)
        assert not ready.done() and agent.proc is None  # not beside the other one
        draining.release()
        assert await asyncio.wait_for(ready, 10) == 4321
        said = json.loads(agent.ready_file.read_text())
        assert "--insecure" in said["argv"] and said["token"] == "" and agent.join_token == ""
    finally:
        draining.release()
        await agent.stop(timeout=5)


async def test_an_agent_that_exits_at_once_is_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module, "agent_command", lambda: [sys.executable, "-c", "import sys; sys.exit(3)"])
    agent = LocalAgent(tmp_path)
    assert agent.spawn_if_free()
    with pytest.raises(RuntimeError, match=r"the local agent exited \(3\); see .*local-agent\.log"):
        await agent.wait_ready()
