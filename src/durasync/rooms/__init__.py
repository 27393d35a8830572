"""Collaborative rooms: sequenced, durably journaled, resumable scene graphs over WebSocket.

- :mod:`~durasync.rooms.core`: sans-I/O room state: sequencing, dedupe, which journal records
  form the journal, resume planning, presence, the room's highest counter.
- :mod:`~durasync.rooms.room`: one loaded room (journal -> graph, group commit, snapshots).
- :mod:`~durasync.rooms.presence`: presence on this node or shared through Redis.
- :mod:`~durasync.rooms.service`: registry and ASGI endpoints (WebSocket + HTTP views).

The wire frames and the per-connection rules are sans-I/O cores in :mod:`durasync.protocol`
(:mod:`~durasync.protocol.room_frames`, :mod:`~durasync.protocol.room_server`), shared with
the client. The protocol is documented in docs/protocol.md.
"""

from __future__ import annotations

from durasync.rooms.room import Room, RoomSettings
from durasync.rooms.service import RoomService

__all__ = ["Room", "RoomService", "RoomSettings"]
