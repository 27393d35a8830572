"""Server-side I/O shells for WebSocket endpoints an application builds itself.

The counterparts of :mod:`durasync.client` on the server: thin asyncio/Starlette pumps around
the sans-I/O cores of :mod:`durasync.protocol`, as :mod:`durasync.rooms` is for rooms and
:mod:`durasync.streams` for Durable Streams.

- :mod:`~durasync.endpoints.reliable`: :class:`~durasync.endpoints.reliable.ReliableHub`, the
  server side of stateful reconnect (:class:`~durasync.protocol.ReliableSession`), for the
  ``"stateful"`` mode of :class:`~durasync.client.ResilientWebSocket`.
"""

from __future__ import annotations

from durasync.endpoints.reliable import ReliableConnection, ReliableHub

__all__ = ["ReliableConnection", "ReliableHub"]
