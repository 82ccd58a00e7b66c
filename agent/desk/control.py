"""`tensorfleet-agent desk status|pause|resume`: the owner talks to the running agent through a unix socket in its
data dir (0600, like the data dir itself: only the owner's account). One JSON line each way."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tensorfleet_agent.core.types import DeskStatus

log = logging.getLogger(__name__)
SOCKET_NAME = "desk.sock"
MAX_REQUEST = 4096


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


class DeskControl:
    def __init__(self, data_dir: Path, status: Callable[[], DeskStatus], set_paused: Callable[[bool], Any]) -> None:
        self.path = socket_path(data_dir)
        self._status = status
        self._set_paused = set_paused
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)  # a stale one from a killed agent (the data dir lock is ours)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            writer.write(json.dumps(self.answer(line[:MAX_REQUEST])).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("desk control: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def answer(self, line: bytes) -> dict[str, Any]:
        try:
            op = json.loads(line).get("op")
        except (ValueError, AttributeError):
            return {"error": "expected one JSON object with an op: status, pause or resume"}
        if op == "pause":
            self._set_paused(True)
        elif op == "resume":
            self._set_paused(False)
        elif op != "status":
            return {"error": f"unknown op {op!r}: status, pause or resume"}
        return status_dict(self._status())


def status_dict(status: DeskStatus) -> dict[str, Any]:
    state = "paused" if status.paused else "owner_active" if status.owner_active else "lending"
    return {"state": state, **dataclasses.asdict(status)}


def ask(data_dir: Path, op: str, timeout: float = 5.0) -> dict[str, Any]:
    """Client side (the CLI): OSError when no agent in desk mode listens there."""
    path = socket_path(data_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"op": op}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer
