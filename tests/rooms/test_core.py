"""Unit tests of the sans-I/O room core and the frame codec (no network, time passed in)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durasync.crdt import Limits, Message, Op
from durasync.rooms.core import (
    ByteBudget,
    CounterCeiling,
    DedupeWindow,
    PresenceTable,
    RateLimiter,
    Sequencer,
    id_owner,
    journal_run,
    namespace_problem,
    plan_resume,
    room_name_problem,
)
from durasync.rooms.frames import AckFrame, CrdtFrame, FrameError, decode_client_frame, encode_frame


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


def test_rate_limiter() -> None:
    r = RateLimiter(rate=2, burst=2, now=0)
    assert r.allow(0) and r.allow(0) and not r.allow(0)
    assert r.allow(0.5) and not r.allow(0.5)


def test_decode_errors_name_the_problem() -> None:
    with pytest.raises(FrameError) as e:
        decode_client_frame(b'{"mtype":"crdt","msg":{"id":"a:1"}}', "json")
    assert e.value.code == "INVALID_MESSAGE" and e.value.msg_id == "a:1"
    with pytest.raises(FrameError) as e:
        decode_client_frame(b"x" * 100, "json", max_frame_bytes=10)
    assert e.value.code == "FRAME_TOO_LARGE"
    with pytest.raises(FrameError) as e:
        decode_client_frame(b'{"mtype":"sync-check"}', "json")
    assert e.value.code == "MALFORMED_FRAME" and "requestId" in e.value.message
    ops = [{"ot": "number.add", "key": "k", "path": "p", "value": 1}] * 3
    frame = {"mtype": "crdt", "msg": {"id": "a:1", "client": "a", "lt": 1, "ts": 1, "ops": ops}}
    with pytest.raises(FrameError) as e:
        decode_client_frame(msgspec.msgpack.encode(frame), "msgpack", limits=Limits(max_ops=2))
    assert e.value.code == "INVALID_MESSAGE"
    ok = decode_client_frame(msgspec.msgpack.encode(frame), "msgpack")
    assert isinstance(ok, CrdtFrame) and len(ok.msg.ops) == 3


def test_long_names_are_normalised_and_server_seq_ignored() -> None:
    raw = (
        b'{"mtype":"crdt","msg":{"id":"a:1","sessionId":"a","lamportTime":3,'
        b'"timestamp":1,"serverSeq":99,"ops":[]}}'
    )
    f = decode_client_frame(raw, "json")
    assert isinstance(f, CrdtFrame) and f.msg.client == "a" and f.msg.lt == 3
    assert f.msg.serverSeq is None


def test_encode_frames_both_formats() -> None:
    a = AckFrame("a:1", 4)
    assert msgspec.json.decode(encode_frame(a, "json")) == {
        "mtype": "ack",
        "msgId": "a:1",
        "serverSeq": 4,
    }
    assert msgspec.msgpack.decode(encode_frame(a, "msgpack"))["serverSeq"] == 4


# -- room names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", ".", "..", "...", "a/b", "a\x00b", "a\nb", "x" * 129, "caf\u00e9", "a b", "%2e"]
)
def test_path_like_room_names_are_refused(name: str) -> None:
    assert room_name_problem(name) is not None


@pytest.mark.parametrize("name", ["a", "a.b", ".a", "a..", "__x", "A-Z_0~9", "x" * 128])
def test_ordinary_room_names_are_accepted(name: str) -> None:
    assert room_name_problem(name) is None


# -- id namespaces ----------------------------------------------------------------------------

CLIENTS = st.from_regex(r"[A-Za-z0-9._~:@-]{1,12}", fullmatch=True)
SUFFIX = st.from_regex(r"[A-Za-z0-9._~:@-]{0,6}", fullmatch=True)


def _msg(client: str, mid: str, *ops: Op) -> Message:
    return Message(id=mid, client=client, lt=1, ts=1, ops=list(ops))


@settings(max_examples=500, deadline=None)
@given(owner=CLIENTS, sender=CLIENTS, suffix=SUFFIX)
def test_an_id_belongs_to_at_most_one_client(owner: str, sender: str, suffix: str) -> None:
    mid = f"{owner}:{suffix}"
    ok = namespace_problem(_msg(sender, mid), sender) is None
    # Accepted exactly when the sender is the id's one owner (everything before the last ':',
    # with a non-empty suffix after it): two senders can never both use one id.
    assert ok == (id_owner(mid) == sender)
    if ok:
        assert mid.rpartition(":")[0] == sender and suffix and ":" not in suffix


def test_namespace_rule_codes() -> None:
    assert namespace_problem(_msg("a", "a:1"), "a") is None
    assert namespace_problem(_msg("a:b", "a:b:1"), "a:b") is None
    assert namespace_problem(_msg("a", "a:1"), "b") == (
        "WRONG_CLIENT",
        "msg.client must equal the connection's client",
    )
    for bad in ("victim:1", "a", "a:", "a:b:1", ":1", "a:1:"):
        problem = namespace_problem(_msg("a", bad), "a")
        assert problem is not None and problem[0] == "FOREIGN_ID", bad
    text = Op(ot="text.insert", key="t", path="b", id="victim:5", value=[None, "x"], seq=1, ts=1)
    problem = namespace_problem(_msg("a", "a:1", text), "a")
    assert problem is not None and problem[0] == "FOREIGN_ID" and "ops[0].id" in problem[1]
    text.id = "a:5"
    assert namespace_problem(_msg("a", "a:1", text), "a") is None
    undo = Op(ot="meta.undo", key="_meta", path="_meta", targetMsgId="victim:3")
    problem = namespace_problem(_msg("a", "a:2", undo), "a")
    assert problem is not None and "targetMsgId" in problem[1]
    undo.targetMsgId = "a:1"
    assert namespace_problem(_msg("a", "a:2", undo), "a") is None


def test_dedupe_window_ids_of_uses_the_owner() -> None:
    w = DedupeWindow(10)
    w.add("a:1", 1)
    w.add("a:b:1", 2)  # owned by client "a:b", not "a"
    assert w.ids_of("a") == ["a:1"] and w.ids_of("a:b") == ["a:b:1"]


# -- counters ceiling -------------------------------------------------------------------------


def test_counter_ceiling_bounds_every_lamport_like_counter() -> None:
    c = CounterCeiling(step=100, high=50)
    assert c.problem(Message(id="a:150", client="a", lt=150, ts=1)) is None
    assert c.problem(Message(id="a:151", client="a", lt=151, ts=1)) is not None
    assert c.problem(Message(id="a:1", client="a", lt=1, ts=1, clock={"v": 151})) is not None
    text = Op(ot="text.insert", key="t", path="b", id="a:1", value=[None, "x"], seq=151, ts=1)
    assert c.problem(Message(id="a:1", client="a", lt=1, ts=1, ops=[text])) is not None
    c.note(Message(id="a:1", client="a", lt=1, ts=1, clock={"v": 140}))
    assert c.high == 140
    assert c.problem(Message(id="a:240", client="a", lt=240, ts=1)) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**53 - 1), min_size=1, max_size=50))
def test_the_ceiling_rises_at_most_one_step_per_accepted_message(lts: list[int]) -> None:
    c = CounterCeiling(step=1000)
    for i, lt in enumerate(lts):
        before = c.high
        m = Message(id=f"a:{i}", client="a", lt=lt, ts=1)
        if c.problem(m) is None:
            c.note(m)
            assert c.high <= before + 1000


# -- byte budget ------------------------------------------------------------------------------


def test_byte_budget_allows_one_answer_into_debt_then_waits_for_the_refill() -> None:
    b = ByteBudget(rate=100.0, burst=1000.0, now=0.0)
    assert b.available(0.0)
    b.charge(5000, 0.0)  # one answer larger than the burst is possible ...
    assert not b.available(0.0)
    assert not b.available(39.0)  # ... then nothing until the debt is repaid
    assert b.available(40.5)
    b.charge(10, 40.5)
    assert b.available(1000.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 10_000)), max_size=60))
def test_byte_budget_total_is_bounded(steps: list[tuple[float, int]]) -> None:
    rate, burst = 100.0, 1000.0
    b = ByteBudget(rate, burst, 0.0)
    now = 0.0
    total = 0
    largest = 0
    for dt, cost in steps:
        now += dt
        if b.available(now):
            b.charge(cost, now)
            total += cost
            largest = max(largest, cost)
    assert total <= burst + rate * now + largest


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
