"""A durasync app served by uvicorn inside the test's event loop (loopback, free port).

For tests that count what the server does (calls, bytes) rather than time it: the server runs
in the test's process, so its functions can be wrapped and its objects inspected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` (lifespan on: the store opens and closes) and yield its ``http://`` URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
        ws_ping_interval=None,
        ws_max_size=64 << 20,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await task
        if not task.done():
            task.cancel()
