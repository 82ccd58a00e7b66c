"""Security: a fresh controller and agent exchange no work until paired; identities cannot be faked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from helpers.agents import CLUSTER_TOKEN, AgentProcess
from helpers.controller import ControllerProcess, cli_json
from helpers.processes import start_together
from helpers.waiting import wait_until
from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.core.types import TaskSpec
from tensorfleet_agent.core.version import PROTOCOL_VERSION
from tensorfleet_agent.discovery.interfaces import SERVICE_TYPE
from tensorfleet_agent.identity import load_or_create_identity, node_id_of_cert
from tensorfleet_agent.rpc.client import (
    AgentClient,
    AgentTrust,
    PairingError,
    create_channel,
    fetch_certificate_blocking,
    pinned_credentials,
)
from tensorfleet_agent.security.interceptor import PUBLIC_METHODS
from tensorfleet_agent.security.secrets import cluster_id_of, proof, token_key
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow


def new_token(agent: AgentProcess, ttl: float = 3600) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tensorfleet_agent", "token", "--data-dir", str(agent.data_dir), "--ttl", str(ttl)],
        capture_output=True,
        text=True,
        check=True,
    )
    token = out.stdout.strip()
    assert token.startswith("tfj-")
    return token


def lone_agent(factory: type[AgentProcess], path: Path, **kw: object) -> AgentProcess:
    """An agent with no cluster token: only a join token pairs it."""
    return factory(path, env={}, **kw).start()  # type: ignore[arg-type]


def fresh_client(agent: AgentProcess, identity_dir: Path) -> AgentClient:
    cert = fetch_certificate_blocking(agent.address)
    return AgentClient(agent.address, AgentTrust(cert, load_or_create_identity(identity_dir, "controller")))


async def test_handshakes(agent_factory: type[AgentProcess], tmp_path: Path) -> None:
    agent = lone_agent(agent_factory, tmp_path / "a")
    first_token = (agent.data_dir / "identity" / "join-token.txt").read_text().strip()
    assert first_token not in agent.logs()  # shown at first start, but never in a log
    async with fresh_client(agent, tmp_path / "ctl1") as client:
        # unpaired: listed (GetInfo) but no work
        assert (await client.get_info()).cert_fingerprint == agent.info["fingerprint"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.run_task(TaskSpec("t", "j", "noop"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "not paired" in str(err.value.details())
        # wrong token
        with pytest.raises(PairingError, match="wrong or expired token"):
            await client.pair("tfj-not-the-token")
        # expired token
        expired = new_token(agent, ttl=0.5)
        await asyncio.sleep(1.0)  # the scenario, not a wait: the token's lifetime runs out
        with pytest.raises(PairingError, match="wrong or expired token"):
            await client.pair(expired)
        # the right token pairs; work runs
        await client.pair(first_token)
        await client.run_task(TaskSpec("t1", "j", "noop"))
        assert [e async for e in client.watch_task("t1")][-1].payload.status.value == "SUCCEEDED"
        # a session the agent does not know (as after its restart) is renewed once, for a call
        client._session = "not-a-session"
        await client.run_task(TaskSpec("t2", "j", "noop"))
        assert client._session not in ("", "not-a-session")
        # ... and for the task stream (a restart ends the one open: the next watch opens another)
        client._session = "not-a-session"
        assert client._tasks is not None
        client._tasks.close()
        assert [e async for e in client.watch_task("t1")][-1].payload.status.value == "SUCCEEDED"
        assert client._session not in ("", "not-a-session")
    # a join token is single use
    async with fresh_client(agent, tmp_path / "ctl2") as other:
        with pytest.raises(PairingError):
            await other.pair(first_token)


SPENT = "unknown, used or expired challenge: start again"


async def test_replayed_and_forged_exchanges_are_refused(agent_factory: type[AgentProcess], tmp_path: Path) -> None:
    agent = lone_agent(agent_factory, tmp_path / "a")
    token = new_token(agent)
    me = load_or_create_identity(tmp_path / "ctl", "controller")
    cert = fetch_certificate_blocking(agent.address)
    node_id, agent_fp = node_id_of_cert(cert)
    channel = create_channel(agent.address, pinned_credentials(cert), node_id)
    from tensorfleet_agent._generated import agent_pb2_grpc

    stub = agent_pb2_grpc.AgentServiceStub(channel)
    try:
        # a proof bound to another agent certificate (a relay) does not pair
        begin = await stub.PairBegin(pb.PairBeginRequest(controller_cert_pem=me.cert_pem))
        forged = proof(token_key(token), b"tf-pair-controller", begin.agent_nonce, me.fingerprint, "0" * 64)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.PairFinish(
                pb.PairFinishRequest(
                    controller_cert_pem=me.cert_pem, agent_nonce=begin.agent_nonce, proof=forged, controller_nonce=b"n"
                )
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # a genuine proof pairs once; replaying the same message is refused (the nonce is spent)
        begin = await stub.PairBegin(pb.PairBeginRequest(controller_cert_pem=me.cert_pem))
        good = pb.PairFinishRequest(
            controller_cert_pem=me.cert_pem,
            agent_nonce=begin.agent_nonce,
            controller_nonce=b"n",
            proof=proof(token_key(token), b"tf-pair-controller", begin.agent_nonce, me.fingerprint, agent_fp),
        )
        await stub.PairFinish(good)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.PairFinish(good)
        assert (err.value.code(), err.value.details()) == (grpc.StatusCode.PERMISSION_DENIED, SPENT)
        # authentication: a signed challenge works once
        challenge = await stub.GetChallenge(pb.ChallengeRequest())
        signed = pb.AuthenticateRequest(
            controller_cert_pem=me.cert_pem,
            nonce=challenge.nonce,
            signature=me.sign(b"tf-auth|" + challenge.nonce + b"|" + node_id.encode()),
        )
        session = await stub.Authenticate(signed)
        assert session.session_token
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Authenticate(signed)
        assert (err.value.code(), err.value.details()) == (grpc.StatusCode.PERMISSION_DENIED, SPENT)
        # someone else's certificate with our signature: refused
        intruder = load_or_create_identity(tmp_path / "intruder", "controller")
        challenge = await stub.GetChallenge(pb.ChallengeRequest())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Authenticate(
                pb.AuthenticateRequest(
                    controller_cert_pem=intruder.cert_pem,
                    nonce=challenge.nonce,
                    signature=me.sign(b"tf-auth|" + challenge.nonce + b"|" + node_id.encode()),
                )
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details().startswith(f"controller {intruder.fingerprint[:16]} is not paired with this agent")
        # a forged session token
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListTasks(pb.ListTasksRequest(), metadata=(("authorization", "Bearer forged"),))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close(None)


async def test_every_work_method_requires_a_session(agent_factory: type[AgentProcess], tmp_path: Path) -> None:
    agent = lone_agent(agent_factory, tmp_path / "a")
    cert = fetch_certificate_blocking(agent.address)
    channel = create_channel(agent.address, pinned_credentials(cert), node_id_of_cert(cert)[0])
    service = pb.DESCRIPTOR.services_by_name["AgentService"]
    checked = []
    try:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            ident = lambda b: b  # noqa: E731 - raw bytes in and out
            if method.client_streaming and method.server_streaming:
                bidi = channel.stream_stream(path, request_serializer=ident, response_deserializer=ident)
                # nothing written: the refusal comes from the call's metadata, and a write racing it would end the
                # call INTERNAL (grpc's word for a send on a call that ended), not with the refusal
                coro = bidi(timeout=10).read()  # type: ignore[call-arg]
            elif method.client_streaming:
                call = channel.stream_unary(path, request_serializer=ident, response_deserializer=ident)
                coro = call(iter([b""]), timeout=10)
            elif method.server_streaming:
                stream = channel.unary_stream(path, request_serializer=ident, response_deserializer=ident)(
                    b"", timeout=10
                )
                coro = stream.read()
            else:
                coro = channel.unary_unary(path, request_serializer=ident, response_deserializer=ident)(b"", timeout=10)
            try:
                await coro
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
            if method.name in PUBLIC_METHODS:
                assert code != grpc.StatusCode.UNAUTHENTICATED, method.name
            else:
                assert code == grpc.StatusCode.UNAUTHENTICATED, (method.name, code)
            checked.append(method.name)
    finally:
        await channel.close(None)
    assert len(checked) == len(service.methods) >= 13


def test_two_clusters_never_mix(
    agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    tokens = {"a": f"cluster-a-{secrets.token_hex(6)}", "b": f"cluster-b-{secrets.token_hex(6)}"}
    # names of this run's own: another test run on this loopback at the same moment has an agent-a and agent-b too
    names = {k: f"agent-{k}-{secrets.token_hex(3)}" for k in tokens}
    agents = {
        k: agent_factory(tmp_path / f"agent-{k}", name=names[k], cpu_slots=1, env={"TENSORFLEET_CLUSTER_TOKEN": t})
        for k, t in tokens.items()
    }
    controllers = {
        k: controller_factory(
            tmp_path / f"ctl-{k}", env={"TENSORFLEET_CLUSTER_TOKEN": t}, extra_args=["--metrics-port", "0"]
        )
        for k, t in tokens.items()
    }
    start_together(*agents.values(), *controllers.values())
    with Client(controllers["a"].address) as a, Client(controllers["b"].address) as b:
        for client, mine in ((a, names["a"]), (b, names["b"])):
            wait_until(lambda c=client, m=mine: [x for x in c.agents() if x["name"] == m and x["paired"]], 20, mine)
        wait_until(  # cluster a has seen agent-b's advertisement (and refused it): not a moment too early to look
            lambda: [x for x in a.agents(all=True) if x["address"] == agents["b"].address and x["refused"]],
            20,
            "cluster a refusing agent-b",
        )
        assert [x["name"] for x in a.agents()] == [names["a"]]  # the other cluster's agent is ignored over mDNS
        # ... but listed, with the reason, by `agents --all` (and counted by the plain listing)
        listed = cli_json(controllers["a"].cli("agents", "--all", "--json"))
        assert [(x["name"], x["refused"]) for x in listed if x["name"] == names["a"]] == [(names["a"], "")]
        refused = [x for x in listed if x["refused"] and x["address"] == agents["b"].address]
        assert [(x["name"], x["state"], x["id"]) for x in refused] == [
            (names["b"], "REFUSED", agents["b"].info["node_id"])
        ]
        assert "another cluster" in refused[0]["refused"] and "TENSORFLEET_CLUSTER_TOKEN" in refused[0]["refused"]
        plain = controllers["a"].cli("agents")
        assert plain.returncode == 0 and names["b"] not in plain.stdout
        assert re.search(r"\d+ refused services?: see `tensorfleet agents --all`", plain.stderr), plain.stderr
        assert controllers["a"].logs().count(f"refusing the agent service {names['b']}") == 1  # not on every update
        added = cli_json(controllers["a"].cli("agents", "add", agents["b"].address, "--json"))
        assert added["name"] == names["b"]
        entry = wait_until(
            lambda: next((x for x in a.agents() if x["name"] == names["b"] and x["state"] == "ONLINE"), None),
            20,
            f"{names['b']} listed",
        )
        assert entry["paired"] is False and "not paired" in entry["error"]
        job = a.submit({"algorithm": "noop", "constraints": {"on": names["b"]}})
        controllers["a"].after_scheduler_passes()
        assert a.job(job["id"])["state"] == "QUEUED"  # an unpaired agent is never scheduled
        assert b.jobs() == []


async def test_impersonator_is_refused_and_reported(
    agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    real, other = start_together(
        agent_factory(tmp_path / "real", name="real-agent", cpu_slots=1),
        agent_factory(tmp_path / "other", name="other-agent", cpu_slots=1),
    )
    controller = controller_factory(tmp_path / "ctl").start()
    with Client(controller.address) as client:
        wait_until(lambda: sum(x["paired"] for x in client.agents()) == 2, 20, "both paired")
    # Advertise the real agent's node id, pointing at the other agent's port (whose certificate differs).
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    info = AsyncServiceInfo(
        SERVICE_TYPE,
        f"evil-{secrets.token_hex(4)}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton("127.0.0.1")],
        port=other.port,
        properties={
            "node_id": str(real.info["node_id"]),
            "name": "real-agent",
            "proto": str(PROTOCOL_VERSION),
            "cluster": cluster_id_of(CLUSTER_TOKEN),
        },
        server="evil.local.",
    )
    await (await zc.async_register_service(info, cooperating_responders=True))
    try:
        with Client(controller.address) as client:
            entry = await asyncio.to_thread(
                wait_until,
                lambda: next(
                    (x for x in client.agents() if x["id"] == real.info["node_id"] and "impersonation" in x["error"]),
                    None,
                ),
                20,
                "impersonation reported",
            )
            assert entry["address"] == real.address and entry["state"] == "ONLINE" and entry["paired"] is True
            evil = [x for x in client.agents(all=True) if x.get("instance", "").startswith(info.name.split(".")[0])]
            assert len(evil) == 1 and evil[0]["refused"].startswith("impersonation refused")
            job = client.submit({"algorithm": "noop", "constraints": {"on": "real-agent"}})
            assert (await asyncio.to_thread(client.wait, job["id"], 60))["state"] == "SUCCEEDED"
    finally:
        await zc.async_close()


def test_changed_certificate_is_refused_until_deliberately_repaired(
    agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    name = f"pinned-{secrets.token_hex(3)}"  # other lone agents on this loopback must not match it
    agent = lone_agent(agent_factory, tmp_path / "a", name=name, cpu_slots=1)
    controller = controller_factory(tmp_path / "ctl", env={}).start()

    def mine(client: Client) -> dict[str, Any]:
        return next(x for x in client.agents() if x["id"] == agent.info["node_id"])

    def stored_pin() -> str:
        with contextlib.closing(sqlite3.connect(controller.data_dir / "tensorfleet.db")) as db:
            row = db.execute("SELECT body FROM agents WHERE node_id = ?", (agent.info["node_id"],)).fetchone()
        return str(json.loads(row[0]).get("fingerprint", "")) if row else ""

    with Client(controller.address) as client:
        wait_until(lambda: [x for x in client.agents() if x["name"] == name], 20, "agent listed")
        paired = cli_json(controller.cli("agents", "pair", name, "--token", new_token(agent), "--json"))
        assert paired["paired"] is True and paired["fingerprint"] == agent.info["fingerprint"]
        wait_until(lambda: stored_pin() == paired["fingerprint"], 10, "pin stored")
        # adding the pinned agent again (by address) keeps its pin, also across a controller restart
        again = cli_json(controller.cli("agents", "add", agent.address, "--json"))
        assert again["fingerprint"] == paired["fingerprint"]
    controller.stop()  # the store's queued writes land before it exits
    assert stored_pin() == paired["fingerprint"]
    controller.start()
    with Client(controller.address) as client:
        # same key, new certificate: the node id is the same, the pinned fingerprint is not
        agent.kill()
        (agent.data_dir / "identity" / "node.crt").unlink()
        agent.start()
        assert agent.info["fingerprint"] != paired["fingerprint"]
        entry = wait_until(lambda: next((x for x in [mine(client)] if "pinned" in x["error"]), None), 20, "refused")
        assert entry["state"] == "REFUSED" and entry["error"] == (
            f"agent {name} presents certificate {agent.info['fingerprint'][:16]}, pinned is "
            f"{paired['fingerprint'][:16]}: refused; re-pair with --force if it was reinstalled "
            f"(tensorfleet agents pair {name} --token TOKEN --force)"
        )
        result = controller.cli("agents", "pair", name, "--token", new_token(agent))
        assert result.returncode == 2 and "pinned" in result.stderr
        repaired = cli_json(controller.cli("agents", "pair", name, "--token", new_token(agent), "--force", "--json"))
        assert repaired["fingerprint"] == agent.info["fingerprint"]
        wait_until(lambda: mine(client)["state"] == "ONLINE", 20, "online again")
        # unpairing on the agent ends the controller's access
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tensorfleet_agent",
                "unpair",
                agent.info["fingerprint"][:0] + client.info()["fingerprint"][:16],
                "--data-dir",
                str(agent.data_dir),
            ],
            check=True,
        )
        wait_until(lambda: mine(client)["paired"] is False, 20, "unpaired")


def test_key_files_are_private(
    agent: AgentProcess, controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    controller = controller_factory(tmp_path / "ctl").start()
    for directory in (agent.data_dir / "identity", controller.data_dir / "identity"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for name in ("node.key", "node.crt"):
            assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, directory / name


def test_insecure_is_for_loopback_only(tmp_path: Path) -> None:
    agent = subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorfleet_agent",
            "--host",
            "0.0.0.0",
            "--insecure",
            "--data-dir",
            str(tmp_path / "a"),
            "--no-advertise",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert agent.returncode == 2 and "only allowed on loopback" in agent.stderr
    serve = subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorfleet_desktop",
            "serve",
            "--host",
            "0.0.0.0",
            "--insecure",
            "--data-dir",
            str(tmp_path / "c"),
            "--no-mdns",
            "--no-local-agent",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode == 2 and "only on loopback" in serve.stderr


def test_secrets_never_reach_logs_output_or_store(
    agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    cluster = f"cluster-secret-{secrets.token_hex(8)}"
    join = f"tfj-join-secret-{secrets.token_hex(8)}"
    a1, a2 = start_together(
        agent_factory(tmp_path / "a1", name="a1", env={"TENSORFLEET_CLUSTER_TOKEN": cluster}),
        agent_factory(tmp_path / "a2", name="a2", env={"TENSORFLEET_JOIN_TOKEN": join}),
    )
    controller = controller_factory(
        tmp_path / "ctl", env={"TENSORFLEET_CLUSTER_TOKEN": cluster}, extra_args=["--agent", a2.address]
    ).start()
    outputs = []
    with Client(controller.address) as client:
        wait_until(lambda: len(client.agents()) == 2, 20, "both agents")
        # both pairing paths run for real: the refusal of a wrong token, then the pairing with the right one
        wrong = controller.cli("agents", "pair", "a2", "--token", "tfj-wrong-" + join)
        assert wrong.returncode == 2 and "wrong or expired token" in wrong.stderr, wrong
        paired = controller.cli("agents", "pair", "a2", "--token", join, "--json")
        assert cli_json(paired)["paired"] is True
        assert next(x for x in client.agents() if x["name"] == "a2")["paired"] is True
        outputs += [wrong.stdout, wrong.stderr, paired.stdout, paired.stderr]
        job = client.submit({"algorithm": "noop", "name": f"leak {cluster} {join}"})
        assert client.wait(job["id"], timeout=60)["state"] == "SUCCEEDED"
        outputs += [
            controller.cli("agents", "--json").stdout,
            controller.cli("jobs", "--json").stdout,
            controller.cli("status", job["id"], "--json").stdout,
            json.dumps(client.info()),
        ]
        assert "[redacted]" in client.job(job["id"])["name"]
    controller.stop()
    a1.stop()
    a2.stop()
    haystacks = [*outputs, controller.logs(), a1.logs(), a2.logs()]
    haystacks += [p.read_bytes().decode("latin-1") for p in controller.data_dir.rglob("*") if p.is_file()]
    for secret in (cluster, join):
        leaks = [h[:200] for h in haystacks if secret in h]
        assert not leaks, f"secret leaked into: {leaks}"
