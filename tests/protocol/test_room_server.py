"""The server room session alone: the join rules and what each frame asks of the room."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from durasync.crdt import Message
from durasync.protocol.closecodes import CloseCode
from durasync.protocol.room_frames import HeartbeatFrame, SyncFrame
from durasync.protocol.room_server import (
    ROOM_FAILED,
    Active,
    Commit,
    JoinRefused,
    PresenceSet,
    RoomRules,
    ServerRoomSession,
    StateWanted,
    parse_join,
)

from .room_pair import FakeRoom


def session(room: FakeRoom | None = None, **kw: Any) -> ServerRoomSession:
    join = parse_join("board", {"client": "a"})
    return ServerRoomSession(
        join, room or FakeRoom(), can_write=kw.pop("can_write", True), rules=RoomRules(**kw), now=0
    )


def frame(**fields: Any) -> bytes:
    return msgspec.msgpack.encode(fields)


@pytest.mark.parametrize(
    ("room", "query", "problem"),
    [
        ("..", "client=a", "dots"),
        ("a/b", "client=a", "room names"),
        ("board", "", "client="),
        ("board", "client=a%20b", "client="),
        ("board", "client=a&format=xml", "format"),
        ("board", "client=a&since=x", "since"),
    ],
)
def test_bad_join_urls_are_refused_with_4400(room: str, query: str, problem: str) -> None:
    with pytest.raises(JoinRefused) as exc:
        parse_join(room, query)
    assert exc.value.code == CloseCode.BAD_REQUEST == 4400 and problem in exc.value.reason


def test_join_url_is_read() -> None:
    join = parse_join("board", b"client=team:a&since=7&epoch=E&format=json")
    assert (join.client, join.fmt, join.since, join.epoch) == ("team:a", "json", 7, "E")
    assert parse_join("board", "client=a").fmt == "msgpack"


def test_join_rules_after_the_room_is_loaded() -> None:
    room = FakeRoom("E")
    join = parse_join("board", "client=a&since=3&epoch=E")
    assert join.needs_catch_up(room)  # a position ahead of this node's view, same epoch
    assert not parse_join("board", "client=a&since=3&epoch=X").needs_catch_up(room)
    assert not parse_join("board", "client=a&since=0&epoch=E").needs_catch_up(room)
    refused = join.missing_room()
    assert refused.code == CloseCode.FORBIDDEN and "write access" in refused.reason
    join.check_capacity(1, replacing=False, max_members=2)
    join.check_capacity(2, replacing=True, max_members=2)  # a replacement does not grow it
    with pytest.raises(JoinRefused) as exc:
        join.check_capacity(2, replacing=False, max_members=2)
    assert exc.value.code == CloseCode.ROOM_FULL == 4429


def test_frames_become_events() -> None:
    room = FakeRoom("E")
    s = session(room)
    msg = Message(id="a:1", client="a", lt=1, ts=1)
    s.receive_data(frame(mtype="crdt", msg=msgspec.to_builtins(msg)), 1.0)
    s.receive_data(frame(mtype="presence", state={"c": 1}), 1.0)
    s.receive_frame(HeartbeatFrame(), 1.0)
    s.receive_frame(SyncFrame(since=5, epoch="E"), 1.0)
    events = s.events_received()
    assert [type(e) for e in events] == [
        Active,
        Commit,
        Active,
        PresenceSet,
        Active,
        Active,
        StateWanted,
    ]
    commit = events[1]
    assert isinstance(commit, Commit) and commit.msg.id == "a:1"
    want = events[-1]
    assert isinstance(want, StateWanted) and want.catch_up and want.charge
    assert s.data_to_send() == [] and s.events_received() == []


def test_a_failed_room_closes_the_session_and_it_ignores_the_rest() -> None:
    room = FakeRoom()
    s = session(room)
    room.failed = True
    s.receive_frame(HeartbeatFrame(), 0.0)
    assert s.events_received() == [ROOM_FAILED] and s.closed
    assert ROOM_FAILED.code == CloseCode.ROOM_FAILED == 4011
    s.receive_data(b"garbage", 0.0)
    assert s.events_received() == [] and s.data_to_send() == []


def test_send_error_queues_an_error_frame_in_the_members_format() -> None:
    s = ServerRoomSession(
        parse_join("board", "client=a&format=json"),
        FakeRoom(),
        can_write=True,
        rules=RoomRules(),
        now=0,
    )
    s.send_error(None, "INTERNAL_ERROR", "boom")
    [data] = s.data_to_send()
    assert msgspec.json.decode(data) == {
        "mtype": "error",
        "msgId": None,
        "error": "boom",
        "code": "INTERNAL_ERROR",
    }
