"""Stream mirror and forward between in-process servers (fast; the e2e tests use processes)."""

from __future__ import annotations

import httpx

from client.servers import ServerProc
from durasync.store import LogStore, MemoryStore

from .helpers import app_with, eventually, links, serving


async def test_mirror_copies_streams_with_the_same_offsets(any_store: LogStore) -> None:
    async with serving(app_with()) as source_url, httpx.AsyncClient() as http:
        base = source_url + "/v1/stream/"
        await http.put(base + "sensors/a", headers={"Content-Type": "text/plain"})
        for i in range(5):
            r = await http.post(
                base + "sensors/a", content=f"m{i}".encode(), headers={"Content-Type": "text/plain"}
            )
            assert r.status_code == 204
        config = links({"name": "up", "remote": source_url, "pull": ["sensors/"]})
        async with serving(app_with(any_store, config)) as edge_url:
            ebase = edge_url + "/v1/stream/"

            async def mirrored() -> bool:
                r = await http.get(ebase + "sensors/a", params={"offset": "-1"})
                return r.status_code == 200 and r.content == b"m0m1m2m3m4"

            await eventually(mirrored)
            await http.put(base + "sensors/b", headers={"Content-Type": "application/json"})
            await http.post(
                base + "sensors/b",
                content=b'[1, {"x": 2}]',
                headers={"Content-Type": "application/json"},
            )
            await http.post(
                base + "sensors/a", content=b"late", headers={"Content-Type": "text/plain"}
            )

            async def live() -> bool:
                a = await http.get(ebase + "sensors/a", params={"offset": "-1"})
                b = await http.get(ebase + "sensors/b", params={"offset": "-1"})
                return (
                    a.content.endswith(b"late")
                    and b.status_code == 200
                    and b.content == b'[1,{"x": 2}]'
                )

            await eventually(live)
            src = await http.get(base + "sensors/a", params={"offset": "-1"})
            dst = await http.get(ebase + "sensors/a", params={"offset": "-1"})
            assert src.headers["stream-next-offset"] == dst.headers["stream-next-offset"]
            w = await http.post(
                ebase + "sensors/a", content=b"x", headers={"Content-Type": "text/plain"}
            )
            assert w.status_code == 403 and "READ_ONLY_MIRROR" in w.text and source_url in w.text
            view = (await http.get(edge_url + "/v1/replication/links")).json()
            assert view["links"][0]["status"] == "live", view


async def test_forward_appends_each_message_once_in_order() -> None:
    async with serving(app_with()) as cloud_url, httpx.AsyncClient() as http:
        config = links({"name": "up", "remote": cloud_url, "push": ["outbox/"]})
        async with serving(app_with(MemoryStore(), config)) as edge_url:
            ebase = edge_url + "/v1/stream/"
            await http.put(ebase + "outbox/j", headers={"Content-Type": "application/json"})
            await http.put(ebase + "outbox/t", headers={"Content-Type": "text/plain"})
            for i in range(20):
                await http.post(
                    ebase + "outbox/j",
                    content=f"[{i}]".encode(),
                    headers={"Content-Type": "application/json"},
                )
                await http.post(
                    ebase + "outbox/t",
                    content=f"<{i}>".encode(),
                    headers={"Content-Type": "text/plain"},
                )
            await http.post(ebase + "outbox/t", headers={"Stream-Closed": "true"})

            async def arrived() -> bool:
                j = await http.get(cloud_url + "/v1/stream/outbox/j", params={"offset": "-1"})
                t = await http.get(cloud_url + "/v1/stream/outbox/t", params={"offset": "-1"})
                return (
                    j.status_code == 200
                    and j.json() == list(range(20))
                    and t.status_code == 200
                    and t.headers.get("stream-closed") == "true"
                )

            await eventually(arrived)
            t = await http.get(cloud_url + "/v1/stream/outbox/t", params={"offset": "-1"})
            assert t.content == b"".join(f"<{i}>".encode() for i in range(20))


async def test_mirror_from_the_npm_reference_server_through_the_plain_protocol() -> None:
    ref = ServerProc("ref")
    try:
        async with httpx.AsyncClient() as http:
            base = ref.base
            await http.put(base + "feed/j", headers={"Content-Type": "application/json"})
            await http.put(base + "feed/t", headers={"Content-Type": "text/plain"})
            for i in range(5):
                await http.post(
                    base + "feed/j",
                    content=f'{{"n":{i}}}',
                    headers={"Content-Type": "application/json"},
                )
                await http.post(
                    base + "feed/t", content=f"<{i}>", headers={"Content-Type": "text/plain"}
                )
            # A plain server cannot list its streams: each pull entry names one stream.
            config = links({"name": "ref", "remote": ref.url, "pull": ["feed/j", "feed/t"]})
            edge_app = app_with(MemoryStore(), config)
            async with serving(edge_app) as edge:
                ebase = edge + "/v1/stream/"

                async def copied(n: int) -> bool:
                    j = await http.get(ebase + "feed/j", params={"offset": "-1"})
                    t = await http.get(ebase + "feed/t", params={"offset": "-1"})
                    return (
                        j.status_code == 200
                        and j.json() == [{"n": i} for i in range(n)]
                        and t.content == b"".join(f"<{i}>".encode() for i in range(n))
                    )

                await eventually(lambda: copied(5))
                for i in range(5, 8):
                    await http.post(
                        base + "feed/j",
                        content=f'{{"n":{i}}}',
                        headers={"Content-Type": "application/json"},
                    )
                    await http.post(
                        base + "feed/t", content=f"<{i}>", headers={"Content-Type": "text/plain"}
                    )
                await eventually(lambda: copied(8))
                await http.post(base + "feed/t", headers={"Stream-Closed": "true"})

                async def closed() -> bool:
                    t = await http.get(ebase + "feed/t", params={"offset": "-1"})
                    return t.headers.get("stream-closed") == "true"

                await eventually(closed)
                view = (await http.get(edge + "/v1/replication/links")).json()["links"][0]
                assert view["mode"] == "plain" and view["status"] == "live"
    finally:
        ref.stop()
