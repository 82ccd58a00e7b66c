"""Distribute one dataset version to 8 agents on the simulated LAN: controller-only vs peer-to-peer (issue 20).

Every host (the controller's and each agent's) sits in its own network namespace on one bridge, its link limited
both ways to a fixed rate (200 Mbit/s by default), so the controller's uplink is the bottleneck as on a real LAN. The
link is shared fairly per other host (`--link fair`, htb classes: a real NIC's default fq_codel and a switch port
share it per flow, so an agent's telemetry to the controller does not wait behind its streams to seven peers), or
is one FIFO token bucket (`--link fifo`, `tc tbf`: the simulation before). Three phases, each a fresh cluster on the
same namespaces:

- one: a single agent reads the dataset (the time of one agent's copy, the yardstick);
- controller: `serve --no-peer-transfer`, 8 agents read it at once (the controller pushes every copy: about 8x);
- peers: the default, 8 agents at once (they fetch from each other what one already holds; goal <= 1.5x one copy).

The 8 agents read it as the ranks of one script job naming the dataset (`--shape gang`, each agent has one slot), or
as 8 jobs each pinned to one agent (`--shape jobs`); "ready" is when a task's script runs (the dataset tree is
mounted before it starts; it counts the files), measured from the submit. Prints
JSON: the ready times, per-agent bytes from peers / controller / store (the task's `dataset_transfer`, or the
controller's 'sent dataset' events where the controller does not report it yet), how many times the controller
declared an agent LOST (`agents_lost`: each re-places a gang) and the ratio to one agent's copy.

Needs root (network namespaces); traffic never leaves them. Usage:
    sudo .venv/bin/python benchmarks/dataset_bench.py [--size 1GiB] [--agents 8] [--rate 200mbit]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ["TENSORFLEET_MDNS_INTERFACES"] = "127.0.0.1"  # each daemon is given its namespace's address instead

from helpers.lan import Lan, lan_unavailable_reason  # noqa: E402
from helpers.lan_cluster import LanCluster  # noqa: E402

NAME = "bench"
GOAL = 1.5  # all agents ready within this many times one agent's copy
FILE_BYTES = 64 * 2**20  # the dataset is files of this size (8 chunks each) and a few small ones
READY_SCRIPT = """
import os, time
from tensorfleet_agent import task
root = task.dataset_dir()
print("files", sum(len(files) for _, _, files in os.walk(root)))
print("ready_at", time.time())
"""
SENT = re.compile(r"sent dataset \S+ to (\S+?): (\d+) blob\(s\), (\d+) bytes")
UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)i?b?", text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 256MiB)")
    return int(float(match.group(1)) * UNITS[match.group(2)])


def rate_bits(rate: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", rate.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a tc rate: {rate!r} (e.g. 200mbit)")
    return float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2)]


def make_dataset(root: Path, size: int, seed: int = 20) -> None:
    """Incompressible files: size // FILE_BYTES big ones (chunked), the rest as small files in class folders."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    left = size
    for i in range(size // FILE_BYTES):
        (root / "shards").mkdir(exist_ok=True)
        with (root / "shards" / f"shard-{i:04d}.bin").open("wb") as fh:
            for _ in range(FILE_BYTES // 2**20):
                fh.write(rng.randbytes(2**20))
        left -= FILE_BYTES
    small = 256 * 2**10
    for i in range((left + small - 1) // small):
        folder = root / "images" / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(rng.randbytes(min(small, left)))
        left -= small


def serve_flags() -> set[str]:
    """The `tensorfleet serve` flags this checkout has (`--no-peer-transfer` may not have landed yet)."""
    text = subprocess.run(
        [sys.executable, "-m", "tensorfleet_desktop", "serve", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    return set(re.findall(r"--[a-z][a-z-]+", text))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _sent_by_events(client: Any, job_id: str) -> dict[str, int]:
    """Phase A: what the controller says it pushed ('sent dataset NAME:vN to AGENT: N blob(s), B bytes in S s')."""
    sent = {"bytes_from_controller": 0, "blobs_from_controller": 0}
    for event in client.call("watch", job_id, timeout=60):
        if event["kind"] == "task_state" and (m := SENT.search(event.get("message", ""))):
            sent["blobs_from_controller"] += int(m.group(2))
            sent["bytes_from_controller"] += int(m.group(3))
    return sent


def run_phase(
    lan: Lan, hosts: list[str], data: Path, work: Path, extra: list[str], timeout: float, shape: str
) -> dict[str, Any]:
    """A fresh cluster (controller on ctl, an agent on each of `hosts`): upload, then one job of a rank per agent
    ("gang") or a job pinned to each agent ("jobs"); wait; each agent's ready time and bytes."""
    work.mkdir(parents=True)
    cluster = LanCluster(lan, work)
    cluster.env["XDG_CACHE_HOME"] = str(work / "xdg-cache")  # the upload's hash cache stays in the phase's dir
    # and so does the controller's runtime file (its certificate, read by the client): another simulated LAN
    # running beside this one has a controller at the same address
    cluster.env["TENSORFLEET_RUNTIME_DIR"] = str(work / "runtime")
    try:
        for host in hosts:
            cluster.add_agent(host)
        cluster.add_controller(*extra)
        cluster.start()
        client = cluster.client
        began = time.monotonic()
        version = client.call("upload_dataset_version", data, NAME, timeout=timeout)
        upload_s = time.monotonic() - began
        source = {"name": "ready.py", "source": READY_SCRIPT}
        ref = f"{NAME}:{version['version']}"
        if shape == "gang" and len(hosts) > 1:  # one job, a rank per agent (each has one slot): co-readers
            specs = [{"name": "ready", "script": source, "dataset": ref, "num_workers": len(hosts), "max_retries": 0}]
        else:  # a job pinned to each agent
            specs = [
                {
                    "name": f"ready-{h}",
                    "script": source,
                    "dataset": ref,
                    "constraints": {"on": [f"agent-{h}"]},
                    "max_retries": 0,
                }
                for h in hosts
            ]
        t0 = time.time()
        job_ids = [client.submit(spec)["id"] for spec in specs]
        agents: list[dict[str, Any]] = []
        for job_id in job_ids:
            job = client.call("wait", job_id, timeout, timeout=timeout + 30)
            if job["state"] != "SUCCEEDED":
                raise RuntimeError(f"job {job_id} ended {job['state']}: {job['error']}")
            said = [(r["task_index"], r["line"].split()) for r in client.logs(job_id)]
            for task in job["task_list"]:
                mine = [words for index, words in said if index == task["index"]]
                ready_at = next(float(w[1]) for w in mine if w[:1] == ["ready_at"])
                files = next(int(w[1]) for w in mine if w[:1] == ["files"])
                if files != version["files"]:
                    raise RuntimeError(f"{task['agent']}'s task saw {files} file(s) of {version['files']}")
                row: dict[str, Any] = {"agent": task["agent"], "ready_s": round(ready_at - t0, 3)}
                transfer = task.get("dataset_transfer")
                row |= transfer if transfer else _sent_by_events(client, job_id)
                agents.append(row)
        if sorted(a["agent"] for a in agents) != sorted(f"agent-{h}" for h in hosts):
            raise RuntimeError(f"the tasks ran on {[a['agent'] for a in agents]}, not one on each agent")
        return {
            "all_ready_s": max(a["ready_s"] for a in agents),
            "upload_s": round(upload_s, 2),
            "dataset_bytes": version["bytes"],
            "dataset_files": version["files"],
            "bytes_from_peers": sum(a.get("bytes_from_peers", 0) for a in agents),
            "bytes_from_controller": sum(a.get("bytes_from_controller", 0) for a in agents),
            "agents": agents,
            "agents_lost": _lost(work / "controller.log"),
        }
    finally:
        cluster.stop()


def _lost(log: Path) -> int:
    """How many times the controller declared an agent LOST (each re-places the gang: the mounts start over)."""
    try:
        return sum("LOST: " in line for line in log.read_text(errors="replace").splitlines())
    except FileNotFoundError:
        return -1


def save_logs(phase_dir: Path, to: Path) -> None:
    to.mkdir(parents=True, exist_ok=True)
    for log in phase_dir.glob("*.log"):
        shutil.copy(log, to / log.name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--size", type=parse_size, default=2**30, help="dataset size (default 1GiB; e.g. 256MiB)")
    p.add_argument("--agents", type=int, default=8)
    p.add_argument("--rate", default="200mbit", help="every host link's rate, both ways (tc tbf; default 200mbit)")
    p.add_argument(
        "--link",
        choices=("fair", "fifo"),
        default="fair",
        help="fair (default): each link shared per other host (htb classes), as a real NIC's fq_codel and a switch "
        "port share it per flow; fifo: one tbf queue (a small flow waits behind every bulk stream on the link)",
    )
    p.add_argument("--phases", default="one,controller,peers", help="which phases to run (comma-separated)")
    p.add_argument(
        "--shape",
        choices=("gang", "jobs"),
        default="gang",
        help="gang: one job with a rank on each agent (default); jobs: a job pinned to each agent, submitted at once",
    )
    p.add_argument("--work", type=Path, help="working folder (default: a new one under /tmp, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the working folder (logs, data dirs)")
    p.add_argument("--json", type=Path, help="also write the result here")
    p.add_argument("--logs", type=Path, help="copy each phase's daemon logs here (the data dirs are removed)")
    args = p.parse_args()
    rate_bits(args.rate)
    if reason := lan_unavailable_reason():
        sys.exit(f"dataset_bench: the simulated LAN is unavailable: {reason}")
    work = args.work or Path(tempfile.mkdtemp(prefix="tf-dataset-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    # the source, the controller's copy, every agent's copy (+ a margin for chunks being assembled)
    need = int(args.size * (args.agents + 3) * 1.15)
    free = shutil.disk_usage(work).free
    if free < need:
        sys.exit(f"dataset_bench: {need / 2**30:.1f} GiB needed under {work}, {free / 2**30:.1f} GiB free (use --size)")
    flags = serve_flags()
    peer_switch = "--no-peer-transfer" in flags
    hosts = [f"h{i}" for i in range(1, args.agents + 1)]
    lan = Lan(["ctl", *hosts], prefix=f"tfdb{os.getpid() % 10000}")
    one_copy_s = args.size * 8 / rate_bits(args.rate)
    result: dict[str, Any] = {
        "benchmark": "dataset_bench",
        "size_bytes": args.size,
        "agents": args.agents,
        "rate": args.rate,
        "link": args.link,
        "shape": args.shape,
        "link_one_copy_s": round(one_copy_s, 2),
        "peer_transfer_switch": peer_switch,
        "load_before": load(),
        "goal_ratio": GOAL,
        "phases": {},
    }
    try:
        lan.build()
        for name in lan.hosts:
            lan.limit_rate(name, args.rate, fair=args.link == "fair")
        data = work / "data"
        if not data.exists():
            make_dataset(data, args.size)
        timeout = max(120.0, one_copy_s * args.agents * 4)
        for phase in phases:
            extra = ["--no-peer-transfer"] if phase == "controller" and peer_switch else []
            targets = hosts[:1] if phase == "one" else hosts
            print(f"dataset_bench: phase {phase} ({len(targets)} agent(s), load {load()})", file=sys.stderr)
            try:
                figures = run_phase(lan, targets, data, work / phase, extra, timeout, args.shape)
            finally:  # a failed phase's logs are the ones worth reading
                if args.logs:
                    save_logs(work / phase, args.logs / phase)
                if not args.keep:
                    shutil.rmtree(work / phase, ignore_errors=True)
            figures["load_after"] = load()
            result["phases"][phase] = figures
    finally:
        lan.teardown()
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    one = result["phases"].get("one", {}).get("all_ready_s")
    for phase in ("controller", "peers"):
        figures = result["phases"].get(phase)
        if figures and one:
            figures["ratio_to_one"] = round(figures["all_ready_s"] / one, 2)
    if (peers := result["phases"].get("peers")) and "ratio_to_one" in peers:
        result["goal_met"] = peers["ratio_to_one"] <= GOAL
    if not peer_switch:
        result["note"] = "serve has no --no-peer-transfer yet: both 8-agent phases ran as the checkout dispatches"
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
