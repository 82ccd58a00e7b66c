"""Secrets never reach logs or output: a registry of known secrets and a logging filter that masks them."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from typing import Any

MASK = "[redacted]"
_lock = threading.Lock()
_secrets: set[str] = set()
# the secrets longest first, sorted once per register(), not per redaction (the controller redacts every job body
# and every event's message); a tuple replaced whole, so a reader needs no lock
_longest_first: tuple[str, ...] = ()


def register(secret: str) -> None:
    """Remember a secret (tokens, keys, passwords) so that every redaction masks it."""
    global _longest_first
    if secret and len(secret) >= 6:
        with _lock:
            _secrets.add(secret)
            _longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str) -> str:
    for secret in _longest_first:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_value(value: Any) -> Any:
    """Redact strings anywhere inside JSON-like data."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def cluster_id_of(cluster_token: str) -> str:
    """The public id of a cluster: advertised in mDNS so clusters on one LAN never mix."""
    return hashlib.sha256(b"tensorfleet-cluster|" + cluster_token.encode()).hexdigest()[:16]


def token_key(token: str) -> str:
    """What pairing proofs are keyed with: the token's sha256, so agents store join tokens only hashed."""
    return hashlib.sha256(token.encode()).hexdigest()


def proof(key: str, label: bytes, nonce: bytes, controller_fp: str, agent_fp: str) -> bytes:
    """HMAC binding a token (by its key) to this exchange: the nonce and both certificates."""
    message = b"|".join([label, nonce, controller_fp.encode(), agent_fp.encode()])
    return hmac.new(key.encode(), message, hashlib.sha256).digest()
