"""The one place that makes an HTTP server: uvicorn on the controller's own asyncio loop (no thread, no second
loop), on a socket bound here so that port 0 picks a free port we can report. Off loopback it serves HTTPS with the
controller's own certificate, the one gRPC clients pin."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import socket
import ssl
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tensorfleet_agent.rpc.server import BindError
from tensorfleet_desktop.controller.fair_loop import asgi_first

log = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: SIGTERM and SIGINT stay the controller's (it drains, then stops us)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def public_key_pin(cert_pem: bytes) -> str:
    """What `curl --pinnedpubkey` takes for this certificate: `sha256//` and the base64 sha256 of its public key
    (DER SubjectPublicKeyInfo). The key, not the certificate: a renewed certificate of the same key keeps it."""
    spki = (
        x509.load_pem_x509_certificate(cert_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto named: asyncio sets TCP_NODELAY only on sockets that say IPPROTO_TCP (accepted ones inherit it); with
    # proto 0, Nagle held each response's body behind its headers for the client's delayed ACK (40 ms a request)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class HttpServer:
    def __init__(self, app: Any, host: str, port: int, tls: tuple[bytes, bytes] | None = None) -> None:
        """`tls`: (key PEM, certificate PEM) to serve HTTPS with; None serves plain HTTP (loopback)."""
        self._app = app
        self._host = host
        self._port = port
        self._tls = tls
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def scheme(self) -> str:
        return "https" if self._tls else "http"

    async def start(self) -> int:
        sock = _bind(self._host, self._port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            asgi_first(self._app),  # requests ahead of the loop's bulk work (fair_loop.py)
            lifespan="off",
            log_config=None,  # the controller's logging, not uvicorn's
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=1,  # open SSE streams are cut, not waited for
            **self._ssl_options(),
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-server")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # its error, raised here
                raise BindError(f"the HTTP server on {self._host}:{self.port} stopped as it started")
            await asyncio.sleep(0.01)
        return self.port

    def _ssl_options(self) -> dict[str, Any]:
        if self._tls is None:
            return {}
        key, cert = self._tls
        # uvicorn loads PEM files only: write them to a private temporary dir, read once at start-up, then removed
        with tempfile.TemporaryDirectory(prefix="tensorfleet-https-") as folder:
            key_file, cert_file = Path(folder) / "key.pem", Path(folder) / "cert.pem"
            key_file.write_bytes(key)
            cert_file.write_bytes(cert)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert_file, key_file)
        return {"ssl_context_factory": lambda _config, _default: context}

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
