"""The agent's domain model. Protobuf never appears here (see rpc/convert.py)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, TypeVar


class TaskState(enum.Enum):
    ACCEPTED = "ACCEPTED"
    PREPARING = "PREPARING"  # a project task: files materialized, env built (before RUNNING)
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


class ExitCause:
    """Why a task ended; stable strings that users and the controller match on."""

    COMPLETED = "completed"
    EXCEPTION = "exception"
    EXIT_CODE = "exit_code"
    SIGNAL = "signal"
    WORKER_LOST = "worker_lost"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    CANCELLED = "cancelled"
    STOPPED = "stopped"  # saved a checkpoint and stopped on request (a paused job)
    AGENT_RESTARTED = "agent_restarted"
    DRAIN_TIMEOUT = "drain_timeout"
    SETUP = "setup"
    ENV_BUILD = "env_build"  # a project's requirements cannot be resolved: permanent, the job fails once
    BAD_COMMAND = "bad_command"  # a project's command is not found or not executable in its env: permanent
    DATASET_CHANGED = "dataset_changed"  # a referenced dataset's object changed since its snapshot: permanent
    PREEMPTED = "preempted"  # stopped (checkpoint first) to give the machine back: re-queued, never a failure
    # the controller's own, never an agent's:
    REJECTED = "rejected"  # the agent refused RunTask
    PRUNED = "pruned"  # a sweep trial stopped early by the pruner


@dataclass(frozen=True)
class BlobRef:
    name: str
    sha256: str


@dataclass(frozen=True)
class Rendezvous:
    master_addr: str
    master_port: int


@dataclass(frozen=True)
class PeerSource:
    """An agent holding some of a dataset version's blobs (`sha256`), as the controller sees it: its AgentService
    address and the TLS certificate fingerprint the controller pinned for it."""

    node_id: str
    address: str
    cert_fingerprint: str
    sha256: tuple[str, ...] = ()


@dataclass(frozen=True)
class PeerTicket:
    """What a peer checks before it serves a dataset blob (security/tickets.py): the reader it was given to, the
    controller that signed it, the versions (manifest ids) it may read, until when."""

    reader_node_id: str
    controller_fingerprint: str
    content_ids: frozenset[str]
    expires_at: float  # unix seconds
    job_id: str = ""


@dataclass(frozen=True)
class DatasetMount:
    """A dataset version a task reads at TENSORFLEET_DATASET_DIR (issue 20): an upload names its manifest blob, a
    reference its listing blob (exactly one of the two), both already in the agent's blob cache, except the blobs
    `peers` hold: the agent fetches those from them with `ticket` (a serialized PeerTicket the controller signed)."""

    name: str
    version: int
    manifest_id: str = ""
    listing_id: str = ""
    peers: tuple[PeerSource, ...] = ()
    ticket: bytes = b""
    ticket_signature: bytes = b""


@dataclass(frozen=True)
class TaskSpec:
    task_id: str
    job_id: str
    workload: str
    params: dict[str, Any] = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1
    gpus: int = 0
    timeout_seconds: float = 0.0
    memory_limit_bytes: int = 0
    inputs: tuple[BlobRef, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    attempt: int = 0
    rendezvous: Rendezvous | None = None
    dataset: str = ""
    dataset_params: dict[str, Any] = field(default_factory=dict)
    # "" (the whole job) | "cv": fold `rank` of `world_size` | "gang": a rank of a gang | "shard": a random_forest
    # rank growing its share of the trees
    partition: str = ""
    single_task: bool = False  # the job has no other task: its worker is not kept warm for one
    # torchrun's numbering of a gang, from the controller, which sees the whole placement; local_world_size 0:
    # not set, the rank is alone on its agent (workloads/torchrun.py fills in the rest)
    local_rank: int = 0
    local_world_size: int = 0
    group_rank: int = 0
    group_world_size: int = 0
    max_restarts: int = 0
    dataset_mount: DatasetMount | None = None  # materialized read-only once per version (runtime/datasets.py)
    # > 0: the task shares one GPU with others (gpus is then 1), promised this many bytes of its memory
    gpu_memory_bytes: int = 0
    # a sweep's short trials run in this task's worker before its own run (proto TaskSpec.trials)
    trials: tuple[BundledTrial, ...] = ()
    trial_files: TrialFiles | None = None  # which of a sweep task's trials write their model (None: every one)


@dataclass(frozen=True)
class BundledTrial:
    index: int  # the trial's task index in its job
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialFiles:
    """A sweep's rule for its trials' model and report (proto TrialFiles; task.keeps_files applies it)."""

    keep: str = ""  # "best" | "none" | "all" ("": all)
    metric: str = ""
    maximize: bool = False
    leader_index: int = -1  # the sweep's best trial when the task was sent (-1: none yet), whose files are kept
    leader_score: float = 0.0  # its value of `metric`: a trial ranking behind it writes none


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_total_bytes: int


@dataclass(frozen=True)
class DeskStatus:
    """Desk mode's state (tensorfleet-agent --desk): whether the workstation lends itself now, and why."""

    owner_active: bool = False
    paused: bool = False
    reason: str = ""
    since: float = 0.0  # unix seconds the current lending state began
    idle_seconds: float = -1.0  # the owner's input idle time as last read; -1: no desktop session seen
    idle_threshold_seconds: float = 0.0
    schedule: str = ""  # --desk-hours, e.g. "19:00-08:00"; "" lends by idleness only

    @property
    def lending(self) -> bool:
        return not (self.owner_active or self.paused)


@dataclass(frozen=True)
class NetInterface:
    """A network interface with a MAC address, for Wake-on-LAN."""

    name: str
    mac: str
    ipv4: str = ""
    prefix_length: int = 0
    broadcast: str = ""
    wake_on_lan: bool = False
    wake_on_lan_source: str = ""  # "ethtool", "flag" or "" (unknown: treated as off)


@dataclass(frozen=True)
class NodeInfo:
    protocol_version: int
    node_id: str
    name: str
    hostname: str
    os: str
    python_version: str
    torch_version: str
    sklearn_version: str
    cpu_count: int
    memory_total_bytes: int
    disk_free_bytes: int
    gpus: tuple[GpuInfo, ...]
    workloads: tuple[str, ...]
    slots_total: int
    slots_free: int
    agent_version: str
    labels: dict[str, str] = field(default_factory=dict)
    draining: bool = False
    cluster_id: str = ""
    cert_fingerprint: str = ""
    metrics_port: int = 0
    desk: DeskStatus | None = None  # None: not in desk mode
    interfaces: tuple[NetInterface, ...] = ()
    suspend_when_idle_seconds: float = 0.0  # 0: never suspends the machine
    pool: str = ""  # the pool that started it (a Slurm allocation); "" for a LAN agent
    allocation_id: str = ""


@dataclass(frozen=True)
class GpuTelemetry:
    index: int
    utilization_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_celsius: float
    power_watts: float
    memory_reserved_bytes: int = 0  # promised to the tasks sharing it by memory (their TaskSpec.gpu_memory_bytes)
    shared_tasks: int = 0  # tasks sharing it by memory now
    exclusive: bool = False  # a task holds it whole


@dataclass(frozen=True)
class Telemetry:
    time: float
    cpu_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    disk_free_bytes: int
    gpus: tuple[GpuTelemetry, ...]
    slots_total: int
    slots_free: int
    tasks_running: int
    draining: bool = False
    disk_total_bytes: int = 0  # 0: unknown
    desk: DeskStatus | None = None  # None: not in desk mode
    going_to_sleep: bool = False  # about to suspend the machine (--suspend-when-idle): SLEEPING, not LOST, after


# ---- task events: one dataclass per payload kind, wrapped in TaskEvent ----


@dataclass(frozen=True)
class StateChanged:
    state: TaskState
    message: str = ""


@dataclass(frozen=True)
class LogLine:
    stream: str
    line: str


@dataclass(frozen=True)
class MetricPoint:
    step: int
    name: str
    value: float
    wall_time: float


@dataclass(frozen=True)
class Progress:
    fraction: float


@dataclass(frozen=True)
class CheckpointSaved:
    sha256: str
    size: int
    step: int
    name: str


@dataclass(frozen=True)
class ArtifactReady:
    sha256: str
    size: int
    kind: str
    name: str


@dataclass(frozen=True)
class EnvironmentReady:
    """A project task's working dir and Python env are ready; key "" means the agent's own Python (env none)."""

    key: str
    cache_hit: bool
    build_seconds: float
    source: str
    python: str
    files: int = 0
    bytes: int = 0
    materialize_seconds: float = 0.0


@dataclass(frozen=True)
class DatasetTransfer:
    """How a task's dataset version got onto its agent (reported once it is mounted): bytes by source, the seconds
    from PREPARING to the tree ready, the peers used and the blobs a peer failed to serve."""

    bytes_from_peers: int = 0
    bytes_from_controller: int = 0
    bytes_from_store: int = 0
    cached_bytes: int = 0
    seconds: float = 0.0
    peers_used: int = 0
    peer_failures: int = 0


@dataclass(frozen=True)
class Finished:
    status: TaskState
    exit_cause: str
    error: str = ""
    duration_seconds: float = 0.0


@dataclass(frozen=True)
class TrialEnded:
    """A bundled trial ended (its TaskEvent.trial says which)."""

    ok: bool
    error: str = ""
    duration_seconds: float = 0.0


EventPayload = (
    StateChanged
    | LogLine
    | MetricPoint
    | Progress
    | CheckpointSaved
    | ArtifactReady
    | EnvironmentReady
    | DatasetTransfer
    | TrialEnded
    | Finished
)


@dataclass(frozen=True)
class TaskEvent:
    task_id: str
    seq: int
    time: float
    payload: EventPayload
    trial: int = -1  # a bundled trial's event: its task index (TaskSpec.trials); -1: the task's own


@dataclass(frozen=True)
class TaskSummary:
    task_id: str
    job_id: str
    workload: str
    state: TaskState
    created_at: float
    finished_at: float
    last_seq: int
    exit_cause: str
    slot_ids: tuple[int, ...]


_D = TypeVar("_D")


def copied_with(obj: _D, **changes: Any) -> _D:
    """dataclasses.replace(obj, **changes) for a frozen dataclass that __init__ only sets the fields of (no
    __post_init__, no slots, every field in __init__): its fields copied, `changes` over them, without __init__'s
    setattr through object per field (~6 us for a TaskSpec, ~20 us for the controller's AgentView; this is <1)."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__, **changes)
    return new
