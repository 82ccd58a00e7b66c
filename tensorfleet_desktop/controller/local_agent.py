"""`tensorfleet serve`'s local agent: its process, the one-time join token it pairs with, its ready file.

It is started as soon as the controller holds its data dir, before the controller imports its modules and opens
its store: the agent's own start-up (a Python process importing its modules, making its keys, starting its fork
server) then runs beside the controller's instead of after it, which is most of a cold start to a first result.
This module imports little for that reason (no gRPC, no store, and asyncio only in what runs on the loop).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tensorfleet_agent.datadir_lock import holder_of, wait_until_free
from tensorfleet_agent.runtime.commands import CREDENTIAL_VARIABLES, agent_command
from tensorfleet_agent.security.secrets import register

if TYPE_CHECKING:
    import asyncio

LOCAL_AGENT_SECRETS = (
    "TENSORFLEET_CLUSTER_TOKEN",
    "TENSORFLEET_CONTROLLER_TOKEN",
    "TENSORFLEET_MONGODB_URI",
    "TENSORFLEET_JOIN_TOKEN",
    *CREDENTIAL_VARIABLES,
)
START_TIMEOUT = 60.0  # seconds from its spawn to its ready file
FREE_TIMEOUT = 75.0  # seconds the agent of a controller killed a moment ago may take to drain and leave its dir
READY_POLL = 0.01  # seconds between two looks for the ready file (a stat each)


def local_agent_environment(env: dict[str, str]) -> dict[str, str]:
    """The environment of serve's local agent: the controller's without its secrets. The agent pairs with this
    controller only (by a join token it is given separately), needs no client token or store URI, and uploads
    through presigned URLs, so the controller's S3 keys stay here too."""
    return {name: value for name, value in env.items() if name not in LOCAL_AGENT_SECRETS}


class LocalAgent:
    """The agent process `serve` runs beside its controller (data in DATA_DIR/local-agent), exiting with it."""

    def __init__(
        self, data_dir: Path, slots: int | None = None, metrics_port: int | None = None, insecure: bool = False
    ) -> None:
        self.data_dir = data_dir  # the controller's
        self.slots = slots
        self.metrics_port = metrics_port
        self.insecure = insecure
        self.ready_file = data_dir / "local-agent.ready"
        self.log_file = data_dir / "local-agent.log"
        self.join_token = ""  # the one it pairs with (empty when insecure)
        self.proc: subprocess.Popen[bytes] | None = None
        self._spawned_at = 0.0
        self._spawning: asyncio.Task[None] | None = None

    def spawn_if_free(self) -> bool:
        """Start it now (blocking, a few ms) unless the agent of a controller killed a moment ago still drains on
        its data dir: then `launch` waits for that one to leave, without holding up the controller's start."""
        if self.proc is None and holder_of(self.data_dir / "local-agent") is None:
            self._spawn()
        return self.proc is not None

    def launch(self) -> None:
        """Start it in the background once its data dir is free, unless it was started already."""
        import asyncio

        if self.proc is None and self._spawning is None:
            self._spawning = asyncio.create_task(self._spawn_when_free(), name="local-agent-spawn")

    async def _spawn_when_free(self) -> None:
        import asyncio

        holder = await asyncio.to_thread(wait_until_free, self.data_dir / "local-agent", FREE_TIMEOUT)
        if holder is not None:
            raise RuntimeError(f"the local agent's data dir stays in use: {holder.describe()}")
        await asyncio.to_thread(self._spawn)

    def _spawn(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        cmd = [
            *agent_command(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-advertise",
            "--name",
            f"{socket.gethostname()}-local",
            "--data-dir",
            str(self.data_dir / "local-agent"),
            "--ready-file",
            str(self.ready_file),
            "--exit-with-pid",
            str(os.getpid()),
        ]
        if self.slots is not None:
            cmd += ["--cpu-slots", str(self.slots)]
        if self.metrics_port is not None:
            cmd += ["--metrics-port", str(self.metrics_port)]
        env = local_agent_environment(dict(os.environ))
        if self.insecure:
            cmd.append("--insecure")
        else:
            self.join_token = f"tfj-{secrets.token_urlsafe(18)}"
            register(self.join_token)
            cmd.append("--join-token-stdin")  # not the environment: /proc/PID/environ would keep it
        with self.log_file.open("ab") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, env=env)
        self._spawned_at = time.monotonic()
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died at once: wait_ready reports the exit
            proc.stdin.write(self.join_token.encode() + b"\n")
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        self.proc = proc

    async def wait_ready(self) -> int:
        """The port it serves on, once its ready file is there; RuntimeError when it exits or takes too long."""
        import asyncio

        if self._spawning is not None:
            await self._spawning
        proc = self.proc
        assert proc is not None, "launch() or spawn_if_free() first"
        deadline = self._spawned_at + START_TIMEOUT
        while not self.ready_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the local agent exited ({proc.returncode}); see {self.log_file}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local agent did not start within {START_TIMEOUT:.0f} s")
            await asyncio.sleep(READY_POLL)
        return int(json.loads(self.ready_file.read_text())["port"])

    async def stop(self, timeout: float = 70.0) -> None:
        """SIGTERM (it drains its tasks), then SIGKILL after `timeout` seconds."""
        import asyncio

        if self._spawning is not None and not self._spawning.done():
            self._spawning.cancel()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, timeout)
        if proc.poll() is None:
            proc.kill()
