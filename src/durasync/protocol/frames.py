"""Wire frames of the durasync reliable-session protocol (stateful reconnect).

Each WebSocket message carries exactly one frame: a msgspec Struct tagged by
the field ``"t"``. Two encodings, chosen per endpoint: JSON in WebSocket
*text* messages, MessagePack in *binary* messages. docs/client.md has the
table; the short version:

========  ===========================================  ====================
``t``     fields                                        sent by
========  ===========================================  ====================
hello     ``v``, ``session`` (str|null), ``last_seen``  client, first frame
welcome   ``session``, ``last_seen``, ``resumed``       server, first frame
msg       ``seq``, ``text`` xor ``data``                both
ack       ``seq``                                        both
bye       --                                             both (end session)
error     ``code``, ``message``, ``permanent``          both
ping      ``id`` (int, optional)                        both, mid-session
pong      ``id`` (the ping's)                           both, answers ping
========  ===========================================  ====================

Sequence numbers are per direction, start at 1 and never reset while the
session lives; ``last_seen`` and ``ack.seq`` are the highest sequence number
received *in order* (0 = none). ``ping``/``pong`` are an application-level heartbeat for
peers that cannot send WebSocket pings (browsers): a session answers every ``ping`` with a
``pong`` carrying its ``id``; neither touches sequence numbers. Unknown fields are ignored (forward
compatibility); unknown ``t`` values and out-of-range numbers are protocol
violations.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from durasync.protocol.errors import RemoteProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "Ack",
    "Bye",
    "ErrorFrame",
    "Frame",
    "FrameCodec",
    "Hello",
    "Msg",
    "Ping",
    "Pong",
    "Welcome",
]

PROTOCOL_VERSION = 1

# Sequence numbers stay exact in JavaScript numbers (2^53 - 1).
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
SessionId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class _Frame(msgspec.Struct, tag_field="t", omit_defaults=True, frozen=True):
    pass


class Hello(_Frame, tag="hello", frozen=True):
    """Client -> server, first frame of every connection.

    ``session`` is the id from the last ``welcome`` (None on the first
    connection); ``last_seen`` the highest server seq received in order.
    """

    v: int = PROTOCOL_VERSION
    session: SessionId | None = None
    last_seen: Seq = 0


class Welcome(_Frame, tag="welcome", frozen=True):
    """Server -> client, answer to ``hello``.

    ``resumed`` is true when the server still had the session: both sides
    then replay what the other has not seen. When false this is a new
    session: counters restart at 1 and nothing of the old session's
    server->client traffic can be recovered (reported, never silent).
    """

    session: SessionId
    last_seen: Seq = 0
    resumed: bool = False


class Msg(_Frame, tag="msg", frozen=True):
    """One application message; exactly one of ``text``/``data`` is set."""

    seq: Seq
    text: str | None = None
    data: bytes | None = None


class Ack(_Frame, tag="ack", frozen=True):
    """Coalesced acknowledgement: every message with seq <= ``seq`` was received."""

    seq: Seq


class Bye(_Frame, tag="bye", frozen=True):
    """The sender ends the session for good (graceful close); no resume follows."""


class ErrorFrame(_Frame, tag="error", frozen=True):
    """The sender reports an error before closing; ``permanent`` says whether to retry."""

    code: str
    message: str = ""
    permanent: bool = True


class Ping(_Frame, tag="ping", frozen=True):
    """Heartbeat request (mid-session); the peer answers with ``pong`` and the same ``id``."""

    id: Seq = 0


class Pong(_Frame, tag="pong", frozen=True):
    """Answer to ``ping``."""

    id: Seq = 0


Frame = Hello | Welcome | Msg | Ack | Bye | ErrorFrame | Ping | Pong

Encoding = Literal["json", "msgpack"]


class FrameCodec:
    """Encodes and decodes frames; JSON -> ``str`` (text), msgpack -> ``bytes`` (binary).

    Decoding never raises anything but
    :class:`~durasync.protocol.errors.RemoteProtocolError` (code ``bad_frame``).
    """

    def __init__(self, encoding: Encoding = "json") -> None:
        if encoding not in ("json", "msgpack"):
            raise ValueError(f"unknown encoding {encoding!r}")
        self.encoding: Encoding = encoding
        self._json_enc = msgspec.json.Encoder()
        self._json_dec = msgspec.json.Decoder(Frame)
        self._mp_enc = msgspec.msgpack.Encoder()
        self._mp_dec = msgspec.msgpack.Decoder(Frame)

    def encode(self, frame: Frame) -> str | bytes:
        """Serialize ``frame`` for one WebSocket message."""
        if self.encoding == "json":
            return self._json_enc.encode(frame).decode("utf-8")
        return self._mp_enc.encode(frame)

    def decode(self, data: str | bytes) -> Frame:
        """Parse one WebSocket message into a frame.

        Raises:
            RemoteProtocolError: malformed, unknown type, wrong message kind
                (text for msgpack), or a ``msg`` without exactly one payload.
        """
        try:
            if self.encoding == "json":
                frame: Frame = self._json_dec.decode(data)
            else:
                if isinstance(data, str):
                    raise RemoteProtocolError("bad_frame", "text message on a msgpack session")
                frame = self._mp_dec.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RemoteProtocolError("bad_frame", str(exc)) from None
        if isinstance(frame, Msg) and (frame.text is None) == (frame.data is None):
            raise RemoteProtocolError("bad_frame", "msg needs exactly one of text/data")
        return frame
