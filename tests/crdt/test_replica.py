"""Replica: dedupe, canonical order, pending/ack/reject, edit buffer, undo/redo, snapshots."""

from __future__ import annotations

import itertools
import math

import msgspec
import pytest

from durasync.crdt import CRDTValidationError, Message, Replica, Snapshot

from .crdt_helpers import msg, op, root_msg


def test_duplicates_never_double_apply_additive_ops() -> None:
    r = Replica("me")
    r.receive(root_msg("a", 1, "n"))
    m = msg("b", 2, op("number.add", "n", "x", 5), op("vector3.add", "n", "v", [1, 1, 1]))
    assert r.receive(m) is True
    assert r.receive(m) is False
    assert r.receive_many([m, m]) == 0
    assert r.graph.get("n", "x") == 5 and r.graph.get("n", "v") == [1, 1, 1]


def test_arrival_order_does_not_matter_for_non_commuting_ops() -> None:
    s = math.sqrt(0.5)
    ms = [
        root_msg("a", 1, "n"),
        msg(
            "b",
            2,
            op("quaternion.multiply", "n", "q", [0, 0, s, s]),
            op("color.blend", "n", "c", "#ff0000"),
        ),
        msg(
            "c",
            2,
            op("quaternion.multiply", "n", "q", [s, 0, 0, s]),
            op("color.blend", "n", "c", "#0000ff"),
        ),
        msg("b", 3, op("string.concat", "n", "s", "b"), op("array.push", "n", "a", 1)),
        msg("c", 3, op("string.concat", "n", "s", "c"), op("array.push", "n", "a", 2)),
        msg("d", 3, op("number.set", "n", "x", 10)),
        msg("e", 3, op("number.add", "n", "x", 1)),
        msg("e", 4, op("object.merge", "n", "o", {"k": "e"})),
        msg("f", 4, op("object.merge", "n", "o", {"k": "f"})),
    ]
    ref = Replica("r1")
    ref.receive_many(ms)
    other = Replica("r2", checkpoint_every=1)
    for m in [ms[0], *reversed(ms[1:])]:
        other.receive(m)
    assert other.dump() == ref.dump()
    assert ref.graph.get("n", "s") == "bc"  # (lt, client) order
    assert ref.graph.get("n", "x") == 11  # set (lt 3, d) folds before add (lt 3, e)


def test_concurrent_moves_leave_one_parent_everywhere() -> None:
    base = root_msg("a", 1, "g1", "g2", "c")
    m1 = msg("x", 2, op("node.move", "scene", "children", {"nodeKey": "c", "newParent": "g1"}))
    m2 = msg("y", 2, op("node.move", "scene", "children", {"nodeKey": "c", "newParent": "g2"}))
    dumps = set()
    for order in ([base, m1, m2], [base, m2, m1]):
        r = Replica("r")
        for m in order:
            r.receive(m)
        holders = [k for k, n in r.graph.nodes.items() if "c" in n.children]
        assert holders == ["g2"]
        dumps.add(r.dump())
    assert len(dumps) == 1


def test_server_sequence_beats_lamport_order() -> None:
    r = Replica("me")
    r.receive(root_msg("a", 1, "n"), server_seq=0)
    r.receive(msg("b", 9, op("number.set", "n", "x", 1)), server_seq=2)
    r.receive(msg("c", 3, op("number.add", "n", "x", 5)), server_seq=1)
    # folded as seq 0, 1, 2: add then set
    assert r.graph.get("n", "x") == 1
    assert [m.id for m in r.messages] == ["a:1", "c:3", "b:9"]


def test_validation_error_changes_nothing() -> None:
    r = Replica("me")
    r.receive(root_msg("a", 1, "n"))
    before = r.dump(with_meta=True)
    good = msg("b", 2, op("number.add", "n", "x", 1))
    bad = msg("c", 2, op("number.add", "n", "x", math.nan))
    with pytest.raises(CRDTValidationError) as exc:
        r.receive_many([good, bad])
    assert exc.value.field == "msgs[1].ops[0].value"
    assert r.dump(with_meta=True) == before and not r.has("b:2")
    with pytest.raises(CRDTValidationError):
        r.edit({"ot": "vector3.set", "key": "n", "path": "p", "value": [1, 2]}, ts=1)
    with pytest.raises(CRDTValidationError):
        r.edit({"ot": "meta.undo", "key": "_meta", "path": "_meta", "targetMsgId": "a:1"}, ts=1)
    assert r.commit() is None
    assert r.dump(with_meta=True) == before


def test_edit_buffer_merges_additive_and_replaces_others() -> None:
    r = Replica("me", sequenced=True)
    r.receive(root_msg("a", 1, "n"), server_seq=0)
    r.edit(op("vector3.add", "n", "p", [1, 0, 0]), ts=10)
    r.edit(op("vector3.add", "n", "p", [0, 2, 0]), ts=11)
    r.edit(op("number.multiply", "n", "m", 2), ts=11)
    r.edit(op("number.multiply", "n", "m", 3), ts=11)
    r.edit(op("number.set", "n", "s", 1), ts=11)
    r.edit(op("number.add", "n", "s", 5), ts=11)  # replaces the set in the same slot
    assert r.graph.get("n", "p") == [1, 2, 0]
    assert r.graph.get("n", "m") == 6
    assert r.graph.get("n", "s") == 5  # what the committed message will produce
    m = r.commit(ts=12)
    assert m is not None
    assert [(o.ot, o.value) for o in m.ops] == [
        ("vector3.add", [1, 2, 0]),
        ("number.multiply", 6),
        ("number.add", 5),
    ]
    assert m.id == "me:2" and m.lt == 2 and m.clock["me"] == 1
    assert r.unacked() == [m]
    assert r.commit() is None


def test_local_edits_win_lww_ties_and_rebase_on_remote() -> None:
    r = Replica("a", sequenced=True)
    r.receive(root_msg("z", 1, "n"), server_seq=0)
    r.edit(op("number.set", "n", "x", 1), ts=1)
    local = r.commit()
    assert local is not None and local.lt == 2
    # a concurrent remote set at the same lt from a smaller client id loses...
    r.receive(msg("A", 2, op("number.set", "n", "x", 7)), server_seq=1)
    assert r.graph.get("n", "x") == 1
    # ...a later one wins even while ours is pending
    r.receive(msg("b", 5, op("number.set", "n", "x", 9)), server_seq=2)
    assert r.graph.get("n", "x") == 9
    assert r.lt == 5
    r.ack(local.id, 3)
    assert r.pending_count == 0 and r.graph.get("n", "x") == 9


def test_reject_and_cancel_drop_optimistic_effects() -> None:
    r = Replica("me", sequenced=True)
    r.receive(root_msg("a", 1, "n"), server_seq=0)
    base = r.dump()
    r.edit(op("number.add", "n", "x", 1), ts=1)
    m = r.commit()
    assert m is not None
    r.edit(op("text.insert", "n", "t", [None, "hey"], position=0), ts=2)
    assert r.graph.get("n", "t") == "hey"
    r.cancel()
    assert r.graph.get("n", "t") is None
    assert ("n", "t") not in r.graph.texts
    assert r.reject(m.id) is True
    assert r.reject(m.id) is False
    assert r.dump() == base


def test_own_echo_confirms_pending() -> None:
    r = Replica("me", sequenced=True)
    r.receive(root_msg("a", 1, "n"), server_seq=0)
    r.edit(op("number.add", "n", "x", 1), ts=1)
    m = r.commit()
    assert m is not None
    echo = msgspec.json.decode(msgspec.json.encode(m), type=Message)
    assert r.receive(echo, server_seq=1) is True
    assert r.pending_count == 0 and r.graph.get("n", "x") == 1
    assert r.receive(echo, server_seq=1) is False


def test_undo_redo_exclusion() -> None:
    r = Replica("me")
    r.receive(root_msg("a", 1, "n"))
    r.edit(op("number.set", "n", "x", 1), ts=1)
    first = r.commit()
    r.edit(op("number.set", "n", "x", 2), ts=2)
    r.edit(op("number.add", "n", "y", 3), ts=2)
    r.commit()
    u = r.undo(3)
    assert u is not None and u.ops[0].ot == "meta.undo"
    assert r.graph.get("n", "x") == 1  # the best surviving write is revealed
    assert r.graph.get("n", "y") is None  # the add disappears exactly
    u2 = r.undo(4)
    assert first is not None and u2 is not None and u2.ops[0].targetMsgId == first.id
    assert r.graph.get("n", "x") is None
    assert r.undo(5) is None  # nothing of ours left (root is a's)
    r.redo(6)
    assert r.graph.get("n", "x") == 2 and r.graph.get("n", "y") == 3


def test_undo_commits_buffer_first() -> None:
    r = Replica("me")
    r.receive(root_msg("a", 1, "n"))
    r.edit(op("number.add", "n", "x", 3), ts=1)
    u = r.undo(2)
    assert u is not None and r.graph.get("n", "x") is None
    assert u.ops[0].targetMsgId == "me:2"


def test_undo_arriving_before_its_target_still_applies() -> None:
    target = msg("b", 2, op("number.add", "n", "x", 5))
    undo = msg("b", 3, op("meta.undo", "_meta", "_meta", targetMsgId="b:2"))
    r1, r2 = Replica("r1"), Replica("r2")
    for r, order in ((r1, [target, undo]), (r2, [undo, target])):
        r.receive(root_msg("a", 1, "n"))
        for m in order:
            r.receive(m)
        assert r.graph.get("n", "x") is None and r.is_excluded("b:2")
    assert r1.dump() == r2.dump()


def test_snapshot_round_trip_and_tail() -> None:
    r = Replica("me")
    r.receive(root_msg("a", 1, "n"))
    r.edit(op("text.init", "n", "t"), ts=1)
    r.edit(op("text.insert", "n", "t", [None, "hello"], position=0), ts=1)
    r.edit(op("number.set", "n", "x", 1.25), ts=1)
    r.commit()
    r.edit(op("text.delete", "n", "t", position=0, length=1), ts=2)
    r.commit()
    snap = r.snapshot(upto=2)
    copies = [
        msgspec.json.decode(msgspec.json.encode(snap), type=Snapshot),
        msgspec.msgpack.decode(msgspec.msgpack.encode(snap), type=Snapshot),
    ]
    for s2 in copies:
        rebuilt = Replica.from_snapshot("other", s2, r.messages[2:])
        assert rebuilt.dump(with_meta=True) == r.dump(with_meta=True)
        assert rebuilt.graph.get("n", "t") == "ello"
        # folded ids stay deduplicated
        assert rebuilt.receive(r.messages[0]) is False
        # the rebuilt text doc keeps char identities: a later remote edit lands correctly
        edit = msg("z", 9, op("text.insert", "n", "t", ["me:4", "!"], id="z:0", seq=9, ts=9))
        rebuilt.receive(edit)
        assert rebuilt.graph.get("n", "t") == "ello!"


def test_compact_folds_and_keeps_tail() -> None:
    r = Replica("me")
    r.receive(root_msg("a", 1, "n"))
    for i in range(5):
        r.receive(msg("b", 2 + i, op("number.add", "n", "x", 1)))
    before = r.dump(with_meta=True)
    snap = r.compact(upto=4)
    assert len(r.messages) == 2 and len(snap.seen) == 4
    assert r.dump(with_meta=True) == before
    r.receive(msg("b", 20, op("number.add", "n", "x", 1)))
    assert r.graph.get("n", "x") == 6
    assert r.receive(msg("b", 3, op("number.add", "n", "x", 1))) is False  # folded id


def test_non_causal_text_delivery_converges() -> None:
    base = root_msg("a", 1, "n")
    ins1 = msg("b", 2, op("text.insert", "n", "t", [None, "ab"], id="b:0", seq=1, ts=1))
    ins2 = msg("c", 3, op("text.insert", "n", "t", ["b:1", "X"], id="c:0", seq=2, ts=2))
    dele = msg("c", 4, op("text.delete", "n", "t", rm=[["b:0", 1]]))
    good = Replica("g")
    good.receive_many([base, ins1, ins2, dele])
    assert good.graph.get("n", "t") == "bX"
    bad = Replica("b")
    for m in (base, dele, ins2, ins1):  # deletes and anchors arrive before what they name
        bad.receive(m)
    assert bad.dump() == good.dump()


def test_checksum_and_clock() -> None:
    r1, r2 = Replica("x"), Replica("y")
    ms = [root_msg("a", 1, "n"), msg("b", 2, op("number.add", "n", "x", 1))]
    ms[1].clock = {"a": 1, "b": 4}
    r1.receive_many(ms)
    r2.receive_many(list(reversed(ms)))
    assert r1.checksum() == r2.checksum()
    assert r1.clock == {"a": 1, "b": 4} and r1.lt == 2
    r1.edit(op("number.add", "n", "x", 1), ts=5)
    assert r1.checksum() != r2.checksum()


def test_text_ids_of_an_undone_insert_are_never_reused() -> None:
    # An undo re-folds the doc without our newest chars; the next insert must not take their ids
    # again (two different chars with one id: replicas that saw both would diverge).
    a = Replica("c")
    a.edit({"ot": "node.insert", "key": "", "path": "children", "value": {"key": "n1"}}, 1.0)
    a.edit({"ot": "text.init", "key": "n1", "path": "t", "value": ""}, 1.0)
    sent = [a.commit(1.0)]
    first = a.edit(
        {"ot": "text.insert", "key": "n1", "path": "t", "position": 0, "value": "ab"}, 2.0
    )
    sent.append(a.commit(2.0))
    sent.append(a.undo(3.0))
    again = a.edit(
        {"ot": "text.insert", "key": "n1", "path": "t", "position": 0, "value": "xy"}, 4.0
    )
    sent.append(a.commit(4.0))
    assert first.id != again.id
    b = Replica("d")
    for m in sent:
        assert m is not None
        b.receive(m)
    assert b.dump() == a.dump()
    assert a.graph.texts[("n1", "t")].text() == "xy"


def _text_history() -> tuple[list[Message], Message]:
    """``n`` gets "ab" from b; a removes n while b (concurrently) and c keep editing its text."""
    base = root_msg("a", 1, "n")
    t1 = msg("b", 2, op("text.insert", "n", "t", [None, "ab"], id="b:0", seq=1, ts=1))
    rm = msg("a", 3, op("node.remove", "scene", "children", "n"))
    t2 = msg("b", 4, op("text.insert", "n", "t", ["b:1", "c"], id="b:2", seq=2, ts=2))
    t3 = msg("c", 5, op("text.delete", "n", "t", rm=[["b:0", 1]]))
    undo = msg("a", 6, op("meta.undo", "_meta", "_meta", targetMsgId="a:3"))
    return [base, t1, rm, t2, t3], undo


def _clone(m: Message) -> Message:
    return msgspec.json.decode(msgspec.json.encode(m), type=Message)


@pytest.mark.parametrize("with_undo", [False, True])
def test_text_edits_on_a_removed_node_are_ignored_in_every_order(with_undo: bool) -> None:
    """Text ops after the remove (canonical order) change nothing, whatever the arrival order,
    in batches or one by one; undoing the remove brings them back everywhere."""
    msgs, undo = _text_history()
    if with_undo:
        msgs.append(undo)
    expected_text = "bc" if with_undo else "ab"
    ref = Replica("ref")
    ref.receive_many([_clone(m) for m in msgs])
    assert ref.graph.get("n", "t") == expected_text
    expected = ref.dump(with_meta=True)
    for k, perm in enumerate(itertools.permutations(msgs)):
        r = Replica("x", checkpoint_every=1 + k % 3)
        if k % 2:
            r.receive_many([_clone(m) for m in perm])
        else:
            for m in perm:
                r.receive(_clone(m))
        assert r.dump(with_meta=True) == expected, [m.id for m in perm]
        assert r.snapshot().texts == ref.snapshot().texts


def test_pending_text_edit_under_a_remote_remove() -> None:
    """A sequenced client typed into a node that a remote message (sequenced before its edit)
    removed: the edit has no effect, before and after the ack, as on the server."""
    msgs, _ = _text_history()
    base, t1, rm = msgs[0], msgs[1], msgs[2]
    server = Replica("server")
    client = Replica("c", sequenced=True)
    for i, m in enumerate((base, t1)):
        server.receive(_clone(m), server_seq=i)
        client.receive(_clone(m), server_seq=i)
    client.edit({"ot": "text.insert", "key": "n", "path": "t", "position": 2, "value": "Z"}, 10)
    mine = client.commit()
    assert mine is not None and client.graph.get("n", "t") == "abZ"
    server.receive(_clone(rm), server_seq=2)
    client.receive(_clone(rm), server_seq=2)
    assert client.graph.get("n", "t") == "ab"
    server.receive(_clone(mine), server_seq=3)
    client.ack(mine.id, 3)
    assert client.dump(with_meta=True) == server.dump(with_meta=True)
    assert server.graph.get("n", "t") == "ab"
    # a position-based edit needs a live node to find its position in
    with pytest.raises(CRDTValidationError) as exc:
        client.edit({"ot": "text.insert", "key": "n", "path": "t", "position": 0, "value": "q"}, 11)
    assert exc.value.field == "op.key"
    assert client.dump(with_meta=True) == server.dump(with_meta=True)


def test_rejected_insert_takes_its_text_with_it() -> None:
    """A rejected pending node.insert leaves the node missing: its pending text is gone too."""
    r = Replica("c", sequenced=True)
    r.receive(root_msg("a", 1), server_seq=0)
    r.edit({"ot": "node.insert", "key": "scene", "path": "children", "value": {"key": "m"}}, 5)
    r.edit({"ot": "text.insert", "key": "m", "path": "t", "position": 0, "value": "hi"}, 5)
    first = r.commit()
    r.edit({"ot": "text.insert", "key": "m", "path": "t", "position": 2, "value": "!"}, 6)
    r.commit()
    assert first is not None and r.graph.get("m", "t") == "hi!"
    r.reject(first.id)
    assert "m" not in r.graph.nodes and ("m", "t") not in r.graph.texts
