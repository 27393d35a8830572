"""Split test: a node that loses its Redis stops acknowledging, then recovers by itself.

While redis-server is down (SIGKILL, then restarted on the same port and AOF with
``appendfsync always``), node A must answer writes with 503 + ``Retry-After`` within a bound:
never 200/204 for something not stored, never 500, never a hang. An idempotent producer
(DS §3: Producer-Id/Epoch/Seq) that retries every append until it is acknowledged, straight
through the outage, must leave the stream holding each of its messages exactly once, in order,
as read through node B; and live delivery across nodes works again after the recovery.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from faultproxy import FaultProxy
from helpers import ServerProcess, eventually
from redisproc import RedisServer

from .conftest import Cluster, live_count, start_node, stop_node

N_MESSAGES = 60
#: A write during the outage must be answered within this many seconds.
ANSWER_BOUND = 10.0
#: After Redis is back, reads must succeed again within this many seconds.
RECOVERY = 10.0


class Writer:
    """Sequential idempotent producer that retries each append until acknowledged."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.acked = 0
        self.statuses: list[int] = []
        self.unavailable = 0
        self.slowest = 0.0

    async def run(self, n: int, pace: float) -> None:
        for seq in range(n):
            headers = {
                "content-type": "application/json",
                "producer-id": "split-writer",
                "producer-epoch": "0",
                "producer-seq": str(seq),
            }
            body = f'{{"n": {seq}}}'.encode()
            while True:
                started = time.monotonic()
                try:
                    r = await self.client.post(self.url, content=body, headers=headers)
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
                    continue
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.statuses.append(r.status_code)
                if r.status_code in (200, 204):  # 204: duplicate of an earlier try (§3)
                    self.acked += 1
                    break
                assert r.status_code == 503, (r.status_code, r.text)
                assert "retry-after" in r.headers, r.headers
                self.unavailable += 1
                # Honour Retry-After, capped so the test stays short.
                await asyncio.sleep(min(float(r.headers["retry-after"]), 0.2))
            await asyncio.sleep(pace)


async def read_after_recovery(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """GET from ``-1`` after Redis came back, retrying 503s for at most RECOVERY seconds.

    A node may answer 503 (+ Retry-After) once per pooled Redis connection that broke while
    idle: recovery must happen by itself, within the bound, and never with a wrong answer.
    """
    async with asyncio.timeout(RECOVERY):
        while True:
            r = await client.get(url, params={"offset": "-1"})
            if r.status_code != 503:
                assert r.status_code == 200, r.text
                return r
            assert "retry-after" in r.headers
            await asyncio.sleep(0.05)


@pytest.mark.timeout(90)
async def test_node_without_redis_answers_503_and_recovers_without_dups(cluster: Cluster) -> None:
    a, b, redis = cluster.a, cluster.b, cluster.redis
    path = "/v1/stream/split-test"
    async with httpx.AsyncClient(timeout=ANSWER_BOUND + 5) as client:
        r = await client.put(a.url + path, headers={"content-type": "application/json"})
        assert r.status_code == 201, r.text
        writer = Writer(client, a.url + path)
        task = asyncio.create_task(writer.run(N_MESSAGES, pace=0.01))
        await eventually(lambda: writer.acked >= N_MESSAGES // 4, timeout=20)
        redis.kill()
        # A plain append (no producer) during the outage: 503 + Retry-After, promptly.
        started = time.monotonic()
        probe = await client.post(
            a.url + path, content=b'{"probe": 1}', headers={"content-type": "application/json"}
        )
        assert time.monotonic() - started < ANSWER_BOUND
        assert probe.status_code == 503, (probe.status_code, probe.text)
        assert int(probe.headers["retry-after"]) >= 1
        # Reads that need Redis fail the same way (no stale or invented answer).
        head = await client.head(b.url + path)
        assert head.status_code == 503, head.status_code
        await eventually(lambda: writer.unavailable >= 3, timeout=20)
        acked_during_outage = writer.acked
        redis.start()
        await asyncio.wait_for(task, timeout=60)
        assert writer.acked == N_MESSAGES
        assert acked_during_outage < N_MESSAGES
        assert 500 not in writer.statuses
        assert writer.slowest < ANSWER_BOUND

        # Exactly once, in order, the same through the other node.
        r = await read_after_recovery(client, b.url + path)
        assert [m["n"] for m in r.json()] == list(range(N_MESSAGES))

        # Live delivery across nodes works again after the outage.
        tail = r.headers["stream-next-offset"]
        poll = asyncio.create_task(
            client.get(b.url + path, params={"offset": tail, "live": "long-poll"})
        )

        async def b_is_waiting() -> bool:
            return await live_count(client, b) >= 1

        await eventually(b_is_waiting)
        r = await client.post(
            a.url + path, content=b'{"n": "after"}', headers={"content-type": "application/json"}
        )
        assert r.status_code == 204, r.text
        resp = await poll
        assert resp.status_code == 200 and resp.json() == [{"n": "after"}]


@pytest.mark.timeout(90)
async def test_partitioned_node_answers_503_while_the_other_keeps_serving(
    redis_server: RedisServer,
) -> None:
    """Only node A loses Redis (a TCP proxy between them black-holes, then refuses): A answers
    503 within its Redis timeout while B keeps acknowledging; A recovers by itself; A's retried
    producer appends (some of which may still reach Redis late, after A answered 503) apply
    exactly once, in order."""
    path = "/v1/stream/partition-test"
    async with FaultProxy("127.0.0.1", redis_server.port, seed=6) as proxy:
        a = await asyncio.to_thread(start_node, f"redis://127.0.0.1:{proxy.port}/0")
        try:
            b = await asyncio.to_thread(start_node, redis_server.url)
            try:
                await _partition_scenario(proxy, a, b, path)
            finally:
                await asyncio.to_thread(stop_node, b)
        finally:
            proxy.plan.stall_rate = 0.0
            proxy.refuse_for(0)
            await asyncio.to_thread(stop_node, a)


async def _partition_scenario(
    proxy: FaultProxy, a: ServerProcess, b: ServerProcess, path: str
) -> None:
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(timeout=ANSWER_BOUND + 5) as client:
        r = await client.put(b.url + path, headers=headers)
        assert r.status_code == 201, r.text
        writer = Writer(client, a.url + path)
        task = asyncio.create_task(writer.run(N_MESSAGES, pace=0.01))
        await eventually(lambda: writer.acked >= N_MESSAGES // 4, timeout=20)
        # Partition A from Redis: bytes on open connections are held (a black hole, for
        # longer than A's Redis socket timeout) and new connections are reset.
        proxy.plan.stall = 4.0
        proxy.plan.stall_rate = 1.0
        proxy.refuse_for(3600)
        started = time.monotonic()
        probe = await client.post(a.url + path, content=b'{"probe": 1}', headers=headers)
        assert time.monotonic() - started < ANSWER_BOUND
        assert probe.status_code == 503, (probe.status_code, probe.text)
        assert "retry-after" in probe.headers
        # B is not partitioned: it keeps acknowledging writes and serving reads.
        other = "/v1/stream/partition-other"
        assert (await client.put(b.url + other, headers=headers)).status_code == 201
        r = await client.post(b.url + other, content=b'{"via": "b"}', headers=headers)
        assert r.status_code == 204, r.text
        await eventually(lambda: writer.unavailable >= 3, timeout=30)
        # Heal the partition; A reconnects by itself. The connections of the partition are
        # reset, so bytes still held (commands A gave up on) are dropped, not delivered late;
        # held bytes released during the partition did reach Redis after A answered 503.
        proxy.plan.stall_rate = 0.0
        proxy.refuse_for(0)
        proxy.cut_all()
        await asyncio.wait_for(task, timeout=60)
        assert writer.acked == N_MESSAGES
        assert 500 not in writer.statuses
        assert writer.slowest < ANSWER_BOUND
        for node in (a, b):
            r = await read_after_recovery(client, node.url + path)
            values = [m["n"] for m in r.json() if "n" in m]
            assert values == list(range(N_MESSAGES)), values
            # The probe (no producer) may or may not have been applied late; never twice.
            assert sum(1 for m in r.json() if "probe" in m) <= 1
