"""Fixtures of the replication tests: server processes stopped by PID, also on failure."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from durasync.store import EmbeddedStore, LogStore, MemoryStore
from durasync.store.redis import RedisStore
from redisproc import RedisServer

from .procs import Serve


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session, stopped by PID at the end."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's redis-server, emptied."""
    redis_server.start()
    client = redis_sync.Redis.from_url(redis_server.url, socket_timeout=5)
    try:
        client.flushall()
    finally:
        client.close()
    url: str = redis_server.url
    return url


@pytest.fixture(params=["memory", "embedded", "redis"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogStore]:
    """A store of each backend, not opened (the app's lifespan opens it)."""
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "embedded":
        yield EmbeddedStore(tmp_path / "store")
    else:
        yield RedisStore(request.getfixturevalue("redis_url"))


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    """``serve(name, replicate=..., extra=...)`` starts a server with data in tmp_path/name."""
    started: list[Serve] = []

    def start(name: str, **kwargs: object) -> Serve:
        server = Serve(tmp_path / name, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()
