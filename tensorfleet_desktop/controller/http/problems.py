"""Errors as RFC 9457 problem documents (application/problem+json). A core error's kind (failures.py) picks the
status, so HTTP and gRPC say the same thing about the same error; the detail is the message the CLI prints."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.routing import Match

from tensorfleet_desktop.controller.failures import CLASSIFIED, Kind, classify

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS = {
    Kind.INVALID: 422,
    Kind.NOT_FOUND: 404,
    Kind.CONFLICT: 409,
    Kind.DATA_LOSS: 500,
    Kind.FULL: 507,
    Kind.INTERNAL: 500,
    Kind.DENIED: 403,
    Kind.UNAUTHENTICATED: 401,
}
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    411: "Length required",
    413: "Content too large",
    415: "Unsupported media type",
    416: "Range not satisfiable",
    422: "Unprocessable content",
    500: "Internal error",
    507: "Insufficient storage",
}


class FieldError(BaseModel):
    field: str = Field(description="the request field at fault, dotted (`body.hyperparameters.C`, `query.limit`)")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(description="a URI naming the kind of problem")
    title: str
    status: int
    detail: str = Field(description="what went wrong, in the words the CLI uses")
    instance: str = Field(default="", description="the request path")
    field: str = Field(default="", description="the request field at fault, when one is")
    errors: list[FieldError] = Field(default_factory=list, description="each field at fault (validation)")


def problem(
    status: int,
    detail: str,
    request: Request | None = None,
    *,
    kind: str = "",
    field: str = "",
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=f"urn:tensorfleet:problem:{kind or status}",
        title=TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        instance=request.url.path if request is not None else "",
        field=field,
        errors=errors or [],
    )
    return JSONResponse(body.model_dump(), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each status it can answer with, as a problem document (OpenAPI lists them,
    so schema-checking clients know the shape of every error)."""
    return {
        status: {"model": Problem, "description": TITLES.get(status, "Error"), "content": {PROBLEM_JSON: {}}}
        for status in statuses
    }


PROBLEM_REF = "#/components/schemas/Problem"
PLAIN_TEXT = "text/plain"  # uvicorn's answer to a malformed request ("Invalid HTTP request received.")
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")  # FastAPI's 422 body, which install() replaces


def document(openapi: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI document say what the handlers answer, so schema-checking clients (schemathesis) can hold
    the API to it: every error status of every operation is a problem document under application/problem+json (a
    `model=` response lands under application/json, and FastAPI's own 422 names HTTPValidationError, which
    install() never sends), every operation answers 400 (a JSON body that is not JSON, as a problem document; a
    malformed HTTP request, a Content-Length that is no number, refused by the HTTP server before any route, as plain
    text), 413 (limits.BodyLimit refuses a body past its limit whatever the route) and every POST, PUT and PATCH
    415 (limits.JsonBodies refuses a body that says it is not JSON)."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    if "Problem" not in schemas:  # no route named a problem response: add the model and what it refers to
        _, defs = models_json_schema([(Problem, "serialization")], ref_template="#/components/schemas/{model}")
        schemas.update(defs.get("$defs", {}))
    problem_content = {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}
    for item in openapi.get("paths", {}).values():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            responses.setdefault("400", {"description": TITLES[400]})
            responses.setdefault("413", {"description": TITLES[413]})
            if method in ("post", "put", "patch"):
                responses.setdefault("415", {"description": TITLES[415]})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = dict(problem_content)
            responses["400"]["content"][PLAIN_TEXT] = {"schema": {"type": "string"}}  # the HTTP server's own
    for name in _FASTAPI_VALIDATION:  # HTTPValidationError first: it is what refers to ValidationError
        others = {key: value for key, value in schemas.items() if key != name}
        if f'"#/components/schemas/{name}"' not in json.dumps([openapi.get("paths"), others]):
            schemas.pop(name, None)
    return openapi


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route of the app answers on this request's path."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def install(app: FastAPI) -> None:
    """Every error the app can raise, as a problem document: the core's (by kind), FastAPI's request validation
    (422 naming each field; 400 for a body that is not JSON at all) and Starlette's own (404 route, 405)."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [FieldError(field=_field_name(e.get("loc", ())), message=str(e.get("msg", ""))) for e in exc.errors()]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            detail = "the request body is not valid JSON"
            return problem(400, detail, request, kind="invalid", field="body", errors=errors)
        first = errors[0] if errors else FieldError(field="", message="invalid request")
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        return problem(422, detail or first.message, request, kind="invalid", field=first.field, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and "endpoint" not in request.scope:  # no route has this path
            detail = f"no route {request.url.path} (the API is under /api/v1; its routes: /api/v1/docs)"
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            # Starlette's Allow names the methods of the first route with this path only (GET and POST /jobs are
            # two routes): ask every route about every method instead
            allowed = ", ".join(_allowed_methods(request)) or headers.get("allow", "")
            headers = {key: value for key, value in headers.items() if key.lower() != "allow"} | {"Allow": allowed}
            detail = f"{request.method} is not allowed on {request.url.path} (allowed: {allowed})"
        return problem(exc.status_code, detail, request, headers=headers)

    async def core_error(request: Request, exc: Exception) -> JSONResponse:
        failure = classify(exc)  # logs an internal error with its traceback
        field = failure.field.removeprefix("header.")
        return problem(STATUS[failure.kind], failure.message, request, kind=failure.kind.value, field=field)

    # The core's errors by class: Starlette answers those in its exception middleware and keeps the connection.
    # A handler for Exception alone would run in ServerErrorMiddleware, which re-raises after answering: every 404
    # or 409 would log a traceback and close a keep-alive connection under the client's next request.
    for kind in (*CLASSIFIED, OSError):  # OSError: a full disk (anything else is classified internal)
        app.add_exception_handler(kind, core_error)
    app.add_exception_handler(Exception, core_error)  # the rest: a 500 problem, logged with its traceback
