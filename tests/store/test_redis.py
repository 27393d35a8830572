"""RedisStore beyond the shared contract: several nodes on one Redis, outages.

Two :class:`RedisStore` instances on one Redis stand for two durasync nodes.
The whole LogStore contract runs against Redis from test_contract.py (see
conftest); these tests cover what only a shared store can get wrong: one order
and identical offsets on every node, cross-node live wake-ups through the one
Pub/Sub subscription per node, producer rules under concurrency from two
nodes, and Redis going away (StoreUnavailable at once, recovery by itself, no
acknowledged append lost or duplicated).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from durasync.store import (
    OFFSET_NOW,
    DataGone,
    NoSuchStream,
    Producer,
    StaleProducerEpoch,
    StoreClientError,
    StoreUnavailable,
    StreamConfig,
)
from durasync.store.base import ReadResult
from durasync.store.redis import RedisStore
from durasync.store.redis import calls as redis_calls
from durasync.store.redis import subscription as redis_subscription
from durasync.store.redis.calls import CallConnection
from faultproxy import FaultProxy
from helpers import eventually
from redisproc import RedisServer

TEXT = StreamConfig(content_type="text/plain")


@pytest.fixture
async def nodes(redis_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    a, b = RedisStore(redis_url), RedisStore(redis_url)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_two_nodes_share_one_order_and_identical_offsets(
    nodes: tuple[RedisStore, RedisStore],
) -> None:
    a, b = nodes
    await a.create("/shared", TEXT)
    assert not (await b.create("/shared", TEXT)).created  # idempotent from the other node

    async def writer(store: RedisStore, name: str) -> list[tuple[str, bytes]]:
        out = []
        for i in range(30):
            data = f"{name}{i}".encode()
            result = await store.append("/shared", [data])
            out.append((result.offsets[0], data))
        return out

    acked = await asyncio.gather(writer(a, "a"), writer(b, "b"), writer(a, "A"), writer(b, "B"))
    read_a, read_b = await a.read("/shared"), await b.read("/shared")
    assert read_a == read_b
    assert len(read_a.entries) == 120
    # Every acknowledged offset names exactly the entry it was acknowledged for.
    by_offset = {e.offset: e.data for e in read_a.entries}
    assert by_offset == dict(pair for batch in acked for pair in batch)
    # Per writer, its own order is kept.
    for name in ("a", "b", "A", "B"):
        mine = [e.data for e in read_a.entries if e.data.decode().rstrip("0123456789") == name]
        assert mine == [f"{name}{i}".encode() for i in range(30)]
    assert (await a.head("/shared")).tail == (await b.head("/shared")).tail == read_a.next_offset


async def test_wait_on_one_node_wakes_on_append_through_the_other(
    nodes: tuple[RedisStore, RedisStore],
) -> None:
    a, b = nodes
    created = await a.create("/live", TEXT)
    waiters = [asyncio.create_task(b.wait_for("/live", created.info.tail, 5.0)) for _ in range(3)]
    now_waiter = asyncio.create_task(b.wait_for("/live", OFFSET_NOW, 5.0))
    await eventually(lambda: b._tail.parked == 4)
    assert not any(w.done() for w in [*waiters, now_waiter])
    await a.append("/live", [b"x"])
    assert await asyncio.wait_for(asyncio.gather(*waiters, now_waiter), 5.0) == [True] * 4
    # Close and delete through A also reach B's waiters.
    tail = (await b.head("/live")).tail
    closing = asyncio.create_task(b.wait_for("/live", tail, 5.0))
    await eventually(lambda: b._tail.parked == 1)
    await a.append("/live", [], close=True)
    assert await asyncio.wait_for(closing, 5.0) is True
    await a.create("/doomed", TEXT)
    deleted = asyncio.create_task(b.wait_for("/doomed", OFFSET_NOW, 5.0))
    await eventually(lambda: b._tail.parked == 1)
    await a.delete("/doomed")
    assert await asyncio.wait_for(deleted, 5.0) is False


async def test_waiters_hold_no_redis_connection_each(redis_url: str) -> None:
    store = RedisStore(redis_url, max_connections=8)
    writer = RedisStore(redis_url)
    await store.open()
    await writer.open()
    try:
        created = await writer.create("/many", TEXT)
        waiters = [
            asyncio.create_task(store.wait_for("/many", created.info.tail, 10.0))
            for _ in range(300)
        ]
        await asyncio.sleep(0.3)
        client = aioredis.Redis.from_url(redis_url)
        try:
            info = await client.info("clients")
        finally:
            await client.aclose()
        # 300 parked waiters, yet at most the pool (8) + the subscriber + the
        # writer's connections + this client are connected.
        assert int(info["connected_clients"]) <= 8 + 1 + 2 + 1 + 1
        assert not any(w.done() for w in waiters)
        await writer.append("/many", [b"go"])
        assert await asyncio.wait_for(asyncio.gather(*waiters), 10.0) == [True] * 300
    finally:
        await store.close()
        await writer.close()


async def test_concurrent_producer_appends_from_two_nodes_stay_exact(
    nodes: tuple[RedisStore, RedisStore],
) -> None:
    a, b = nodes
    await a.create("/prod", TEXT)

    # The same producer's requests (and their retries) arrive through both
    # nodes at once: each seq is written exactly once, in seq order.
    async def send(store: RedisStore, seq: int) -> str:
        result = await store.append("/prod", [f"m{seq}".encode()], producer=Producer("p", 0, seq))
        return result.status

    statuses: list[str] = []
    for seq in range(40):
        statuses += await asyncio.gather(send(a, seq), send(b, seq), send(a, seq))
    assert statuses.count("appended") == 40 and statuses.count("duplicate") == 80
    data = [e.data for e in (await b.read("/prod")).entries]
    assert data == [f"m{i}".encode() for i in range(40)]

    # Epoch fencing across nodes: once B's new epoch is in, A's old one is fenced.
    await b.append("/prod", [b"e1"], producer=Producer("p", 1, 0))
    with pytest.raises(StaleProducerEpoch) as fenced:
        await a.append("/prod", [b"zombie"], producer=Producer("p", 0, 40))
    assert fenced.value.current_epoch == 1


async def test_fork_across_nodes(nodes: tuple[RedisStore, RedisStore]) -> None:
    a, b = nodes
    await a.create("/src", TEXT, initial=[b"a", b"b"])
    await b.create("/fork", StreamConfig(content_type="", forked_from="/src"))
    await a.append("/fork", [b"c"])
    assert [e.data for e in (await b.read("/fork")).entries] == [b"a", b"b", b"c"]
    await b.delete("/src")  # soft: the fork reads it
    assert [e.data for e in (await a.read("/fork")).entries] == [b"a", b"b", b"c"]


async def test_subscriber_reconnect_wakes_waiters(nodes: tuple[RedisStore, RedisStore]) -> None:
    a, b = nodes
    created = await a.create("/resub", TEXT)
    waiter = asyncio.create_task(b.wait_for("/resub", created.info.tail, 10.0))
    await eventually(lambda: b._tail.parked == 1)
    # Lose B's next tail message, as if it was published while B's
    # subscription was down.
    subscription = b._tail.subscription
    dispatch = subscription._on_message
    lost: list[bytes] = []
    subscription._on_message = lost.append
    await a.append("/resub", [b"missed"])
    await eventually(lambda: len(lost) == 1)  # the message reached B, and was dropped
    assert not waiter.done()
    subscription._on_message = dispatch
    before = b.subscriptions
    client = aioredis.Redis.from_url(a.url)
    try:
        await client.client_kill_filter(_type="pubsub")
    finally:
        await client.aclose()
    # B resubscribes by itself and every waiter re-checks.
    assert await asyncio.wait_for(waiter, 5.0) is True
    await eventually(lambda: b.subscriptions > before)


async def test_redis_outage_unavailable_then_recovers_without_loss(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        a = RedisStore(server.url, socket_timeout=1.0, connect_timeout=0.5)
        b = RedisStore(server.url, socket_timeout=1.0, connect_timeout=0.5)
        await a.open()
        await b.open()
        try:
            await a.create("/durable", TEXT)
            acked: dict[int, str] = {}
            seq = 0
            for _ in range(20):
                r = await a.append("/durable", [b"%d" % seq], producer=Producer("w", 0, seq))
                acked[seq] = r.offsets[0]
                seq += 1
            server.kill()
            # Redis is gone: StoreUnavailable at once on both nodes, no hang.
            for store in (a, b):
                start = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await store.append("/durable", [b"%d" % seq], producer=Producer("w", 0, seq))
                with pytest.raises(StoreUnavailable):
                    await store.read("/durable")
                with pytest.raises(StoreUnavailable):
                    await store.head("/durable")
                assert time.monotonic() - start < 2.0
            server.start()
            # The stores reconnect by themselves; the outcome of the failed
            # append is unknown, so the writer retries it with the same seq:
            # the producer rules make it exactly once.
            deadline = time.monotonic() + 10
            while True:
                try:
                    r = await b.append("/durable", [b"%d" % seq], producer=Producer("w", 0, seq))
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline, "store did not recover"
                    await asyncio.sleep(0.05)
            assert r.status in ("appended", "duplicate")
            for _ in range(5):
                seq += 1
                r = await a.append("/durable", [b"%d" % seq], producer=Producer("w", 0, seq))
                acked[seq] = r.offsets[0]
            entries = (await a.read("/durable")).entries
            assert [e.data for e in entries] == [b"%d" % i for i in range(seq + 1)]
            offsets = {e.data: e.offset for e in entries}
            assert all(offsets[b"%d" % i] == off for i, off in acked.items())
            # Live delivery works again across nodes (B resubscribed).
            tail = (await b.head("/durable")).tail
            waiter = asyncio.create_task(b.wait_for("/durable", tail, 5.0))
            await asyncio.sleep(0.05)
            await a.append("/durable", [b"after"])
            assert await asyncio.wait_for(waiter, 5.0) is True
        finally:
            await a.close()
            await b.close()


async def test_hung_redis_gives_unavailable_not_a_hang(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        async with RedisStore(server.url, socket_timeout=0.5, connect_timeout=0.5) as store:
            await store.create("/hang", TEXT)
            assert server.proc is not None
            pid = server.proc.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                start = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await store.append("/hang", [b"x"])
                assert time.monotonic() - start < 2.0
            finally:
                os.kill(pid, signal.SIGCONT)
            # The append may or may not have been applied (unknown outcome);
            # the store answers again by itself.
            deadline = time.monotonic() + 5
            while True:
                try:
                    await store.append("/hang", [b"y"])
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            assert (await store.read("/hang")).entries[-1].data == b"y"


async def test_script_cache_flush_is_survived(nodes: tuple[RedisStore, RedisStore]) -> None:
    a, _ = nodes
    await a.create("/noscript", TEXT)
    client = aioredis.Redis.from_url(a.url)
    try:
        await client.script_flush()  # as after a Redis restart: NOSCRIPT next time
    finally:
        await client.aclose()
    results = await asyncio.gather(*(a.append("/noscript", [b"%d" % i]) for i in range(5)))
    assert sorted(r.offsets[0] for r in results) == [r.offsets[0] for r in results]
    assert len((await a.read("/noscript")).entries) == 5


async def test_pipelined_calls_fail_independently(nodes: tuple[RedisStore, RedisStore]) -> None:
    a, _ = nodes
    await a.create("/ok", TEXT)
    # Issued in one loop tick, so sent as one pipeline.
    ok, missing, closed_ok = await asyncio.gather(
        a.append("/ok", [b"x"]),
        a.append("/missing", [b"y"]),
        a.append("/ok", [], close=True),
        return_exceptions=True,
    )
    assert not isinstance(ok, BaseException) and ok.status == "appended"
    assert isinstance(missing, NoSuchStream)
    assert not isinstance(closed_ok, BaseException) and closed_ok.closed


async def test_concurrent_live_reads_share_one_call_but_never_a_stale_one(
    nodes: tuple[RedisStore, RedisStore],
) -> None:
    a, b = nodes
    created = await a.create("/fan", TEXT)
    tail = created.info.tail
    await b.append("/fan", [b"1"])
    reads = await asyncio.gather(*(a.read("/fan", tail) for _ in range(50)))
    assert all(r is reads[0] for r in reads)  # one call served all 50
    # A read started after an append (through the other node) sees it.
    await b.append("/fan", [b"2"])
    assert [e.data for e in (await a.read("/fan", tail)).entries] == [b"1", b"2"]


class _CallCounter:
    """Counts RedisStore script calls and wait probes (round trips to Redis)."""

    def __init__(self, store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.probes = 0
        run, probe = store._run, store._wait_probe

        async def counted_run(script: Any, args: list[Any]) -> Any:
            self.calls += 1
            return await run(script, args)

        async def counted_probe(path: str, offset: str, index: int | None) -> bool | int:
            self.probes += 1
            return await probe(path, offset, index)

        monkeypatch.setattr(store, "_run", counted_run)
        monkeypatch.setattr(store, "_wait_probe", counted_probe)


async def test_woken_reader_gets_the_appended_messages_without_a_round_trip(
    nodes: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = nodes
    created = await a.create("/hand", TEXT, initial=[b"old"])
    tail = created.info.tail
    counter = _CallCounter(b, monkeypatch)

    async def live_read(**limits: int) -> ReadResult:
        assert await b.wait_for("/hand", tail, 5.0)
        return await b.read("/hand", tail, **limits)

    reader = asyncio.create_task(live_read())
    await asyncio.sleep(0.05)
    appended = await a.append("/hand", [b"x", b"yy"])
    handed = await asyncio.wait_for(reader, 5.0)
    assert counter.calls == 0  # the tail message carried the data
    fresh = await b.read("/hand", tail)
    assert handed == fresh  # identical to what Redis answers (incl. up_to_date)
    assert [e.offset for e in handed.entries] == appended.offsets
    assert handed.up_to_date and handed.next_offset == appended.tail

    # Limits apply; a partial answer is not up to date.
    tail_before, tail = tail, appended.tail
    reader = asyncio.create_task(live_read(max_messages=1))
    await asyncio.sleep(0.05)
    second = await a.append("/hand", [b"p", b"q"])
    partial = await asyncio.wait_for(reader, 5.0)
    assert counter.calls == 1  # only the fresh read above
    assert [e.data for e in partial.entries] == [b"p"] and not partial.up_to_date
    assert partial.entries[0].offset == second.offsets[0]
    everything = await b.read("/hand", tail_before)
    assert [e.data for e in everything.entries] == [b"x", b"yy", b"p", b"q"]


async def test_handed_read_is_not_up_to_date_once_a_later_append_was_announced(
    nodes: tuple[RedisStore, RedisStore],
) -> None:
    a, b = nodes
    created = await a.create("/later", TEXT)
    woken = asyncio.Event()
    go_on = asyncio.Event()

    async def live_read() -> ReadResult:
        assert await b.wait_for("/later", created.info.tail, 5.0)
        woken.set()
        await go_on.wait()
        return await b.read("/later", created.info.tail)

    reader = asyncio.create_task(live_read())
    await asyncio.sleep(0.05)
    await a.append("/later", [b"1"])
    await asyncio.wait_for(woken.wait(), 5.0)
    await a.append("/later", [b"2"])
    await eventually(lambda: b._tail._known.get("/later") == (2, False))
    go_on.set()
    # The reader was woken by "1"; "2" is already announced: not up to date.
    handed = await asyncio.wait_for(reader, 5.0)
    assert [e.data for e in handed.entries] == [b"1"] and not handed.up_to_date
    rest = await b.read("/later", handed.next_offset)
    assert [e.data for e in rest.entries] == [b"2"] and rest.up_to_date


async def test_large_and_expiring_appends_are_read_from_redis(
    nodes: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = nodes
    big = b"z" * (64 * 1024 + 1)
    for path, config in (
        ("/big", TEXT),
        ("/ttl", StreamConfig(content_type="text/plain", ttl_seconds=60)),
    ):
        created = await a.create(path, config)
        counter = _CallCounter(b, monkeypatch)
        waiter = asyncio.create_task(b.wait_for(path, created.info.tail, 5.0))
        await asyncio.sleep(0.05)
        await a.append(path, [big if path == "/big" else b"small"])
        assert await asyncio.wait_for(waiter, 5.0)
        result = await b.read(path, created.info.tail)
        assert counter.calls == 1 and result.up_to_date  # read (and TTL renewed) in Redis
        monkeypatch.undo()


async def test_live_waiter_at_the_announced_tail_parks_without_asking_redis(
    nodes: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = nodes
    await a.create("/park", TEXT)
    first = await a.append("/park", [b"1"])
    await eventually(lambda: b._tail._known.get("/park") == (1, False))
    counter = _CallCounter(b, monkeypatch)
    # Data past the offset is known: True at once; at the tail: parks.
    assert await b.wait_for("/park", first.offsets[0], 5.0)
    waiter = asyncio.create_task(b.wait_for("/park", first.tail, 5.0))
    await eventually(lambda: b._tail.parked == 1)
    assert not waiter.done()
    await a.append("/park", [b"2"])
    assert await asyncio.wait_for(waiter, 5.0)
    assert counter.probes == 0
    # Delete and re-create through A: B forgets the old tail and re-checks.
    await a.delete("/park")
    await a.create("/park", TEXT)
    await eventually(lambda: "/park" not in b._tail._known)
    # The new stream's tail is 0: the old tail offset is beyond it, so the
    # waiter asks Redis (a probe; another if the create's message arrives
    # meanwhile) and parks until the timeout.
    assert not await b.wait_for("/park", first.tail, 0.05)
    assert counter.probes >= 1


async def test_silently_dead_subscription_is_detected_and_replaced(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_subscription, "_PING_EVERY", 0.1)
    monkeypatch.setattr(redis_subscription, "_DEAD_AFTER", 0.5)
    port = int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    # Node B reaches Redis through a proxy that can hold every byte (a
    # partition without FIN/RST: nothing fails, nothing arrives).
    async with FaultProxy("127.0.0.1", port) as proxy:
        a = RedisStore(redis_url)
        b = RedisStore(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=1.0)
        await a.open()
        await b.open()
        try:
            created = await a.create("/partition", TEXT)
            waiter = asyncio.create_task(b.wait_for("/partition", created.info.tail, 10.0))
            await asyncio.sleep(0.1)
            before = b.subscriptions
            proxy.plan.stall, proxy.plan.stall_rate = 2.5, 1.0
            await a.append("/partition", [b"held"])  # B's copy of the message is held
            await eventually(lambda: not b._tail.subscribed, timeout=3.0)
            assert not waiter.done()
            proxy.plan.stall_rate = 0.0  # new connections flow again
            # B resubscribes by itself and its waiter re-checks, long before
            # the held message would arrive.
            assert await asyncio.wait_for(waiter, 1.5) is True
            assert b.subscriptions > before
        finally:
            await a.close()
            await b.close()


async def test_out_of_memory_refuses_writes_whole_and_reads_go_on(
    nodes: tuple[RedisStore, RedisStore],
) -> None:
    a, b = nodes
    await a.create("/oom", TEXT, initial=[b"kept"])
    client = aioredis.Redis.from_url(a.url)
    try:
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", "1")
        try:
            with pytest.raises(StoreUnavailable):
                await a.append("/oom", [b"x"], producer=Producer("w", 0, 0))
            with pytest.raises(StoreUnavailable):
                await b.create("/oom2", TEXT)
            assert [e.data for e in (await b.read("/oom")).entries] == [b"kept"]
        finally:
            await client.config_set("maxmemory", "0")
    finally:
        await client.aclose()
    # Nothing of the refused append was written: the same producer seq is new.
    r = await b.append("/oom", [b"x"], producer=Producer("w", 0, 0))
    assert r.status == "appended" and r.offsets[0] == (await a.read("/oom")).entries[1].offset


async def test_announced_tail_never_goes_back(nodes: tuple[RedisStore, RedisStore]) -> None:
    _, b = nodes
    # An own append's reply and an older tail message can arrive in any order.
    b._tail._learn("/order", 3, "-")
    b._tail._learn("/order", 2, "-")
    assert b._tail._known["/order"] == (3, False)
    b._tail._learn("/order", 3, "c")
    b._tail._learn("/order", 3, "-")
    assert b._tail._known["/order"] == (3, True)
    b._tail._learn("/order", 0, "g")  # deleted: forgotten
    assert "/order" not in b._tail._known


async def test_text_redis_cannot_store_is_a_client_error(
    nodes: tuple[RedisStore, RedisStore],
) -> None:
    a, _ = nodes
    bad = "/bad\udc80"
    await a.create("/fine", TEXT)
    with pytest.raises(StoreClientError):
        await a.create(bad, TEXT)
    # Pipelined with a good call: only the bad one fails.
    ok, failed = await asyncio.gather(
        a.append("/fine", [b"x"]),
        a.append("/fine", [b"y"], producer=Producer("p\udc80", 0, 0)),
        return_exceptions=True,
    )
    assert not isinstance(ok, BaseException) and ok.status == "appended"
    assert isinstance(failed, StoreClientError)
    for op in (a.read(bad), a.head(bad), a.delete(bad)):
        with pytest.raises(StoreClientError):
            await op
    assert await a.wait_for(bad, OFFSET_NOW, 0.01) is False


async def test_live_reader_catching_up_is_served_from_the_recent_window(
    nodes: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = nodes
    await a.create("/window", TEXT)
    start = await a.append("/window", [b"0"])
    # Once B knows this append, it has seen every earlier message (the create's).
    await eventually(lambda: b._tail._known.get("/window") == (1, False))
    counter = _CallCounter(b, monkeypatch)
    got_first = asyncio.Event()
    go_on = asyncio.Event()

    async def live_reader() -> list[ReadResult]:
        results = []
        offset = start.tail
        for _ in range(2):
            assert await b.wait_for("/window", offset, 5.0)
            result = await b.read("/window", offset)
            results.append(result)
            offset = result.next_offset
            got_first.set()
            await go_on.wait()
        return results

    reader = asyncio.create_task(live_reader())
    await asyncio.sleep(0.05)
    first = await a.append("/window", [b"1"])
    await asyncio.wait_for(got_first.wait(), 5.0)
    # The next append lands while the reader is away (as between two long-polls).
    second = await a.append("/window", [b"2", b"3"])
    await eventually(lambda: b._tail._known.get("/window") == (4, False))
    go_on.set()
    one, two = await asyncio.wait_for(reader, 5.0)
    assert counter.calls == 0 and counter.probes == 0  # announced tails decided
    assert [e.data for e in one.entries] == [b"1"] and one.entries[0].offset == first.offsets[0]
    assert [e.data for e in two.entries] == [b"2", b"3"] and two.up_to_date
    assert [e.offset for e in two.entries] == second.offsets
    assert two == await b.read("/window", first.tail)  # what Redis says


async def test_trim_drops_what_nodes_hold_for_live_readers(
    nodes: tuple[RedisStore, RedisStore],
) -> None:
    a, b = nodes
    created = await a.create("/trimmed", TEXT)
    woken = asyncio.Event()
    go_on = asyncio.Event()

    async def live_reader() -> ReadResult:
        assert await b.wait_for("/trimmed", created.info.tail, 5.0)
        woken.set()
        await go_on.wait()
        return await b.read("/trimmed", created.info.tail)

    reader = asyncio.create_task(live_reader())
    await asyncio.sleep(0.05)
    appended = await a.append("/trimmed", [b"old", b"new"])
    await asyncio.wait_for(woken.wait(), 5.0)
    await a.trim("/trimmed", appended.offsets[1])
    await eventually(lambda: "/trimmed" not in b._tail._recent)
    go_on.set()
    with pytest.raises(DataGone):
        await asyncio.wait_for(reader, 5.0)


async def test_cancelled_waits_and_reads_end_cancelled(
    nodes: tuple[RedisStore, RedisStore],
) -> None:
    a, b = nodes
    created = await a.create("/cancel", TEXT, initial=[b"x"])
    rng = random.Random(7)

    async def live(i: int) -> None:
        offset = created.info.start if i % 2 else created.info.tail
        while True:  # a live reader: wait, read, repeat
            await b.wait_for("/cancel", offset, 5.0)
            offset = (await b.read("/cancel", offset)).next_offset

    tasks = [asyncio.create_task(live(i)) for i in range(200)]
    for task in tasks:
        asyncio.get_running_loop().call_later(rng.uniform(0, 0.004), task.cancel)
    done, _ = await asyncio.wait(tasks, timeout=5.0)
    # Every reader ended by its cancellation (none swallowed), none left waiting.
    assert len(done) == 200 and all(t.cancelled() for t in tasks)
    assert not b._tail._waiters


def test_redact_url_hides_only_the_password() -> None:
    from durasync.store.redis import redact_url

    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://:s3cret@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("rediss://user:p@ss@h/2") == "rediss://user:***@h/2"


async def test_script_calls_run_back_to_back_on_one_connection(
    nodes: tuple[RedisStore, RedisStore],
) -> None:
    a, _ = nodes
    paths = [f"/one-conn-{i}" for i in range(20)]
    for path in paths:
        await a.create(path, TEXT)

    rng = random.Random(3)

    async def writer(path: str) -> list[str]:
        offsets = []
        for i in range(15):
            offsets += (await a.append(path, [b"%d" % i])).offsets
            await asyncio.sleep(rng.uniform(0, 0.002))  # out of step with the others
        return offsets

    # 300 appends from 20 concurrent writers out of step: many loop ticks'
    # batches in flight at once, replies matched to calls in order on one
    # connection.
    results = await asyncio.gather(*(writer(p) for p in paths))
    for path, offsets in zip(paths, results, strict=True):
        read = await a.read(path)
        assert [e.data for e in read.entries] == [b"%d" % i for i in range(15)]
        assert [e.offset for e in read.entries] == offsets
    client = aioredis.Redis.from_url(a.url)
    try:
        clients = await client.client_list()
    finally:
        await client.aclose()
    # Every script call ran on the node's one call connection, not on one
    # connection per batch in flight.
    assert sum(1 for c in clients if c["cmd"] == "evalsha") == 1


async def test_stalled_call_connection_gives_unavailable_then_recovers(
    redis_url: str,
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    # Every byte to and from Redis held (a partition without FIN/RST).
    async with (
        FaultProxy("127.0.0.1", port) as proxy,
        RedisStore(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=0.5) as store,
    ):
        await store.create("/stalled", TEXT)
        proxy.plan.stall, proxy.plan.stall_rate = 3.0, 1.0
        start = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.append("/stalled", [b"held"])
        assert time.monotonic() - start < 2.0
        proxy.plan.stall_rate = 0.0
        # The next calls go on a new connection by themselves.
        deadline = time.monotonic() + 5
        while True:
            try:
                appended = await store.append("/stalled", [b"after"])
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "store did not recover"
                await asyncio.sleep(0.05)
        read = await store.read("/stalled")
        assert read.entries[-1].data == b"after"
        assert read.entries[-1].offset == appended.offsets[0]


async def test_bytes_like_messages_are_packed_as_bytes(
    nodes: tuple[RedisStore, RedisStore],
) -> None:
    a, b = nodes
    await a.create("/bytes-like", TEXT)
    # The C packer takes only bytes; a bytearray (outside the typed contract,
    # but a caller's slip must not break the call loop) is sent as its bytes.
    appended = await a.append("/bytes-like", [cast(bytes, bytearray(b"ba")), b"b"])
    read = await b.read("/bytes-like")
    assert [e.data for e in read.entries] == [b"ba", b"b"]
    assert [e.offset for e in read.entries] == appended.offsets


async def test_calls_beyond_the_in_flight_bound_wait_their_turn(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_calls, "_MAX_IN_FLIGHT", 3)
    sent_sizes: list[int] = []
    real_write_calls = CallConnection._write_calls

    async def observed(self: CallConnection, conn: Any) -> None:
        send = conn.send_packed_command

        async def counting(packed: bytes, check_health: bool = True) -> None:
            sent_sizes.append(len(self._sent))
            await send(packed, check_health=check_health)

        conn.send_packed_command = counting
        await real_write_calls(self, conn)

    monkeypatch.setattr(CallConnection, "_write_calls", observed)
    async with RedisStore(redis_url) as store:
        await store.create("/bounded", TEXT)
        await store.append("/bounded", [b"warm"])  # the script is cached (no NOSCRIPT reload)
        sent_sizes.clear()
        results = await asyncio.gather(*(store.append("/bounded", [b"%d" % i]) for i in range(40)))
        assert all(r.status == "appended" for r in results)
        assert max(sent_sizes) <= 3  # never more outstanding than the bound
        assert len(sent_sizes) >= 40 // 3
        assert len((await store.read("/bounded")).entries) == 41


async def test_a_bug_in_the_call_loop_fails_its_calls_not_the_store(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_calls = CallConnection._write_calls
    failures = [RuntimeError("a bug")]

    async def buggy(self: CallConnection, conn: Any) -> None:
        if failures:
            await asyncio.sleep(0)  # once something is queued
            self._sent.extend(self._pending)  # as if sent
            self._pending.clear()
            raise failures.pop()
        await real_write_calls(self, conn)

    monkeypatch.setattr(CallConnection, "_write_calls", buggy)
    async with RedisStore(redis_url) as store:
        with pytest.raises(StoreUnavailable):
            await store.create("/bug", TEXT)
        # The call loop logged it, dropped the connection and serves the next calls.
        assert (await store.create("/bug", TEXT)).created
        assert (await store.append("/bug", [b"x"])).status == "appended"
