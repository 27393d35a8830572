"""Presence shared through a real Redis: join/update/leave across nodes, expiry of a
dead node's members, cluster-wide counts. Each bus stands for one node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from durasync.protocol.room_frames import PresenceFrame
from durasync.rooms.presence import LocalPresenceBus, RedisPresenceBus, RoomPresence
from redisproc import RedisServer

TIMEOUT = 1.0


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with RedisServer(tmp_path) as server:
        yield server.url


class Recorder:
    def __init__(self) -> None:
        self.frames: list[PresenceFrame] = []
        self.changed = asyncio.Event()

    def __call__(self, frame: PresenceFrame) -> None:
        self.frames.append(frame)
        self.changed.set()

    async def next(self, timeout: float = 5.0) -> PresenceFrame:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not self.frames:
                self.changed.clear()
                await self.changed.wait()
        return self.frames.pop(0)


async def _expire_until_gone(rp: RoomPresence, client: str, limit: float) -> list[str]:
    """Run the service's periodic sweep (every 50 ms here) until ``client`` is gone."""
    loop = asyncio.get_running_loop()
    gone: list[str] = []
    async with asyncio.timeout(limit):
        while client in rp:
            gone += rp.expire(loop.time())
            await asyncio.sleep(0.05)  # the service's tick period, scaled down
    return gone


async def test_presence_crosses_nodes_and_dead_nodes_expire(redis_url: str) -> None:
    loop = asyncio.get_running_loop()
    a = RedisPresenceBus(redis_url, TIMEOUT, prefix="t1:")
    b = RedisPresenceBus(redis_url, TIMEOUT, prefix="t1:")
    await a.start()
    await b.start()
    try:
        rec_a, rec_b = Recorder(), Recorder()
        pa = await a.attach("room", rec_a)
        pb = await b.attach("room", rec_b)
        assert pa.touch("alice", loop.time()) is True
        f = await rec_b.next()
        assert (f.event, f.client, f.state) == ("join", "alice", None)
        pa.update("alice", {"cursor": [1, 2]}, loop.time())
        f = await rec_b.next()
        assert (f.event, f.client, f.state) == ("update", "alice", {"cursor": [1, 2]})
        assert pb.members() == {"alice": {"cursor": [1, 2]}}
        assert await b.counts(["room", "empty"]) == {"room": 1, "empty": 0}
        # A node that loads the room later sees who is there (seeded from the hash).
        c = RedisPresenceBus(redis_url, TIMEOUT, prefix="t1:")
        await c.start()
        try:
            rec_c = Recorder()
            pc = await c.attach("room", rec_c)
            assert pc.members() == {"alice": {"cursor": [1, 2]}}
            assert (await rec_c.next()).event == "join"
        finally:
            await c.aclose()
        # A local leave reaches the others as a leave.
        pb.touch("bob", loop.time())
        assert (await rec_a.next()).client == "bob"
        assert pb.leave("bob") is True
        f = await rec_a.next()
        assert (f.event, f.client) == ("leave", "bob")
        # Refreshes keep alice alive on b well past the timeout while a lives and she is active.
        deadline = loop.time() + 2.5 * TIMEOUT
        while loop.time() < deadline:
            pa.touch("alice", loop.time())
            assert pb.expire(loop.time()) == []
            await asyncio.sleep(0.1)
        assert "alice" in pb
        # Node a dies (SIGKILL: no leave is ever written): alice expires on b within the timeout.
        for t in a._tasks:
            t.cancel()
        killed = time.monotonic()
        gone = await _expire_until_gone(pb, "alice", 3 * TIMEOUT)
        assert gone == ["alice"]
        assert time.monotonic() - killed <= TIMEOUT + 0.5
        # b's sweep also removes the entry from Redis: the cluster-wide count drops.
        async with asyncio.timeout(3 * TIMEOUT):
            while (await b.counts(["room"]))["room"] != 0:  # noqa: ASYNC110 - state in Redis
                await asyncio.sleep(0.1)
    finally:
        await b.aclose()
        await a.aclose()


async def test_failover_reconnect_takes_over_without_a_second_join(redis_url: str) -> None:
    loop = asyncio.get_running_loop()
    a = RedisPresenceBus(redis_url, TIMEOUT, prefix="t2:")
    b = RedisPresenceBus(redis_url, TIMEOUT, prefix="t2:")
    await a.start()
    await b.start()
    try:
        rec_b = Recorder()
        pa = await a.attach("room", Recorder())
        pb = await b.attach("room", rec_b)
        pa.update("carol", "here", loop.time())
        assert (await rec_b.next()).event == "join"
        # carol's node dies and she reconnects to b before her entry expired: b takes her
        # over (no join: she never left), and keeps refreshing her.
        for t in a._tasks:
            t.cancel()
        assert pb.touch("carol", loop.time()) is False
        assert pb.members() == {"carol": "here"}
        deadline = loop.time() + 2 * TIMEOUT
        while loop.time() < deadline:
            pb.touch("carol", loop.time())
            assert pb.expire(loop.time()) == []
            await asyncio.sleep(0.1)
        assert (await b.counts(["room"]))["room"] == 1
    finally:
        await b.aclose()
        await a.aclose()


async def test_redis_down_does_not_break_local_presence(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    with RedisServer(tmp_path) as server:
        bus = RedisPresenceBus(server.url, TIMEOUT, prefix="t3:")
        await bus.start()
        try:
            p = await bus.attach("room", Recorder())
            server.kill()
            assert p.touch("dave", loop.time()) is True
            assert p.members() == {"dave": None}
            assert await bus.counts(["room"]) == {}  # unknown, not wrong
            server.start()
            # The pending write is retried once Redis is back.
            async with asyncio.timeout(10):
                while (await bus.counts(["room"])).get("room") != 1:  # noqa: ASYNC110 - in Redis
                    await asyncio.sleep(0.1)
        finally:
            await bus.aclose()


async def test_local_bus_is_the_one_process_table() -> None:
    bus = LocalPresenceBus(1.0)
    p = await bus.attach("room", Recorder())
    assert p.touch("x", 0.0) is True
    assert p.expire(2.0) == ["x"]
    assert await bus.counts(["room"]) == {}


async def test_events_missed_while_unsubscribed_are_reloaded(redis_url: str) -> None:
    """A node whose subscription dropped reloads its rooms' presence from Redis when it
    resubscribes: what it missed meanwhile still reaches its members."""
    loop = asyncio.get_running_loop()
    a = RedisPresenceBus(redis_url, TIMEOUT, prefix="t4:")
    b = RedisPresenceBus(redis_url, TIMEOUT, prefix="t4:")
    await a.start()
    await b.start()
    try:
        rec_b = Recorder()
        pa = await a.attach("room", Recorder())
        await b.attach("room", rec_b)
        # b loses the next event, as if it was published while b's subscription was down.
        subscription = b._subscription
        dispatch = subscription._on_message
        subscription._on_message = lambda data: None
        pa.update("erin", {"x": 1}, loop.time())
        async with asyncio.timeout(5):
            while (await a.counts(["room"])).get("room") != 1:  # noqa: ASYNC110 - in Redis
                await asyncio.sleep(0.02)
        subscription._on_message = dispatch
        assert rec_b.frames == []
        before = subscription.subscriptions
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.client_kill_filter(_type="pubsub")
        finally:
            await client.aclose()
        f = await rec_b.next()
        assert (f.event, f.client, f.state) == ("join", "erin", {"x": 1})
        assert subscription.subscriptions > before
    finally:
        await b.aclose()
        await a.aclose()
