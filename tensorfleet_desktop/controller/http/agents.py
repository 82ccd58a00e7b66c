"""Agents and the dashboard over HTTP: every agent the controller knows with its latest telemetry (what gRPC
ListAgents and `tensorfleet agents --json` report), draining or waking one (Wake-on-LAN), and one summary call for
monitoring tools."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from tensorfleet_desktop.controller import operations
from tensorfleet_desktop.controller.fleet import AgentRecord, AgentState, RefusedService
from tensorfleet_desktop.controller.http import problems
from tensorfleet_desktop.controller.http.context import HttpContext, context
from tensorfleet_desktop.controller.http.paging import DEFAULT_LIMIT, MAX_CURSOR, MAX_LIMIT, paginate
from tensorfleet_desktop.controller.model import JobState

router = APIRouter()
Context = Annotated[HttpContext, Depends(context)]

#: What an agent's `state` can be: the fleet's states, and REFUSED for one whose certificate does not prove it
#: (or, with include_refused, a service this controller saw and does not use).
AGENT_STATES = (*(s.value for s in AgentState), "REFUSED")


class GpuStat(BaseModel):
    index: int
    utilization_percent: float = Field(description="0-100 (latest telemetry)")
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_celsius: float
    power_watts: float
    memory_reserved_bytes: int = Field(0, description="GPU memory promised to the tasks sharing it by memory")
    shared_tasks: int = Field(0, description="tasks sharing it by memory now")
    exclusive: bool = Field(False, description="a task holds it whole")


class Desk(BaseModel):
    """Desk mode's state (tensorfleet-agent --desk)."""

    owner_active: bool = Field(description="its owner uses the machine: it lends nothing")
    paused: bool = Field(description='its owner said "don\'t lend now" (tensorfleet-agent desk pause)')
    reason: str = Field(description="why it lends or not, as a sentence")
    since: float = Field(description="unix seconds the current lending state began")
    idle_seconds: float = Field(description="the owner's input idle time as last read; -1: no desktop session")
    idle_threshold_seconds: float = Field(description="how long idle before it lends (--desk-idle)")
    schedule: str = Field(description="--desk-hours, e.g. 19:00-08:00; empty when lending by idleness only")


class NetInterface(BaseModel):
    """A network interface of the agent's machine, for Wake-on-LAN."""

    name: str
    mac: str = Field(description="aa:bb:cc:dd:ee:ff")
    ipv4: str = Field(description="its IPv4 address; empty when it has none")
    prefix_length: int
    broadcast: str = Field(description="its subnet's broadcast address")
    wake_on_lan: bool = Field(description="it wakes on a magic packet (ethtool 'Wake-on: g', or --wol)")
    wake_on_lan_source: str = Field(description="ethtool, flag, or empty (unknown: treated as off)")


class Agent(BaseModel):
    """An agent as `tensorfleet agents --json` shows it (gRPC ListAgents), in snake_case."""

    node_id: str = Field(description="the agent's node id (its certificate proves it)")
    name: str = Field(description="as the agent names itself (--name)")
    address: str = Field(description="host:port of its gRPC service")
    state: str = Field(description=f"one of {', '.join(AGENT_STATES)}")
    state_since: float = Field(description="unix seconds when it entered `state`")
    source: str = Field(description="how the controller knows it: mdns, manual or local")
    paired: bool = Field(description="this controller holds a session with it (it runs our work)")
    slots_total: int = Field(description="task slots (one per GPU, or its --cpu-slots)")
    slots_used: int = Field(description="slots this controller's task attempts hold")
    slots_free: int
    labels: dict[str, str] = Field(description="the agent's --label k=v")
    hostname: str
    agent_version: str = Field(description="the agent's tensorfleet package version")
    os: str = ""
    python_version: str = ""
    torch_version: str = ""
    sklearn_version: str = ""
    cpu_count: int = 0
    workloads: list[str] = Field(description="workload names it can run")
    gpus: int = Field(description="GPUs it has")
    gpu_names: list[str] = Field(default_factory=list, description="each GPU's model, by index")
    last_seen: float = Field(description="unix seconds of its latest telemetry (0: none yet)")
    cpu_percent: float = Field(description="0-100, whole machine (latest telemetry)")
    memory_used_bytes: int
    memory_total_bytes: int
    disk_free_bytes: int = Field(description="free bytes in the agent's data dir")
    disk_total_bytes: int = Field(description="size of the file system holding its data dir; 0: unknown")
    gpu_stats: list[GpuStat] = Field(description="per-GPU utilization, memory, temperature, power (latest)")
    tasks_running: int = Field(description="tasks running on it (any controller's)")
    running: list[str] = Field(description="this controller's task attempts placed on it")
    fingerprint: str = Field(description="sha256 of its TLS certificate (the pinned one)")
    cluster_id: str
    metrics_port: int = Field(description="its Prometheus /metrics port on its host; 0: it serves none")
    error: str = Field(description="why it is not ONLINE (or a warning), as a sentence; empty when fine")
    desk: Desk | None = Field(default=None, description="desk mode's state; null when not in desk mode")
    interfaces: list[NetInterface] = Field(
        default_factory=list, description="its interfaces with a MAC (kept while it sleeps)"
    )
    wake_count: int = Field(default=0, description="magic packets this controller sent it that woke it")
    last_wake_at: float = Field(default=0.0, description="unix seconds of the last magic packet sent; 0: never")
    refused: str = Field(default="", description="a refused service: why this controller does not use it")
    instance: str = Field(default="", description="a refused service: its mDNS instance name")


class AgentList(BaseModel):
    items: list[Agent]
    total: int
    limit: int
    next_cursor: str | None
    page: int | None
    refused: int = Field(description="services seen and refused (listed when include_refused=true)")


def agent_body(record: AgentRecord) -> Agent:
    """The core's record at the edge: the keys of AgentRecord.to_dict (what gRPC sends), plus what NodeInfo
    says about the machine."""
    d = record.to_dict()
    info = record.info
    return Agent(
        node_id=d.pop("id"),
        slots_used=d["slots_total"] - d["slots_free"],
        os=info.os if info else "",
        python_version=info.python_version if info else "",
        torch_version=info.torch_version if info else "",
        sklearn_version=info.sklearn_version if info else "",
        cpu_count=info.cpu_count if info else 0,
        gpu_names=[g.name for g in info.gpus] if info else [],
        metrics_port=info.metrics_port if info else 0,
        **d,
    )


def refused_body(entry: RefusedService) -> Agent:
    """A refused service in the shape of an agent: state REFUSED, the reason in `refused` (as gRPC clients see
    it with include_refused)."""
    d = entry.to_dict()
    return Agent(
        node_id=d["id"],
        name=d["name"],
        address=d["address"],
        state="REFUSED",
        state_since=d["first_seen"],
        source="mdns",
        paired=False,
        slots_total=0,
        slots_used=0,
        slots_free=0,
        labels={},
        hostname="",
        agent_version="",
        workloads=[],
        gpus=0,
        last_seen=d["last_seen"],
        cpu_percent=0.0,
        memory_used_bytes=0,
        memory_total_bytes=0,
        disk_free_bytes=0,
        disk_total_bytes=0,
        gpu_stats=[],
        tasks_running=0,
        running=[],
        fingerprint="",
        cluster_id=d["cluster_id"],
        metrics_port=0,
        error=d["reason"],
        refused=d["reason"],
        instance=d["instance"],
    )


def _ascending(text: str) -> list[int]:
    """A key that sorts descending exactly as `text` sorts ascending (paging.paginate walks keys downwards):
    each code point negated, then a terminator above them all so a prefix comes first."""
    return [-ord(ch) for ch in text] + [1]


@router.get(
    "/agents",
    tags=["agents"],
    summary="List agents",
    response_model=AgentList,
    responses=problems.error_responses(422),
)
async def list_agents(
    ctx: Context,
    include_refused: Annotated[bool, Query(description="also list the services this controller refuses")] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR, description="next_cursor of the page before")] = None,
    page: Annotated[int | None, Query(ge=1, description="page number (instead of cursor)")] = None,
) -> AgentList:
    """Every agent the controller knows, by name, with its latest telemetry: where work can run and how busy
    each machine is (as `tensorfleet agents`)."""
    rows = [([0, _ascending(a.name), _ascending(a.node_id)], agent_body(a)) for a in ctx.fleet.agents.values()]
    if include_refused:  # after the agents
        rows += [([-1, _ascending(r.name), _ascending(r.key)], refused_body(r)) for r in ctx.fleet.refused.values()]
    rows.sort(key=lambda row: row[0], reverse=True)
    keys = {id(body): key for key, body in rows}
    found = paginate([body for _, body in rows], lambda body: keys[id(body)], limit, cursor, page)
    return AgentList(
        items=found.items,
        total=found.total,
        limit=found.limit,
        next_cursor=found.next_cursor,
        page=found.page,
        refused=len(ctx.fleet.refused),
    )


AgentRef = Annotated[str, Path(description="the agent's name, node id, id prefix (6+ characters) or address")]


@router.get(
    "/agents/{agent}",
    tags=["agents"],
    summary="Get one agent",
    response_model=Agent,
    responses=problems.error_responses(404, 409),
)
async def get_agent(ctx: Context, agent: AgentRef) -> Agent:
    """One agent with its telemetry, found as the CLI finds it (`tensorfleet agents show`); 409 when a prefix
    matches several."""
    return agent_body(ctx.fleet.resolve(agent))


@router.post(
    "/agents/{agent}/drain",
    tags=["agents"],
    summary="Drain an agent",
    response_model=Agent,
    responses=problems.error_responses(404, 409),
)
async def drain_agent(ctx: Context, agent: AgentRef) -> Agent:
    """No new tasks go to the agent; the ones it runs finish (before maintenance). As `tensorfleet agents
    drain`."""
    return agent_body(ctx.fleet.drain(agent))


@router.post(
    "/agents/{agent}/wake",
    tags=["agents"],
    summary="Wake a sleeping agent",
    response_model=Agent,
    responses=problems.error_responses(404, 409),
)
async def wake_agent(ctx: Context, agent: AgentRef) -> Agent:
    """Send the agent's machine a Wake-on-LAN magic packet on its subnets (by the controller, or relayed by an
    online agent there); it is WAKING until it answers. 409 when it is awake or cannot be woken (no MAC known, no
    route to its subnet), saying why. As `tensorfleet agents wake`."""
    return agent_body(await ctx.fleet.wake(agent))


@router.delete(
    "/agents/{agent}",
    tags=["agents"],
    summary="Remove an agent",
    response_model=Agent,
    responses=problems.error_responses(404, 409),
)
async def remove_agent(ctx: Context, agent: AgentRef) -> Agent:
    """Forget an agent (a retired machine): the controller stops supervising it and drops its pin and stored
    record, as `tensorfleet agents remove`. One still advertised on the LAN may be found again over mDNS."""
    return agent_body(await operations.remove_agent(ctx.controller, ctx.fleet, agent))


class CacheTree(BaseModel):
    name: str = Field(description="the dataset's name")
    version: int
    content_id: str = Field(description="the version's manifest sha256")
    bytes: int
    files: int
    last_used: float = Field(description="unix seconds")
    in_use: int = Field(description="tasks reading it now")


class AgentCache(BaseModel):
    """An agent's blob cache and the dataset versions laid out from it (`tensorfleet agents cache AGENT --json`)."""

    blobs: int
    blob_bytes: int
    limit_bytes: int = Field(description="its --blob-cache-gb; least recently used blobs go beyond it")
    trees: list[CacheTree] = Field(description="most recently used first")


@router.get(
    "/agents/{agent}/cache",
    tags=["agents"],
    summary="An agent's blob cache",
    response_model=AgentCache,
    responses=problems.error_responses(404, 409),
)
async def agent_cache(ctx: Context, agent: AgentRef) -> AgentCache:
    """What the agent's blob cache holds and the dataset versions materialized there (gRPC GetAgentCache); 409
    when the agent cannot be asked now (not connected)."""
    record = ctx.fleet.resolve(agent)
    cache = await operations.agent_cache(ctx.controller, ctx.fleet, record)
    trees = sorted(cache["trees"], key=lambda t: -float(t["last_used"]))
    return AgentCache(**{**cache, "trees": [CacheTree(**t) for t in trees]})


# ---- dashboard


class JobCounts(BaseModel):
    by_state: dict[str, int] = Field(description="every job state, zeros included")
    total: int
    active: int = Field(description="jobs not yet ended: QUEUED, RUNNING or PAUSED")


class AgentCounts(BaseModel):
    by_state: dict[str, int] = Field(description=f"every agent state ({', '.join(AGENT_STATES)}), zeros included")
    total: int
    online: int = Field(description="agents the controller reaches now: ONLINE, DRAINING or OWNER_ACTIVE")
    refused_services: int = Field(description="services seen on the LAN and refused (another cluster, ...)")


class SlotCounts(BaseModel):
    total: int = Field(description="task slots of the online agents")
    used: int = Field(description="of those, held by this controller's task attempts")
    free: int


class GpuSummary(BaseModel):
    total: int = Field(description="GPUs of the online agents")
    utilization_percent: float | None = Field(description="mean over the GPUs reporting telemetry; null: none")
    memory_used_bytes: int
    memory_total_bytes: int


class ControllerSummary(BaseModel):
    version: str
    started_at: float = Field(description="unix seconds")
    uptime_seconds: float
    cluster_id: str


class Dashboard(BaseModel):
    """The cluster at a glance."""

    jobs: JobCounts
    agents: AgentCounts
    slots: SlotCounts
    gpus: GpuSummary
    models: int = Field(description="model versions in the registry (`tensorfleet models stats` total)")
    datasets: int = Field(description="uploaded datasets")
    controller: ControllerSummary
    time: float = Field(description="unix seconds when this summary was taken")


@router.get(
    "/dashboard",
    tags=["dashboard"],
    summary="Cluster summary",
    response_model=Dashboard,
)
async def dashboard(ctx: Context) -> Dashboard:
    """One call for monitoring tools and status pages: jobs by state, agents online, slot and GPU use, how many
    models and datasets, and the controller's version and uptime."""
    c = ctx.controller
    jobs = {s.value: 0 for s in JobState}
    for job in c.jobs.values():
        jobs[job.state.value] += 1
    agents = dict.fromkeys(AGENT_STATES, 0)
    slots_total = slots_used = gpus = memory_used = memory_total = 0
    utilization: list[float] = []
    for record in ctx.fleet.agents.values():
        agents[record.public_state()] += 1
        if record.state is not AgentState.ONLINE:
            continue
        slots_total += record.slots_total
        slots_used += record.slots_total - record.slots_free
        gpus += len(record.info.gpus) if record.info else 0
        for gpu in record.telemetry.gpus if record.telemetry else ():
            utilization.append(gpu.utilization_percent)
            memory_used += gpu.memory_used_bytes
            memory_total += gpu.memory_total_bytes
    _, models = await c.registry.list(page=1, limit=1)
    info = ctx.info()
    started = float(info.get("started_at", 0.0))
    now = time.time()
    return Dashboard(
        jobs=JobCounts(
            by_state=jobs, total=sum(jobs.values()), active=sum(n for s, n in jobs.items() if not JobState(s).terminal)
        ),
        agents=AgentCounts(
            by_state=agents,
            total=len(ctx.fleet.agents),
            online=sum(agents[s.value] for s in (AgentState.ONLINE, AgentState.DRAINING, AgentState.OWNER_ACTIVE)),
            refused_services=len(ctx.fleet.refused),
        ),
        slots=SlotCounts(total=slots_total, used=slots_used, free=slots_total - slots_used),
        gpus=GpuSummary(
            total=gpus,
            utilization_percent=sum(utilization) / len(utilization) if utilization else None,
            memory_used_bytes=memory_used,
            memory_total_bytes=memory_total,
        ),
        models=models,
        datasets=len(c.datasets),
        controller=ControllerSummary(
            version=str(info.get("version", "")),
            started_at=started,
            uptime_seconds=max(0.0, now - started) if started else 0.0,
            cluster_id=str(info.get("cluster_id", "")),
        ),
        time=now,
    )
