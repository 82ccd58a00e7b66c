"""The client token on every route but /health and the OpenAPI document: `Authorization: Bearer <token>`, the same
token the gRPC API takes, loopback included."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tensorfleet_desktop.controller.http.context import HttpContext, context

_bearer = HTTPBearer(auto_error=False, description="the controller's client token (client.token in its data dir)")


async def require_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ctx: Annotated[HttpContext, Depends(context)],
) -> None:
    given = credentials.credentials if credentials is not None and credentials.scheme.lower() == "bearer" else ""
    if not given or not hmac.compare_digest(given.encode(), ctx.token.encode()):
        said = "no client token was sent" if not given else "the client token is wrong"
        raise HTTPException(401, f"{said}: {ctx.refusal}", headers={"WWW-Authenticate": "Bearer"})
