"""Named tokens and the audit log over HTTP (issue 24), as gRPC's CreateToken/ListTokens/RevokeToken/ListAudit:
the tokens are an admin's (principals.HTTP_ROUTES), the audit log everyone's own (an admin's: everyone's)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from tensorfleet_desktop.controller import principals
from tensorfleet_desktop.controller.errors import JobError
from tensorfleet_desktop.controller.http import problems
from tensorfleet_desktop.controller.http.context import HttpContext, context
from tensorfleet_desktop.controller.tokens import TokenBook

router = APIRouter(tags=["team"])
Ctx = Annotated[HttpContext, Depends(context)]


class TokenInfo(BaseModel):
    name: str
    role: str = Field(description="admin, user or viewer")
    created_at: float
    created_by: str
    last_used_at: float = Field(description="unix seconds; 0: never (written at most once a minute)")
    revoked: bool
    prefix: str = Field(description="the token's first characters, to tell tokens apart")


class TokenMade(TokenInfo):
    token: str = Field(description="the token, shown this once: the controller keeps only its hash")


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, description="who it stands for: letters, digits, '.', '_', '-'")
    role: str = Field(default="user", description="admin, user (default) or viewer")


class TokenList(BaseModel):
    items: list[TokenInfo]


class AuditEntry(BaseModel):
    seq: int
    time: float
    user: str
    role: str
    action: str
    target: str
    detail: str
    ok: bool = Field(description="false: refused (the detail says why)")


class AuditList(BaseModel):
    entries: list[AuditEntry] = Field(description="newest first")


def _book(ctx: HttpContext) -> TokenBook:
    if ctx.tokens is None:
        raise JobError("this controller keeps no named tokens (it was started without them)")
    book: TokenBook = ctx.tokens
    return book


@router.post("/tokens", status_code=201, response_model=TokenMade, responses=problems.error_responses(403, 409, 422))
async def create_token(ctx: Ctx, body: TokenIn) -> TokenMade:
    """A named token (admin only), as `tensorfleet tokens create`."""
    record, token = _book(ctx).create(body.name, body.role, principals.current().name or "admin")
    return TokenMade(**record.public(), token=token)


@router.get("/tokens", response_model=TokenList, responses=problems.error_responses(403))
async def list_tokens(
    ctx: Ctx, include_revoked: Annotated[bool, Query(description="revoked tokens too")] = False
) -> TokenList:
    return TokenList(items=[TokenInfo(**r.public()) for r in _book(ctx).list(include_revoked)])


@router.delete("/tokens/{name}", response_model=TokenInfo, responses=problems.error_responses(403, 404))
async def revoke_token(ctx: Ctx, name: Annotated[str, Path(min_length=1, max_length=64)]) -> TokenInfo:
    """Refuse NAME's live token at once: its next call, and the watches and event streams it holds open (they end
    now, even while quiet); an upload already streaming in finishes."""
    return TokenInfo(**_book(ctx).revoke(name).public())


@router.get("/audit", response_model=AuditList, responses=problems.error_responses(403, 409))
async def list_audit(
    ctx: Ctx,
    user: Annotated[str, Query(max_length=64, description="only this user's entries (others read their own)")] = "",
    action: Annotated[str, Query(max_length=64, description="only this action (submit, cancel, ...)")] = "",
    since: Annotated[float, Query(ge=0, description="unix seconds; 0: from the start")] = 0.0,
    limit: Annotated[int, Query(ge=1, le=10_000, description="at most this many, newest first")] = 200,
) -> AuditList:
    if ctx.audit is None:
        raise JobError("this controller keeps no audit log (it was started without one)")
    whose = principals.audit_user(principals.current(), user.strip())
    found = await ctx.audit.entries(whose, action.strip(), since, limit)
    return AuditList(entries=[AuditEntry(**e) for e in found])


class Caller(BaseModel):
    name: str = Field(description="a named token's name, or the OS user a client names with the client token")
    role: str = Field(description="admin, user or viewer")
    named_token: bool = Field(description="false: the controller's own client token")


@router.get("/whoami", response_model=Caller)
async def whoami() -> Caller:
    """Who the controller takes the caller for (gRPC: GetInfo's caller)."""
    who = principals.current()
    return Caller(name=who.name, role=who.role, named_token=who.named_token)
