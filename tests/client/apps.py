"""In-process test servers: a Starlette app on uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from durasync.endpoints.reliable import ReliableConnection, ReliableHub


@contextlib.asynccontextmanager
async def running(app: Starlette, port: int = 0) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1; yield the port; stop the server at exit."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ws="websockets-sansio",
        ws_ping_interval=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        server.force_exit = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await task


def echo_app(hub: ReliableHub, *, auth_token: str | None = None) -> Starlette:
    """/echo (reliable session echo), /plain (plain echo), /broadcast (fan-out)."""

    async def echo(websocket: WebSocket) -> None:
        authorized = websocket.headers.get("authorization") == f"Bearer {auth_token}"
        if auth_token is not None and not authorized:
            await websocket.close(4403)  # before accept: HTTP 403
            return

        async def handler(conn: ReliableConnection) -> None:
            async for message in conn:
                await conn.send(message)

        await hub.serve(websocket, handler)

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

    async def broadcast(websocket: WebSocket) -> None:
        async def handler(conn: ReliableConnection) -> None:
            async for message in conn:
                hub.broadcast(message)

        await hub.serve(websocket, handler)

    async def garbage(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive()  # the client's hello
        await websocket.send_text('{"t":"welcome","session":"s","resumed":false}')
        await websocket.send_text('{"t":"msg","seq":7,"text":"gap"}')  # seq gap: violation
        with contextlib.suppress(Exception):
            await websocket.receive()

    async def health(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            WebSocketRoute("/echo", echo),
            WebSocketRoute("/plain", plain),
            WebSocketRoute("/broadcast", broadcast),
            WebSocketRoute("/garbage", garbage),
            Route("/health", health),
        ]
    )
