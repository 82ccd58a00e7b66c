"""A client of the controller's HTTP API for tests: plain `requests` over real HTTP, as a user's script would,
and a reader of Server-Sent Events that keeps each event's id (for Last-Event-ID)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from helpers.controller import ControllerProcess


def as_token(url: str, token: str, method: str = "GET", body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """(status, JSON body or None) of one call made with `token`: how a team member's script calls the API."""
    response = requests.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return response.status_code, response.json() if response.content else None


@dataclass
class SseEvent:
    event: str  # the `event:` field ("message" when absent)
    data: str
    id: str = ""

    def json(self) -> Any:
        return json.loads(self.data)


def read_sse(response: requests.Response) -> Iterator[SseEvent]:
    """The events of a text/event-stream response as they arrive (comments and keep-alives skipped)."""
    event, data, last_id = "message", [], ""
    for raw in response.iter_lines(decode_unicode=True):
        line = raw if isinstance(raw, str) else raw.decode()
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data), last_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            last_id = value


class HttpApi:
    """`requests` against one controller's /api/v1, with its client token unless told otherwise."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")  # http://127.0.0.1:PORT
        self.token = token
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def of(cls, controller: ControllerProcess) -> HttpApi:
        port = controller.info.get("http_port")
        assert port, "start the controller with --http-port 0 (extra_args)"
        token = (controller.data_dir / "client.token").read_text().strip()
        return cls(f"http://127.0.0.1:{port}", token)

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else f"/api/v1/{path}")

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url(path), **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of a 2xx answer (the problem document in the assertion otherwise)."""
        response = self.request(method, path, **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    def events(self, path: str, last_event_id: str = "", **params: Any) -> tuple[requests.Response, Iterator[SseEvent]]:
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        response = self.get(path, headers=headers, params=params, stream=True, timeout=(10, 120))
        return response, read_sse(response)


def download(response: requests.Response, to: Path) -> Path:
    with to.open("wb") as fh:
        for chunk in response.iter_content(1 << 16):
            fh.write(chunk)
    return to
