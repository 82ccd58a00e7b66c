"""A client token on every route but /health and the OpenAPI document: `Authorization: Bearer <token>`, the same
tokens the gRPC API takes (the controller's client token, or a named one: issue 24), loopback included.

Checked twice: `TokenGate` (ASGI middleware) answers 401 before routing, so a request without a valid token never
gets its body read or parsed (no 400 for a bad JSON body, no upload spooled, no 405 or 404 telling which routes
exist); `require_token` declares the bearer scheme on every protected route of the OpenAPI document (Swagger's
Authorize button, schema-driven clients), decides the caller again, checks the route against the permission table
(principals.HTTP_ROUTES: each route follows its gRPC method's rule), runs the route as that caller and records
audited calls, ok or refused, as the gRPC interceptor does."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tensorfleet_desktop.controller.http import problems
from tensorfleet_desktop.controller.http.context import HttpContext, context
from tensorfleet_desktop.controller.principals import (
    ADMIN,
    PermissionDenied,
    Principal,
    Rule,
    Unauthenticated,
    acting_as,
    allow,
    allow_owner,
    http_rule,
)
from tensorfleet_desktop.controller.tokens import PREFIX as NAMED_PREFIX
from tensorfleet_desktop.controller.tokens import claimed_user

_bearer = HTTPBearer(auto_error=False, description="a client token: client.token in its data dir, or a named one")
CHALLENGE = {"WWW-Authenticate": "Bearer"}
API_PREFIX = "/api/v1"
USER_HEADER = "x-tensorfleet-user"  # the OS user a client names (with the controller's own token)
_TARGET_PARAMS = ("job_id", "ref", "name", "agent", "user")


def _given(authorization: str | None) -> str:
    scheme, _, given = (authorization or "").strip().partition(" ")
    return given.strip() if scheme.lower() == "bearer" else ""


def authenticate(ctx: HttpContext, authorization: str | None, user: str | None) -> Principal:
    """The caller an `Authorization` header stands for; Unauthenticated saying why it stands for none."""
    given = _given(authorization)
    if not given:
        raise Unauthenticated("no client token was sent (Authorization: Bearer <token>)")
    if ctx.tokens is not None:
        principal: Principal = ctx.tokens.authenticate(given, user or "")
        return principal
    if hmac.compare_digest(given.encode(), ctx.token.encode()):
        return Principal(claimed_user(user or ""), ADMIN)
    raise Unauthenticated("the client token is wrong")


def refused(ctx: HttpContext, authorization: str | None, user: str | None) -> str:
    """Why the header stands for no caller, as a 401 says it ("" when it does)."""
    try:
        authenticate(ctx, authorization, user)
    except Unauthenticated as exc:
        named = _given(authorization).startswith(NAMED_PREFIX)  # its holder needs no word on client.token
        return str(exc) if named else f"{exc}: {ctx.refusal}"
    return ""


def _record(ctx: HttpContext, principal: Principal, rule: Rule, target: str, detail: str, ok: bool) -> None:
    if ctx.audit is not None and rule.action:
        ctx.audit.record(principal, rule.action, target, detail, ok)


def _target(request: Request) -> str:
    said = getattr(request.state, "audit_target", "")  # a route that made something names it (a new job's id)
    if said:
        return str(said)
    return next((str(request.path_params[k]) for k in _TARGET_PARAMS if request.path_params.get(k)), "")


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ctx: Annotated[HttpContext, Depends(context)],
) -> AsyncIterator[None]:
    header = f"{credentials.scheme} {credentials.credentials}" if credentials is not None else None
    said = refused(ctx, header, request.headers.get(USER_HEADER))
    if said:
        raise HTTPException(401, said, headers=CHALLENGE)
    principal = authenticate(ctx, header, request.headers.get(USER_HEADER))
    route = getattr(request.scope.get("route"), "path", request.url.path)
    _, rule = http_rule(request.method, route.removeprefix(API_PREFIX))
    try:
        allow(principal, rule)
        job_id = str(request.path_params.get("job_id", ""))
        if rule.owned and job_id:
            try:
                job = ctx.controller.get(job_id)
            except Exception:  # no such job: the route says so
                job = None
            if job is not None:
                allow_owner(principal, rule, job.id, job.submitter)
    except PermissionDenied as exc:
        _record(ctx, principal, rule, _target(request), str(exc), False)
        raise
    with acting_as(principal):
        try:
            yield
        except Exception as exc:
            _record(ctx, principal, rule, _target(request), str(getattr(exc, "detail", "") or exc), False)
            raise
        _record(ctx, principal, rule, _target(request), "", True)


class TokenGate:
    """ASGI middleware: every HTTP request to a path `is_open` does not accept needs a valid client token, checked
    before anything else reads the request."""

    def __init__(self, app: ASGIApp, ctx: HttpContext, is_open: Callable[[str], bool]) -> None:
        self.app = app
        self.ctx = ctx
        self.is_open = is_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        said = refused(self.ctx, headers.get("authorization"), headers.get(USER_HEADER))
        if not said:
            await self.app(scope, receive, send)
            return
        response = problems.problem(401, said, Request(scope), headers=CHALLENGE)
        await response(scope, receive, send)
