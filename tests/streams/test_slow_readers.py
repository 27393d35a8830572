"""Responses to clients that do not read (streams/app.py with the connection extension).

The raw ASGI app is driven with a fake :class:`~durasync.streams.app.Connection` that says
when the client stops draining: a catch-up answer then drops the unwritten part of its chunk
and reads it again piece by piece (the bytes on the wire never change), concurrent catch-ups
share one read budget, and live responses end as soon as their connection is lost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from starlette.types import Message

from durasync.store import MemoryStore
from durasync.store.base import LogStore, ReadResult, StreamConfig
from durasync.streams import app as app_module
from durasync.streams.app import (
    CONNECTION_EXTENSION,
    ENTRY_OVERHEAD,
    RELEASE_AFTER,
    StreamsApp,
    StreamSettings,
)
from helpers import eventually


class FakeConnection:
    """A connection whose write back-pressure the test controls."""

    def __init__(self, paused: Callable[[], bool] = lambda: False) -> None:
        self.lost = False
        self.aborted = False
        self._paused = paused
        self._callback: Callable[[], None] | None = None

    @property
    def write_paused(self) -> bool:
        return self._paused()

    def on_lost(self, callback: Callable[[], None] | None) -> None:
        if callback is not None and self.lost:
            callback()
            return
        self._callback = callback

    def abort(self) -> None:
        self.aborted = True
        self.lose()

    def lose(self) -> None:
        self.lost = True
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


class CountingStore(MemoryStore):
    """A memory store that records the byte limit of every read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []

    async def read(self, path: str, offset: str, **kwargs: Any) -> ReadResult:
        self.reads.append(kwargs.get("max_bytes", 0))
        return await super().read(path, offset, **kwargs)


def _scope(path: str, query: str, conn: FakeConnection | None) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/v1/stream/" + path,
        "query_string": query.encode(),
        "headers": [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 4437),
    }
    if conn is not None:
        scope["extensions"] = {CONNECTION_EXTENSION: {"handle": conn}}
    return scope


async def _get(
    app: StreamsApp,
    path: str,
    query: str,
    conn: FakeConnection | None,
    on_send: Callable[[Message], Any] | None = None,
) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        await asyncio.Event().wait()  # a client that sends nothing more
        raise AssertionError

    async def send(message: Message) -> None:
        # Like the server's send: wait (for the client to drain) first, then write; a send
        # cancelled while it waits wrote nothing.
        if on_send is not None:
            result = on_send(message)
            if asyncio.iscoroutine(result):
                await result
        sent.append(message)

    await app(_scope(path, query, conn), receive, send)
    return sent


def _body(sent: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent[1:])


async def _fill(store: LogStore, path: str, sizes: list[int], json_mode: bool) -> list[bytes]:
    ctype = "application/json" if json_mode else "application/octet-stream"
    messages = [
        json.dumps("x" * max(size - 2, 0)).encode() if json_mode else bytes([i % 251]) * size
        for i, size in enumerate(sizes)
    ]
    await store.create(path, StreamConfig(content_type=ctype), initial=messages)
    return messages


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=40),
    chunk=st.integers(16, 2048),
    json_mode=st.booleans(),
    pauses=st.lists(st.booleans(), min_size=1, max_size=50),
    with_conn=st.booleans(),
)
def test_catch_up_in_pieces_is_byte_identical(
    sizes: list[int], chunk: int, json_mode: bool, pauses: list[bool], with_conn: bool
) -> None:
    async def run() -> None:
        store = CountingStore()
        app = StreamsApp(store, StreamSettings(write_chunk_bytes=chunk))
        messages = await _fill(store, "s", sizes, json_mode)
        expected = b"[" + b",".join(messages) + b"]" if json_mode else b"".join(messages)
        turn = iter(pauses * 100)
        paused = [False]

        def write_paused() -> bool:
            paused[0] = next(turn, False)
            return paused[0]

        async def client(message: Message) -> None:
            if paused[0]:
                await asyncio.sleep(0.003)  # longer than RELEASE_AFTER (patched): a release

        conn = FakeConnection(write_paused) if with_conn else None
        sent = await _get(app, "s", "offset=-1", conn, on_send=client)
        assert sent[0]["status"] == 200
        assert _body(sent) == expected
        assert dict(sent[0]["headers"])[b"content-length"] == str(len(expected)).encode()
        assert all(len(m.get("body", b"")) <= max(chunk, 1) for m in sent[1:])
        assert [m.get("more_body", False) for m in sent[1:]][-1] is False
        # Re-reads (after a release) ask for one piece at a time.
        assert all(limit <= chunk for limit in store.reads[1:])
        event(f"re-read: {len(store.reads) > 1}")
        assert app._held == 0

    release_after = app_module.RELEASE_AFTER
    app_module.RELEASE_AFTER = 0.001
    try:
        asyncio.run(run())
    finally:
        app_module.RELEASE_AFTER = release_after


async def test_a_reader_that_stops_holds_no_chunk() -> None:
    store = CountingStore()
    chunk = 1024
    app = StreamsApp(store, StreamSettings(write_chunk_bytes=chunk))
    await _fill(store, "s", [500] * 400, json_mode=False)  # 200,000 bytes
    conn = FakeConnection(lambda: True)
    held: list[int] = []

    async def stalls_once(message: Message) -> None:
        held.append(app._held)
        if len(held) == 2:  # the first body piece: the client stops reading for a while
            await asyncio.sleep(RELEASE_AFTER * 3)

    sent = await _get(app, "s", "offset=-1", conn, on_send=stalls_once)
    assert len(_body(sent)) == 200_000
    # The chunk was held while the client read, dropped once it had stalled for RELEASE_AFTER,
    # and the rest was re-read from the store one piece at a time.
    assert held[:2] == [200_000 + 400 * ENTRY_OVERHEAD] * 2 and max(held[2:]) == 0
    assert len(store.reads) > 150 and max(store.reads[1:]) == chunk


async def test_a_reader_that_keeps_up_keeps_its_chunk() -> None:
    store = CountingStore()
    app = StreamsApp(store, StreamSettings(write_chunk_bytes=1024))
    await _fill(store, "s", [500] * 400, json_mode=False)
    conn = FakeConnection(lambda: True)  # behind, but draining in moments: no re-read
    sent = await _get(app, "s", "offset=-1", conn)
    assert len(_body(sent)) == 200_000 and len(store.reads) == 1


async def test_a_stream_gone_mid_answer_aborts_the_connection() -> None:
    store = MemoryStore()
    app = StreamsApp(store, StreamSettings(write_chunk_bytes=512))
    await _fill(store, "s", [400] * 20, json_mode=False)
    conn = FakeConnection(lambda: True)
    calls = 0

    async def delete_after_first_piece(message: Message) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            await store.delete("s")
            await asyncio.sleep(RELEASE_AFTER * 3)  # and stall: the chunk is dropped

    sent = await _get(app, "s", "offset=-1", conn, on_send=delete_after_first_piece)
    assert conn.aborted
    assert len(_body(sent)) < 8000
    assert app._held == 0


async def test_concurrent_catch_ups_share_one_read_budget() -> None:
    store = MemoryStore()
    chunk = 4096
    app = StreamsApp(
        store,
        StreamSettings(
            write_chunk_bytes=chunk,
            read_chunk_bytes=64_000,
            read_budget_bytes=2 * (64_000 + 64 * ENTRY_OVERHEAD),
        ),
    )
    await _fill(store, "s", [1000] * 200, json_mode=False)
    gate = asyncio.Event()

    async def stall(message: Message) -> None:
        if message["type"] == "http.response.body":
            await gate.wait()  # a client that reads nothing until the gate opens

    readers = [
        asyncio.create_task(_get(app, "s", "offset=-1", None, on_send=stall)) for _ in range(6)
    ]
    async with asyncio.timeout(5):
        while sum(1 for t in readers if not t.done()) and app._held < 128_000:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    # Two full chunks fit the budget; every other answer got one piece's worth.
    assert app._held <= 2 * (64_000 + 64 * ENTRY_OVERHEAD) + 4 * (chunk + 4 * ENTRY_OVERHEAD)
    gate.set()
    answers = await asyncio.gather(*readers)
    lengths = sorted(len(_body(a)) for a in answers)
    assert lengths[-2:] == [64_000, 64_000] and lengths[0] <= chunk
    assert app._held == 0


async def test_live_responses_end_when_the_connection_is_lost() -> None:
    store = MemoryStore()
    app = StreamsApp(store, StreamSettings(long_poll_timeout=60, sse_max_duration=60))
    await store.create("s", StreamConfig(content_type="text/plain"))
    conns = [FakeConnection() for _ in range(4)]
    tasks = [
        asyncio.create_task(_get(app, "s", "offset=now&live=long-poll", conns[0])),
        asyncio.create_task(_get(app, "s", "offset=now&live=long-poll", conns[1])),
        asyncio.create_task(_get(app, "s", "offset=now&live=sse", conns[2])),
        asyncio.create_task(_get(app, "s", "offset=now&live=sse", conns[3])),
    ]
    await eventually(lambda: app.live_requests == 4)
    for conn in conns:
        conn.lose()
    done = await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert app.live_requests == 0
    assert done[0] == [] and done[1] == []  # nothing written to a gone client


async def test_sse_events_hold_at_most_a_piece_of_data() -> None:
    store = MemoryStore()
    chunk = 2048
    app = StreamsApp(store, StreamSettings(write_chunk_bytes=chunk, sse_max_duration=0.2))
    await _fill(store, "s", [100] * 500, json_mode=False)
    sent = await _get(app, "s", "offset=-1&live=sse", FakeConnection())
    bodies = [m.get("body", b"") for m in sent[1:]]
    assert all(len(b) <= chunk for b in bodies)
    events = b"".join(bodies).count(b"event: data")
    assert events >= 500 * 100 // chunk


async def test_readers_woken_by_one_append_share_one_read() -> None:
    """Long-poll and SSE readers woken at the tail read with the same limits, so the store's
    one-slot read cache serves them all one read (different limits would evict each other)."""

    class RecordingStore(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.results: dict[str, set[int]] = {}

        async def read(self, path: str, offset: str, **kwargs: Any) -> ReadResult:
            result = await super().read(path, offset, **kwargs)
            if result.entries:
                self.results.setdefault(offset, set()).add(id(result))
            return result

    store = RecordingStore()
    app = StreamsApp(store, StreamSettings(long_poll_timeout=5, sse_max_duration=1))
    info = await store.create("s", StreamConfig(content_type="application/json"))
    tail = info.info.tail
    tasks = [
        asyncio.create_task(_get(app, "s", f"offset={tail}&live=long-poll", FakeConnection()))
        for _ in range(5)
    ] + [
        asyncio.create_task(_get(app, "s", f"offset={tail}&live=sse", FakeConnection()))
        for _ in range(5)
    ]
    await eventually(lambda: app.live_requests == 10)
    await store.append("s", [b'{"a":1}'], content_type="application/json")
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert len(store.results[tail]) == 1
