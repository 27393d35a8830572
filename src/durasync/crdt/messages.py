"""CRDT messages and ops: msgspec wire types, decoding of both spellings, validation, clocks.

Wire shape (vuer-rtc-semantics.md §2): ``CRDTMessage = {id, client, clock, lt, ts, ops[]}`` with
ops ``{ot, key, path, value?, ...extra flat fields}``. Since TS v0.8.0 the *compact* names
(``client``, ``lt``, ``ts``, ``ot``) are the wire form; receivers also accept the *long* names
(``sessionId``, ``lamportTime``, ``timestamp``, ``otype``). :func:`decode_message` accepts both
and returns a :class:`Message` whose compact fields are filled and whose long fields are unset;
:func:`encode_message_json` / :func:`encode_message_msgpack` always write the compact names.

Validation (:func:`validate_message`) runs before anything is applied and raises a single
:class:`~durasync.crdt.errors.CRDTValidationError` naming the field, for: an unknown otype, a
value of the wrong shape, NaN or infinity, a number out of range, a vector of the wrong length,
an oversized or too deeply nested value (:class:`Limits`), a malformed text op. A message that
passed validation can always be applied without raising.

Numeric bounds (docs/crdt.md "Numbers"): every integer a message carries, anywhere (``lt``,
``ts``, ``clock`` counters, ``serverSeq``, the ops' ``seq``/``ts``/``position``/``length``/
``from``/``to``, ``rm`` lengths, the number in a char id, and every integer nested in an op
value) lies within +-:data:`MAX_SAFE_INTEGER` (JavaScript's ``Number.MAX_SAFE_INTEGER``), and
every float is finite. Such a message encodes exactly in JSON and msgpack and reads back exactly
in JavaScript, so nothing accepted can fail to encode later. The typed fields are checked by the
decoders (msgspec constraints, an error naming the field); :func:`validate_message` checks the
message-level fields again (for messages built in Python) and every number inside op values.

Wire fields vuer-rtc requires are always written: an op's ``ot``, ``key`` and ``path`` (also
when empty, e.g. ``key: ""`` for a ``node.insert`` under the root) and a message's ``clock``
and ``ops`` (also when empty).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from typing import Annotated, Any, Final

import msgspec
from msgspec import UNSET, Meta, UnsetType

from durasync.crdt.errors import CRDTValidationError

__all__ = [
    "ADDITIVE_OTYPES",
    "DEFAULT_LIMITS",
    "LWW_OTYPES",
    "MAX_SAFE_INTEGER",
    "META_OTYPES",
    "OTYPES",
    "TEXT_OTYPES",
    "Limits",
    "Message",
    "Op",
    "check_value",
    "decode_message",
    "decode_message_obj",
    "encode_message_json",
    "encode_message_msgpack",
    "lamport_next",
    "merge_clocks",
    "message_from_dict",
    "message_to_dict",
    "tick_clock",
    "validate_message",
    "validate_op",
]

#: The reference catalogue (vuer-rtc-semantics.md §3) plus ``array.move`` from the TS docs.
OTYPES: Final[frozenset[str]] = frozenset(
    {
        "node.insert",
        "node.remove",
        "node.move",
        "number.set",
        "number.add",
        "number.multiply",
        "number.min",
        "number.max",
        "vector3.set",
        "vector3.add",
        "vector3.multiply",
        "vector3.applyQuaternion",
        "vector3.applyEuler",
        "euler.set",
        "euler.add",
        "quaternion.set",
        "quaternion.multiply",
        "color.set",
        "color.blend",
        "string.set",
        "string.concat",
        "boolean.set",
        "boolean.or",
        "boolean.and",
        "array.set",
        "array.push",
        "array.union",
        "array.remove",
        "array.move",
        "object.set",
        "object.merge",
        "text.init",
        "text.insert",
        "text.delete",
        "text.replace",
        "meta.undo",
        "meta.redo",
    }
)
#: Otypes resolved by last-writer-wins stamps.
LWW_OTYPES: Final[frozenset[str]] = frozenset(
    o for o in OTYPES if o.endswith(".set") and not o.startswith("node.")
)
#: Otypes whose values merge inside one edit buffer slot (reference §5 ``edit``).
ADDITIVE_OTYPES: Final[frozenset[str]] = frozenset(
    {"number.add", "number.multiply", "vector3.add", "quaternion.multiply"}
)
TEXT_OTYPES: Final[frozenset[str]] = frozenset(
    {"text.init", "text.insert", "text.delete", "text.replace"}
)
META_OTYPES: Final[frozenset[str]] = frozenset({"meta.undo", "meta.redo"})

#: Largest magnitude of any integer in a message: JavaScript's ``Number.MAX_SAFE_INTEGER``.
#: Such integers are exact in a JS number, in msgpack (int64) and in JSON.
MAX_SAFE_INTEGER: Final = (1 << 53) - 1
_MAX_FLOAT: Final = sys.float_info.max
#: Decimal digits of the number in a char id ``agent:n`` (``n <= MAX_SAFE_INTEGER``).
_MAX_ID_DIGITS: Final = len(str(MAX_SAFE_INTEGER))

# Constrained wire types: the decoders refuse anything outside them, naming the field.
SafeInt = Annotated[int, Meta(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
#: Counters may be negative on the wire only as far as validation reports it by name.
Counter = Annotated[int, Meta(le=MAX_SAFE_INTEGER)]
FiniteFloat = Annotated[float, Meta(ge=-_MAX_FLOAT, le=_MAX_FLOAT)]


def _empty_str() -> str:
    return ""


def _empty_list() -> list[Any]:
    return []


def _empty_dict() -> dict[str, Any]:
    return {}


EULER_ORDERS: Final[frozenset[str]] = frozenset({"XYZ", "YXZ", "ZXY", "ZYX", "YZX", "XZY"})
_COLOR_RE: Final = re.compile(r"#?[0-9a-fA-F]{6}\Z")


class Op(msgspec.Struct, omit_defaults=True, gc=False):
    """One operation. ``ot`` is the otype; the other fields are the reference's flat extras.

    ``otype`` exists only so that the long spelling decodes; :func:`decode_message` moves it
    into ``ot``. Unset extras are omitted when encoding; ``ot``, ``key`` and ``path`` are always
    written, also when empty (their defaults are factories, which ``omit_defaults`` keeps: the
    vuer-rtc wire type requires them). Values are plain JSON values and are treated as
    immutable once the op is applied (the graph may share them). Instances are not tracked by
    the cyclic GC (``gc=False``): an op never references itself.
    """

    ot: str = msgspec.field(default_factory=_empty_str)
    key: str = msgspec.field(default_factory=_empty_str)
    path: str = msgspec.field(default_factory=_empty_str)
    value: Any = UNSET
    otype: str | UnsetType = UNSET
    # extras (vuer-rtc-semantics.md §2 "Op shape")
    separator: str | UnsetType = UNSET
    order: str | UnsetType = UNSET
    intrinsic: bool | UnsetType = UNSET
    targetMsgId: str | UnsetType = UNSET
    id: str | UnsetType = UNSET
    seq: SafeInt | UnsetType = UNSET
    ts: SafeInt | FiniteFloat | UnsetType = UNSET
    rm: list[tuple[str, SafeInt]] | UnsetType = UNSET
    position: SafeInt | UnsetType = UNSET
    length: SafeInt | UnsetType = UNSET
    from_: SafeInt | UnsetType = msgspec.field(default=UNSET, name="from")
    to: SafeInt | UnsetType = UNSET


class Message(msgspec.Struct, omit_defaults=True, gc=False):
    """A CRDT message (a batch of ops from one session at one Lamport time).

    After :func:`decode_message` (or :func:`validate_message`) ``client``, ``lt`` and ``ts`` are
    set and the long-name fields are unset. ``serverSeq`` is the room's total-order position
    when a server sequenced the message (it rides on ``broadcast`` frames and ``ack``).
    ``clock`` and ``ops`` are always written, also when empty.
    """

    id: str = ""
    client: str = ""
    lt: Counter = -1
    ts: SafeInt | FiniteFloat | None = None
    ops: list[Op] = msgspec.field(default_factory=_empty_list)
    clock: dict[str, Counter] = msgspec.field(default_factory=_empty_dict)
    sessionId: str | UnsetType = UNSET
    lamportTime: Counter | UnsetType = UNSET
    timestamp: SafeInt | FiniteFloat | UnsetType = UNSET
    serverSeq: SafeInt | None = None


class _Wrapper(msgspec.Struct):
    mtype: str
    msg: Message


class Limits(msgspec.Struct, frozen=True):
    """Size limits enforced by validation (a peer cannot make the graph arbitrarily big).

    ``max_value_items`` bounds the number of JSON nodes (scalars + containers) in one value;
    ``max_string`` the length of any one string; ``max_depth`` the nesting depth.
    """

    max_ops: int = 10_000
    max_string: int = 1 << 20
    max_value_items: int = 100_000
    max_depth: int = 32
    max_key: int = 1024


DEFAULT_LIMITS: Final = Limits()

_json_decoder: Final = msgspec.json.Decoder(Message)
_wrapper_json_decoder: Final = msgspec.json.Decoder(_Wrapper)
_json_encoder: Final = msgspec.json.Encoder()
_msgpack_encoder: Final = msgspec.msgpack.Encoder()
_msgpack_decoder: Final = msgspec.msgpack.Decoder(Message)

_AT_RE: Final = re.compile(r"at `\$\.?(.*)`")


def _msgspec_error(exc: msgspec.MsgspecError) -> CRDTValidationError:
    text = str(exc)
    m = _AT_RE.search(text)
    field = m.group(1) if m else "message"
    if m:
        text = text[: m.start()].rstrip(" -")
    return CRDTValidationError(field or "message", text)


def decode_message(
    data: bytes | str, *, format: str = "json", limits: Limits = DEFAULT_LIMITS
) -> Message:
    """Decode and validate one message from JSON (``format="json"``) or msgpack.

    Accepts long or compact names, and the wire wrapper ``{"mtype": "crdt"|"broadcast",
    "msg": {...}}`` for JSON. Raises :class:`CRDTValidationError` on any problem.
    """
    try:
        if format == "msgpack":
            msg = _msgpack_decoder.decode(data.encode() if isinstance(data, str) else data)
        else:
            raw = data.encode() if isinstance(data, str) else data
            if b'"mtype"' in raw:
                wrapper = _wrapper_json_decoder.decode(raw)
                if wrapper.mtype not in ("crdt", "broadcast"):
                    raise CRDTValidationError(
                        "mtype", f"not a CRDT message frame: {wrapper.mtype!r}"
                    )
                msg = wrapper.msg
            else:
                msg = _json_decoder.decode(raw)
    except msgspec.MsgspecError as exc:
        raise _msgspec_error(exc) from None
    except RecursionError:
        raise CRDTValidationError("message", "nested too deeply") from None
    validate_message(msg, limits=limits)
    return msg


def decode_message_obj(obj: Any, *, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Convert an already-parsed JSON/msgpack object (dict) into a validated :class:`Message`."""
    if isinstance(obj, Mapping) and "mtype" in obj and "msg" in obj:
        if obj["mtype"] not in ("crdt", "broadcast"):
            raise CRDTValidationError("mtype", f"not a CRDT message frame: {obj['mtype']!r}")
        obj = obj["msg"]
    try:
        msg = msgspec.convert(obj, Message)
    except msgspec.MsgspecError as exc:
        raise _msgspec_error(exc) from None
    except RecursionError:
        raise CRDTValidationError("message", "nested too deeply") from None
    validate_message(msg, limits=limits)
    return msg


message_from_dict = decode_message_obj


def message_to_dict(msg: Message) -> dict[str, Any]:
    """The compact-name plain-dict form of ``msg`` (as JSON would decode it)."""
    out: dict[str, Any] = msgspec.to_builtins(msg)
    return out


def encode_message_json(msg: Message) -> bytes:
    """JSON bytes with the compact names (unset fields omitted)."""
    return _json_encoder.encode(msg)


def encode_message_msgpack(msg: Message) -> bytes:
    """msgpack bytes with the compact names (unset fields omitted)."""
    return _msgpack_encoder.encode(msg)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _is_num(v: object) -> bool:
    t = type(v)
    if t is int:
        return -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER  # type: ignore[operator]
    return t is float and math.isfinite(v)  # type: ignore[arg-type]


def _out_of_range(field: str) -> CRDTValidationError:
    return CRDTValidationError(
        field, f"integer out of range (allowed: -{MAX_SAFE_INTEGER}..{MAX_SAFE_INTEGER})"
    )


def _check_num(v: object, field: str) -> None:
    if not _is_num(v):
        if type(v) is float:
            raise CRDTValidationError(field, "NaN or infinity is not allowed")
        if type(v) is int:
            raise _out_of_range(field)
        raise CRDTValidationError(field, f"expected a number, got {type(v).__name__}")


def _check_count(v: object, field: str) -> int:
    """A non-negative integer within the safe range."""
    if type(v) is not int or v < 0:
        raise CRDTValidationError(field, "expected a non-negative integer")
    if v > MAX_SAFE_INTEGER:
        raise _out_of_range(field)
    return v


def _check_vec(v: object, n: int, field: str) -> None:
    if type(v) is list and len(v) == n:
        for x in v:
            if not _is_num(x):
                break
        else:
            return
    if type(v) is not list:
        raise CRDTValidationError(field, f"expected a list of {n} numbers")
    if len(v) != n:
        raise CRDTValidationError(field, f"expected {n} components, got {len(v)}")
    for i, x in enumerate(v):
        _check_num(x, f"{field}[{i}]")


def _check_str(v: object, field: str, limits: Limits) -> None:
    if type(v) is not str:
        raise CRDTValidationError(field, f"expected a string, got {type(v).__name__}")
    if len(v) > limits.max_string:
        raise CRDTValidationError(field, f"string longer than {limits.max_string}")


def check_value(v: object, field: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """Check that ``v`` is a plain JSON value every supported format carries exactly.

    Strings, booleans, None, finite floats, integers within +-:data:`MAX_SAFE_INTEGER`, and
    lists and string-keyed dicts of these, at most ``limits.max_depth`` containers deep, with
    at most ``limits.max_value_items`` items and strings of at most ``limits.max_string``.

    Raises:
        CRDTValidationError: naming ``field``.
    """
    _check_json(v, field, limits)


def _check_json(v: object, field: str, limits: Limits) -> None:
    """A JSON value within the size limits, with finite numbers in range only.

    Every scalar and container counts one item against ``max_value_items``. Scalars inside a
    container are checked in place (no stack entry), which keeps the common flat values
    (vectors, small objects) cheap.
    """
    budget = limits.max_value_items
    max_string = limits.max_string
    max_depth = limits.max_depth
    stack: list[tuple[object, int]] = [(v, 0)]
    while stack:
        x, depth = stack.pop()
        budget -= 1
        t = type(x)
        if t is list or t is dict:
            if depth >= max_depth:
                raise CRDTValidationError(field, f"nested deeper than {max_depth}")
            if t is dict:
                for k in x:  # type: ignore[attr-defined]
                    if type(k) is not str:
                        raise CRDTValidationError(field, "object keys must be strings")
                items = x.values()  # type: ignore[attr-defined]
            else:
                items = x
            for y in items:
                ty = type(y)
                if ty is str:
                    budget -= 1
                    if len(y) > max_string:
                        raise CRDTValidationError(field, f"string longer than {max_string}")
                elif ty is float:
                    budget -= 1
                    if y - y != 0:  # inf or NaN
                        raise CRDTValidationError(field, "NaN or infinity is not allowed")
                elif ty is int:
                    budget -= 1
                    if not -MAX_SAFE_INTEGER <= y <= MAX_SAFE_INTEGER:
                        raise _out_of_range(field)
                elif ty is bool or y is None:
                    budget -= 1
                else:
                    stack.append((y, depth + 1))
        elif t is str:
            if len(x) > max_string:  # type: ignore[arg-type]
                raise CRDTValidationError(field, f"string longer than {max_string}")
        elif t is float:
            if not math.isfinite(x):  # type: ignore[arg-type]
                raise CRDTValidationError(field, "NaN or infinity is not allowed")
        elif t is int:
            if not -MAX_SAFE_INTEGER <= x <= MAX_SAFE_INTEGER:  # type: ignore[operator]
                raise _out_of_range(field)
        elif not (t is bool or x is None):
            raise CRDTValidationError(field, f"not a JSON value: {t.__name__}")
        if budget < 0:
            raise CRDTValidationError(field, f"value larger than {limits.max_value_items} items")


def _check_rm(rm: object, field: str) -> None:
    if type(rm) is not list:
        raise CRDTValidationError(field, "expected a list of [charId, length]")
    for i, r in enumerate(rm):
        if (
            type(r) not in (list, tuple)
            or len(r) != 2
            or type(r[0]) is not str
            or type(r[1]) is not int
            or r[1] <= 0
        ):
            raise CRDTValidationError(f"{field}[{i}]", "expected [charId, positive length]")
        n = _check_char_id(r[0], f"{field}[{i}][0]")
        if n + r[1] > MAX_SAFE_INTEGER:
            raise CRDTValidationError(f"{field}[{i}]", "char ids beyond the safe integer range")


def _check_char_id(v: object, field: str) -> int:
    """The number ``n`` of a char id ``agent:n`` (at most :data:`MAX_SAFE_INTEGER`)."""
    if type(v) is not str:
        raise CRDTValidationError(field, "expected a char id 'agent:n'")
    _, sep, n = v.rpartition(":")
    if not sep or not n.isdigit() or not n.isascii():
        raise CRDTValidationError(field, "expected a char id 'agent:n'")
    if len(n) > _MAX_ID_DIGITS or int(n) > MAX_SAFE_INTEGER:
        raise CRDTValidationError(field, "char id number out of the safe integer range")
    return int(n)


def _check_text_insert(op: Op, p: str, limits: Limits, local: bool) -> None:
    """Wire form ``{id, value: [anchor, content], seq, ts}``; local form ``{position, value}``."""
    if local and op.position is not UNSET and op.id is UNSET:
        _check_count(op.position, f"{p}.position")
        v = op.value
        content = v[1] if type(v) is list and len(v) == 2 and v[0] is None else v
        _check_str(content, f"{p}.value", limits)
        return
    n = _check_char_id(op.id, f"{p}.id")
    v = op.value
    if type(v) is not list or len(v) != 2:
        raise CRDTValidationError(f"{p}.value", "expected [anchor, content]")
    if v[0] is not None:
        _check_char_id(v[0], f"{p}.value[0]")
    _check_str(v[1], f"{p}.value[1]", limits)
    if not v[1]:
        raise CRDTValidationError(f"{p}.value[1]", "empty insert")
    if n + len(v[1]) > MAX_SAFE_INTEGER:
        raise CRDTValidationError(f"{p}.id", "char ids beyond the safe integer range")
    _check_count(op.seq, f"{p}.seq")
    if op.ts is UNSET:
        raise CRDTValidationError(f"{p}.ts", "missing")
    _check_num(op.ts, f"{p}.ts")


def _check_text_delete(op: Op, p: str, local: bool) -> None:
    if local and op.rm is UNSET and op.position is not UNSET:
        for name in ("position", "length"):
            _check_count(getattr(op, name), f"{p}.{name}")
        return
    if op.rm is UNSET:
        raise CRDTValidationError(f"{p}.rm", "missing")
    _check_rm(op.rm, f"{p}.rm")


# -- fast acceptance of the common ops ------------------------------------------------------------
# Each returns True when the value is certainly valid for its otype; False sends the op through
# the full check of validate_op, which names the bad field. No field-name strings are built on
# this path (they cost more than the checks themselves).


# x - x is 0 for a finite float and NaN for inf/NaN; the literal bounds are +-MAX_SAFE_INTEGER
# (a constant, not a global lookup, on this path).


def _ok_num(op: Op, limits: Limits) -> bool:
    v = op.value
    t = type(v)
    if t is float:
        return v - v == 0  # type: ignore[no-any-return]
    return t is int and -9007199254740991 <= v <= 9007199254740991


def _ok_vec3(op: Op, limits: Limits) -> bool:
    v = op.value
    if type(v) is not list or len(v) != 3:
        return False
    a, b, c = v
    ta, tb, tc = type(a), type(b), type(c)
    return (
        (a - a == 0 if ta is float else ta is int and -9007199254740991 <= a <= 9007199254740991)
        and (
            b - b == 0 if tb is float else tb is int and -9007199254740991 <= b <= 9007199254740991
        )
        and (
            c - c == 0 if tc is float else tc is int and -9007199254740991 <= c <= 9007199254740991
        )
    )


def _ok_vec4(op: Op, limits: Limits) -> bool:
    v = op.value
    if type(v) is not list or len(v) != 4:
        return False
    for x in v:
        t = type(x)
        if t is float:
            if x - x != 0:
                return False
        elif t is not int or not -9007199254740991 <= x <= 9007199254740991:
            return False
    return True


def _ok_str(op: Op, limits: Limits) -> bool:
    v = op.value
    # string.concat may carry a separator (full check); string.set with one goes there too
    return type(v) is str and len(v) <= limits.max_string and op.separator is UNSET


def _ok_color(op: Op, limits: Limits) -> bool:
    v = op.value
    return type(v) is str and _COLOR_RE.match(v) is not None


def _ok_bool(op: Op, limits: Limits) -> bool:
    v = op.value
    return type(v) is bool


_FAST_CHECKS: Final[dict[str, Any]] = {
    **dict.fromkeys(
        ("number.set", "number.add", "number.multiply", "number.min", "number.max"), _ok_num
    ),
    **dict.fromkeys(
        ("vector3.set", "vector3.add", "vector3.multiply", "euler.set", "euler.add"), _ok_vec3
    ),
    **dict.fromkeys(("quaternion.set", "quaternion.multiply", "vector3.applyQuaternion"), _ok_vec4),
    "string.set": _ok_str,
    **dict.fromkeys(("color.set", "color.blend"), _ok_color),
    **dict.fromkeys(("boolean.set", "boolean.or", "boolean.and"), _ok_bool),
}


def validate_op(
    op: Op, p: str = "op", *, limits: Limits = DEFAULT_LIMITS, local: bool = False
) -> None:
    """Check one op (normalising ``otype`` into ``ot``). ``p`` prefixes field names in errors.

    ``local=True`` also accepts the position-based text forms that only local edits may use
    (reference §4: "Only the CRDT form is valid on the wire").
    """
    if op.otype is UNSET:
        fast = _FAST_CHECKS.get(op.ot)
        if (
            fast is not None
            and len(op.key) <= limits.max_key
            and len(op.path) <= limits.max_key
            and fast(op, limits)
        ):
            return
    _validate_op_full(op, p, limits, local)


def _validate_op_full(op: Op, p: str, limits: Limits, local: bool) -> None:
    if op.otype is not UNSET:
        if not op.ot:
            op.ot = op.otype
        op.otype = UNSET
    ot = op.ot
    if not ot:
        raise CRDTValidationError(f"{p}.ot", "missing otype")
    if ot not in OTYPES:
        raise CRDTValidationError(f"{p}.ot", f"unknown otype {ot!r}")
    if len(op.key) > limits.max_key:
        raise CRDTValidationError(f"{p}.key", f"longer than {limits.max_key}")
    if len(op.path) > limits.max_key:
        raise CRDTValidationError(f"{p}.path", f"longer than {limits.max_key}")
    family, _, verb = ot.partition(".")
    v = op.value
    if family == "number":
        if _is_num(v):
            return
    elif family == "vector3" and verb in ("set", "add", "multiply"):
        _check_vec(v, 3, p + ".value")
        return
    fv = f"{p}.value"
    if family == "number":
        _check_num(v, fv)
    elif family == "vector3":
        if verb == "applyQuaternion":
            _check_vec(v, 4, fv)
        else:
            _check_vec(v, 3, fv)
        if verb == "applyEuler" and op.order is not UNSET and op.order not in EULER_ORDERS:
            raise CRDTValidationError(f"{p}.order", f"unknown Euler order {op.order!r}")
    elif family == "euler":
        _check_vec(v, 3, fv)
    elif family == "quaternion":
        _check_vec(v, 4, fv)
    elif family == "color":
        if type(v) is not str or not _COLOR_RE.match(v):
            raise CRDTValidationError(fv, "expected a color '#rrggbb'")
    elif family == "string":
        _check_str(v, fv, limits)
        if op.separator is not UNSET:
            _check_str(op.separator, f"{p}.separator", limits)
    elif family == "boolean":
        if type(v) is not bool:
            raise CRDTValidationError(fv, "expected a boolean")
    elif family == "array":
        if verb in ("set", "union"):
            if type(v) is not list:
                raise CRDTValidationError(fv, "expected a list")
            _check_json(v, fv, limits)
        elif verb == "move":
            for name in ("from_", "to"):
                x = getattr(op, name)
                if type(x) is not int:
                    raise CRDTValidationError(f"{p}.{name.rstrip('_')}", "expected an integer")
                _check_num(x, f"{p}.{name.rstrip('_')}")
            if v is not UNSET:
                _check_json(v, fv, limits)
        else:
            if v is UNSET:
                raise CRDTValidationError(fv, "missing")
            _check_json(v, fv, limits)
    elif family == "object":
        if type(v) is not dict:
            raise CRDTValidationError(fv, "expected an object")
        _check_json(v, fv, limits)
    elif family == "node":
        if verb == "insert":
            if type(v) is not dict:
                raise CRDTValidationError(fv, "expected a node object {key, tag, name, ...}")
            nk = v.get("key")
            if type(nk) is not str or not nk:
                raise CRDTValidationError(f"{fv}.key", "expected a non-empty string")
            for name in ("tag", "name"):
                if name in v and type(v[name]) is not str:
                    raise CRDTValidationError(f"{fv}.{name}", "expected a string")
            ch = v.get("children")
            if ch is not None and (type(ch) is not list or any(type(c) is not str for c in ch)):
                raise CRDTValidationError(f"{fv}.children", "expected a list of node keys")
            _check_json(v, fv, limits)
        elif verb == "remove":
            if type(v) is not str:
                raise CRDTValidationError(fv, "expected the child node key")
        elif (
            type(v) is not dict
            or type(v.get("nodeKey")) is not str
            or type(v.get("newParent")) is not str
        ):  # move
            raise CRDTValidationError(fv, "expected {nodeKey, newParent}")
        else:
            _check_json(v, fv, limits)
    elif family == "text":
        if verb == "init":
            if v is not UNSET and v is not None:
                _check_str(v, fv, limits)
        elif verb == "insert":
            _check_text_insert(op, p, limits, local)
        elif verb == "delete":
            _check_text_delete(op, p, local)
            if v is not UNSET:
                _check_json(v, fv, limits)
        elif local and op.rm is UNSET and op.position is not UNSET:  # local replace
            _check_text_delete(op, p, local)
            vv = op.value
            content = vv[1] if type(vv) is list and len(vv) == 2 and vv[0] is None else vv
            _check_str(content, fv, limits)
        else:  # wire replace
            _check_text_delete(op, p, False)
            _check_text_insert(op, p, limits, False)
    else:  # meta
        if type(op.targetMsgId) is not str or not op.targetMsgId:
            raise CRDTValidationError(f"{p}.targetMsgId", "expected the target message id")
        if v is not UNSET:
            _check_json(v, fv, limits)


def validate_message(msg: Message, *, limits: Limits = DEFAULT_LIMITS, local: bool = False) -> None:
    """Check a message and normalise long names into compact ones (in place).

    Raises :class:`CRDTValidationError` naming the first bad field; on error the message may be
    partially normalised but nothing else is touched.
    """
    if msg.sessionId is not UNSET:
        if not msg.client:
            msg.client = msg.sessionId
        msg.sessionId = UNSET
    if msg.lamportTime is not UNSET:
        if msg.lt < 0:
            msg.lt = msg.lamportTime
        msg.lamportTime = UNSET
    if msg.timestamp is not UNSET:
        if msg.ts is None:
            msg.ts = msg.timestamp
        msg.timestamp = UNSET
    if not msg.id:
        raise CRDTValidationError("id", "missing message id")
    if len(msg.id) > limits.max_key:
        raise CRDTValidationError("id", f"longer than {limits.max_key}")
    if not msg.client:
        raise CRDTValidationError("client", "missing sender (client / sessionId)")
    if len(msg.client) > limits.max_key:
        raise CRDTValidationError("client", f"longer than {limits.max_key}")
    if msg.lt < 0:
        raise CRDTValidationError("lt", "missing or negative Lamport time (lt / lamportTime)")
    if msg.lt > MAX_SAFE_INTEGER:
        raise _out_of_range("lt")
    ts = msg.ts
    if ts is None:
        raise CRDTValidationError("ts", "missing timestamp (ts / timestamp)")
    t = type(ts)
    if not (
        (t is float and ts - ts == 0) or (t is int and -MAX_SAFE_INTEGER <= ts <= MAX_SAFE_INTEGER)
    ):
        _check_num(ts, "ts")
    clock = msg.clock
    if clock and (min(clock.values()) < 0 or max(clock.values()) > MAX_SAFE_INTEGER):
        k = next(k for k, c in clock.items() if not 0 <= c <= MAX_SAFE_INTEGER)
        if clock[k] < 0:
            raise CRDTValidationError(f"clock.{k}", "negative counter")
        raise _out_of_range(f"clock.{k}")
    ops = msg.ops
    if len(ops) > limits.max_ops:
        raise CRDTValidationError("ops", f"more than {limits.max_ops} ops")
    max_key = limits.max_key
    fast_checks = _FAST_CHECKS
    for i, op in enumerate(ops):
        if op.otype is UNSET:
            fast = fast_checks.get(op.ot)
            if (
                fast is not None
                and len(op.key) <= max_key
                and len(op.path) <= max_key
                and fast(op, limits)
            ):
                continue
        _validate_op_full(op, f"ops[{i}]", limits, local)


# ---------------------------------------------------------------------------------------------
# clocks
# ---------------------------------------------------------------------------------------------


def lamport_next(current: int, *seen: int) -> int:
    """The Lamport time of a new local event: one more than everything seen (reference §2)."""
    return max(current, *seen) + 1 if seen else current + 1


def merge_clocks(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    """Entry-wise maximum of two vector clocks (a new dict)."""
    out = dict(a)
    for k, v in b.items():
        if v > out.get(k, 0):
            out[k] = v
    return out


def tick_clock(clock: Mapping[str, int], session: str) -> dict[str, int]:
    """A copy of ``clock`` with ``session``'s own entry incremented (reference §2 commit)."""
    out = dict(clock)
    out[session] = out.get(session, 0) + 1
    return out


def clock_compare(a: Mapping[str, int], b: Mapping[str, int]) -> int | None:
    """Causal comparison: -1 (a before b), 0 (equal), 1 (a after b), None (concurrent)."""
    le = all(v <= b.get(k, 0) for k, v in a.items())
    ge = all(v <= a.get(k, 0) for k, v in b.items())
    if le and ge:
        return 0
    if le:
        return -1
    if ge:
        return 1
    return None
