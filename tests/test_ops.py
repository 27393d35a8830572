"""The read-only operations APIs (durasync/ops.py), in-process: ``/readyz`` while serving and
once draining, ``/v1/inspect/*`` honouring auth (401 without a token, only readable streams,
no server-internal stream), bounded parameters."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest

from durasync.server import ServerSettings, create_app
from durasync.store import MemoryStore

# Tokens made at import time must outlive a whole `make test` run: valid for a day.
SECRET = "ops-api-test-secret-0123456789abcdef"
JSON = {"content-type": "application/json"}


def bearer(**claims: object) -> dict[str, str]:
    token = jwt.encode({"exp": time.time() + 86_400, **claims}, SECRET, algorithm="HS256")
    return {"authorization": f"Bearer {token}"}


ALL = bearer(sub="ops", read=[""], write=[""])


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(MemoryStore(), ServerSettings(auth_secret=SECRET, registry_stream=True))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


async def test_readyz_turns_503_when_draining(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready"})
    client.app.state.streams.begin_shutdown()  # type: ignore[attr-defined]
    r = await client.get("/readyz")
    assert (r.status_code, r.json()) == (503, {"status": "shutting_down"})
    assert (await client.get("/healthz")).status_code == 200


async def test_inspect_apis_need_a_token(client: httpx.AsyncClient) -> None:
    for path in ("/v1/inspect/node", "/v1/inspect/streams", "/v1/inspect/rooms/r"):
        r = await client.get(path)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "MISSING_TOKEN"


async def test_streams_listing_shows_only_what_the_token_reads(client: httpx.AsyncClient) -> None:
    for path in ("a/1", "a/2", "b/1"):
        assert (await client.put(f"/v1/stream/{path}", headers={**ALL, **JSON})).status_code == 201
    await client.post("/v1/stream/a/1", content=b"[1,2,3]", headers={**ALL, **JSON})
    # A room's internal streams (__rooms/...) exist in the store too: never listed.
    await client.app.state.rooms.get_room("room1", create=True)  # type: ignore[attr-defined]
    r = await client.get("/v1/inspect/streams", headers=ALL)
    listed = {s["path"]: s for s in r.json()["streams"]}
    assert set(listed) == {"__registry__", "a/1", "a/2", "b/1"}
    assert listed["a/1"]["messages"] == 3 and listed["a/1"]["contentType"] == "application/json"
    only_a = bearer(sub="a", read=["stream/a/"])
    r = await client.get("/v1/inspect/streams", headers=only_a)
    assert [s["path"] for s in r.json()["streams"]] == ["a/1", "a/2"]
    r = await client.get("/v1/inspect/streams?prefix=a/&limit=1", headers=ALL)
    body = r.json()
    assert [s["path"] for s in body["streams"]] == ["a/1"] and body["truncated"] is True
    for bad in ("limit=0", "limit=1001", "limit=x"):
        r = await client.get(f"/v1/inspect/streams?{bad}", headers=ALL)
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_LIMIT"


async def test_node_and_room_views(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/inspect/node", headers=ALL)
    node = r.json()
    assert node["store"] == "memory" and node["storeAvailable"] is True and node["ready"] is True
    assert node["replicationLinks"] == []
    assert (await client.get("/v1/inspect/rooms/nope", headers=ALL)).status_code == 404
    await client.app.state.rooms.get_room("r1", create=True)  # type: ignore[attr-defined]
    room = (await client.get("/v1/inspect/rooms/r1", headers=ALL)).json()
    assert room["serverSeq"] == 0 and room["members"] == [] and room["epoch"]
    assert room["journal"]["messages"] == 0 and room["snapshot"]["seq"] == 0
    no_rooms = bearer(sub="s", read=["stream/"])
    assert (await client.get("/v1/inspect/rooms/nope", headers=no_rooms)).status_code == 403
    assert (await client.get("/v1/inspect/rooms/a%2Fb", headers=ALL)).status_code in (400, 404)


async def test_the_inspector_page_is_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/inspect/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    js = await client.get("/inspect/inspector.js")
    assert js.status_code == 200 and "v1/inspect/streams" in js.text
    assert (await client.get("/inspect/../server.py")).status_code == 404
    assert (await client.get("/inspect/nope.js")).status_code == 404
