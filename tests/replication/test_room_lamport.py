"""Replicated rooms at the room level: Lamport-order folds, snapshots of a Lamport prefix,
refolds when a message sorts below the frontier, archive before trim, resume after a refold."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from durasync.crdt import Message, Op, Replica
from durasync.protocol.room_frames import StateFrame, decode_server_frame
from durasync.replication.rooms import RoomIndex
from durasync.rooms import Room, RoomSettings
from durasync.rooms.errors import RoomFailed
from durasync.rooms.room import archive_path, below, lamport_key
from durasync.store import MemoryStore


def m(client: str, lt: int, value: object) -> Message:
    return Message(
        id=f"{client}:{lt}",
        client=client,
        lt=lt,
        ts=lt,
        clock={client: lt},
        ops=[Op(ot="array.push", key="n", path="log", value=value)],
    )


ROOT = Message(
    id="r:0",
    client="r",
    lt=0,
    ts=0,
    clock={"r": 0},
    ops=[Op(ot="node.insert", key="", path="children", value={"key": "n", "tag": "S"})],
)


def lamport_fold(msgs: list[Message]) -> str:
    """The graph of ``msgs`` folded in Lamport order (copies without serverSeq)."""
    rep = Replica("check")
    rep.receive_many([msgspec.structs.replace(x, serverSeq=None) for x in msgs])
    return rep.dump()


def test_below_the_frontier() -> None:
    msgs = [m("a", 1, 0), m("b", 5, 0), m("c", 3, 0)]
    assert not below(msgs, None)
    assert not below(msgs, (1, "a", "a:0"))
    assert below(msgs, (3, "c", "c:4"))  # (1, a) and (3, c) sort below it
    assert not below([], (9, "z", "z"))


async def _room(store: MemoryStore, **kw: int) -> Room:
    settings = RoomSettings(snapshot_every_messages=10**9, retention_messages=kw.get("keep", 2))
    return await Room.load("lab", store, settings, create=True, lamport=True)


async def test_a_message_below_the_frontier_makes_the_room_refold_in_lamport_order() -> None:
    store = MemoryStore()
    await store.open()
    room = await _room(store)
    try:
        assert room.epoch.endswith("-lamport")
        msgs = [ROOT] + [m("a", lt, lt) for lt in range(1, 9)]
        await room.submit_relayed([(x, None, None) for x in msgs])
        async with room._lock:
            assert await room.take_snapshot()
        assert room.frontier == lamport_key(msgs[-1])
        # Journal trimmed behind the snapshot, the records archived first.
        archived = await store.read(archive_path("lab"))
        assert len(archived.entries) >= 5
        late = m("b", 3, "late")  # written offline elsewhere: sorts among the snapshot's
        seqs = await room.submit_relayed([(late, "far", "far")])
        assert seqs == [10] and room.rebuilds == 1
        assert room.replica.dump() == lamport_fold([*msgs, late])
        assert room.snap.rebuilt_at == 10 and room.frontier == lamport_key(msgs[-1])
        # A member resuming from before the refold gets a full state in Lamport order.
        frame = decode_server_frame(room.state_frame(_Member(), since=9, epoch=room.epoch))
        assert isinstance(frame, StateFrame) and not frame.recovered
        assert frame.order == "lamport"
        # The message set stays complete (archive + journal) for reconciliation.
        index = RoomIndex(store, "lab")
        await index.refresh()
        assert len(index.ids) == 10
        # A reload folds the same (it starts from the refolded snapshot).
        dump = room.replica.dump()
    finally:
        await room.close()
    again = await Room.load("lab", store, RoomSettings(), create=False, lamport=True)
    try:
        assert again.replica.dump() == dump
    finally:
        await again.close()
        await store.close()


async def test_a_stale_tail_at_load_is_refolded() -> None:
    store = MemoryStore()
    await store.open()
    room = await _room(store, keep=100)
    msgs = [ROOT] + [m("a", lt, lt) for lt in range(1, 6)]
    await room.submit_relayed([(x, None, None) for x in msgs])
    async with room._lock:
        assert await room.take_snapshot()
    # Journaled after the snapshot by another node of a shared store, sorting inside it.
    late = m("b", 2, "late")
    await room.submit_relayed([(late, "x", "x")])
    await room.close()
    again = await Room.load("lab", store, RoomSettings(), create=False, lamport=True)
    try:
        assert again.replica.dump() == lamport_fold([*msgs, late])
    finally:
        await again.close()
        await store.close()


async def test_serverseq_rooms_are_unchanged_and_epochs_differ_by_mode() -> None:
    store = MemoryStore()
    await store.open()
    plain = await Room.load("p", store, RoomSettings(), create=True)
    try:
        await plain.submit_relayed(
            [(ROOT, None, None), (m("a", 5, 1), None, None), (m("b", 1, 2), None, None)]
        )
        log = plain.replica.graph.get("n", "log")
        assert log == [1, 2]  # serverSeq order, not Lamport
        assert not plain.epoch.endswith("-lamport")
        frame = decode_server_frame(plain.state_frame(_Member(), since=None, epoch=None))
        assert isinstance(frame, StateFrame) and frame.order is None
    finally:
        await plain.close()
        await store.close()


class _Member:
    client = "someone"
    fmt = "msgpack"


class _StuckStore(MemoryStore):
    """Journal appends wait until released (a store that stalls under the writer)."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck = False
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def append(self, path: str, *args: Any, **kw: Any) -> Any:
        if self.stuck and path.endswith("/journal"):
            self.entered.set()
            await self.release.wait()
        return await super().append(path, *args, **kw)


async def test_relayed_messages_pending_when_the_room_closes_fail_instead_of_hanging() -> None:
    store = _StuckStore()
    await store.open()
    room = await _room(store)

    async def no_drain() -> None:  # the drain's deadline passed
        return None

    room._drain = no_drain  # type: ignore[method-assign]
    store.stuck = True
    relayed = asyncio.ensure_future(room.submit_relayed([(ROOT, "far", "far")]))
    await asyncio.wait_for(store.entered.wait(), 5)
    queued = asyncio.ensure_future(room.submit_relayed([(m("a", 1, 1), "far", "far")]))
    try:
        await room.close()
        for task in (relayed, queued):
            with pytest.raises(RoomFailed):
                await asyncio.wait_for(task, 5)
    finally:
        store.release.set()
        for task in (relayed, queued):
            task.cancel()
        await store.close()
