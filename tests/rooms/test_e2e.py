"""End-to-end rooms tests: real server subprocess, real WebSocket clients on loopback."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import random
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec

from durasync.crdt import Message, Op, Replica
from helpers import ServerProcess

from .conftest import RoomConn, unique_room

_spec = importlib.util.spec_from_file_location(
    "crdt_histories_for_rooms", Path(__file__).parents[1] / "crdt" / "crdt_histories.py"
)
assert _spec is not None and _spec.loader is not None
_histories = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _histories
_spec.loader.exec_module(_histories)
random_op = _histories.random_op


def msg(client: str, lt: int, ops: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": f"{client}:{lt}",
        "client": client,
        "lt": lt,
        "ts": lt,
        "clock": {client: lt},
        "ops": ops
        if ops is not None
        else [{"ot": "number.add", "key": "n", "path": "count", "value": 1}],
    }


async def test_relay_exactly_once_and_ordered(room_server: ServerProcess) -> None:
    room = unique_room()
    names = ["a", "b", "c"]
    conns = [await RoomConn.open(room_server, room, n) for n in names]
    for c in conns:
        state = await c.recv_kind("state")
        assert state["recovered"] is False and state["serverSeq"] == 0
    per = 15

    async def send_all(c: RoomConn, name: str) -> None:
        for lt in range(1, per + 1):
            await c.send({"mtype": "crdt", "msg": msg(name, lt)})

    await asyncio.gather(*(send_all(c, n) for c, n in zip(conns, names, strict=True)))
    for c, name in zip(conns, names, strict=True):
        got: dict[str, int] = {}
        acks: list[int] = []
        seqs: list[int] = []
        async with asyncio.timeout(10):
            while len(got) < per * 2 or len(acks) < per:
                f = await c.recv()
                if f["mtype"] == "broadcast":
                    assert f["msg"]["client"] != name
                    assert f["msg"]["id"] not in got, "delivered twice"
                    got[f["msg"]["id"]] = f["serverSeq"]
                    seqs.append(f["serverSeq"])
                elif f["mtype"] == "ack":
                    acks.append(f["serverSeq"])
                    seqs.append(f["serverSeq"])
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert len(acks) == per
    all_seqs = sorted(
        set().union(
            *[
                {
                    f["serverSeq"]
                    for f in c.frames
                    if "serverSeq" in f and f["mtype"] in ("ack", "broadcast")
                }
                for c in conns
            ]
        )
    )
    assert all_seqs == list(range(1, 3 * per + 1))
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{room_server.url}/v1/rooms/{room}")
        assert r.status_code == 200 and r.headers["room-server-seq"] == str(3 * per)
        lst = (await http.get(f"{room_server.url}/v1/rooms")).json()
        assert {"room": room, "members": 3}.items() <= next(
            x for x in lst["rooms"] if x["room"] == room
        ).items()
        j = await http.get(f"{room_server.url}/v1/rooms/{room}/journal", params={"offset": "-1"})
        assert j.status_code == 200
        records = j.json()
        assert [x["serverSeq"] for x in records] == list(range(1, 3 * per + 1))
    for c in conns:
        await c.close()


async def test_malformed_frames_get_error_and_connection_stays(room_server: ServerProcess) -> None:
    room = unique_room()
    c = await RoomConn.open(room_server, room, "m")
    await c.recv_kind("state")
    await c.ws.send(b"\xc1\xff garbage")
    e = await c.recv_kind("error")
    assert e["code"] == "MALFORMED_FRAME"
    await c.send({"mtype": "nope"})
    assert (await c.recv_kind("error"))["code"] == "MALFORMED_FRAME"
    bad = msg("m", 1, [{"ot": "vector3.set", "key": "n", "path": "p", "value": "x"}])
    await c.send({"mtype": "crdt", "msg": bad})
    e = await c.recv_kind("error")
    assert e["code"] == "INVALID_MESSAGE" and e["msgId"] == "m:1" and "ops[0]" in e["error"]
    await c.send({"mtype": "crdt", "msg": msg("other", 1)})
    assert (await c.recv_kind("error"))["code"] == "WRONG_CLIENT"
    await c.send({"mtype": "crdt", "msg": msg("m", 2)})
    ack = await c.recv_kind("ack")
    assert ack == {"mtype": "ack", "msgId": "m:2", "serverSeq": 1}
    # A resend is acked with its original position and not journaled twice.
    await c.send({"mtype": "crdt", "msg": msg("m", 2)})
    assert (await c.recv_kind("ack"))["serverSeq"] == 1
    await c.send({"mtype": "sync-check", "requestId": "q1"})
    st = await c.recv_kind("sync-status")
    local = Replica("x")
    local.receive(msgspec.convert(msg("m", 2), Message), 1)
    assert st["requestId"] == "q1" and st["serverSeq"] == 1
    assert st["status"] == local.checksum(live=True)
    await c.close()


async def test_json_format_and_resume_after_drop(room_server: ServerProcess) -> None:
    room = unique_room()
    a = await RoomConn.open(room_server, room, "a", fmt="json")
    state = await a.recv_kind("state")
    epoch = state["epoch"]
    b = await RoomConn.open(room_server, room, "b")
    await b.recv_kind("state")
    await b.send({"mtype": "crdt", "msg": msg("b", 1)})
    await b.recv_kind("ack")
    first = await a.recv_kind("broadcast")
    assert first["serverSeq"] == 1
    await a.close()
    for lt in range(2, 7):
        await b.send({"mtype": "crdt", "msg": msg("b", lt)})
        await b.recv_kind("ack")
    a2 = await RoomConn.open(room_server, room, "a", fmt="json", since=1, epoch=epoch)
    st = await a2.recv_kind("state")
    assert st["recovered"] is True and st["snapshot"] is None
    assert [m["id"] for m in st["journal"]] == [f"b:{i}" for i in range(2, 7)]
    assert st["serverSeq"] == 6
    # Wrong epoch: full state, never a partial recovery.
    a3 = await RoomConn.open(room_server, room, "a3", since=1, epoch="bogus")
    st3 = await a3.recv_kind("state")
    assert st3["recovered"] is False and len(st3["journal"]) == 6
    for c in (a2, a3, b):
        await c.close()


async def test_presence_join_update_leave_expiry(room_server: ServerProcess) -> None:
    room = unique_room()
    a = await RoomConn.open(room_server, room, "a")
    await a.recv_kind("state")
    sync = await a.recv_kind("presence")
    assert sync["event"] == "sync"
    b = await RoomConn.open(room_server, room, "b")
    await b.recv_kind("state")
    j = await a.recv_kind("presence")
    assert j["event"] == "join" and j["client"] == "b"
    await b.send({"mtype": "presence", "state": {"cursor": [1, 2]}})
    u = await a.recv_kind("presence")
    assert u == {
        "mtype": "presence",
        "event": "update",
        "client": "b",
        "state": {"cursor": [1, 2]},
        "reason": None,
        "members": None,
    }
    await b.close()
    left = await a.recv_kind("presence")
    assert left["event"] == "leave" and left["client"] == "b" and left["reason"] == "left"
    # c goes silent: its presence expires (server started with --room-presence-timeout 1)
    c = await RoomConn.open(room_server, room, "c")
    await c.recv_kind("state")
    assert (await a.recv_kind("presence"))["event"] == "join"

    async def keep_alive() -> None:
        while True:
            await a.send({"mtype": "heartbeat"})
            await asyncio.sleep(0.3)

    hb = asyncio.create_task(keep_alive())
    try:
        exp = await a.recv_kind("presence", timeout=5)
        assert exp["event"] == "leave" and exp["client"] == "c" and exp["reason"] == "expired"
    finally:
        hb.cancel()
    await a.close()
    await c.close()


async def test_convergence_random_edits_every_otype(room_server: ServerProcess) -> None:
    room = unique_room()
    r = random.Random(7)
    sids = ["a", "b", "c", "d"]
    conns = {s: await RoomConn.open(room_server, room, s) for s in sids}
    reps = {s: Replica(s, sequenced=True) for s in sids}
    for s in sids:
        await conns[s].recv_kind("state")
    counter = [0]
    a = reps["a"]
    a.edit(Op(ot="node.insert", key="", path="children", value={"key": "scene", "tag": "Scene"}), 1)
    for i in range(3):
        a.edit(
            Op(
                ot="node.insert",
                key="scene",
                path="children",
                value={"key": f"n{i}", "tag": "Mesh"},
            ),
            1,
        )
    first = a.commit(1)
    assert first is not None
    await conns["a"].send({"mtype": "crdt", "msg": msgspec.to_builtins(first)})
    sent = 1

    async def pump(s: str, until: float) -> None:
        # apply whatever has arrived
        c = conns[s]
        while True:
            try:
                f = await c.recv(timeout=until)
            except TimeoutError:
                return
            _apply(reps[s], f)
            until = 0.05

    for step in range(120):
        s = r.choice(sids)
        rep = reps[s]
        for _ in range(r.randint(1, 3)):
            rep.edit(random_op(r, rep, s, counter, True), step + 2)
        m = rep.commit(step + 2)
        if m is not None:
            await conns[s].send({"mtype": "crdt", "msg": msgspec.to_builtins(m)})
            sent += 1
        if r.random() < 0.3:
            await pump(r.choice(sids), 0.01)
    async with httpx.AsyncClient() as http:
        # wait until every replica has everything acked and received
        async with asyncio.timeout(20):
            for s in sids:
                while reps[s].pending_count or _confirmed(reps[s]) < sent:
                    f = await conns[s].recv()
                    _apply(reps[s], f)
        full = (await http.get(f"{room_server.url}/v1/rooms/{room}")).text
        live = (await http.get(f"{room_server.url}/v1/rooms/{room}", params={"view": "live"})).text
    for s in sids:
        assert reps[s].dump() == full, s
        assert reps[s].dump(live=True) == live, s
    # a late joiner rebuilt from state converges too
    late = await RoomConn.open(room_server, room, "late")
    st = await late.recv_kind("state")
    snap = msgspec.convert(st["snapshot"], type=_snapshot_type())
    rep = Replica.from_snapshot(
        "late", snap, [msgspec.convert(m, Message) for m in st["journal"]], sequenced=True
    )
    assert rep.dump() == full
    for c in [*conns.values(), late]:
        await c.close()


def _snapshot_type() -> Any:
    from durasync.crdt import Snapshot

    return Snapshot


def _confirmed(rep: Replica) -> int:
    return len(rep.messages) + len([1 for _ in ()])


def _apply(rep: Replica, f: dict[str, Any]) -> None:
    if f["mtype"] == "broadcast":
        rep.receive(msgspec.convert(f["msg"], Message), f["serverSeq"])
    elif f["mtype"] == "ack":
        rep.ack(f["msgId"], f["serverSeq"])


async def test_concurrent_text_typing_converges(room_server: ServerProcess) -> None:
    """Several clients type into one text at random positions at once; all converge."""
    room = unique_room("type")
    sids = ["a", "b", "c", "d"]
    letters = {"a": "α", "b": "b", "c": "ç", "d": "d"}  # one character per typist
    per = 30
    conns = {s: await RoomConn.open(room_server, room, s) for s in sids}
    reps = {s: Replica(s, sequenced=True) for s in sids}
    for s in sids:
        await conns[s].recv_kind("state")
    a = reps["a"]
    a.edit(Op(ot="node.insert", key="", path="children", value={"key": "doc", "tag": "Doc"}), 1)
    a.edit(Op(ot="text.init", key="doc", path="t"), 1)
    first = a.commit(1)
    assert first is not None
    await conns["a"].send({"mtype": "crdt", "msg": msgspec.to_builtins(first)})
    total = 1 + per * len(sids)
    done = {s: asyncio.Event() for s in sids}
    ready = {s: asyncio.Event() for s in sids}

    async def read(s: str) -> None:
        # apply every frame as it arrives; signal when the text exists and when all is in
        while True:
            _apply(reps[s], await conns[s].recv(timeout=20))
            if ("doc", "t") in reps[s].graph.texts:
                ready[s].set()
            if not reps[s].pending_count and _confirmed(reps[s]) == total:
                done[s].set()

    async def type_(s: str, seed: int) -> None:
        r = random.Random(seed)
        rep = reps[s]
        await ready[s].wait()
        for i in range(per):
            n = len(rep.graph.texts[("doc", "t")])
            op = Op(
                ot="text.insert",
                key="doc",
                path="t",
                position=r.randint(0, n),
                value=[None, letters[s]],
            )
            rep.edit(op, i + 2)
            m = rep.commit(i + 2)
            assert m is not None
            await conns[s].send({"mtype": "crdt", "msg": msgspec.to_builtins(m)})
            if r.random() < 0.5:
                await asyncio.sleep(0)  # let other typists' edits arrive: stale views race

    readers = [asyncio.create_task(read(s)) for s in sids]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(type_(s, i) for i, s in enumerate(sids)))
            for s in sids:
                await done[s].wait()
    finally:
        for t in readers:
            t.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    async with httpx.AsyncClient() as http:
        full = (await http.get(f"{room_server.url}/v1/rooms/{room}")).text
    server_text = msgspec.json.decode(full)["nodes"]["doc"]["props"]["t"]
    # every keystroke is there exactly once
    assert len(server_text) == per * len(sids)
    assert all(server_text.count(ch) == per for ch in letters.values())
    # the typists really raced: their keystrokes are interleaved, not one block each
    assert sum(x != y for x, y in itertools.pairwise(server_text)) > len(sids)
    for s in sids:
        assert reps[s].graph.texts[("doc", "t")].text() == server_text, s
        assert reps[s].dump() == full, s
    for c in conns.values():
        await c.close()


async def test_presence_state_is_bounded(room_server: ServerProcess) -> None:
    room = unique_room()
    a = await RoomConn.open(room_server, room, "a")
    await a.recv_kind("state")
    await a.send({"mtype": "presence", "state": "x" * (20 << 10)})  # default bound: 16 KiB
    err = await a.recv_kind("error")
    assert err["code"] == "PRESENCE_TOO_LARGE"
    # The connection stays usable and a small state is accepted.
    b = await RoomConn.open(room_server, room, "b")
    await b.recv_kind("state")
    await a.send({"mtype": "presence", "state": {"cursor": 1}})
    while (f := await b.recv_kind("presence"))["event"] != "update":
        pass
    assert f["client"] == "a" and f["state"] == {"cursor": 1}
    await a.close()
    await b.close()
