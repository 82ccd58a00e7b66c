"""Composition root of `tensorfleet serve`: store, fleet, discovery, core, gRPC, metrics, local agent."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from tensorfleet_agent.datadir_lock import DataDirLock
from tensorfleet_agent.identity import load_or_create_identity
from tensorfleet_agent.rpc.server import Health, create_server, is_loopback, tls_server_credentials
from tensorfleet_agent.security.secrets import register
from tensorfleet_agent.security.tickets import make_ticket
from tensorfleet_desktop.connection import connection_path, remove_connection, write_connection
from tensorfleet_desktop.controller.agent_link import FleetAgents
from tensorfleet_desktop.controller.audit import AuditLog
from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.fair_loop import install, serve_first, servers
from tensorfleet_desktop.controller.fleet import DEFAULT_WAKE_TIMEOUT, AgentRecord, Fleet, FleetError
from tensorfleet_desktop.controller.local_agent import LocalAgent
from tensorfleet_desktop.controller.metrics import ControllerMetrics
from tensorfleet_desktop.controller.pools.manager import PoolManager
from tensorfleet_desktop.controller.pools.setup import agent_address, start_pools
from tensorfleet_desktop.controller.prometheus_sd import TargetsFile
from tensorfleet_desktop.controller.security import ClientTokenInterceptor, refusal
from tensorfleet_desktop.controller.service import CONTROLLER_SERVICE, ControllerServicer, controller_info
from tensorfleet_desktop.controller.settings import claim_data_dir, default_data_dir, resolve_uris
from tensorfleet_desktop.controller.store import open_store
from tensorfleet_desktop.controller.store.blobs import open_blobs
from tensorfleet_desktop.controller.tokens import TokenBook
from tensorfleet_desktop.controller.waking import WakeSource

if TYPE_CHECKING:  # zeroconf: imported when mDNS is on, while the local agent starts up
    from tensorfleet_agent.discovery.browse import AgentBrowser

log = logging.getLogger(__name__)

DEFAULT_PORT = 50050


_GRPC_SERVER_TASK = re.compile(r"AioServer\.")  # grpc.aio's server coroutines (_server_main_loop, _request_call)
_GRPC_CALL_RELAY = "_schedule_rpc_coro"  # grpc.aio's task per call, which makes the call's own task


def _coroutine_name(task: asyncio.Task[Any]) -> str:
    return str(getattr(task.get_coro(), "__qualname__", ""))


def clients_first(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Of the tasks made while the gRPC server started, grpc.aio's own take calls: marked as servers
    (fair_loop.py), with its task per call as the relay, so a call's task is served first from its first step."""
    servers(
        (t for t in tasks if _GRPC_SERVER_TASK.match(_coroutine_name(t))),
        lambda t: _coroutine_name(t) == _GRPC_CALL_RELAY,
    )


class ClientsFirst(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """The task of each gRPC call is served first on the loop (fair_loop.py); this runs in the call's first step,
    before its request is read."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        serve_first()
        return await continuation(handler_call_details)


@dataclass
class ControllerConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    interfaces: list[str] = field(default_factory=list)
    mdns: bool = True
    local_agent: bool = True
    local_agent_slots: int | None = None
    local_agent_metrics_port: int | None = None  # the local agent's /metrics on 127.0.0.1 (0: a free port)
    agents: list[str] = field(default_factory=list)
    store_uri: str = ""
    blobs_uri: str = ""
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"  # /metrics shows job ids and fleet size: loopback unless asked
    prometheus_sd: Path | None = None  # targets file for Prometheus (default: DATA_DIR/prometheus/targets.json)
    telemetry_period: float = 1.0
    gang_reserve_after: float = 300.0
    keep_checkpoints: int = 3
    s3_credentials: tuple[str, str] = ("", "")  # from the config file; AWS_* variables win
    ready_file: Path | None = None
    insecure: bool = False  # plaintext to agents, no pairing: loopback development only
    cluster_token: str = ""  # pairs automatically with agents started with the same token
    client_token: str = ""  # required from every client (default: DATA_DIR/client.token, made on first start)
    http_port: int | None = None  # serve the HTTP API (/api/v1) on this port too (0: a free port); None: no HTTP
    http_host: str = ""  # the address HTTP listens on (default: the gRPC host); HTTPS off loopback
    peer_transfer: bool = True  # agents fetch dataset blobs from peers holding them (--no-peer-transfer: off)
    wake_timeout: float = DEFAULT_WAKE_TIMEOUT  # a woken agent not answering by then is SLEEPING again
    fair_share: bool = True  # equal priorities by each user's usage; False: by submit order
    fair_share_half_life: float = 3600.0  # seconds for a user's usage to count half in the queue's order
    preempt_grace: float = 30.0  # seconds a preempted task has to save a checkpoint and stop ([scheduler])


class ControllerApp:
    def __init__(
        self, config: ControllerConfig, lock: DataDirLock | None = None, local_agent: LocalAgent | None = None
    ) -> None:
        """`lock` and `local_agent`: what `serve` did before importing this module (settings.claim_data_dir, then
        LocalAgent.spawn_if_free), so the local agent starts up beside this controller; start() does both when
        they are not given."""
        self.config = config
        self.stopped = asyncio.Event()
        self.port = 0
        self.metrics_port: int | None = None
        self.http_port: int | None = None
        self.http_url = ""
        self.http_pin = ""  # `curl --pinnedpubkey` value of the HTTPS certificate (sha256//...); "" over plain HTTP
        self._http: Any = None  # http.server.HttpServer, imported only when enabled
        self._targets: TargetsFile | None = None
        self.local_agent_id = ""
        self._local_agent = local_agent
        self._browser: AgentBrowser | None = None
        self._server: grpc.aio.Server | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._lock = lock
        self._connections: list[Path] = []
        self.pools: PoolManager | None = None

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    async def start(self) -> None:
        cfg = self.config
        started = time.time()
        cfg.data_dir = cfg.data_dir.resolve()  # the local agent and the URIs need it absolute
        if self._lock is None:
            self._lock = claim_data_dir(cfg.data_dir)
        try:
            if cfg.insecure and not is_loopback(cfg.host):
                raise ValueError(f"--insecure serves plaintext without pairing: only on loopback, not on {cfg.host}")
            if cfg.local_agent:  # starting up beside this controller's start (awaited in _start_local_agent)
                if self._local_agent is None:
                    self._local_agent = LocalAgent(
                        cfg.data_dir, cfg.local_agent_slots, cfg.local_agent_metrics_port, cfg.insecure
                    )
                self._local_agent.launch()
            await self._start(started)
        except BaseException:  # a controller that cannot start leaves no agent behind, nor mDNS sockets
            if self._browser is not None:
                with contextlib.suppress(Exception):
                    await self._browser.stop()
            if self._local_agent is not None:
                await self._local_agent.stop()
            raise

    async def _start(self, started: float) -> None:
        cfg = self.config
        assert self._lock is not None
        install()  # client calls ahead of the drain's bulk work on this loop (fair_loop.py)
        store_uri, blobs_uri = resolve_uris(cfg.data_dir, cfg.store_uri, cfg.blobs_uri)
        self.blobs = open_blobs(blobs_uri, cfg.data_dir, cfg.s3_credentials)
        if cfg.cluster_token:
            register(cfg.cluster_token)
        self.identity = await asyncio.to_thread(load_or_create_identity, cfg.data_dir / "identity", "controller")
        self.store = open_store(store_uri)
        await self.blobs.open()
        await self.store.open()
        self.metrics = ControllerMetrics()
        remembered = await self.store.load_agents()
        pins = {node: body["fingerprint"] for node, body in remembered.items() if body.get("fingerprint")}
        self.fleet = Fleet(
            cfg.telemetry_period,
            identity=None if cfg.insecure else self.identity,
            cluster_token=cfg.cluster_token,
            pins=pins,
            persist=self._persist_agent,
            sleepers=cfg.data_dir / "sleeping-agents.json",  # known sleeping agents survive a restart (Wake-on-LAN)
            wake_timeout=cfg.wake_timeout,
        )
        self.fleet.restore_sleepers()
        self.controller = Controller(
            self.store,
            self.blobs,
            self.metrics,
            cfg.gang_reserve_after,
            keep_checkpoints=cfg.keep_checkpoints,
            agents=FleetAgents(self.fleet),
            tickets=functools.partial(make_ticket, self.identity),
            peer_transfer=cfg.peer_transfer,
            fair_share=cfg.fair_share,
            fair_share_half_life=cfg.fair_share_half_life,
            preempt_grace=cfg.preempt_grace,
        )
        await self.fleet.start()
        self.controller.add_capacity_source(WakeSource(self.fleet))  # queued work wakes sleeping agents
        await self.controller.start()
        servicer = ControllerServicer(
            self.controller,
            self.fleet,
            lambda: controller_info(
                str(cfg.data_dir),
                self.store.uri,
                self.blobs.uri.split("?")[0],
                started,
                self.local_agent_id,
                self.identity.fingerprint,
                self.fleet.cluster_id,
            ),
            self.request_stop,
            cfg.data_dir,
        )
        self.health = Health([CONTROLLER_SERVICE])
        token = cfg.client_token or await asyncio.to_thread(self._client_token)
        register(token)
        # who calls (the client token: an admin; a named token: its name and role), what they may, the audit log
        self.tokens, self.audit = TokenBook(self.store, token), AuditLog(self.store)
        await self.tokens.load()
        await self.audit.load()
        servicer.tokens, servicer.audit = self.tokens, self.audit
        tokens = ClientTokenInterceptor(token, tokens=self.tokens, audit=self.audit, owner=self._job_owner)
        credentials = None
        if not is_loopback(cfg.host):
            credentials = tls_server_credentials(self.identity.key_pem, self.identity.cert_pem)
        self._server, self.port = create_server(
            [servicer.register], cfg.host, cfg.port, credentials, [ClientsFirst(), tokens], self.health
        )
        token_file = "the token it was started with" if cfg.client_token else str(cfg.data_dir / "client.token")
        tokens.message = refusal(token_file, str(connection_path(self.address)))
        before = asyncio.all_tasks()
        await self._server.start()
        # The server's tasks that take each new call (and make the calls' tasks): grpc's own, by name; not the other
        # tasks (the fleet's, the scheduler's) created while start() yielded
        clients_first(asyncio.all_tasks() - before)
        servicer.pools = self.pools = await start_pools(  # Slurm pools (issue 25): after the port is known
            self.controller,
            self.fleet,
            self.store,
            cfg.data_dir / "identity",
            self.identity.fingerprint,
            agent_address(cfg.host, self.port),
            credentials is not None,
        )
        if cfg.http_port is not None:
            await self._start_http(token, tokens.message, servicer.info)
        self._lock.set_address(self.address)
        self._connections = await asyncio.to_thread(self._write_connections, token, credentials is not None)
        for node_id, body in remembered.items():
            if body.get("source") in ("manual", "pool"):  # a pool's agents run on while their allocation lasts
                self.fleet.remember(node_id, body["address"], body["source"], body.get("name", ""))
        for address in cfg.agents:
            self._keep_trying(address)
        if cfg.mdns:  # before the local agent is awaited: zeroconf's import and start are done while it starts up,
            # not between its ready file and its pairing (on the loop that pairs it)
            from tensorfleet_agent.discovery.browse import AgentBrowser

            self._browser = AgentBrowser(cfg.interfaces, self.fleet.on_mdns)
            await self._browser.start()
        if cfg.local_agent:
            await self._start_local_agent()
        if cfg.metrics_port is not None:
            self.metrics_port = self.metrics.serve(cfg.metrics_port, cfg.metrics_host)
        metrics_host = cfg.metrics_host if cfg.metrics_host not in ("0.0.0.0", "::") else socket.gethostname()
        own = f"{metrics_host}:{self.metrics_port}"
        self._targets = TargetsFile(
            cfg.prometheus_sd or cfg.data_dir / "prometheus" / "targets.json", own if self.metrics_port else None
        )
        self.fleet.subscribe(self._agents_changed)
        self._targets.update(self.fleet.agents.values())
        log.info("controller serving ControllerService on %s (store %s)", self.address, self.store.uri)
        if cfg.ready_file is not None:  # written whole, then renamed: a reader never sees half of it
            body = {
                "pid": os.getpid(),
                "address": self.address,
                "port": self.port,
                "metrics_port": self.metrics_port,
                "local_agent_id": self.local_agent_id,
                "http_port": self.http_port,
                "http_url": self.http_url,
                "http_pin": self.http_pin,
            }
            tmp = cfg.ready_file.with_name(cfg.ready_file.name + ".tmp")
            tmp.write_text(json.dumps(body))
            os.replace(tmp, cfg.ready_file)

    def _job_owner(self, ref: str) -> tuple[str, str] | None:
        """A job's id and submitter, for the permission check of a call on it (None: no such job)."""
        try:
            job = self.controller.get(ref)
        except Exception:  # no such job, or an ambiguous ref: the handler's own lookup says so
            return None
        return job.id, job.submitter

    async def _start_http(self, token: str, refusal: str, info: Callable[[], Any]) -> None:
        """The HTTP API beside gRPC, on the same loop, core and token; FastAPI and uvicorn are imported here only,
        so a controller without --http-port never pays for them."""
        from google.protobuf.json_format import MessageToDict

        from tensorfleet_desktop.controller.http.app import create_app
        from tensorfleet_desktop.controller.http.context import HttpContext
        from tensorfleet_desktop.controller.http.server import HttpServer, public_key_pin

        cfg = self.config
        host = cfg.http_host or cfg.host
        tls = None if is_loopback(host) else (self.identity.key_pem, self.identity.cert_pem)
        context = HttpContext(
            self.controller,
            self.fleet,
            token,
            lambda: MessageToDict(info(), preserving_proto_field_name=True),
            refusal,
            tokens=self.tokens,
            audit=self.audit,
        )
        assert cfg.http_port is not None
        self._http = HttpServer(create_app(context), host, cfg.http_port, tls)
        self.http_port = await self._http.start()
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        shown = f"[{shown}]" if ":" in shown else shown
        self.http_url = f"{self._http.scheme}://{shown}:{self.http_port}/api/v1"
        if tls is None:
            log.info("controller serving the HTTP API on %s (docs: %s/docs)", self.http_url, self.http_url)
            return
        # a self-signed certificate naming the node id, not the host: clients pin its key (what gRPC clients pin)
        self.http_pin = public_key_pin(self.identity.cert_pem)
        name, cert = self.identity.node_id, cfg.data_dir / "identity" / "node.crt"
        log.info(
            "controller serving the HTTP API over HTTPS on %s (docs: %s/docs) with its self-signed certificate "
            "for the name %s: pin its key (curl --pinnedpubkey '%s' -k ...) or trust that certificate for that "
            "name (curl --cacert %s --resolve %s:%d:<host> https://%s:%d/api/v1/...)",
            *(self.http_url, self.http_url, name, self.http_pin, cert, name, self.http_port, name, self.http_port),
        )

    def _agents_changed(self, kind: str, _record: AgentRecord) -> None:
        """Keep the Prometheus targets in step with agent states (telemetry ticks change none)."""
        if kind != "telemetry" and self._targets is not None:
            self._targets.update(self.fleet.agents.values())

    def _persist_agent(self, record: AgentRecord) -> None:
        self.store.save_agent(
            record.node_id,
            {
                "address": record.address,
                "source": record.source,
                "name": record.name,
                "fingerprint": record.fingerprint,
            },
        )

    def _write_connections(self, token: str, tls: bool) -> list[Path]:
        """Connection files for same-user clients: this address, and for a wildcard host the local names (where
        it serves TLS too: the files say so, and clients dial 127.0.0.1 over TLS pinned to the fingerprint)."""
        cfg = self.config
        hosts = [cfg.host]
        if cfg.host in ("0.0.0.0", "::"):
            hosts += ["127.0.0.1", socket.gethostname()]
        written = []
        for host in hosts:
            address = f"{host}:{self.port}"
            try:
                written.append(write_connection(address, self.identity.fingerprint, token, tls=tls))
            except OSError as exc:  # clients can still set TENSORFLEET_CONTROLLER_TOKEN
                log.warning("cannot write the connection file for %s: %s", address, exc)
        return written

    def _client_token(self) -> str:
        """The token clients must send on every call (kept 0600 in the data dir, the same across restarts)."""
        path = self.config.data_dir / "client.token"
        if path.exists():
            os.chmod(path, 0o600)  # tighten one an older version or a user left readable
            return path.read_text().strip()
        token = f"tfc-{secrets.token_urlsafe(24)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        log.warning("clients must send the token in %s (set TENSORFLEET_CONTROLLER_TOKEN on their side)", path)
        return token

    def _keep_trying(self, address: str) -> None:
        async def attempt() -> None:
            delay = 1.0
            said = ""
            while True:
                try:
                    record = await self.fleet.add(address, "manual")
                    self._persist_agent(record)
                    return
                except FleetError as exc:
                    if str(exc) != said:  # retried for as long as it runs: each new reason once
                        said = str(exc)
                        log.warning("--agent %s: %s (retrying)", address, exc)
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)

        task = asyncio.create_task(attempt())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _start_local_agent(self) -> None:
        assert self._local_agent is not None
        port = await self._local_agent.wait_ready()
        record = await self.fleet.add(f"127.0.0.1:{port}", "local", pair_token=self._local_agent.join_token)
        self.local_agent_id = record.node_id

    def request_stop(self) -> None:
        self.stopped.set()

    async def stop(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._http is not None:
            await self._http.stop()
        if self._server is not None:
            await self.health.not_serving()
            await self._server.stop(grace=1.0)
        for path in self._connections:
            remove_connection(path)
        if self._browser is not None:
            await self._browser.stop()
        if self.pools is not None:
            await self.pools.stop()  # its allocations run on in Slurm: followed again after a restart
        await self.controller.stop()
        await self.fleet.stop()
        if self._targets is not None:
            await asyncio.to_thread(self._targets.close)
        await self.store.close()
        if self._local_agent is not None:
            await self._local_agent.stop()
        if self._lock is not None:
            self._lock.release()
        log.info("controller stopped")
