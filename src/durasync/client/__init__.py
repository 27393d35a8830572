"""asyncio clients: :class:`ResilientWebSocket`, :class:`StreamClient` and :class:`RoomClient`.

One async API, typed; each call's docstring states its guarantees. The
protocol logic lives in the sans-I/O cores of :mod:`durasync.protocol`;
these classes are the I/O pumps around them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Where each public name lives. Imported on first use (PEP 562), so that
#: ``durasync serve`` does not load the client stack (httpx, the WebSocket client): the
#: server starts faster (a restart is part of "a room ready in under 2 s").
_WHERE = {
    "AppendResult": "durasync.client.streams",
    "Batch": "durasync.client.streams",
    "ClientError": "durasync.client.errors",
    "ClientEvent": "durasync.client.websocket",
    "ConnectTarget": "durasync.client.websocket",
    "ConnectionFailed": "durasync.client.errors",
    "ConnectionNotOpen": "durasync.client.errors",
    "ErrorEvent": "durasync.client.websocket",
    "HandshakeRejected": "durasync.client.errors",
    "IdempotentProducer": "durasync.client.streams",
    "LiveMode": "durasync.client.streams",
    "Message": "durasync.client.websocket",
    "PresenceEvent": "durasync.client.room",
    "ProducerFenced": "durasync.client.errors",
    "ProducerSeqGap": "durasync.client.errors",
    "ProducerStateConflict": "durasync.client.errors",
    "ReconnectMode": "durasync.client.websocket",
    "ResilientOptions": "durasync.client.websocket",
    "ResilientWebSocket": "durasync.client.websocket",
    "RoomChange": "durasync.client.room",
    "RoomClient": "durasync.client.room",
    "RoomError": "durasync.client.room",
    "StreamClient": "durasync.client.streams",
    "StreamClosedError": "durasync.client.errors",
    "StreamConflict": "durasync.client.errors",
    "StreamError": "durasync.client.errors",
    "StreamGone": "durasync.client.errors",
    "StreamInfo": "durasync.client.streams",
    "StreamNotFound": "durasync.client.errors",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
