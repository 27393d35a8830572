"""Rooms across several nodes: one order decided in the shared store.

In-process part: several :class:`Room` instances ("nodes") load the same room from ONE
:class:`MemoryStore`; clients are replicas behind real :class:`Member` objects on either node.
The e2e part (Redis, two ``durasync serve`` processes) is in ``test_cluster_e2e.py``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from durasync.crdt import Message, Op, Replica
from durasync.protocol.room_frames import (
    AckFrame,
    BroadcastFrame,
    Format,
    ServerFrame,
    StateFrame,
)
from durasync.rooms.room import JournalRecord, Member, Room, RoomSettings, journal_path
from durasync.store.base import OFFSET_START, LogStore, ReadResult
from durasync.store.memory import MemoryStore
from durasync.store.redis import RedisStore
from helpers import eventually
from redisproc import RedisServer

from .test_e2e import random_op

_decoder: msgspec.msgpack.Decoder[ServerFrame] = msgspec.msgpack.Decoder(ServerFrame)


def _copy(m: Message) -> Message:
    """What the server receives: a decoded copy (the room sets ``serverSeq`` on it)."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(m), type=Message)


class Client:
    """A room member whose frames are applied to a sequenced replica as they are sent."""

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.rep = Replica(sid, sequenced=True)
        self.acks: dict[str, int] = {}
        self.broadcast_ids: list[str] = []
        self.seqs: list[int] = []
        self.changed = asyncio.Event()
        self.member: Member | None = None

    async def _send(self, data: bytes, fmt: Format) -> None:
        f = _decoder.decode(data)
        if isinstance(f, BroadcastFrame):
            self.broadcast_ids.append(f.msg.id)
            self.seqs.append(f.serverSeq)
            self.rep.receive(f.msg, f.serverSeq)
        elif isinstance(f, AckFrame):
            self.acks[f.msgId] = f.serverSeq
            self.seqs.append(f.serverSeq)
            self.rep.ack(f.msgId, f.serverSeq)
        elif isinstance(f, StateFrame):
            assert f.snapshot is not None and not f.journal  # joins an empty room
        self.changed.set()

    async def _close(self, code: int, reason: str) -> None:
        pass

    def join(self, room: Room) -> None:
        self.member = Member(
            self.sid,
            "msgpack",
            send=self._send,
            close=self._close,
            limit=64 << 20,
        )
        self.member.start()
        room.join(self.member, since=None, epoch=None, now=0.0)

    async def wait(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not cond():
                self.changed.clear()
                await self.changed.wait()


async def _journal(store: LogStore, room: str) -> list[JournalRecord]:
    out: list[JournalRecord] = []
    offset = OFFSET_START
    while True:
        res: ReadResult = await store.read(journal_path(room), offset, max_messages=10_000)
        out += [msgspec.json.decode(e.data, type=JournalRecord) for e in res.entries]
        offset = res.next_offset
        if res.up_to_date or not res.entries:
            return out


async def _opened(store: MemoryStore) -> MemoryStore:
    await store.open()
    return store


async def _close_all(rooms: list[Room], store: LogStore) -> None:
    for r in rooms:
        await r.close()
    await store.close()


@pytest.fixture(params=["memory", "redis"])
async def two_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[list[LogStore]]:
    """The store as two nodes see it: one MemoryStore shared in-process, or two RedisStore
    clients of one real redis-server (each node its own connections and Pub/Sub)."""
    if request.param == "memory":
        store = await _opened(MemoryStore())
        yield [store, store]
        await store.close()
        return
    with RedisServer(tmp_path) as server:
        stores: list[LogStore] = [RedisStore(server.url), RedisStore(server.url)]
        for st in stores:
            await st.open()
        try:
            yield stores
        finally:
            for st in stores:
                await st.close()


@pytest.mark.parametrize("seed", [1, 2])
async def test_two_nodes_one_store_converge_exactly_once(
    seed: int, two_stores: list[LogStore]
) -> None:
    """Random concurrent edits of every otype on two nodes: one gap-free order, every message
    exactly once, identical graphs on both nodes and every client; snapshots race too."""
    r = random.Random(seed)
    store = two_stores[0]
    settings = RoomSettings(snapshot_every_messages=15, retention_messages=1_000, max_batch=8)
    nodes = [await Room.load("cl", st, settings, create=True) for st in two_stores]
    clients = [Client(f"s{i}") for i in range(6)]
    home = {c.sid: nodes[i % 2] for i, c in enumerate(clients)}
    for c in clients:
        c.join(home[c.sid])
    try:
        # A common root so that node ops have somewhere to go.
        first = clients[0]
        first.rep.edit(
            Op(ot="node.insert", key="", path="children", value={"key": "scene", "tag": "S"}), 1
        )
        m0 = first.rep.commit(1)
        assert m0 is not None
        await home[first.sid].submit(first.member, _copy(m0))
        await eventually(lambda: all(c.rep.has(m0.id) for c in clients))
        sent: list[Message] = [m0]
        counter = [0]
        resent: list[str] = []

        async def author(c: Client, steps: int) -> None:
            for step in range(steps):
                for _ in range(r.randint(1, 3)):
                    c.rep.edit(random_op(r, c.rep, c.sid, counter, True), step + 2)
                m = c.rep.commit(step + 2)
                if m is None:
                    continue
                sent.append(m)
                assert c.member is not None
                await home[c.sid].submit(c.member, _copy(m))
                if r.random() < 0.1:
                    # A resend through the other node (a client that failed over before its
                    # ack arrived): it must be recognised there, not journaled twice.
                    other = nodes[1] if home[c.sid] is nodes[0] else nodes[0]
                    resent.append(m.id)
                    await other.submit(None, _copy(m))
                if r.random() < 0.5:
                    await asyncio.sleep(0)

        await asyncio.gather(*(author(c, 40) for c in clients))
        ids = {m.id for m in sent}

        def complete(c: Client) -> Callable[[], bool]:
            return lambda: c.rep.pending_count == 0 and all(c.rep.has(i) for i in ids)

        for c in clients:
            await c.wait(complete(c))
        await eventually(lambda: all(n.last_seq == len(sent) for n in nodes))

        journal = await _journal(store, "cl")
        # Retention keeps everything here: seqs 1..N with no gap or duplicate, ids once each.
        assert [j.serverSeq for j in journal] == list(range(1, len(sent) + 1))
        assert sorted(j.msg.id for j in journal) == sorted(ids)
        full = nodes[0].replica.dump()
        assert nodes[1].replica.dump() == full
        for c in clients:
            assert c.rep.dump() == full, c.sid
            # Every message reached every client exactly once (own: ack, others: broadcast).
            own = [m.id for m in sent if m.client == c.sid]
            assert sorted(c.acks) == sorted(own)
            others = [i for i in c.broadcast_ids if i not in own]
            assert sorted(others) == sorted(ids - set(own))
            # An own message comes back as a broadcast only when its resend through the other
            # node was journaled first (the sender is "elsewhere" for that node), and once.
            echoed = [i for i in c.broadcast_ids if i in own]
            assert len(echoed) == len(set(echoed)) and set(echoed) <= set(resent)
            for mid in own:
                assert c.acks[mid] == next(j.serverSeq for j in journal if j.msg.id == mid)
        # The contention paths really ran: lost CAS rounds, entries followed from the other node.
        assert sum(n.conflicts for n in nodes) > 0
        assert all(n.followed > 0 for n in nodes)
        # A third node loading now (latest snapshot + tail) has the same graph.
        late = await Room.load("cl", store, settings, create=False)
        nodes.append(late)
        assert late.replica.dump() == full and late.last_seq == len(sent)
    finally:
        for c in clients:
            if c.member is not None:
                await c.member.stop()
        for node in nodes:
            await node.close()


async def test_stale_snapshot_never_replaces_a_newer_one() -> None:
    store = await _opened(MemoryStore())
    settings = RoomSettings(snapshot_every_messages=1_000_000, retention_messages=5)
    a = await Room.load("snap", store, settings, create=True)
    b = await Room.load("snap", store, settings, create=True)
    rooms = [a, b]
    rep = Replica("w", sequenced=True)

    async def write(n: int) -> None:
        target = a.last_seq + n
        for _ in range(n):
            rep.edit({"ot": "number.add", "key": "k", "path": "n", "value": 1}, 1)
            m = rep.commit(1)
            assert m is not None
            await a.submit(None, _copy(m))
        await eventually(lambda: a.last_seq == target)

    try:
        await write(10)
        await eventually(lambda: b.last_seq == 10)
        async with b._lock:  # b's follower cannot move: b's view stays at seq 10
            await write(10)
            async with a._lock:
                assert await a.take_snapshot() is True  # seq 20 wins
            assert b.last_seq == 10
            assert await b.take_snapshot() is False  # stale seq 10: refused by the store
        # a trimmed the journal behind seq 15 while b's view ended at 10: b reloads (resync).
        await eventually(lambda: b.last_seq == 20)
        assert b.resyncs == 1
        async with b._lock:
            assert await b.take_snapshot() is False  # same seq as the stored one: refused
        c = await Room.load("snap", store, settings, create=False)
        rooms.append(c)
        assert c.snap.seq == 20 and c.last_seq == 20
        assert c.replica.dump() == a.replica.dump() == b.replica.dump()
        # The winner trimmed the journal behind its snapshot (retention 5), nobody else did.
        journal = await _journal(store, "snap")
        assert [j.serverSeq for j in journal] == list(range(16, 21))
        snaps = await store.read("__rooms/snap/snapshot", OFFSET_START)
        assert len(snaps.entries) == 1
    finally:
        await _close_all(rooms, store)


class CountingStore(MemoryStore):
    """Counts reads and conditional appends per path."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[str, int] = {}

    async def read(self, path: str, offset: str = OFFSET_START, **kw: Any) -> ReadResult:
        self.reads[path] = self.reads.get(path, 0) + 1
        return await super().read(path, offset, **kw)


async def test_single_node_never_reads_back_its_own_appends() -> None:
    store = CountingStore()
    await store.open()
    room = await Room.load("one", store, RoomSettings(), create=True)
    try:
        loaded_reads = store.reads.get(journal_path("one"), 0)
        rep = Replica("w", sequenced=True)
        for i in range(200):
            rep.edit({"ot": "number.add", "key": "k", "path": "n", "value": 1}, i)
            m = rep.commit(i)
            assert m is not None
            await room.submit(None, _copy(m))
            if i % 7 == 0:
                await asyncio.sleep(0)  # let the follower observe intermediate tails
        await eventually(lambda: room.last_seq == 200 and room.inbox.empty())
        for _ in range(20):
            await asyncio.sleep(0)  # the follower gets every chance to (wrongly) read
        assert store.reads.get(journal_path("one"), 0) == loaded_reads
        assert room.conflicts == 0 and room.followed == 0
    finally:
        await _close_all([room], store)


async def test_journal_written_without_stream_seq_still_loads_and_continues() -> None:
    store = await _opened(MemoryStore())
    settings = RoomSettings()
    old = await Room.load("legacy", store, settings, create=True)
    await old.close()
    rep = Replica("w", sequenced=True)
    msgs = []
    for i in range(1, 6):
        rep.edit({"ot": "number.add", "key": "k", "path": "n", "value": 1}, i)
        m = rep.commit(i)
        assert m is not None
        msgs.append(m)
    # An older server appended without Stream-Seq.
    await store.append(
        journal_path("legacy"),
        [msgspec.json.encode(JournalRecord(i + 1, m)) for i, m in enumerate(msgs)],
    )
    a = await Room.load("legacy", store, settings, create=False)
    b = await Room.load("legacy", store, settings, create=False)
    try:
        assert a.last_seq == b.last_seq == 5
        submits: list[Awaitable[None]] = []
        for i in range(6, 16):
            rep.edit({"ot": "number.add", "key": "k", "path": "n", "value": 1}, i)
            m = rep.commit(i)
            assert m is not None
            submits.append((a if i % 2 else b).submit(None, _copy(m)))
        await asyncio.gather(*submits)
        await eventually(lambda: a.last_seq == b.last_seq == 15)
        journal = await _journal(store, "legacy")
        assert [j.serverSeq for j in journal] == list(range(1, 16))
        assert a.replica.dump() == b.replica.dump()
    finally:
        await _close_all([a, b], store)


async def test_nodes_creating_one_room_at_once_agree_on_its_epoch(
    two_stores: list[LogStore],
) -> None:
    settings = RoomSettings()
    for i in range(5):
        nodes = await asyncio.gather(
            *(Room.load(f"new{i}", st, settings, create=True) for st in two_stores)
        )
        try:
            assert nodes[0].epoch == nodes[1].epoch
        finally:
            for n in nodes:
                await n.close()


async def test_catch_up_makes_a_resume_from_another_nodes_position_exact() -> None:
    store = await _opened(MemoryStore())
    settings = RoomSettings()
    a = await Room.load("cu", store, settings, create=True)
    b = await Room.load("cu", store, settings, create=True)
    try:
        assert b._follower is not None
        b._follower.cancel()  # b's view stays behind (as if its follower had not run yet)
        rep = Replica("w", sequenced=True)
        for i in range(5):
            rep.edit({"ot": "number.add", "key": "k", "path": "n", "value": 1}, i)
            m = rep.commit(i)
            assert m is not None
            await a.submit(None, _copy(m))
        await eventually(lambda: a.last_seq == 5)
        probe = Client("p")
        probe.member = Member(
            "p",
            "msgpack",
            send=probe._send,
            close=probe._close,
            limit=1 << 20,
        )
        # A client that saw seq 3 on a resumes on b: b is at 0, so only a catch-up can make
        # the answer exact (else a full state).
        before = _decoder.decode(b.state_frame(probe.member, since=3, epoch=a.epoch))
        assert isinstance(before, StateFrame) and not before.recovered
        await b.catch_up()
        after = _decoder.decode(b.state_frame(probe.member, since=3, epoch=a.epoch))
        assert isinstance(after, StateFrame) and after.recovered
        assert [m.serverSeq for m in after.journal] == [4, 5]
    finally:
        await _close_all([a, b], store)
