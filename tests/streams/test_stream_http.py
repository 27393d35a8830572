"""Every protocol rule against the ASGI app in-process (httpx.ASGITransport)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Sequence
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from durasync.server import ServerSettings, create_app
from durasync.store import MemoryStore
from durasync.store.errors import StoreUnavailable
from durasync.streams.app import StreamSettings, _parse_query

S = "/v1/stream"
TEXT = {"content-type": "text/plain"}
JSON = {"content-type": "application/json"}


def producer(pid: str, epoch: int, seq: int) -> dict[str, str]:
    return {"producer-id": pid, "producer-epoch": str(epoch), "producer-seq": str(seq)}


def sse_events(text: str) -> list[tuple[str, str]]:
    events = []
    for block in text.split("\n\n"):
        event, data = "", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                content = line[5:]
                data.append(content[1:] if content.startswith(" ") else content)
        if event:
            events.append((event, "\n".join(data)))
    return events


def assert_error(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    assert r.headers["x-content-type-options"] == "nosniff"


# -- create / append / read --


async def test_create_append_read(app_client: httpx.AsyncClient) -> None:
    r = await app_client.put(f"{S}/a", headers=TEXT, content=b"hello ")
    assert r.status_code == 201
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["location"] == "http://testserver/v1/stream/a"
    first_tail = r.headers["stream-next-offset"]
    r = await app_client.put(f"{S}/a", headers=TEXT)
    assert r.status_code == 200
    r = await app_client.post(f"{S}/a", headers={"content-type": "TEXT/PLAIN"}, content=b"world")
    assert r.status_code == 204
    assert r.headers["stream-next-offset"] > first_tail
    r = await app_client.get(f"{S}/a")
    assert r.status_code == 200
    assert r.content == b"hello world"
    assert r.headers["stream-up-to-date"] == "true"
    assert "etag" in r.headers
    r = await app_client.get(f"{S}/a", params={"offset": first_tail})
    assert r.content == b"world"
    r = await app_client.head(f"{S}/a")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["cache-control"] == "no-store"
    assert "stream-closed" not in r.headers


async def test_put_conflicts_and_defaults(app_client: httpx.AsyncClient) -> None:
    r = await app_client.put(f"{S}/d")
    assert r.status_code == 201
    assert r.headers["content-type"] == "application/octet-stream"
    assert_error(await app_client.put(f"{S}/d", headers=TEXT), 409)
    r = await app_client.put(f"{S}/t", headers={**TEXT, "stream-ttl": "60"})
    assert r.status_code == 201
    assert (await app_client.head(f"{S}/t")).headers["stream-ttl"] == "60"
    assert_error(await app_client.put(f"{S}/t", headers={**TEXT, "stream-ttl": "61"}), 409)


@pytest.mark.parametrize("ttl", ["+3600", "03600", "3600.0", "3.6e3", "-1", "abc"])
async def test_bad_ttl_is_400(app_client: httpx.AsyncClient, ttl: str) -> None:
    assert_error(await app_client.put(f"{S}/x", headers={**TEXT, "stream-ttl": ttl}), 400)


async def test_ttl_and_expires_together_is_400(app_client: httpx.AsyncClient) -> None:
    headers = {**TEXT, "stream-ttl": "10", "stream-expires-at": "2030-01-01T00:00:00Z"}
    assert_error(await app_client.put(f"{S}/x", headers=headers), 400)
    r = await app_client.put(
        f"{S}/e", headers={**TEXT, "stream-expires-at": "2099-01-01T00:00:00Z"}
    )
    assert r.status_code == 201
    head = await app_client.head(f"{S}/e")
    assert head.headers["stream-expires-at"] == "2099-01-01T00:00:00Z"


async def test_append_errors(app_client: httpx.AsyncClient) -> None:
    assert_error(await app_client.post(f"{S}/none", headers=TEXT, content=b"x"), 404)
    await app_client.put(f"{S}/a", headers=TEXT)
    assert_error(await app_client.post(f"{S}/a", headers=TEXT, content=b""), 400)
    assert_error(await app_client.post(f"{S}/a", content=b"x"), 400)
    assert_error(await app_client.post(f"{S}/a", headers=JSON, content=b"{}"), 409)
    await app_client.post(f"{S}/a", headers={**TEXT, "stream-seq": "2"}, content=b"x")
    assert_error(
        await app_client.post(f"{S}/a", headers={**TEXT, "stream-seq": "10"}, content=b"y"), 409
    )
    r = await app_client.post(f"{S}/a", headers={**TEXT, "stream-seq": "3"}, content=b"z")
    assert r.status_code == 204


async def test_delete(app_client: httpx.AsyncClient) -> None:
    assert_error(await app_client.delete(f"{S}/gone"), 404)
    await app_client.put(f"{S}/gone", headers=TEXT)
    assert (await app_client.delete(f"{S}/gone")).status_code == 204
    assert_error(await app_client.get(f"{S}/gone"), 404)


# -- JSON mode --


async def test_json_mode(app_client: httpx.AsyncClient) -> None:
    r = await app_client.put(
        f"{S}/j", headers={"content-type": "application/json; charset=utf-8"}, content=b"[]"
    )
    assert r.status_code == 201
    assert (await app_client.get(f"{S}/j")).content == b"[]"
    assert_error(await app_client.post(f"{S}/j", headers=JSON, content=b"[]"), 400)
    assert_error(await app_client.post(f"{S}/j", headers=JSON, content=b"{bad"), 400)
    await app_client.post(f"{S}/j", headers=JSON, content=b'[{"a":1}, [2, 3]]')
    await app_client.post(f"{S}/j", headers=JSON, content=b'"s"')
    r = await app_client.get(f"{S}/j")
    assert r.json() == [{"a": 1}, [2, 3], "s"]
    r = await app_client.get(f"{S}/j", params={"offset": "now"})
    assert r.content == b"[]"
    assert r.headers["cache-control"] == "no-store"
    assert "etag" not in r.headers


# -- idempotent producers --


async def test_producer_rules(app_client: httpx.AsyncClient) -> None:
    await app_client.put(f"{S}/p", headers=TEXT)
    r = await app_client.post(f"{S}/p", headers={**TEXT, **producer("w", 0, 0)}, content=b"a")
    assert r.status_code == 200
    assert (r.headers["producer-epoch"], r.headers["producer-seq"]) == ("0", "0")
    r = await app_client.post(f"{S}/p", headers={**TEXT, **producer("w", 0, 0)}, content=b"a")
    assert r.status_code == 204
    r = await app_client.post(f"{S}/p", headers={**TEXT, **producer("w", 0, 5)}, content=b"b")
    assert_error(r, 409)
    assert (r.headers["producer-expected-seq"], r.headers["producer-received-seq"]) == ("1", "5")
    r = await app_client.post(f"{S}/p", headers={**TEXT, **producer("w", 1, 1)}, content=b"b")
    assert_error(r, 400)
    r = await app_client.post(f"{S}/p", headers={**TEXT, **producer("w", 1, 0)}, content=b"b")
    assert r.status_code == 200
    r = await app_client.post(f"{S}/p", headers={**TEXT, **producer("w", 0, 1)}, content=b"c")
    assert_error(r, 403)
    assert r.headers["producer-epoch"] == "1"
    partial = {**TEXT, "producer-id": "w", "producer-epoch": "1"}
    assert_error(await app_client.post(f"{S}/p", headers=partial, content=b"d"), 400)
    assert (await app_client.get(f"{S}/p")).content == b"ab"


# -- closure --


async def test_closure(app_client: httpx.AsyncClient) -> None:
    await app_client.put(f"{S}/c", headers=TEXT, content=b"x")
    etag_open = (await app_client.get(f"{S}/c")).headers["etag"]
    r = await app_client.post(f"{S}/c", headers={**TEXT, "stream-closed": "true"}, content=b"y")
    assert r.status_code == 204 and r.headers["stream-closed"] == "true"
    tail = r.headers["stream-next-offset"]
    r = await app_client.post(f"{S}/c", headers={"stream-closed": "TRUE"})
    assert r.status_code == 204 and r.headers["stream-closed"] == "true"
    r = await app_client.post(f"{S}/c", headers=TEXT, content=b"z")
    assert_error(r, 409)
    assert r.headers["stream-closed"] == "true" and r.headers["stream-next-offset"] == tail
    r = await app_client.get(f"{S}/c")
    assert r.content == b"xy" and r.headers["stream-closed"] == "true"
    assert r.headers["etag"] != etag_open
    r = await app_client.get(f"{S}/c", params={"offset": tail, "live": "long-poll"})
    assert r.status_code == 204
    assert r.headers["stream-closed"] == "true" and r.headers["stream-up-to-date"] == "true"
    assert (await app_client.head(f"{S}/c")).headers["stream-closed"] == "true"
    # Plain PUT to a closed stream does not match its state.
    assert_error(await app_client.put(f"{S}/c", headers=TEXT), 409)


async def test_create_closed(app_client: httpx.AsyncClient) -> None:
    r = await app_client.put(f"{S}/cc", headers={**TEXT, "stream-closed": "true"}, content=b"all")
    assert r.status_code == 201 and r.headers["stream-closed"] == "true"
    r = await app_client.get(f"{S}/cc", params={"offset": "now"})
    assert r.headers["stream-closed"] == "true"


# -- caching --


async def test_etag_304_and_cache_control(app_client: httpx.AsyncClient) -> None:
    await app_client.put(f"{S}/e", headers=TEXT, content=b"x")
    r = await app_client.get(f"{S}/e")
    etag = r.headers["etag"]
    assert r.headers["cache-control"].startswith("public, max-age=60")
    r = await app_client.get(f"{S}/e", headers={"if-none-match": etag})
    assert r.status_code == 304 and r.content == b""
    r = await app_client.get(f"{S}/e", headers={"if-none-match": '"nope"'})
    assert r.status_code == 200
    tail = r.headers["stream-next-offset"]
    r = await app_client.get(f"{S}/e", params={"offset": tail})
    assert r.content == b"" and r.headers["cache-control"] == "no-cache"


# -- offsets --


@pytest.mark.parametrize(
    "query",
    [
        "offset=",
        "offset=a&offset=b",
        "offset=0,1",
        "offset=0%201",
        "offset=zzz",
        "live=sse",
        "live=long-poll",
        "offset=-1&live=bogus",
        "offset=9999999999999999_9999999999999999",
    ],
)
async def test_bad_read_queries_are_400(app_client: httpx.AsyncClient, query: str) -> None:
    await app_client.put(f"{S}/o", headers=TEXT, content=b"data")
    assert_error(await app_client.get(f"{S}/o?{query}"), 400)


async def test_chunked_catch_up_marks_up_to_date_only_at_tail() -> None:
    settings = ServerSettings(streams=StreamSettings(read_chunk_bytes=10))
    app = create_app(MemoryStore(), settings)
    async with app.router.lifespan_context(app), _client(app) as client:
        await client.put(f"{S}/big", headers=TEXT)
        for i in range(5):
            await client.post(f"{S}/big", headers=TEXT, content=f"chunk-{i}".encode())
        await client.post(f"{S}/big", headers={"stream-closed": "true"})
        got, offset, pages = b"", "-1", 0
        while True:
            r = await client.get(f"{S}/big", params={"offset": offset})
            pages += 1
            got += r.content
            offset = r.headers["stream-next-offset"]
            if r.headers.get("stream-up-to-date") == "true":
                assert r.headers["stream-closed"] == "true"
                break
            assert "stream-closed" not in r.headers
        assert got == b"".join(f"chunk-{i}".encode() for i in range(5))
        assert pages >= 5


# -- long-poll -------------------------------------------------------------------------------


async def test_long_poll_times_out_with_204(app_client: httpx.AsyncClient) -> None:
    await app_client.put(f"{S}/lp", headers=TEXT)
    start = time.monotonic()
    r = await app_client.get(f"{S}/lp", params={"offset": "now", "live": "long-poll"})
    assert r.status_code == 204
    assert time.monotonic() - start >= 0.15
    assert r.headers["stream-up-to-date"] == "true"
    assert r.headers["stream-cursor"].isdigit()


async def test_long_poll_wakes_on_append(app_client: httpx.AsyncClient, app: Starlette) -> None:
    # A long timeout shows the wake comes from the append, not the timeout.
    app.state.streams.settings = StreamSettings(long_poll_timeout=10)
    await app_client.put(f"{S}/lp", headers=TEXT, content=b"old")

    async def poll() -> httpx.Response:
        return await app_client.get(f"{S}/lp", params={"offset": "now", "live": "long-poll"})

    task = asyncio.create_task(poll())
    for _ in range(200):
        if app.state.streams.live_requests:
            break
        await asyncio.sleep(0.005)
    await app_client.post(f"{S}/lp", headers=TEXT, content=b"new")
    r = await asyncio.wait_for(task, 5)
    assert r.status_code == 200 and r.content == b"new"
    assert "stream-cursor" in r.headers


async def test_long_poll_cursor_collision_jitters(app_client: httpx.AsyncClient) -> None:
    await app_client.put(f"{S}/cur", headers=TEXT)
    r = await app_client.get(f"{S}/cur", params={"offset": "now", "live": "long-poll"})
    cursor = int(r.headers["stream-cursor"])
    r = await app_client.get(
        f"{S}/cur", params={"offset": "now", "live": "long-poll", "cursor": str(cursor)}
    )
    assert int(r.headers["stream-cursor"]) > cursor


async def test_shutdown_ends_long_poll(app_client: httpx.AsyncClient, app: Starlette) -> None:
    app.state.streams.settings = StreamSettings(long_poll_timeout=30)
    await app_client.put(f"{S}/sd", headers=TEXT)
    task = asyncio.create_task(
        app_client.get(f"{S}/sd", params={"offset": "now", "live": "long-poll"})
    )
    for _ in range(200):
        if app.state.streams.live_requests:
            break
        await asyncio.sleep(0.005)
    app.state.streams.begin_shutdown()
    r = await asyncio.wait_for(task, 2)
    assert r.status_code == 204


# -- SSE --


async def test_sse_json_pairs_data_and_control(app_client: httpx.AsyncClient) -> None:
    await app_client.put(f"{S}/sj", headers=JSON, content=b'[{"n":1}]')
    await app_client.post(f"{S}/sj", headers=JSON, content=b'[{"n":2}]')
    await app_client.post(f"{S}/sj", headers={"stream-closed": "true"})
    r = await app_client.get(f"{S}/sj", params={"offset": "-1", "live": "sse"})
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["cache-control"] == "no-cache"
    assert "stream-sse-data-encoding" not in r.headers
    events = sse_events(r.text)
    values = []
    for i, (event, data) in enumerate(events):
        if event == "data":
            assert events[i + 1][0] == "control"
            values.extend(json.loads(data))
    assert values == [{"n": 1}, {"n": 2}]
    final = json.loads(events[-1][1])
    assert final["streamClosed"] is True and "streamCursor" not in final


async def test_sse_binary_is_base64(app_client: httpx.AsyncClient) -> None:
    payload = bytes(range(256))
    await app_client.put(f"{S}/sb", headers={"content-type": "image/png"}, content=payload)
    r = await app_client.get(f"{S}/sb", params={"offset": "-1", "live": "sse"})
    assert r.headers["stream-sse-data-encoding"] == "base64"
    events = sse_events(r.text)
    data = [d for e, d in events if e == "data"]
    assert base64.b64decode("".join(data)) == payload
    # The stream is open: the connection ended at the max duration.
    control = json.loads([d for e, d in events if e == "control"][-1])
    assert control["upToDate"] is True and "streamCursor" in control


async def test_sse_live_delivery_and_close(app_client: httpx.AsyncClient, app: Starlette) -> None:
    app.state.streams.settings = StreamSettings(sse_max_duration=10)
    await app_client.put(f"{S}/sl", headers=TEXT)
    task = asyncio.create_task(app_client.get(f"{S}/sl", params={"offset": "now", "live": "sse"}))
    for _ in range(200):
        if app.state.streams.live_requests:
            break
        await asyncio.sleep(0.005)
    await app_client.post(f"{S}/sl", headers={**TEXT, "stream-closed": "true"}, content=b"bye\nnow")
    r = await asyncio.wait_for(task, 5)
    events = sse_events(r.text)
    assert ("data", "bye\nnow") in events
    assert json.loads(events[-1][1])["streamClosed"] is True


async def test_sse_errors_before_streaming(app_client: httpx.AsyncClient) -> None:
    assert_error(await app_client.get(f"{S}/nope", params={"offset": "-1", "live": "sse"}), 404)


# -- forks --


async def test_fork_sub_offset_and_soft_delete(app_client: httpx.AsyncClient) -> None:
    r = await app_client.put(f"{S}/src", headers=TEXT, content=b"first")
    anchor = r.headers["stream-next-offset"]
    await app_client.post(f"{S}/src", headers=TEXT, content=b"second")
    fork = {
        "stream-forked-from": f"{S}/src",
        "stream-fork-offset": anchor,
        "stream-fork-sub-offset": "3",
    }
    r = await app_client.put(f"{S}/fork", headers=fork)
    assert r.status_code == 201 and r.headers["content-type"] == "text/plain"
    assert "stream-forked-from" not in r.headers
    assert (await app_client.get(f"{S}/fork")).content == b"firstsec"
    assert (await app_client.put(f"{S}/fork", headers=fork)).status_code == 200
    assert_error(
        await app_client.put(f"{S}/fork", headers={**fork, "stream-fork-sub-offset": "4"}), 409
    )
    assert_error(
        await app_client.put(f"{S}/f2", headers={**fork, "stream-fork-sub-offset": "99"}), 400
    )
    assert_error(
        await app_client.put(f"{S}/f3", headers={**fork, "stream-fork-sub-offset": "05"}), 400
    )
    assert_error(await app_client.put(f"{S}/f4", headers={"stream-fork-sub-offset": "0"}), 400)
    assert_error(
        await app_client.put(f"{S}/f5", headers={"stream-forked-from": f"{S}/missing"}), 404
    )
    assert_error(
        await app_client.put(f"{S}/f6", headers={**fork, "content-type": "image/png"}), 409
    )
    assert (await app_client.delete(f"{S}/src")).status_code == 204
    assert_error(await app_client.get(f"{S}/src"), 410)
    assert (await app_client.head(f"{S}/src")).status_code == 410
    assert_error(await app_client.post(f"{S}/src", headers=TEXT, content=b"x"), 410)
    assert_error(await app_client.put(f"{S}/src", headers=TEXT), 409)
    assert_error(await app_client.put(f"{S}/f7", headers={"stream-forked-from": f"{S}/src"}), 409)
    assert (await app_client.get(f"{S}/fork")).content == b"firstsec"


# -- security, CORS, paths, limits --


async def test_security_and_cors_headers_everywhere(app_client: httpx.AsyncClient) -> None:
    for r in [
        await app_client.get(f"{S}/missing"),
        await app_client.get("/healthz"),
        await app_client.get("/no/such/route"),
    ]:
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cross-origin-resource-policy"] == "cross-origin"
        assert r.headers["access-control-allow-origin"] == "*"
        assert "Stream-Next-Offset" in r.headers["access-control-expose-headers"]
    r = await app_client.options(
        f"{S}/any",
        headers={
            "origin": "http://x",
            "access-control-request-method": "GET",
            "access-control-request-headers": "if-none-match",
        },
    )
    assert r.status_code == 204
    assert "If-None-Match" in r.headers["access-control-allow-headers"]
    assert "DELETE" in r.headers["access-control-allow-methods"]


async def test_security_headers_exactly_once_on_every_stream_response(
    app_client: httpx.AsyncClient,
) -> None:
    """Stream requests bypass the Starlette middleware: the app adds the headers itself."""
    await app_client.put(f"{S}/once", headers=TEXT)
    responses = [
        await app_client.post(f"{S}/once", headers=TEXT, content=b"x"),
        await app_client.get(f"{S}/once", params={"offset": "-1"}),
        await app_client.get(f"{S}/once", params={"offset": "-1", "live": "sse"}),
        await app_client.head(f"{S}/once"),
        await app_client.get(f"{S}/__ds/jwks.json"),
        await app_client.get(f"{S}/once", params={"offset": "bogus"}),
    ]
    for r in responses:
        for name in ("x-content-type-options", "access-control-allow-origin"):
            assert len(r.headers.get_list(name)) == 1, (r.request.url, name)


async def test_unexpected_error_carries_security_headers() -> None:
    app = create_app(_BrokenStore(RuntimeError("boom")))
    async with app.router.lifespan_context(app), _client(app) as client:
        await client.put(f"{S}/a", headers=TEXT)
        r = await client.post(f"{S}/a", headers=TEXT, content=b"x")
        assert_error(r, 500)
        assert r.headers.get_list("x-content-type-options") == ["nosniff"]


async def test_healthz(app_client: httpx.AsyncClient) -> None:
    r = await app_client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "live": 0}


async def raw_get(app: Starlette, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    """Call the ASGI app with an unnormalized path (HTTP clients normalize dots)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]
    return start["status"], dict(start["headers"]), body  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["a/../b", "a/./b", "a//b", "", "a/", "..", "a/..", "a\\b"])
async def test_path_traversal_is_400(app: Starlette, path: str) -> None:
    status, headers, body = await raw_get(app, f"{S}/{path}")
    assert status == 400, body
    assert json.loads(body)["error"]["code"] == "INVALID_PATH"
    assert headers[b"x-content-type-options"] == b"nosniff"


async def test_unsupported_method_is_405(app_client: httpx.AsyncClient) -> None:
    assert_error(await app_client.request("PATCH", f"{S}/a"), 405)


async def test_body_limit_413(app_client: httpx.AsyncClient) -> None:
    await app_client.put(f"{S}/big", headers=TEXT)
    too_big = b"x" * (64 * 1024 + 1)
    assert_error(await app_client.post(f"{S}/big", headers=TEXT, content=too_big), 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: streamed check
        for _ in range(100):
            yield b"y" * 1024

    assert_error(await app_client.post(f"{S}/big", headers=TEXT, content=chunks()), 413)
    assert (await app_client.get(f"{S}/big")).content == b""


# -- failures --


class _BrokenStore(MemoryStore):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    async def append(self, path: str, messages: Sequence[bytes], **kwargs: object) -> object:  # type: ignore[override]
        raise self.exc


def _client(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("127.0.0.1", 1))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_store_unavailable_is_503() -> None:
    app = create_app(_BrokenStore(StoreUnavailable("disk full")))
    async with app.router.lifespan_context(app), _client(app) as client:
        await client.put(f"{S}/a", headers=TEXT)
        r = await client.post(f"{S}/a", headers=TEXT, content=b"x")
        assert_error(r, 503)
        assert r.headers["retry-after"] == "1"


async def test_unexpected_error_is_opaque_500() -> None:
    app = create_app(_BrokenStore(RuntimeError("secret detail")))
    async with app.router.lifespan_context(app), _client(app) as client:
        await client.put(f"{S}/a", headers=TEXT)
        r = await client.post(f"{S}/a", headers=TEXT, content=b"x")
        assert_error(r, 500)
        assert "secret" not in r.text and "Traceback" not in r.text


# -- subscriptions routing and auth --


async def test_ds_paths_go_to_subscriptions(app_client: httpx.AsyncClient) -> None:
    r = await app_client.get(f"{S}/__ds/jwks.json")
    assert r.status_code == 200
    assert "application/jwk-set+json" in r.headers["content-type"]


SECRET = "test-secret-that-is-long-enough-for-hs256"


def token(**claims: object) -> str:
    return jwt.encode({"exp": time.time() + 3600, **claims}, SECRET, algorithm="HS256")


async def test_jwt_auth() -> None:
    app = create_app(MemoryStore(), ServerSettings(auth_secret=SECRET))
    async with app.router.lifespan_context(app), _client(app) as client:
        r = await client.get(f"{S}/a/x")
        assert_error(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        bad = {"authorization": "Bearer not-a-token"}
        assert_error(await client.get(f"{S}/a/x", headers=bad), 401)
        expired = jwt.encode({"exp": time.time() - 60, "write": [""]}, SECRET, algorithm="HS256")
        r = await client.get(f"{S}/a/x", headers={"authorization": f"Bearer {expired}"})
        assert_error(r, 401)
        assert "expired" in r.json()["error"]["message"]
        writer = {"authorization": f"Bearer {token(write=['stream/a/'])}"}
        reader = {"authorization": f"Bearer {token(read=['stream/a/'])}"}
        assert (await client.put(f"{S}/a/x", headers={**TEXT, **writer})).status_code == 201
        assert_error(await client.put(f"{S}/b/x", headers={**TEXT, **writer}), 403)
        assert_error(await client.post(f"{S}/a/x", headers={**TEXT, **reader}, content=b"x"), 403)
        r = await client.get(f"{S}/a/x", headers=reader)
        assert r.status_code == 200
        assert r.headers["cache-control"].startswith("private") or r.content == b""
        r = await client.get(f"{S}/a/x", params={"token": token(read=["stream/a/"])})
        assert r.status_code == 200
        assert_error(await client.get(f"{S}/__ds/jwks.json", headers=reader), 403)


async def test_remote_clients_refused_by_default() -> None:
    app = create_app(MemoryStore())
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        r = await client.get(f"{S}/a")
        assert_error(r, 403)
        assert "--auth-secret" in r.json()["error"]["message"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab=&;%+ 2x-_.\x00é", max_size=30))
def test_fast_query_parse_equals_parse_qs(raw: str) -> None:
    assert _parse_query(raw) == parse_qs(raw, keep_blank_values=True)


async def test_streams_at_the_root_keep_healthz() -> None:
    app = create_app(MemoryStore(), ServerSettings(streams=StreamSettings(prefix="/")))
    async with app.router.lifespan_context(app), _client(app) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        assert (await client.put("/a", headers=TEXT)).status_code == 201
        assert (await client.post("/a", headers=TEXT, content=b"x")).status_code == 204


# -- the plain-append fast path answers exactly like the general one --


async def test_plain_append_answer_has_every_header(app_client: httpx.AsyncClient) -> None:
    await app_client.put(f"{S}/fast", headers=JSON)
    r = await app_client.post(f"{S}/fast", headers=JSON, content=b'{"a":1}')
    assert r.status_code == 204
    names = [name.lower() for name in r.headers]
    assert sorted(names) == sorted(
        [
            "stream-next-offset",
            "x-content-type-options",
            "cross-origin-resource-policy",
            "access-control-allow-origin",
            "access-control-expose-headers",
            "content-length",
        ]
    )
    assert r.headers["content-length"] == "0"
    head = await app_client.head(f"{S}/fast")
    assert r.headers["stream-next-offset"] == head.headers["stream-next-offset"]


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [
        ("producer-id", "p", 400),
        ("producer-epoch", "0", 400),
        ("producer-seq", "0", 400),
        ("stream-seq", "", 400),
        ("stream-closed", "true", 204),
    ],
)
async def test_each_optional_post_header_alone_is_honoured(
    app_client: httpx.AsyncClient, header: str, value: str, status: int
) -> None:
    # Each optional header, sent alone, must leave the fast path: a lone
    # producer header is a 400 (DS §3), an empty Stream-Seq too, and
    # Stream-Closed closes the stream (DS §2).
    await app_client.put(f"{S}/opt", headers=TEXT)
    r = await app_client.post(f"{S}/opt", headers={**TEXT, header: value}, content=b"x")
    assert r.status_code == status, r.text
    if status == 204:
        assert r.headers["stream-closed"] == "true"
        assert (await app_client.head(f"{S}/opt")).headers["stream-closed"] == "true"
