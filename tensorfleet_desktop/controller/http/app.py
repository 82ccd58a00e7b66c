"""The FastAPI application of the HTTP face: its routers under /api/v1 behind the client token, problem documents
for every error, the OpenAPI 3.1 document FastAPI derives from the routes, and a Swagger UI page whose assets the
controller serves itself (a LAN without internet still gets its docs)."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel

from tensorfleet_agent.core.version import AGENT_VERSION
from tensorfleet_desktop.controller.http import (
    agents,
    artifacts,
    datasets,
    events,
    jobs,
    models,
    problems,
    quotas,
    team,
)
from tensorfleet_desktop.controller.http.auth import TokenGate, require_token
from tensorfleet_desktop.controller.http.context import HttpContext
from tensorfleet_desktop.controller.http.limits import MAX_BODY, BodyLimit, JsonBodies

PREFIX = "/api/v1"
OPENAPI_URL = f"{PREFIX}/openapi.json"
DOCS_URL = f"{PREFIX}/docs"
_ASSETS = files("fastapi_swagger") / "resources"
_ASSET_NAMES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
OPEN_PATHS = frozenset({"/health", OPENAPI_URL, DOCS_URL})  # the docs page holds no data: its requests send the token


def is_open(path: str) -> bool:
    """The paths served without the client token: health, the OpenAPI document, the docs page and its assets."""
    return path in OPEN_PATHS or path.startswith(f"{DOCS_URL}/assets/")


DESCRIPTION = """\
The TensorFleet controller over HTTP: the operations of its gRPC API as JSON resources.

Every route but `/health` and this document needs the controller's client token:
`Authorization: Bearer <token>` (the token in `client.token` in the controller's data dir, the one the CLI and
the desktop app send). Errors are RFC 9457 problem documents (`application/problem+json`).
"""


class Health(BaseModel):
    status: str
    version: str


def not_json(method: str, path: str) -> bool:
    """Routes whose bodies are not JSON: dataset uploads (a file's bytes, its type checked by the route)."""
    return method == "PUT" and path.startswith(f"{PREFIX}/datasets/")


def streams_itself(method: str, path: str) -> bool:
    """Routes that bound their own bodies: dataset uploads stream to disk (operations.receive_dataset), job creation
    reads its spec up to jobspec.MAX_SPEC_JSON and answers 413 itself."""
    return not_json(method, path) or (method, path) == ("POST", f"{PREFIX}/jobs")


def create_app(ctx: HttpContext) -> FastAPI:
    app = FastAPI(
        title="TensorFleet controller",
        version=AGENT_VERSION,
        description=DESCRIPTION,
        openapi_url=OPENAPI_URL,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.context = ctx
    app.add_middleware(JsonBodies, not_json=not_json)
    app.add_middleware(BodyLimit, limit=MAX_BODY, streams_itself=streams_itself)
    app.add_middleware(TokenGate, ctx=ctx, is_open=is_open)  # added last, runs first: no body read before it
    problems.install(app)
    protected = [Depends(require_token)]
    unauthorized = problems.error_responses(401, 403)  # 403: the caller's role or the job's owner (issue 24)
    for module in (jobs, events, artifacts, agents, models, datasets, team, quotas):
        app.include_router(module.router, prefix=PREFIX, dependencies=protected, responses=unauthorized)

    generated = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document (made once, from the routes), with the error responses as the handlers send them."""
        if not getattr(app.state, "openapi_documented", False):
            problems.document(generated())
            app.state.openapi_documented = True
        return generated()

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/health", tags=["health"], response_model=Health)
    async def health() -> Health:
        """Open to probes and load balancers: the controller is up and serving."""
        return Health(status="ok", version=AGENT_VERSION)

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title="TensorFleet API",
            swagger_js_url=f"{DOCS_URL}/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_URL}/assets/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_URL}/assets/favicon-32x32.png",
        )

    @app.get(DOCS_URL + "/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        if name not in _ASSET_NAMES:
            raise HTTPException(404, f"no docs asset {name!r}")
        return FileResponse(str(_ASSETS / name))

    return app
