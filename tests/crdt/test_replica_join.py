"""Replica: the one-pass fold of in-order sequenced runs (joins, a server's own stream).

Every test compares with the same messages received one at a time (the general path) and checks
how many messages the run took: all of a clean join, and exactly the prefix before the first
message it must leave to the general path (meta op, duplicate, out-of-order or missing
serverSeq, an id already folded into the snapshot, a message excluded by an early undo).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import msgspec
import pytest

from durasync.crdt import Message, Replica

from .crdt_helpers import msg, op, root_msg

Runs = list[int]


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runs]:
    """Record how many messages each call of ``Replica._fold_sequenced_run`` took."""
    taken: Runs = []
    real = Replica._fold_sequenced_run

    def spy(self: Replica, batch: Sequence[Message], seqs: Sequence[int | None] | None) -> int:
        n = real(self, batch, seqs)
        taken.append(n)
        return n

    monkeypatch.setattr(Replica, "_fold_sequenced_run", spy)
    yield taken


def _clone(m: Message) -> Message:
    return msgspec.json.decode(msgspec.json.encode(m), type=Message)


def _journal(n: int = 12) -> list[Message]:
    """A root with two nodes, then additive, LWW, text and multi-op messages of 3 clients."""
    out = [root_msg("a", 1, "n", "m")]
    out.append(msg("a", 2, op("text.init", "n", "t", "hi")))
    for i in range(3, n + 1):
        c = "abc"[i % 3]
        if i % 4 == 0:
            out.append(
                msg(c, i, op("number.add", "n", "x", i), op("vector3.add", "m", "p", [i, 0, 0]))
            )
        elif i % 4 == 1:
            out.append(msg(c, i, op("number.set", "m", "y", i)))
        elif i % 4 == 2:
            anchor = "a:0"
            out.append(
                msg(c, i, op("text.insert", "n", "t", [anchor, c], id=f"{c}:{i}", seq=i, ts=i))
            )
        else:
            out.append(msg(c, i, op("string.concat", "n", "s", c)))
    return out


def _one_by_one(ms: Sequence[Message], seqs: Sequence[int | None]) -> Replica:
    r = Replica("ref", sequenced=True)
    for m, s in zip(ms, seqs, strict=True):
        r.receive(_clone(m), server_seq=s)
    return r


def _same(a: Replica, b: Replica) -> None:
    assert a.dump(with_meta=True) == b.dump(with_meta=True)
    assert [m.id for m in a.messages] == [m.id for m in b.messages]
    assert [m.serverSeq for m in a.messages] == [m.serverSeq for m in b.messages]
    assert (a.lt, a.clock) == (b.lt, b.clock)
    assert a.snapshot() == b.snapshot()


def test_clean_join_is_one_run(runs: Runs) -> None:
    ms = _journal(40)
    seqs = list(range(len(ms)))
    joiner = Replica("joiner", sequenced=True)
    assert joiner.receive_many([_clone(m) for m in ms], seqs, validate=False) == len(ms)
    assert runs == [len(ms)]
    _same(joiner, _one_by_one(ms, seqs))
    assert all(joiner.has(m.id) for m in ms)
    # the next in-order batch continues the run; resends are duplicates
    more = [msg("b", 100 + i, op("number.add", "n", "x", 1)) for i in range(5)]
    assert joiner.receive_many(more, range(len(ms), len(ms) + 5)) == 5
    assert runs[-1] == 5
    assert joiner.receive_many([_clone(m) for m in ms[:5]], seqs[:5]) == 0
    assert joiner.graph.get("n", "x") == sum(i for i in range(3, 41) if i % 4 == 0) + 5


def test_run_uses_the_messages_own_server_seq(runs: Runs) -> None:
    ms = [_clone(m) for m in _journal(10)]
    for i, m in enumerate(ms):
        m.serverSeq = i
    joiner = Replica("joiner", sequenced=True)
    assert joiner.receive_many(ms) == len(ms)
    assert runs == [len(ms)]
    _same(joiner, _one_by_one(ms, list(range(len(ms)))))


@pytest.mark.parametrize("where", [4, 7])
def test_run_stops_before_a_meta_op(runs: Runs, where: int) -> None:
    ms = _journal(12)
    undo = msg("b", 50, op("meta.undo", "_meta", "_meta", targetMsgId=ms[3].id))
    batch = [*ms[:where], undo, *ms[where:]]
    seqs = list(range(len(batch)))
    joiner = Replica("joiner", sequenced=True)
    assert joiner.receive_many([_clone(m) for m in batch], seqs) == len(batch)
    assert runs == [where]
    assert joiner.is_excluded(ms[3].id)
    _same(joiner, _one_by_one(batch, seqs))


def test_a_meta_op_after_a_normal_op_in_one_message_applies_nothing_twice(runs: Runs) -> None:
    ms = _journal(8)
    mixed = msg(
        "b",
        60,
        op("number.add", "n", "x", 1000),
        op("meta.undo", "_meta", "_meta", targetMsgId=ms[4].id),
    )
    batch = [*ms, mixed, msg("c", 61, op("number.add", "n", "x", 1))]
    seqs = list(range(len(batch)))
    joiner = Replica("joiner", sequenced=True)
    joiner.receive_many([_clone(m) for m in batch], seqs)
    assert runs == [len(ms)]  # stopped before any op of the mixed message was applied
    ref = _one_by_one(batch, seqs)
    _same(joiner, ref)
    assert joiner.graph.get("n", "x") == ref.graph.get("n", "x")


def test_run_stops_at_a_duplicate_inside_the_batch(runs: Runs) -> None:
    ms = _journal(10)
    batch = [_clone(m) for m in ms]
    batch.insert(6, _clone(ms[4]))  # the same id again, with a later serverSeq
    seqs = list(range(len(batch)))
    joiner = Replica("joiner", sequenced=True)
    assert joiner.receive_many(batch, seqs) == len(ms)
    assert runs == [6]
    x = sum(i for i in range(3, 11) if i % 4 == 0)
    assert joiner.graph.get("n", "x") == x  # the additive op of ms[4] applied once


@pytest.mark.parametrize("bad", ["missing", "equal", "earlier"])
def test_run_stops_at_a_seq_that_is_missing_or_not_increasing(runs: Runs, bad: str) -> None:
    ms = _journal(10)
    seqs: list[int | None] = [10 * i for i in range(len(ms))]
    seqs[5] = {"missing": None, "equal": 40, "earlier": 25}[bad]
    joiner = Replica("joiner", sequenced=True)
    assert joiner.receive_many([_clone(m) for m in ms], seqs) == len(ms)
    assert runs == [5]
    _same(joiner, _one_by_one(ms, seqs))


def test_run_stops_at_an_id_of_the_snapshot_or_an_early_undone_message(runs: Runs) -> None:
    ms = _journal(12)
    src = Replica("src", sequenced=True)
    src.receive_many([_clone(m) for m in ms[:4]], range(4))
    snap = src.snapshot()
    joiner = Replica.from_snapshot("joiner", snap, sequenced=True)
    runs.clear()
    batch = [_clone(m) for m in ms[4:8]] + [_clone(ms[2])] + [_clone(m) for m in ms[8:]]
    assert joiner.receive_many(batch, [*range(4, 8), 2, *range(8, 12)]) == len(ms) - 4
    assert runs[0] == 4  # stopped at the folded id
    assert joiner.dump(with_meta=True) == _one_by_one(ms, list(range(12))).dump(with_meta=True)
    # an undo sequenced (and arrived) before its target: the target is excluded, so the run
    # stops there and the general path folds it (as excluded)
    early = Replica("early", sequenced=True)
    undo = msg("z", 99, op("meta.undo", "_meta", "_meta", targetMsgId=ms[6].id))
    early.receive(_clone(undo), server_seq=0)
    runs.clear()
    assert early.receive_many([_clone(m) for m in ms], range(1, 13)) == len(ms)
    assert runs == [6]
    assert early.is_excluded(ms[6].id)
    _same(early, _one_by_one([undo, *ms], list(range(13))))


def test_run_under_pending_and_buffered_edits_reapplies_them_once(runs: Runs) -> None:
    ms = _journal(16)
    seqs = list(range(len(ms)))
    joiner = Replica("joiner", sequenced=True)
    joiner.receive_many([_clone(m) for m in ms[:2]], seqs[:2])
    joiner.edit(op("number.add", "n", "x", 7), ts=1)
    mine = joiner.commit()
    joiner.edit(op("number.add", "n", "x", 100), ts=2)  # buffered
    runs.clear()
    joiner.receive_many([_clone(m) for m in ms[2:]], seqs[2:])
    assert runs == [len(ms) - 2]
    base = sum(i for i in range(3, 17) if i % 4 == 0)
    assert joiner.graph.get("n", "x") == base + 107
    # the overlay is still removable exactly: confirming it moves it into the journal
    assert mine is not None
    assert joiner.ack(mine.id, len(ms))
    joiner.cancel()
    assert joiner.graph.get("n", "x") == base + 7
    _same(joiner, _one_by_one([*ms, mine], [*seqs, len(ms)]))


def test_unsequenced_messages_after_a_run_take_the_per_message_path(runs: Runs) -> None:
    ms = _journal(10)
    joiner = Replica("joiner", sequenced=True)
    batch = [_clone(m) for m in ms]
    seqs: list[int | None] = [*range(6), None, None, None, None]
    joiner.receive_many(batch, seqs)
    assert runs == [6]
    _same(joiner, _one_by_one(ms, seqs))
