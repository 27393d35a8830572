"""What a hostile member (or a bad record in the store) must not be able to do to a room.

Each test reproduces an attack, against a real server on loopback, and checks the documented
outcome: an ``error`` frame or a close reason for the sender, and a room that keeps working
for everyone else, also after a restart. Work done per client frame is counted (calls, bytes),
never timed.
"""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from durasync.crdt import Message, Replica, Snapshot
from durasync.rooms.room import RoomSettings
from durasync.server import ServerSettings, create_app
from durasync.store.embedded import EmbeddedStore
from durasync.store.memory import MemoryStore
from helpers import ServerProcess, start_server

from .conftest import RoomConn, unique_room, ws_url
from .inprocess import serving
from .test_e2e import msg

MAX = 2**53 - 1


def insert(key: str, parent: str = "") -> dict[str, Any]:
    return {"ot": "node.insert", "key": parent, "path": "children", "value": {"key": key}}


async def recv_answer(c: RoomConn, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
    """The next frame that answers something we sent (presence and pings are kept aside)."""
    async with asyncio.timeout(timeout):
        while True:
            f = await c.recv(timeout)
            if f["mtype"] not in ("presence", "ping", "broadcast"):
                return f


async def still_usable(c: RoomConn, request: str = "alive") -> None:
    """The connection answers a request (after any rate-limited pause)."""
    async with asyncio.timeout(15):
        while True:
            await c.send({"mtype": "sync-check", "requestId": request})
            f = await recv_answer(c)
            if f["mtype"] == "sync-status" and f["requestId"] == request:
                return
            await asyncio.sleep(0.2)  # rate limited: the documented client pause


async def view(server: Any, room: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(f"{server.url}/v1/rooms/{room}")


# -- 1. bad records in the store ----------------------------------------------------------------

GARBAGE_JOURNAL = [
    b"not json",
    b'{"serverSeq":"garbage"}',
    b"[" * 5000 + b"]" * 5000,
    # numbers no format can carry for every member
    b'{"serverSeq":4,"msg":{"id":"x:1","client":"x","lt":18446744073709551616,"ts":1,"ops":[]}}',
    # an op that does not validate
    b'{"serverSeq":4,"msg":{"id":"x:2","client":"x","lt":2,"ts":1,'
    b'"ops":[{"ot":"number.set","key":"n","path":"x","value":"nan"}]}}',
    # a position that was already taken, and one that skips ahead
    b'{"serverSeq":2,"msg":{"id":"w:2","client":"w","lt":9,"ts":1,'
    b'"ops":[{"ot":"number.set","key":"doc","path":"x","value":666}]}}',
    b'{"serverSeq":99,"msg":{"id":"x:3","client":"x","lt":3,"ts":1,"ops":[]}}',
]


async def _write_raw(data_dir: Path, stream: str, records: list[bytes]) -> None:
    """Append ``records`` to a stream of a stopped server's store, as a store writer could."""
    store = EmbeddedStore(data_dir)
    await store.open()
    try:
        await store.append(stream, records)
    finally:
        await store.close()


async def test_bad_records_in_the_store_never_take_a_room_down(data_dir: Path) -> None:
    args = ["--port", "0", "--data", str(data_dir), "--room-snapshot-every", "2"]
    room = unique_room("poison")
    server = start_server(*args)
    try:
        w = await RoomConn.open(server, room, "w")
        epoch = (await w.recv_kind("state"))["epoch"]
        ops = [[insert("doc")], [{"ot": "number.set", "key": "doc", "path": "x", "value": 1}]]
        ops.append([{"ot": "number.set", "key": "doc", "path": "y", "value": 2}])
        for lt, o in enumerate(ops, start=1):
            await w.send({"mtype": "crdt", "msg": msg("w", lt, o)})
            assert (await w.recv_kind("ack"))["serverSeq"] == lt
        await w.close()
        expected = (await view(server, room)).text
    finally:
        assert server.stop() == 0
    # What a writer with store access (or the streams API before it was closed) could add.
    await _write_raw(data_dir, f"__rooms/{room}/journal", GARBAGE_JOURNAL)
    await _write_raw(data_dir, f"__rooms/{room}/snapshot", [b"\xc1 not msgpack", b"\x92\x01"])
    await _write_raw(data_dir, f"__rooms/{room}/meta", [b"not json"])
    for restart in range(2):
        server = start_server(*args)
        try:
            r = await view(server, room)
            assert r.status_code == 200, r.text
            assert r.headers["room-epoch"] == epoch
            assert r.headers["room-server-seq"] == str(3 + restart)
            if restart == 0:
                assert r.text == expected  # nothing from the garbage was applied
            a = await RoomConn.open(server, room, f"a{restart}")
            b = await RoomConn.open(server, room, f"b{restart}", fmt="json")
            for c in (a, b):
                st = await c.recv_kind("state")
                assert st["serverSeq"] == 3 + restart and st["epoch"] == epoch
            edit = [{"ot": "number.set", "key": "doc", "path": "z", "value": restart}]
            await a.send({"mtype": "crdt", "msg": msg(f"a{restart}", 10, edit)})
            assert (await a.recv_kind("ack"))["serverSeq"] == 4 + restart
            assert (await b.recv_kind("broadcast"))["serverSeq"] == 4 + restart
            props = (await view(server, room)).json()["nodes"]["doc"]["props"]
            assert props["z"] == restart and props["x"] == 1 and props["y"] == 2
            for c in (a, b):
                await c.close()
        finally:
            assert server.stop() == 0
        log = "".join(server.output)
        assert "Traceback" not in log
        assert "skipping journal record" in log
        # (a snapshot stored after the restart trims the bad snapshot records behind it)
        assert ("skipping snapshot record" in log) == (restart == 0)


async def test_a_room_whose_meta_has_no_valid_record_gets_one(data_dir: Path) -> None:
    room = unique_room("meta")
    store = EmbeddedStore(data_dir)
    await store.open()
    try:
        from durasync.store.base import StreamConfig

        for part in ("journal", "meta"):
            await store.create(
                f"__rooms/{room}/{part}", StreamConfig(content_type="application/json")
            )
        await store.append(f"__rooms/{room}/meta", [b"{}", b'{"epoch":""}', b"\xff"])
        record = msgspec.json.encode({"serverSeq": 1, "msg": msg("w", 1, [insert("doc")])})
        await store.append(f"__rooms/{room}/journal", [record])
    finally:
        await store.close()
    server = start_server("--port", "0", "--data", str(data_dir))
    try:
        r = await view(server, room)
        assert r.status_code == 200 and "doc" in r.json()["nodes"], r.text
        epoch = r.headers["room-epoch"]
        c = await RoomConn.open(server, room, "c")
        st = await c.recv_kind("state")
        assert st["epoch"] == epoch and st["serverSeq"] == 1
        await c.close()
    finally:
        assert server.stop() == 0
    log = "".join(server.output)
    assert "Traceback" not in log
    assert log.count("skipping meta record") >= 3
    server = start_server("--port", "0", "--data", str(data_dir))
    try:
        assert (await view(server, room)).headers["room-epoch"] == epoch  # the repair stuck
    finally:
        assert server.stop() == 0


# -- 2. numbers no format can carry -------------------------------------------------------------


async def test_a_json_member_cannot_poison_msgpack_members(data_dir: Path) -> None:
    args = ["--port", "0", "--data", str(data_dir)]
    room = unique_room("lt")
    server = start_server(*args)
    try:
        j = await RoomConn.open(server, room, "attacker", fmt="json")
        m = await RoomConn.open(server, room, "m")
        for c in (j, m):
            await c.recv_kind("state")
        bad = msg("attacker", 1, [insert("doc")])
        bad["lt"] = 2**64
        await j.send({"mtype": "crdt", "msg": bad})
        e = await recv_answer(j)
        assert e["mtype"] == "error" and e["msgId"] == "attacker:1", e
        assert "lt" in e["error"]
        # out-of-range numbers inside op values, and the long spelling of the clock fields
        nested = msg("attacker", 2, [{"ot": "object.set", "key": "doc", "path": "o"}])
        nested["ops"][0]["value"] = {"a": [1, {"b": -(2**63)}]}
        await j.send({"mtype": "crdt", "msg": nested})
        assert (await recv_answer(j))["mtype"] == "error"
        # nothing was sequenced: the next valid message is serverSeq 1, and the msgpack member
        # receives it (it was not disconnected)
        await j.send({"mtype": "crdt", "msg": msg("attacker", 3, [insert("doc")])})
        assert (await j.recv_kind("ack"))["serverSeq"] == 1
        assert (await m.recv_kind("broadcast"))["serverSeq"] == 1
        # sums beyond int64 (3,000 x MAX) are held as JS holds them: still encodable
        for lt in range(4, 7):
            adds = [{"ot": "number.add", "key": "doc", "path": "n", "value": MAX}] * 1000
            await j.send({"mtype": "crdt", "msg": msg("attacker", lt, adds)})
            await j.recv_kind("ack")
        late = await RoomConn.open(server, room, "late")
        st = await late.recv_kind("state")
        assert st["serverSeq"] == 4
        for c in (j, m, late):
            await c.close()
    finally:
        assert server.stop() == 0
    server = start_server(*args)
    try:
        c = await RoomConn.open(server, room, "after")  # msgpack join after a restart
        st = await c.recv_kind("state")
        assert st["serverSeq"] == 4
        n = (await view(server, room)).json()["nodes"]["doc"]["props"]["n"]
        assert n == pytest.approx(3000 * MAX)
        await c.close()
    finally:
        assert server.stop() == 0


# -- 3. message-id squatting --------------------------------------------------------------------


async def test_message_ids_cannot_be_squatted(room_server: ServerProcess) -> None:
    room = unique_room("squat")
    mallory = await RoomConn.open(room_server, room, "mallory")
    victim = await RoomConn.open(room_server, room, "victim", fmt="json")
    for c in (mallory, victim):
        await c.recv_kind("state")
    await mallory.send({"mtype": "crdt", "msg": msg("mallory", 1, [insert("base")])})
    assert (await mallory.recv_kind("ack"))["serverSeq"] == 1
    for lt in (1, 2, 3):
        squat = msg("mallory", lt, [insert(f"m{lt}")])
        squat["id"] = f"victim:{lt}"
        await mallory.send({"mtype": "crdt", "msg": squat})
        e = await recv_answer(mallory)
        assert e["mtype"] == "error" and e["code"] == "FOREIGN_ID" and e["msgId"] == f"victim:{lt}"
    # char ids and undo targets belong to their creator too
    text = msg("mallory", 4, [{"ot": "text.init", "key": "base", "path": "t", "value": ""}])
    text["ops"].append(
        {"ot": "text.insert", "key": "base", "path": "t", "id": "victim:7", "value": [None, "x"]}
        | {"seq": 1, "ts": 1}
    )
    await mallory.send({"mtype": "crdt", "msg": text})
    assert (await recv_answer(mallory))["code"] == "FOREIGN_ID"
    undo = msg("mallory", 5, [{"ot": "meta.undo", "key": "_meta", "path": "_meta"}])
    undo["ops"][0]["targetMsgId"] = "victim:1"
    await mallory.send({"mtype": "crdt", "msg": undo})
    assert (await recv_answer(mallory))["code"] == "FOREIGN_ID"
    # the victim's own victim:1 is sequenced and applied, not acked as someone's duplicate
    await victim.send({"mtype": "crdt", "msg": msg("victim", 1, [insert("mine")])})
    ack = await victim.recv_kind("ack")
    assert ack["msgId"] == "victim:1" and ack["serverSeq"] == 2
    assert "mine" in (await view(room_server, room)).json()["nodes"]
    # a client id containing ':' owns exactly the ids before the last ':'
    colon = await RoomConn.open(room_server, room, "victim:x")
    await colon.recv_kind("state")
    await colon.send({"mtype": "crdt", "msg": msg("victim:x", 1, [insert("c")])})
    assert (await colon.recv_kind("ack"))["msgId"] == "victim:x:1"
    fake = msg("victim", 9, [insert("d")])
    fake["id"] = "victim:x:2"  # "victim" cannot use an id of "victim:x"
    await victim.send({"mtype": "crdt", "msg": fake})
    assert (await recv_answer(victim))["code"] == "FOREIGN_ID"
    for c in (mallory, victim, colon):
        await c.close()


async def test_counters_cannot_be_pushed_to_the_top_of_their_range(
    room_server: ServerProcess,
) -> None:
    room = unique_room("lamport")
    mallory = await RoomConn.open(room_server, room, "mallory")
    honest = await RoomConn.open(room_server, room, "honest")
    for c in (mallory, honest):
        await c.recv_kind("state")
    await honest.send({"mtype": "crdt", "msg": msg("honest", 1, [insert("doc")])})
    await honest.recv_kind("ack")
    for field in ("lt", "clock"):
        top = msg("mallory", 2, [{"ot": "number.set", "key": "doc", "path": "x", "value": 1}])
        if field == "lt":
            top["lt"] = MAX
        else:
            top["clock"] = {"honest": MAX - 1}
        await mallory.send({"mtype": "crdt", "msg": top})
        e = await recv_answer(mallory)
        assert e["mtype"] == "error" and e["code"] == "INVALID_MESSAGE", e
    # honest clients, whose counters follow what they saw, keep writing
    await honest.send({"mtype": "crdt", "msg": msg("honest", 2, [insert("more")])})
    assert (await honest.recv_kind("ack"))["serverSeq"] == 2
    for c in (mallory, honest):
        await c.close()


# -- 5. every frame is metered; the work a frame causes is bounded -----------------------------


@pytest.fixture(scope="module")
def slow_server() -> Any:
    server = start_server("--port", "0", "--memory", "--room-rate", "2")
    try:
        yield server
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    "frame",
    [
        {"mtype": "heartbeat"},
        {"mtype": "presence", "state": {"cursor": 1}},
        {"mtype": "sync-check", "requestId": "q"},
        {"mtype": "sync"},
        {"mtype": "ping"},
        {"mtype": "nope"},
    ],
    ids=lambda f: f["mtype"],
)
async def test_every_frame_type_counts_against_the_rate_budget(
    slow_server: ServerProcess, frame: dict[str, Any]
) -> None:
    # 2 frames/s, burst 4: 16 frames sent at once cannot all pass unless the server took
    # ~6 s to read them.
    c = await RoomConn.open(slow_server, unique_room("meter"), "c")
    await c.recv_kind("state")
    for _ in range(16):
        await c.send(frame)
    e = await c.recv_kind("error", timeout=10)
    while e["code"] != "RATE_LIMITED":
        assert frame["mtype"] in ("ping", "nope")  # answered MALFORMED_FRAME within budget
        e = await c.recv_kind("error", timeout=10)
    await still_usable(c)
    await c.close()


async def _build_room(url: str, room: str, nodes: int) -> None:
    server = types.SimpleNamespace(url=url)
    w = await RoomConn.open(server, room, "w")  # type: ignore[arg-type]
    await w.recv_kind("state")
    batch = 1000
    for i in range(0, nodes, batch):
        ops = [
            insert(f"n{k}") | {"value": {"key": f"n{k}", "tag": "Mesh", "name": f"node {k}"}}
            for k in range(i, min(i + batch, nodes))
        ]
        await w.send({"mtype": "crdt", "msg": msg("w", i + 1, ops)})
        await w.recv_kind("ack", timeout=30)
    await w.close()


async def test_sync_check_computes_a_checksum_at_most_once_per_server_seq(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import durasync.crdt.canonical as canonical
    import durasync.crdt.replica as replica

    built = 0
    original = canonical.canonical_json

    def counting(*args: Any, **kwargs: Any) -> str:
        nonlocal built
        built += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(canonical, "canonical_json", counting)
    monkeypatch.setattr(replica, "canonical_json", counting)
    room = unique_room("check")
    app = create_app(MemoryStore(), ServerSettings())
    async with serving(app) as url:
        await _build_room(url, room, 10_000)
        reader = await RoomConn.open(types.SimpleNamespace(url=url), room, "r")  # type: ignore[arg-type]
        await reader.recv_kind("state", timeout=30)
        built = 0
        n = 300
        for i in range(n):
            await reader.send({"mtype": "sync-check", "requestId": i})
        statuses = set()
        for _ in range(n):
            f = await reader.recv_kind("sync-status", timeout=30)
            statuses.add((f["status"], f["serverSeq"]))
        # 300 frames of ~30 bytes: one canonical JSON of the 10,000-node graph, not 300
        assert built == 1
        assert len(statuses) == 1 and None not in next(iter(statuses))
        await reader.close()


async def test_sync_answers_are_bounded_by_the_answer_budget() -> None:
    room = unique_room("sync")
    budget = RoomSettings(sync_bytes_per_second=1.0, sync_bytes_burst=1.0)
    app = create_app(MemoryStore(), ServerSettings(rooms=budget))
    async with serving(app) as url:
        await _build_room(url, room, 1_000)
        server = types.SimpleNamespace(url=url)
        reader = await RoomConn.open(server, room, "r")  # type: ignore[arg-type]
        state = await reader.recv_kind("state")
        state_bytes = len(msgspec.msgpack.encode(state))
        n = 300
        sync = msgspec.msgpack.encode({"mtype": "sync"})  # 12 bytes
        for _ in range(n):
            await reader.ws.send(sync)
        states = limited = received = 0
        async with asyncio.timeout(30):
            while states + limited < n:
                raw = await reader.ws.recv()
                received += len(raw)
                f = msgspec.msgpack.decode(raw)
                if f["mtype"] == "state":
                    states += 1
                elif f["mtype"] == "error":
                    assert f["code"] == "RATE_LIMITED"
                    limited += 1
        # the first sync is answered (into debt), the rest wait for the budget to refill
        assert states == 1 and limited == n - 1
        assert received < state_bytes + n * 200
        # a budget that refills serves again: same room, a new connection's fresh budget
        await reader.close()


# -- 7. bad input: nesting, room names ----------------------------------------------------------


def _deep_frame(depth: int, fmt: str, where: str) -> bytes:
    if fmt == "json":
        nested = b"[" * depth + b"]" * depth
        marker = b'"X"'
        enc = msgspec.json.encode
    else:
        nested = b"\x91" * depth + b"\x90"
        marker = msgspec.msgpack.encode("X")
        enc = msgspec.msgpack.encode
    if where == "presence":
        data = enc({"mtype": "presence", "state": "X"})
    else:
        m = msg("c", 1, [{"ot": "object.set", "key": "k", "path": "p", "value": "X"}])
        data = enc({"mtype": "crdt", "msg": m})
    return data.replace(marker, nested)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("where", ["crdt", "presence"])
@pytest.mark.parametrize("depth", [40, 1000, 5000, 200_000])
async def test_deeply_nested_frames_get_an_error_frame(
    room_server: ServerProcess, fmt: str, where: str, depth: int
) -> None:
    c = await RoomConn.open(room_server, unique_room("deep"), "c", fmt=fmt)
    await c.recv_kind("state")
    data = _deep_frame(depth, fmt, where)
    await c.ws.send(data.decode() if fmt == "json" else data)
    e = await recv_answer(c)
    assert e["mtype"] == "error" and e["code"] in ("MALFORMED_FRAME", "INVALID_MESSAGE"), e
    await still_usable(c)
    await c.close()


async def _raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as given (HTTP clients would normalise dot segments)."""
    host, port = url.split("://", 1)[1].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(10):
            response = await reader.read()
    finally:
        writer.close()
    status = int(response.split(b" ", 2)[1])
    return status, response.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize("name", [".", "..", "%2e%2e", "%2E.", "...", "a%00b", "a%0Ab", "x" * 129])
async def test_path_like_room_names_are_refused(room_server: ServerProcess, name: str) -> None:
    for path in (f"/v1/rooms/{name}", f"/v1/rooms/{name}/journal"):
        status, body = await _raw_get(room_server.url, path)
        assert status == 400 and b"BAD_ROOM" in body, (path, status, body)
    with pytest.raises(ConnectionClosed) as exc:
        async with connect(ws_url(room_server, name, "c")) as ws:
            await asyncio.wait_for(ws.recv(), 10)
    assert exc.value.rcvd is not None and exc.value.rcvd.code == 4400
    assert "room name" in exc.value.rcvd.reason


# -- the relay: every op leaves the server with ot, key and path -------------------------------


def _ops_have_fields(messages: list[dict[str, Any]]) -> None:
    assert messages
    for m in messages:
        assert "clock" in m and "ops" in m, m
        for op in m["ops"]:
            assert {"ot", "key", "path"} <= set(op), op


async def test_the_relay_keeps_empty_keys_and_paths(data_dir: Path) -> None:
    server = start_server("--port", "0", "--data", str(data_dir), "--room-snapshot-every", "2")
    room = unique_room("relay")
    try:
        compact = await RoomConn.open(server, room, "cj", fmt="json")
        long_ = await RoomConn.open(server, room, "lm")
        watch_j = await RoomConn.open(server, room, "wj", fmt="json")
        watch_m = await RoomConn.open(server, room, "wm")
        for c in (compact, long_, watch_j, watch_m):
            await c.recv_kind("state")
        sent = [
            (
                compact,
                msg("cj", 1, [{"ot": "node.insert", "key": "", "path": "", "value": {"key": "a"}}]),
            ),
            (compact, msg("cj", 2, [{"ot": "number.set", "key": "a", "path": "", "value": 1}])),
            (
                long_,
                {
                    "id": "lm:1",
                    "sessionId": "lm",
                    "lamportTime": 3,
                    "timestamp": 3,
                    "ops": [
                        {"otype": "node.insert", "value": {"key": "b"}},
                        {"otype": "object.merge", "key": "b", "value": {"c": 1}},
                    ],
                },
            ),
            (long_, {"id": "lm:2", "sessionId": "lm", "lamportTime": 4, "timestamp": 4, "ops": []}),
            (compact, msg("cj", 5, [{"ot": "string.set", "key": "", "path": "", "value": "r"}])),
        ]
        for c, m in sent:
            await c.send({"mtype": "crdt", "msg": m})
            await c.recv_kind("ack")
        for watcher in (watch_j, watch_m):
            broadcasts = [(await watcher.recv_kind("broadcast"))["msg"] for _ in sent]
            _ops_have_fields(broadcasts)
        # a joiner's state (snapshot + journal after it) and a resume's journal
        async with asyncio.timeout(15):
            while True:
                fresh = await RoomConn.open(server, room, "fresh", fmt="json")
                st = await fresh.recv_kind("state")
                await fresh.close()
                if st["snapshot"] is not None and st["snapshot"]["seq"] >= 4:
                    break
                await asyncio.sleep(0.05)  # the snapshot is built in the background
        rep = Replica.from_snapshot(
            "fresh",
            msgspec.convert(st["snapshot"], Snapshot),
            [msgspec.convert(m, Message) for m in st["journal"]],
            sequenced=True,
        )
        assert {"a", "b"} <= set(rep.graph.nodes)
        _ops_have_fields(st["journal"])  # the message after the snapshot
        for fmt in ("json", "msgpack"):
            back = await RoomConn.open(server, room, f"r{fmt}", fmt=fmt, since=0, epoch=st["epoch"])
            resumed = await back.recv_kind("state")
            assert resumed["recovered"] and len(resumed["journal"]) == len(sent)
            _ops_have_fields(resumed["journal"])
            await back.close()
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"{server.url}/v1/rooms/{room}/journal", params={"offset": "-1"})
        _ops_have_fields([rec["msg"] for rec in r.json()])
        for c in (compact, long_, watch_j, watch_m):
            await c.close()
    finally:
        assert server.stop() == 0
