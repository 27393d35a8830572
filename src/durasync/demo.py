"""Serves the rooms demo (a shared scene, a shared note, presence cursors; docs/browser.md
"The demo") at ``/demo/``.

``GET|HEAD /demo/`` is the page (``/demo/?room=NAME`` picks the room; ``/demo`` redirects
there, keeping the query) and ``/demo/{demo.js,demo.css}`` its files, from the package
(``durasync/static/demo/``, shipped in the wheel). The page imports the browser bundle from
``/js/durasync.mjs`` (:mod:`durasync.browser_bundle`). Responses carry an ``ETag`` and
``Cache-Control: no-cache``; nothing else under ``/demo/`` exists (404 ``NOT_FOUND``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from durasync.browser_bundle import revalidated_file
from durasync.httpwire import error_body

__all__ = ["DEMO_DIR", "demo_routes"]

#: The demo's files inside the package.
DEMO_DIR: Final = Path(__file__).parent / "static" / "demo"
_FILES: Final = {
    "index.html": "text/html; charset=utf-8",
    "demo.js": "text/javascript; charset=utf-8",
    "demo.css": "text/css; charset=utf-8",
}


async def _serve(request: Request) -> Response:
    name = request.path_params.get("name") or "index.html"
    media_type = _FILES.get(name)
    if media_type is None:
        return Response(
            error_body("NOT_FOUND", f"no file /demo/{name}"), 404, media_type="application/json"
        )
    body = (DEMO_DIR / name).read_bytes()
    return revalidated_file(request, body, media_type)


async def _redirect(request: Request) -> Response:
    query = request.url.query
    return RedirectResponse("/demo/" + ("?" + query if query else ""), status_code=308)


def demo_routes() -> list[BaseRoute]:
    """``/demo`` (redirect), ``/demo/`` and ``/demo/{name}`` (GET and HEAD)."""
    return [
        Route("/demo", _redirect, methods=["GET", "HEAD"]),
        Route("/demo/", _serve, methods=["GET", "HEAD"]),
        Route("/demo/{name}", _serve, methods=["GET", "HEAD"]),
    ]
