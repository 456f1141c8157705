"""RFC 9457 ``application/problem+json`` responses for every error path.

Problem ``type`` URIs are ``urn:pi-opt:problem:<code>``; the same ``code`` is also sent
as an extension member so clients can switch on it. Internals (tracebacks, paths) never
reach a response: the catch-all handler logs them and answers a generic 500.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from pi_opt.errors import PiOptError

log = logging.getLogger("service")
MEDIA_TYPE = "application/problem+json"

#: HTTP status per ``PiOptError.code`` (default 422: the request was understood but unusable).
STATUS_BY_CODE: dict[str, int] = {
    "unsafe-format": 415,
    "cancelled": 409,
}


class Problem(BaseModel):
    """Problem details (RFC 9457) plus ``code`` and, for validation errors, ``errors``."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    code: str | None = None
    errors: list[dict[str, Any]] | None = None


class ProblemError(Exception):
    """Raise anywhere in the service to answer with a problem document."""

    def __init__(self, status: int, code: str, detail: str | None = None, *,
                 title: str | None = None, headers: dict[str, str] | None = None,
                 **extensions: Any) -> None:
        super().__init__(detail or code)
        self.status, self.code, self.detail = status, code, detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extensions = extensions

    @classmethod
    def from_problem(cls, problem: dict[str, Any]) -> ProblemError:
        """Rebuild from ``to_problem()`` output (e.g. sent back by a helper process)."""
        base = {"type", "title", "status", "detail", "instance", "code"}
        return cls(int(problem["status"]), str(problem.get("code") or "error"),
                   problem.get("detail"), title=problem.get("title"),
                   **{k: v for k, v in problem.items() if k not in base})

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """RFC 9457 problem+json body (type, title, status, code, detail, ...), paths scrubbed."""
        body: dict[str, Any] = {"type": f"urn:pi-opt:problem:{self.code}", "title": self.title,
                                "status": self.status, "code": self.code}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(jsonable_encoder(self.extensions))
        return scrub_paths(body)  # type: ignore[no-any-return]


#: An absolute filesystem path (API paths under ``/v1/`` are not touched).
_ABS_PATH = re.compile(r"(?<![\w/.:~-])/(?!v1/)(?:[^\s'\"/:,;()\[\]{}]+/)+"
                       r"([^\s'\"/:,;()\[\]{}]*)")


def scrub_paths(value: Any) -> Any:
    """``value`` with absolute server paths reduced to their last component (strings,
    recursively in dicts and lists): responses never reveal the server's layout."""
    if isinstance(value, str):
        return _ABS_PATH.sub(lambda m: m.group(1) or ".", value)
    if isinstance(value, dict):
        return {k: v if k in ("type", "instance") else scrub_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_paths(v) for v in value]
    return value


def from_pi_opt(exc: PiOptError) -> ProblemError:
    """The problem for a pi_opt error: its code, with the status mapped from it (else 422)."""
    return ProblemError(STATUS_BY_CODE.get(exc.code, 422), exc.code, exc.message,
                        title=type(exc).__name__)


def validation_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic errors reduced to JSON-safe ``{loc, msg, type}`` items."""
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))} for e in errors]


def from_validation(exc: ValidationError, *, prefix: tuple[str, ...] = ()) -> ProblemError:
    """422 ``validation-error`` problem listing pydantic's errors (``loc`` under ``prefix``)."""
    errs = validation_errors(exc.errors(include_url=False))
    for e in errs:
        e["loc"] = [*prefix, *e["loc"]]
    return ProblemError(422, "validation-error", "the request body failed validation",
                        title="Unprocessable Content", errors=errs)


def problem_response(problem: dict[str, Any], headers: dict[str, str] | None = None
                     ) -> JSONResponse:
    """``application/problem+json`` response with the problem's status."""
    return JSONResponse(problem, status_code=problem["status"], headers=headers,
                        media_type=MEDIA_TYPE)


def allowed_methods(app: FastAPI, scope: Any) -> list[str]:
    """Every method some route accepts for the request's path (the 405 ``Allow`` header)."""
    allowed = set()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in app.router.routes):
            allowed.add(method)
    if "GET" in allowed:
        allowed.add("HEAD")
    return sorted(allowed)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.to_problem(request.url.path), exc.headers)

    @app.exception_handler(PiOptError)
    async def _pi_opt(request: Request, exc: PiOptError) -> JSONResponse:
        return problem_response(from_pi_opt(exc).to_problem(request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
        code = phrase.lower().replace(" ", "-").replace("'", "")
        err = ProblemError(exc.status_code, code, detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        return problem_response(err.to_problem(request.url.path), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = validation_errors(list(exc.errors()))
        if any(e["type"] == "json_invalid" for e in errs):
            err = ProblemError(400, "malformed-json", "the request body is not valid JSON",
                               errors=errs)
        else:
            err = ProblemError(422, "validation-error", "the request failed validation",
                               title="Unprocessable Content", errors=errs)
        return problem_response(err.to_problem(request.url.path))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        err = ProblemError(500, "internal-error",
                           "an unexpected error occurred; it has been logged")
        return problem_response(err.to_problem(request.url.path))
