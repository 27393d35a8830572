"""Fixtures of the cluster tests: a real redis-server and two ``durasync serve`` nodes.

- ``redis_server``: ``redis-server`` on a free loopback port, AOF ``appendfsync always``, its
  own directory under ``tmp_path`` (tests/redisproc.py); stopped by PID at the end.
- ``cluster``: two nodes (``durasync serve --redis URL --long-poll-timeout 0.5``) on free ports
  sharing that Redis. Each node is stopped with SIGTERM and must exit 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from redisproc import RedisServer
from streams.serverproc import ServerProcess


@dataclass
class Cluster:
    """Redis plus node ``a`` (writes) and node ``b`` (reads) of a two-node deployment."""

    redis: RedisServer
    a: ServerProcess
    b: ServerProcess


def start_node(redis_url: str, *extra: str) -> ServerProcess:
    """One ``durasync serve --redis`` node on a free loopback port."""
    return ServerProcess(
        ["--port", "0", "--redis", redis_url, "--long-poll-timeout", "0.5", *extra]
    )


def stop_node(node: ServerProcess) -> None:
    code = node.stop()
    assert code == 0, "".join(node.output[-30:])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
def cluster(redis_server: RedisServer) -> Iterator[Cluster]:
    a = start_node(redis_server.url)
    try:
        b = start_node(redis_server.url)
    except BaseException:
        stop_node(a)
        raise
    try:
        yield Cluster(redis_server, a, b)
    finally:
        try:
            stop_node(b)
        finally:
            stop_node(a)


def live_readers(node: ServerProcess) -> int:
    """Open long-polls / SSE streams on ``node`` (its ``/healthz`` ``live`` count)."""
    body = httpx.get(f"{node.url}/healthz", timeout=5).json()
    return int(body.get("live", 0))


def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll ``predicate()`` until true (bounded); raise AssertionError on timeout."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")


async def eventually(
    predicate: Callable[[], Awaitable[bool] | bool], limit: float = 10.0, interval: float = 0.005
) -> None:
    """Await until ``predicate()`` (sync or async) is true; TimeoutError after ``limit`` s."""
    async with asyncio.timeout(limit):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(interval)


async def live_count(client: httpx.AsyncClient, node: ServerProcess) -> int:
    """Open long-polls / SSE streams on ``node`` (its ``/healthz`` ``live`` count)."""
    body = (await client.get(f"{node.url}/healthz")).json()
    return int(body.get("live", 0))
