"""The HTTP face as a platform, over real HTTP: the client token on every route of the served OpenAPI document
(401 problem documents with a Bearer challenge, before any body is read), the open routes (/health, the document,
the docs page and its local assets), 404/405 as problem documents, and HTTPS with the controller's own certificate:
a client pinned to it connects, one pinned elsewhere or speaking plain HTTP does not."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlparse

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from helpers.http_api import HttpApi
from tensorfleet_agent.identity import load_or_create_identity
from tensorfleet_desktop.controller.http.app import create_app
from tensorfleet_desktop.controller.http.context import HttpContext
from tensorfleet_desktop.controller.http.problems import PROBLEM_JSON
from tensorfleet_desktop.controller.http.server import HttpServer, public_key_pin

pytestmark = pytest.mark.slow

OPEN = {"/health", "/api/v1/openapi.json"}
METHODS = ("get", "put", "post", "delete", "patch")


def assert_problem(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.request.method} {response.url}: {response.text[:300]}"
    assert response.headers["Content-Type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= body.keys()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    assert body["instance"] == unquote(urlparse(response.url).path)
    return cast(dict[str, Any], body)


def dummy(parameter: dict[str, Any]) -> str:
    schema = parameter.get("schema", {})
    kinds = {schema.get("type"), *(s.get("type") for s in schema.get("anyOf", []))}
    return "1" if kinds & {"integer", "number"} else "dummy-id"


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path with its parameters filled, operation) of every protected operation of the document."""
    for template, item in document["paths"].items():
        if template in OPEN:
            continue
        for method, operation in item.items():
            if method not in METHODS:
                continue
            path = template
            for parameter in [*item.get("parameters", []), *operation.get("parameters", [])]:
                if parameter["in"] == "path":
                    path = path.replace("{" + parameter["name"] + "}", dummy(parameter))
            yield method, path, operation


@pytest.fixture(scope="module")
def api(http_cluster: Any) -> HttpApi:
    controller, _agents = http_cluster
    return HttpApi.of(controller)


@pytest.fixture(scope="module")
def document(api: HttpApi) -> dict[str, Any]:
    response = requests.get(api.url("/api/v1/openapi.json"), timeout=10)  # open: no token
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["openapi"].startswith("3.1")
    return cast(dict[str, Any], body)


def test_every_protected_route_answers_401_without_the_token_or_with_a_wrong_one(
    api: HttpApi, document: dict[str, Any]
) -> None:
    found = list(operations(document))
    assert found, "the document lists no protected route"
    schemes = document["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    anonymous = requests.Session()
    for method, path, operation in found:
        where = f"{method.upper()} {path}"
        assert "401" in operation["responses"], f"{where} does not declare its 401"
        assert operation.get("security"), f"{where} does not declare the bearer scheme"
        attempts: list[dict[str, Any]] = [
            {},
            {"headers": {"Authorization": "Bearer not-the-token"}},
            {"headers": {"Authorization": f"Basic {api.token}"}},  # the right secret in the wrong scheme
            # a body that is not JSON: refused for the token, never parsed (a 400 would mean it was read first)
            {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
        ]
        for attempt in attempts:
            response = anonymous.request(method, api.url(path), timeout=10, stream=True, **attempt)
            try:
                body = assert_problem(response, 401)
            finally:
                response.close()
            assert response.headers["WWW-Authenticate"] == "Bearer", where
            said = "wrong" if "Bearer not" in str(attempt) else "no client token"
            assert said in body["detail"] and "client.token" in body["detail"], (where, body["detail"])


def test_health_the_document_and_the_docs_page_are_open_and_local(api: HttpApi) -> None:
    health = requests.get(api.url("/health"), timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    page = requests.get(api.url("/api/v1/docs"), timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/api/v1/openapi.json" in page.text
    assert "https://" not in page.text and "http://" not in page.text  # no CDN: a LAN without internet has docs
    assets = {
        "swagger-ui-bundle.js": ("javascript", 100_000),
        "swagger-ui.css": ("text/css", 10_000),
        "favicon-32x32.png": ("image/png", 100),
    }
    for name, (kind, size) in assets.items():
        assert f"/api/v1/docs/assets/{name}" in page.text
        asset = requests.get(api.url(f"/api/v1/docs/assets/{name}"), timeout=10)
        assert asset.status_code == 200 and kind in asset.headers["Content-Type"] and len(asset.content) > size
    assert_problem(requests.get(api.url("/api/v1/docs/assets/..%2Fapp.py"), timeout=10), 404)


def test_an_unknown_route_is_404_and_a_wrong_method_405_as_problems(api: HttpApi, document: dict[str, Any]) -> None:
    for path in ("/api/v1/no-such-thing", "/api/v2/jobs", "/nothing"):
        body = assert_problem(api.get(path), 404)
        assert path in body["detail"]
        # without the token: a 401, so which routes exist is not told
        assert_problem(requests.get(api.url(path), timeout=10), 401)
    checked = 0
    for path in document["paths"]:
        if path in OPEN or "{" in path:
            continue
        # the methods of every route this path matches (PATCH /models/stats is PATCH /models/{ref})
        served = {
            method
            for template, other in document["paths"].items()
            if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path)
            for method in set(other) & set(METHODS)
        }
        wrong = next((m for m in ("patch", "put", "delete", "post") if m not in served), None)
        if wrong is None:
            continue
        response = api.request(wrong, path)
        body = assert_problem(response, 405)
        allowed = {m.strip().lower() for m in response.headers["Allow"].split(",")}
        assert served <= allowed and wrong not in allowed, (path, allowed)
        assert wrong.upper() in body["detail"] and path in body["detail"]
        checked += 1
    assert_problem(requests.post(api.url("/health"), timeout=10), 405)  # open, and still a problem document
    assert checked, "no parameter-free protected path to send a wrong method to"


# --- HTTPS off loopback: HttpServer with the controller's certificate, exercised on loopback -------------------------


@contextmanager
def serving(tls: tuple[bytes, bytes] | None, token: str = "t0ken") -> Iterator[int]:
    """create_app over a context without a controller (enough for /health and the token gate) on 127.0.0.1, served
    by HttpServer on its own loop in a thread, as the controller serves it on its own loop."""
    context = HttpContext(cast(Any, None), cast(Any, None), token, dict, "see client.token")
    server = HttpServer(create_app(context), "127.0.0.1", 0, tls=tls)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def https_get(port: int, context: ssl.SSLContext, server_hostname: str, path: str, token: str = "") -> bytes:
    """One HTTP/1.1 request over TLS (server_hostname: the name the certificate is checked against)."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {path} HTTP/1.1\r\nHost: {server_hostname}\r\n{auth}Connection: close\r\n\r\n"
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        tls.sendall(request.encode())
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def spki_pin(der: bytes) -> str:
    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_a_json_body_past_the_limit_is_413_whether_announced_or_chunked(api: HttpApi) -> None:
    """FastAPI reads a JSON body whole: past 1 MiB the controller refuses it (declared length: before reading a
    byte; chunked: as soon as it grows past), and keeps serving."""
    from tensorfleet_desktop.controller.http.limits import MAX_BODY

    huge = b'{"description": "' + b"x" * (MAX_BODY + 10) + b'"}'
    body = assert_problem(api.request("PATCH", "models/no-such-model", data=huge), 413)
    assert str(MAX_BODY) in body["detail"] and body["field"] == "body"
    chunks = iter([huge[: MAX_BODY // 2], huge[MAX_BODY // 2 :]])  # a generator body goes out chunked
    assert_problem(api.request("PATCH", "models/no-such-model", data=chunks), 413)
    # a small body still reaches the route (404: there is no such model)
    assert_problem(api.request("PATCH", "models/no-such-model", json={"description": "ok"}), 404)


def test_https_with_the_controller_certificate_admits_only_a_client_pinned_to_it(tmp_path: Path) -> None:
    identity = load_or_create_identity(tmp_path / "identity", "controller")
    other = load_or_create_identity(tmp_path / "other", "controller")
    pinned = ssl.create_default_context(cadata=identity.cert_pem.decode())  # verifies the chain and the name
    with serving((identity.key_pem, identity.cert_pem)) as port:
        answer = https_get(port, pinned, identity.node_id, "/health")
        assert answer.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in answer
        gated = https_get(port, pinned, identity.node_id, "/api/v1/jobs")
        assert gated.startswith(b"HTTP/1.1 401") and b"www-authenticate: bearer" in gated.lower()
        # the certificate names the node id, not an address: a client checking the host name must use that name
        with pytest.raises(ssl.SSLCertVerificationError):
            https_get(port, pinned, "127.0.0.1", "/health")
        with pytest.raises(ssl.SSLCertVerificationError):  # pinned to another controller
            https_get(port, ssl.create_default_context(cadata=other.cert_pem.decode()), identity.node_id, "/health")
        with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP gets no answer
            requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
        with pytest.raises(requests.exceptions.SSLError):  # nor does HTTPS that trusts the system CAs only
            requests.get(f"https://127.0.0.1:{port}/health", timeout=5)
        # requests with the certificate as its CA file, checking it against the node id
        cert_file = tmp_path / "controller.pem"
        cert_file.write_bytes(identity.cert_pem)
        with requests.Session() as session:
            session.mount(f"https://127.0.0.1:{port}", _NamedHostAdapter(identity.node_id))
            ok = session.get(f"https://127.0.0.1:{port}/health", verify=str(cert_file), timeout=5)
            assert ok.status_code == 200 and ok.json()["status"] == "ok"
        # the pin the controller logs is the sha256 of the key the server presents
        unverified = ssl.create_default_context()
        unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            unverified.wrap_socket(raw) as tls,
        ):
            presented = tls.getpeercert(binary_form=True)
        assert presented is not None and spki_pin(presented) == public_key_pin(identity.cert_pem)
        assert public_key_pin(identity.cert_pem) != public_key_pin(other.cert_pem)
        if shutil.which("curl"):  # the recipe users get: curl --pinnedpubkey PIN -k (the pin is checked under -k)
            url = f"https://127.0.0.1:{port}/health"
            good = subprocess.run(
                ["curl", "-sS", "-k", "--pinnedpubkey", public_key_pin(identity.cert_pem), url],
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert good.returncode == 0 and '"status":"ok"' in good.stdout, good.stderr
            bad = subprocess.run(
                ["curl", "-sS", "-k", "--pinnedpubkey", public_key_pin(other.cert_pem), url],
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert bad.returncode == 90, (bad.returncode, bad.stdout, bad.stderr)  # CURLE_SSL_PINNEDPUBKEYNOTMATCH


class _NamedHostAdapter(requests.adapters.HTTPAdapter):
    """Checks the server's certificate against `name` while dialling the address in the URL (curl's --resolve)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, server_hostname=self.name, **kwargs)


def test_a_malformed_request_is_a_documented_400_on_every_operation(api: HttpApi, document: dict[str, Any]) -> None:
    """The HTTP server refuses a malformed request (a Content-Length that is no number) before any route, as plain
    text: the document says so for every operation, so a schema-checking client expects it (schemathesis sends such
    headers in its negative pass)."""
    host, port = urlparse(api.base_url).netloc.rsplit(":", 1)
    with socket.create_connection((host.strip("[]"), int(port)), timeout=10) as raw:
        raw.sendall(b"GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: l\r\n\r\n")
        answer = raw.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 400") and "text/plain" in answer.lower(), answer
    for item in document["paths"].values():
        for method, operation in item.items():
            if method in METHODS:
                assert {"text/plain", "application/problem+json"} <= set(operation["responses"]["400"]["content"])
