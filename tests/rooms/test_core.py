"""Unit tests of the sans-I/O room state (no network, time passed in)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durasync.crdt import Message
from durasync.protocol.room_rules import counter_problem
from durasync.rooms.core import (
    CounterCeiling,
    DedupeWindow,
    PresenceTable,
    Sequencer,
    journal_run,
    plan_resume,
)


def m(i: str) -> Message:
    return Message(id=i, client=i.split(":", maxsplit=1)[0], lt=1, ts=1)


def test_sequencer_assigns_dense_positions_and_dedupes() -> None:
    seq = Sequencer(0, DedupeWindow(100))
    plan = seq.plan([m("a:1"), m("b:1"), m("a:1")])
    assert [s for _, s in plan.accepted] == [1, 2]
    assert plan.duplicates == [(2, 1)]
    assert seq.last_seq == 0  # nothing consumed before commit (append may fail)
    seq.commit(plan)
    plan2 = seq.plan([m("b:1"), m("c:1")])
    assert plan2.duplicates == [(0, 2)] and [s for _, s in plan2.accepted] == [3]


def test_dedupe_window_is_bounded_and_filters_by_client() -> None:
    w = DedupeWindow(2)
    for i, mid in enumerate(["a:1", "b:1", "a:2"]):
        w.add(mid, i + 1)
    assert w.get("a:1") is None and w.get("a:2") == 3 and len(w) == 2
    assert w.ids_of("a") == ["a:2"]


@pytest.mark.parametrize(
    ("since", "epoch", "first", "kind"),
    [
        (None, None, 1, "full"),
        (5, "E", 1, "recover"),
        (10, "E", 1, "recover"),
        (5, "X", 1, "full"),
        (11, "E", 1, "full"),
        (5, "E", 7, "full"),
        (6, "E", 7, "recover"),
    ],
)
def test_plan_resume(since: int | None, epoch: str | None, first: int, kind: str) -> None:
    plan = plan_resume(since=since, epoch=epoch, room_epoch="E", first_available=first, last_seq=10)
    assert plan.kind == kind


def test_presence_expiry() -> None:
    p = PresenceTable(timeout=10)
    assert p.touch("a", 0) is True
    assert p.update("b", {"x": 1}, 5) is True
    assert p.touch("a", 8) is False
    assert p.expire(16) == ["b"]
    assert p.members() == {"a": None}
    assert p.leave("a") and not p.leave("a")


def test_dedupe_window_ids_of_uses_the_owner() -> None:
    w = DedupeWindow(10)
    w.add("a:1", 1)
    w.add("a:b:1", 2)  # owned by client "a:b", not "a"
    assert w.ids_of("a") == ["a:1"] and w.ids_of("a:b") == ["a:b:1"]


# -- counters ceiling -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**53 - 1), min_size=1, max_size=50))
def test_the_ceiling_rises_at_most_one_step_per_accepted_message(lts: list[int]) -> None:
    c = CounterCeiling()
    for i, lt in enumerate(lts):
        before = c.high
        m = Message(id=f"a:{i}", client="a", lt=lt, ts=1)
        if counter_problem(m, c.high, 1000) is None:
            c.note(m)
            assert c.high <= before + 1000


# -- which journal records form the journal -----------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    first=st.integers(1, 50),
    n=st.integers(0, 40),
    snap_back=st.integers(0, 45),
    garbage=st.lists(st.tuples(st.integers(0, 100), st.sampled_from(["dup", "far"])), max_size=12),
    data=st.data(),
)
def test_journal_run_keeps_exactly_the_rooms_records(
    first: int, n: int, snap_back: int, garbage: list[tuple[int, str]], data: st.DataObject
) -> None:
    """Legit records ``first..first+n-1`` (``first > 1``: trimmed behind a snapshot they
    continue) with garbage interleaved: records repeating a serverSeq already written, or
    serverSeqs far from the journal's: the run kept is exactly the legit records."""
    legit = list(range(first, first + n))
    snapshot_seq = max(first - 1, first + n - 1 - snap_back) if n else first - 1
    stream: list[tuple[int, bool]] = [(s, True) for s in legit]
    for pos, kind in garbage:
        at = pos % (len(stream) + 1)
        if kind == "dup":
            before = [s for s, ok in stream[:at] if ok]
            if not before:
                continue
            seq = data.draw(st.sampled_from(before))
        elif kind == "far":
            seq = first + n + 1000 + data.draw(st.integers(0, 3))
        else:
            seq = data.draw(st.integers(-5, 0))
        stream.insert(at, (seq, False))
    kept = journal_run([s for s, _ in stream], snapshot_seq)
    assert (
        [i for i, (_, ok) in enumerate(stream) if ok] == kept
        or (not legit and not kept)
        or (not legit and all(not ok for _, ok in stream))
    )
    kept_seqs = [stream[i][0] for i in kept]
    assert kept_seqs == list(range(kept_seqs[0], kept_seqs[0] + len(kept))) if kept else True


def test_journal_run_prefers_the_run_that_continues_the_snapshot() -> None:
    assert journal_run([99, 1, 2, 3], 0) == [1, 2, 3]  # a stray record first
    assert journal_run([1, 99], 0) == [0]  # ... or last
    assert journal_run([1, 2, 3, 2, 4], 0) == [0, 1, 2, 4]  # a repeated position
    assert journal_run([7, 8, 9], 8) == [0, 1, 2]  # retained behind a snapshot at 8
    assert journal_run([12, 13], 8) == [0, 1]  # starts after the snapshot: the caller decides
    assert journal_run([], 5) == []
