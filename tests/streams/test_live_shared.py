"""Live answers shared by readers woken by one append (streams/app.py).

Every SSE and long-poll reader woken by an append at the same offset gets the
same bytes, encoded once; these tests drive the raw ASGI app with many
concurrent readers and check that sharing never changes what a reader gets:
same data, its own cursor rules (DS §7), and bounded memory.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.types import Message

from durasync.store import MemoryStore
from durasync.streams import protocol as p
from durasync.streams.app import SHARED_MAX_BYTES, SHARED_SLOTS, StreamsApp, StreamSettings
from helpers import eventually


def _scope(
    method: str, path: str, query: str = "", headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": "/v1/stream/" + path,
        "query_string": query.encode(),
        "headers": headers or [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 4437),
    }


async def _call(app: StreamsApp, scope: dict[str, Any], body: bytes = b"") -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _headers(sent: list[Message]) -> dict[bytes, bytes]:
    return dict(sent[0]["headers"])


async def _setup(app: StreamsApp, path: str, content_type: bytes = b"application/json") -> str:
    sent = await _call(app, _scope("PUT", path, headers=[(b"content-type", content_type)]))
    assert sent[0]["status"] == 201
    return _headers(sent)[b"stream-next-offset"].decode()


async def _append(
    app: StreamsApp, path: str, body: bytes, content_type: bytes = b"application/json"
) -> None:
    sent = await _call(app, _scope("POST", path, headers=[(b"content-type", content_type)]), body)
    assert sent[0]["status"] in (200, 204), sent


def _app() -> StreamsApp:
    return StreamsApp(MemoryStore(), StreamSettings(long_poll_timeout=5, sse_max_duration=5))


async def _long_polls(
    app: StreamsApp, path: str, queries: list[str]
) -> list[asyncio.Task[list[Message]]]:
    tasks = [asyncio.create_task(_call(app, _scope("GET", path, q))) for q in queries]
    await eventually(lambda: app.live_requests == len(queries))
    return tasks


async def test_long_poll_readers_share_one_answer_with_their_own_cursor() -> None:
    app = _app()
    tail = await _setup(app, "lp")
    now_cursor = p.compute_cursor(time.time(), None)
    ahead = str(int(now_cursor) + 5)  # a cursor at/after "now": must be jittered past it
    queries = [f"offset={tail}&live=long-poll"] * 10 + [
        f"offset={tail}&live=long-poll&cursor={ahead}"
    ] * 2
    tasks = await _long_polls(app, "lp", queries)
    await _append(app, "lp", b'{"a":1}')
    answers = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    plain, jittered = answers[:10], answers[10:]
    for sent in answers:
        assert sent[0]["status"] == 200
        assert sent[1]["body"] == b'[{"a":1}]'
        h = _headers(sent)
        assert h[b"content-length"] == b"9"
        assert h[b"stream-up-to-date"] == b"true"
        assert h[b"x-content-type-options"] == b"nosniff"
        assert h[b"etag"] == _headers(answers[0])[b"etag"]
    assert {_headers(s)[b"stream-cursor"] for s in plain} == {now_cursor.encode()}
    for sent in jittered:
        assert int(_headers(sent)[b"stream-cursor"]) > int(ahead)
    # Built once per (read, offset, cursor): the 10 plain readers share bytes.
    assert len({id(s[1]["body"]) for s in plain}) == 1
    # Each response got its own header list (servers may keep or alter it).
    assert len({id(s[0]["headers"]) for s in plain}) == 10


async def test_long_poll_answers_follow_the_stream() -> None:
    app = _app()
    tail = await _setup(app, "seq")
    offsets = [tail]
    for i in range(3):
        (task,) = await _long_polls(app, "seq", [f"offset={offsets[-1]}&live=long-poll"])
        await _append(app, "seq", json.dumps({"i": i}).encode())
        sent = await asyncio.wait_for(task, 5)
        assert json.loads(sent[1]["body"]) == [{"i": i}]
        offsets.append(_headers(sent)[b"stream-next-offset"].decode())
    assert offsets == sorted(set(offsets))
    # A closed stream: the shared answer must report the closure.
    (task,) = await _long_polls(app, "seq", [f"offset={offsets[-1]}&live=long-poll"])
    sent = await _call(
        app,
        _scope(
            "POST",
            "seq",
            headers=[(b"content-type", b"application/json"), (b"stream-closed", b"true")],
        ),
        b'{"last":true}',
    )
    answer = await asyncio.wait_for(task, 5)
    h = _headers(answer)
    assert h[b"stream-closed"] == b"true" and b"stream-cursor" not in h
    assert json.loads(answer[1]["body"]) == [{"last": True}]


async def _sse(
    app: StreamsApp, path: str, query: str, got: list[bytes], stop: asyncio.Event
) -> None:
    async def receive() -> Message:
        await stop.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            got.append(message["body"])

    await app(_scope("GET", path, query), receive, send)


async def test_sse_readers_get_identical_events_encoded_once() -> None:
    app = _app()
    tail = await _setup(app, "sse")
    stop = asyncio.Event()
    outputs: list[list[bytes]] = [[] for _ in range(8)]
    tasks = [
        asyncio.ensure_future(_sse(app, "sse", f"offset={tail}&live=sse", out, stop))
        for out in outputs
    ]
    await eventually(lambda: all(len(out) == 1 for out in outputs))
    for i in range(3):
        await _append(app, "sse", json.dumps({"i": i}).encode())
        want = 2 + i
        await eventually(lambda: all(len(out) == want for out in outputs))  # noqa: B023
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    first = outputs[0]
    for out in outputs:
        assert out == first
        # The live events (after the initial control event) are the same objects.
        assert [id(b) for b in out[1:]] == [id(b) for b in first[1:]]
    for i, event in enumerate(first[1:]):
        assert event.startswith(b"event: data\ndata:[" + json.dumps({"i": i}).encode() + b"]\n\n")
        assert b"event: control\n" in event and b'"upToDate":true' in event


async def test_sse_binary_and_text_readers_of_one_stream_do_not_mix() -> None:
    app = _app()
    tail = await _setup(app, "bin", b"application/octet-stream")
    stop = asyncio.Event()
    a: list[bytes] = []
    b: list[bytes] = []
    tasks = [
        asyncio.ensure_future(_sse(app, "bin", f"offset={tail}&live=sse", a, stop)),
        asyncio.ensure_future(_sse(app, "bin", f"offset={tail}&live=sse&cursor=7", b, stop)),
    ]
    await eventually(lambda: len(a) == 1 and len(b) == 1)
    await _append(app, "bin", b"\x00\x01", b"application/octet-stream")
    await eventually(lambda: len(a) == 2 and len(b) == 2)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert a[1].startswith(b"event: data\ndata:AAE=\n\n")
    assert b[1].startswith(b"event: data\ndata:AAE=\n\n")


async def test_shared_answers_are_bounded() -> None:
    app = _app()
    n = SHARED_SLOTS + 20
    tails = [await _setup(app, f"s{i}") for i in range(n)]
    for i, tail in enumerate(tails):
        (task,) = await _long_polls(app, f"s{i}", [f"offset={tail}&live=long-poll"])
        await _append(app, f"s{i}", b"[1]")
        assert (await asyncio.wait_for(task, 5))[0]["status"] == 200
    assert len(app._lp_answers) == SHARED_SLOTS
    # Large answers are never kept.
    tail = await _setup(app, "big")
    (task,) = await _long_polls(app, "big", [f"offset={tail}&live=long-poll"])
    big = b'["' + b"x" * SHARED_MAX_BYTES + b'"]'
    await _append(app, "big", big)
    sent = await asyncio.wait_for(task, 5)
    # (Written in pieces of at most write_chunk_bytes.)
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"[" + big[1:-1] + b"]"
    assert "big" not in app._lp_answers
