"""Peer-to-peer dataset transfer on the simulated LAN (issue 20): a second agent gets a dataset version from the first
instead of the controller, and a peer killed mid-transfer is replaced by another holder without the download
starting over.

A controller on `ctl`, agents on h1..h3 (real processes, mDNS, TLS, pairing). Each job is one script pinned to one
agent (`constraints.on`) that prints every file's sha256; its task's `dataset_transfer` says where the bytes came
from. The kill is timed by the serving peer's own link counter (its eth0 has sent part of the data), not a sleep.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from helpers.lan import Lan
from helpers.lan_cluster import LanCluster
from tensorfleet_agent.core.manifest import CHUNK_BYTES
from tensorfleet_agent.runtime.peer_blobs import READ_BYTES

pytestmark = [pytest.mark.slow, pytest.mark.lan]
LAN_HOSTS = ["ctl", "h1", "h2", "h3"]
LAN_AGENTS = ["h1", "h2", "h3"]
NAME = "peers"
MANIFEST_AT_MOST = 4096  # the version's manifest (11 files: ~1.5 KB) comes with the task, from the controller
WIRE_OVERHEAD = 1.05  # bytes on the link per byte of data at most: TCP/IP, TLS and gRPC framing
SLOW_LINK = "40mbit"  # the two holders' links while the third agent reads from them: a few seconds of transfer
READER = """
import hashlib, os
from tensorfleet_agent import task
root = task.dataset_dir()
for dirpath, _, files in os.walk(root):
    for name in files:
        path = os.path.join(dirpath, name)
        print("file", os.path.relpath(path, root), hashlib.sha256(open(path, "rb").read()).hexdigest())
"""


def _dataset(root: Path) -> dict[str, str]:
    """Three chunked files (served by peers as byte ranges of the assembled file) and small ones; path -> sha256."""
    rng = random.Random(20)
    sizes = {"shards/a.bin": 2 * CHUNK_BYTES + 4096, "shards/b.bin": CHUNK_BYTES + 1, "shards/c.bin": CHUNK_BYTES}
    sizes |= {f"images/class{i % 2}/{i}.png": 30_000 + i for i in range(8)}
    expected = {}
    for rel, size in sizes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(size)
        path.write_bytes(data)
        expected[rel] = hashlib.sha256(data).hexdigest()
    return expected


def _read_on(cluster: LanCluster, host: str, ref: str) -> str:
    """Submit the reader pinned to `host`'s agent; its job id."""
    spec = {
        "name": f"read-{host}",
        "script": {"name": "read.py", "source": READER},
        "dataset": ref,
        "constraints": {"on": [f"agent-{host}"]},
        "max_retries": 0,
    }
    job_id: str = cluster.client.submit(spec)["id"]
    return job_id


def _ended(cluster: LanCluster, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """The ended job (SUCCEEDED), its task, its dataset_transfer and the files its script saw (path -> sha256)."""
    client = cluster.client
    job = client.call("wait", job_id, timeout, timeout=timeout + 10)
    assert job["state"] == "SUCCEEDED", (job["state"], job["error"])
    task = job["task_list"][0]
    seen = dict(line.split()[1:3] for row in client.logs(job["id"]) if (line := row["line"]).startswith("file "))
    return {"job": job, "task": task, "files": seen, "transfer": task.get("dataset_transfer") or {}}


def _link_bytes(lan: Lan, host: str, way: str = "tx") -> int:
    """Bytes the host's eth0 has sent ("tx") or received ("rx"), frames whole (its namespace's own counter)."""
    out = subprocess.run(
        ["ip", "-j", "-s", "-n", lan.hosts[host].netns, "link", "show", "dev", "eth0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(json.loads(out)[0]["stats64"][way]["bytes"])


@pytest.fixture(scope="module")
def version(lan_cluster: LanCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("peers-data") / NAME
    expected = _dataset(root)
    uploaded = lan_cluster.client.call("upload_dataset_version", root, NAME, use_cache=False)
    return {**uploaded, "expected": expected, "ref": f"{NAME}:{uploaded['version']}"}


def test_the_second_agent_gets_the_data_from_the_first(
    lan_cluster: LanCluster, version: dict[str, Any], fault_figures: Any
) -> None:
    size = version["bytes"]
    first = _ended(lan_cluster, _read_on(lan_cluster, "h1", version["ref"]))
    assert first["files"] == version["expected"]
    assert first["transfer"]["bytes_from_controller"] >= size, first["transfer"]  # nobody held it: pushed
    assert first["transfer"]["bytes_from_peers"] == 0, first["transfer"]

    second = _ended(lan_cluster, _read_on(lan_cluster, "h2", version["ref"]))
    assert second["files"] == version["expected"]
    moved = second["transfer"]
    assert moved["bytes_from_peers"] == size, moved  # every file and chunk from agent-h1 ...
    assert moved["bytes_from_controller"] <= MANIFEST_AT_MOST, moved  # ... the controller sent the manifest only
    assert moved["peers_used"] == 1 and moved["peer_failures"] == 0, moved
    fault_figures(second_agent_seconds=moved["seconds"], bytes_from_peers=moved["bytes_from_peers"])


def test_a_peer_killed_mid_transfer_is_replaced(
    lan_cluster: LanCluster, lan: Lan, version: dict[str, Any], fault_figures: Any
) -> None:
    """agent-h3 reads from h1 and h2 (both hold the version after the test above); the first of them to have sent
    a chunk's worth is killed; the other serves the rest: the same attempt succeeds, nothing from the controller,
    and the bytes fetched are one copy exactly (a broken blob resumes at its offset; nothing is fetched twice)."""
    size = version["bytes"]
    holders = ["h1", "h2"]
    for host in holders:
        lan.limit_rate(host, SLOW_LINK)
    try:
        before = {host: _link_bytes(lan, host) for host in holders}
        received = _link_bytes(lan, "h3", "rx")
        submitted = _read_on(lan_cluster, "h3", version["ref"])
        deadline = time.monotonic() + 30
        killed = None
        while killed is None:
            sent = {host: _link_bytes(lan, host) - before[host] for host in holders}
            killed = next((h for h in holders if sent[h] > CHUNK_BYTES // 2), None)
            assert time.monotonic() < deadline, f"no peer served agent-h3 a half chunk in 30 s: {sent}"
            time.sleep(0.02)
        lan_cluster.agents[killed].kill()
        third = _ended(lan_cluster, submitted)
        received = _link_bytes(lan, "h3", "rx") - received
    finally:
        for host in holders:
            lan.clear_link_faults(host)
    survivor = next(h for h in holders if h != killed)
    assert third["files"] == version["expected"]
    moved = third["transfer"]
    assert third["task"]["attempt"] == 1, third["task"]  # replaced inside the download, not by a retry
    assert moved["peer_failures"] >= 1 and moved["peers_used"] == 2, moved
    assert moved["bytes_from_controller"] <= MANIFEST_AT_MOST, moved
    assert moved["bytes_from_peers"] == size, moved
    # the broken streams resumed at their offsets (bytes_from_peers above counts every byte kept, so a blob fetched
    # again from 0 would exceed the size): the link carried one copy and its framing, plus at most one message per
    # broken stream that was on the wire when its peer died (gRPC hands over whole messages: a part is lost)
    lost_in_flight = moved["peer_failures"] * READ_BYTES
    assert received < size * WIRE_OVERHEAD + lost_in_flight, (received, size, moved["peer_failures"])
    fault_figures(
        killed=killed,
        survivor=survivor,
        transfer_seconds=moved["seconds"],
        link_bytes_per_dataset_byte=round(received / size, 3),
        peer_failures=moved["peer_failures"],
    )
    lan_cluster.agents[killed].start()  # the module's cluster whole again
