"""Tests of the fault-injecting proxy test utility (tests/faultproxy.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from faultproxy import FaultPlan, FaultProxy
from helpers import eventually


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def roundtrip(port: int, payload: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(payload)
        await w.drain()
        return await r.readexactly(len(payload))
    finally:
        w.close()


async def test_transparent_without_faults(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        data = bytes(range(256)) * 1000
        assert await roundtrip(proxy.port, data) == data
        assert proxy.stats.accepted == 1 and proxy.stats.bytes_forwarded == 2 * len(data)


async def test_delay_keeps_order_and_slows_down(echo_port: int) -> None:
    plan = FaultPlan(max_delay=0.02, max_chunk=1000)
    async with FaultProxy("127.0.0.1", echo_port, seed=3, plan=plan) as proxy:
        data = bytes(i % 251 for i in range(20_000))
        t0 = time.monotonic()
        assert await roundtrip(proxy.port, data) == data  # order preserved
        assert time.monotonic() - t0 > 0.05


async def test_random_cuts_are_seeded_and_reproducible(echo_port: int) -> None:
    async def run(seed: int) -> list[bool]:
        plan = FaultPlan(cut_rate=0.3, max_chunk=100)
        outcomes = []
        async with FaultProxy("127.0.0.1", echo_port, seed=seed, plan=plan) as proxy:
            for _ in range(10):
                try:
                    async with asyncio.timeout(2):
                        await roundtrip(proxy.port, b"x" * 100)
                    outcomes.append(True)
                except (ConnectionError, asyncio.IncompleteReadError):
                    outcomes.append(False)
            assert proxy.stats.cut == outcomes.count(False)
        return outcomes

    first = await run(11)
    assert first == await run(11)
    assert True in first and False in first


async def test_refuse_for_then_accept_again(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        proxy.refuse_for(0.3)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await roundtrip(proxy.port, b"hi")
        assert proxy.stats.refused == 1
        await asyncio.sleep(0.35)  # the refusal window itself is time-based
        assert await roundtrip(proxy.port, b"hi") == b"hi"


async def test_stall_and_cut_all(echo_port: int) -> None:
    plan = FaultPlan(stall_rate=1.0, stall=0.1)
    async with FaultProxy("127.0.0.1", echo_port, plan=plan) as proxy:
        t0 = time.monotonic()
        assert await roundtrip(proxy.port, b"s") == b"s"
        assert time.monotonic() - t0 >= 0.2 and proxy.stats.stalled == 2
        await eventually(lambda: proxy.open_connections == 0)
        r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
        await eventually(lambda: proxy.open_connections == 1)
        assert proxy.cut_all() == 1
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            async with asyncio.timeout(2):
                await r.readexactly(1)
        w.close()


async def test_connection_bound(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port, max_connections=1) as proxy:
        r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
        w.write(b"a")
        await r.readexactly(1)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await roundtrip(proxy.port, b"b")
        assert proxy.stats.refused == 1
        w.close()


def test_plan_validation() -> None:
    with pytest.raises(ValueError):
        FaultPlan(cut_rate=2)
    with pytest.raises(ValueError):
        FaultPlan(max_chunk=0)
