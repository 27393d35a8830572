"""Numeric ranges, nesting depth and always-present wire fields of CRDT messages.

Every integer a message carries lies within +-(2**53 - 1) and every float is finite, so an
accepted message encodes in JSON and msgpack and reads back exactly in JavaScript; anything
else is refused by :func:`decode_message` with a :class:`CRDTValidationError` (never an
``OverflowError`` or a ``RecursionError``). The hypothesis strategies put an out-of-range
number anywhere a message can hold one, in both formats.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from durasync.crdt import (
    CRDTValidationError,
    Message,
    Op,
    Replica,
    decode_message,
    encode_message_json,
    encode_message_msgpack,
)
from durasync.crdt.canonical import canonical_json
from durasync.crdt.graph import SceneGraph

#: JavaScript's Number.MAX_SAFE_INTEGER (durasync.crdt.messages.MAX_SAFE_INTEGER).
MAX = 2**53 - 1


def base() -> dict[str, Any]:
    return {
        "id": "a:1",
        "client": "a",
        "lt": 1,
        "ts": 1,
        "clock": {"a": 1},
        "ops": [{"ot": "number.set", "key": "n", "path": "x", "value": 1}],
    }


def _set_op(**fields: Any) -> Callable[[dict[str, Any], Any], None]:
    def put(m: dict[str, Any], n: Any) -> None:
        m["ops"] = [{k: (n if v is ... else v) for k, v in fields.items()}]

    return put


def _extra(name: str) -> Callable[[dict[str, Any], Any], None]:
    def put(m: dict[str, Any], n: Any) -> None:
        m["ops"][0][name] = n

    return put


def _nested(n: Any) -> Any:
    return {"a": [1, {"b": [n, 2]}]}


#: Where a number can sit in a message (name -> how to put ``n`` there).
PLACES: dict[str, Callable[[dict[str, Any], Any], None]] = {
    "lt": lambda m, n: m.__setitem__("lt", n),
    "lamportTime": lambda m, n: (m.pop("lt"), m.__setitem__("lamportTime", n)),
    "ts": lambda m, n: m.__setitem__("ts", n),
    "timestamp": lambda m, n: (m.pop("ts"), m.__setitem__("timestamp", n)),
    "clock": lambda m, n: m["clock"].__setitem__("b", n),
    "serverSeq": lambda m, n: m.__setitem__("serverSeq", n),
    "op.seq": _extra("seq"),
    "op.ts": _extra("ts"),
    "op.position": _extra("position"),
    "op.length": _extra("length"),
    "op.from": _extra("from"),
    "op.to": _extra("to"),
    "number.set": _set_op(ot="number.set", key="n", path="x", value=...),
    "number.add": _set_op(ot="number.add", key="n", path="x", value=...),
    "vector3.add": lambda m, n: _set_op(ot="vector3.add", key="n", path="p", value=...)(
        m, [0, n, 0]
    ),
    "quaternion.multiply": lambda m, n: _set_op(
        ot="quaternion.multiply", key="n", path="q", value=...
    )(m, [0, 0, n, 1]),
    "object.set": lambda m, n: _set_op(ot="object.set", key="n", path="o", value=...)(
        m, _nested(n)
    ),
    "array.push": lambda m, n: _set_op(ot="array.push", key="n", path="l", value=...)(
        m, _nested(n)
    ),
    "node.insert": lambda m, n: _set_op(ot="node.insert", key="", path="children", value=...)(
        m, {"key": "k", "tag": "T", "props": _nested(n)}
    ),
    "node.move": lambda m, n: _set_op(ot="node.move", key="p", path="children", value=...)(
        m, {"nodeKey": "k", "newParent": "q", "extra": n}
    ),
    "array.move": lambda m, n: _set_op(
        ot="array.move", key="n", path="l", value=..., **{"from": 0, "to": 1}
    )(m, _nested(n)),
    "meta.undo": lambda m, n: _set_op(
        ot="meta.undo", key="_meta", path="_meta", targetMsgId="a:0", value=...
    )(m, _nested(n)),
    "text.delete value": lambda m, n: _set_op(
        ot="text.delete", key="t", path="body", rm=[["a:1", 1]], value=...
    )(m, _nested(n)),
    "text.rm length": lambda m, n: _set_op(ot="text.delete", key="t", path="body", rm=...)(
        m, [["a:1", n]]
    ),
    "text.insert seq": _set_op(
        ot="text.insert", key="t", path="body", id="a:5", value=[None, "x"], ts=1, seq=...
    ),
    "text.insert ts": _set_op(
        ot="text.insert", key="t", path="body", id="a:5", value=[None, "x"], seq=1, ts=...
    ),
}
#: Places that refuse negative numbers too (counters, lengths).
POSITIVE = {"lt", "lamportTime", "clock", "text.rm length", "text.insert seq"}

# Integers msgpack can carry but JavaScript cannot hold exactly, and beyond msgpack (JSON only).
OUT_MSGPACK = st.one_of(st.integers(MAX + 1, 2**64 - 1), st.integers(-(2**63), -MAX - 1))
OUT_JSON = st.one_of(OUT_MSGPACK, st.integers(2**64, 2**300), st.integers(-(2**300), -(2**63)))
IN_RANGE = st.integers(1, MAX)


def encode(obj: Any, fmt: str) -> bytes:
    return msgspec.json.encode(obj) if fmt == "json" else msgspec.msgpack.encode(obj)


def built(place: str, n: Any) -> dict[str, Any]:
    m = base()
    PLACES[place](m, n)
    return m


@settings(max_examples=300, deadline=None)
@given(
    place=st.sampled_from(sorted(PLACES)), n=OUT_MSGPACK, fmt=st.sampled_from(["json", "msgpack"])
)
def test_an_integer_out_of_the_safe_range_is_refused_anywhere(place: str, n: int, fmt: str) -> None:
    with pytest.raises(CRDTValidationError):
        decode_message(encode(built(place, n), fmt), format=fmt)


@settings(max_examples=100, deadline=None)
@given(place=st.sampled_from(sorted(PLACES)), n=OUT_JSON)
def test_json_integers_beyond_msgpack_are_refused_anywhere(place: str, n: int) -> None:
    # The original attack: a JSON member's lt = 2**64 was accepted, then msgpack failed.
    with pytest.raises(CRDTValidationError):
        decode_message(encode(built(place, n), "json"), format="json")


@settings(max_examples=300, deadline=None)
@given(place=st.sampled_from(sorted(PLACES)), n=IN_RANGE, fmt=st.sampled_from(["json", "msgpack"]))
@example(place="text.rm length", n=MAX, fmt="json")
@example(place="lt", n=MAX, fmt="msgpack")
def test_a_safe_integer_anywhere_is_accepted_and_reencodes_in_both_formats(
    place: str, n: int, fmt: str
) -> None:
    if place == "text.rm length":
        # Char ids a:1 .. a:n, and the next id of that client must stay in range too.
        n = min(n, MAX - 1)
    msg = decode_message(encode(built(place, n), fmt), format=fmt)
    for data, f in ((encode_message_json(msg), "json"), (encode_message_msgpack(msg), "msgpack")):
        again = decode_message(data, format=f)
        assert encode_message_json(again) == encode_message_json(msg)


@settings(max_examples=100, deadline=None)
@given(
    place=st.sampled_from(sorted(set(PLACES) - {"lt", "lamportTime", "clock", "serverSeq"})),
    x=st.sampled_from([math.nan, math.inf, -math.inf]),
)
def test_nan_and_infinity_are_refused_anywhere(place: str, x: float) -> None:
    if place in POSITIVE or place in ("op.seq", "op.position", "op.length", "op.from", "op.to"):
        x = math.inf  # integer-only places: any float is refused anyway
    with pytest.raises(CRDTValidationError):
        decode_message(encode(built(place, x), "msgpack"), format="msgpack")


def _deep(depth: int, kind: str, fmt: str) -> bytes:
    """A value nested ``depth`` containers deep, as raw bytes of ``fmt`` (built without
    recursion, so any depth can be sent)."""
    if fmt == "json":
        if kind == "list":
            return b"[" * depth + b"1" + b"]" * depth
        return b'{"k":' * depth + b"1" + b"}" * depth
    if kind == "list":
        return b"\x91" * depth + b"\x01"
    return b"\x81\xa1k" * depth + b"\x01"


def _with_value(raw_value: bytes, fmt: str, ot: str = "object.set") -> bytes:
    m = base()
    m["ops"] = [{"ot": ot, "key": "n", "path": "o", "value": "PLACEHOLDER"}]
    data = encode(m, fmt)
    marker = encode("PLACEHOLDER", fmt)
    assert data.count(marker) == 1
    return data.replace(marker, raw_value)


@settings(max_examples=60, deadline=None)
@given(
    depth=st.one_of(st.integers(33, 200), st.integers(900, 1100), st.integers(5000, 20000)),
    kind=st.sampled_from(["list", "dict"]),
    fmt=st.sampled_from(["json", "msgpack"]),
    ot=st.sampled_from(["object.set", "array.set", "array.push", "meta.undo", "node.move"]),
)
def test_values_nested_too_deeply_are_refused_without_a_recursion_error(
    depth: int, kind: str, fmt: str, ot: str
) -> None:
    data = _with_value(_deep(depth, kind, fmt), fmt, ot)
    with pytest.raises(CRDTValidationError):
        decode_message(data, format=fmt)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_values_within_the_depth_limit_are_accepted(fmt: str) -> None:
    msg = decode_message(_with_value(_deep(31, "dict", fmt), fmt), format=fmt)
    assert msg.ops[0].ot == "object.set"


@pytest.mark.parametrize(
    "char_id",
    [f"a:{MAX + 1}", "a:" + "9" * 5000, "a:" + "1" * 17],
)
def test_char_id_numbers_beyond_the_safe_range_are_refused(char_id: str) -> None:
    m = base()
    m["ops"] = [
        {"ot": "text.insert", "key": "t", "path": "b", "id": char_id, "value": [None, "x"]}
        | {"seq": 1, "ts": 1}
    ]
    with pytest.raises(CRDTValidationError):
        decode_message(encode(m, "json"), format="json")
    m["ops"] = [{"ot": "text.delete", "key": "t", "path": "b", "rm": [[char_id, 1]]}]
    with pytest.raises(CRDTValidationError):
        decode_message(encode(m, "json"), format="json")


def test_an_insert_whose_ids_would_leave_the_safe_range_is_refused() -> None:
    m = base()
    m["ops"] = [
        {"ot": "text.insert", "key": "t", "path": "b", "id": f"a:{MAX - 1}", "value": [None, "xy"]}
        | {"seq": 1, "ts": 1}
    ]
    with pytest.raises(CRDTValidationError):
        decode_message(encode(m, "json"), format="json")
    m["ops"][0]["value"] = [None, "x"]
    decode_message(encode(m, "json"), format="json")


@pytest.mark.parametrize("bad", [2**53, -(2**53), 2**64, math.inf, math.nan, {1: 2}, b"x"])
def test_check_value_refuses_what_a_format_cannot_carry(bad: Any) -> None:
    from durasync.crdt.messages import MAX_SAFE_INTEGER, check_value

    assert MAX_SAFE_INTEGER == MAX
    with pytest.raises(CRDTValidationError):
        check_value({"a": [bad]}, "state")


# -- always-present wire fields -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("names", ["compact", "long"])
def test_empty_key_and_path_and_empty_ops_and_clock_are_encoded(fmt: str, names: str) -> None:
    m: dict[str, Any] = base()
    m["ops"] = [
        {"ot": "node.insert", "key": "", "path": "", "value": {"key": "root", "tag": "Scene"}}
    ]
    if names == "long":
        m = {
            "id": "a:1",
            "sessionId": "a",
            "lamportTime": 1,
            "timestamp": 1,
            "clock": {},
            "ops": [{"otype": "node.insert", "value": {"key": "root", "tag": "Scene"}}],
        }
    msg = decode_message(encode(m, fmt), format=fmt)
    for data in (encode_message_json(msg), encode_message_msgpack(msg)):
        raw = msgspec.json.decode(data) if data[:1] == b"{" else msgspec.msgpack.decode(data)
        op = raw["ops"][0]
        assert (op["ot"], op["key"], op["path"]) == ("node.insert", "", "")
        assert "clock" in raw
    empty = Message(id="a:2", client="a", lt=2, ts=2)
    for data in (encode_message_json(empty), encode_message_msgpack(empty)):
        raw = msgspec.json.decode(data) if data[:1] == b"{" else msgspec.msgpack.decode(data)
        assert raw["ops"] == [] and raw["clock"] == {}
    assert msgspec.json.decode(msgspec.json.encode(Op()))["key"] == ""


# -- arithmetic keeps numbers encodable -----------------------------------------------------------


def _graph_with(*ops: Op) -> SceneGraph:
    g = SceneGraph()
    g.apply_ops(
        [Op(ot="node.insert", key="", path="children", value={"key": "n", "tag": "T"}), *ops],
        1,
        "a",
        1.0,
    )
    return g


@pytest.mark.parametrize(
    ("ops", "path"),
    [
        ([Op(ot="number.add", key="n", path="x", value=MAX)] * 3000, "x"),
        ([Op(ot="number.multiply", key="n", path="x", value=MAX)] * 2, "x"),
        ([Op(ot="vector3.add", key="n", path="v", value=[MAX, -MAX, 1])] * 3000, "v"),
        ([Op(ot="vector3.multiply", key="n", path="v", value=[MAX, MAX, MAX])] * 4, "v"),
        ([Op(ot="quaternion.multiply", key="n", path="q", value=[MAX, MAX, MAX, MAX])] * 4, "q"),
        ([Op(ot="vector3.applyQuaternion", key="n", path="v", value=[MAX, MAX, 1, 1])] * 3, "v"),
    ],
)
def test_arithmetic_results_stay_encodable_like_javascript_numbers(
    ops: list[Op], path: str
) -> None:
    g = _graph_with(Op(ot="number.set", key="n", path="x", value=1), *copy.deepcopy(ops))
    value = g.nodes["n"].props[path]
    for x in value if isinstance(value, list) else [value]:
        assert type(x) is float or abs(x) <= MAX
    msgspec.msgpack.encode(value)
    canonical_json(g)


def test_a_replica_snapshot_of_large_sums_encodes_in_msgpack() -> None:
    r = Replica("server")
    first = Message(
        id="a:1",
        client="a",
        lt=1,
        ts=1,
        ops=[Op(ot="node.insert", key="", path="children", value={"key": "n", "tag": "T"})],
    )
    adds = [
        Message(
            id=f"a:{i}",
            client="a",
            lt=i,
            ts=i,
            ops=[Op(ot="number.add", key="n", path="x", value=MAX)] * 100,
        )
        for i in range(2, 30)
    ]
    r.receive_many([first, *adds], list(range(1, 30)))
    assert type(r.graph.nodes["n"].props["x"]) is float
    msgspec.msgpack.encode(r.snapshot())
