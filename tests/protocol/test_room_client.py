"""The client room session alone: fed server frames by hand, time passed in."""

from __future__ import annotations

import msgspec
import pytest

from durasync.crdt import Snapshot
from durasync.protocol.errors import RemoteProtocolError
from durasync.protocol.room_client import ClientRoomSession, RoomError
from durasync.protocol.room_frames import AckFrame, RoomErrorFrame, StateFrame, SyncStatusFrame

NOW = 1_700_000_000.0


def joined(fmt: str = "msgpack") -> ClientRoomSession:
    c = ClientRoomSession("a", fmt=fmt)  # type: ignore[arg-type]
    c.receive_frame(
        StateFrame(snapshot=Snapshot(), journal=[], serverSeq=0, epoch="E", recovered=False), NOW
    )
    c.events_received()  # the join's reload
    return c


def mtypes(c: ClientRoomSession) -> list[str]:
    out = []
    for data in c.data_to_send():
        frame = msgspec.json.decode(data) if isinstance(data, str) else msgspec.msgpack.decode(data)
        out.append(frame["mtype"])
    return out


def test_nothing_goes_out_before_the_state_and_the_outbox_follows_it() -> None:
    c = ClientRoomSession("a", fmt="json")
    assert c.join_params() == {"client": "a", "format": "json"}
    c.edit({"ot": "node.insert", "key": "", "path": "children", "value": {"key": "n"}}, NOW)
    msg = c.commit(NOW)
    c.send_presence({"p": 1})
    c.send_check("q")
    assert msg is not None and c.data_to_send() == [] and c.unsynced == 1
    c.receive_frame(
        StateFrame(snapshot=Snapshot(), journal=[], serverSeq=4, epoch="E", recovered=False), NOW
    )
    assert c.connected and c.join_params()["since"] == "4" and c.join_params()["epoch"] == "E"
    sent = c.data_to_send()
    assert all(isinstance(d, str) for d in sent)  # JSON frames are text messages
    assert [msgspec.json.decode(d)["mtype"] for d in sent] == ["crdt", "presence", "sync-check"]
    assert msg.ts == NOW * 1000  # ms on the wire


def test_a_lost_connection_drops_what_was_not_written() -> None:
    c = joined()
    c.edit({"ot": "node.insert", "key": "", "path": "children", "value": {"key": "n"}}, NOW)
    c.commit(NOW)
    c.connection_lost()
    assert c.data_to_send() == [] and not c.connected and c.unsynced == 1


def test_an_undecodable_frame_raises_and_changes_nothing() -> None:
    c = joined()
    with pytest.raises(RemoteProtocolError) as exc:
        c.receive_data(b"\xc1", NOW)
    assert exc.value.code == "bad_frame"
    with pytest.raises(RemoteProtocolError):
        c.receive_data('{"mtype":"from-the-future"}', NOW)
    assert c.connected and c.events_received() == []


def test_rate_limited_resends_wait_and_keep_one_retry_per_message() -> None:
    c = joined()
    c.edit({"ot": "node.insert", "key": "", "path": "children", "value": {"key": "n"}}, NOW)
    msg = c.commit(NOW)
    assert msg is not None
    c.data_to_send()
    for _ in range(3):  # refused three times before the retry is due: one resend
        c.receive_frame(RoomErrorFrame(msgId=msg.id, error="slow down", code="RATE_LIMITED"), NOW)
    assert [e.code for e in c.events_received() if isinstance(e, RoomError)] == ["RATE_LIMITED"] * 3
    assert c.next_deadline() == pytest.approx(NOW + 0.5)
    c.tick(NOW + 0.4)
    assert c.data_to_send() == []
    c.tick(NOW + 0.5)
    assert mtypes(c) == ["crdt"] and c.next_deadline() is None
    c.receive_frame(AckFrame(msg.id, 1), NOW + 1)
    assert c.unsynced == 0


def test_a_retry_due_while_disconnected_is_left_to_the_next_state() -> None:
    c = joined()
    c.send_check("q")
    c.data_to_send()
    c.receive_frame(SyncStatusFrame(requestId="q", status=None, serverSeq=0), NOW)
    c.connection_lost()
    c.tick(NOW + 1)
    assert c.data_to_send() == [] and c.next_deadline() is None
    c.receive_frame(
        StateFrame(snapshot=None, journal=[], serverSeq=0, epoch="E", recovered=True), NOW + 2
    )
    assert mtypes(c) == ["sync-check"]  # asked again on the new connection
    c.cancel_check("q")
    c.receive_frame(SyncStatusFrame(requestId="q", status="x", serverSeq=0), NOW + 3)
    assert c.events_received() == []  # a cancelled check's answer is ignored


def test_the_position_never_moves_back() -> None:
    c = joined()
    c.receive_frame(AckFrame("a:9", 7), NOW)
    c.receive_frame(AckFrame("a:3", 2), NOW)  # a resend acked with its original seq
    assert c.server_seq == 7


def test_undo_with_uncommitted_edits_sends_the_edits_first() -> None:
    c = joined()
    c.edit({"ot": "node.insert", "key": "", "path": "children", "value": {"key": "n"}}, NOW)
    undo = c.undo(NOW)
    assert undo is not None and undo.ops[0].ot == "meta.undo"
    sent = [
        msgspec.msgpack.decode(d)["msg"]
        for d in c.data_to_send()
        if msgspec.msgpack.decode(d)["mtype"] == "crdt"
    ]
    # the buffer became a message of its own, sent (and kept for resending) before the undo
    assert [m["id"] for m in sent] == ["a:1", "a:2"]
    assert sent[1]["ops"][0]["targetMsgId"] == "a:1"
    assert [m.id for m in c.unacked()] == ["a:1", "a:2"] and c.unsynced == 2
    c.receive_frame(AckFrame("a:1", 1), NOW)
    c.receive_frame(AckFrame("a:2", 2), NOW)
    assert c.unsynced == 0 and c.replica.unacked() == []
