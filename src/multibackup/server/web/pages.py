"""Serves the dashboard: ``/`` is index.html, ``/static/...`` its scripts, styles and icon.

The page is a single HTML document with hash routing (``#/plans/3``), so the server only ever
serves ``/``; everything else the dashboard shows comes from the REST API under ``/api/v1``.

Use from the application factory::

    app.include_router(router)
    mount_static(app)
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Only this origin's scripts, styles, images and API; no inline code, no framing.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
def index() -> HTMLResponse:
    """The dashboard's only HTML page (read on each request: it is small)."""
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    headers = dict(SECURITY_HEADERS)
    headers["Cache-Control"] = "no-cache"
    return HTMLResponse(html, headers=headers)


class _StaticFiles(StaticFiles):
    """StaticFiles whose answers carry the same security headers as the page."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        # Scripts change with the server version and there is no build step to hash names:
        # let the browser revalidate (ETag / Last-Modified make that cheap).
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


def mount_static(app: FastAPI) -> None:
    """Serve the dashboard's static files under ``/static``."""
    app.mount("/static", _StaticFiles(directory=STATIC_DIR), name="static")
