"""Agents in two namespaces found by the controller in a third over real multicast mDNS; a job on each."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers.lan import Lan, python
from helpers.lan_cluster import LanCluster
from helpers.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.lan]
LAN_HOSTS = ["ctl", "h1", "h2"]


def _cli(cluster: LanCluster, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    """The real CLI, run on the controller's host with the cluster's settings (`env` overrides; None unsets)."""
    settings = {**cluster.env, **env}
    unset = [opt for name, value in settings.items() if value is None for opt in ("-u", name)]
    assign = [f"{name}={value}" for name, value in settings.items() if value is not None]
    argv = ["env", *unset, *assign, python(), "-m", "tensorfleet_desktop", "--controller", cluster.address, *args]
    return cluster.controller_host.run(argv)


def _cli_json(cluster: LanCluster, *args: str) -> Any:
    result = _cli(cluster, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_agents_on_other_hosts_found_over_multicast(lan_cluster: LanCluster, lan: Lan) -> None:
    agents = _cli_json(lan_cluster, "agents", "--json")
    by_name = {a["name"]: a for a in agents}
    assert set(by_name) == {"agent-h1", "agent-h2"}
    for name in ("h1", "h2"):
        entry = by_name[f"agent-{name}"]
        assert entry["state"] == "ONLINE" and entry["source"] == "mdns" and entry["paired"] is True
        assert len(entry["fingerprint"]) == 64
        assert entry["address"] == f"{lan.hosts[name].address}:50051"


def test_a_job_runs_on_each_host(lan_cluster: LanCluster) -> None:
    for name in ("h1", "h2"):
        job = _cli_json(
            lan_cluster,
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
        assert lan_cluster.client.job(job["id"])["task_list"][0]["agent"] == f"agent-{name}"
    assert len(lan_cluster.client.jobs()) == 2


PLAINTEXT_CALL = """
import sys, grpc
from tensorfleet_agent._generated import controller_pb2 as c, controller_pb2_grpc as g
stub = g.ControllerServiceStub(grpc.insecure_channel(sys.argv[1]))
try:
    stub.ListJobs(c.ListJobsRequest(), timeout=5, metadata=(("authorization", f"Bearer {sys.argv[2]}"),))
except grpc.RpcError as exc:
    print(exc.code().name, exc.details())
    sys.exit(3)
"""


def test_remote_controller_needs_tls_and_its_client_token(lan_cluster: LanCluster) -> None:
    known = json.loads(Path(lan_cluster.env["TENSORFLEET_KNOWN_CONTROLLERS"]).read_text())
    assert len(known[lan_cluster.address]) == 64  # pinned on first use
    wrong = _cli(lan_cluster, "jobs", "--json", TENSORFLEET_CONTROLLER_TOKEN="wrong-token")
    assert wrong.returncode == 2 and "needs its client token on every call" in wrong.stderr, wrong.stderr
    elsewhere = str(lan_cluster.tmp / "no-connection-files")  # a client with neither the variable nor the file
    missing = _cli(lan_cluster, "jobs", TENSORFLEET_CONTROLLER_TOKEN=None, TENSORFLEET_RUNTIME_DIR=elsewhere)
    assert missing.returncode == 2 and "TENSORFLEET_CONTROLLER_TOKEN" in missing.stderr, missing.stderr
    same_user = _cli(lan_cluster, "jobs", "--json", TENSORFLEET_CONTROLLER_TOKEN=None)  # the connection file
    assert same_user.returncode == 0, same_user.stderr
    # plaintext with the right client token: only the transport can refuse it, and it must
    plaintext = lan_cluster.controller_host.run(
        [python(), "-c", PLAINTEXT_CALL, lan_cluster.address, lan_cluster.env["TENSORFLEET_CONTROLLER_TOKEN"]]
    )
    assert plaintext.returncode == 3, plaintext  # 0: the controller answered a plaintext call off loopback
    code, details = plaintext.stdout.split(" ", 1)
    assert code == "UNAVAILABLE", plaintext.stdout  # no HTTP/2 over the TLS port: not a refusal of the call itself
    assert "UNAUTHENTICATED" not in details, details


IMPOSTOR = """
import asyncio, socket, sys
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
from tensorfleet_agent.core.version import PROTOCOL_VERSION
from tensorfleet_agent.discovery.interfaces import SERVICE_TYPE
from tensorfleet_agent.security.secrets import cluster_id_of

async def main(address, node_id, cluster_token):
    zc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    info = AsyncServiceInfo(SERVICE_TYPE, f"impostor.{SERVICE_TYPE}", addresses=[socket.inet_aton(address)],
                            port=50051, server="impostor.local.",
                            properties={"node_id": node_id, "name": "agent-h1", "proto": str(PROTOCOL_VERSION),
                                        "cluster": cluster_id_of(cluster_token)})
    await (await zc.async_register_service(info, cooperating_responders=True))
    await asyncio.sleep(float(sys.argv[4]))
    await zc.async_close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""


def test_impersonation_across_hosts_is_refused_and_reported(lan_cluster: LanCluster, lan: Lan) -> None:
    """h2 claims to be h1 over multicast; its certificate proves otherwise, so h1 stays where it is."""
    client = lan_cluster.client
    h1 = lan_cluster.agent_record("h1")
    h2 = lan.hosts["h2"]
    impostor = h2.popen(
        [python(), "-c", IMPOSTOR, h2.address, h1["id"], lan_cluster.env["TENSORFLEET_CLUSTER_TOKEN"], "15"],
        lan_cluster.tmp / "impostor.log",
    )
    try:
        entry = wait_until(
            lambda: next(
                (a for a in client.agents() if a["id"] == h1["id"] and "impersonation refused" in a["error"]), None
            ),
            20,
            "the impersonation refused",
        )
        assert entry["address"] == h1["address"] and entry["state"] == "ONLINE"
    finally:
        impostor.kill()
        impostor.wait(10)


def test_two_rank_ddp_across_two_hosts(lan_cluster: LanCluster) -> None:
    """torch.distributed (gloo) between namespaces: the rendezvous is on rank 0's host, over eth0."""
    client = lan_cluster.client
    job = client.submit(
        {"algorithm": "torch_mlp", "dataset": "digits", "num_workers": 2, "hyperparameters": {"epochs": 2}}
    )
    final = client.wait(
        job["id"],
        timeout=240,
    )
    assert final["state"] == "SUCCEEDED", final
    ranks = final["task_list"]
    assert len({t["node_id"] for t in ranks}) == 2
    assert ranks[0]["metrics"]["param_checksum"] == ranks[1]["metrics"]["param_checksum"]
