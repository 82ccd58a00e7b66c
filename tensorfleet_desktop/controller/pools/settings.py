"""A pool's settings, checked: every refusal names the field, as AddPool answers it."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller.jobspec import POOL_NAME

KINDS = ("slurm",)
MAX_NODES = 10_000
DEFAULT_IDLE_TIMEOUT = 300.0
MAX_SBATCH_ARGS = 32
_LOGIN = re.compile(r"^(?:[A-Za-z0-9._-]{1,64}@)?[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?$")
# Slurm's --time: minutes, minutes:seconds, hours:minutes:seconds, days-hours, days-hours:minutes,
# days-hours:minutes:seconds
_TIME = re.compile(
    r"^(?:(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$"
)
# sbatch options the pool manager sets itself: a pool's extra arguments may not change them
_RESERVED = ("--job-name", "-J", "--nodes", "-N", "--parsable", "--wrap", "--export")


def time_limit_seconds(text: str) -> float | None:
    """Seconds of a Slurm time limit ("4:00:00", "1-12", "90"); None for none ("" or UNLIMITED)."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    m = _TIME.match(text)
    if m is None:
        raise ValidationError(
            "time_limit",
            f"must be a Slurm time limit (MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS), got {text[:40]!r}",
        )
    if m["days"] is not None:
        d, h, mi, s = (int(m[k] or 0) for k in ("days", "dh", "dm", "ds"))
        return float(((d * 24 + h) * 60 + mi) * 60 + s)
    parts = [int(m[k]) for k in ("a", "b", "c") if m[k] is not None]
    if len(parts) == 1:
        return parts[0] * 60.0
    if len(parts) == 2:
        return parts[0] * 60.0 + parts[1]
    return parts[0] * 3600.0 + parts[1] * 60 + parts[2]


@dataclass(frozen=True)
class PoolSettings:
    """What `tensorfleet pools add slurm NAME ...` stored (the pool's allocations live in Slurm)."""

    name: str
    partition: str
    kind: str = "slurm"
    account: str = ""
    max_nodes: int = 1
    time_limit: str = ""
    sbatch_args: tuple[str, ...] = ()
    idle_timeout_seconds: float = DEFAULT_IDLE_TIMEOUT
    login: str = ""
    created_at: float = field(default_factory=time.time)

    @property
    def job_name(self) -> str:
        """The Slurm job name of this pool's allocations: how squeue finds them again after a restart."""
        return f"tensorfleet-{self.name}"

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["sbatch_args"] = list(self.sbatch_args)
        return body


def check_settings(body: dict[str, Any]) -> PoolSettings:
    """A pool's settings from plain values (AddPool's request, or the store), or ValidationError naming the field."""
    name = str(body.get("name", ""))
    if not POOL_NAME.match(name):
        raise ValidationError("name", f"must match [a-z0-9][a-z0-9._-]{{0,62}}, got {name[:80]!r}")
    kind = str(body.get("kind") or "slurm")
    if kind not in KINDS:
        raise ValidationError("kind", f"must be one of {', '.join(KINDS)}, got {kind[:40]!r}")
    partition = str(body.get("partition", "")).strip()
    if not partition:
        raise ValidationError("partition", "is required: the Slurm partition the allocations run in (sinfo lists them)")
    for key, value in (("partition", partition), ("account", str(body.get("account", "")))):
        if value and not re.match(r"^[A-Za-z0-9._-]{1,64}$", value):
            raise ValidationError(
                key, f"must be a Slurm {key} name (letters, digits, '.', '_', '-'), got {value[:80]!r}"
            )
    max_nodes = body.get("max_nodes", 1)
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or not 1 <= max_nodes <= MAX_NODES:
        raise ValidationError("max_nodes", f"must be an integer from 1 to {MAX_NODES}, got {max_nodes!r}")
    time_limit = str(body.get("time_limit", "")).strip()
    time_limit_seconds(time_limit)
    idle = body.get("idle_timeout_seconds", DEFAULT_IDLE_TIMEOUT)
    if isinstance(idle, bool) or not isinstance(idle, int | float) or not 1 <= idle <= 30 * 86400:
        raise ValidationError("idle_timeout_seconds", f"must be from 1 s to 30 days, got {idle!r}")
    login = str(body.get("login", "")).strip()
    if login and (not _LOGIN.match(login) or login.startswith("-")):
        raise ValidationError("login", f"must look like user@host (a login node ssh reaches), got {login[:80]!r}")
    args = tuple(str(a) for a in body.get("sbatch_args", ()))
    if len(args) > MAX_SBATCH_ARGS:
        raise ValidationError("sbatch_args", f"has {len(args)} arguments; at most {MAX_SBATCH_ARGS}")
    for i, arg in enumerate(args):
        if not arg.strip() or any(ord(c) < 32 for c in arg) or len(arg) > 512:
            raise ValidationError(f"sbatch_args[{i}]", "must be one non-empty line of at most 512 characters")
        option = arg.split("=", 1)[0]
        if option in _RESERVED or (option.startswith("-J") and len(option) > 2):
            raise ValidationError(f"sbatch_args[{i}]", f"{option} is set by the pool itself")
    created = body.get("created_at")
    return PoolSettings(
        name=name,
        partition=partition,
        kind=kind,
        account=str(body.get("account", "")),
        max_nodes=int(max_nodes),
        time_limit=time_limit,
        sbatch_args=args,
        idle_timeout_seconds=float(idle),
        login=login,
        created_at=float(created) if isinstance(created, int | float) and created else time.time(),
    )
