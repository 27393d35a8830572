"""Room snapshots are built off the write loop: sequencing goes on meanwhile,
and nothing written during a snapshot is lost, in memory or after a reload."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import durasync.rooms.room as room_module
from durasync.crdt import Message, Op
from durasync.rooms.room import Room, RoomSettings
from durasync.store.memory import MemoryStore
from helpers import eventually

from .test_cluster import Client, _copy, _journal
from .test_e2e import random_op


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    st = MemoryStore()
    await st.open()
    try:
        yield st
    finally:
        await st.close()


async def _write(
    room: Room, c: Client, r: random.Random, n: int, sent: list[Message], pace: float = 0.0
) -> None:
    counter = [len(sent)]
    for step in range(n):
        c.rep.edit(random_op(r, c.rep, c.sid, counter, True), step + 2)
        m = c.rep.commit(step + 2)
        if m is None:
            continue
        sent.append(m)
        assert c.member is not None
        await room.submit(c.member, _copy(m))
        if pace:
            await asyncio.sleep(pace)  # pacing (a client typing), not synchronisation


async def _root(room: Room, c: Client, sent: list[Message]) -> None:
    c.rep.edit(Op(ot="node.insert", key="", path="children", value={"key": "scene"}), 1)
    m = c.rep.commit(1)
    assert m is not None and c.member is not None
    sent.append(m)
    await room.submit(c.member, _copy(m))


async def test_writer_acks_while_a_snapshot_is_being_built(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    started = threading.Event()
    build = room_module._build_snapshot

    def blocked_build(plan: Any) -> Any:
        started.set()
        if not gate.wait(10):  # the worker thread never hangs the test run
            raise TimeoutError("gate")
        return build(plan)

    monkeypatch.setattr(room_module, "_build_snapshot", blocked_build)
    settings = RoomSettings(snapshot_every_messages=20, retention_messages=1_000)
    room = await Room.load("snap", store, settings, create=True)
    c = Client("a")
    c.join(room)
    r = random.Random(3)
    sent: list[Message] = []
    try:
        await _root(room, c, sent)
        await _write(room, c, r, 40, sent)
        await c.wait(lambda: len(c.acks) == len(sent))
        # The snapshot planned at 20 messages is still being built (its thread is held), yet
        # every later message was sequenced and acknowledged.
        await eventually(started.is_set)
        assert room._snapshotting is not None
        assert room.snap.seq == 0 and room.last_seq == len(sent)
        assert sorted(c.acks.values()) == list(range(1, len(sent) + 1))
        gate.set()
        await eventually(lambda: room.snap.seq > 0 and room._snapshotting is None)
        assert room.snap.seq >= 20
        # The installed replica was caught up with what came after its snapshot.
        await c.wait(lambda: c.rep.pending_count == 0)
        assert room.replica.dump() == c.rep.dump()
    finally:
        gate.set()
        await room.close()
    again = await Room.load("snap", store, settings, create=False)
    try:
        assert again.snap.seq == room.snap.seq
        assert again.last_seq == len(sent) and again.replica.dump() == c.rep.dump()
    finally:
        await again.close()


@pytest.mark.parametrize("seed", [1, 2])
async def test_snapshots_during_concurrent_writes_lose_nothing(
    store: MemoryStore, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = random.Random(seed)
    settings = RoomSettings(snapshot_every_messages=25, retention_messages=10, max_batch=8)
    room = await Room.load("busy", store, settings, create=True)
    clients = [Client(f"s{i}") for i in range(4)]
    for c in clients:
        c.join(room)
    sent: list[Message] = []
    snaps: list[int] = []
    install = Room._install_snapshot

    def counted(self: Room, plan: Any, replica: Any, rec: Any, caught: int) -> bool:
        done = install(self, plan, replica, rec, caught)
        if done:
            snaps.append(rec.seq)
        return done

    monkeypatch.setattr(Room, "_install_snapshot", counted)
    try:
        await _root(room, clients[0], sent)
        await asyncio.gather(*(_write(room, c, r, 80, sent, 0.002) for c in clients))
        ids = {m.id for m in sent}

        def complete(c: Client) -> Callable[[], bool]:
            return lambda: c.rep.pending_count == 0 and all(c.rep.has(i) for i in ids)

        for c in clients:
            await c.wait(complete(c))
        await eventually(lambda: room._snapshotting is None)
        assert room.last_seq == len(sent)
        # Snapshots happened while clients wrote, and they caught up with the writes.
        assert len(snaps) >= 3 and snaps == sorted(snaps)
        assert room.snap.seq > len(sent) - settings.snapshot_every_messages
        dump = room.replica.dump()
        assert all(c.rep.dump() == dump for c in clients)
        # Each client saw every position exactly once (acks + broadcasts), in order.
        for c in clients:
            assert c.seqs == list(range(1, len(sent) + 1))
    finally:
        await room.close()
    # The journal was trimmed behind the snapshots; snapshot + tail still rebuild everything.
    journal = await _journal(store, "busy")
    assert journal[0].serverSeq > 1 and journal[-1].serverSeq == len(sent)
    again = await Room.load("busy", store, settings, create=False)
    try:
        assert again.last_seq == len(sent) and again.replica.dump() == dump
    finally:
        await again.close()
