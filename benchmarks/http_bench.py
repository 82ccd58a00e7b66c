#!/usr/bin/env python3
"""The HTTP API beside gRPC, in one run, on one controller: requests/s and latency percentiles of reading a job
(`GET /api/v1/jobs/{id}` vs GetJob) and of creating one (`POST /api/v1/jobs` vs SubmitJob), sequential and with
8 client threads; and what enabling `--http-port` costs the controller: start-up time to ready and idle memory,
with and without it.

Clients: HTTP through `requests.Session` (keep-alive; what a Python script uses) and through `http.client` (one raw
keep-alive connection, the floor of the HTTP stack); gRPC through the Python SDK's `Client` (what the CLI uses).

Usage: python benchmarks/http_bench.py [--reads 2000] [--creates 300]. Loopback only; no agent (created jobs queue).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ["TENSORFLEET_MDNS_INTERFACES"] = "127.0.0.1"

from helpers.controller import ControllerProcess  # noqa: E402
from tensorfleet_desktop.client import Client  # noqa: E402

SPEC = {"algorithm": "noop", "name": "bench"}


def timed(call: Callable[[], Any], n: int) -> dict[str, float]:
    """Sequential: per-call latency percentiles and calls per second."""
    for _ in range(min(50, n)):  # warm the connection and both ends
        call()
    latencies = []
    t0 = time.perf_counter()
    for _ in range(n):
        s = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - s)
    wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "requests_per_s": round(n / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3),
    }


def concurrent_rate(make_call: Callable[[], Callable[[], Any]], n: int, threads: int = 8) -> float:
    """Calls per second with `threads` clients at once (each thread its own connection where the client has one)."""
    per_thread = n // threads
    calls = [make_call() for _ in range(threads)]
    for call in calls:
        call()
    barrier = threading.Barrier(threads + 1)

    def run(call: Callable[[], Any]) -> None:
        barrier.wait()
        for _ in range(per_thread):
            call()

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(run, call) for call in calls]
        barrier.wait()
        t0 = time.perf_counter()
        for f in futures:
            f.result()
        wall = time.perf_counter() - t0
    return round(per_thread * threads / wall, 1)


class RawHttp:
    """One keep-alive connection through http.client: the HTTP stack without requests' own overhead."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        self.conn.request(method, path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        assert 200 <= response.status < 300, (response.status, data[:300])
        result: dict[str, Any] = json.loads(data)
        return result


def rss_mib(pid: int) -> float:
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def start(tmp: Path, name: str, with_http: bool) -> tuple[ControllerProcess, float]:
    extra = ["--no-mdns", *(["--http-port", "0"] if with_http else [])]
    t0 = time.monotonic()
    controller = ControllerProcess(tmp / name, extra_args=extra).start()
    return controller, round(time.monotonic() - t0, 3)


def cost_of_enabling(tmp: Path, rounds: int = 3) -> dict[str, Any]:
    """Start-up to ready and idle RSS of the controller process alone, without and with --http-port (alternating,
    median of `rounds`)."""
    figures: dict[str, dict[str, list[float]]] = {k: {"startup_s": [], "idle_rss_mib": []} for k in ("grpc", "both")}
    for i in range(rounds):
        for key, with_http in (("grpc", False), ("both", True)):
            controller, startup = start(tmp, f"cost-{key}-{i}", with_http)
            try:
                time.sleep(3)
                assert controller.proc is not None
                figures[key]["startup_s"].append(startup)
                figures[key]["idle_rss_mib"].append(rss_mib(controller.proc.pid))
            finally:
                controller.stop()
    out = {k: {m: round(statistics.median(v), 3) for m, v in f.items()} for k, f in figures.items()}
    out["http_adds"] = {
        "startup_s": round(out["both"]["startup_s"] - out["grpc"]["startup_s"], 3),
        "idle_rss_mib": round(out["both"]["idle_rss_mib"] - out["grpc"]["idle_rss_mib"], 1),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--creates", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tf-http-bench-") as folder:
        tmp = Path(folder)
        controller, _ = start(tmp, "bench", with_http=True)
        try:
            port = int(controller.info["http_port"])
            token = (controller.data_dir / "client.token").read_text().strip()
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {token}"
            base = f"http://127.0.0.1:{port}/api/v1"
            raw = RawHttp(port, token)
            with Client(controller.address) as client:
                job_id = client.submit(SPEC)["id"]
                path = f"/api/v1/jobs/{job_id}"
                body = json.dumps(SPEC).encode()

                def sdk_submit() -> Any:
                    return client.submit(SPEC)

                def new_session() -> Callable[[], Any]:
                    s = requests.Session()
                    s.headers["Authorization"] = f"Bearer {token}"
                    return lambda: s.get(f"{base}/jobs/{job_id}").raise_for_status()

                reads = {
                    "http_requests": timed(lambda: session.get(f"{base}/jobs/{job_id}").raise_for_status(), args.reads),
                    "http_raw": timed(lambda: raw.call("GET", path), args.reads),
                    "grpc_sdk": timed(lambda: client.job(job_id), args.reads),
                }
                reads["http_requests"]["requests_per_s_8_threads"] = concurrent_rate(new_session, args.reads)
                reads["grpc_sdk"]["requests_per_s_8_threads"] = concurrent_rate(
                    lambda: lambda: client.job(job_id), args.reads
                )
                creates = {
                    "http_requests": timed(
                        lambda: session.post(f"{base}/jobs", json=SPEC).raise_for_status(), args.creates
                    ),
                    "http_raw": timed(lambda: raw.call("POST", "/api/v1/jobs", body), args.creates),
                    "grpc_sdk": timed(sdk_submit, args.creates),
                }
            assert controller.proc is not None
            after_rss = rss_mib(controller.proc.pid)
        finally:
            controller.stop()
        cost = cost_of_enabling(tmp)
    print(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)},
                "get_job": reads,
                "create_job": creates,
                "controller_rss_after_mib": after_rss,
                "enabling_http": cost,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
