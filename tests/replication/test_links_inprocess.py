"""Link behaviour between in-process servers: gaps and repair for a re-created source,
deletion and closure propagated, pause really pauses (and persists), events, the views."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from durasync.replication.events import Event
from durasync.store import EmbeddedStore, MemoryStore
from faultproxy import FaultProxy

from .helpers import app_with, eventually, links, serving

TEXT = {"Content-Type": "text/plain"}


@contextlib.asynccontextmanager
async def recording(app: Any) -> AsyncIterator[list[Event]]:
    """Every event the app's replication service publishes from now on."""
    seen: list[Event] = []
    iterator = app.state.replication.events.subscribe()

    async def pump() -> None:
        async for event in iterator:
            seen.append(event)

    task = asyncio.create_task(pump())
    await asyncio.sleep(0)
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await iterator.aclose()


async def body(http: httpx.AsyncClient, url: str) -> tuple[int, bytes]:
    r = await http.get(url, params={"offset": "-1"})
    return r.status_code, r.content


async def test_a_recreated_source_is_a_gap_and_the_mirror_repairs() -> None:
    async with serving(app_with()) as src, httpx.AsyncClient() as http:
        sbase = src + "/v1/stream/"
        await http.put(sbase + "s/a", headers=TEXT)
        await http.post(sbase + "s/a", content=b"old-1", headers=TEXT)
        edge_app = app_with(MemoryStore(), links({"name": "up", "remote": src, "pull": ["s/"]}))
        async with serving(edge_app) as edge, recording(edge_app) as events:
            ebase = edge + "/v1/stream/"

            async def mirrored(data: bytes) -> bool:
                return await body(http, ebase + "s/a") == (200, data)

            await eventually(lambda: mirrored(b"old-1"))
            # Re-created while the link does not look (paused): on resume the mirror's
            # checkpoint belongs to a dead incarnation.
            assert (await http.post(edge + "/v1/replication/links/up/pause")).status_code == 200
            assert (await http.delete(sbase + "s/a")).status_code == 204
            await http.put(sbase + "s/a", headers=TEXT)
            await http.post(sbase + "s/a", content=b"new", headers=TEXT)
            assert (await http.post(edge + "/v1/replication/links/up/resume")).status_code == 200
            await eventually(lambda: mirrored(b"new"))

            async def repaired() -> bool:
                return any(e.type == "repair:completed" for e in events)

            await eventually(repaired)
            types = [e.type for e in events]
            assert "gap:detected" in types and "repair:started" in types
            gap = next(e for e in events if e.type == "gap:detected")
            assert gap.fields["reason"] == "epoch_mismatch"
            assert gap.link == "up" and gap.remote == src
            statuses = [
                (e.fields["from"], e.fields["to"]) for e in events if e.type == "link:status-change"
            ]
            assert ("repairing", "live") in statuses
            assert ("live", "repairing") in statuses or ("initializing", "repairing") in statuses


async def test_deletion_and_closure_propagate_and_new_streams_are_discovered() -> None:
    async with serving(app_with()) as src, httpx.AsyncClient() as http:
        sbase = src + "/v1/stream/"
        edge_app = app_with(MemoryStore(), links({"name": "up", "remote": src, "pull": ["s/"]}))
        async with serving(edge_app) as edge:
            ebase = edge + "/v1/stream/"
            await http.put(sbase + "s/new", headers=TEXT)
            await http.post(sbase + "s/new", content=b"a", headers=TEXT)
            closing = {**TEXT, "Stream-Closed": "true"}
            await http.post(sbase + "s/new", content=b"b", headers=closing)

            async def closed_copy() -> bool:
                r = await http.get(ebase + "s/new", params={"offset": "-1"})
                return r.content == b"ab" and r.headers.get("stream-closed") == "true"

            await eventually(closed_copy)
            assert (await http.delete(sbase + "s/new")).status_code == 204

            async def gone() -> bool:
                return (await http.head(ebase + "s/new")).status_code == 404

            await eventually(gone)
            # Not mirrored: other prefixes, and reserved paths never.
            await http.put(sbase + "other/x", headers=TEXT)
            assert (await http.head(ebase + "other/x")).status_code == 404


async def test_pause_stops_everything_and_persists_across_restart(tmp_path: Path) -> None:
    async with serving(app_with()) as src, httpx.AsyncClient() as http:
        sbase = src + "/v1/stream/"
        await http.put(sbase + "s/p", headers=TEXT)
        await http.post(sbase + "s/p", content=b"1", headers=TEXT)
        config = links({"name": "up", "remote": src, "pull": ["s/"]})
        edge_app = app_with(EmbeddedStore(tmp_path / "edge"), config)
        async with serving(edge_app) as edge, recording(edge_app) as events:
            ebase = edge + "/v1/stream/"
            await eventually(lambda: _is(http, ebase + "s/p", b"1"))
            r = await http.post(edge + "/v1/replication/links/up/pause")
            assert r.status_code == 200 and r.json()["status"] == "paused"
            await http.post(sbase + "s/p", content=b"2", headers=TEXT)
            await http.put(sbase + "s/q", headers=TEXT)
            # While paused, a live source stream gets a new message and a new stream appears;
            # a round trip through the paused link's status proves nothing moved.
            for _ in range(3):
                view = (await http.get(edge + "/v1/replication/links")).json()["links"][0]
                assert view["status"] == "paused"
            unit = edge_app.state.replication.runners["up"].units["pull", "stream", "s/p"]
            assert unit.task is None or unit.task.done()  # its task was stopped
            assert await body(http, ebase + "s/p") == (200, b"1")
            assert (await http.head(ebase + "s/q")).status_code == 404
        # Restarted while paused: stays paused.
        edge_app = app_with(EmbeddedStore(tmp_path / "edge"), config)
        async with serving(edge_app) as edge:
            runner = edge_app.state.replication.runners["up"]
            await runner.loaded.wait()
            view = (await http.get(edge + "/v1/replication/links")).json()["links"][0]
            assert view["status"] == "paused"
            assert await body(http, edge + "/v1/stream/s/p") == (200, b"1")
            r = await http.post(edge + "/v1/replication/links/up/resume")
            assert r.status_code == 200
            await eventually(lambda: _is(http, edge + "/v1/stream/s/p", b"12"))
            await eventually(lambda: _exists(http, edge + "/v1/stream/s/q"))
        assert any(e.type == "link:status-change" and e.fields["to"] == "paused" for e in events)


async def _is(http: httpx.AsyncClient, url: str, data: bytes) -> bool:
    return await body(http, url) == (200, data)


async def _exists(http: httpx.AsyncClient, url: str) -> bool:
    return (await http.head(url)).status_code == 200


async def test_operator_api_errors_and_unknown_links() -> None:
    async with serving(app_with()) as srv, httpx.AsyncClient() as http:
        r = await http.post(srv + "/v1/replication/links/nope/pause")
        assert r.status_code == 404 and r.json()["error"]["code"] == "UNKNOWN_LINK"
        r = await http.get(srv + "/v1/replication/links")
        assert r.status_code == 200 and r.json()["links"] == []
        r = await http.get(srv + "/v1/replication/streams/x", params={"offset": "bogus"})
        assert r.status_code == 400
        r = await http.get(srv + "/v1/replication/streams/__rooms/a/journal")
        assert r.status_code == 404
        r = await http.get(srv + "/v1/replication/streams", params={"limit": "x"})
        assert r.status_code == 400
        await http.put(srv + "/v1/stream/a", headers=TEXT)
        await http.post(srv + "/v1/stream/a", content=b"xyz", headers=TEXT)
        for params, reason in [
            ({"offset": "0000000000000009_0000000000000009"}, "token_too_new"),
            ({"offset": "-1", "server": "someone-else"}, "stream_mismatch"),
            ({"offset": "-1", "epoch": "1.0"}, "epoch_mismatch"),
        ]:
            r = await http.get(srv + "/v1/replication/streams/a", params=params)
            assert r.status_code == 410, r.text
            gap = r.json()
            assert gap["reason"] == reason
            assert gap["oldestAvailable"]["position"] == 0
            assert gap["latestAvailable"]["position"] == 1
            assert gap["requested"]["ref"] == params["offset"]


async def test_a_link_stays_initializing_and_offline_until_the_remote_answers() -> None:
    async with serving(app_with()) as src, httpx.AsyncClient() as http:
        port = int(src.rsplit(":", 1)[1])
        async with FaultProxy("127.0.0.1", port) as proxy:
            proxy.refuse_for(3600)
            config = links(
                {"name": "up", "remote": f"http://127.0.0.1:{proxy.port}", "pull": ["s/"]}
            )
            edge_app = app_with(MemoryStore(), config)
            async with serving(edge_app) as edge:

                async def view() -> dict[str, Any]:
                    r = await http.get(edge + "/v1/replication/links")
                    link: dict[str, Any] = r.json()["links"][0]
                    return link

                async def offline() -> bool:
                    return (await view())["connectivity"] == "offline"

                await eventually(offline)
                assert (await view())["status"] == "initializing"
                assert proxy.stats.refused > 0
                proxy.refuse_for(0)

                async def live() -> bool:
                    v = await view()
                    return v["status"] == "live" and v["connectivity"] == "online"

                await eventually(live)


async def test_the_ledger_is_unreachable_through_the_public_api() -> None:
    async with serving(app_with()) as src, httpx.AsyncClient() as http:
        await http.put(src + "/v1/stream/s/a", headers=TEXT)
        await http.post(src + "/v1/stream/s/a", content=b"x", headers=TEXT)
        config = links({"name": "up", "remote": src, "pull": ["s/"]})
        edge_app = app_with(MemoryStore(), config)
        async with serving(edge_app) as edge:

            async def mirrored() -> bool:
                return (await body(http, edge + "/v1/stream/s/a")) == (200, b"x")

            await eventually(mirrored)
            store = edge_app.state.store
            internal = [i.path for i in await store.list_streams("__replication/", limit=100)]
            assert any(p.startswith("__replication/links/") for p in internal), internal
            assert "__replication/server" in internal
            for path in internal:
                for method in ("GET", "HEAD", "POST", "PUT", "DELETE"):
                    r = await http.request(method, f"{edge}/v1/stream/{path}", headers=TEXT)
                    assert r.status_code == 404, (method, path, r.status_code)
            # Neither does the peer API list or read them.
            r = await http.get(edge + "/v1/replication/streams", params={"prefix": ""})
            assert r.status_code == 200
            assert all(not s["path"].startswith("__") for s in r.json()["streams"])
            r = await http.get(edge + "/v1/replication/streams/__replication/server")
            assert r.status_code == 404
