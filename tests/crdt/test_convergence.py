"""Convergence (DESIGN.md invariant 4): same message set -> byte-identical canonical dumps.

Random multi-session histories (stale views, every otype including text and undo/redo) are
delivered to fresh replicas in random causal orders with duplicates, in one batch or one by
one, to replicas that compact midway, and through a sequencing "server"; every resulting graph
must be identical.
"""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durasync.crdt import Message, Replica, Snapshot

from .crdt_histories import History, causal_order, deliver_all, generate

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _full(h: History, r: random.Random, *, batch: bool) -> Replica:
    rep = Replica("fresh", checkpoint_every=r.choice([1, 3, 64]))
    msgs = causal_order(r, h, duplicates=0.2)
    if batch:
        rep.receive_many(msgs)
    else:
        for m in msgs:
            rep.receive(m)
    return rep


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), sessions=st.integers(2, 4))
def test_every_replica_converges(seed: int, sessions: int) -> None:
    r = random.Random(seed)
    h = generate(r, sessions=sessions, steps=70)
    expected = _full(h, r, batch=True).dump()
    for _ in range(3):
        assert _full(h, r, batch=False).dump() == expected
    deliver_all(r, h)
    for rep in h.sessions.values():
        assert rep.dump() == expected
        assert rep.checksum() == h.sessions["a"].checksum()


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_snapshot_plus_tail_equals_full_replay(seed: int) -> None:
    r = random.Random(seed)
    h = generate(r, sessions=3, steps=60)
    full = Replica("x")
    full.receive_many(causal_order(r, h))
    expected = full.dump(with_meta=True)
    k = r.randint(0, len(full.messages))
    snap = full.snapshot(upto=k)
    # the snapshot survives both serialisations losslessly (text docs included)
    snap_j = msgspec.json.decode(msgspec.json.encode(snap), type=Snapshot)
    snap_m = msgspec.msgpack.decode(msgspec.msgpack.encode(snap), type=Snapshot)
    assert snap_j == snap_m == snap
    tail = full.messages[k:]
    r.shuffle(tail)  # the tail may arrive in any order, with resends of folded messages
    rebuilt = Replica.from_snapshot("z", snap_m, [*tail, *full.messages[: min(k, 3)]])
    assert rebuilt.dump(with_meta=True) == expected
    # compaction in place changes nothing visible, and later messages still apply
    full.compact(upto=k)
    assert full.dump(with_meta=True) == expected
    assert len(full.messages) == len(tail)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_compact_then_continue(seed: int) -> None:
    """Compacting a server-sequenced prefix midway changes nothing.

    Compaction is only sound on a *stable* prefix (no later message can sort before it: the
    server's sequence) and makes exclusions final, so this history has no undo/redo.
    """
    r = random.Random(seed)
    h = generate(r, sessions=3, steps=60, undo=False)
    msgs = causal_order(r, h)
    for i, m in enumerate(msgs):
        m.serverSeq = i
    full = Replica("x")
    full.receive_many(msgs)
    part = Replica("y")
    cut = r.randint(0, len(msgs))
    part.receive_many(msgs[:cut])
    part.compact(upto=r.randint(0, len(part.messages)))
    rest = msgs[cut:]
    r.shuffle(rest)
    for m in rest:
        part.receive(m)
    assert part.dump(with_meta=True) == full.dump(with_meta=True)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_undo_then_redo_is_nothing(seed: int) -> None:
    r = random.Random(seed)
    h = generate(r, sessions=3, steps=50, undo=False)
    deliver_all(r, h)
    rep = h.sessions[r.choice(sorted(h.sessions))]
    before = rep.dump(with_meta=True)
    u = rep.undo(10_000)
    assert u is not None  # every session committed at least... or "a" did
    rd = rep.redo(10_001)
    assert rd is not None and rd.ops[0].targetMsgId == u.ops[0].targetMsgId
    assert rep.dump(with_meta=True) == before
    # the pair also leaves every other replica unchanged, in either order of arrival
    other = Replica("o")
    other.receive_many(causal_order(r, h))
    ref = other.dump(with_meta=True)
    other.receive(rd)
    other.receive(u)
    assert other.dump(with_meta=True) == ref


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_server_sequenced_clients_converge(seed: int) -> None:
    """Clients with pending edits rebase onto a server's order; all end equal to the server."""
    r = random.Random(seed)
    h = generate(r, sessions=3, steps=60)
    order = causal_order(r, h)
    server = Replica("server")
    for i, m in enumerate(order):
        server.receive(m, server_seq=i)
    clients = [Replica(f"c{i}", sequenced=True) for i in range(3)]
    for c in clients:
        # each client sees the sequenced stream in order, interleaved with its own local edits
        for i, m in enumerate(order):
            c.receive(_clone(m), server_seq=i)
            if r.random() < 0.1:
                c.edit({"ot": "number.add", "key": "n0", "path": "local", "value": 1}, ts=i)
        c.cancel()
        assert c.dump() == server.dump()
    # a pending local message is applied on top until the server sequences it
    c = clients[0]
    c.edit({"ot": "number.set", "key": "n1", "path": "mine", "value": 5}, ts=1)
    mine = c.commit()
    assert mine is not None and c.pending_count == 1
    assert c.graph.get("n1", "mine") in (5, None)  # None if n1 was removed
    server.receive(_clone(mine), server_seq=len(order))
    c.ack(mine.id, len(order))
    assert c.pending_count == 0
    assert c.dump() == server.dump()


def _clone(m: Message) -> Message:
    return msgspec.json.decode(msgspec.json.encode(m), type=Message)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), undo=st.booleans())
def test_sequenced_batches_equal_one_by_one(seed: int, undo: bool) -> None:
    """A join and a server's stream in random batches fold exactly like one message at a time.

    Batches exercise the whole-batch path (in-order, sequenced), its fallbacks (meta ops,
    duplicates inside a batch and of folded messages, a batch reaching back before the last
    folded message) and a joiner with a pending edit and a buffered edit (overlay re-applied
    once per batch).
    """
    r = random.Random(seed)
    h = generate(r, sessions=3, steps=60, undo=undo)
    order = causal_order(r, h)
    one = Replica("one", sequenced=True)
    for i, m in enumerate(order):
        one.receive(_clone(m), server_seq=i)
    expected = one.dump(with_meta=True)

    joiner = Replica("joiner", sequenced=True, checkpoint_every=r.choice([1, 8, 64]))
    joiner.edit({"ot": "number.set", "key": "n0", "path": "mine", "value": 1}, ts=1)
    mine = joiner.commit()
    joiner.edit({"ot": "number.add", "key": "n0", "path": "buf", "value": 2}, ts=2)
    seqs = list(range(len(order)))
    i = 0
    while i < len(order):
        k = r.randint(1, 12)
        msgs = [_clone(m) for m in order[i : i + k]]
        ss: list[int | None] = list(seqs[i : i + k])
        if msgs and r.random() < 0.2:
            msgs.append(_clone(msgs[0]))  # a duplicate inside the batch
            ss.append(ss[0])
        if i and r.random() < 0.2:
            j = r.randrange(i)
            msgs.insert(0, _clone(order[j]))  # a resend of a folded message
            ss.insert(0, seqs[j])
        if r.random() < 0.5:
            for m, s in zip(msgs, ss, strict=True):
                m.serverSeq = s
            joiner.receive_many(msgs, validate=r.random() < 0.5)
        else:
            joiner.receive_many(msgs, ss)
        i += k
    assert mine is not None
    joiner.reject(mine.id)
    joiner.cancel()
    assert joiner.dump(with_meta=True) == expected
    # batches that reach back: the second half first, then the first half (general path)
    late = Replica("late", sequenced=True)
    half = len(order) // 2
    late.receive_many([_clone(m) for m in order[half:]], seqs[half:])
    late.receive_many([_clone(m) for m in order[:half]], seqs[:half])
    assert late.dump(with_meta=True) == expected


def _no_refold(n: int) -> None:
    raise AssertionError("snapshot() re-folded")


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), sessions=st.integers(2, 4))
def test_snapshot_fast_path_equals_refold(
    seed: int, sessions: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``snapshot()`` of a replica that folded a server's sequence in place encodes its live
    graph directly (no re-fold); the result must be exactly what re-folding the base + the
    journal gives, also after a midway compaction. Replicas that took messages out of order
    or edited text locally may re-fold instead, but must give the same content either way;
    and snapshot + tail rebuilds the same graph."""
    r = random.Random(seed)
    h = generate(r, sessions=sessions, steps=70)
    deliver_all(r, h)
    order = causal_order(r, h, duplicates=0.1)
    seqs = list(range(1, len(order) + 1))
    server = Replica("server")
    cut = r.randint(0, len(order))
    server.receive_many(order[:cut], seqs[:cut])
    if r.random() < 0.5:
        server.compact()
    for i in range(cut, len(order)):
        server.receive(order[i], server_seq=seqs[i])
    reps = [server, _full(h, r, batch=bool(r.getrandbits(1))), *h.sessions.values()]
    for rep in reps:
        assert rep.pending_count == 0
        refold = rep._fold_prefix
        with monkeypatch.context() as mp:
            if rep is server and not rep._unresolved:  # the fast path must be taken
                mp.setattr(rep, "_fold_prefix", _no_refold)
            fast = rep.snapshot()
        slow = rep._snapshot_of(refold(len(rep.messages)), len(rep.messages))
        assert msgspec.json.encode(fast) == msgspec.json.encode(slow)
        k = r.randint(0, len(rep.messages))
        part = rep.snapshot(upto=k)  # the slow path
        rebuilt = Replica.from_snapshot("z", part, rep.messages[k:])
        assert rebuilt.dump(with_meta=True) == rep.dump(with_meta=True)
        again = rebuilt.snapshot()
        assert again.nodes == fast.nodes and again.texts == fast.texts
        assert sorted(again.seen) == sorted(fast.seen) and again.clock == fast.clock
