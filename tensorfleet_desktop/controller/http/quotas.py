"""Quotas and the fair share over HTTP (issue 24), as gRPC's ListQuotas / SetQuota: everyone may read where each user
stands; setting a quota is an admin's (principals.HTTP_ROUTES maps PUT onto SetQuota)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from tensorfleet_desktop.controller.http import problems
from tensorfleet_desktop.controller.http.context import HttpContext, context

router = APIRouter(tags=["team"])
Ctx = Annotated[HttpContext, Depends(context)]
User = Annotated[str, Path(min_length=1, max_length=200, description="the user (a token's name, or an OS user)")]


class Quota(BaseModel):
    user: str
    gpus: int = Field(description="GPUs its running tasks may hold (a shared GPU counts its fraction); -1: no limit")
    tasks: int = Field(description="tasks it may run at once; -1: no limit")
    queued: int = Field(description="jobs it may have waiting to start (more wait, held); -1: no limit")


class QuotaIn(BaseModel):
    """The limits to set; a limit left out stays as it is, -1 removes it."""

    gpus: int | None = Field(default=None, ge=-1)
    tasks: int | None = Field(default=None, ge=-1)
    queued: int | None = Field(default=None, ge=-1)


class UserUsage(BaseModel):
    user: str
    running_tasks: int
    running_gpus: float = Field(description="fractions for tasks sharing a GPU")
    queued_jobs: int
    usage: float = Field(description="decayed GPU-seconds (slot-seconds for CPU tasks): the queue orders by it")
    share: float = Field(description="usage / everyone's usage (0..1)")


class QuotaList(BaseModel):
    quotas: list[Quota]
    usage: list[UserUsage]
    half_life_seconds: float = Field(description="of the usage's decay ([scheduler] fair_share_half_life)")


@router.get("/quotas", response_model=QuotaList)
async def list_quotas(ctx: Ctx) -> QuotaList:
    """Every quota, beside each user's tasks and GPUs running now, queued jobs, decayed usage and share."""
    quotas, usage, half_life = ctx.controller.quota_report()
    return QuotaList(
        quotas=[Quota(**q) for q in quotas],
        usage=[UserUsage(**u) for u in usage],
        half_life_seconds=half_life,
    )


@router.put("/quotas/{user}", response_model=Quota, responses=problems.error_responses(422))
async def set_quota(ctx: Ctx, user: User, body: QuotaIn) -> Quota:
    """Set the given limits of a user (admin): a job over quota waits with the reason shown, never fails."""
    limits = {k: v for k, v in body.model_dump().items() if v is not None}
    return Quota(**ctx.controller.set_quota(user, limits))
