"""The client token on every route but /health and the OpenAPI document: `Authorization: Bearer <token>`, the same
token the gRPC API takes, loopback included.

Checked twice: `TokenGate` (ASGI middleware) answers 401 before routing, so a request without the token never gets
its body read or parsed (no 400 for a bad JSON body, no upload spooled, no 405 or 404 telling which routes exist);
`require_token` declares the bearer scheme on every protected route of the OpenAPI document (Swagger's Authorize
button, schema-driven clients) and checks again."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tensorfleet_desktop.controller.http import problems
from tensorfleet_desktop.controller.http.context import HttpContext, context

_bearer = HTTPBearer(auto_error=False, description="the controller's client token (client.token in its data dir)")
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def refused(authorization: str | None, token: str) -> str:
    """Why an `Authorization` header value does not carry this token ("" when it does)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""
    if not given:
        return "no client token was sent (Authorization: Bearer <token>)"
    if not hmac.compare_digest(given.encode(), token.encode()):
        return "the client token is wrong"
    return ""


async def require_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ctx: Annotated[HttpContext, Depends(context)],
) -> None:
    header = f"{credentials.scheme} {credentials.credentials}" if credentials is not None else None
    said = refused(header, ctx.token)
    if said:
        raise HTTPException(401, f"{said}: {ctx.refusal}", headers=CHALLENGE)


class TokenGate:
    """ASGI middleware: every HTTP request to a path `is_open` does not accept needs the client token, checked
    before anything else reads the request."""

    def __init__(self, app: ASGIApp, ctx: HttpContext, is_open: Callable[[str], bool]) -> None:
        self.app = app
        self.ctx = ctx
        self.is_open = is_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        said = refused(Headers(scope=scope).get("authorization"), self.ctx.token)
        if not said:
            await self.app(scope, receive, send)
            return
        response = problems.problem(401, f"{said}: {self.ctx.refusal}", Request(scope), headers=CHALLENGE)
        await response(scope, receive, send)
