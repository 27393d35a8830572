"""Removing and resetting rooms over HTTP (``DELETE /v1/rooms/{room}``, ``POST .../reset``),
against real servers: members are closed with the documented codes, the store keeps nothing."""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from durasync.protocol.closecodes import CloseCode
from helpers import ServerProcess, start_server

from .conftest import RoomConn, unique_room
from .test_access import auth_server, token  # noqa: F401 -- the fixture, reused
from .test_e2e import msg

INSERT = [{"ot": "node.insert", "key": "", "path": "children", "value": {"key": "n", "tag": "T"}}]


async def closed_with(conn: RoomConn) -> int | None:
    """Read until the server closes the connection; its close code."""
    with pytest.raises(ConnectionClosed) as exc:
        while True:
            await conn.recv()
    return exc.value.rcvd.code if exc.value.rcvd is not None else None


async def test_delete_removes_the_room_and_closes_members(room_server: ServerProcess) -> None:
    room = unique_room("del")
    a = await RoomConn.open(room_server, room, "a")
    first = await a.recv_kind("state")
    await a.send({"mtype": "crdt", "msg": msg("a", 1, INSERT)})
    await a.recv_kind("ack")
    async with httpx.AsyncClient(base_url=room_server.url) as http:
        assert (await http.get(f"/v1/rooms/{room}")).status_code == 200
        resp = await http.delete(f"/v1/rooms/{room}")
        assert resp.status_code == 204, resp.text
        assert await closed_with(a) == CloseCode.ROOM_DELETED
        resp = await http.get(f"/v1/rooms/{room}")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "ROOM_NOT_FOUND"
        assert room not in [r["room"] for r in (await http.get("/v1/rooms")).json()["rooms"]]
        assert (
            await http.get(f"/v1/rooms/{room}/journal", params={"offset": "-1"})
        ).status_code == 404
        assert (await http.delete(f"/v1/rooms/{room}")).status_code == 404
        assert (await http.delete("/v1/rooms/%2e%2e")).status_code == 400
    # Joining again creates a new, empty room.
    b = await RoomConn.open(room_server, room, "b", fmt="json")
    st = await b.recv_kind("state")
    assert st["epoch"] != first["epoch"] and st["serverSeq"] == 0 and st["journal"] == []
    await b.close()


async def test_reset_keeps_the_room_under_a_new_epoch(room_server: ServerProcess) -> None:
    room = unique_room("reset")
    a = await RoomConn.open(room_server, room, "a", fmt="json")
    first = await a.recv_kind("state")
    await a.send({"mtype": "crdt", "msg": msg("a", 1, INSERT)})
    await a.recv_kind("ack")
    async with httpx.AsyncClient(base_url=room_server.url) as http:
        resp = await http.post(f"/v1/rooms/{room}/reset")
        assert resp.status_code == 200, resp.text
        epoch = resp.json()["epoch"]
        assert resp.json() == {"room": room, "epoch": epoch} and epoch != first["epoch"]
        assert resp.headers["room-epoch"] == epoch
        assert await closed_with(a) == CloseCode.RESUME  # rejoin and reload
        view = await http.get(f"/v1/rooms/{room}")
        assert view.status_code == 200 and view.headers["room-epoch"] == epoch
        assert view.json()["nodes"] == {}
        assert (await http.post(f"/v1/rooms/{unique_room('none')}/reset")).status_code == 404
    # A resume with the old epoch gets the new, empty state, never a partial recovery.
    a2 = await RoomConn.open(room_server, room, "a", fmt="json", since=1, epoch=first["epoch"])
    st = await a2.recv_kind("state")
    assert st["recovered"] is False and st["epoch"] == epoch and st["journal"] == []
    await a2.close()


async def test_removing_needs_write(auth_server: ServerProcess) -> None:  # noqa: F811
    room = unique_room("authdel")
    w = await RoomConn.open(auth_server, room, "w", token=token(write=["room/"]))
    await w.recv_kind("state")
    read_only = {"authorization": f"Bearer {token(read=['room/'])}"}
    writer = {"authorization": f"Bearer {token(write=[f'room/{room}'])}"}
    async with httpx.AsyncClient(base_url=auth_server.url) as http:
        assert (await http.delete(f"/v1/rooms/{room}")).status_code == 401
        for method in ("DELETE", "POST"):
            path = f"/v1/rooms/{room}" + ("/reset" if method == "POST" else "")
            resp = await http.request(method, path, headers=read_only)
            assert resp.status_code == 403 and resp.json()["error"]["code"] == "FORBIDDEN"
        assert (await http.delete(f"/v1/rooms/{room}", headers=writer)).status_code == 204
    assert await closed_with(w) == CloseCode.ROOM_DELETED


async def test_delete_on_an_embedded_store_survives_a_restart(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    data = tmp_path / "data"
    server = start_server("--port", "0", "--data", str(data))
    room = unique_room("persist")
    try:
        a = await RoomConn.open(server, room, "a")
        await a.recv_kind("state")
        await a.send({"mtype": "crdt", "msg": msg("a", 1, INSERT)})
        await a.recv_kind("ack")
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.delete(f"/v1/rooms/{room}")).status_code == 204
        await a.close()
    finally:
        assert server.stop() == 0
    server = start_server("--port", "0", "--data", str(data))
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get(f"/v1/rooms/{room}")).status_code == 404
            assert (await http.get("/v1/rooms")).json() == {"rooms": []}
    finally:
        assert server.stop() == 0
