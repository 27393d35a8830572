"""A client that joins again with its id and no position (a fresh session, e.g. after a
restart) gets a full state whose snapshot lists only the own ids folded into it: its own
messages in the journal tail are applied, not taken for already-folded ones."""

from __future__ import annotations

from starlette.applications import Starlette

from durasync.client.room import RoomClient
from durasync.crdt import Op
from durasync.crdt.canonical import canonical_json
from durasync.server import ServerSettings, create_app
from durasync.store import MemoryStore

from .inprocess import serving


async def test_rejoin_with_the_same_id_keeps_the_own_tail() -> None:
    app: Starlette = create_app(MemoryStore(), ServerSettings())
    async with serving(app) as url:
        ws = url.replace("http", "ws")
        first = RoomClient(ws, "rejoin", client_id="alice")
        await first.join()
        first.edit(Op(ot="node.insert", key="", path="children", value={"key": "n0", "tag": "S"}))
        first.commit()
        first.edit(Op(ot="number.set", key="n0", path="x", value=5))
        first.commit()
        await first.synced()
        await first.close()
        again = RoomClient(ws, "rejoin", client_id="alice")
        await again.join()
        try:
            room = app.state.rooms.rooms["rejoin"]
            assert canonical_json(again.graph) == room.replica.dump()
            assert again.graph.get("n0", "x") == 5
        finally:
            await again.close()
