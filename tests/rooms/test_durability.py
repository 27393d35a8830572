"""Restart, trimming and slow-reader behaviour against real servers."""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import time
from pathlib import Path

import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from durasync.crdt import Message, Op, Replica, Snapshot
from durasync.rooms.room import Room, RoomSettings
from durasync.store.embedded import EmbeddedStore
from helpers import ServerProcess, start_server

from .conftest import RoomConn, unique_room, ws_url
from .test_e2e import msg


async def test_sigkill_restart_loses_nothing_acked_and_resumes(data_dir: Path) -> None:
    args = ["--port", "0", "--data", str(data_dir), "--room-snapshot-every", "25"]
    server = start_server(*args)
    room = unique_room("k")
    try:
        a = await RoomConn.open(server, room, "a")
        st = await a.recv_kind("state")
        epoch = st["epoch"]
        acked: dict[str, int] = {}
        for lt in range(1, 61):
            await a.send({"mtype": "crdt", "msg": msg("a", lt)})
        async with asyncio.timeout(10):
            while len(acked) < 60:
                f = await a.recv_kind("ack")
                acked[f["msgId"]] = f["serverSeq"]
        # more in flight (maybe not acked) when the server dies
        for lt in range(61, 81):
            await a.send({"mtype": "crdt", "msg": msg("a", lt)})
    finally:
        server.proc.send_signal(signal.SIGKILL)
        server.stop()
    server = start_server(*args)
    try:
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{server.url}/v1/rooms/{room}")
            assert r.status_code == 200
            assert r.headers["room-epoch"] == epoch
            seq = int(r.headers["room-server-seq"])
            assert seq >= 60
            assert r.json()["nodes"] == {} or True
            j = (
                await http.get(f"{server.url}/v1/rooms/{room}/journal", params={"offset": "-1"})
            ).json()
        kept = {x["msg"]["id"]: x["serverSeq"] for x in j}
        # every acked message is still in the journal at its acked position (retention > 80)
        for mid, s in acked.items():
            assert kept.get(mid) == s
        b = await RoomConn.open(server, room, "a", since=60, epoch=epoch)
        st = await b.recv_kind("state")
        assert st["recovered"] is True and st["serverSeq"] == seq
        assert [m["serverSeq"] for m in st["journal"]] == list(range(61, seq + 1))
        # resending everything after the restart is recognised: same positions, nothing new
        for lt in range(1, 81):
            await b.send({"mtype": "crdt", "msg": msg("a", lt)})
        got: dict[str, int] = {}
        async with asyncio.timeout(10):
            while len(got) < 80:
                f = await b.recv_kind("ack")
                got[f["msgId"]] = f["serverSeq"]
        for mid, s in acked.items():
            assert got[mid] == s
        assert sorted(got.values()) == list(range(1, 81))
        await b.close()
    finally:
        assert server.stop() == 0


async def test_trimmed_journal_gives_full_state() -> None:
    server = start_server(
        "--port", "0", "--memory", "--room-snapshot-every", "10", "--room-retention", "5"
    )
    room = unique_room("t")
    try:
        a = await RoomConn.open(server, room, "a")
        epoch = (await a.recv_kind("state"))["epoch"]
        for lt in range(1, 51):
            await a.send(
                {
                    "mtype": "crdt",
                    "msg": msg(
                        "a", lt, [{"ot": "number.add", "key": "n", "path": "c", "value": 1}]
                    ),
                }
            )
        async with asyncio.timeout(10):
            while (await a.recv_kind("ack"))["serverSeq"] < 50:
                pass
        old = await RoomConn.open(server, room, "o", since=2, epoch=epoch)
        st = await old.recv_kind("state")
        assert st["recovered"] is False and st["snapshot"] is not None and st["serverSeq"] == 50
        recent = await RoomConn.open(server, room, "p", since=48, epoch=epoch)
        st2 = await recent.recv_kind("state")
        assert st2["recovered"] is True and [m["serverSeq"] for m in st2["journal"]] == [49, 50]
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{server.url}/v1/rooms/{room}/journal", params={"offset": "-1"})
            seqs = [x["serverSeq"] for x in r.json()]
            assert seqs[0] > 1 and seqs[-1] == 50  # trimmed behind the snapshot
        for c in (a, old, recent):
            await c.close()
    finally:
        assert server.stop() == 0


async def _stalled_reader(server: ServerProcess, room: str, client: str) -> RoomConn:
    """A room connection whose reading side can hold little: a small kernel receive buffer
    (setting SO_RCVBUF turns off Linux receive-buffer autotuning, which on loopback may grow
    to tcp_rmem max, tens of MB) and a small client-side frame queue. It stops reading as soon
    as the test stops calling ``recv``.
    """
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    ws = await connect(ws_url(server, room, client), sock=sock, max_size=None, max_queue=4)
    return RoomConn(ws, "msgpack")


async def test_slow_reader_is_dropped_with_resume_code() -> None:
    """A member that stops reading is closed with 4008 while the others keep receiving."""
    queue_bytes = 500_000
    server = start_server("--port", "0", "--memory", "--room-send-queue-bytes", str(queue_bytes))
    room = unique_room("s")
    try:
        slow = await _stalled_reader(server, room, "slow")
        epoch = (await slow.recv_kind("state"))["epoch"]
        fast = await RoomConn.open(server, room, "fast")
        await fast.recv_kind("state")
        w = await RoomConn.open(server, room, "w")
        await w.recv_kind("state")
        # ~12 MB towards the slow reader: more than its queue bound, the server's socket send
        # buffer (Linux tcp_wmem max, 4 MiB by default) and its small receive buffer together.
        # Random values: permessage-deflate would shrink a repetitive one to almost nothing.
        n = 600

        async def write() -> None:
            # paced by acks (20 in flight) so only the reader that never reads falls behind
            for lt in range(1, n + 1):
                value = secrets.token_urlsafe(15_000)  # 20,000 incompressible characters
                op = {"ot": "string.set", "key": "n", "path": "s", "value": value}
                await w.send({"mtype": "crdt", "msg": msg("w", lt, [op])})
                if lt % 20 == 0:
                    while (await w.recv_kind("ack"))["msgId"] != f"w:{lt}":
                        pass

        wt = asyncio.create_task(write())
        fast_seqs: list[int] = []
        async with asyncio.timeout(40):
            while len(fast_seqs) < n:
                f = await fast.recv()
                if f["mtype"] == "broadcast":
                    fast_seqs.append(f["serverSeq"])
            await wt
        # the others got everything, in order, while the slow reader read nothing
        assert fast_seqs == list(range(1, n + 1))
        # the slow reader gets what was in flight, then the resume close code
        slow_seqs: list[int] = []
        with pytest.raises(ConnectionClosed) as exc:
            async with asyncio.timeout(20):
                while True:
                    f = await slow.recv()
                    if f["mtype"] == "broadcast":
                        slow_seqs.append(f["serverSeq"])
        assert exc.value.rcvd is not None and exc.value.rcvd.code == 4008
        # dropped, not buffered: it never received the whole stream
        assert len(slow_seqs) < n
        assert slow_seqs == list(range(1, len(slow_seqs) + 1))
        # 4008 means "resume": reconnecting with since/epoch gets exactly the rest
        last = slow_seqs[-1] if slow_seqs else 0
        again = await RoomConn.open(server, room, "slow", since=last, epoch=epoch)
        st = await again.recv_kind("state", timeout=20)
        assert st["recovered"] is True
        assert [m["serverSeq"] for m in st["journal"]] == list(range(last + 1, n + 1))
        for c in (fast, w, again):
            await c.close()
    finally:
        assert server.stop() == 0


async def test_large_journal_room_loads_after_restart(data_dir: Path) -> None:
    """A room written with 55,000 messages (snapshots on) is ready and exact after a restart.

    Written in-process through :class:`Room` (the same pipeline as the WebSocket path, minus the
    sockets) into the embedded store; then a real server on that directory loads it lazily on
    the first join. The time to the first ``state`` frame is printed, not asserted.
    """
    n = 55_000
    store = EmbeddedStore(data_dir)
    await store.open()
    try:
        room = await Room.load("big", store, RoomSettings(), create=True)
        first = Message(
            id="w:0",
            client="w",
            lt=0,
            ts=0,
            ops=[Op(ot="node.insert", key="", path="children", value={"key": "doc", "tag": "D"})],
        )
        await room.submit(None, first)
        for i in range(1, n):
            ops = [
                Op(ot="number.add", key="doc", path="count", value=1),
                Op(ot="string.set", key="doc", path=f"p{i % 500}", value=f"v{i}"),
            ]
            await room.submit(None, Message(id=f"w:{i}", client="w", lt=i, ts=i, ops=ops))
        await room.close()
        assert room.last_seq == n
        expected = room.replica.dump()
        epoch = room.epoch
    finally:
        await store.close()
    server = start_server("--port", "0", "--data", str(data_dir))
    try:
        t0 = time.perf_counter()
        c = await RoomConn.open(server, "big", "r")
        st = await c.recv_kind("state", timeout=30)
        ready = time.perf_counter() - t0
        print(f"\nroom with {n} journaled messages: first state frame {ready * 1000:.0f} ms")
        assert st["serverSeq"] == n and st["epoch"] == epoch and st["recovered"] is False
        snap = msgspec.convert(st["snapshot"], Snapshot)
        journal = [msgspec.convert(m, Message) for m in st["journal"]]
        # snapshotting was on: the state is a snapshot plus a short tail, not 55,000 messages
        assert len(journal) < RoomSettings().snapshot_every_messages
        rep = Replica.from_snapshot("r", snap, journal, sequenced=True)
        assert rep.dump() == expected
        props = msgspec.json.decode(expected)["nodes"]["doc"]["props"]
        assert props["count"] == n - 1
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{server.url}/v1/rooms/big")
        assert r.text == expected and r.headers["room-server-seq"] == str(n)
        await c.close()
    finally:
        assert server.stop() == 0
