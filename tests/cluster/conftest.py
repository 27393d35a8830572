"""Fixtures of the cluster tests: a real redis-server and two ``durasync serve`` nodes.

- ``redis_server``: ``redis-server`` on a free loopback port, AOF ``appendfsync always``, its
  own directory under ``tmp_path`` (tests/redisproc.py); stopped by PID at the end.
- ``cluster``: two nodes (``durasync serve --redis URL --long-poll-timeout 0.5``) on free ports
  sharing that Redis. Each node is stopped with SIGTERM and must exit 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from helpers import ServerProcess
from redisproc import RedisServer


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


async def live_count(client: httpx.AsyncClient, node: ServerProcess) -> int:
    """Open long-polls / SSE streams on ``node`` (its ``/healthz`` ``live`` count)."""
    body = (await client.get(f"{node.url}/healthz")).json()
    return int(body.get("live", 0))
