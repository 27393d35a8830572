"""durasync mounted under a prefix in a Starlette and in a FastAPI app, as README.md
"Embedding" shows: the host's lifespan runs durasync's (``durasync.server.lifespan``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from durasync.server import create_app, lifespan
from durasync.store import MemoryStore


class SpyStore(MemoryStore):
    """A memory store that records whether it was opened and closed."""

    opened = closed = False

    async def open(self) -> None:
        await super().open()
        self.opened = True

    async def close(self) -> None:
        await super().close()
        self.closed = True


def starlette_host(sync: Starlette) -> Any:
    @contextlib.asynccontextmanager
    async def host_lifespan(app: Starlette) -> AsyncIterator[None]:
        async with lifespan(sync):
            yield

    return Starlette(routes=[Mount("/sync", app=sync)], lifespan=host_lifespan)


def fastapi_host(sync: Starlette) -> Any:
    @contextlib.asynccontextmanager
    async def host_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(sync):
            yield

    host = FastAPI(lifespan=host_lifespan)

    @host.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    host.mount("/sync", sync)
    return host


@pytest.mark.parametrize("make_host", [starlette_host, fastapi_host], ids=["starlette", "fastapi"])
async def test_mounted_under_a_prefix(make_host: Callable[[Starlette], Any]) -> None:
    store = SpyStore()
    host = make_host(create_app(store))
    transport = httpx.ASGITransport(app=host)
    async with (
        host.router.lifespan_context(host),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        assert store.opened and not store.closed
        json_ct = {"content-type": "application/json"}
        resp = await client.put("/sync/v1/stream/y", headers=json_ct)
        assert resp.status_code == 201, resp.text
        # The mount prefix once, not twice.
        assert resp.headers["location"] == "http://testserver/sync/v1/stream/y"
        resp = await client.post("/sync/v1/stream/y", content=b'{"a":1}', headers=json_ct)
        assert resp.status_code in (200, 204), resp.text
        resp = await client.get("/sync/v1/stream/y", params={"offset": "-1"})
        assert resp.status_code == 200 and resp.json() == [{"a": 1}]
        assert (await client.get("/sync/healthz")).status_code == 200
        assert (await client.get("/sync/v1/rooms")).json() == {"rooms": []}
        if isinstance(host, FastAPI):
            assert (await client.get("/hello")).json() == {"hello": "world"}
    assert store.closed  # the host's shutdown closed the store
