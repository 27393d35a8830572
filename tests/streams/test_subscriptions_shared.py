"""Subscriptions on a store shared by several nodes (DS §9 across a cluster).

Two :class:`SubscriptionService` instances ("node A" and "node B") over one real
:class:`MemoryStore` in ``shared`` mode stand for two ``durasync serve`` processes on one
Redis: whatever one node does to a subscription, the other sees and continues. The Redis
cluster itself is covered end to end by tests/cluster (conformance suite through both nodes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import msgspec
import pytest

from durasync.store import MemoryStore
from durasync.store.base import StreamConfig
from durasync.store.errors import StoreUnavailable
from durasync.streams.subscriptions import SubscriptionService
from durasync.streams.subscriptions_core import (
    KEYS_PATH,
    Subscription,
    decode_record,
    encode_record,
    parse_create,
    record_id,
    record_path,
    record_seq,
)
from helpers import eventually

BASE = "http://127.0.0.1:4437"
HOOK = "http://127.0.0.1:9/hook"
JSON = StreamConfig(content_type="application/json")


def _url(sub_id: str, rest: str = "") -> str:
    return f"/v1/stream/__ds/subscriptions/{sub_id}{rest}"


class Node:
    def __init__(self, svc: SubscriptionService, client: httpx.AsyncClient) -> None:
        self.svc = svc
        self.http = client


class Hooks:
    """Webhook receiver shared by both nodes (httpx mock transport)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.replies: list[httpx.Response] = []
        self.arrived = asyncio.Event()

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.arrived.set()
        return self.replies.pop(0) if self.replies else httpx.Response(200, json={})

    async def wait(self, n: int) -> httpx.Request:
        async with asyncio.timeout(5):
            while len(self.requests) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.requests[n - 1]


class NetworkStore(MemoryStore):
    """A memory store whose calls yield to the loop like a network round trip does.

    So concurrent requests on two nodes really interleave (read, read, write, write).
    """

    async def read(self, path: str, offset: str = "-1", **kw: Any) -> Any:
        await asyncio.sleep(0.002)
        return await super().read(path, offset, **kw)

    async def append(self, path: str, messages: Sequence[bytes], **kw: Any) -> Any:
        await asyncio.sleep(0.002)
        return await super().append(path, messages, **kw)


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[MemoryStore, Node, Node, Hooks]]:
    store = NetworkStore()
    await store.open()
    hooks = Hooks()
    nodes: list[Node] = []
    for _ in range(2):
        svc = SubscriptionService(
            store,
            shared=True,
            index_interval=0.02,
            transport=httpx.MockTransport(hooks.handler),
            rand=lambda: 0.0,
        )
        await svc.start()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=svc), base_url=BASE)
        nodes.append(Node(svc, client))
    try:
        yield store, nodes[0], nodes[1], hooks
    finally:
        for node in nodes:
            await node.http.aclose()
            await node.svc.aclose()
        await store.close()


def test_record_helpers_round_trip() -> None:
    config = parse_create(b'{"type":"pull-wake","pattern":"a/*","wake_stream":"w"}')
    sub = Subscription(id="s 1", config=config, config_hash=config.config_hash(), created_at="t")
    sub.link("a/x", "glob", "0000000000000001", acked="-1")
    record = decode_record(encode_record(sub, 7, BASE))
    assert record.version == 7 and record.base_url == BASE and record.sub == sub
    assert record_id(record_path("s 1")) == "s 1"
    assert record_id("__ds/subscriptions/a/b") is None and record_id("other") is None
    assert record_seq(9) < record_seq(10)  # byte order is numeric order (Stream-Seq)
    with pytest.raises(ValueError):
        decode_record(b'{"version": "x"}')


async def test_auto_mode_is_shared_only_for_redis() -> None:
    store = MemoryStore()
    assert SubscriptionService(store).shared is False
    assert SubscriptionService(store, shared=True).shared is True


async def test_created_on_a_is_served_by_b_with_the_same_keys(cluster: Any) -> None:
    _store, a, b, _hooks = cluster
    body = {"type": "webhook", "pattern": "events/*", "webhook": {"url": HOOK}}
    r = await a.http.put(_url("s1"), json=body)
    assert r.status_code == 201, r.text
    got = await b.http.get(_url("s1"))
    assert got.status_code == 200 and got.json() == r.json()
    ja = (await a.http.get("/v1/stream/__ds/jwks.json")).json()
    jb = (await b.http.get("/v1/stream/__ds/jwks.json")).json()
    assert ja == jb and ja["keys"][0]["kid"] == r.json()["webhook"]["signing"]["kid"]
    assert (await b.http.put(_url("s1"), json=body)).status_code == 200
    r = await b.http.put(_url("s1"), json={**body, "lease_ttl_ms": 2000})
    assert r.status_code == 409 and r.json()["error"]["code"] == "SUBSCRIPTION_ALREADY_EXISTS"
    assert (await b.http.post(_url("s1", "/streams"), json={"streams": ["m/x"]})).status_code == 204
    paths = [s["path"] for s in (await a.http.get(_url("s1"))).json()["streams"]]
    assert paths == ["m/x"]
    assert (await b.http.delete(_url("s1"))).status_code == 204
    assert (await a.http.get(_url("s1"))).status_code == 404


async def test_pull_wake_across_nodes_and_concurrent_claims(cluster: Any) -> None:
    store, a, b, _hooks = cluster
    await store.create("wake", JSON)
    r = await a.http.put(
        _url("p"),
        json={"type": "pull-wake", "pattern": "events/*", "wake_stream": "wake"},
    )
    assert r.status_code == 201
    # The append lands through node B: B learns of "p" from the store's index.
    await eventually(lambda: _has(b.svc, "p"))
    tail = (await store.create("events/a", JSON, initial=[b"1"])).info.tail
    await b.svc.notify_append("events/a", tail)

    async def wake_written() -> bool:
        return bool((await store.read("wake")).entries)

    await eventually(wake_written)
    event = msgspec.json.decode((await store.read("wake")).entries[0].data)
    assert event["subscription_id"] == "p" and event["generation"] == 1
    # Two workers claim at once through different nodes: exactly one wins.
    ra, rb = await asyncio.gather(
        a.http.post(_url("p", "/claim"), json={"worker": "wa"}),
        b.http.post(_url("p", "/claim"), json={"worker": "wb"}),
    )
    assert sorted([ra.status_code, rb.status_code]) == [200, 409], (ra.text, rb.text)
    winner, loser = (ra, rb) if ra.status_code == 200 else (rb, ra)
    assert loser.json()["error"]["code"] == "ALREADY_CLAIMED"
    c = winner.json()
    assert c["streams"][0]["tail_offset"] == tail
    # The token from one node works on the other; the ack is visible everywhere.
    done = {
        "wake_id": c["wake_id"],
        "generation": c["generation"],
        "acks": [{"stream": "events/a", "offset": tail}],
        "done": True,
    }
    auth = {"authorization": f"Bearer {c['token']}"}
    for node in (a, b):
        r = await node.http.post(_url("p", "/ack"), json=done, headers=auth)
        if node is a:
            assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}
        else:
            assert r.status_code == 409 and r.json()["error"]["code"] == "FENCED"
    streams = (await b.http.get(_url("p"))).json()["streams"]
    assert streams == [{"path": "events/a", "link_type": "glob", "acked_offset": tail}]
    # An append that node A never heard of (made through another node) is still work:
    # the claim reads the stream's tail itself.
    await store.append("events/a", [b"2"])
    r = await a.http.post(_url("p", "/claim"), json={"worker": "w2"})
    assert r.status_code == 200 and r.json()["generation"] == 2


async def _has(svc: SubscriptionService, sub_id: str) -> bool:
    return sub_id in svc._subs


async def test_webhook_delivered_once_and_auto_ack_visible_on_the_other_node(cluster: Any) -> None:
    store, a, b, hooks = cluster
    hooks.replies.append(httpx.Response(200, json={"done": True}))
    r = await a.http.put(
        _url("w"), json={"type": "webhook", "pattern": "e/*", "webhook": {"url": HOOK}}
    )
    assert r.status_code == 201
    tail = (await store.create("e/a", JSON, initial=[b"1"])).info.tail
    await a.svc.notify_append("e/a", tail)
    req = await hooks.wait(1)
    body = msgspec.json.decode(req.content)
    assert body["generation"] == 1 and body["callback_url"] == f"{BASE}{_url('w', '/callback')}"

    async def acked_on_b() -> bool:
        streams = (await b.http.get(_url("w"))).json()["streams"]
        return bool(streams) and streams[0]["acked_offset"] == tail

    await eventually(acked_on_b)
    await asyncio.sleep(0.1)  # no duplicate delivery appears meanwhile (both nodes idle)
    assert len(hooks.requests) == 1


async def test_keys_are_adopted_from_the_store(cluster: Any) -> None:
    store, a, _b, _hooks = cluster
    await a.http.get("/v1/stream/__ds/jwks.json")
    late = SubscriptionService(store, shared=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=late), base_url=BASE) as c:
        jwks = (await c.get("/v1/stream/__ds/jwks.json")).json()
    await late.aclose()
    assert jwks == a.svc.signer.jwks()
    assert len((await store.read(KEYS_PATH)).entries) == 1


class DownStore(MemoryStore):
    """A store whose backend is unreachable (every call: StoreUnavailable)."""

    async def read(self, path: str, offset: str = "-1", **kw: Any) -> Any:
        raise StoreUnavailable("redis is down")

    async def create(self, path: str, config: StreamConfig, **kw: Any) -> Any:
        raise StoreUnavailable("redis is down")

    async def append(self, path: str, messages: Sequence[bytes], **kw: Any) -> Any:
        raise StoreUnavailable("redis is down")


async def test_store_unavailable_gives_503_with_retry_after() -> None:
    store = DownStore()
    await store.open()
    svc = SubscriptionService(store, shared=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=svc), base_url=BASE) as c:
        for r in (
            await c.get(_url("s")),
            await c.put(
                _url("s"), json={"type": "pull-wake", "streams": ["x"], "wake_stream": "w"}
            ),
            await c.get("/v1/stream/__ds/jwks.json"),
        ):
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "UNAVAILABLE"
    await svc.aclose()
    await store.close()


async def test_lease_of_a_dead_node_ends_on_the_next_append_elsewhere() -> None:
    now = [1_000_000.0]
    store = NetworkStore()
    await store.open()
    hooks = Hooks()

    def node() -> SubscriptionService:
        return SubscriptionService(
            store,
            shared=True,
            index_interval=0.02,
            clock=lambda: now[0],
            transport=httpx.MockTransport(hooks.handler),
        )

    a, b = node(), node()
    await a.start()
    await b.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url=BASE) as c:
        r = await c.put(
            _url("w"),
            json={
                "type": "webhook",
                "pattern": "e/*",
                "webhook": {"url": HOOK},
                "lease_ttl_ms": 1000,
            },
        )
        assert r.status_code == 201
    await eventually(lambda: _has(b, "w"))
    tail = (await store.create("e/a", JSON, initial=[b"1"])).info.tail
    await a.notify_append("e/a", tail)
    first = msgspec.json.decode((await hooks.wait(1)).content)  # delivered by A, never acked
    assert first["generation"] == 1
    await a.aclose()  # node A dies: its lease timer dies with it
    now[0] += 5.0  # the lease (1 s) ran out
    tail = (await store.append("e/a", [b"2"])).tail
    await b.notify_append("e/a", tail)
    second = msgspec.json.decode((await hooks.wait(2)).content)
    assert second["generation"] == 2 and second["wake_id"] != first["wake_id"]
    await b.aclose()
    await store.close()
