"""Rooms replicated both ways between in-process servers (fast; e2e tests use processes)."""

from __future__ import annotations

import asyncio
import random

import httpx

from durasync.client.room import RoomClient
from durasync.crdt import Op
from durasync.crdt.messages import OTYPES
from durasync.store import MemoryStore

from .helpers import app_with, eventually, links, random_op, serving


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
            # Random edits (stale views, both servers) until every otype was committed.
            sent: set[str] = set()
            step = 0
            while sent != OTYPES and step < 500:
                for client in (a, b):
                    for _ in range(rng.randint(1, 3)):
                        client.edit(random_op(rng, client.replica, client.client_id, counter, True))
                    msg = client.commit()
                    roll = rng.random()
                    meta = client.undo() if roll < 0.15 else client.redo() if roll < 0.25 else None
                    for m in (msg, meta):
                        if m is not None:
                            sent.update(op.ot for op in m.ops)
                if step % 7 == 0:
                    await asyncio.sleep(0.01)
                step += 1
            assert sent == OTYPES
            await a.synced()
            await b.synced()

            async def converged() -> bool:
                one = await graph(http, hub, "lab-1")
                two = await graph(http, edge, "lab-1")
                return one == two and one.startswith("{")

            await eventually(converged, timeout=30)
            final = await graph(http, hub, "lab-1")
            otypes: set[str] = set()
            offset = "-1"
            while True:
                r = await http.get(f"{hub}/v1/rooms/lab-1/journal", params={"offset": offset})
                assert r.status_code == 200
                otypes.update(op["ot"] for rec in r.json() for op in rec["msg"]["ops"])
                offset = r.headers["stream-next-offset"]
                if r.headers.get("stream-up-to-date") == "true":
                    break
            assert otypes == OTYPES
            # Members fold like their servers.
            await eventually(lambda: _same(a, final), timeout=10)
            await eventually(lambda: _same(b, final), timeout=10)
            await a.close()
            await b.close()


async def _same(client: RoomClient, canonical: str) -> bool:
    from durasync.crdt.canonical import canonical_json

    return canonical_json(client.graph) == canonical


async def test_a_paused_link_behind_a_trimmed_journal_repairs_by_reconciliation() -> None:
    from durasync.rooms import RoomSettings

    from .test_links_inprocess import recording

    small = RoomSettings(snapshot_every_messages=10, retention_messages=5)
    hub_app = app_with(MemoryStore(), rooms=small)
    async with serving(hub_app) as hub, httpx.AsyncClient() as http:
        config = links({"name": "hub", "remote": hub, "rooms": ["lab-"]})
        edge_app = app_with(MemoryStore(), config, rooms=small)
        async with serving(edge_app) as edge, recording(edge_app) as events:
            writer = RoomClient(hub.replace("http", "ws"), "lab-gap", client_id="w")
            local = RoomClient(edge.replace("http", "ws"), "lab-gap", client_id="e")
            await writer.join()
            await local.join()
            writer.edit(
                Op(ot="node.insert", key="", path="children", value={"key": "n", "tag": "S"})
            )
            writer.commit()
            await writer.synced()

            async def copied() -> bool:
                return "n" in local.graph.nodes

            await eventually(copied)
            r = await http.post(edge + "/v1/replication/links/hub/pause")
            assert r.status_code == 200
            for i in range(60):
                writer.edit(Op(ot="array.push", key="n", path="log", value=i))
                writer.commit()
            local.edit(Op(ot="array.push", key="n", path="log", value="edge"))
            local.commit()
            await writer.synced()
            await local.synced()
            hub_room = hub_app.state.rooms.rooms["lab-gap"]

            async def trimmed() -> bool:
                info = await hub_app.state.store.head("__rooms/lab-gap/journal")
                return info.start != "0000000000000000_0000000000000000"

            await eventually(trimmed)
            r = await http.post(edge + "/v1/replication/links/hub/resume")
            assert r.status_code == 200

            async def converged() -> bool:
                one = await graph(http, hub, "lab-gap")
                two = await graph(http, edge, "lab-gap")
                return one == two and '"edge"' in one

            await eventually(converged, timeout=30)
            gaps = [e for e in events if e.type == "gap:detected"]
            assert gaps and gaps[0].fields["reason"] == "token_too_old"

            async def repaired() -> bool:
                # The graphs may agree a moment before the repair reports itself done.
                return any(e.type == "repair:completed" for e in events)

            await eventually(repaired, timeout=10)
            unit = edge_app.state.replication.runners["hub"].units["pull", "room", "lab-gap"]
            # Only what was missing moved, over every repair: the 60 messages written at
            # the hub while paused came by fetch (the one edge message went by the push, or
            # by the repair).
            fetched, pushed = unit.transferred
            assert fetched == 60 and pushed <= 1
            assert hub_room.replica.dump() == edge_app.state.rooms.rooms["lab-gap"].replica.dump()
            await writer.close()
            await local.close()


async def test_room_peer_routes_refuse_bad_input() -> None:
    async with serving(app_with()) as srv, httpx.AsyncClient() as http:
        base = srv + "/v1/replication/rooms"
        r = await http.post(base + "/lab-x/messages", content=b"{nope")
        assert r.status_code == 400
        r = await http.post(base + "/../messages", json={"server": "s", "items": []})
        assert r.status_code in (400, 404)
        r = await http.post(base + "/" + "x" * 200 + "/messages", json={"server": "s", "items": []})
        assert r.status_code == 400 and r.json()["error"]["code"] == "BAD_ROOM"
        item = {"msg": {"id": "c:1", "client": "c", "lt": 1, "ts": 1, "clock": {}, "ops": []}}
        r = await http.post(base + "/lab-x/messages", json={"server": "s", "items": [item] * 1001})
        assert r.status_code == 413
        # A message outside its client's namespace, and an invalid one: rejected, not applied.
        foreign = {"msg": {"id": "d:1", "client": "c", "lt": 1, "ts": 1, "clock": {}, "ops": []}}
        bad = {
            "msg": {
                "id": "c:2",
                "client": "c",
                "lt": 2,
                "ts": 1,
                "clock": {},
                "ops": [{"ot": "number.set", "key": "k", "path": "p", "value": "x"}],
            }
        }
        # A text op creating a char id of another client: the member rule holds for relays.
        chars = {
            "msg": {
                "id": "c:3",
                "client": "c",
                "lt": 3,
                "ts": 1,
                "clock": {},
                "ops": [
                    {
                        "ot": "text.insert",
                        "key": "k",
                        "path": "t",
                        "id": "victim:7",
                        "value": [None, "x"],
                        "seq": 1,
                        "ts": 1,
                    }
                ],
            }
        }
        r = await http.post(
            base + "/lab-x/messages",
            json={"server": "s", "items": [item, foreign, bad, chars]},
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["status"] for x in results] == ["applied", "rejected", "rejected", "rejected"]
        assert "ops[0].id" in results[3]["error"]
        again = await http.post(base + "/lab-x/messages", json={"server": "s", "items": [item]})
        assert again.json()["results"][0]["status"] == "duplicate"
        r = await http.post(base + "/lab-x/reconcile", json={"queries": [["zz", False]]})
        assert r.status_code == 400
        r = await http.post(base + "/lab-nope/reconcile", json={"queries": [["", False]]})
        assert r.status_code == 404
        r = await http.post(base + "/lab-x/fetch", json={"ids": ["c:1", "c:9"]})
        assert r.status_code == 200 and [i["msg"]["id"] for i in r.json()["items"]] == ["c:1"]
        r = await http.get(
            base + "/lab-x/journal", params={"offset": "0000000000000009_0000000000000009"}
        )
        assert r.status_code == 410 and r.json()["reason"] == "token_too_new"
        r = await http.get(base + "/lab-nope/journal")
        assert r.status_code == 404
        r = await http.get(base, params={"prefix": "lab-"})
        assert [h["room"] for h in r.json()["rooms"]] == ["lab-x"]
