"""asyncio clients: :class:`ResilientWebSocket`, :class:`StreamClient` and :class:`RoomClient`.

One async API, typed; each call's docstring states its guarantees. The
protocol logic lives in the sans-I/O cores of :mod:`durasync.protocol`;
these classes are the I/O pumps around them.
"""

from __future__ import annotations

from durasync.client.errors import (
    ClientError,
    ConnectionFailed,
    ConnectionNotOpen,
    HandshakeRejected,
    ProducerFenced,
    ProducerSeqGap,
    ProducerStateConflict,
    StreamClosedError,
    StreamConflict,
    StreamError,
    StreamGone,
    StreamNotFound,
)
from durasync.client.room import PresenceEvent, RoomChange, RoomClient, RoomError
from durasync.client.streams import (
    AppendResult,
    Batch,
    IdempotentProducer,
    LiveMode,
    StreamClient,
    StreamInfo,
)
from durasync.client.websocket import (
    ClientEvent,
    ConnectTarget,
    ErrorEvent,
    Message,
    ReconnectMode,
    ResilientOptions,
    ResilientWebSocket,
)

__all__ = [
    "AppendResult",
    "Batch",
    "ClientError",
    "ClientEvent",
    "ConnectTarget",
    "ConnectionFailed",
    "ConnectionNotOpen",
    "ErrorEvent",
    "HandshakeRejected",
    "IdempotentProducer",
    "LiveMode",
    "Message",
    "PresenceEvent",
    "ProducerFenced",
    "ProducerSeqGap",
    "ProducerStateConflict",
    "ReconnectMode",
    "ResilientOptions",
    "ResilientWebSocket",
    "RoomChange",
    "RoomClient",
    "RoomError",
    "StreamClient",
    "StreamClosedError",
    "StreamConflict",
    "StreamError",
    "StreamGone",
    "StreamInfo",
    "StreamNotFound",
]
