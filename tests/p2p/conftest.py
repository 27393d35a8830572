"""Fixtures of the p2p tests: a real durasync server (uvicorn on a free loopback port, in
this process, so a test can move the rendezvous clock) and rendezvous clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette

from durasync.p2p.client import RendezvousClient
from durasync.p2p.identity import Identity
from durasync.p2p.rendezvous import RendezvousSettings
from durasync.server import ServerSettings, create_app
from durasync.store import LogStore, MemoryStore


class Clock:
    """A settable Unix clock (starts at the real time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def serve(
    store: LogStore, settings: RendezvousSettings | None = None, *, auth_secret: str | None = None
) -> AsyncIterator[tuple[str, Starlette]]:
    """Run ``durasync``'s app over ``store`` on 127.0.0.1; yield (base URL, app)."""
    app = create_app(
        store,
        ServerSettings(rendezvous=settings or RendezvousSettings(), auth_secret=auth_secret),
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", app
    finally:
        app.state.begin_shutdown()
        server.should_exit = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                await task


@pytest.fixture
async def rv() -> AsyncIterator[tuple[str, Starlette, Clock]]:
    """A memory-store server whose rendezvous clock the test controls."""
    clock = Clock()
    async with serve(MemoryStore()) as (url, app):
        app.state.rendezvous.clock = clock
        yield url, app, clock


@pytest.fixture
def identity() -> Identity:
    return Identity.generate()


@contextlib.asynccontextmanager
async def client(url: str, identity: Identity | None = None) -> AsyncIterator[RendezvousClient]:
    async with RendezvousClient(url, identity=identity) as c:
        yield c
