"""ControllerService needs a client token on every call, loopback included; only grpc.health.v1 is open, and
JoinCluster, which a pool agent's join credential admits (checked by its handler, controller/pools/members.py).

The token decides the caller (tokens.TokenBook.authenticate: the controller's own client token is an admin named
by the client's `x-tensorfleet-user` metadata; a named token is its name and role), the permission table
(principals.RULES) decides what the caller may call, and the handler runs as that principal (a contextvar set
around it, so the servicer and the core read principals.current()). Calls whose rule names an audit action are
recorded after they end, ok or refused."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from tensorfleet_agent.rpc.handlers import aborting
from tensorfleet_agent.security.interceptor import bearer
from tensorfleet_desktop.controller.audit import AuditLog
from tensorfleet_desktop.controller.principals import (
    ADMIN,
    PermissionDenied,
    Principal,
    Rule,
    Unauthenticated,
    acting_as,
    allow,
    allow_owner,
    rule_for,
)
from tensorfleet_desktop.controller.tokens import PREFIX, TokenBook, claimed_user, until_revoked

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)  # load balancers and probes hold no token
# A joining pool agent holds no client token: its join credential, checked by the handler itself, admits it
CREDENTIAL_METHODS = ("/tensorfleet.v1.ControllerService/JoinCluster",)
USER_HEADER = "x-tensorfleet-user"  # the OS user a client names (with the controller's own token)
_TARGET_FIELDS = ("job_id", "ref", "agent", "user", "name", "address", "pool")

Owner = Callable[[str], "tuple[str, str] | None"]  # a job ref -> (job id, submitter); None: no such job


def refusal(token_file: str, connection_file: str = "") -> str:
    """Where a client finds the token: said in every refusal."""
    same_user = f"clients run by this controller's OS user read it from {connection_file}; " if connection_file else ""
    return (
        f"this controller needs its client token on every call: {same_user}"
        f"otherwise set TENSORFLEET_CONTROLLER_TOKEN to the token in {token_file} (client.token in its data dir)"
    )


def _header(metadata: Any, key: str) -> str:
    for k, value in metadata or ():
        if k == key and isinstance(value, str):
            return value
    return ""


def target_of(request: Any, response: Any = None) -> str:
    """What an audited call acted on: a new job's id, else the request's job id, model ref, agent, user..."""
    if response is not None and hasattr(response, "DESCRIPTOR") and response.DESCRIPTOR.name == "Job":
        return str(response.id)
    if response is not None and hasattr(response, "DESCRIPTOR") and response.DESCRIPTOR.name == "SubmitJobsResponse":
        ids = [str(job.id) for job in response.jobs]  # a batch: its jobs, the first and last named
        return f"{len(ids)} jobs: {ids[0]} .. {ids[-1]}" if len(ids) > 1 else "".join(ids)
    fields = getattr(getattr(request, "DESCRIPTOR", None), "fields_by_name", {})
    for name in _TARGET_FIELDS:
        if name in fields and isinstance(getattr(request, name), str) and getattr(request, name):
            return str(getattr(request, name))
    if response is not None and hasattr(response, "DESCRIPTOR") and "name" in response.DESCRIPTOR.fields_by_name:
        return str(response.name)
    return ""


class ClientTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        token: str,
        message: str = refusal("client.token in the controller's data dir"),
        tokens: TokenBook | None = None,
        audit: AuditLog | None = None,
        owner: Owner | None = None,
    ) -> None:
        self._token = token
        self.message = message
        self.tokens = tokens
        self.audit = audit
        self.owner = owner

    def revocation(self, principal: Principal) -> contextlib.AbstractContextManager[asyncio.Event | None]:
        return self.tokens.revocation(principal) if self.tokens is not None else contextlib.nullcontext(None)

    def authenticate(self, metadata: Any) -> Principal:
        given, claimed = bearer(metadata), _header(metadata, USER_HEADER)
        if self.tokens is not None:
            return self.tokens.authenticate(given, claimed)
        if given and hmac.compare_digest(given.encode(), self._token.encode()):
            return Principal(claimed_user(claimed), ADMIN)
        raise Unauthenticated("the client token is wrong")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES) or method in CREDENTIAL_METHODS:
            return handler
        metadata = handler_call_details.invocation_metadata
        try:
            principal = self.authenticate(metadata)
        except Unauthenticated as exc:
            named = bearer(metadata).startswith(PREFIX)  # a named token's holder needs no word on client.token
            return aborting(handler, grpc.StatusCode.UNAUTHENTICATED, str(exc) if named else self.message)
        return self._acting(handler, principal, rule_for(method))

    def _record(self, principal: Principal, rule: Rule, target: str, detail: str, ok: bool) -> None:
        if self.audit is not None and rule.action:
            self.audit.record(principal, rule.action, target, detail, ok)

    def _check(self, principal: Principal, rule: Rule, request: Any) -> None:
        """The role, then (a call on one job) its owner; in the handler, so a refusal's audit names the target.
        A streamed request is not read before: a viewer's upload is refused before its first chunk is."""
        allow(principal, rule)
        if not rule.owned or self.owner is None:
            return
        found = self.owner(str(getattr(request, "job_id", "")))
        if found is not None:  # an unknown job: the handler says so
            allow_owner(principal, rule, *found)

    def _acting(
        self, handler: grpc.RpcMethodHandler[Any, Any], principal: Principal, rule: Rule
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """`handler` run as `principal`: role and ownership checked first, the outcome audited after. The
        behaviours stay coroutine (async generator) functions, partials of them, so grpc runs them on the loop."""
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        outer = self

        async def unary(inner: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with acting_as(principal):
                try:
                    outer._check(principal, rule, request)
                except PermissionDenied as exc:
                    outer._record(principal, rule, target_of(request), str(exc), False)
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
                try:
                    response = await inner(request, context)
                except BaseException:
                    outer._record(principal, rule, target_of(request), _said(context), False)
                    raise
                outer._record(principal, rule, target_of(request, response), "", True)
                return response

        async def streaming(
            inner: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            with acting_as(principal), outer.revocation(principal) as revoked:
                try:
                    outer._check(principal, rule, request)
                except PermissionDenied as exc:
                    outer._record(principal, rule, target_of(request), str(exc), False)
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
                source = inner(request, context)
                if revoked is not None:
                    source = until_revoked(source, revoked, principal.name)
                try:
                    async for item in source:
                        yield item
                except Unauthenticated as exc:  # its token was revoked while the stream was open
                    outer._record(principal, rule, target_of(request), str(exc), False)
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
                except BaseException:
                    outer._record(principal, rule, target_of(request), _said(context), False)
                    raise
                outer._record(principal, rule, target_of(request), "", True)

        if handler.request_streaming and handler.response_streaming:
            behavior = handler.stream_stream
            return grpc.stream_stream_rpc_method_handler(functools.partial(streaming, behavior), **kwargs)
        if handler.request_streaming:
            behavior = handler.stream_unary
            return grpc.stream_unary_rpc_method_handler(functools.partial(unary, behavior), **kwargs)
        if handler.response_streaming:
            behavior = handler.unary_stream
            return grpc.unary_stream_rpc_method_handler(functools.partial(streaming, behavior), **kwargs)
        behavior = handler.unary_unary
        return grpc.unary_unary_rpc_method_handler(functools.partial(unary, behavior), **kwargs)


def _said(context: Any) -> str:
    """The status a failed call ended with, in words (its handler aborted with it)."""
    try:
        code, details = context.code(), context.details()
    except Exception:  # pragma: no cover - an older grpc without them
        return "failed"
    name = getattr(code, "name", "") or str(code or "")
    text = details.decode(errors="replace") if isinstance(details, bytes) else str(details or "")
    return f"{name}: {text}" if name else text or "failed"
