"""Authorization and per-connection rate limits of the room endpoint, against real servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from durasync.rooms.room import RoomSettings
from durasync.server import ServerSettings, create_app
from durasync.store.memory import MemoryStore
from helpers import ServerProcess, start_server

from .conftest import RoomConn, unique_room, ws_url
from .test_e2e import msg

SECRET = "rooms-test-secret-rooms-test-secret"


def token(**claims: Any) -> str:
    return jwt.encode({"exp": time.time() + 3600, **claims}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def auth_server() -> Iterator[ServerProcess]:
    server = start_server("--port", "0", "--memory", "--auth-secret", SECRET)
    try:
        yield server
    finally:
        assert server.stop() == 0


async def test_read_only_token_receives_but_cannot_write(auth_server: ServerProcess) -> None:
    room = unique_room("ro")
    writer = await RoomConn.open(auth_server, room, "w", token=token(write=["room/"]))
    await writer.recv_kind("state")
    reader = await RoomConn.open(
        auth_server, room, "r", token=token(read=[f"room/{room}"], write=["stream/x/"])
    )
    await reader.recv_kind("state")
    await writer.send({"mtype": "crdt", "msg": msg("w", 1)})
    assert (await writer.recv_kind("ack"))["serverSeq"] == 1
    b = await reader.recv_kind("broadcast")
    assert b["serverSeq"] == 1 and b["msg"]["id"] == "w:1"
    # the reader's write is refused with an error frame naming it; nothing is sequenced
    await reader.send({"mtype": "crdt", "msg": msg("r", 1)})
    e = await reader.recv_kind("error")
    assert e["code"] == "FORBIDDEN" and e["msgId"] == "r:1"
    # ... and the connection stays usable: it answers requests and keeps receiving
    await reader.send({"mtype": "sync-check", "requestId": "after"})
    st = await reader.recv_kind("sync-status")
    assert st["requestId"] == "after" and st["serverSeq"] == 1
    await writer.send({"mtype": "crdt", "msg": msg("w", 2)})
    assert (await reader.recv_kind("broadcast"))["serverSeq"] == 2
    async with httpx.AsyncClient() as http:
        r = await http.get(
            f"{auth_server.url}/v1/rooms/{room}",
            headers={"Authorization": f"Bearer {token(read=[f'room/{room}'])}"},
        )
        assert r.status_code == 200 and r.headers["room-server-seq"] == "2"
    for c in (writer, reader):
        await c.close()


async def test_a_read_only_member_cannot_create_a_room_by_joining(
    auth_server: ServerProcess,
) -> None:
    room = unique_room("rocreate")
    read_only = token(read=[f"room/{room}"])
    with pytest.raises(ConnectionClosed) as exc:
        async with connect(ws_url(auth_server, room, "r", token=read_only)) as ws:
            await asyncio.wait_for(ws.recv(), 10)
    assert exc.value.rcvd is not None and exc.value.rcvd.code == 4403
    assert "write" in exc.value.rcvd.reason
    async with httpx.AsyncClient() as http:
        r = await http.get(
            f"{auth_server.url}/v1/rooms/{room}", headers={"Authorization": f"Bearer {read_only}"}
        )
    assert r.status_code == 404  # nothing was created
    # Once a writer created it, the read-only member joins and reads.
    writer = await RoomConn.open(auth_server, room, "w", token=token(write=["room/"]))
    await writer.recv_kind("state")
    reader = await RoomConn.open(auth_server, room, "r", token=read_only)
    assert (await reader.recv_kind("state"))["serverSeq"] == 0
    for c in (writer, reader):
        await c.close()


@pytest.mark.parametrize(
    ("tok", "status", "code"),
    [
        (None, 401, "MISSING_TOKEN"),
        ("not-a-jwt", 401, "INVALID_TOKEN"),
        (token(read=["room/some-other-room"]), 403, "FORBIDDEN"),
    ],
)
async def test_handshake_refused_without_read_access(
    auth_server: ServerProcess, tok: str | None, status: int, code: str
) -> None:
    room = unique_room("deny")
    with pytest.raises(InvalidStatus) as exc:
        await connect(ws_url(auth_server, room, "c", token=tok))
    response = exc.value.response
    assert response.status_code == status
    assert code.encode() in response.body
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_rate_limit_gives_error_frames_and_connection_stays_usable() -> None:
    # 2 frames/s, burst 4: a burst of 16 frames cannot all pass unless the server took
    # ~6 s to read them
    server = start_server("--port", "0", "--memory", "--room-rate", "2")
    room = unique_room("rl")
    try:
        c = await RoomConn.open(server, room, "c")
        await c.recv_kind("state")
        n = 16
        for lt in range(1, n + 1):
            await c.send({"mtype": "crdt", "msg": msg("c", lt)})
        acked: dict[str, int] = {}
        limited: list[str] = []
        async with asyncio.timeout(10):
            while len(acked) + len(limited) < n:
                f = await c.recv()
                if f["mtype"] == "ack":
                    acked[f["msgId"]] = f["serverSeq"]
                elif f["mtype"] == "error":
                    assert f["code"] == "RATE_LIMITED"
                    limited.append(f["msgId"])
        assert 1 <= len(acked) < n and len(limited) == n - len(acked)
        assert sorted(acked.values()) == list(range(1, len(acked) + 1))
        # documented behaviour: slow down and resend; the same connection accepts them
        async with asyncio.timeout(30):
            for mid in limited:
                lt = int(mid.split(":")[1])
                while mid not in acked:
                    await c.send({"mtype": "crdt", "msg": msg("c", lt)})
                    f = await c.recv()
                    while f["mtype"] not in ("ack", "error"):  # e.g. a server ping
                        f = await c.recv()
                    if f["mtype"] == "ack":
                        acked[f["msgId"]] = f["serverSeq"]
                    else:
                        assert f["code"] == "RATE_LIMITED" and f["msgId"] == mid
                        await asyncio.sleep(0.25)  # client backoff, not synchronisation
        assert sorted(acked.values()) == list(range(1, n + 1))
        await c.close()
    finally:
        assert server.stop() == 0


@pytest.mark.filterwarnings("ignore:Using .httpx. with .starlette.testclient.")
def test_room_full_closes_with_4429_but_a_replacement_is_admitted() -> None:
    from starlette.testclient import TestClient

    settings = ServerSettings(allow_remote=True, rooms=RoomSettings(max_members=2))
    with (
        TestClient(create_app(MemoryStore(), settings)) as tc,
        tc.websocket_connect("/v1/rooms/full?client=a&format=json") as a,
        tc.websocket_connect("/v1/rooms/full?client=b&format=json") as b,
    ):
        a.receive_text()
        b.receive_text()
        with tc.websocket_connect("/v1/rooms/full?client=c&format=json") as c:
            with pytest.raises(WebSocketDisconnect) as exc:
                c.receive_text()
            assert exc.value.code == 4429
        # The same client id reconnecting replaces its old connection: not "full".
        with tc.websocket_connect("/v1/rooms/full?client=b&format=json") as b2:
            assert '"state"' in b2.receive_text()
