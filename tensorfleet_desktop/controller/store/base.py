"""The store contract every backend implements (one contract test suite runs against each)."""

from __future__ import annotations

import abc
import errno
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from tensorfleet_desktop.controller.model import Job, JobEventRecord, JobTask


def redact_uri(uri: str) -> str:
    """The URI (or a message quoting URIs) without passwords, for logs and errors; malformed URIs too."""
    text = _USERINFO.sub(r"\g<head>:***@", uri)
    password = uri_password(text)
    return text.replace(f":{password}@", ":***@", 1) if password and password != "***" else text


def uri_password(uri: str) -> str:
    """The password a URI carries ("" if none, or if it does not parse)."""
    try:
        return urlparse(uri).password or ""
    except ValueError:
        return ""


# scheme://user:PASSWORD@host, also inside a longer message; the password runs to the last @ before the host
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#:@]*):[^\s/?#]*@(?=[^\s/?#@]*(?:[\s/?#]|$))")


def full_message(where: Path) -> str:
    """The refusal users see when the disk under `where` (the store's or the blobs' directory) is full."""
    try:
        free = shutil.disk_usage(where).free >> 20
    except OSError:
        return "controller data dir full"
    return f"controller data dir full ({free} MiB free in {where})"


class StoreFullError(OSError):
    """The store cannot save right now for lack of space; what was queued is kept and retried."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


#: the team's tables (issue 24): named client tokens (hashed) by id, quotas and decayed usage by user
TeamTable = Literal["tokens", "quotas", "usage"]


class JobStore(abc.ABC):
    """Writes are queued and never block the event loop; reads are awaitable."""

    uri: str

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def save_job(self, job: Job, tasks: Iterable[JobTask] | None = None) -> None:
        """Queue an upsert of the job: its summary, and its tasks (all, or only `tasks`, those that changed; tasks
        added since the last save and added artifacts are written either way)."""

    async def insert_job(self, job: Job) -> None:
        """Save a new job and wait until it is committed: StoreFullError when it cannot be (nothing is kept)."""
        self.save_job(job)
        await self.flush()

    async def insert_jobs(self, jobs: Sequence[Job]) -> None:
        """Save new jobs and wait until they are committed, all in one write where the backend can."""
        for job in jobs:
            self.save_job(job)
        await self.flush()

    @abc.abstractmethod
    async def delete_job(self, job_id: str) -> None:
        """Delete a job with its events and its attempts' cursors, and wait until that is committed (one
        transaction where the database has them); writes queued for the job before it are applied first."""

    @abc.abstractmethod
    def append_events(self, events: list[JobEventRecord], cursors: dict[str, int]) -> None:
        """Queue events (idempotent on (attempt_id, agent_seq)) and the attempts' cursors, in one transaction."""

    @abc.abstractmethod
    def save_agent(self, node_id: str, body: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def delete_agent(self, node_id: str) -> None: ...

    @abc.abstractmethod
    def save_dataset(self, name: str, body: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def delete_dataset(self, name: str) -> None: ...

    @abc.abstractmethod
    async def load_datasets(self) -> dict[str, dict[str, Any]]:
        """Datasets stored before versions existed (name -> entry); the catalog reads each as its version 1."""

    @abc.abstractmethod
    def save_pool(self, name: str, body: dict[str, Any]) -> None:
        """Queue a pool's settings (issue 25: Slurm pools); its allocations live in Slurm, not here."""

    @abc.abstractmethod
    def delete_pool(self, name: str) -> None: ...

    @abc.abstractmethod
    async def load_pools(self) -> dict[str, dict[str, Any]]:
        """Every pool's settings by name."""

    @abc.abstractmethod
    def save_team_record(self, table: TeamTable, key: str, body: dict[str, Any] | None) -> None:
        """Queue a named token (by id), a user's quota or a user's decayed usage (by user); None deletes it."""

    @abc.abstractmethod
    async def load_team_records(self, table: TeamTable) -> dict[str, dict[str, Any]]:
        """Every record of that table by key."""

    @abc.abstractmethod
    def append_audit(self, entry: dict[str, Any]) -> None:
        """Queue one audit entry: {"seq", "time", "user", "action", ...}; seq is the caller's, increasing."""

    @abc.abstractmethod
    async def audit_entries(
        self, user: str = "", action: str = "", since: float = 0.0, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Audit entries newest first, of one user and/or action ("" = any), at or after `since`."""

    @abc.abstractmethod
    async def last_audit_seq(self) -> int:
        """The highest stored audit seq (0: none)."""

    @abc.abstractmethod
    def save_dataset_version(self, name: str, version: int, body: dict[str, Any]) -> None:
        """Queue one version of a dataset (issue 20: a row per version, NAME:VERSION)."""

    @abc.abstractmethod
    def delete_dataset_version(self, name: str, version: int) -> None: ...

    @abc.abstractmethod
    async def load_dataset_versions(self) -> list[dict[str, Any]]:
        """Every stored dataset version's body, in no particular order."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until everything queued so far is committed; StoreFullError when it waits for space."""

    @abc.abstractmethod
    async def load_jobs(self) -> list[Job]:
        """Every job, with task cursors restored from the committed events."""

    @abc.abstractmethod
    async def load_agents(self) -> dict[str, dict[str, Any]]: ...

    # ---- model registry: one record per version, top-level name and version

    @abc.abstractmethod
    async def register_model(self, record: dict[str, Any]) -> dict[str, Any]:
        """Store a new version of record["name"]; the next integer version is assigned atomically."""

    @abc.abstractmethod
    async def put_model_version(self, record: dict[str, Any]) -> bool:
        """Store a version under its own number (an import); False when that name:version exists."""

    @abc.abstractmethod
    async def model_versions(self, name: str = "", algorithm: str = "") -> list[dict[str, Any]]:
        """Versions (newest first) with their aliases, optionally of one name or algorithm."""

    @abc.abstractmethod
    async def get_model(self, name: str, version: int) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def update_model(self, name: str, version: int, fields: dict[str, Any]) -> bool:
        """Merge fields (tags, description) into a version; False when it does not exist."""

    @abc.abstractmethod
    async def set_alias(self, name: str, alias: str, version: int) -> bool:
        """Point name@alias at a version (moving it if set); False when the version does not exist."""

    @abc.abstractmethod
    async def remove_alias(self, name: str, alias: str) -> bool: ...

    @abc.abstractmethod
    async def delete_model(self, name: str, version: int) -> bool:
        """Delete a version and the aliases pointing at it."""

    @abc.abstractmethod
    async def events(
        self,
        job_id: str,
        after_seq: int = 0,
        kinds: tuple[str, ...] = (),
        task_index: int | None = None,
        *,
        limit: int = 0,
    ) -> list[JobEventRecord]:
        """A job's events after `after_seq`, in seq order; at most `limit` of them (0: all), so that a long
        history can be read a page at a time."""
