"""Join credentials, the controller's side: signing and verifying (the format: agent/security/join_credential.py).

One mechanism for both lives. A pool's allocation gets a short-lived credential scoped to that submission; an admin
may mint a long-lived one (scope "") for a Kubernetes Secret. The key only the controller holds is
<data dir>/identity/join-credential.key (deleting it revokes every credential). The agent pins the controller by
the credential's `fp` and holds the credential as its one-time join token, so the controller pairs with it exactly
as `tensorfleet agents pair` does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from tensorfleet_agent.security.join_credential import PREFIX, Claims, CredentialError, b64, read_claims, unb64

KEY_FILE = "join-credential.key"


def load_or_create_key(directory: Path) -> bytes:
    """The signing key (32 random bytes, mode 0600), created on first use. Blocking: call it in a thread."""
    path = directory / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    directory.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex())
    os.replace(tmp, path)
    return key


class Credentials:
    def __init__(self, key: bytes, fingerprint: str, tls: bool) -> None:
        self._key = key
        self.fingerprint = fingerprint  # of this controller's certificate, for the agent to pin
        self.tls = tls

    def mint(self, pool: str, ttl: float, scope: str = "", now: float | None = None) -> str:
        body = {
            "pool": pool,
            "scope": scope,
            "exp": round((time.time() if now is None else now) + ttl, 3),
            "fp": self.fingerprint,
            "tls": self.tls,
        }
        payload = b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        return f"{PREFIX}.{payload}.{b64(self._sign(payload))}"

    def _sign(self, payload: str) -> bytes:
        return hmac.new(self._key, f"{PREFIX}.{payload}".encode(), hashlib.sha256).digest()

    def verify(self, credential: str, now: float | None = None) -> Claims:
        """The claims of a credential this controller signed that has not expired; CredentialError otherwise."""
        claims = read_claims(credential)
        _prefix, payload, signature = credential.strip().split(".")
        try:
            given = unb64(signature)
        except ValueError:
            raise CredentialError("the join credential is malformed (its signature is not base64url)") from None
        if not hmac.compare_digest(given, self._sign(payload)):
            raise CredentialError("the join credential was not signed by this controller (or its key was rotated)")
        if claims.expires < (time.time() if now is None else now):
            raise CredentialError("the join credential has expired; ask the controller for a new one")
        return claims
