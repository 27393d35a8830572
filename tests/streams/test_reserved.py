"""Reserved namespaces: stream paths whose first segment starts with ``__`` belong to the server.

Through the public streams API every method answers 404 there, for every principal (loopback
without auth, a token with ``stream/`` rights, an admin token); no other route that names a
stream (fork source, subscription streams, patterns, wake streams) reaches them; the room
journal stays readable through ``GET /v1/rooms/{room}/journal``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from durasync.namespaces import ReservedAccess, is_reserved
from durasync.server import ServerSettings, create_app
from durasync.store import MemoryStore
from durasync.store.base import LogStore, StreamConfig
from durasync.streams.app import StreamSettings

S = "/v1/stream"
SECRET = "reserved-namespace-test-secret-0123456789"
JOURNAL = "__rooms/sec/journal"
JOURNAL_RECORD = b'{"serverSeq":1,"msg":{"id":"alice:1","client":"alice"}}'
#: Reserved paths a client might try (the store holds the first one).
RESERVED = [JOURNAL, "__rooms/sec/snapshot", "__rooms", "__registry__", "__dsx/a", "__/x", "___"]
METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]


def token(**claims: Any) -> str:
    return jwt.encode({"exp": time.time() + 600, **claims}, SECRET, algorithm="HS256")


async def _seed(store: LogStore) -> None:
    await store.create(
        JOURNAL, StreamConfig(content_type="application/json"), initial=[JOURNAL_RECORD]
    )


@pytest.fixture
async def loopback_app() -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(MemoryStore(), ServerSettings(streams=StreamSettings(long_poll_timeout=0.2)))
    async with app.router.lifespan_context(app):
        await _seed(app.state.store)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield app, client


@pytest.fixture
async def token_app() -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    settings_ = ServerSettings(streams=StreamSettings(long_poll_timeout=0.2), auth_secret=SECRET)
    app = create_app(MemoryStore(), settings_)
    async with app.router.lifespan_context(app):
        await _seed(app.state.store)
        transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield app, client


def test_is_reserved_looks_at_the_first_segment_only() -> None:
    for path in [
        "__rooms/a/journal",
        "/__rooms/a",
        "__ds",
        "__ds/subscriptions/x",
        "__x__/y",
        "__",
    ]:
        assert is_reserved(path), path
    for path in ["a/__b", "_a", "a__", "rooms/__x", "", "a/b"]:
        assert not is_reserved(path), path


def test_public_reserved_paths_must_be_reserved() -> None:
    with pytest.raises(ValueError, match="not a reserved path"):
        ReservedAccess(["registry"])
    access = ReservedAccess(["__registry__"])
    assert access.readable("__registry__") and not access.hidden("__registry__")
    assert access.hidden(JOURNAL) and not access.hidden("plain")


async def _assert_hidden(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> None:
    for method in METHODS:
        body = b'{"serverSeq":2,"msg":{"client":"alice"}}' if method in ("PUT", "POST") else b""
        r = await client.request(
            method,
            f"{S}/{path}",
            headers={**headers, "content-type": "application/json"},
            content=body,
        )
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        if method != "HEAD":
            assert r.json()["error"]["code"] == "NOT_FOUND"
    for params in (
        {"offset": "-1"},
        {"offset": "-1", "live": "long-poll"},
        {"offset": "-1", "live": "sse"},
    ):
        r = await client.get(f"{S}/{path}", params=params, headers=headers)
        assert r.status_code == 404, (path, params, r.status_code)


async def _journal_intact(store: LogStore) -> None:
    res = await store.read(JOURNAL, "-1")
    assert [e.data for e in res.entries] == [JOURNAL_RECORD]


async def test_loopback_without_auth_cannot_reach_reserved_streams(
    loopback_app: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = loopback_app
    for path in RESERVED:
        await _assert_hidden(client, path, {})
    # Percent-encoding the mark does not hide it (the decoded path is checked).
    r = await client.get(f"{S}/%5F%5Frooms/sec/journal", params={"offset": "-1"})
    assert r.status_code == 404
    await _journal_intact(app.state.store)
    assert not any(
        is_reserved(i.path) and i.path != JOURNAL for i in await app.state.store.list_streams()
    )


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "streams-writer", "read": ["stream/"], "write": ["stream/"]},
        {"sub": "everything", "read": [""], "write": [""]},
        {"sub": "admin", "admin": True},
    ],
)
async def test_no_token_reaches_reserved_streams(
    token_app: tuple[Starlette, httpx.AsyncClient], claims: dict[str, Any]
) -> None:
    app, client = token_app
    headers = {"authorization": f"Bearer {token(**claims)}"}
    for path in RESERVED:
        await _assert_hidden(client, path, headers)
    await _journal_intact(app.state.store)


reserved_paths = st.builds(
    lambda first, rest: "/".join([first, *rest]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-.~0123456789", max_size=8).map(
        lambda s: "__" + s
    ),
    st.lists(st.text(alphabet="abcxyz_0123456789", min_size=1, max_size=6), max_size=3),
).filter(lambda p: p != "__ds" and not p.startswith("__ds/"))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=reserved_paths, method=st.sampled_from(METHODS))
def test_every_reserved_path_is_404_for_every_method(path: str, method: str) -> None:
    async def run() -> None:
        app = create_app(
            MemoryStore(), ServerSettings(streams=StreamSettings(long_poll_timeout=0.01))
        )
        async with app.router.lifespan_context(app):
            await _seed(app.state.store)
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.request(
                    method, f"{S}/{path}", headers={"content-type": "text/plain"}, content=b"x"
                )
                assert r.status_code == 404, (method, path, r.status_code, r.text)
            assert [i.path for i in await app.state.store.list_streams()] == [JOURNAL]

    asyncio.run(run())


async def test_subscription_control_routes_still_answer(
    loopback_app: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = loopback_app
    r = await client.get(f"{S}/__ds/jwks.json")
    assert r.status_code == 200 and "keys" in r.json()


async def test_fork_cannot_name_a_reserved_source(
    loopback_app: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = loopback_app
    for source in (
        f"{S}/{JOURNAL}",
        JOURNAL,
        f"http://t{S}/{JOURNAL}",
        f"{S}/%5F%5Frooms/sec/journal",
    ):
        r = await client.put(f"{S}/copy", headers={"stream-forked-from": source})
        assert r.status_code == 404, (source, r.status_code, r.text)
        assert r.json()["error"]["code"] == "NOT_FOUND"
        r = await client.get(f"{S}/copy", params={"offset": "-1"})
        assert r.status_code == 404


async def test_subscriptions_cannot_name_or_match_reserved_streams(
    loopback_app: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = loopback_app
    await client.put(f"{S}/events/a", headers={"content-type": "application/json"}, content=b"[1]")
    base = f"{S}/__ds/subscriptions"
    refused = [
        {"type": "pull-wake", "streams": [JOURNAL], "wake_stream": "w"},
        {"type": "pull-wake", "streams": ["/__registry__"], "wake_stream": "w"},
        {"type": "pull-wake", "pattern": "__rooms/**", "wake_stream": "w"},
        {"type": "pull-wake", "pattern": "/__x*/**", "wake_stream": "w"},
        # The wake stream is written by the server: never into a reserved stream.
        {"type": "pull-wake", "streams": ["events/a"], "wake_stream": JOURNAL},
    ]
    for i, body in enumerate(refused):
        r = await client.put(f"{base}/bad{i}", json=body)
        assert r.status_code == 400, (body, r.status_code, r.text)
    # A catch-all pattern links public streams only.
    r = await client.put(
        f"{base}/all", json={"type": "pull-wake", "pattern": "**", "wake_stream": "w"}
    )
    assert r.status_code == 201, r.text
    assert [s["path"] for s in r.json()["streams"]] == ["events/a"]
    r = await client.put(
        f"{base}/stars", json={"type": "pull-wake", "pattern": "*/*/*", "wake_stream": "w"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["streams"] == []
    # Adding a reserved stream to an existing subscription is refused too.
    r = await client.post(f"{base}/all/streams", json={"streams": [JOURNAL]})
    assert r.status_code == 400
    # An append to a reserved stream (the rooms layer writes the store directly) never links.
    await app.state.subscriptions.notify_append(JOURNAL, "0000000000000001_0000000000000010")
    r = await client.get(f"{base}/all")
    assert [s["path"] for s in r.json()["streams"]] == ["events/a"]
    await _journal_intact(app.state.store)


async def test_room_journal_is_readable_through_the_rooms_route(
    loopback_app: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = loopback_app
    r = await client.get("/v1/rooms/sec/journal", params={"offset": "-1"})
    assert r.status_code == 200, r.text
    assert r.json() == [{"serverSeq": 1, "msg": {"id": "alice:1", "client": "alice"}}]
    r = await client.head("/v1/rooms/sec/journal")
    assert r.status_code == 200


async def test_room_journal_needs_room_rights_not_stream_rights(
    token_app: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = token_app
    streams_only = {"authorization": f"Bearer {token(read=['stream/'], write=['stream/'])}"}
    r = await client.get("/v1/rooms/sec/journal", params={"offset": "-1"}, headers=streams_only)
    assert r.status_code == 403
    room_reader = {"authorization": f"Bearer {token(read=['room/sec'])}"}
    r = await client.get("/v1/rooms/sec/journal", params={"offset": "-1"}, headers=room_reader)
    assert r.status_code == 200


async def test_a_declared_public_reserved_stream_is_readable_not_writable() -> None:
    settings_ = ServerSettings(streams=StreamSettings(public_reserved=frozenset({"__registry__"})))
    app = create_app(MemoryStore(), settings_)
    async with app.router.lifespan_context(app):
        await app.state.store.create(
            "__registry__", StreamConfig(content_type="text/plain"), initial=[b"entry"]
        )
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get(f"{S}/__registry__", params={"offset": "-1"})
            assert r.status_code == 200 and r.content == b"entry"
            assert (await client.head(f"{S}/__registry__")).status_code == 200
            for method in ("PUT", "POST", "DELETE"):
                r = await client.request(
                    method,
                    f"{S}/__registry__",
                    headers={"content-type": "text/plain"},
                    content=b"x",
                )
                assert r.status_code == 403, (method, r.status_code)
                assert r.json()["error"]["code"] == "READ_ONLY"
            # Readable, so it may be a fork source.
            r = await client.put(f"{S}/mine", headers={"stream-forked-from": f"{S}/__registry__"})
            assert r.status_code == 201, r.text
            # Other reserved paths stay hidden.
            r = await client.get(f"{S}/{JOURNAL}", params={"offset": "-1"})
            assert r.status_code == 404
