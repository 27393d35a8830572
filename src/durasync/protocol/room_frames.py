"""Wire frames of the rooms WebSocket protocol (docs/protocol.md), as msgspec tagged unions.

Used by both sides: the server's :class:`~durasync.protocol.room_server.ServerRoomSession`
decodes client frames and the room encodes server frames; the client's
:class:`~durasync.protocol.room_client.ClientRoomSession` does the opposite.

Every frame is one WebSocket message: msgpack (binary) by default, JSON (text) with
``?format=json``. The ``mtype`` field discriminates (vuer-rtc-semantics.md §6). Client frames
are decoded with :func:`decode_client_frame`, which never raises anything but
:class:`FrameError` (naming the field at fault), so a malformed frame costs the sender an
``error`` frame and nothing else (DESIGN.md invariant 5). Server frames are decoded with
:func:`decode_server_frame`.

Every number a client frame may carry is range-checked while decoding (integers within
+-``MAX_SAFE_INTEGER``, finite floats; docs/crdt.md "Numbers"), and the one free-form value, a
presence ``state``, is checked like a CRDT value (depth, size, numbers). So a decoded frame can
be re-encoded in both formats, for any member, without error. A frame nested deeper than the
decoder's recursion limit is refused like any malformed frame.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from durasync.crdt.errors import CRDTValidationError
from durasync.crdt.messages import (
    DEFAULT_LIMITS,
    Limits,
    Message,
    SafeInt,
    check_value,
    validate_message,
)
from durasync.crdt.replica import Snapshot
from durasync.protocol.errors import FrameError

__all__ = [
    "AckFrame",
    "BroadcastFrame",
    "ClientFrame",
    "CrdtFrame",
    "Format",
    "FrameError",
    "HeartbeatFrame",
    "PingFrame",
    "PresenceFrame",
    "PresenceUpdate",
    "RoomErrorFrame",
    "ServerFrame",
    "StateFrame",
    "SyncCheckFrame",
    "SyncFrame",
    "SyncStatusFrame",
    "decode_client_frame",
    "decode_server_frame",
    "encode_frame",
]

Format = Literal["msgpack", "json"]

#: A request id echoed in ``sync-status`` (short: the echo must not amplify).
RequestId = Annotated[str, Meta(max_length=256)] | SafeInt
#: Longest id that an ``error`` frame echoes back as ``msgId``.
MAX_ECHOED_ID: Final = 1024


# ----------------------------------------------------------------------------- client -> server


class CrdtFrame(msgspec.Struct, tag_field="mtype", tag="crdt"):
    """A committed CRDT message (first send or a resend of an unacknowledged one)."""

    msg: Message


class SyncFrame(msgspec.Struct, tag_field="mtype", tag="sync", kw_only=True):
    """ "This is what I have": the server answers with a ``state`` frame.

    ``since``/``epoch`` (extension) ask for a resume, exactly like the URL parameters;
    ``vectorClock``, ``filter`` and ``count`` are accepted for vuer-rtc compatibility.
    """

    vectorClock: dict[str, SafeInt] | None = None
    since: SafeInt | None = None
    epoch: str | None = None
    filter: bytes | None = None
    count: SafeInt | None = None


class SyncCheckFrame(msgspec.Struct, tag_field="mtype", tag="sync-check"):
    """Ask for the checksum of the room's graph."""

    requestId: RequestId


class HeartbeatFrame(msgspec.Struct, tag_field="mtype", tag="heartbeat", kw_only=True):
    """Liveness (keeps presence alive); fields are informational."""

    client: str | None = None
    vectorClock: dict[str, SafeInt] | None = None


class PresenceUpdate(msgspec.Struct, tag_field="mtype", tag="presence"):
    """Set this connection's presence state (cursor, selection, ...); ``None`` clears it."""

    state: Any = None


ClientFrame = CrdtFrame | SyncFrame | SyncCheckFrame | HeartbeatFrame | PresenceUpdate


# ----------------------------------------------------------------------------- server -> client


class StateFrame(msgspec.Struct, tag_field="mtype", tag="state", kw_only=True, omit_defaults=True):
    """Full state (``recovered=False``: snapshot + journal tail) or a resume
    (``recovered=True``: ``snapshot`` is None and ``journal`` is exactly the missed messages).

    ``order`` is ``"lamport"`` in a replicated room: fold its messages in the Lamport order
    ``(lt, client, id)``, not by serverSeq (docs/replication.md "Rooms"); absent otherwise.
    """

    snapshot: Snapshot | None
    journal: list[Message]
    serverSeq: int
    epoch: str
    recovered: bool
    order: Literal["lamport"] | None = None


class AckFrame(msgspec.Struct, tag_field="mtype", tag="ack"):
    """The sender's message ``msgId`` is durable at ``serverSeq``."""

    msgId: str
    serverSeq: int


class BroadcastFrame(msgspec.Struct, tag_field="mtype", tag="broadcast"):
    """Another member's message at ``serverSeq`` (``msg.serverSeq`` is set too)."""

    msg: Message
    serverSeq: int


class RoomErrorFrame(msgspec.Struct, tag_field="mtype", tag="error", kw_only=True):
    """A rejected frame. ``msgId`` names the rejected message when known; ``code`` is stable."""

    msgId: str | None
    error: str
    code: str


class SyncStatusFrame(msgspec.Struct, tag_field="mtype", tag="sync-status", kw_only=True):
    """Answer to ``sync-check``: the checksum of the live canonical JSON at ``serverSeq``;
    ``status`` is None when the server did not compute it now (the connection's answer budget
    is spent): ask again later."""

    requestId: str | int
    status: str | None
    serverSeq: int


class PresenceFrame(msgspec.Struct, tag_field="mtype", tag="presence", kw_only=True):
    """Presence change of ``client`` (``join``/``update``/``leave``), or the whole table
    (``sync``, sent once after ``state``: ``members`` maps client -> state)."""

    event: Literal["join", "update", "leave", "sync"]
    client: str | None = None
    state: Any = None
    reason: str | None = None
    members: dict[str, Any] | None = None


class PingFrame(msgspec.Struct, tag_field="mtype", tag="ping"):
    """Server liveness probe; answer with ``heartbeat``. ``ts`` is server time in ms."""

    ts: int


ServerFrame = (
    StateFrame
    | AckFrame
    | BroadcastFrame
    | RoomErrorFrame
    | SyncStatusFrame
    | PresenceFrame
    | PingFrame
)


_json_decoder: Final = msgspec.json.Decoder(ClientFrame)
_msgpack_decoder: Final = msgspec.msgpack.Decoder(ClientFrame)
_server_json_decoder: Final = msgspec.json.Decoder(ServerFrame)
_server_msgpack_decoder: Final = msgspec.msgpack.Decoder(ServerFrame)
_json_encoder: Final = msgspec.json.Encoder()
_msgpack_encoder: Final = msgspec.msgpack.Encoder()


class _IdProbe(msgspec.Struct):
    id: str | None = None


class _MsgProbe(msgspec.Struct):
    msg: _IdProbe | None = None


_probe_json: Final = msgspec.json.Decoder(_MsgProbe)
_probe_msgpack: Final = msgspec.msgpack.Decoder(_MsgProbe)
_AT_RE: Final = re.compile(r" - at `\$\.?(.*)`")


def _probe_id(data: bytes, fmt: Format) -> str | None:
    """``msg.id`` of an undecodable frame, if it can be found (and is short enough to echo)."""
    try:
        probe = (_probe_json if fmt == "json" else _probe_msgpack).decode(data)
    except (msgspec.MsgspecError, ValueError, TypeError, RecursionError):
        return None
    if probe.msg is None or probe.msg.id is None or len(probe.msg.id) > MAX_ECHOED_ID:
        return None
    return probe.msg.id


def decode_client_frame(
    data: bytes | str,
    fmt: Format,
    *,
    max_frame_bytes: int = 1 << 20,
    limits: Limits = DEFAULT_LIMITS,
) -> ClientFrame:
    """Decode and validate one client frame.

    ``crdt`` messages are validated and normalised (long names -> compact) with
    :func:`durasync.crdt.validate_message` under ``limits`` (ops per message, value size);
    a presence ``state`` is checked with :func:`durasync.crdt.messages.check_value` under the
    same limits.

    Raises:
        FrameError: ``FRAME_TOO_LARGE``, ``MALFORMED_FRAME`` (undecodable, unknown ``mtype``,
            wrong field type, a number out of range, nested too deeply, a presence state that
            is not a plain JSON value; the message names the field) or ``INVALID_MESSAGE`` (a
            ``crdt`` message that fails CRDT validation).
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > max_frame_bytes:
        raise FrameError(
            "FRAME_TOO_LARGE",
            f"frame of {len(raw)} bytes exceeds the limit of {max_frame_bytes}",
            msg_id=_probe_id(raw, fmt),
        )
    try:
        frame: ClientFrame = (_json_decoder if fmt == "json" else _msgpack_decoder).decode(raw)
    except msgspec.MsgspecError as exc:
        text = str(exc)
        m = _AT_RE.search(text)
        if m:
            text = f"{text[: m.start()]} (at {m.group(1) or 'frame'})"
        raise FrameError("MALFORMED_FRAME", text, msg_id=_probe_id(raw, fmt)) from None
    except RecursionError:
        raise FrameError("MALFORMED_FRAME", "frame nested too deeply") from None
    if isinstance(frame, PresenceUpdate):
        try:
            check_value(frame.state, "state", limits)
        except CRDTValidationError as exc:
            raise FrameError("MALFORMED_FRAME", f"{exc.field}: {exc.message}") from None
    elif isinstance(frame, CrdtFrame):
        try:
            validate_message(frame.msg, limits=limits)
        except CRDTValidationError as exc:
            msg_id = frame.msg.id
            raise FrameError(
                "INVALID_MESSAGE",
                f"msg.{exc.field}: {exc.message}",
                msg_id=msg_id if msg_id and len(msg_id) <= MAX_ECHOED_ID else None,
            ) from None
        if frame.msg.serverSeq is not None:
            # The server assigns positions; a client-provided one is ignored, not trusted.
            frame.msg.serverSeq = None
    return frame


def decode_server_frame(data: bytes | str) -> ServerFrame:
    """Decode one server frame: a ``str`` (WebSocket text message) is JSON, ``bytes`` msgpack.

    Raises:
        msgspec.DecodeError: not a frame of this protocol version (undecodable, unknown
            ``mtype``, a field of the wrong type).
    """
    if isinstance(data, str):
        return _server_json_decoder.decode(data)
    return _server_msgpack_decoder.decode(data)


def encode_frame(frame: ServerFrame | ClientFrame, fmt: Format) -> bytes:
    """Encode a frame of either side (JSON frames are sent as text, msgpack as binary)."""
    if fmt == "json":
        return _json_encoder.encode(frame)
    return _msgpack_encoder.encode(frame)
