"""Replica: a session never allocates a text char id twice, also after a reload.

The ids of an undone insert are absent from the folded text, yet they stay burnt: a later redo
brings them back. A client that reloads (a new ``Replica`` with the same session id, from the
server's snapshot + journal) must recover the high-water mark of its ids from every message it
holds, excluded ones included, and from the snapshot (``Snapshot.burnt``) when the undone
message was folded into it.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durasync.crdt import Message, Replica, Snapshot
from durasync.crdt.messages import TEXT_OTYPES
from durasync.crdt.text import parse_id

from .crdt_helpers import op
from .crdt_histories import generate


class Room:
    """A sequencing server replica plus helpers to deliver a client's messages to it."""

    def __init__(self) -> None:
        self.server = Replica("server")
        self.seq = 0

    def send(self, client: Replica, m: Message | None) -> Message:
        assert m is not None
        echo = msgspec.json.decode(msgspec.json.encode(m), type=Message)
        self.server.receive(echo, server_seq=self.seq)
        client.ack(m.id, self.seq)
        self.seq += 1
        return echo


def _type(r: Replica, text: str, ts: float, position: int = 0) -> Any:
    return r.edit(
        {"ot": "text.insert", "key": "n1", "path": "t", "position": position, "value": text}, ts
    )


def _start(room: Room) -> Replica:
    """Session "c" creates a node with an empty text, types "ab", then undoes it."""
    c = Replica("c", sequenced=True)
    c.edit({"ot": "node.insert", "key": "", "path": "children", "value": {"key": "n1"}}, 1.0)
    c.edit({"ot": "text.init", "key": "n1", "path": "t", "value": ""}, 1.0)
    room.send(c, c.commit(1.0))
    _type(c, "ab", 2.0)
    room.send(c, c.commit(2.0))
    room.send(c, c.undo(3.0))
    assert c.graph.get("n1", "t") == ""
    return c


def _fresh(room: Room) -> Replica:
    """A replica folding the server's whole journal from nothing (the reference state)."""
    r = Replica("observer", sequenced=True)
    r.receive_many(
        [msgspec.json.decode(msgspec.json.encode(m), type=Message) for m in room.server.messages]
    )
    return r


def test_reload_from_snapshot_and_journal_keeps_undone_ids_burnt() -> None:
    room = Room()
    _start(room)
    # reload: the snapshot holds only the node creation; the undone insert and its undo are in
    # the journal tail, excluded
    snap = room.server.snapshot(upto=1)
    tail = [
        msgspec.json.decode(msgspec.json.encode(m), type=Message) for m in room.server.messages[1:]
    ]
    c2 = Replica.from_snapshot("c", snap, tail, sequenced=True)
    assert c2.graph.get("n1", "t") == ""
    again = _type(c2, "xy", 4.0)
    room.send(c2, c2.commit(4.0))
    assert again.id not in ("c:0", "c:1")
    redo = c2.redo(5.0)
    assert redo is not None and redo.ops[0].targetMsgId == room.server.messages[1].id
    room.send(c2, redo)
    text = room.server.graph.get("n1", "t")
    assert sorted(text) == ["a", "b", "x", "y"]  # nothing lost to an id collision
    assert c2.dump() == room.server.dump() == _fresh(room).dump()


def test_reload_from_a_snapshot_that_folded_the_undone_insert() -> None:
    room = Room()
    old = _start(room)
    # the server compacts everything: the undone insert is folded (excluded) into the snapshot
    snap = room.server.compact()
    assert snap.burnt == [("n1", "t", "c", 2)]
    for codec in (msgspec.json, msgspec.msgpack):
        wire = codec.decode(codec.encode(snap), type=Snapshot)
        c2 = Replica.from_snapshot("c", wire, sequenced=True)
        again = _type(c2, "xy", 4.0)
        assert again.id == "c:2"  # past the burnt ids c:0, c:1
    room.send(c2, c2.commit(4.0))
    # a replica that still holds the undone insert in its journal (the session's old tab)
    # redoes it: both texts survive there, and the others converge with it
    old.receive(room.server.messages[-1], server_seq=room.seq - 1)
    redo = old.redo(5.0)
    assert redo is not None
    room.send(old, redo)
    assert sorted(old.graph.get("n1", "t")) == ["a", "b", "x", "y"]
    # the compacted server baked the exclusion in (module docstring): the redo has no effect
    assert room.server.graph.get("n1", "t") == "xy"


def test_burnt_ids_survive_a_second_compaction_and_old_snapshots_decode() -> None:
    room = Room()
    _start(room)
    snap = room.server.compact()
    reloaded = Replica.from_snapshot("server2", snap)
    reloaded.receive(
        msgspec.json.decode(
            msgspec.json.encode(
                Message(id="z:1", client="z", lt=50, ts=9.0, ops=[op("number.set", "n1", "x", 1)])
            ),
            type=Message,
        )
    )
    again = reloaded.compact()
    assert again.burnt == snap.burnt
    # a snapshot written before the field existed (no "burnt" key) decodes with it empty
    raw = msgspec.json.decode(msgspec.json.encode(snap))
    del raw["burnt"]
    legacy = msgspec.json.decode(msgspec.json.encode(raw), type=Snapshot)
    assert legacy.burnt == []
    # and a snapshot with nothing burnt encodes exactly as before (the field is omitted)
    plain = Replica("p")
    plain.receive(Message(id="a:1", client="a", lt=1, ts=1.0, ops=[op("number.set", "k", "x", 1)]))
    assert b"burnt" not in msgspec.json.encode(plain.snapshot())


def test_own_text_init_ids_are_burnt_too() -> None:
    # text.init with a value creates the chars c:0.. (graph apply_text_only); undone and
    # reloaded, the session must not reuse them
    room = Room()
    c = Replica("c", sequenced=True)
    c.edit({"ot": "node.insert", "key": "", "path": "children", "value": {"key": "n1"}}, 1.0)
    room.send(c, c.commit(1.0))
    c.edit({"ot": "text.init", "key": "n1", "path": "t", "value": "hello"}, 2.0)
    room.send(c, c.commit(2.0))
    room.send(c, c.undo(3.0))
    c.edit({"ot": "text.init", "key": "n1", "path": "t", "value": ""}, 4.0)
    room.send(c, c.commit(4.0))
    tail = [msgspec.json.decode(msgspec.json.encode(m), type=Message) for m in room.server.messages]
    c2 = Replica.from_snapshot("c", Snapshot(), tail, sequenced=True)
    assert _type(c2, "xy", 5.0).id == "c:5"
    room.send(c2, c2.commit(5.0))
    room.send(c2, c2.redo(6.0))
    assert sorted(room.server.graph.get("n1", "t")) == sorted("helloxy")
    assert c2.dump() == room.server.dump() == _fresh(room).dump()


def _allocated(m: Message) -> list[tuple[str, str, str, int, int]]:
    """``(key, path, agent, first, end)`` of every char id range a message's text ops create."""
    out = []
    for o in m.ops:
        if o.ot not in TEXT_OTYPES or o.ot == "text.delete":
            continue
        if o.ot == "text.init":
            if isinstance(o.value, str) and o.value:
                out.append((o.key, o.path, m.client, 0, len(o.value)))
            continue
        if isinstance(o.id, str):
            agent, n = parse_id(o.id)
            assert isinstance(o.value, list)
            out.append((o.key, o.path, agent, n, n + len(o.value[1])))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_no_char_id_is_allocated_twice_across_undo_and_reload(seed: int) -> None:
    """Random sessions type, undo, redo and reload (own snapshot of a random prefix + the rest
    of their journal): no two text ops of the history ever create the same char id."""
    r = random.Random(seed)
    h = generate(r, sessions=3, steps=80, reload=True)
    seen: dict[tuple[str, str, str], list[tuple[int, int, str]]] = {}
    for m in h.messages:
        for key, path, agent, first, end in _allocated(m):
            for a, b, other in seen.get((key, path, agent), []):
                assert end <= a or b <= first, f"{m.id} reuses ids of {other}"
            seen.setdefault((key, path, agent), []).append((first, end, m.id))
