"""deploy/: the container recipes, compose file and Kubernetes manifests, checked without a container engine or a
cluster (none exists here): every manifest against the Kubernetes JSON schemas (kubernetes-validate --strict), the
compose file with docker-compose's own linter, every container command parsed by the real CLI parsers, and the
image tags and ports compared across all three."""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tensorfleet_agent.__main__ import build_parser as agent_parser
from tensorfleet_desktop.cli import build_parser as cli_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
CONTAINERS = DEPLOY / "containers"
COMPOSE = DEPLOY / "compose.yaml"
KUBE_VERSION = "1.30"  # the oldest Kubernetes the manifests promise (gRPC probes GA, sidecar-free)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
SCRIPTS = PYPROJECT["project"]["scripts"]
PARSERS = {"tensorfleet": cli_parser, "tensorfleet-agent": agent_parser}
# what the downward API puts into $(VAR) in a container's args, for parsing them as the kubelet would pass them
DOWNWARD = {"NODE_NAME": "gpu-node-1", "POD_IP": "10.244.1.7"}
COMPOSE_ENV = {"TENSORFLEET_CLUSTER_TOKEN": "a-token-only-for-the-lint"}


def _manifests() -> list[Path]:
    return sorted(p for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")


def _documents() -> list[dict[str, Any]]:
    return [doc for path in _manifests() for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kube_containers() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{doc['kind']}/{doc['metadata']['name']}", c)
        for doc in _documents()
        if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job")
        for c in doc["spec"]["template"]["spec"]["containers"]
    ]


def _validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("kubernetes-validate")
    if not tool.exists():
        pytest.skip("kubernetes-validate is not installed (the dev extra installs it: pip install -e '.[dev]')")
    return subprocess.run(
        [str(tool), "--strict", "-k", KUBE_VERSION, *map(str, paths)], capture_output=True, text=True, timeout=60
    )


def test_every_manifest_passes_the_kubernetes_schemas_strictly(tmp_path: Path) -> None:
    result = _validate(*_manifests())
    assert result.returncode == 0, result.stdout + result.stderr
    # the check can fail: a field the schema does not know is refused
    broken = tmp_path / "controller.yaml"
    broken.write_text((KUBE / "controller.yaml").read_text().replace("replicas: 1", "replicas: 1\n  replica: 1"))
    refused = _validate(broken)
    assert refused.returncode != 0 and "replica" in refused.stdout + refused.stderr


def test_kustomization_lists_every_manifest_and_image() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in _manifests())
    used = {c["image"] for _, c in _kube_containers()}
    assert {f"{i['name']}:{i['newTag']}" for i in kustomization["images"]} == used


@functools.cache
def _compose_config() -> dict[str, Any]:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose; .ci/run does)")
    env = {"PATH": "/usr/bin:/bin", **COMPOSE_ENV}
    # `config` checks the file as `config -q` does (a refusal exits non-zero, naming the problem) and prints it
    # resolved: anchors merged, variables filled in
    resolved = subprocess.run([tool, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=env)
    assert resolved.returncode == 0, resolved.stderr
    config: dict[str, Any] = yaml.safe_load(resolved.stdout)
    return config


def test_the_compose_file_lints_and_names_its_token() -> None:
    services = _compose_config()["services"]
    assert set(services) == {"controller", "agent-1", "agent-2"}
    tool = shutil.which("docker-compose")
    assert tool is not None
    # without the cluster token the file refuses to start, naming it (never a cluster with an empty token)
    unset = subprocess.run([tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert unset.returncode != 0 and "TENSORFLEET_CLUSTER_TOKEN" in unset.stderr


def _instruction(text: str, name: str) -> list[str]:
    """A Containerfile's ENTRYPOINT or CMD, which must be in the exec (JSON) form."""
    joined = text.replace("\\\n", " ")
    found = re.findall(rf"^{name}\s+(.+)$", joined, re.MULTILINE)
    assert len(found) == 1, f"one {name} expected"
    value = json.loads(found[0])
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"{name} must be a JSON list"
    return value


def _containerfiles() -> dict[str, tuple[Path, str]]:
    """image (name:tag, as its build comment tags it) -> (Containerfile, text)."""
    images = {}
    for path in sorted(CONTAINERS.glob("*.Containerfile")):
        text = path.read_text()
        tags = re.findall(r"docker build -t (\S+)", text)
        assert len(tags) == 1, f"{path.name}: its header names the one tag it builds"
        assert f"-f deploy/containers/{path.name}" in text, f"{path.name}: its build command names itself"
        images[tags[0]] = (path, text)
    return images


def _parse(where: str, argv: list[str]) -> Any:
    """Parse a container's command line with the program's own parser: an unknown flag, a missing value or a bad
    type fails here, naming the container."""
    program, args = argv[0], argv[1:]
    assert program in SCRIPTS, f"{where}: {program!r} is not a console script of the package ({sorted(SCRIPTS)})"
    try:
        return PARSERS[program]().parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: `{shlex.join(argv)}` is refused by {program}'s parser (its message is above)")


def _downward(args: list[str]) -> list[str]:
    return [re.sub(r"\$\((\w+)\)", lambda m: DOWNWARD[m[1]], a) for a in args]


def test_every_container_command_is_a_console_script_with_flags_it_accepts() -> None:
    parsed = []
    for image, (path, text) in _containerfiles().items():
        argv = _instruction(text, "ENTRYPOINT") + _instruction(text, "CMD")
        parsed.append((image, _parse(path.name, argv)))
    for name, service in _compose_config()["services"].items():
        entrypoint = _instruction(_containerfiles()[service["image"]][1], "ENTRYPOINT")
        parsed.append((service["image"], _parse(f"compose service {name}", entrypoint + service["command"])))
    for where, container in _kube_containers():
        parsed.append((container["image"], _parse(where, container["command"] + _downward(container["args"]))))
    assert len(parsed) == 3 + 3 + 2
    for _image, args in parsed:  # headless everywhere: no mDNS across container networks, no local agent
        if hasattr(args, "no_local_agent"):
            assert args.no_local_agent and args.no_mdns and args.host == "0.0.0.0"
        else:
            assert args.no_advertise and args.host == "0.0.0.0"


def test_images_tags_and_ports_agree() -> None:
    built = _containerfiles()
    assert all(image.endswith(f":{VERSION}") for image in built), f"every image is tagged with the version {VERSION}"
    exposed = {image: {int(p) for p in re.findall(r"^EXPOSE\s+(.+)$", text, re.M)[0].split()}
               for image, (_, text) in built.items()}  # fmt: skip
    # every image installs the probe its health checks run
    for path, text in built.values():
        assert "/usr/local/bin/grpc_health_probe" in text, f"{path.name} lacks grpc_health_probe"

    def ports(args: list[str]) -> set[int]:
        return {int(args[i + 1]) for i, a in enumerate(args) if a in ("--port", "--http-port")}

    def probe_port(command: list[str]) -> int:
        assert command[0] == "grpc_health_probe" and "-tls" in command, "probe over TLS (both serve TLS off loopback)"
        return int(next(c for c in command if c.startswith("-addr=")).rpartition(":")[2])

    for image, (_, text) in built.items():
        assert ports(_instruction(text, "CMD")) == exposed[image]
    services = _compose_config()["services"]
    for name, service in services.items():
        assert service["image"] in built and service["build"]["dockerfile"] == str(
            built[service["image"]][0].relative_to(ROOT)
        )
        assert ports(service["command"]) == exposed[service["image"]], name
        grpc_port = int(service["command"][service["command"].index("--port") + 1])
        assert probe_port(service["healthcheck"]["test"][1:]) == grpc_port, name
    controller = services["controller"]
    published = {int(re.sub(r"/\w+$", "", str(p)).rpartition(":")[2]) for p in controller["ports"]}
    assert published == exposed[controller["image"]]
    for agent in re.findall(r"--agent (\S+)", " ".join(controller["command"])):  # the controller dials them by name
        host, _, port = agent.rpartition(":")
        assert host in services and int(port) in ports(services[host]["command"])

    service_ports = {
        (doc["metadata"]["name"], p["port"]): p["targetPort"]
        for doc in _documents()
        if doc["kind"] == "Service"
        for p in doc["spec"]["ports"]
    }
    for where, c in _kube_containers():
        assert c["image"] in built, f"{where}: {c['image']} is not built by a Containerfile here"
        named = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert set(named.values()) == ports(c["args"]) == exposed[c["image"]], where
        for probe in ("readinessProbe", "livenessProbe"):
            assert probe_port(c[probe]["exec"]["command"]) == named["grpc"], f"{where} {probe}"
        if "--join" in c["args"]:  # the agents find the controller by its Service, at its gRPC port
            host, _, port = c["args"][c["args"].index("--join") + 1].rpartition(":")
            assert service_ports.get((host, int(port))) == "grpc", f"{where}: --join names no Service port"
            assert c["resources"]["limits"]["nvidia.com/gpu"] >= 1
    controller_ports = {p for (name, p), _ in service_ports.items() if name == "tensorfleet-controller"}
    assert controller_ports == exposed["ghcr.io/tensorfleet/tensorfleet-controller:" + VERSION]


def test_secrets_hold_the_credentials_and_nothing_real() -> None:
    secrets = {d["metadata"]["name"]: d for d in _documents() if d["kind"] == "Secret"}
    for where, c in _kube_containers():
        for env in c.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:  # every secret variable comes from a key the Secrets define
                assert ref["key"] in secrets[ref["name"]]["stringData"], f"{where}: {env['name']}"
            assert "value" not in env or not re.search(r"token|password|secret|key", env["name"], re.I), where
    values = [v for s in secrets.values() for v in s["stringData"].values()]
    assert all(v == "" or v.startswith("REPLACE") for v in values), "placeholders only: no usable credential"


def test_the_agents_credential_file_is_the_join_secret() -> None:
    ((where, agent),) = [(w, c) for w, c in _kube_containers() if "--join" in c["args"]]
    path = Path(agent["args"][agent["args"].index("--join-credential-file") + 1])
    mount = next(m for m in agent["volumeMounts"] if Path(m["mountPath"]) == path.parent)
    (daemonset,) = [d for d in _documents() if d["kind"] == "DaemonSet"]
    volume = next(v for v in daemonset["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    secret = next(
        d for d in _documents() if d["kind"] == "Secret" and d["metadata"]["name"] == volume["secret"]["secretName"]
    )
    assert path.name in secret["stringData"], f"{where}: the Secret has no key {path.name}"
    assert mount.get("readOnly") and "TENSORFLEET_JOIN_CREDENTIAL" not in {e["name"] for e in agent["env"]}
