#!/usr/bin/env python3
"""Registry throughput for a 200 MB model, as JSON, each beside the raw peer on the same server and disk.

- S3 (a nanio server on loopback): into the registry = a job saves the model, the controller fetches it from
  the agent and stores it in S3 (artifact event -> job SUCCEEDED, registered); out = `download_model` through
  the SDK. Peers: the minio client's fput_object / fget_object of the same file against the same server.
- file backend: the same two paths with blobs in the data dir; the peer is a plain file copy.

Usage: python benchmarks/registry_bench.py [--mb 200]. mDNS stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ["TENSORFLEET_MDNS_INTERFACES"] = "127.0.0.1"

from helpers.agents import CLUSTER_TOKEN, AgentProcess  # noqa: E402
from helpers.controller import ControllerProcess  # noqa: E402
from helpers.servers import S3_KEY, S3_SECRET, start_nanio  # noqa: E402
from tensorfleet_desktop.client import Client  # noqa: E402

SCRIPT = """
import os
from pathlib import Path
from tensorfleet_agent import task

out = Path(task.checkpoint_dir().parent) / "model.safetensors"
with out.open("wb") as fh:
    for _ in range({mb}):
        fh.write(os.urandom(1 << 20))
task.save_artifact(out, kind="model")
"""


def through_registry(client: Client, mb: int, out: Path) -> dict[str, float]:
    job = client.submit(
        {"algorithm": "script", "script": {"name": "big.py", "source": SCRIPT.format(mb=mb)}, "model_name": "big"}
    )
    final = client.wait(job["id"], timeout=1800)
    assert final["state"] == "SUCCEEDED", final
    # from the artifact event (the agent holds the file) to SUCCEEDED: the controller fetches it, stores it
    # in the blob store and registers the version
    artifact_seen = next(e["time"] for e in client.watch(job["id"]) if e["kind"] == "artifact")
    stored_at = final["finished_at"]
    t0 = time.monotonic()
    record = client.download_model(f"big:{final['model']['version']}", out)
    down = time.monotonic() - t0
    assert out.stat().st_size == mb << 20 and record["size"] == mb << 20
    return {"in_s": round(stored_at - artifact_seen, 2), "out_s": round(down, 2)}


def run_cluster(tmp: Path, mb: int, blobs_args: list[str], env: dict[str, str]) -> dict[str, float]:
    tmp.mkdir(parents=True, exist_ok=True)
    agent = AgentProcess(tmp / "agent", name="bench-agent", cpu_slots=1, spare_workers=1).start()
    controller = ControllerProcess(
        tmp / "ctl", extra_args=blobs_args, env={"TENSORFLEET_CLUSTER_TOKEN": CLUSTER_TOKEN, **env}
    ).start()
    try:
        with Client(controller.address) as client:
            while not any(a["state"] == "ONLINE" and a["paired"] for a in client.agents()):
                time.sleep(0.1)
            return through_registry(client, mb, tmp / "downloaded.safetensors")
    finally:
        controller.stop()
        agent.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    mb = parser.parse_args().mb
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "model_mb": mb}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        sample = tmp / "sample.bin"
        with sample.open("wb") as fh:
            for _ in range(mb):
                fh.write(os.urandom(1 << 20))

        server, endpoint = start_nanio(tmp / "nanio")
        try:
            from minio import Minio

            raw = Minio(endpoint, access_key=S3_KEY, secret_key=S3_SECRET, secure=False)
            raw.make_bucket("raw-peer")
            t0 = time.monotonic()
            raw.fput_object("raw-peer", "sample", str(sample), part_size=64 * 2**20)
            raw_put = time.monotonic() - t0
            t0 = time.monotonic()
            raw.fget_object("raw-peer", "sample", str(tmp / "raw-back.bin"))
            raw_get = time.monotonic() - t0
            creds = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
            s3 = run_cluster(tmp / "s3", mb, ["--blobs", f"s3://models?endpoint={endpoint}&secure=false"], creds)
        finally:
            server.stop()
        out["s3"] = {
            "registry_in_s": s3["in_s"],
            "registry_out_s": s3["out_s"],
            "minio_put_s": round(raw_put, 2),
            "minio_get_s": round(raw_get, 2),
            "ratio_in": round(s3["in_s"] / raw_put, 2),
            "ratio_out": round(s3["out_s"] / raw_get, 2),
        }

        t0 = time.monotonic()
        shutil.copyfile(sample, tmp / "copy.bin")
        copy = time.monotonic() - t0
        local = run_cluster(tmp / "file", mb, [], {})
        out["file"] = {
            "registry_in_s": local["in_s"],
            "registry_out_s": local["out_s"],
            "file_copy_s": round(copy, 2),
            "ratio_in": round(local["in_s"] / copy, 2),
            "ratio_out": round(local["out_s"] / copy, 2),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
