"""The agent's trust state: which controllers are paired, which join tokens are valid, live sessions.

Files in <data>/identity (mode 0600): authorized.json (paired controllers' certificates by fingerprint) and
join_tokens.json (sha256 of each valid join token, with its expiry). Both are re-read when they change, so
`tensorfleet-agent token` and `tensorfleet-agent unpair` act on a running agent.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorfleet_agent.identity import Identity, node_id_of_cert, verify_signature
from tensorfleet_agent.security.secrets import proof, register, token_key

log = logging.getLogger(__name__)

AUTHORIZED_FILE = "authorized.json"
TOKENS_FILE = "join_tokens.json"
NONCE_TTL = 60.0
SESSION_TTL = 12 * 3600.0
DEFAULT_TOKEN_TTL = 3600.0


class AuthError(Exception):
    """Pairing or authentication refused; the message says why (never echoing a secret)."""


@dataclass
class Session:
    fingerprint: str
    expires: float


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _write_json(path: Path, body: Any) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh, indent=1)
    os.replace(tmp, path)


def new_join_token(directory: Path, ttl: float = DEFAULT_TOKEN_TTL) -> str:
    """Create a one-time join token, store only its hash, and return it (for `tensorfleet-agent token`)."""
    token = f"tfj-{secrets.token_urlsafe(18)}"
    add_join_token(directory, token, ttl)
    return token


def add_join_token(directory: Path, token: str, ttl: float) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TOKENS_FILE
    now = time.time()
    entries = [e for e in (_read_json(path) or []) if e["expires"] > now]
    entries.append({"sha256": token_key(token), "expires": now + ttl})
    _write_json(path, entries)


def unpair(directory: Path, fingerprint: str) -> bool:
    path = directory / AUTHORIZED_FILE
    authorized = _read_json(path) or {}
    matches = [fp for fp in authorized if fp.startswith(fingerprint.lower())] if len(fingerprint) >= 8 else []
    if len(matches) != 1:
        return False
    del authorized[matches[0]]
    _write_json(path, authorized)
    return True


class Authority:
    def __init__(self, directory: Path, identity: Identity, cluster_token: str = "") -> None:
        self.directory = directory
        self.identity = identity
        self.cluster_token = cluster_token
        if cluster_token:
            register(cluster_token)
        self._lock = threading.Lock()
        self._nonces: dict[bytes, float] = {}
        self._sessions: dict[str, Session] = {}
        self._authorized: dict[str, dict[str, Any]] = {}
        self._authorized_mtime = -1.0
        self._authorized_path = str(directory / AUTHORIZED_FILE)  # stat'ed on every call that needs a session

    # ---- files

    def authorized(self) -> dict[str, dict[str, Any]]:
        try:
            mtime = os.stat(self._authorized_path).st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if mtime != self._authorized_mtime:
            self._authorized = _read_json(self.directory / AUTHORIZED_FILE) or {}
            self._authorized_mtime = mtime
        return self._authorized

    def has_paired_controllers(self) -> bool:
        return bool(self.authorized())

    def _authorize(self, fingerprint: str, cert_pem: bytes) -> None:
        authorized = dict(self.authorized())
        authorized[fingerprint] = {"cert_pem": cert_pem.decode(), "paired_at": time.time()}
        _write_json(self.directory / AUTHORIZED_FILE, authorized)
        self._authorized_mtime = -1.0

    def _valid_tokens(self) -> list[dict[str, Any]]:
        now = time.time()
        return [e for e in (_read_json(self.directory / TOKENS_FILE) or []) if e["expires"] > now]

    def _consume_token(self, digest: str) -> None:
        path = self.directory / TOKENS_FILE
        _write_json(path, [e for e in self._valid_tokens() if e["sha256"] != digest])

    # ---- nonces

    def nonce(self) -> bytes:
        value = secrets.token_bytes(32)
        now = time.monotonic()
        with self._lock:
            self._nonces = {n: t for n, t in self._nonces.items() if t > now}
            self._nonces[value] = now + NONCE_TTL
        return value

    def _spend(self, nonce: bytes) -> None:
        with self._lock:
            expires = self._nonces.pop(nonce, None)
        if expires is None or expires < time.monotonic():
            raise AuthError("unknown, used or expired challenge: start again")

    # ---- pairing

    def pair(self, cert_pem: bytes, agent_nonce: bytes, given_proof: bytes, controller_nonce: bytes) -> bytes:
        """Check the proof against the cluster token and every valid join token; authorise on success."""
        self._spend(agent_nonce)
        try:
            _node, controller_fp = node_id_of_cert(cert_pem)
        except ValueError as exc:
            raise AuthError(f"controller_cert_pem: not a usable certificate ({exc})") from None
        agent_fp = self.identity.fingerprint
        if self.cluster_token:
            key = token_key(self.cluster_token)
            expected = proof(key, b"tf-pair-controller", agent_nonce, controller_fp, agent_fp)
            if hmac.compare_digest(expected, given_proof):
                self._authorize(controller_fp, cert_pem)
                log.info("paired with controller %s (cluster token)", controller_fp[:16])
                return proof(key, b"tf-pair-agent", controller_nonce, controller_fp, agent_fp)
        # Join tokens are stored hashed, and proofs are keyed by that hash.
        for entry in self._valid_tokens():
            key = entry["sha256"]
            expected = proof(key, b"tf-pair-controller", agent_nonce, controller_fp, agent_fp)
            if hmac.compare_digest(expected, given_proof):
                self._consume_token(key)
                self._authorize(controller_fp, cert_pem)
                log.info("paired with controller %s (join token)", controller_fp[:16])
                return proof(key, b"tf-pair-agent", controller_nonce, controller_fp, agent_fp)
        raise AuthError("pairing refused: wrong or expired token")

    # ---- sessions

    def authenticate(self, cert_pem: bytes, nonce: bytes, signature: bytes) -> tuple[str, float]:
        self._spend(nonce)
        try:
            _node, fingerprint = node_id_of_cert(cert_pem)
        except ValueError as exc:
            raise AuthError(f"controller_cert_pem: not a usable certificate ({exc})") from None
        if fingerprint not in self.authorized():
            raise AuthError(
                f"controller {fingerprint[:16]} is not paired with this agent; pair it with "
                "`tensorfleet agents pair AGENT --token TOKEN` (token from `tensorfleet-agent token`)"
            )
        message = b"tf-auth|" + nonce + b"|" + self.identity.node_id.encode()
        if not verify_signature(cert_pem, signature, message):
            raise AuthError("signature does not match the controller's certificate")
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._sessions = {t: s for t, s in self._sessions.items() if s.expires > now}
            self._sessions[token] = Session(fingerprint, now + SESSION_TTL)
        return token, SESSION_TTL

    def check(self, bearer: str) -> str | None:
        """The controller fingerprint behind a session token, if the session is live and still paired."""
        with self._lock:
            session = self._sessions.get(bearer)
        if session is None or session.expires < time.monotonic():
            return None
        if session.fingerprint not in self.authorized():
            return None  # unpaired since
        return session.fingerprint
