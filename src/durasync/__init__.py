"""durasync: durable real-time sync.

Durable Streams over plain HTTP, collaborative CRDT rooms over WebSocket, and
asyncio clients that reconnect, buffer and resume without losing or
duplicating a write. See ``shared/DESIGN.md`` in the project for the map.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
