"""Rooms replicated both ways between in-process servers (fast; e2e tests use processes)."""

from __future__ import annotations

import asyncio
import random

import httpx

from durasync.client.room import RoomClient
from durasync.crdt import Op
from durasync.store import MemoryStore

from .helpers import app_with, eventually, links, serving

from crdt.crdt_histories import random_op  # isort: skip  (tests/ is on sys.path)


async def graph(http: httpx.AsyncClient, url: str, room: str) -> str:
    r = await http.get(f"{url}/v1/rooms/{room}")
    return r.text if r.status_code == 200 else f"<{r.status_code}>"


async def test_edits_on_both_servers_converge_for_every_otype() -> None:
    rng = random.Random(4)
    async with serving(app_with()) as hub, httpx.AsyncClient() as http:
        config = links({"name": "hub", "remote": hub, "rooms": ["lab-"]})
        edge_app = app_with(MemoryStore(), config)
        async with serving(edge_app) as edge:
            ws_hub, ws_edge = hub.replace("http", "ws"), edge.replace("http", "ws")
            a = RoomClient(ws_hub, "lab-1", client_id="alice")
            b = RoomClient(ws_edge, "lab-1", client_id="bob")
            await a.join()
            await b.join()
            a.edit(Op(ot="node.insert", key="", path="children", value={"key": "n0", "tag": "S"}))
            a.edit(Op(ot="node.insert", key="n0", path="children", value={"key": "n1", "tag": "S"}))
            a.commit()
            await a.synced()

            async def has_root() -> bool:
                return "n1" in b.graph.nodes

            await eventually(has_root)
            counter = [0]
            for step in range(30):
                for client in (a, b):
                    for _ in range(rng.randint(1, 3)):
                        client.edit(random_op(rng, client.replica, client.client_id, counter, True))
                    client.commit()
                if step % 7 == 0:
                    await asyncio.sleep(0.01)
            await a.synced()
            await b.synced()

            async def converged() -> bool:
                one = await graph(http, hub, "lab-1")
                two = await graph(http, edge, "lab-1")
                return one == two and one.startswith("{")

            await eventually(converged, within=30)
            final = await graph(http, hub, "lab-1")
            # Members fold like their servers.
            await eventually(lambda: _same(a, final), within=10)
            await eventually(lambda: _same(b, final), within=10)
            await a.close()
            await b.close()


async def _same(client: RoomClient, canonical: str) -> bool:
    from durasync.crdt.canonical import canonical_json

    return canonical_json(client.graph) == canonical
