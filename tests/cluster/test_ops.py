"""Operations with Redis (durasync/ops.py, durasync/streams/registry.py): ``/readyz`` follows
the test's own Redis going away and coming back, the loss is counted and logged, and the
``__registry__`` stream gets one event per creation and deletion with two nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from durable_streams import astream

from helpers import ServerProcess
from opsutil import scrape, value, wait_for
from redisproc import RedisServer

from .conftest import start_node, stop_node

JSON = {"content-type": "application/json"}


def ready(node: ServerProcess) -> int:
    return httpx.get(node.url + "/readyz", timeout=5).status_code


def test_readyz_follows_redis(redis_server: RedisServer) -> None:
    node = start_node(redis_server.url, "--log-level", "info")
    try:
        wait_for(lambda: ready(node) == 200)
        assert httpx.get(node.url + "/readyz", timeout=5).json() == {"status": "ready"}
        redis_server.stop()
        wait_for(lambda: ready(node) == 503)
        answer = httpx.get(node.url + "/readyz", timeout=5).json()
        assert answer == {"status": "store_unavailable"}
        assert httpx.get(node.url + "/healthz", timeout=5).status_code == 200  # still alive
        samples = scrape(node.url)
        assert value(samples, "durasync_store_available") == 0
        assert value(samples, "durasync_store_unavailable_events_total") == 1
        redis_server.start()
        wait_for(lambda: ready(node) == 200, timeout=15)
        assert value(scrape(node.url), "durasync_store_available") == 1
    finally:
        stop_node(node)
    output = "".join(node.output)
    assert "lost" in output and "regained" in output


@pytest.fixture
def registry_cluster(redis_server: RedisServer) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    a = start_node(redis_server.url, "--registry-stream")
    try:
        b = start_node(redis_server.url, "--registry-stream")
    except BaseException:
        stop_node(a)
        raise
    try:
        yield a, b
    finally:
        try:
            stop_node(b)
        finally:
            stop_node(a)


async def test_registry_once_per_event_across_two_nodes(
    registry_cluster: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = registry_cluster
    got: list[Any] = []

    async def tail() -> None:
        async with astream(
            f"{b.url}/v1/stream/__registry__",
            offset="-1",
            live="long-poll",  # type: ignore[arg-type]
            timeout=10.0,
        ) as res:
            async for item in res.iter_json():
                got.append(item)
                if len(got) >= 4:
                    return

    reader = asyncio.create_task(tail())
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.put(f"{a.url}/v1/stream/c/one", headers=JSON)).status_code == 201
        assert (await client.put(f"{b.url}/v1/stream/c/one", headers=JSON)).status_code == 200
        assert (await client.put(f"{b.url}/v1/stream/c/two", headers=JSON)).status_code == 201
        assert (await client.delete(f"{b.url}/v1/stream/c/one")).status_code == 204
        assert (await client.delete(f"{a.url}/v1/stream/c/two")).status_code == 204
        async with asyncio.timeout(20):
            await reader
        expected = [
            ("insert", "c/one"),
            ("insert", "c/two"),
            ("delete", "c/one"),
            ("delete", "c/two"),
        ]
        assert [(e["headers"]["operation"], e["key"]) for e in got] == expected
        # Both nodes serve the same registry, and nothing beyond these four events.
        for node in (a, b):
            whole = (await client.get(f"{node.url}/v1/stream/__registry__?offset=-1")).json()
            assert [(e["headers"]["operation"], e["key"]) for e in whole] == expected
