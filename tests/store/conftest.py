"""Backends under test: every LogStore implementation runs the same contract.

The ``redis`` backend runs against one real ``redis-server`` per test session
(tests/redisproc.py: loopback, free port, AOF ``appendfsync always``), flushed
before each test.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from durasync.store import EmbeddedStore, LogStore, MemoryStore
from durasync.store.redis import RedisStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redisproc import RedisServer

BACKENDS = ["memory", "embedded", "redis"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (stopped by PID at the end)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, emptied (FLUSHALL) and running."""
    redis_server.start()  # a test may have killed it
    client = redis_sync.Redis.from_url(redis_server.url, socket_timeout=5)
    try:
        client.flushall()
    finally:
        client.close()
    url: str = redis_server.url
    return url


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogStore]:
    backend: LogStore
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "embedded":
        backend = EmbeddedStore(tmp_path / "data")
    else:
        backend = RedisStore(request.getfixturevalue("redis_url"))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
