"""Plumbing of the browser-client tests: pages of their own origin that import the durasync
bundle, and an in-process test server (reliable-session and plain WebSocket endpoints) on a free
loopback port. Chromium itself and the ``browser`` fixture are shared by every test directory
(tests/browsers.py, tests/conftest.py); every page and server is closed by its fixture, also
when a test fails.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from playwright.async_api import Browser, Page
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from browsers import watch_errors
from durasync.endpoints.reliable import ReliableConnection, ReliableHub

from .jsbuild import BUNDLE, ensure_built

TOKEN = "s3cret"


async def open_page(
    browser: Browser, page_url: str, bundle_url: str, extra: dict[str, str] | None = None
) -> Page:
    """Open ``page_url`` (a real loopback server: Chromium's local-network-access rules treat
    intercepted pages as public) and import the bundle as ``window.D``.

    ``extra`` maps paths under the page's origin to JS module sources (e.g. another bundle),
    answered by interception. Console and page errors are collected in ``page.errors``.
    """
    context = await browser.new_context()
    page = await context.new_page()
    watch_errors(page)
    origin = page_url.split("/", 3)
    base = "/".join(origin[:3])
    for path, source in (extra or {}).items():
        await page.route(base + path, _module_handler(source))
    await page.goto(page_url)
    await page.evaluate("async (u) => { window.D = await import(u); }", bundle_url)
    return page


def _module_handler(source: str) -> Any:
    async def serve(route: Any) -> None:
        await route.fulfill(status=200, body=source, headers={"content-type": "text/javascript"})

    return serve


async def close_page(page: Page) -> None:
    await page.context.close()


def bundle_response() -> Response:
    ensure_built()
    return Response(BUNDLE.read_bytes(), media_type="text/javascript")


def reliable_app(hub: ReliableHub) -> Starlette:
    """``/echo`` (reliable session echo), ``/plain`` (plain echo), ``/garbage`` (a seq gap),
    ``/busy`` and ``/denied`` (a session ``error`` frame, transient or permanent),
    ``/secure`` (refused before accept, i.e. HTTP 403, without ``?token=TOKEN``),
    ``/auth-check`` (HTTP 401 without ``Authorization: Bearer TOKEN``), ``/durasync.mjs`` and
    ``/page.html`` (an empty test page)."""

    async def echo(websocket: WebSocket) -> None:
        async def handler(conn: ReliableConnection) -> None:
            async for message in conn:
                await conn.send(message)

        await hub.serve(websocket, handler)

    async def secure(websocket: WebSocket) -> None:
        if websocket.query_params.get("token") != TOKEN:
            await websocket.close(4403)  # before accept: HTTP 403
            return
        await echo(websocket)

    async def plain(websocket: WebSocket) -> None:
        await websocket.accept()
        with contextlib.suppress(Exception):
            while True:
                msg = await websocket.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                if msg.get("text") is not None:
                    await websocket.send_text(msg["text"])
                else:
                    await websocket.send_bytes(msg["bytes"])

    async def garbage(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive()  # the client's hello
        await websocket.send_text('{"t":"welcome","session":"s","resumed":false}')
        await websocket.send_text('{"t":"msg","seq":7,"text":"gap"}')  # seq gap: violation
        with contextlib.suppress(Exception):
            await websocket.receive()

    async def refuse(websocket: WebSocket, permanent: bool) -> None:
        # what ReliableHub does when its registry is full (busy, 1013), or a permanent refusal
        await websocket.accept()
        await websocket.receive()  # the client's hello
        code = "busy" if not permanent else "denied"
        frame = {"t": "error", "code": code, "message": "try later", "permanent": permanent}
        await websocket.send_text(json.dumps(frame))
        await websocket.close(1013 if not permanent else 1008)

    async def busy(websocket: WebSocket) -> None:
        await refuse(websocket, False)

    async def denied(websocket: WebSocket) -> None:
        await refuse(websocket, True)

    async def auth_check(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return PlainTextResponse("no", status_code=401)
        return PlainTextResponse("ok")

    async def bundle(request: Request) -> Response:
        return bundle_response()

    async def page(request: Request) -> Response:
        return HTMLResponse(
            '<!doctype html><link rel="icon" href="data:,"><title>durasync test page</title>'
        )

    return Starlette(
        routes=[
            WebSocketRoute("/echo", echo),
            WebSocketRoute("/secure", secure),
            WebSocketRoute("/plain", plain),
            WebSocketRoute("/garbage", garbage),
            WebSocketRoute("/busy", busy),
            WebSocketRoute("/denied", denied),
            Route("/auth-check", auth_check),
            Route("/durasync.mjs", bundle),
            Route("/page.html", page),
        ],
        middleware=[Middleware(CORSMiddleware, allow_origins=["*"], allow_headers=["*"])],
    )
