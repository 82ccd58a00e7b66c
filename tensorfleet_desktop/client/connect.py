"""Which controller to dial and how to trust it: the address, the client token, TLS pinned to its certificate."""

from __future__ import annotations

import getpass
import json
import os
import socket
from pathlib import Path

import grpc
import platformdirs

from tensorfleet_agent.identity import node_id_of_cert
from tensorfleet_agent.rpc.client import fetch_certificate_blocking, pinned_credentials
from tensorfleet_agent.rpc.server import is_loopback
from tensorfleet_agent.security.secrets import register
from tensorfleet_desktop.client.errors import ControllerUnreachable, InvalidRequest
from tensorfleet_desktop.connection import client_token, connection_path, find_connection

DEFAULT_CONTROLLER = "127.0.0.1:50050"
Metadata = tuple[tuple[str, str], ...]


def controller_address(explicit: str | None = None) -> str:
    return explicit or os.environ.get("TENSORFLEET_CONTROLLER") or DEFAULT_CONTROLLER


def submitter() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def known_controllers_file() -> Path:
    override = os.environ.get("TENSORFLEET_KNOWN_CONTROLLERS")
    if override:
        return Path(override)
    return Path(platformdirs.user_config_dir("tensorfleet", appauthor=False)) / "known_controllers.json"


def channel_security(address: str) -> tuple[grpc.ChannelCredentials | None, str | None, Metadata]:
    """The client token as bearer metadata on every call (TENSORFLEET_CONTROLLER_TOKEN, else the connection
    file the controller wrote for this address). Loopback: plaintext, unless the connection file says the
    controller serves TLS there (serve --host 0.0.0.0): then TLS pinned to the file's fingerprint, and the token
    goes only to the controller presenting it. Elsewhere: TLS, pinned on first use."""
    host = address.rpartition(":")[0].strip("[]")
    token, _source = client_token(address)
    metadata: Metadata = (("authorization", f"Bearer {token}"),) if token else ()
    register(token)
    named = find_connection(address)
    loopback = is_loopback(host)
    if loopback and (named is None or not named.tls):
        return None, None, metadata  # without a token the controller's refusal says where it lives
    if not token:
        raise InvalidRequest(
            f"the controller at {address} needs its client token: set TENSORFLEET_CONTROLLER_TOKEN to it "
            f"(client.token in the controller's data dir; its own OS user's clients read {connection_path(address)})"
        )
    try:
        cert = fetch_certificate_blocking(address)
    except OSError as exc:
        raise ControllerUnreachable(f"cannot reach the TensorFleet controller at {address}: {exc}") from None
    node_id, fingerprint = node_id_of_cert(cert)
    if named is not None and (named.fingerprint or loopback) and named.fingerprint != fingerprint:
        raise InvalidRequest(
            f"the controller at {address} presents certificate {fingerprint[:16]}, not {named.fingerprint[:16]} "
            f"named in {named.path}: refusing it"
        )
    if loopback:  # pinned to the connection file of a controller of this user that is alive
        return pinned_credentials(cert), node_id, metadata
    path = known_controllers_file()
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    pinned = known.get(address)
    if pinned and pinned != fingerprint:
        raise InvalidRequest(
            f"the controller at {address} presents certificate {fingerprint[:16]}, not {pinned[:16]} seen before: "
            f"refusing it (if it was re-installed on purpose, remove its entry from {path})"
        )
    if not pinned:
        known[address] = fingerprint
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=1))
    return pinned_credentials(cert), node_id, metadata
