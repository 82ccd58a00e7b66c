"""Slurm through its own commands (sbatch, squeue, scancel, sacct), here or over ssh to a login node.

asyncio subprocesses only (the controller's loop never waits on one); machine-readable output only (`sbatch
--parsable`, `squeue --json`, `sacct --parsable2`). The parsers are pure functions, tested on Slurm's real output.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tensorfleet_agent.runtime.process import CREDENTIAL_VARIABLES

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 30.0
#: squeue states after which an allocation holds nothing any more (squeue lists them for MinJobAge seconds)
ENDED = frozenset(
    {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
     "TIMEOUT", "REVOKED", "SPECIAL_EXIT"}
)  # fmt: skip


#: The controller's own settings an allocation's agents may share (everything else named TENSORFLEET_* holds its
#: secrets or is its own: cluster and client tokens, store URIs with passwords)
SHARED_SETTINGS = ("TENSORFLEET_POOL_DATA_ROOT", "TENSORFLEET_PROJECT_PYTHON", "TENSORFLEET_ENV_CACHE_GB")


def slurm_environment(env: Mapping[str, str]) -> dict[str, str]:
    """What Slurm's commands run with: sbatch hands its environment to the batch script (--export=ALL), so the
    controller's secrets (TENSORFLEET_* tokens and URIs, S3 keys) are left out."""
    return {
        name: value
        for name, value in env.items()
        if (not name.startswith("TENSORFLEET_") or name in SHARED_SETTINGS) and name not in CREDENTIAL_VARIABLES
    }


class SlurmError(Exception):
    """A Slurm command failed; the message quotes the command and what it printed."""


@dataclass(frozen=True)
class SlurmJob:
    """One allocation as squeue shows it."""

    id: str
    state: str  # PENDING, RUNNING, COMPLETING, ...
    reason: str  # why it is PENDING ("Resources", "Priority"); "" otherwise
    nodes: int
    submitted_at: float
    started_at: float  # 0 until it runs
    hosts: str = ""  # Slurm's node list ("node[1-2]")

    @property
    def ended(self) -> bool:
        return self.state in ENDED


def parse_sbatch(stdout: str) -> str:
    """`sbatch --parsable` prints "JOBID" or "JOBID;CLUSTER"."""
    first = stdout.strip().splitlines()[0] if stdout.strip() else ""
    job_id = first.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return job_id


def _state(value: object) -> str:
    """squeue --json's job_state: a string (22.05) or a list of flags (23.x and later)."""
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value or "")


def _number(value: object) -> float:
    """A time or count: a plain number (22.05) or {"set": bool, "number": N} (23.x and later)."""
    if isinstance(value, dict):
        return float(value.get("number", 0) or 0) if value.get("set", True) else 0.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def parse_squeue(stdout: str) -> list[SlurmJob]:
    """`squeue --json`'s jobs."""
    try:
        body = json.loads(stdout)
        rows = body["jobs"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SlurmError(f"squeue --json printed no job list ({exc}): {stdout.strip()[:200]!r}") from None
    jobs = []
    for row in rows:
        state = _state(row.get("job_state"))
        reason = str(row.get("state_reason") or "")
        jobs.append(
            SlurmJob(
                id=str(row.get("job_id")),
                state=state,
                reason="" if reason == "None" or state != "PENDING" else reason,
                nodes=int(_number(row.get("node_count"))),
                submitted_at=_number(row.get("submit_time")),
                started_at=_number(row.get("start_time")) if state != "PENDING" else 0.0,
                hosts=str(row.get("nodes") or ""),
            )
        )
    return jobs


def parse_sacct(stdout: str, job_id: str) -> str:
    """The state `sacct --parsable2 --format=JobID,State` gives the allocation itself (not its steps); "" if none."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return ""
    header = lines[0].split("|")
    try:
        id_col, state_col = header.index("JobID"), header.index("State")
    except ValueError:
        return ""
    for line in lines[1:]:
        cols = line.split("|")
        if len(cols) > max(id_col, state_col) and cols[id_col] == job_id:
            return cols[state_col].split()[0]  # "CANCELLED by 0" -> CANCELLED
    return ""


class SlurmDriver:
    """Runs Slurm's commands for one pool: locally, or on `login` (user@host) through ssh in batch mode."""

    def __init__(self, login: str = "", timeout: float = COMMAND_TIMEOUT) -> None:
        self.login = login
        self.timeout = timeout

    def _argv(self, argv: Sequence[str]) -> list[str]:
        if not self.login:
            return list(argv)
        host, _, port = self.login.partition(":") if self.login.count(":") == 1 else (self.login, "", "")
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        if port:
            ssh += ["-p", port]
        return [*ssh, host, "--", shlex.join(argv)]

    async def _run(self, argv: Sequence[str], stdin: str = "") -> str:
        full = self._argv(argv)
        try:
            proc = await asyncio.create_subprocess_exec(
                *full,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=slurm_environment(os.environ),
            )
        except OSError as exc:
            where = f" (via ssh {self.login})" if self.login else ""
            raise SlurmError(f"cannot run {full[0]}{where}: {exc.strerror or exc}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SlurmError(f"{argv[0]} did not answer within {self.timeout:.0f} s") from None
        if proc.returncode != 0:
            text = (err or out).decode(errors="replace").strip().splitlines()
            raise SlurmError(f"{argv[0]} failed ({proc.returncode}): {' '.join(text)[:300]}")
        return out.decode(errors="replace")

    async def submit(self, script: str, args: Sequence[str]) -> str:
        """sbatch the script (given on stdin: never a file to clean up, never on a command line); its job id."""
        return parse_sbatch(await self._run(["sbatch", "--parsable", *args], stdin=script))

    async def queue(self, job_name: str) -> list[SlurmJob]:
        """This user's allocations named `job_name` that squeue still lists (ended ones for a short while too)."""
        return parse_squeue(await self._run(["squeue", "--json", "--me", "--name", job_name]))

    async def cancel(self, job_id: str) -> None:
        await self._run(["scancel", job_id])

    async def final_state(self, job_id: str) -> str:
        """How an allocation ended, from accounting (sacct; `-c` reads the job completion log when there is no
        slurmdbd); "" when neither knows it."""
        for completion in (["-c"], []):
            try:
                out = await self._run(["sacct", *completion, "--parsable2", "--format=JobID,State", "-j", job_id])
            except SlurmError as exc:
                log.debug("sacct %s: %s", " ".join(completion), exc)
                continue
            state = parse_sacct(out, job_id)
            if state:
                return state
        return ""
