"""The ``__registry__`` stream and the stream lifecycle hooks (durasync/streams/registry.py).

The PyPI ``durable-streams`` client (a client we did not write) tails ``__registry__`` while
the test creates and deletes streams; each event arrives exactly once. Writes to the registry
are refused. Embedders' ``on_stream_created`` / ``on_stream_deleted`` hooks run once per
creation and deletion; a failing hook does not change the answer. (Two nodes on Redis:
tests/cluster/test_ops.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from durable_streams import astream

from durasync.server import ServerSettings, create_app
from durasync.store import MemoryStore
from durasync.store.base import StreamInfo
from helpers import ServerProcess, start_server

JSON = {"content-type": "application/json"}


@pytest.fixture
def registry_server() -> Iterator[ServerProcess]:
    server = start_server("--port", "0", "--memory", "--registry-stream")
    try:
        yield server
    finally:
        assert server.stop() == 0, "".join(server.output[-30:])


def expected_events(created: list[str], deleted: list[str]) -> list[tuple[str, str]]:
    return [("insert", p) for p in created] + [("delete", p) for p in deleted]


def summary(events: list[Any]) -> list[tuple[str, str]]:
    return [(e["headers"]["operation"], e["key"]) for e in events]


async def tail_registry(url: str, count: int, got: list[Any]) -> None:
    """Tail ``__registry__`` from its start with the durable-streams client until ``count``
    events arrived."""
    async with astream(
        f"{url}/v1/stream/__registry__",
        offset="-1",
        live="long-poll",  # type: ignore[arg-type]
        timeout=10.0,
    ) as res:
        async for item in res.iter_json():
            got.append(item)
            if len(got) >= count:
                return


async def test_registry_events_once_each_for_a_ds_client(registry_server: ServerProcess) -> None:
    url = registry_server.url
    got: list[Any] = []
    reader = asyncio.create_task(tail_registry(url, 3, got))
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        assert (await client.put("/v1/stream/reg/a", headers=JSON)).status_code == 201
        assert (await client.put("/v1/stream/reg/a", headers=JSON)).status_code == 200  # exists
        assert (
            await client.put("/v1/stream/reg/b", headers={"content-type": "text/plain"})
        ).status_code == 201
        assert (await client.delete("/v1/stream/reg/a")).status_code == 204
        assert (await client.delete("/v1/stream/reg/a")).status_code == 404
        async with asyncio.timeout(15):
            await reader
        assert summary(got) == expected_events(["reg/a", "reg/b"], ["reg/a"])
        insert = got[1]
        assert insert["type"] == "stream"
        assert insert["value"]["path"] == "reg/b"
        assert insert["value"]["contentType"] == "text/plain"
        assert isinstance(insert["value"]["createdAt"], int)
        # Read whole once more: nothing beyond the three events.
        whole = (await client.get("/v1/stream/__registry__?offset=-1")).json()
        assert summary(whole) == summary(got)
        # Readable, never writable, through the public API.
        head = await client.head("/v1/stream/__registry__")
        assert head.status_code == 200
        for method in ("POST", "PUT", "DELETE"):
            r = await client.request(method, "/v1/stream/__registry__", content=b"{}", headers=JSON)
            assert r.status_code == 403, method
            assert r.json()["error"]["code"] == "READ_ONLY"
        # Other reserved paths stay hidden.
        assert (await client.get("/v1/stream/__other?offset=-1")).status_code == 404


async def test_without_the_flag_there_is_no_registry() -> None:
    app = create_app(MemoryStore())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.put("/v1/stream/x", headers=JSON)).status_code == 201
            r = await client.get("/v1/stream/__registry__?offset=-1")
            assert r.status_code == 404


async def test_hooks_run_once_per_creation_and_deletion() -> None:
    calls: list[tuple[str, str, str]] = []

    async def created(path: str, info: StreamInfo) -> None:
        calls.append(("created", path, info.config.content_type))
        if path == "boom":
            raise RuntimeError("hook failed")

    async def deleted(path: str) -> None:
        calls.append(("deleted", path, ""))

    app = create_app(
        MemoryStore(),
        ServerSettings(registry_stream=True),
        on_stream_created=created,
        on_stream_deleted=deleted,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.put("/v1/stream/h/1", headers=JSON)).status_code == 201
            assert (await client.put("/v1/stream/h/1", headers=JSON)).status_code == 200
            assert (await client.put("/v1/stream/boom", headers=JSON)).status_code == 201
            assert (await client.delete("/v1/stream/h/1")).status_code == 204
            assert (await client.delete("/v1/stream/h/1")).status_code == 404
            registry = (await client.get("/v1/stream/__registry__?offset=-1")).json()
    assert calls == [
        ("created", "h/1", "application/json"),
        ("created", "boom", "application/json"),
        ("deleted", "h/1", ""),
    ]
    # The registry's own hooks ran too (first), also for the stream whose hook failed.
    assert summary(registry) == expected_events(["h/1", "boom"], ["h/1"])
