"""A task re-placed after its agent died resumes from the newest checkpoint the controller has (issue 19).

The agent may die between journaling a checkpoint and the controller's copy of it: that newest checkpoint is
then nowhere, but the one before it was copied. The new attempt must continue from that one, not start over."""

from __future__ import annotations

import hashlib
from pathlib import Path

from helpers.core_harness import core, until
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.types import CheckpointSaved
from tensorfleet_desktop.controller.core import Controller


def _store(controller: Controller, data: bytes) -> str:
    """Bytes in the controller's blob store, as a copy from the agent leaves them; their sha256."""
    sha = hashlib.sha256(data).hexdigest()
    path = controller.blobs.path(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha


async def test_a_replaced_task_resumes_from_the_newest_checkpoint_that_was_copied(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    a1 = agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        spec = {"algorithm": "script", "script": {"name": "train.py", "source": "print(1)\n", "args": []}}
        job = await controller.submit(spec, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        first = agents.running()[0]
        copied = _store(controller, b"weights after step 3")
        never = hashlib.sha256(b"weights after step 5").hexdigest()  # journaled, then the agent died: no copy
        a1.blobs.update({copied, never})
        agents.send(first, CheckpointSaved(copied, 20, 3, "last.pt"), CheckpointSaved(never, 20, 5, "last.pt"))
        await until(controller, lambda: len([a for a in job.artifacts if a.kind == "checkpoint"]) == 2)
        agents.lose("a1")
        agents.add("a2")
        await agents.wait(lambda: any(a != first for a in agents.running()))
        second = next(a for a in agents.running() if a != first)
        inputs = {i.name: i.sha256 for i in agents.task(second).spec.inputs}
        assert inputs.get("resume.ckpt") == copied, inputs  # step 3's, not nothing at all
