"""tests/routeproxy.py itself: routing by method, header pass-through, prompt streaming.

Two independent memory-store nodes, so where a request went is visible: a stream created
through the proxy exists on the write node only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from helpers import ServerProcess, eventually, start_server
from routeproxy import RouteProxy

from .conftest import live_count


@pytest.fixture
def two_memory_nodes() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    a = start_server("--port", "0", "--memory", "--long-poll-timeout", "5")
    try:
        b = start_server("--port", "0", "--memory", "--long-poll-timeout", "5")
        try:
            yield a, b
        finally:
            assert b.stop() == 0
    finally:
        assert a.stop() == 0


@pytest.mark.timeout(60)
async def test_writes_go_to_a_reads_to_b_headers_pass_through(
    two_memory_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_memory_nodes
    with RouteProxy(a.url, b.url) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
            r = await client.put(
                "/v1/stream/rp", content=b"x", headers={"content-type": "text/plain"}
            )
            assert r.status_code == 201
            # Host passed through: the node built Location from the proxy's address.
            assert r.headers["location"] == f"{proxy.url}/v1/stream/rp"
            # Exactly one Date/Server header: the node's, not the proxy's as well.
            assert len(r.headers.get_list("date")) == 1
            assert (await client.get("/v1/stream/rp")).status_code == 404  # B has no such stream
            assert (await client.head("/v1/stream/rp")).status_code == 404
            direct = await client.get(f"{a.url}/v1/stream/rp", params={"offset": "-1"})
            assert direct.content == b"x"
            # Request headers reach the upstream unchanged (a bad offset is B's 400).
            r = await client.get("/v1/stream/rp", params={"offset": "garbage"})
            assert r.status_code in (400, 404)
        assert proxy.app.requests == {"write": 1, "read": 3}


@pytest.mark.timeout(60)
async def test_sse_streams_through_promptly_and_disconnect_ends_upstream(
    two_memory_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, _ = two_memory_nodes
    with RouteProxy(a.url, a.url) as proxy:  # both routes to A: live reads see A's appends
        async with httpx.AsyncClient(timeout=10) as client:
            url = f"{proxy.url}/v1/stream/rp-sse"
            r = await client.put(url, headers={"content-type": "text/plain"})
            assert r.status_code == 201
            async with client.stream("GET", url, params={"offset": "-1", "live": "sse"}) as sse:
                lines = sse.aiter_lines()
                await eventually(lambda: _live(client, a))
                await client.post(url, content=b"hello", headers={"content-type": "text/plain"})
                sent = time.monotonic()
                async with asyncio.timeout(5):
                    while (line := await anext(lines)) != "data:hello":
                        pass
                # Forwarded as it arrived, not when the (minutes-long) SSE response ends.
                assert time.monotonic() - sent < 1.0, line
            # The client left: the proxy ends its upstream SSE request too.
            await eventually(lambda: _none_live(client, a), timeout=10)


async def _live(client: httpx.AsyncClient, node: ServerProcess) -> bool:
    return await live_count(client, node) >= 1


async def _none_live(client: httpx.AsyncClient, node: ServerProcess) -> bool:
    return await live_count(client, node) == 0
