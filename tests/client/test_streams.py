"""StreamClient against the npm reference server and against durasync, same tests."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from durasync.client import (
    Batch,
    ProducerFenced,
    ProducerSeqGap,
    ProducerStateConflict,
    StreamClient,
    StreamClosedError,
    StreamConflict,
    StreamNotFound,
)
from durasync.protocol import BackoffPolicy
from faultproxy import FaultPlan, FaultProxy

from .servers import ServerProc

KINDS = ["ref", "durasync"]
_names = itertools.count()
FAST = BackoffPolicy(initial_delay=0.02, max_delay=0.2, min_delay=0.01)


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProc]:
    proc = ServerProc(request.param)
    try:
        yield proc
    finally:
        proc.stop()


def name(tag: str) -> str:
    return f"client-{tag}-{next(_names)}"


@pytest.fixture
async def client(server: ServerProc) -> AsyncIterator[StreamClient]:
    async with StreamClient(server.base, retry=FAST, timeout=5, live_timeout=5) as c:
        yield c


class LoseResponses(httpx.AsyncBaseTransport):
    """Forwards every request, but for the chosen ones pretends the response
    was lost (ReadTimeout after the server processed it)."""

    def __init__(self, lose: set[int]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lose = lose
        self.posts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST":
            self.posts += 1
            if self.posts in self.lose:
                await response.aread()
                raise httpx.ReadTimeout("response lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def read_all(c: StreamClient, stream: str) -> bytes:
    out = b""
    async for batch in c.tail(stream, stop_at_up_to_date=True):
        out += batch.data
    return out


async def test_create_head_append_read_delete(client: StreamClient) -> None:
    s = name("crud")
    info = await client.create(s, content_type="text/plain")
    assert info.created and info.next_offset
    again = await client.create(s, content_type="text/plain")
    assert not again.created  # idempotent PUT (DS §2)
    with pytest.raises(StreamConflict):
        await client.create(s, content_type="application/json")
    r1 = await client.append(s, "hello ", content_type="text/plain")
    r2 = await client.append(s, b"world", content_type="text/plain")
    assert r1.next_offset is not None and r2.next_offset is not None
    assert r1.next_offset < r2.next_offset  # offsets sort lexicographically (DS §4)
    head = await client.head(s)
    assert head.next_offset == r2.next_offset and not head.closed
    assert (head.content_type or "").startswith("text/plain")
    batch = await client.read(s)
    assert batch.data == b"hello world" and batch.up_to_date
    tail = await client.read(s, offset=batch.next_offset)
    assert tail.data == b"" and tail.up_to_date
    await client.delete(s)
    with pytest.raises(StreamNotFound):
        await client.head(s)
    with pytest.raises(StreamNotFound):
        await client.read(s)


async def test_closed_stream_rejects_appends(client: StreamClient) -> None:
    s = name("closed")
    await client.create(s, content_type="text/plain")
    res = await client.append(s, "last", content_type="text/plain", close=True)
    assert res.closed
    with pytest.raises(StreamClosedError):
        await client.append(s, "more", content_type="text/plain")
    assert (await client.head(s)).closed


async def test_producer_retry_after_lost_response_never_duplicates(server: ServerProc) -> None:
    transport = LoseResponses(lose={1, 3, 4})
    async with (
        httpx.AsyncClient(transport=transport, timeout=5) as http,
        StreamClient(server.base, client=http, retry=FAST) as c,
    ):
        s = name("idem")
        await c.create(s, content_type="text/plain")
        p = c.producer(s, content_type="text/plain")
        results = [await p.append(f"<{i}>") for i in range(4)]
        assert [r.seq for r in results] == [0, 1, 2, 3]
        # POSTs: #1 seq0 lost, #2 seq0 dup; #3, #4 seq1 lost, #5 seq1 dup; #6 seq2; #7 seq3
        assert [r.duplicate for r in results] == [True, True, False, False]
        assert transport.posts == 7  # 4 batches + 3 retries
        assert await read_all(c, s) == b"<0><1><2><3>"


async def test_producer_fencing_and_auto_claim(client: StreamClient) -> None:
    s = name("fence")
    await client.create(s, content_type="text/plain")
    old = client.producer(s, content_type="text/plain", producer_id="w", epoch=0)
    await old.append("a")
    new = client.producer(s, content_type="text/plain", producer_id="w", epoch=1)
    await new.append("b")
    with pytest.raises(ProducerFenced) as ei:
        await old.append("zombie")
    assert ei.value.current_epoch == 1
    claimer = client.producer(
        s, content_type="text/plain", producer_id="w", epoch=0, auto_claim=True
    )
    res = await claimer.append("c")
    assert res.epoch == 2 and res.seq == 0
    assert await read_all(client, s) == b"abc"


async def test_reused_identity_is_detected_not_silently_dropped(client: StreamClient) -> None:
    s = name("reuse")
    await client.create(s, content_type="text/plain")
    first = client.producer(s, content_type="text/plain", producer_id="fixed")
    for m in "xyz":
        await first.append(m)
    # A restarted process reuses the id with epoch 0: seq 0 looks like a
    # duplicate to the server, which would silently drop "new".
    restarted = client.producer(s, content_type="text/plain", producer_id="fixed")
    with pytest.raises(ProducerStateConflict):
        await restarted.append("new")
    claiming = client.producer(s, content_type="text/plain", producer_id="fixed", auto_claim=True)
    res = await claiming.append("new")
    assert res.epoch == 1 and not res.duplicate
    assert await read_all(client, s) == b"xyznew"


async def test_producer_seq_gap_is_reported(client: StreamClient) -> None:
    s = name("gap")
    await client.create(s, content_type="text/plain")
    p = client.producer(s, content_type="text/plain")
    await p.append("a")
    p.seq = 5  # as if the server had lost our state
    with pytest.raises(ProducerSeqGap) as ei:
        await p.append("b")
    assert ei.value.expected == 1 and ei.value.received == 5


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_tail_live_exactly_once_in_order_until_closed(
    client: StreamClient, live: str
) -> None:
    s = name("tail")
    await client.create(s, content_type="application/octet-stream")
    p = client.producer(s)
    await p.append(b"\x00first")
    got: list[bytes] = []

    async def tailer() -> None:
        async for batch in client.tail(s, live=live):  # type: ignore[arg-type]
            got.append(batch.data)

    task = asyncio.create_task(tailer())
    for i in range(20):
        await p.append(bytes([i]) * 3)
        if i % 5 == 0:
            await asyncio.sleep(0.02)
    await p.append(b"end", close=True)
    async with asyncio.timeout(15):
        await task  # ends by itself: the stream is closed
    assert b"".join(got) == b"\x00first" + b"".join(bytes([i]) * 3 for i in range(20)) + b"end"


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_tail_json_messages(client: StreamClient, live: str) -> None:
    s = name("json")
    await client.create(s, content_type="application/json")
    p = client.producer(s, content_type="application/json")
    await p.append(json.dumps([{"n": 0}, {"n": 1}]))
    await p.append(json.dumps({"n": 2}))
    msgs: list[object] = []

    async def tailer() -> None:
        async for batch in client.tail(s, live=live):  # type: ignore[arg-type]
            msgs.extend(batch.json())

    task = asyncio.create_task(tailer())
    await p.append(json.dumps([{"n": 3}]), close=True)
    async with asyncio.timeout(15):
        await task
    assert msgs == [{"n": i} for i in range(4)]


async def test_tail_checkpoint_resumes_across_process_restart(
    client: StreamClient, tmp_path: Path
) -> None:
    s = name("ckpt")
    await client.create(s, content_type="text/plain")
    p = client.producer(s, content_type="text/plain")
    for i in range(3):
        await p.append(f"{i};")
    ckpt = tmp_path / "offsets" / "tail.json"
    seen = b""
    async for batch in client.tail(s, checkpoint=ckpt, stop_at_up_to_date=True):
        seen += batch.data
    assert seen == b"0;1;2;"
    assert json.loads(ckpt.read_text())["offset"]
    for i in range(3, 5):
        await p.append(f"{i};")
    # "New process": only what came after the checkpoint.
    resumed = b""
    async for batch in client.tail(s, checkpoint=ckpt, stop_at_up_to_date=True):
        resumed += batch.data
    assert resumed == b"3;4;"


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_tail_through_fault_proxy(server: ServerProc, live: str) -> None:
    """Cuts, stalls and refusals between tailer and server: every byte exactly once."""
    plan = FaultPlan(cut_rate=0.05, stall_rate=0.05, stall=0.05, max_chunk=512)
    async with (
        FaultProxy("127.0.0.1", server.port, seed=9, plan=plan) as proxy,
        StreamClient(server.base, retry=FAST, timeout=5, live_timeout=5) as direct,
        StreamClient(
            f"http://127.0.0.1:{proxy.port}/v1/stream/", retry=FAST, timeout=5, live_timeout=5
        ) as flaky,
    ):
        s = name("chaos")
        await direct.create(s, content_type="text/plain")
        p = direct.producer(s, content_type="text/plain")
        expected = b""
        got = b""

        async def tailer() -> None:
            nonlocal got
            async for batch in flaky.tail(s, live=live):  # type: ignore[arg-type]
                got += batch.data

        task = asyncio.create_task(tailer())
        for i in range(60):
            chunk = f"[{i:03d}]".encode() * 20
            expected += chunk
            await p.append(chunk)
            if i == 30:
                proxy.refuse_for(0.2)
                proxy.cut_all()
            await asyncio.sleep(0.002)
        await p.append(b"!", close=True)
        expected += b"!"
        async with asyncio.timeout(30):
            await task
        assert got == expected
        assert proxy.stats.cut > 0


@pytest.mark.parametrize("kind", KINDS)
async def test_tail_survives_server_restart(tmp_path: Path, kind: str) -> None:
    data = tmp_path / "data"
    srv = ServerProc(kind, data_dir=data)
    port = srv.port
    try:
        async with StreamClient(srv.base, retry=FAST, timeout=5, live_timeout=5) as c:
            s = name("restart")
            await c.create(s, content_type="text/plain")
            p = c.producer(s, content_type="text/plain")
            await p.append("before;")
            batches: list[Batch] = []
            first = asyncio.Event()

            async def tailer() -> None:
                async for batch in c.tail(s):
                    batches.append(batch)
                    first.set()

            task = asyncio.create_task(tailer())
            async with asyncio.timeout(10):
                await first.wait()
            srv.stop(signal.SIGKILL)  # crash, not a graceful stop
            srv = ServerProc(kind, port=port, data_dir=data)
            p2 = c.producer(s, content_type="text/plain")
            await p2.append("after;", close=True)
            async with asyncio.timeout(20):
                await task
            assert b"".join(b.data for b in batches) == b"before;after;"
    finally:
        srv.stop()
