"""The join credential's format, shared by the agent (which reads the controller's fingerprint from it) and the
controller (which signs and verifies it: tensorfleet_desktop/controller/pools/credentials.py).

`tfjc1.<base64url(JSON payload)>.<base64url(HMAC-SHA256)>`; payload {pool, scope, exp, fp, tls}.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

PREFIX = "tfjc1"
MAX_LENGTH = 2048
ENV_VAR = "TENSORFLEET_JOIN_CREDENTIAL"


class CredentialError(Exception):
    """A credential refused: the message says why, never quoting the credential."""


@dataclass(frozen=True)
class Claims:
    pool: str
    scope: str  # the submission it was made for ("" for a long-lived one)
    expires: float  # unix seconds
    fingerprint: str  # the controller certificate's sha256 ("" when it serves plaintext on loopback)
    tls: bool


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def read_claims(credential: str) -> Claims:
    """The claims a credential carries, unverified: the controller checks the signature, the agent only reads."""
    parts = credential.strip().split(".")
    if len(credential) > MAX_LENGTH or len(parts) != 3 or parts[0] != PREFIX:
        raise CredentialError(f"not a join credential (it must look like {PREFIX}.<payload>.<signature>)")
    try:
        body = json.loads(unb64(parts[1]))
        return Claims(
            pool=str(body["pool"]),
            scope=str(body["scope"]),
            expires=float(body["exp"]),
            fingerprint=str(body["fp"]),
            tls=bool(body["tls"]),
        )
    except (ValueError, KeyError, TypeError):
        raise CredentialError("the join credential is malformed (its payload does not decode)") from None
