"""Composition root of the agent: wires identity, slots, executor, gRPC, mDNS and metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from tensorfleet_agent.core.types import NodeInfo
from tensorfleet_agent.core.version import AGENT_VERSION, PROTOCOL_VERSION
from tensorfleet_agent.datadir_lock import DataDirLock
from tensorfleet_agent.desk.control import DeskControl
from tensorfleet_agent.desk.monitor import DeskConfig, DeskMonitor
from tensorfleet_agent.desk.setup import desk_signals
from tensorfleet_agent.discovery.interfaces import advertised_addresses
from tensorfleet_agent.identity import load_or_create_identity
from tensorfleet_agent.metrics import AgentMetrics
from tensorfleet_agent.rpc.server import Health, create_server, is_loopback, tls_server_credentials
from tensorfleet_agent.rpc.service import AgentServicer
from tensorfleet_agent.runtime.blobs import BlobStore
from tensorfleet_agent.runtime.envs import EnvBuildError, EnvCache
from tensorfleet_agent.runtime.executor import Executor, ExecutorConfig
from tensorfleet_agent.runtime.gpus import Gpus
from tensorfleet_agent.runtime.interfaces import WolFlag, list_interfaces, probe_ethtool
from tensorfleet_agent.runtime.power import IdleSuspender
from tensorfleet_agent.runtime.slots import SlotPool
from tensorfleet_agent.runtime.telemetry import TelemetrySampler, disk_free, machine_facts
from tensorfleet_agent.security.authority import Authority, add_join_token, new_join_token
from tensorfleet_agent.security.files import make_data_dir, tighten_data_dir
from tensorfleet_agent.security.interceptor import SERVICE as AGENT_SERVICE
from tensorfleet_agent.security.interceptor import AuthInterceptor
from tensorfleet_agent.security.secrets import cluster_id_of, register
from tensorfleet_agent.workloads.registry import available_workloads

if TYPE_CHECKING:  # zeroconf is imported only by an agent that advertises (serve's local agent does not)
    from tensorfleet_agent.discovery.advertise import AdvertisedAgent, Advertiser

log = logging.getLogger(__name__)
TXT_UPDATE_SPACING = 1.0  # seconds between two mDNS TXT updates (power, desk)


@dataclass
class AgentConfig:
    data_dir: Path
    host: str = "0.0.0.0"
    port: int = 50051
    name: str = field(default_factory=socket.gethostname)
    interfaces: list[str] = field(default_factory=list)  # resolved IPv4 addresses; [] = all
    advertise: bool = True
    cpu_slots: int | None = None
    drain_timeout: float = 60.0
    metrics_port: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    blob_cache_bytes: int = 20 * 2**30
    env_cache_bytes: int = 20 * 2**30  # project envs (uv-built venvs) under <data dir>/envs, LRU beyond this
    project_python: str | None = None  # --python: the interpreter project envs are built on (envs.find_python)
    journal_retention_seconds: float = 7 * 86400
    journal_max_finished: int = 10_000
    warm_idle_seconds: float = 60.0
    spare_workers: int = 1  # without the fork server: started ahead, libraries imported, for a new job's first task
    fork_server: bool = True  # every task's worker forked from a warm, clean process (runtime/forkserver.py)
    ready_file: Path | None = None
    insecure: bool = False  # plaintext, no pairing: loopback development only
    cluster_token: str = ""  # pairs automatically with controllers started with the same token
    join_token: str = ""  # a preset one-time join token (the controller's local agent gets one)
    allow_scripts: bool = True
    suspend_when_idle: float = 0.0  # seconds without work before it suspends the machine; 0: never
    suspend_command: tuple[str, ...] = ("systemctl", "suspend")
    wol: WolFlag = field(default_factory=WolFlag)  # --wol: interfaces asserted to wake on a magic packet
    desk: DeskConfig | None = None  # --desk: lend this workstation only while its owner is away
    pool: str = ""  # --join: the pool whose allocation (or credential) brought it; "" for a LAN agent
    allocation_id: str = ""  # that allocation's Slurm job id (SLURM_JOB_ID); "" outside Slurm

    @property
    def cluster_id(self) -> str:
        return cluster_id_of(self.cluster_token) if self.cluster_token else ""


class AgentDaemon:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.metrics = AgentMetrics()
        self.gpus = Gpus()
        self.node_id = ""
        self.port = 0
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._advertiser: Advertiser | None = None
        self._facts: dict[str, str | int] = {}
        self._started = asyncio.Event()
        self._lock: DataDirLock | None = None
        self.envs: EnvCache | None = None
        self.power: IdleSuspender | None = None
        self.desk: DeskMonitor | None = None
        self._desk_control: DeskControl | None = None
        self._ethtool_wol: dict[str, bool] = {}
        self._txt_changed = asyncio.Event()
        self._txt_follower: asyncio.Task[None] | None = None

    @staticmethod
    async def _check_project_python(envs: EnvCache) -> None:
        """Say once, at start, which Python project jobs get, or that they cannot run here and how to fix it."""
        try:
            python = await envs.base_python()
        except EnvBuildError as exc:
            log.warning("%s", exc.reason)  # each project task then fails with this reason (exit cause env_build)
            return
        if python.found_by != "the agent's own Python":
            log.info("project jobs run on Python %s at %s (%s)", python.version, python.path, python.found_by)

    async def start(self) -> None:
        cfg = self.config
        t0 = time.monotonic()
        if cfg.insecure and not is_loopback(cfg.host):
            raise ValueError(f"--insecure serves plaintext without pairing: only on loopback, not on {cfg.host}")
        created = make_data_dir(cfg.data_dir)  # a sentence, not a traceback, when it is another user's
        self._lock = DataDirLock(cfg.data_dir, "tensorfleet-agent")
        self._lock.acquire()  # before anything in the data dir is read, written or chmod-ed
        warning = tighten_data_dir(cfg.data_dir, created)  # 0700 when ours: keys, journals, what tasks printed
        if warning:
            log.warning("%s", warning)
        self.identity = await asyncio.to_thread(load_or_create_identity, cfg.data_dir / "identity", "agent")
        self.node_id = self.identity.node_id
        self.authority: Authority | None = None
        if not cfg.insecure:
            self.authority = Authority(cfg.data_dir / "identity", self.identity, cfg.cluster_token)
            if cfg.join_token:
                register(cfg.join_token)
                await asyncio.to_thread(add_join_token, cfg.data_dir / "identity", cfg.join_token, 3600.0)
            elif not cfg.cluster_token and not self.authority.has_paired_controllers():
                token = await asyncio.to_thread(new_join_token, cfg.data_dir / "identity")
                register(token)
                self._show_join_token(token)
        self._facts = await asyncio.to_thread(machine_facts)
        gpu_list = await asyncio.to_thread(self.gpus.inventory)
        self.gpu_inventory = gpu_list
        self.slots = SlotPool(
            int(self._facts["cpu_count"]),
            [g.index for g in gpu_list],
            cfg.cpu_slots,
            {g.index: g.memory_total_bytes for g in gpu_list},
        )
        self.blobs = await asyncio.to_thread(BlobStore, cfg.data_dir / "blobs", cfg.blob_cache_bytes)
        self.envs = EnvCache(cfg.data_dir / "envs", cfg.env_cache_bytes, python=cfg.project_python)
        await self._check_project_python(self.envs)
        self.executor = Executor(
            ExecutorConfig(
                cfg.data_dir,
                cfg.warm_idle_seconds,
                cfg.journal_retention_seconds,
                cfg.journal_max_finished,
                cfg.spare_workers,
                cfg.env_cache_bytes,
                cfg.fork_server,
            ),
            self.slots,
            self.blobs,
            self.metrics,
            self.envs,
            self.gpus if gpu_list else None,
        )
        await self.executor.start()
        names = [i.name for i in await asyncio.to_thread(list_interfaces)]
        self._ethtool_wol = await probe_ethtool(names)
        if cfg.suspend_when_idle > 0:
            self.power = IdleSuspender(
                cfg.suspend_when_idle,
                cfg.suspend_command,
                self._busy_for_suspend,
                self._readvertise,
            )
        if cfg.desk is not None:
            self.desk = DeskMonitor(
                cfg.desk,
                desk_signals(cfg.desk, self.gpus),
                self.executor.preempt_all,
                lambda: self.executor.tasks_running,
                self._readvertise,
            )
            self.desk.start()
            self._desk_control = DeskControl(cfg.data_dir, self.desk.status, self.desk.set_paused)
            await self._desk_control.start()
        self.sampler = TelemetrySampler(cfg.data_dir, self.gpus, self.slots)
        servicer = AgentServicer(
            self.executor,
            self.blobs,
            self.sampler,
            self.node_info,
            self.authority,
            cfg.allow_scripts,
            self.power,
            self.desk,
        )
        self.health = Health([AGENT_SERVICE])
        if self.authority is None:
            self._server, self.port = create_server([servicer.register], cfg.host, cfg.port, health=self.health)
        else:
            credentials = tls_server_credentials(self.identity.key_pem, self.identity.cert_pem)
            self._server, self.port = create_server(
                [servicer.register], cfg.host, cfg.port, credentials, [AuthInterceptor(self.authority)], self.health
            )
        await self._server.start()
        self._lock.set_address(f"{cfg.host}:{self.port}")
        if cfg.metrics_port is not None:
            self.metrics.watch_hardware(lambda: self.sampler.sample(self.slots.total, self.slots.free, 0))
            self.metrics_port = self.metrics.serve(cfg.metrics_port, "127.0.0.1" if is_loopback(cfg.host) else cfg.host)
        log.info(
            "agent %r (node %s, certificate %s) serving AgentService on %s:%d%s with %d slot(s)%s",
            cfg.name,
            self.node_id,
            self.identity.fingerprint[:16],
            cfg.host,
            self.port,
            " (INSECURE: plaintext, no pairing)" if cfg.insecure else " over TLS",
            self.slots.total,
            f", metrics on :{self.metrics_port}" if self.metrics_port else "",
        )
        if cfg.advertise:
            from tensorfleet_agent.discovery.advertise import Advertiser

            self._advertiser = Advertiser(cfg.interfaces)
            await self._advertiser.start(self._advertisement())
        if self.power is not None:
            self.power.start()
        log.info("agent ready in %.2fs", time.monotonic() - t0)
        if cfg.ready_file is not None:
            await asyncio.to_thread(self._write_ready_file)
        self._started.set()

    def _show_join_token(self, token: str) -> None:
        """On a terminal, print the token; otherwise (a service, a log file) keep it out of the logs."""
        if sys.stderr.isatty():
            print(
                f"\nThis agent is not paired with any controller yet. Join token (valid 1 h, single use):\n"
                f"    {token}\non the controller: tensorfleet agents pair {self.config.name} --token {token}\n"
                f"(`tensorfleet-agent token` prints a new one)\n",
                file=sys.stderr,
                flush=True,
            )
            return
        path = self.config.data_dir / "identity" / "join-token.txt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        log.warning("not paired with any controller yet: a join token (valid 1 h) is in %s", path)

    def _advertisement(self) -> AdvertisedAgent:
        from tensorfleet_agent.discovery.advertise import AdvertisedAgent

        cfg = self.config
        return AdvertisedAgent(
            node_id=self.node_id,
            name=cfg.name,
            port=self.port,
            addresses=tuple(advertised_addresses(cfg.host, cfg.interfaces)),
            protocol_version=PROTOCOL_VERSION,
            gpus=len(self.gpu_inventory),
            slots=self.slots.total,
            cluster_id=cfg.cluster_id,
            cert_fingerprint="" if cfg.insecure else self.identity.fingerprint,
            agent_version=AGENT_VERSION,
            power="sleeping" if self.power is not None and self.power.going_to_sleep else "awake",
            desk=self.desk.state() if self.desk is not None else "",
        )

    def _busy_for_suspend(self) -> bool:
        """No suspend while a task runs, nor while a desk owner uses (or paused) the workstation."""
        return self.executor.tasks_running > 0 or (self.desk is not None and not self.desk.lending)

    def _readvertise(self) -> None:
        """The power or desk state changed: the mDNS TXT record follows (in the background)."""
        if self._advertiser is None:
            return
        self._txt_changed.set()
        if self._txt_follower is None:
            self._txt_follower = asyncio.create_task(self._follow_txt(self._advertiser), name="mdns-txt")

    async def _follow_txt(self, advertiser: Advertiser) -> None:
        """One update at a time, the newest state each, at most one a second (RFC 6762's rate for a record): a
        state that changes back and forth quickly still ends announced as it is now."""
        while True:
            await self._txt_changed.wait()
            self._txt_changed.clear()
            try:
                await advertiser.update(self._advertisement())
            except Exception as exc:  # mDNS must never stop the agent
                log.warning("could not update the mDNS record: %s", exc)
            await asyncio.sleep(TXT_UPDATE_SPACING)

    def _write_ready_file(self) -> None:
        assert self.config.ready_file is not None
        body = {
            "pid": os.getpid(),
            "node_id": self.node_id,
            "name": self.config.name,
            "host": self.config.host,
            "port": self.port,
            "metrics_port": self.metrics_port,
            "fingerprint": self.identity.fingerprint,
            "insecure": self.config.insecure,
            "addresses": list(advertised_addresses(self.config.host, self.config.interfaces)),
        }
        tmp = self.config.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self.config.ready_file)

    def node_info(self) -> NodeInfo:
        """Blocking (disk usage): called through asyncio.to_thread by the servicer."""
        f = self._facts
        return NodeInfo(
            protocol_version=PROTOCOL_VERSION,
            node_id=self.node_id,
            name=self.config.name,
            hostname=str(f["hostname"]),
            os=str(f["os"]),
            python_version=str(f["python_version"]),
            torch_version=str(f["torch_version"]),
            sklearn_version=str(f["sklearn_version"]),
            cpu_count=int(f["cpu_count"]),
            memory_total_bytes=int(f["memory_total_bytes"]),
            disk_free_bytes=disk_free(self.config.data_dir),
            gpus=self.gpu_inventory,
            # with --no-scripts the agent does not offer the script workload, so no controller places one here
            workloads=tuple(
                w.name for w in available_workloads() if self.config.allow_scripts or w.category != "script"
            ),
            slots_total=self.slots.total,
            slots_free=self.slots.free,
            agent_version=AGENT_VERSION,
            labels=dict(self.config.labels),
            draining=self.executor.draining,
            cluster_id=self.config.cluster_id,
            cert_fingerprint="" if self.config.insecure else self.identity.fingerprint,
            metrics_port=self.metrics_port or 0,
            interfaces=list_interfaces(self.config.wol, self._ethtool_wol),
            suspend_when_idle_seconds=self.config.suspend_when_idle,
            desk=self.desk.status() if self.desk is not None else None,
            pool=self.config.pool,
            allocation_id=self.config.allocation_id,
        )

    async def stop(self, drain: bool = True) -> None:
        """Graceful stop: refuse new work, drain, say goodbye on mDNS, close the server."""
        if not self._started.is_set():
            if self._lock is not None:
                self._lock.release()
            return
        await self.health.not_serving()  # probes and load balancers see it before the drain ends
        if self.power is not None:
            await self.power.stop()
        if self._desk_control is not None:
            await self._desk_control.stop()
        if self.desk is not None:
            await self.desk.stop()
        if drain:
            await self.executor.drain(self.config.drain_timeout)
        if self._txt_follower is not None:
            self._txt_follower.cancel()
        if self._advertiser is not None:
            await self._advertiser.stop()
        if self._server is not None:
            await self._server.stop(grace=2.0)
        await self.executor.close()
        if self.envs is not None:
            await self.envs.close()  # builds no task waits for any more: uv killed, half-built dirs removed
        if self._lock is not None:
            self._lock.release()
        log.info("agent stopped")
