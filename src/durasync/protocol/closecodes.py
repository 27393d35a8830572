"""WebSocket close codes durasync sends and understands, in one table.

RFC 6455 §7.4.1 defines 1000-1015; durasync's application codes are in the private range
4000-4999 and mirror the HTTP status they stand for where there is one (4400 ~ 400, 4403 ~ 403,
4429 ~ 429). docs/protocol.md "Close codes" says, for each, what a client should do; a server
handler closes with these names, never with a bare number.

Whether a client retries is decided by
:func:`durasync.protocol.errors.classify_close_code`: :data:`PERMANENT_CLOSE_CODES` stop it,
every other code (and a connection lost without a close frame) is retried with backoff.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["PERMANENT_CLOSE_CODES", "CloseCode"]


class CloseCode(enum.IntEnum):
    """A WebSocket close code (an ``int``: pass it wherever a close code is expected)."""

    NORMAL = 1000
    """The session ended on purpose (reliable session ``bye``, a superseded connection)."""
    GOING_AWAY = 1001
    """The peer is going away (browser tab closed, server restart); retry."""
    PROTOCOL_ERROR = 1002
    """The peer broke the wire protocol (bad frame, sequence gap); do not retry."""
    UNSUPPORTED_DATA = 1003
    """The peer sent a kind of data the endpoint cannot take; do not retry."""
    INVALID_PAYLOAD = 1007
    """A message's data was inconsistent with its type (bad UTF-8); do not retry."""
    POLICY_VIOLATION = 1008
    """Handshake refused by policy (auth) where the server cannot answer with HTTP 401/403."""
    MESSAGE_TOO_BIG = 1009
    """A message was larger than the receiver accepts; do not retry the same message."""
    MANDATORY_EXTENSION = 1010
    """The client needs an extension the server did not negotiate; do not retry."""
    INTERNAL_ERROR = 1011
    """The server failed (e.g. its store was unavailable at join); retry after backoff."""
    TRY_AGAIN_LATER = 1013
    """The server is overloaded (session registry full, slow consumer); retry after backoff."""
    RESUME = 4008
    """The server dropped the connection (send queue full, shutdown, room unloaded); reconnect
    and resume with ``since``/``epoch``."""
    REPLACED = 4009
    """A newer connection with the same client id took over; retried (see docs)."""
    ROOM_FAILED = 4011
    """The room failed (store error, lost conditional appends); reconnect after backoff."""
    ROOM_DELETED = 4404
    """The room was deleted (``DELETE /v1/rooms/{room}``); do not retry (a rejoin would create a
    new, empty room)."""
    BAD_REQUEST = 4400
    """Malformed URL (room name, ``client``, ``format``, ``since``); fix it, do not retry."""
    UNAUTHORIZED = 4401
    """Credentials refused after the upgrade; do not retry with the same credentials."""
    FORBIDDEN = 4403
    """Not allowed (a read-only member joining a room that does not exist); do not retry."""
    ROOM_FULL = 4429
    """The room has its maximum of connections on this node; retry later or elsewhere."""


#: Codes that say the peer found *us* at fault: resending the same traffic fails again, so a
#: client stops instead of reconnecting. 4400 is sent only for a malformed URL, never for a
#: server-side condition. 4009 stays out on purpose: a server also sends it to a client's live
#: connection when one of the client's own abandoned connect attempts arrives late, and
#: stopping then would strand the client.
PERMANENT_CLOSE_CODES: Final = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.INVALID_PAYLOAD,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.MANDATORY_EXTENSION,
        CloseCode.BAD_REQUEST,
        CloseCode.UNAUTHORIZED,
        CloseCode.FORBIDDEN,
        CloseCode.ROOM_DELETED,
    }
)
