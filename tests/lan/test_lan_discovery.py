"""Agents in two namespaces found by the controller in a third over real multicast mDNS; a job on each."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.lan import Host, Lan, python

pytestmark = [pytest.mark.slow, pytest.mark.lan]
LAN_HOSTS = ["ctl", "h1", "h2"]


def _wait_file(path: Path, timeout: float, proc: Any, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"process exited {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise TimeoutError(log.read_text())
        time.sleep(0.05)
    return json.loads(path.read_text())


def _cli(ctl: Host, address: str, *args: str) -> Any:
    result = ctl.run([python(), "-m", "tensorfleet_desktop", "--controller", address, *args])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cluster(lan: Lan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Host]]:
    tmp = tmp_path_factory.mktemp("lan")
    # Real security across hosts: agents pair by the shared cluster token; the controller is not on loopback,
    # so it serves TLS and wants its client token; the CLI pins its certificate in a known-controllers file.
    secure_env = {
        "TENSORFLEET_CLUSTER_TOKEN": f"lan-cluster-{secrets.token_hex(8)}",
        "TENSORFLEET_CONTROLLER_TOKEN": f"lan-client-{secrets.token_hex(8)}",
        "TENSORFLEET_KNOWN_CONTROLLERS": str(tmp / "known_controllers.json"),
    }
    saved = {k: os.environ.get(k) for k in secure_env}
    os.environ.update(secure_env)
    procs = []
    for name in ("h1", "h2"):
        host = lan.hosts[name]
        log, ready = tmp / f"{name}.log", tmp / f"{name}.ready"
        proc = host.popen(
            [
                python(),
                "-m",
                "tensorfleet_agent",
                "--host",
                host.address,
                "--port",
                "50051",
                "--name",
                f"agent-{name}",
                "--data-dir",
                str(tmp / name),
                "--interfaces",
                host.address,
                "--cpu-slots",
                "1",
                "--spare-workers",
                "0",
                "--ready-file",
                str(ready),
            ],
            log,
        )
        procs.append(proc)
        _wait_file(ready, 60, proc, log)
    ctl = lan.hosts["ctl"]
    log, ready = tmp / "ctl.log", tmp / "ctl.ready"
    proc = ctl.popen(
        [
            python(),
            "-m",
            "tensorfleet_desktop",
            "serve",
            "--host",
            ctl.address,
            "--port",
            "50050",
            "--data-dir",
            str(tmp / "ctl"),
            "--interfaces",
            ctl.address,
            "--no-local-agent",
            "--ready-file",
            str(ready),
        ],
        log,
    )
    procs.append(proc)
    info = _wait_file(ready, 60, proc, log)
    yield info["address"], ctl
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_agents_on_other_hosts_found_over_multicast(cluster: tuple[str, Host], lan: Lan) -> None:
    address, ctl = cluster
    deadline = time.monotonic() + 20
    while True:
        agents = _cli(ctl, address, "agents", "--json")
        if sum(a["state"] == "ONLINE" for a in agents) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    by_name = {a["name"]: a for a in agents}
    assert set(by_name) == {"agent-h1", "agent-h2"}
    for name in ("h1", "h2"):
        entry = by_name[f"agent-{name}"]
        assert entry["state"] == "ONLINE" and entry["source"] == "mdns" and entry["paired"] is True
        assert len(entry["fingerprint"]) == 64
        assert entry["address"] == f"{lan.hosts[name].address}:50051"


def test_a_job_runs_on_each_host(cluster: tuple[str, Host]) -> None:
    address, ctl = cluster
    for name in ("h1", "h2"):
        job = _cli(
            ctl,
            address,
            "submit",
            "--algorithm",
            "decision_tree",
            "--dataset",
            "wine",
            "--on",
            f"agent-{name}",
            "--wait",
            "--json",
        )
        assert job["state"] == "SUCCEEDED" and job["metrics"]["test_accuracy"] > 0.7
        status = _cli(ctl, address, "status", job["id"], "--json")
        assert status["state"] == "SUCCEEDED"
    jobs = _cli(ctl, address, "jobs", "--json")
    assert len(jobs) == 2


def test_remote_controller_needs_tls_and_its_client_token(cluster: tuple[str, Host], tmp_path: Path) -> None:
    address, ctl = cluster
    known = json.loads(Path(os.environ["TENSORFLEET_KNOWN_CONTROLLERS"]).read_text())
    assert len(known[address]) == 64  # pinned on first use
    wrong = ctl.run(
        [
            "env",
            "TENSORFLEET_CONTROLLER_TOKEN=wrong-token",
            python(),
            "-m",
            "tensorfleet_desktop",
            "--controller",
            address,
            "jobs",
            "--json",
        ]
    )
    assert wrong.returncode == 2 and "client token" in wrong.stderr, wrong.stderr
    missing = ctl.run(
        [
            "env",
            "-u",
            "TENSORFLEET_CONTROLLER_TOKEN",
            python(),
            "-m",
            "tensorfleet_desktop",
            "--controller",
            address,
            "jobs",
        ]
    )
    assert missing.returncode == 2 and "TENSORFLEET_CONTROLLER_TOKEN" in missing.stderr, missing.stderr
    plaintext = ctl.run(
        [
            python(),
            "-c",
            "import grpc, sys; from tensorfleet_agent._generated import "
            "controller_pb2 as c, controller_pb2_grpc as g; ch = grpc.insecure_channel(sys.argv[1]); "
            "g.ControllerServiceStub(ch).ListJobs(c.ListJobsRequest(), timeout=5)",
            address,
        ]
    )
    assert plaintext.returncode != 0  # no plaintext beyond loopback


IMPOSTOR = """
import asyncio, socket, sys
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
from tensorfleet_agent.discovery.interfaces import SERVICE_TYPE
from tensorfleet_agent.security.secrets import cluster_id_of

async def main(address, node_id, cluster_token):
    zc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    info = AsyncServiceInfo(SERVICE_TYPE, f"impostor.{SERVICE_TYPE}", addresses=[socket.inet_aton(address)],
                            port=50051, server="impostor.local.",
                            properties={"node_id": node_id, "name": "agent-h1", "proto": "1",
                                        "cluster": cluster_id_of(cluster_token)})
    await (await zc.async_register_service(info, cooperating_responders=True))
    await asyncio.sleep(float(sys.argv[4]))
    await zc.async_close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""


def test_impersonation_across_hosts_is_refused_and_reported(cluster: tuple[str, Host], lan: Lan) -> None:
    """h2 claims to be h1 over multicast; its certificate proves otherwise, so h1 stays where it is."""
    address, ctl = cluster
    agents = {a["name"]: a for a in _cli(ctl, address, "agents", "--json")}
    h1 = agents["agent-h1"]
    h2 = lan.hosts["h2"]
    impostor = h2.popen(
        [python(), "-c", IMPOSTOR, h2.address, h1["id"], os.environ["TENSORFLEET_CLUSTER_TOKEN"], "15"],
        Path(os.environ["TENSORFLEET_KNOWN_CONTROLLERS"]).with_name("impostor.log"),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            entry = next(a for a in _cli(ctl, address, "agents", "--json") if a["id"] == h1["id"])
            if "impersonation refused" in entry["error"] or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert "impersonation refused" in entry["error"]
        assert entry["address"] == h1["address"] and entry["state"] == "ONLINE"
    finally:
        impostor.kill()
        impostor.wait(10)


def test_two_rank_ddp_across_two_hosts(cluster: tuple[str, Host]) -> None:
    """torch.distributed (gloo) between namespaces: the rendezvous is on rank 0's host, over eth0."""
    address, ctl = cluster
    job = _cli(
        ctl,
        address,
        "submit",
        "--algorithm",
        "torch_mlp",
        "--dataset",
        "digits",
        "--workers",
        "2",
        "--param",
        "epochs=2",
        "--wait",
        "--json",
    )
    assert job["state"] == "SUCCEEDED", job
    result = ctl.run(
        [
            python(),
            "-c",
            "import json, sys; from tensorfleet_desktop.client import Client; "
            "c = Client(sys.argv[1]); print(json.dumps(c.job(sys.argv[2])['task_list']))",
            address,
            job["id"],
        ]
    )
    ranks = json.loads(result.stdout)
    assert len({t["node_id"] for t in ranks}) == 2
    assert ranks[0]["metrics"]["param_checksum"] == ranks[1]["metrics"]["param_checksum"]
