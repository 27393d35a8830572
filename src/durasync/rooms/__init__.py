"""Collaborative rooms: sequenced, durably journaled, resumable scene graphs over WebSocket.

- :mod:`~durasync.rooms.frames`: wire frames (msgpack/JSON, ``mtype`` tagged unions).
- :mod:`~durasync.rooms.core`: sans-I/O sequencing, dedupe, resume planning, presence, rate and
  answer budgets, room names, id namespaces, the counter ceiling.
- :mod:`~durasync.rooms.room`: one loaded room (journal -> graph, group commit, snapshots).
- :mod:`~durasync.rooms.service`: registry and ASGI endpoints (WebSocket + HTTP views).

The protocol is documented in docs/protocol.md.
"""

from __future__ import annotations

from durasync.rooms.room import CLOSE_RESUME, Room, RoomSettings
from durasync.rooms.service import RoomService

__all__ = ["CLOSE_RESUME", "Room", "RoomService", "RoomSettings"]
