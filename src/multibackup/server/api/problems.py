"""Errors as RFC 9457 problem documents: one clear line in ``detail``, field errors apart.

Another organisation's object is answered exactly like a missing one (404), so an id
reveals nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from multibackup.errors import MultibackupError
from multibackup.server.logs import log

PROBLEM = "application/problem+json"
_TITLES = {400: "Bad request", 401: "Not signed in", 403: "Forbidden", 404: "Not found",
           405: "Method not allowed", 409: "Conflict", 422: "Invalid input",
           429: "Too many requests", 500: "Server error", 503: "Unavailable"}


class Problem(Exception):
    """Raise from an endpoint to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.headers = headers or {}


def problem(status: int, detail: str, errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": _TITLES.get(status, "Error"),
                            "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def not_found(what: str) -> Problem:
    return Problem(404, f"no such {what}")


def install(app: FastAPI) -> None:
    """Route every error the API can meet to a problem document."""

    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        errors = [{"field": exc.field, "message": exc.detail}] if exc.field else None
        return problem(exc.status, exc.detail, errors, exc.headers)

    @app.exception_handler(MultibackupError)
    async def _usage(_request: Request, exc: MultibackupError) -> JSONResponse:
        field = getattr(exc, "field", None)
        errors = [{"field": field, "message": str(exc)}] if field else None
        return problem(422 if exc.exit_code == 2 else 409, str(exc), errors)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
            errors.append({"field": ".".join(loc) or "body", "message": err.get("msg", "")})
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return problem(422, f"{first['field']}: {first['message']}", errors)

    @app.exception_handler(Exception)
    async def _bug(_request: Request, exc: Exception) -> JSONResponse:
        # a bug: the type and one line in the server's log, no trace or detail to the client
        log().error("unexpected error", extra={"error_type": type(exc).__name__,
                                               "error": " ".join(str(exc).split())[:300]})
        return problem(500, "internal error: the server's log has the details")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))
