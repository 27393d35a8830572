"""Fixtures for the streams tests: the ASGI app in-process, and real servers.

- ``app_client``: an ``httpx.AsyncClient`` on the ASGI app over a fresh
  :class:`MemoryStore`, with the app's lifespan running (store opened and
  closed like in production). Long-poll 0.2 s, SSE 0.5 s, body limit 64 KiB.
- ``memory_server`` / ``embedded_server``: ``durasync serve --port 0`` in a
  subprocess (memory store / ``--data`` in a temp dir), ready once it printed
  its listening line; stopped with SIGTERM, and the exit code is checked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from durasync.server import ServerSettings, create_app
from durasync.store import MemoryStore
from durasync.streams.app import StreamSettings
from helpers import ServerProcess, start_server

TEST_SETTINGS = ServerSettings(
    streams=StreamSettings(long_poll_timeout=0.2, sse_max_duration=0.5, max_body_bytes=64 * 1024)
)


@pytest.fixture
def memory_server() -> Iterator[ServerProcess]:
    server = start_server("--port", "0", "--memory", "--long-poll-timeout", "0.5")
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, "".join(server.output[-30:])


@pytest.fixture
def embedded_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(
        "--port", "0", "--data", str(tmp_path / "data"), "--long-poll-timeout", "0.5"
    )
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, "".join(server.output[-30:])


@pytest.fixture
async def app() -> AsyncIterator[Starlette]:
    application = create_app(MemoryStore(), TEST_SETTINGS)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def app_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
