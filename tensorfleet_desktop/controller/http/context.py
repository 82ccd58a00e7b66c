"""What a route handler reaches: the controller core, the fleet, the serving controller's identity."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.fleet import Fleet


@dataclass
class HttpContext:
    controller: Controller
    fleet: Fleet
    token: str  # the client token: the one the gRPC API takes
    info: Callable[[], dict[str, Any]]  # version, data dir, store, started_at, cluster id (no secrets)
    refusal: str = ""  # where a client finds the token: said in every 401
    tokens: Any = None  # tokens.TokenBook: named tokens beside the client token (issue 24); None: that token only
    audit: Any = None  # audit.AuditLog: who did what, recorded by http/auth.py's dependency

    def agent_names(self) -> dict[str, str]:
        return {a.node_id: a.name for a in self.fleet.agents.values()}


async def context(request: Request) -> HttpContext:
    """FastAPI dependency: the context the app was built with. A coroutine: FastAPI runs a plain function dependency
    in its thread pool, a hop to a thread and back onto the loop for every request."""
    ctx: HttpContext = request.app.state.context
    return ctx
