"""The room cores against each other, without sockets: client cores and server sessions over
the fake network of :mod:`.room_pair` (drop, duplicate, cut, fake clock)."""

from __future__ import annotations

import msgspec
import pytest

from durasync.crdt import Message, Op
from durasync.protocol.closecodes import CloseCode
from durasync.protocol.room_client import CheckResult, PresenceEvent, RoomChange, RoomError
from durasync.protocol.room_frames import (
    AckFrame,
    CrdtFrame,
    RoomErrorFrame,
    StateFrame,
    SyncStatusFrame,
    encode_frame,
)
from durasync.protocol.room_server import RoomRules

from .room_pair import Link, RoomPair, ids, insert_op, set_op


def commit(link: Link, *ops: dict[str, object], pair: RoomPair) -> Message:
    for op in ops:
        link.client.edit(op, pair.now)
    msg = link.client.commit(pair.now)
    assert msg is not None
    link.collect()
    return msg


def errors(link: Link) -> list[RoomError]:
    return link.events_of(RoomError)


def converged(pair: RoomPair, *links: Link) -> None:
    want = pair.room.replica.dump()
    for link in links:
        assert link.client.replica.dump() == want, link.client.client_id
        assert link.client.server_seq == pair.room.last_seq


# -- join, edit, converge ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_members_join_edit_and_converge(fmt: str) -> None:
    pair = RoomPair()
    a = pair.add("alice")
    b = pair.add("bob", fmt=fmt)  # type: ignore[arg-type]
    pair.settle()
    assert a.client.connected and b.client.connected
    assert a.client.reloads == b.client.reloads == 1  # the first state is a full one
    commit(a, insert_op("root"), pair=pair)
    for i in range(6):
        commit(a if i % 2 else b, set_op("root", i), pair=pair)
    pair.settle()
    assert a.client.unsynced == b.client.unsynced == 0
    assert [m.serverSeq for m in pair.room.journal] == list(range(1, 8))
    converged(pair, a, b)
    assert pair.room.replica.graph.nodes["root"].props["x"] == 5
    # b saw a's messages as remote changes of "root"; its own as local ones
    origins = {(c.origin, k) for c in b.events_of(RoomChange) for k in c.keys}
    assert ("remote", "root") in origins and ("local", "root") in origins
    # acks of own messages, broadcasts of the others', in serverSeq order per member
    for link in (a, b):
        seqs = [
            f.serverSeq for f in link.received if not isinstance(f, StateFrame | RoomErrorFrame)
        ]
        assert seqs == list(range(1, 8))


def test_check_matches_the_servers_checksum_and_presence_is_relayed() -> None:
    pair = RoomPair()
    a, b = pair.add("a"), pair.add("b")
    pair.settle()
    commit(a, insert_op("n"), set_op("n", 1), pair=pair)
    pair.settle()
    a.client.send_check("q1")
    b.client.send_presence({"cursor": [1, 2]})
    pair.settle()
    [result] = a.events_of(CheckResult)
    assert result.request_id == "q1" and result.matches and result.server_seq == 1
    assert [e.state for e in a.events_of(PresenceEvent)] == [{"cursor": [1, 2]}]
    assert a.client.presence == {"b": {"cursor": [1, 2]}}
    assert pair.room.checksums_built == 1


# -- resume and resend ------------------------------------------------------------------------


def test_resume_after_a_cut_replays_exactly_and_resends_the_unacknowledged() -> None:
    pair = RoomPair()
    a, b = pair.add("a"), pair.add("b")
    pair.settle()
    commit(a, insert_op("n"), pair=pair)
    pair.settle()
    m1 = commit(a, set_op("n", 1), pair=pair)
    a.deliver_to_server()  # journaled at seq 2 ...
    a.cut()  # ... but the ack is lost with the connection
    assert a.client.unsynced == 1 and not a.client.connected
    m2 = commit(a, set_op("n", 2, "y"), pair=pair)  # offline: optimistic, queued
    assert a.to_server == deque_empty()  # nothing goes out while disconnected
    m3 = commit(b, set_op("n", 3, "z"), pair=pair)
    pair.settle()
    assert a.client.join_params() == {
        "client": "a",
        "format": "msgpack",
        "since": "1",
        "epoch": "E1",
    }
    a.connect()
    pair.settle()
    state = next(f for f in reversed(a.received) if isinstance(f, StateFrame))
    assert state.recovered and ids(state.journal) == [m1.id, m3.id]  # exactly the gap
    assert a.client.reloads == 1  # resumed, no reload
    # m1 was resent and recognised (acked with its original seq), m2 journaled once
    assert ids(pair.room.journal) == ["a:1", m1.id, m3.id, m2.id]
    acks = {f.msgId: f.serverSeq for f in a.received if isinstance(f, AckFrame)}
    assert acks[m1.id] == 2 and acks[m2.id] == 4
    assert a.client.unsynced == 0
    converged(pair, a, b)


def deque_empty() -> object:
    from collections import deque

    return deque()


def test_duplicated_frames_both_ways_apply_once() -> None:
    pair = RoomPair()
    a, b = pair.add("a"), pair.add("b", fmt="json")
    pair.settle()
    commit(a, insert_op("n"), pair=pair)
    for i in range(5):
        commit(a if i % 2 else b, set_op("n", i), pair=pair)
    for _ in range(20):
        for link in (a, b):
            link.deliver_to_server(duplicate=True)
            link.deliver_to_client(duplicate=True)
    pair.settle()
    assert len(pair.room.journal) == len(set(ids(pair.room.journal))) == 6
    converged(pair, a, b)
    assert a.client.unsynced == b.client.unsynced == 0


def test_a_lost_frame_is_recovered_by_the_next_connection() -> None:
    pair = RoomPair()
    a, b = pair.add("a"), pair.add("b")
    pair.settle()
    commit(a, insert_op("n"), pair=pair)
    pair.settle()
    commit(a, set_op("n", 7), pair=pair)
    a.deliver_to_server()
    b.drop_to_client()  # b never gets the broadcast of seq 2 ...
    b.cut()  # ... and notices only when its connection ends
    b.connect()
    pair.settle()
    converged(pair, a, b)
    assert b.client.reloads == 1


@pytest.mark.parametrize("why", ["new epoch", "journal trimmed"])
def test_full_state_reloads_and_keeps_unacknowledged_edits(why: str) -> None:
    pair = RoomPair()
    a = pair.add("a")
    pair.settle()
    commit(a, insert_op("n"), pair=pair)
    for i in range(3):
        commit(a, set_op("n", i), pair=pair)
    pair.settle()
    used_lt = a.client.replica.lt
    a.cut()
    if why == "new epoch":
        pair.reset_room("E2")  # the store was replaced: the old position means nothing
    else:
        other = pair.add("b")
        pair.settle()
        for i in range(3):
            commit(other, set_op("n", 10 + i, "y"), pair=pair)
        pair.settle()
        pair.room.trim(6)  # the journal no longer reaches back to a's position (4)
    pending = commit(a, set_op("n", 99, "z"), pair=pair)
    a.client.edit(set_op("n", 100, "w"), pair.now)  # uncommitted at the reload
    a.connect()
    a.deliver_to_client()  # the state: reload, then the outbox is resent
    # messages made right after the reload, before the resends are acked, take new Lamport
    # times (hence ids): none is taken for a duplicate of a resent one and lost
    after = [commit(a, set_op("n", v, "v"), pair=pair) for v in range(3)]
    pair.settle()
    state = next(f for f in reversed(a.received) if isinstance(f, StateFrame))
    assert not state.recovered and a.client.reloads == 2
    assert any(c.origin == "reload" for c in a.events_of(RoomChange))
    journal = ids(pair.room.journal)
    # the pending message and the edit buffer (committed at the reload) were sent, once each
    assert pending.id in journal and len(journal) == len(set(journal))
    fresh = [m for m in pair.room.journal if m.client == "a" and m.lt > used_lt]
    assert len(fresh) == 5  # the pending one, the edit buffer, the three made after
    assert ids(pair.room.journal)[-3:] == ids(after)
    assert a.client.unsynced == 0
    converged(pair, a)
    if why == "journal trimmed":  # (in a new, empty room the node does not exist)
        assert a.client.graph.nodes["n"].props["w"] == 100


# -- what the server refuses ------------------------------------------------------------------


def test_rate_limited_messages_are_resent_after_the_pause() -> None:
    pair = RoomPair(RoomRules(rate_per_second=2.0, rate_burst=2.0))
    a = pair.add("a")
    a.deliver_to_client()  # the state (joining costs no token)
    sent = [commit(a, set_op("k", i), pair=pair) for i in range(6)]
    a.deliver_to_server()
    a.deliver_to_client()
    limited = [e.msg_id for e in errors(a) if e.code == "RATE_LIMITED"]
    assert limited == [m.id for m in sent[2:]]
    assert a.client.unsynced == 4
    deadline = a.client.next_deadline()
    assert deadline == pytest.approx(pair.now + 0.5)
    pair.advance(0.4)
    assert not a.to_server  # not yet due
    pair.settle()  # the clock moves to each deadline: resends, some limited again, all acked
    assert a.client.unsynced == 0
    assert ids(pair.room.journal)[:2] == [m.id for m in sent[:2]]
    assert sorted(ids(pair.room.journal)) == sorted(m.id for m in sent)


def test_a_read_only_member_is_refused_and_its_edit_undone() -> None:
    pair = RoomPair()
    w = pair.add("w")
    r = pair.add("r", can_write=False)
    pair.settle()
    commit(w, insert_op("n"), pair=pair)
    pair.settle()
    m = commit(r, set_op("n", 5), pair=pair)
    assert r.client.graph.nodes["n"].props["x"] == 5  # optimistic
    pair.settle()
    [err] = errors(r)
    assert (err.code, err.msg_id) == ("FORBIDDEN", m.id)
    assert r.client.unsynced == 0 and "x" not in r.client.graph.nodes["n"].props
    assert [c.origin for c in r.events_of(RoomChange)][-1] == "rejected"
    assert ids(pair.room.journal) == ["w:1"]
    r.client.send_check("after")  # the connection stays usable
    pair.settle()
    assert r.events_of(CheckResult)[0].matches
    converged(pair, w, r)


def test_a_member_writing_as_another_client_is_refused() -> None:
    pair = RoomPair()
    victim = pair.add("victim")
    # connected as "mallory", writing messages of "victim" (its core's id)
    mallory = pair.add("victim", url_client="mallory")
    pair.settle()
    m = commit(mallory, insert_op("n"), pair=pair)
    pair.settle()
    assert [(e.code, e.msg_id) for e in errors(mallory)] == [("WRONG_CLIENT", m.id)]
    assert pair.room.journal == [] and victim.client.graph.nodes.get("n") is None


def test_ids_outside_the_senders_namespace_are_refused() -> None:
    pair = RoomPair()
    a = pair.add("a")
    pair.settle()
    squat = Message(
        id="victim:1", client="a", lt=1, ts=1, ops=[msgspec.convert(insert_op("x"), Op)]
    )
    chars = Message(
        id="a:2",
        client="a",
        lt=2,
        ts=1,
        ops=[Op(ot="text.insert", key="", path="t", id="victim:5", value=[None, "x"], seq=1, ts=1)],
    )
    for msg in (squat, chars):
        a.send_raw(encode_frame(CrdtFrame(msg), "msgpack"))
    a.deliver_to_server()
    a.deliver_to_client()
    assert [(e.code, e.msg_id) for e in errors(a)] == [
        ("FOREIGN_ID", "victim:1"),
        ("FOREIGN_ID", "a:2"),
    ]
    assert pair.room.journal == []


def test_counters_far_above_the_rooms_are_refused() -> None:
    pair = RoomPair(RoomRules(max_counter_step=100))
    a = pair.add("a")
    pair.settle()
    commit(a, insert_op("n"), pair=pair)
    pair.settle()
    high = Message(id="a:500", client="a", lt=500, ts=1, ops=[msgspec.convert(set_op("n", 1), Op)])
    a.send_raw(encode_frame(CrdtFrame(high), "msgpack"))
    a.deliver_to_server()
    a.deliver_to_client()
    [err] = errors(a)
    assert err.code == "INVALID_MESSAGE" and err.msg_id == "a:500" and "beyond" in err.error
    assert len(pair.room.journal) == 1


def test_bad_frames_get_error_frames_and_the_connection_stays_usable() -> None:
    pair = RoomPair(RoomRules(max_frame_bytes=1000, max_presence_bytes=50))
    a = pair.add("a", fmt="json")
    pair.settle()
    for raw in (
        "not json",
        '{"mtype":"nope"}',
        '{"mtype":"crdt","msg":{"id":"a:1"}}',
        '{"mtype":"sync-check","requestId":' + '"x' * 300 + '"}',
        '{"mtype":"presence","state":"' + "x" * 2000 + '"}',
        '{"mtype":"presence","state":"' + "x" * 100 + '"}',
    ):
        a.send_raw(raw)
    a.deliver_to_server()
    a.deliver_to_client()
    assert [e.code for e in errors(a)] == [
        "MALFORMED_FRAME",
        "MALFORMED_FRAME",
        "INVALID_MESSAGE",
        "MALFORMED_FRAME",
        "FRAME_TOO_LARGE",
        "PRESENCE_TOO_LARGE",
    ]
    assert errors(a)[2].msg_id == "a:1"
    commit(a, insert_op("n"), pair=pair)
    pair.settle()
    assert a.client.unsynced == 0 and len(pair.room.journal) == 1


def test_undecodable_frames_over_the_budget_are_rate_limited() -> None:
    pair = RoomPair(RoomRules(rate_per_second=1.0, rate_burst=2.0))
    a = pair.add("a")
    pair.settle()
    for _ in range(4):
        a.send_raw(b"\xc1")
    a.deliver_to_server()
    a.deliver_to_client()
    assert [e.code for e in errors(a)] == ["MALFORMED_FRAME"] * 2 + ["RATE_LIMITED"] * 2


# -- the answer budget ------------------------------------------------------------------------


def test_sync_check_is_computed_once_per_seq_and_asked_again_when_refused() -> None:
    # The budget allows one canonical JSON, then is in debt for a while.
    pair = RoomPair(RoomRules(answer_bytes_per_second=20.0, answer_bytes_burst=1.0))
    a, b = pair.add("a"), pair.add("b")
    pair.settle()
    commit(a, insert_op("n"), pair=pair)
    pair.settle()
    for i in range(10):
        a.client.send_check(f"a{i}")
        b.client.send_check(f"b{i}")
    a.collect()
    b.collect()
    for link in (a, b):
        link.deliver_to_server()
        link.deliver_to_client()
    # the first asker computed it; everyone else got the cached checksum at that seq
    assert pair.room.checksums_built == 1
    assert len(a.events_of(CheckResult)) == len(b.events_of(CheckResult)) == 10
    commit(a, set_op("n", 1), pair=pair)
    pair.settle()
    a.client.send_check("late")  # new seq, a's budget still in debt: status null
    a.collect()
    a.deliver_to_server()
    a.deliver_to_client()
    nulls = [f for f in a.received if isinstance(f, SyncStatusFrame) and f.status is None]
    assert len(nulls) == 1 and not [e for e in a.events_of(CheckResult) if e.request_id == "late"]
    assert a.client.next_deadline() is not None  # asked again after the pause
    pair.settle()  # the clock moves on; the budget refills; the check is answered
    late = [e for e in a.events_of(CheckResult) if e.request_id == "late"]
    assert len(late) == 1 and late[0].matches
    assert pair.room.checksums_built == 2


def test_sync_answers_are_charged_and_refused_over_the_budget() -> None:
    pair = RoomPair(RoomRules(answer_bytes_per_second=1.0, answer_bytes_burst=1.0))
    a = pair.add("a")
    pair.settle()
    commit(a, insert_op("n"), pair=pair)
    pair.settle()
    for _ in range(3):
        a.send_raw(msgspec.msgpack.encode({"mtype": "sync"}))
    a.deliver_to_server()
    a.deliver_to_client()
    states = [f for f in a.received if isinstance(f, StateFrame)]
    assert len(states) == 2  # the join's and the first sync's (which put the budget in debt)
    assert [e.code for e in errors(a)] == ["RATE_LIMITED", "RATE_LIMITED"]


def test_a_failed_room_closes_its_members_with_4011() -> None:
    pair = RoomPair()
    a = pair.add("a")
    pair.settle()
    pair.room.failed = True
    commit(a, insert_op("n"), pair=pair)
    a.deliver_to_server()
    assert [c.code for c in a.closes] == [CloseCode.ROOM_FAILED]
    assert not a.connected and not a.client.connected and a.client.unsynced == 1


def test_pings_are_answered_with_heartbeats() -> None:
    from durasync.protocol.room_frames import PingFrame

    pair = RoomPair()
    a = pair.add("a")
    pair.settle()
    a.send_frame(PingFrame(ts=1))
    a.deliver_to_client()
    [heartbeat] = [msgspec.msgpack.decode(f) for f in a.to_server]
    assert heartbeat["mtype"] == "heartbeat" and heartbeat["client"] == "a"
