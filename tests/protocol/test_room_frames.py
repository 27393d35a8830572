"""Client frames: nesting depth and numeric ranges of every frame type, in JSON and msgpack.

:func:`decode_client_frame` must answer any input with a frame or a :class:`FrameError` (which
the endpoint turns into an ``error`` frame), never another exception; and every frame it
returns must encode again in both formats, for any member.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durasync.crdt import Limits
from durasync.protocol.room_frames import (
    AckFrame,
    CrdtFrame,
    FrameError,
    PresenceFrame,
    PresenceUpdate,
    SyncCheckFrame,
    SyncFrame,
    SyncStatusFrame,
    decode_client_frame,
    encode_frame,
)

MAX = 2**53 - 1
FORMATS = st.sampled_from(["json", "msgpack"])


def encode(obj: Any, fmt: str) -> bytes:
    return msgspec.json.encode(obj) if fmt == "json" else msgspec.msgpack.encode(obj)


def crdt(value: Any = None, **msg: Any) -> dict[str, Any]:
    return {
        "mtype": "crdt",
        "msg": {
            "id": "a:1",
            "client": "a",
            "lt": 1,
            "ts": 1,
            "clock": {"a": 1},
            "ops": [{"ot": "object.set", "key": "n", "path": "o", "value": value or {}}],
        }
        | msg,
    }


#: Frames of every client type with a placeholder where nested data can go.
SHAPES: dict[str, dict[str, Any]] = {
    "crdt value": crdt("PLACEHOLDER"),
    "crdt unknown field": crdt() | {"junk": "PLACEHOLDER"},
    "presence state": {"mtype": "presence", "state": "PLACEHOLDER"},
    "sync vectorClock": {"mtype": "sync", "vectorClock": "PLACEHOLDER"},
    "sync unknown field": {"mtype": "sync", "junk": "PLACEHOLDER"},
    "sync-check requestId": {"mtype": "sync-check", "requestId": "PLACEHOLDER"},
    "heartbeat unknown field": {"mtype": "heartbeat", "junk": "PLACEHOLDER"},
    "unknown mtype": {"mtype": "nope", "junk": "PLACEHOLDER"},
}


def _deep(depth: int, kind: str, fmt: str) -> bytes:
    if fmt == "json":
        if kind == "list":
            return b"[" * depth + b"1" + b"]" * depth
        return b'{"k":' * depth + b"1" + b"}" * depth
    if kind == "list":
        return b"\x91" * depth + b"\x01"
    return b"\x81\xa1k" * depth + b"\x01"


def _frame_with(shape: str, raw: bytes, fmt: str) -> bytes:
    data = encode(SHAPES[shape], fmt)
    marker = encode("PLACEHOLDER", fmt)
    assert data.count(marker) == 1
    return data.replace(marker, raw)


@settings(max_examples=150, deadline=None)
@given(
    shape=st.sampled_from(sorted(SHAPES)),
    depth=st.one_of(st.integers(1000, 1100), st.integers(5000, 50000)),
    kind=st.sampled_from(["list", "dict"]),
    fmt=FORMATS,
)
def test_frames_nested_deeply_never_raise_anything_but_a_frame_error(
    shape: str, depth: int, kind: str, fmt: str
) -> None:
    # Past the decoder's recursion limit, whatever the field: a FrameError (an ``error``
    # frame), never a RecursionError that would drop the connection. A field the server
    # ignores may be skipped without error a bit beyond 1,000 levels (the frame then counts
    # as if it did not have it); every field the server keeps is refused past 32 (below).
    try:
        decode_client_frame(_frame_with(shape, _deep(depth, kind, fmt), fmt), fmt)
    except FrameError as exc:
        assert exc.code in ("MALFORMED_FRAME", "INVALID_MESSAGE")
    else:
        assert "unknown" in shape or "junk" in shape


@settings(max_examples=100, deadline=None)
@given(
    shape=st.sampled_from(sorted(set(SHAPES) - {k for k in SHAPES if "unknown" in k})),
    depth=st.one_of(st.integers(33, 999), st.integers(1000, 1100), st.integers(5000, 50000)),
    kind=st.sampled_from(["list", "dict"]),
    fmt=FORMATS,
)
def test_fields_kept_by_the_server_are_at_most_32_deep(
    shape: str, depth: int, kind: str, fmt: str
) -> None:
    # Kept values are re-encoded for every member (and folded): bounded depth; typed fields
    # refuse nesting at all.
    with pytest.raises(FrameError):
        decode_client_frame(_frame_with(shape, _deep(depth, kind, fmt), fmt), fmt)


OUT = st.one_of(st.integers(MAX + 1, 2**64 - 1), st.integers(-(2**63), -MAX - 1))
OUT_JSON = st.one_of(OUT, st.integers(2**64, 2**200))

#: Client frames (other than crdt, see tests/crdt/test_bounds.py) with a number at ``N``.
NUMBER_PLACES: dict[str, Any] = {
    "presence state": lambda n: {"mtype": "presence", "state": {"cursor": [1, n]}},
    "presence scalar": lambda n: {"mtype": "presence", "state": n},
    "sync since": lambda n: {"mtype": "sync", "since": n},
    "sync count": lambda n: {"mtype": "sync", "count": n},
    "sync vectorClock": lambda n: {"mtype": "sync", "vectorClock": {"a": n}},
    "sync-check requestId": lambda n: {"mtype": "sync-check", "requestId": n},
    "heartbeat vectorClock": lambda n: {"mtype": "heartbeat", "vectorClock": {"a": n}},
    "crdt lt": lambda n: crdt(lt=n),
    "crdt value": lambda n: crdt({"a": [n]}),
    "crdt op extra": lambda n: {
        "mtype": "crdt",
        "msg": crdt()["msg"]
        | {"ops": [{"ot": "number.set", "key": "n", "path": "x", "value": 1, "seq": n}]},
    },
}


@settings(max_examples=200, deadline=None)
@given(place=st.sampled_from(sorted(NUMBER_PLACES)), n=OUT, fmt=FORMATS)
def test_numbers_out_of_range_in_any_frame_get_a_frame_error(place: str, n: int, fmt: str) -> None:
    with pytest.raises(FrameError):
        decode_client_frame(encode(NUMBER_PLACES[place](n), fmt), fmt)


@settings(max_examples=100, deadline=None)
@given(place=st.sampled_from(sorted(NUMBER_PLACES)), n=OUT_JSON)
def test_json_numbers_beyond_msgpack_in_any_frame_get_a_frame_error(place: str, n: int) -> None:
    with pytest.raises(FrameError):
        decode_client_frame(encode(NUMBER_PLACES[place](n), "json"), "json")


@settings(max_examples=200, deadline=None)
@given(place=st.sampled_from(sorted(NUMBER_PLACES)), n=st.integers(0, MAX), fmt=FORMATS)
def test_what_decodes_reencodes_in_both_formats(place: str, n: int, fmt: str) -> None:
    frame = decode_client_frame(encode(NUMBER_PLACES[place](n), fmt), fmt)
    # What the server derives from each client frame and sends to members of either format.
    derived: list[Any] = []
    if isinstance(frame, PresenceUpdate):
        derived.append(PresenceFrame(event="update", client="a", state=frame.state))
    elif isinstance(frame, SyncCheckFrame):
        derived.append(SyncStatusFrame(requestId=frame.requestId, status="x", serverSeq=1))
    elif isinstance(frame, CrdtFrame):
        from durasync.protocol.room_frames import BroadcastFrame

        derived.append(BroadcastFrame(frame.msg, 1))
    else:
        assert isinstance(frame, SyncFrame | type(frame))
    for f in derived:
        for out in ("json", "msgpack"):
            encode_frame(f, out)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_long_request_ids_and_message_ids_are_not_echoed(fmt: str) -> None:
    with pytest.raises(FrameError):
        decode_client_frame(encode({"mtype": "sync-check", "requestId": "x" * 300}, fmt), fmt)
    long_id = "a:" + "1" * 5000
    with pytest.raises(FrameError) as exc:
        decode_client_frame(encode(crdt(id=long_id), fmt), fmt)
    assert exc.value.msg_id is None


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
