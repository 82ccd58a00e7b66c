"""deploy/compose.yaml's command lines, run as they are in one network namespace per service (no container
engine here, so no images: the processes of the same package, with the services' names resolving as compose's DNS
would, through /etc/netns/NS/hosts). The controller reaches both agents by service name without mDNS, the shared
cluster token pairs them, `tensorfleet` run on the controller's host with no flag (what `docker-compose exec
controller tensorfleet ...` does) finds it over TLS. And deploy/kubernetes/agents.yaml's agent command joins that
controller by the Service's name with a credential file, and runs a job that names its pool."""

from __future__ import annotations

import json
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.lan import Lan, python
from helpers.lan_cluster import LanProcess
from helpers.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.lan]
LAN_HOSTS = ["controller", "agent-1", "agent-2", "gpu-node"]
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SERVICE = "tensorfleet-controller"  # the Kubernetes Service's name: resolves to the controller's host here
MODULES = {"tensorfleet": "tensorfleet_desktop", "tensorfleet-agent": "tensorfleet_agent"}
ENTRYPOINTS = {"controller": "tensorfleet", "agent-1": "tensorfleet-agent", "agent-2": "tensorfleet-agent"}


def _environment(service: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    """The service's environment with compose's ${NAME:?message} filled in from `values`."""
    return {
        k: re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: values[m[1]], str(v)) for k, v in service["environment"].items()
    }


@pytest.fixture(scope="module")
def services(lan: Lan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LanProcess]]:
    tmp = tmp_path_factory.mktemp("lan-compose")
    compose = yaml.safe_load(COMPOSE.read_text())  # the anchors merged, as compose merges them
    token = {"TENSORFLEET_CLUSTER_TOKEN": f"compose-{secrets.token_hex(8)}"}
    # compose's DNS: every service's name, here in each namespace's own hosts file (bind-mounted by `ip netns exec`)
    hosts_files = []
    names = (
        "".join(f"{lan.hosts[n].address} {n}\n" for n in LAN_HOSTS) + f"{lan.hosts['controller'].address} {SERVICE}\n"
    )
    for name in LAN_HOSTS:
        folder = Path("/etc/netns") / lan.hosts[name].netns
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts").write_text(f"127.0.0.1 localhost\n{names}")
        hosts_files.append(folder)
    processes: dict[str, LanProcess] = {}
    try:
        for name in ("controller", "agent-1", "agent-2"):
            service = compose["services"][name]
            volume = {v.split(":")[1]: tmp / v.split(":")[0] for v in service["volumes"]}
            argv = [volume.get(a, a) for a in service["command"]]  # the named volume: a folder of this test
            env = {
                **_environment(service, token),
                "TENSORFLEET_RUNTIME_DIR": str(tmp / f"{name}-runtime"),  # the images' ENV (a private tmpfs there)
                "TENSORFLEET_KNOWN_CONTROLLERS": str(tmp / "known_controllers.json"),
                "TENSORFLEET_MDNS_INTERFACES": lan.hosts[name].address,  # unused: --no-mdns / --no-advertise
            }
            ready = tmp / f"{name}.ready"
            processes[name] = LanProcess(
                name, lan.hosts[name], [python(), "-m", MODULES[ENTRYPOINTS[name]], *map(str, argv),
                                        "--ready-file", str(ready)], env, tmp / f"{name}.log", ready,
            )  # fmt: skip
        for name in ("agent-1", "agent-2"):
            processes[name].spawn()
        for name in ("agent-1", "agent-2"):
            processes[name].wait_ready()
        processes["controller"].start()
        yield processes
    finally:
        for proc in processes.values():
            proc.kill()
        for folder in hosts_files:
            shutil.rmtree(folder, ignore_errors=True)


def _exec(services: dict[str, LanProcess], *args: str) -> Any:
    """`docker-compose exec controller tensorfleet ARGS --json`: the default address, the connection file."""
    controller = services["controller"]
    env = [f"{k}={v}" for k, v in controller.env.items() if k != "TENSORFLEET_CLUSTER_TOKEN"]
    result = controller.host.run(["env", *env, python(), "-m", "tensorfleet_desktop", *args, "--json"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_controller_reaches_and_pairs_both_agents_by_service_name(services: dict[str, LanProcess]) -> None:
    def online() -> list[dict[str, Any]]:
        return [a for a in _exec(services, "agents") if a["state"] == "ONLINE" and a["paired"]]

    wait_until(lambda: len(online()) == 2, 30, "both compose agents ONLINE and paired")
    agents = online()
    assert {a["address"] for a in agents} == {"agent-1:50051", "agent-2:50051"}
    assert {a["source"] for a in agents} == {"manual"} and all(len(a["fingerprint"]) == 64 for a in agents)


def test_the_daemonsets_agent_joins_by_the_service_name(
    services: dict[str, LanProcess], lan: Lan, tmp_path: Path
) -> None:
    """deploy/kubernetes/agents.yaml's container command, the downward API's $(VAR)s filled in, with a credential
    from `tensorfleet pools credential` in the mounted Secret's file: it joins, is dialled back at its pod IP, is
    paired and carries the label pool=NAME; a job naming the pool runs on it."""
    (daemonset,) = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "agents.yaml").read_text()) if d]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    node = lan.hosts["gpu-node"]
    controller = services["controller"]
    env = [f"{k}={v}" for k, v in controller.env.items() if k != "TENSORFLEET_CLUSTER_TOKEN"]
    minted = controller.host.run(["env", *env, python(), "-m", "tensorfleet_desktop", "pools", "credential",
                                  "k8s-gpu", "--ttl", "1h"])  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    mounts = {m["mountPath"]: tmp_path / m["name"] for m in container["volumeMounts"]}
    (tmp_path / "join").mkdir()
    (tmp_path / "join" / "credential").write_text(minted.stdout)
    downward = {"NODE_NAME": "gpu-node", "POD_IP": node.address}
    args = [re.sub(r"\$\((\w+)\)", lambda m: downward[m[1]], a) for a in container["args"]]
    for path, folder in mounts.items():
        args = [a.replace(path, str(folder)) for a in args]
    ready = tmp_path / "agent.ready"
    agent = LanProcess(
        "gpu-node", node, [python(), "-m", MODULES[container["command"][0]], *args, "--ready-file", str(ready)],
        {"TENSORFLEET_MDNS_INTERFACES": node.address}, tmp_path / "agent.log", ready,
    )  # fmt: skip
    try:
        agent.start()

        def joined() -> list[dict[str, Any]]:
            return [a for a in _exec(services, "agents") if a["name"] == "gpu-node" and a["state"] == "ONLINE"]

        wait_until(lambda: bool(joined()), 30, "the DaemonSet's agent joined")
        (record,) = joined()
        assert record["address"] == f"{node.address}:50051" and record["paired"] and record["source"] == "pool"
        assert record["labels"].get("pool") == "k8s-gpu"
        spec = tmp_path / "job.yaml"
        spec.write_text("algorithm: decision_tree\ndataset: wine\npool: k8s-gpu\n")
        job = _exec(services, "submit", str(spec), "--wait")
        assert job["state"] == "SUCCEEDED", job
        assert [t["agent"] for t in _exec(services, "status", job["id"])["task_list"]] == ["gpu-node"]
    finally:
        agent.kill()
