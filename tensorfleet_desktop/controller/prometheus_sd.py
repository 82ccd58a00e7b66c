"""Prometheus file-based service discovery: the controller keeps a targets file listing itself and every
agent that serves /metrics, so a Prometheus `file_sd_configs` entry finds agents as they come and go."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tensorfleet_desktop.controller.fleet import AgentRecord

SCRAPED_STATES = ("ONLINE", "DRAINING")


def targets(controller: str | None, agents: Iterable[AgentRecord]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    if controller:
        groups.append({"targets": [controller], "labels": {"job": "tensorfleet-controller"}})
    for record in sorted(agents, key=lambda r: r.node_id):
        port = record.info.metrics_port if record.info else 0
        if not port or record.public_state() not in SCRAPED_STATES:
            continue
        host = record.address.rpartition(":")[0] or record.address
        groups.append(
            {
                "targets": [f"{host}:{port}"],
                "labels": {"job": "tensorfleet-agent", "agent": record.name, "node_id": record.node_id},
            }
        )
    return groups


class TargetsFile:
    """Rewrites the file (atomically, off the event loop) whenever the set of targets changes."""

    def __init__(self, path: Path, controller: str | None) -> None:
        self.path = path
        self.controller = controller
        self._last = ""
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prometheus-sd")

    def update(self, agents: Iterable[AgentRecord]) -> None:
        text = json.dumps(targets(self.controller, agents), indent=2) + "\n"
        if text != self._last:
            self._last = text
            self._writer.submit(self._write, text)

    def _write(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
