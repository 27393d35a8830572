"""Backends under test: every LogStore implementation runs the same contract.

The ``redis`` backend runs against one real ``redis-server`` per test session
(tests/redisproc.py: loopback, free port, AOF ``appendfsync always``), flushed
before each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from durasync.store import EmbeddedStore, LogStore, MemoryStore
from durasync.store.redis import RedisStore
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
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> LogStore:
    """A backend of each kind, not opened yet."""
    if request.param == "memory":
        return MemoryStore()
    if request.param == "embedded":
        return EmbeddedStore(tmp_path / "data")
    return RedisStore(request.getfixturevalue("redis_url"))


@pytest.fixture
async def store(new_store: LogStore) -> AsyncIterator[LogStore]:
    """An opened backend of each kind, closed after the test."""
    async with new_store as opened:
        yield opened


def waiting(store: LogStore) -> int:
    """Live waits parked in ``store`` right now (its notifier's or its tail's count)."""
    if isinstance(store, RedisStore):
        return store._tail.parked
    assert isinstance(store, MemoryStore | EmbeddedStore)
    return store._notifier.waiters
