"""Messages: both spellings, JSON/msgpack round trips, validation errors, clocks."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from durasync.crdt import (
    CRDTValidationError,
    Limits,
    Message,
    Op,
    decode_message,
    decode_message_obj,
    encode_message_json,
    encode_message_msgpack,
    lamport_next,
    merge_clocks,
    tick_clock,
)
from durasync.crdt import messages as messages_mod
from durasync.crdt.messages import DEFAULT_LIMITS, clock_compare, validate_message, validate_op

LONG = {
    "id": "s:1",
    "sessionId": "s",
    "clock": {"s": 1},
    "lamportTime": 1,
    "timestamp": 1000,
    "ops": [{"otype": "number.set", "key": "k", "path": "p", "value": 1.5}],
}
COMPACT = {
    "id": "s:1",
    "client": "s",
    "clock": {"s": 1},
    "lt": 1,
    "ts": 1000,
    "ops": [{"ot": "number.set", "key": "k", "path": "p", "value": 1.5}],
}


def test_long_and_compact_names_decode_to_the_same_message() -> None:
    a = decode_message(json.dumps(LONG))
    b = decode_message(json.dumps(COMPACT).encode())
    assert a == b
    assert (a.client, a.lt, a.ts, a.ops[0].ot) == ("s", 1, 1000, "number.set")


def test_encoding_uses_compact_names_and_round_trips() -> None:
    m = decode_message(json.dumps(LONG))
    raw = json.loads(encode_message_json(m))
    assert raw == COMPACT
    assert decode_message(encode_message_json(m)) == m
    assert decode_message(encode_message_msgpack(m), format="msgpack") == m


def test_wire_wrapper_accepted() -> None:
    m = decode_message(json.dumps({"mtype": "broadcast", "msg": COMPACT}))
    assert m.id == "s:1"
    with pytest.raises(CRDTValidationError) as exc:
        decode_message(json.dumps({"mtype": "ack", "msg": COMPACT}))
    assert exc.value.field == "mtype"
    assert decode_message_obj({"mtype": "crdt", "msg": dict(LONG)}).client == "s"


def test_extras_survive_round_trip() -> None:
    o = {"ot": "array.move", "key": "k", "path": "a", "from": 2, "to": 0}
    m = decode_message(json.dumps({**COMPACT, "ops": [o]}))
    assert m.ops[0].from_ == 2
    assert json.loads(encode_message_json(m))["ops"][0] == o


def test_server_seq_is_carried() -> None:
    m = decode_message(json.dumps({**COMPACT, "serverSeq": 7}))
    assert m.serverSeq == 7
    assert json.loads(encode_message_json(m))["serverSeq"] == 7


def _bad(field: str, **change: Any) -> None:
    m = dict(COMPACT)
    op = change.pop("op", None)
    if op is not None:
        m["ops"] = [op]
    m.update(change)
    with pytest.raises(CRDTValidationError) as exc:
        decode_message(json.dumps(m))
    assert exc.value.field == field, exc.value


def _op(ot: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    d = {"ot": ot, "key": "k", "path": "p", **extra}
    if value is not None:
        d["value"] = value
    return d


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("id", {"id": ""}),
        ("client", {"client": ""}),
        ("lt", {"lt": "1"}),
        ("ops[0].ot", {"op": _op("number.frobnicate", 1)}),
        ("ops[0].ot", {"op": {"key": "k", "path": "p", "value": 1}}),
        ("ops[0].value", {"op": _op("number.add", "1")}),
        ("ops[0].value", {"op": _op("number.add", True)}),
        ("ops[0].value", {"op": _op("vector3.set", [1, 2])}),
        ("ops[0].value", {"op": _op("quaternion.multiply", [0, 0, 1])}),
        ("ops[0].value", {"op": _op("vector3.applyQuaternion", [0, 0, 1])}),
        ("ops[0].value[1]", {"op": _op("vector3.add", [1, "x", 3])}),
        ("ops[0].value", {"op": _op("color.set", "red")}),
        ("ops[0].value", {"op": _op("boolean.or", 1)}),
        ("ops[0].value", {"op": _op("array.set", {"a": 1})}),
        ("ops[0].value", {"op": _op("object.merge", [1])}),
        ("ops[0].value.key", {"op": _op("node.insert", {"tag": "x"})}),
        ("ops[0].value.children", {"op": _op("node.insert", {"key": "x", "children": [1]})}),
        ("ops[0].value", {"op": _op("node.move", {"nodeKey": "x"})}),
        ("ops[0].order", {"op": _op("vector3.applyEuler", [0, 0, 0], order="ABC")}),
        ("ops[0].id", {"op": _op("text.insert", [None, "x"], seq=1, ts=1)}),
        ("ops[0].value", {"op": _op("text.insert", "x", id="a:0", seq=1, ts=1)}),
        ("ops[0].rm[0]", {"op": _op("text.delete", rm=[["a:0", 0]])}),
        ("ops[0].rm", {"op": _op("text.delete")}),
        ("ops[0].targetMsgId", {"op": _op("meta.undo")}),
        ("ops[0].from", {"op": _op("array.move")}),
    ],
)
def test_validation_names_the_field(field: str, change: dict[str, Any]) -> None:
    _bad(field, **change)


def test_nan_and_infinity_rejected() -> None:
    for v in (math.nan, math.inf, -math.inf):
        m = Message(
            id="a:1", client="a", lt=1, ts=1, ops=[Op(ot="number.set", key="k", path="p", value=v)]
        )
        with pytest.raises(CRDTValidationError, match="NaN or infinity") as exc:
            decode_message(encode_message_msgpack(m), format="msgpack")
        assert exc.value.field == "ops[0].value"
    m = Message(
        id="a:1",
        client="a",
        lt=1,
        ts=1,
        ops=[Op(ot="object.set", key="k", path="p", value={"x": [math.nan]})],
    )
    with pytest.raises(CRDTValidationError):
        decode_message(encode_message_msgpack(m), format="msgpack")


def test_size_limits() -> None:
    limits = Limits(max_string=10, max_value_items=20, max_depth=3, max_ops=2)
    with pytest.raises(CRDTValidationError, match="longer than 10"):
        decode_message(json.dumps({**COMPACT, "ops": [_op("string.set", "x" * 11)]}), limits=limits)
    with pytest.raises(CRDTValidationError, match="larger than 20"):
        decode_message(
            json.dumps({**COMPACT, "ops": [_op("array.set", list(range(30)))]}), limits=limits
        )
    with pytest.raises(CRDTValidationError, match="deeper than 3"):
        decode_message(
            json.dumps({**COMPACT, "ops": [_op("object.set", {"a": {"b": {"c": {"d": 1}}}})]}),
            limits=limits,
        )
    with pytest.raises(CRDTValidationError) as exc:
        decode_message(json.dumps({**COMPACT, "ops": [_op("number.add", 1)] * 3}), limits=limits)
    assert exc.value.field == "ops"


def test_garbage_bytes_are_a_validation_error() -> None:
    for raw in (b"", b"[", b"null", b'{"ops": 3}', b"\xff\xfe"):
        with pytest.raises(CRDTValidationError):
            decode_message(raw)
    with pytest.raises(CRDTValidationError):
        decode_message(b"\xc1", format="msgpack")


def test_clock_helpers() -> None:
    assert lamport_next(3) == 4
    assert lamport_next(3, 7, 2) == 8
    assert merge_clocks({"a": 1, "b": 5}, {"a": 3, "c": 1}) == {"a": 3, "b": 5, "c": 1}
    assert tick_clock({"a": 1}, "b") == {"a": 1, "b": 1}
    assert clock_compare({"a": 1}, {"a": 2}) == -1
    assert clock_compare({"a": 2}, {"a": 2}) == 0
    assert clock_compare({"a": 2, "b": 1}, {"a": 2}) == 1
    assert clock_compare({"a": 1}, {"b": 1}) is None


def test_decode_obj_rejects_wrong_types() -> None:
    with pytest.raises(CRDTValidationError) as exc:
        decode_message_obj({**COMPACT, "ops": [{"ot": "number.set", "seq": "x"}]})
    assert exc.value.field.startswith("ops[0]")
    assert isinstance(msgspec.json.encode(decode_message_obj(COMPACT)), bytes)


_VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=8),
    st.sampled_from(["#a0b1c2", "a0b1c2", "#a0b1c", "#gggggg"]),
    st.lists(
        st.one_of(st.integers(-5, 5), st.floats(allow_nan=True), st.booleans(), st.text()),
        max_size=5,
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    ot=st.sampled_from(sorted(messages_mod._FAST_CHECKS)),
    value=_VALUES,
    key_len=st.sampled_from([1, 1024, 1025]),
    separator=st.sampled_from([UNSET, "-", 5]),
)
def test_fast_op_checks_agree_with_the_full_check(
    ot: str, value: Any, key_len: int, separator: Any
) -> None:
    """The fast acceptance path of validate_op never accepts what the full check refuses."""
    op = Op(ot=ot, key="k" * key_len, path="p", value=value, separator=separator)
    full = Op(ot=ot, key="k" * key_len, path="p", value=value, separator=separator)
    try:
        messages_mod._validate_op_full(full, "op", DEFAULT_LIMITS, False)
        full_ok = True
    except CRDTValidationError:
        full_ok = False
    try:
        validate_op(op)
        fast_ok = True
    except CRDTValidationError:
        fast_ok = False
    assert fast_ok == full_ok
    msg = Message(id="m", client="c", lt=1, ts=0, ops=[op])
    try:
        validate_message(msg)
        msg_ok = True
    except CRDTValidationError as exc:
        assert exc.field.startswith("ops[0].")
        msg_ok = False
    assert msg_ok == full_ok


def _naive_json_ok(v: Any, limits: Limits) -> bool:
    """Reference rule for JSON values: finite numbers, integers within +-(2**53 - 1), str keys,
    depth and size bounds."""
    count = 0

    def walk(x: Any, depth: int) -> bool:
        nonlocal count
        count += 1
        if isinstance(x, bool) or x is None:
            return True
        if type(x) is int:
            return abs(x) <= 2**53 - 1
        if type(x) is float:
            return math.isfinite(x)
        if type(x) is str:
            return len(x) <= limits.max_string
        if type(x) is list:
            return depth < limits.max_depth and all(walk(y, depth + 1) for y in x)
        if type(x) is dict:
            return (
                depth < limits.max_depth
                and all(type(k) is str for k in x)
                and all(walk(y, depth + 1) for y in x.values())
            )
        return False

    return walk(v, 0) and count <= limits.max_value_items


_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=6),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 3)), inner, max_size=4),
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(value=_JSON, items=st.integers(1, 40), depth=st.integers(1, 4), max_string=st.integers(0, 6))
@example(value=[math.nan], items=9, depth=3, max_string=5)
@example(value={"a": [1, {"b": -math.inf}]}, items=9, depth=3, max_string=5)
@example(value={"a": [1, {1: 2}]}, items=9, depth=3, max_string=5)
@example(value=[[[["deep"]]]], items=9, depth=3, max_string=5)
@example(value=["toolong"], items=9, depth=3, max_string=5)
@example(value=[1, 2, 3, [4, 5]], items=5, depth=3, max_string=5)
def test_json_value_check_matches_the_naive_rule(
    value: Any, items: int, depth: int, max_string: int
) -> None:
    limits = Limits(max_value_items=items, max_depth=depth, max_string=max_string)
    try:
        messages_mod._check_json(value, "value", limits)
        ok = True
    except CRDTValidationError as exc:
        assert exc.field == "value"
        ok = False
    assert ok == _naive_json_ok(value, limits)
