"""Serves the browser client bundle (``js/``, built by ``make js-build``) at ``/js/...``.

``GET|HEAD /js/durasync.mjs`` (one ES module: the CRDT replica, ``StreamClient``,
``ResilientWebSocket``; docs/browser.md) and ``/js/durasync.mjs.map``. The files live in the
package (``durasync/static/``, shipped in the wheel); a checkout that was not built answers
404 ``BUNDLE_NOT_BUILT`` saying how to build it. Responses carry an ``ETag`` and
``Cache-Control: no-cache`` (revalidate: a new version is picked up at once) and, like every
response, the CORS headers of the server, so a page of another origin can import the module.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from durasync.httpwire import error_body

__all__ = ["BUNDLE_DIR", "bundle_routes", "revalidated_file"]

#: Where ``js/build.mjs`` puts the bundle inside the package.
BUNDLE_DIR: Final = Path(__file__).parent / "static"
_FILES: Final = {
    "durasync.mjs": "text/javascript; charset=utf-8",
    "durasync.mjs.map": "application/json",
}


def revalidated_file(request: Request, body: bytes, media_type: str) -> Response:
    """A packaged file's answer: ``ETag`` (a digest of ``body``) with ``Cache-Control:
    no-cache``, so browsers revalidate and pick up a new version at once; 304 on a matching
    ``If-None-Match``; headers and ``Content-Length`` only for HEAD."""
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return Response(status_code=200, headers=headers, media_type=media_type)
    return Response(body, headers=headers, media_type=media_type)


async def _serve(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = _FILES.get(name)
    if media_type is None:
        return Response(
            error_body("NOT_FOUND", f"no file /js/{name}"), 404, media_type="application/json"
        )
    try:
        body = (BUNDLE_DIR / name).read_bytes()
    except FileNotFoundError:
        return Response(
            error_body("BUNDLE_NOT_BUILT", "the browser bundle is not built: run `make js-build`"),
            404,
            media_type="application/json",
        )
    return revalidated_file(request, body, media_type)


def bundle_routes() -> list[BaseRoute]:
    """The ``/js/{name}`` route (GET and HEAD)."""
    return [Route("/js/{name}", _serve, methods=["GET", "HEAD"])]
