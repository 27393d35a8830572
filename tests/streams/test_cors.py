"""CORS allowed origins (DS §8): ``*`` by default; with a list, echo a listed ``Origin``,
withhold ``Access-Control-Allow-Origin`` from any other, and always send ``Vary: Origin``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from durasync.server import ServerSettings, create_app
from durasync.store import MemoryStore
from durasync.store.base import StreamConfig
from durasync.streams.app import StreamSettings, normalize_origin
from helpers import start_server

S = "/v1/stream"
ALLOWED = "https://app.example"
PREFLIGHT = {
    "access-control-request-method": "POST",
    "access-control-request-headers": "content-type",
}


async def _client(origins: tuple[str, ...]) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServerSettings(
        streams=StreamSettings(long_poll_timeout=0.05, sse_max_duration=0.1, cors_origins=origins)
    )
    app = create_app(MemoryStore(), settings)
    async with app.router.lifespan_context(app):
        await app.state.store.create(
            "__rooms/r/journal", StreamConfig(content_type="application/json"), initial=[b"{}"]
        )
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.put(f"{S}/s", headers={"content-type": "text/plain"}, content=b"x")
            yield client


@pytest.fixture
async def listed() -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client((ALLOWED, "http://localhost:5173")):
        yield client


@pytest.fixture
async def anyone() -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(("*",)):
        yield client


async def _responses(client: httpx.AsyncClient, origin: str | None) -> list[httpx.Response]:
    headers = {"origin": origin} if origin else {}
    text = {**headers, "content-type": "text/plain"}
    return [
        await client.get(f"{S}/s", params={"offset": "-1"}, headers=headers),
        await client.get(f"{S}/s", params={"offset": "-1", "live": "long-poll"}, headers=headers),
        await client.get(f"{S}/s", params={"offset": "now", "live": "long-poll"}, headers=headers),
        await client.get(f"{S}/s", params={"offset": "-1", "live": "sse"}, headers=headers),
        await client.post(f"{S}/s", headers=text, content=b"y"),
        await client.get(f"{S}/missing", headers=headers),
        await client.options(f"{S}/s", headers={**headers, **PREFLIGHT}),
        await client.get(f"{S}/__ds/jwks.json", headers=headers),
        await client.get("/healthz", headers=headers),
        await client.options("/healthz", headers={**headers, **PREFLIGHT}),
        await client.get("/v1/rooms/r/journal", params={"offset": "-1"}, headers=headers),
        await client.get("/v1/rooms/r", headers=headers),
    ]


async def test_any_origin_by_default(anyone: httpx.AsyncClient) -> None:
    for r in await _responses(anyone, "https://elsewhere.example"):
        assert r.headers.get_list("access-control-allow-origin") == ["*"], r.request.url


async def test_a_listed_origin_is_echoed(listed: httpx.AsyncClient) -> None:
    for r in await _responses(listed, ALLOWED):
        assert r.status_code < 500, (r.request.url, r.status_code)
        assert r.headers.get_list("access-control-allow-origin") == [ALLOWED], r.request.url
        assert "origin" in r.headers.get("vary", "").lower(), r.request.url
        assert "access-control-expose-headers" in r.headers


@pytest.mark.parametrize("origin", ["https://evil.example", "https://app.example.evil", None])
async def test_other_origins_get_no_allow_origin(
    listed: httpx.AsyncClient, origin: str | None
) -> None:
    for r in await _responses(listed, origin):
        assert r.status_code < 500, (r.request.url, r.status_code)
        assert "access-control-allow-origin" not in r.headers, r.request.url
        assert "origin" in r.headers.get("vary", "").lower(), r.request.url
        assert r.headers["x-content-type-options"] == "nosniff"


async def test_origin_comparison_ignores_case(listed: httpx.AsyncClient) -> None:
    r = await listed.get(
        f"{S}/s", params={"offset": "-1"}, headers={"origin": "HTTPS://APP.example"}
    )
    assert r.headers["access-control-allow-origin"] == "HTTPS://APP.example"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("*", "*"),
        ("https://A.example/", "https://a.example"),
        ("http://localhost:5173", "http://localhost:5173"),
    ],
)
def test_normalize_origin(given: str, expected: str) -> None:
    assert normalize_origin(given) == expected


@pytest.mark.parametrize(
    "bad", ["app.example", "https://a.example/path", "ftp://a", "https://", "https://u@a"]
)
def test_normalize_origin_refuses_non_origins(bad: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        normalize_origin(bad)


def test_cors_origin_flag_reaches_the_server() -> None:
    server = start_server(
        "--port",
        "0",
        "--memory",
        "--cors-origin",
        ALLOWED,
        "--cors-origin",
        "http://localhost:5173",
    )
    try:
        r = httpx.get(f"{server.url}/healthz", headers={"origin": "http://localhost:5173"})
        assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
        r = httpx.get(f"{server.url}{S}/none", headers={"origin": "https://evil.example"})
        assert r.status_code == 404 and "access-control-allow-origin" not in r.headers
    finally:
        assert server.stop() == 0
