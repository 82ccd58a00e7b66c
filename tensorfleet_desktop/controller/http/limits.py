"""A bound on request bodies: FastAPI reads a JSON body whole before a route sees it, so without one a single
request could make the controller hold gigabytes. Routes that stream their bodies (dataset uploads, to disk) or
bound them themselves (job creation) say so and are left alone."""

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
