"""Sans-I/O cores shared by durasync's servers and clients.

No sockets, no asyncio, no clock reads: every core takes values in
(``receive_*``, ``send_*``, ``now``) and gives events and encoded frames out
(``events_received()``, ``data_to_send()``), in the style of h11 and
websockets. The I/O shells in :mod:`durasync.client`, :mod:`durasync.rooms` and
:mod:`durasync.endpoints` are thin pumps around them.

- :mod:`~durasync.protocol.backoff` -- reconnect delays (full jitter, floor).
- :mod:`~durasync.protocol.buffer` -- bounded outgoing buffer with overflow policy.
- :mod:`~durasync.protocol.state` -- connection state machine (a table).
- :mod:`~durasync.protocol.frames` -- reliable-session wire frames (JSON/msgpack).
- :mod:`~durasync.protocol.session` -- stateful reconnect: seq, coalesced acks, replay.
- :mod:`~durasync.protocol.errors` -- error hierarchy, transient vs permanent.
- :mod:`~durasync.protocol.closecodes` -- the WebSocket close codes, in one table.
- :mod:`~durasync.protocol.room_frames` -- rooms wire frames (msgpack/JSON, ``mtype``).
- :mod:`~durasync.protocol.room_rules` -- what one room member may do (names, id namespaces,
  counter ceiling, frame and answer budgets).
- :mod:`~durasync.protocol.room_server` -- one room connection, server side (join rules,
  frames in, what the room must do out).
- :mod:`~durasync.protocol.room_client` -- one room member, client side (replica, outbox,
  resume, reload, resend).
"""

from __future__ import annotations

from durasync.protocol.backoff import Backoff, BackoffPolicy
from durasync.protocol.buffer import BufferLimits, OutgoingBuffer, Overflow, Payload
from durasync.protocol.closecodes import PERMANENT_CLOSE_CODES, CloseCode
from durasync.protocol.errors import (
    BufferFull,
    Classification,
    ErrorKind,
    InvalidTransition,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    classify_close_code,
    classify_http_status,
)
from durasync.protocol.frames import Frame, FrameCodec
from durasync.protocol.session import (
    MessageReceived,
    PeerClosed,
    PeerError,
    RegistryFull,
    ReliableSession,
    Role,
    SessionEvent,
    SessionLimits,
    SessionOpened,
    SessionRegistry,
)
from durasync.protocol.state import (
    ConnectionState,
    ConnectionStateMachine,
    StateChanged,
    Trigger,
)

__all__ = [
    "PERMANENT_CLOSE_CODES",
    "Backoff",
    "BackoffPolicy",
    "BufferFull",
    "BufferLimits",
    "Classification",
    "CloseCode",
    "ConnectionState",
    "ConnectionStateMachine",
    "ErrorKind",
    "Frame",
    "FrameCodec",
    "InvalidTransition",
    "LocalProtocolError",
    "MessageReceived",
    "OutgoingBuffer",
    "Overflow",
    "Payload",
    "PeerClosed",
    "PeerError",
    "ProtocolError",
    "RegistryFull",
    "ReliableSession",
    "RemoteProtocolError",
    "Role",
    "SessionEvent",
    "SessionLimits",
    "SessionOpened",
    "SessionRegistry",
    "StateChanged",
    "Trigger",
    "classify_close_code",
    "classify_http_status",
]
