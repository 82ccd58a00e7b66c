"""A bound on request bodies: FastAPI reads a JSON body whole before a route sees it, so without one a single
request could make the controller hold gigabytes. Routes that stream their bodies (dataset uploads, to disk) or
bound them themselves (job creation) say so and are left alone. And one reading of JSON bodies' Content-Type for
every route (JsonBodies)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tensorfleet_desktop.controller.http import problems

MAX_BODY = 1 << 20  # JSON bodies: aliases, tags, descriptions, resubmit parameters are a few hundred bytes


class BodyLimit:
    """ASGI middleware: 413 for a body past `limit` bytes, whether its Content-Length says so (refused before a
    byte is read) or a chunked body grows past it (read here up to the limit, then handed on as it came)."""

    def __init__(self, app: ASGIApp, limit: int, streams_itself: Callable[[str, str], bool]) -> None:
        self.app = app
        self.limit = limit
        self.streams_itself = streams_itself

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.streams_itself(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:  # uvicorn delivers no more than it says
            if declared.isdigit() and int(declared) > self.limit:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # chunked: read it here (the route would read it whole anyway), refusing once it passes the limit
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is larger than {self.limit} bytes"
        response = problems.problem(413, detail, Request(scope), field="body", headers={"Connection": "close"})
        await response(scope, receive, send)


#: What `curl -d` sends unless told otherwise: read as the JSON it holds, so `curl -d '{...}'` works on every route.
FORM = "application/x-www-form-urlencoded"


def _is_json(media: str) -> bool:
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JsonBodies:
    """ASGI middleware: the JSON routes read their bodies alike whatever client sends them. A body without a
    Content-Type, or with curl -d's form type, is read as JSON (its header is made application/json, which FastAPI
    parses; job creation reads any body as JSON); a body that says it is something else (text/plain, multipart) is
    refused with 415 naming `Content-Type: application/json`. Routes that take other bodies (dataset upload) say
    so and are left alone."""

    METHODS = frozenset({"POST", "PUT", "PATCH"})

    def __init__(self, app: ASGIApp, not_json: Callable[[str, str], bool]) -> None:
        self.app = app
        self.not_json = not_json

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in self.METHODS
            or self.not_json(scope["method"], scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        has_body = headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers
        if media == FORM:
            raw = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
            scope = {**scope, "headers": [*raw, (b"content-type", b"application/json")]}
        elif media and has_body and not _is_json(media):
            detail = (
                f"Content-Type {media[:80]!r} is not JSON: send the body as JSON with `Content-Type: application/json`"
            )
            response = problems.problem(415, detail, Request(scope), field="Content-Type")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
