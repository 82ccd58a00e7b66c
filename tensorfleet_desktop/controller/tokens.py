"""Named client tokens (issue 24): `tft1_<id>_<secret>`, stored as the secret's sha256 only.

The id finds the record; the secret (32 random bytes: full entropy, so a plain sha256 is enough) is compared by
hash in constant time. The controller's own client token (client.token) stays valid and is an admin whose user
is the OS user the client names. `authenticate` is the one place either face turns a bearer token into a
Principal."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.security.secrets import register
from tensorfleet_desktop.controller.errors import JobError, NotFoundError
from tensorfleet_desktop.controller.principals import (
    ADMIN,
    ROLES,
    USER,
    Principal,
    Unauthenticated,
    reserved,
    user_of,
)
from tensorfleet_desktop.controller.store.base import JobStore

log = logging.getLogger(__name__)

PREFIX = "tft1_"
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # no "@": a name is compared with the user part of `user@host`
USED_EVERY = 60.0  # seconds: last_used_at is written at most this often per token


@dataclass
class TokenRecord:
    id: str
    name: str
    role: str
    hash: str  # sha256 hex of the secret
    created_at: float
    created_by: str
    last_used_at: float = 0.0
    revoked: bool = False

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.id}"

    def public(self) -> dict[str, Any]:
        """What list and create show: never the hash."""
        return {
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "last_used_at": self.last_used_at,
            "revoked": self.revoked,
            "prefix": self.prefix,
        }


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str) -> str:
    name = name.strip()
    if not NAME.fullmatch(name):
        raise ValidationError("name", f"must be 1-64 letters, digits, '.', '_' or '-', got {name[:80]!r}")
    said = reserved(name)
    if said:
        raise ValidationError("name", f"{said}: choose another name for this token")
    return name


def check_role(role: str) -> str:
    role = (role or USER).strip().lower()
    if role not in ROLES:
        raise ValidationError("role", f"must be one of {', '.join(ROLES)}, got {role[:40]!r}")
    return role


def claimed_user(text: str) -> str:
    """The OS user a client names (metadata or `user@host`): its user part if it is a plausible name, else ""."""
    user = user_of(text)[:64]
    return user if NAME.fullmatch(user) else ""


class TokenBook:
    """The named tokens (loaded at start, written through the store) and the controller's own client token."""

    def __init__(self, store: JobStore, client_token: str, clock: Any = time.time) -> None:
        self.store = store
        self.client_token = client_token
        self.clock = clock
        self.records: dict[str, TokenRecord] = {}
        self._open: dict[str, set[asyncio.Event]] = {}  # a name -> one event per stream its token holds open

    async def load(self) -> None:
        for key, body in (await self.store.load_team_records("tokens")).items():
            try:
                self.records[key] = TokenRecord(**body)
            except TypeError as exc:  # a malformed row is skipped, never a controller that cannot start
                log.warning("token record %s skipped: %s", key, exc)

    def _save(self, record: TokenRecord) -> None:
        self.store.save_team_record("tokens", record.id, asdict(record))

    def live(self, name: str) -> TokenRecord | None:
        return next((r for r in self.records.values() if r.name == name and not r.revoked), None)

    def create(self, name: str, role: str, created_by: str) -> tuple[TokenRecord, str]:
        """A new token for `name`; the secret is returned once and never kept."""
        name, role = check_name(name), check_role(role)
        if self.live(name) is not None:
            raise JobError(f"a token named {name} exists: revoke it first (`tensorfleet tokens revoke {name}`)")
        token_id = secrets.token_hex(6)
        while token_id in self.records:  # pragma: no cover - 48 random bits
            token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        record = TokenRecord(token_id, name, role, _digest(secret), self.clock(), created_by)
        self.records[token_id] = record
        self._save(record)
        token = f"{PREFIX}{token_id}_{secret}"
        register(token)  # never logged
        return record, token

    def list(self, include_revoked: bool = False) -> list[TokenRecord]:
        found = [r for r in self.records.values() if include_revoked or not r.revoked]
        return sorted(found, key=lambda r: (r.name, r.created_at))

    def revoke(self, name: str) -> TokenRecord:
        record = self.live(name.strip())
        if record is None:
            raise NotFoundError(f"no live token named {name.strip()[:80]!r} (`tensorfleet tokens list --all`)")
        record.revoked = True
        self._save(record)
        for stream in self._open.pop(record.name, ()):  # its open watches end now, not when they next send
            stream.set()
        return record

    @contextlib.contextmanager
    def revocation(self, principal: Principal) -> Iterator[asyncio.Event | None]:
        """An event set when the named token behind `principal` is revoked, for as long as a stream it opened is
        open; None for the controller's own token (it cannot be revoked)."""
        if not principal.named_token:
            yield None
            return
        event = asyncio.Event()
        self._open.setdefault(principal.name, set()).add(event)
        try:
            yield event
        finally:
            streams = self._open.get(principal.name)
            if streams is not None:
                streams.discard(event)
                if not streams:
                    del self._open[principal.name]

    def authenticate(self, bearer: str, claimed: str = "") -> Principal:
        """The principal a bearer token stands for; Unauthenticated naming why when it stands for none."""
        if not bearer:
            raise Unauthenticated("no client token was sent")
        if not bearer.startswith(PREFIX):
            if self.client_token and hmac.compare_digest(bearer.encode(), self.client_token.encode()):
                return Principal(claimed_user(claimed), ADMIN, named_token=False)
            raise Unauthenticated("the client token is wrong")
        token_id, _, secret = bearer[len(PREFIX) :].partition("_")
        record = self.records.get(token_id)
        if record is None or not hmac.compare_digest(_digest(secret), record.hash):
            raise Unauthenticated(f"the token {PREFIX}{token_id[:12]}... is not one this controller issued")
        if record.revoked:
            raise Unauthenticated(f"the token {record.prefix} of {record.name} was revoked")
        if reserved(record.name):  # made before the name was reserved: it would own what the controller falls back to
            raise Unauthenticated(f"the token {record.prefix} has a reserved name ({reserved(record.name)}): revoke it")
        now = self.clock()
        if now - record.last_used_at >= USED_EVERY:
            record.last_used_at = now
            self._save(record)
        return Principal(record.name, record.role, named_token=True)


T = TypeVar("T")


async def until_revoked(source: AsyncIterator[T], revoked: asyncio.Event, who: str) -> AsyncIterator[T]:
    """`source`'s items until `revoked` is set: then Unauthenticated, even while `source` has nothing to send (a
    watch of a quiet cluster), so a revoked token's stream ends at once rather than at its next item."""
    stop = asyncio.ensure_future(revoked.wait())
    try:
        while True:
            step = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            if step not in done:
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                raise Unauthenticated(f"the token of {who} was revoked")
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        stop.cancel()
