"""Unit tests of the sans-I/O room core and the frame codec (no network, time passed in)."""

from __future__ import annotations

import msgspec
import pytest

from durasync.crdt import Limits, Message
from durasync.rooms.core import DedupeWindow, PresenceTable, RateLimiter, Sequencer, plan_resume
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
