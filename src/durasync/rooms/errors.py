"""Errors of the rooms layer (the server's rooms; a peer's bad frame is a
:class:`durasync.protocol.errors.FrameError` or :class:`~durasync.protocol.errors.JoinRefused`).

- :class:`RoomsError` -- base of the layer's errors.

  - :class:`RoomFailed` -- the room's store failed (our side, not the peer's); the room's
    members are dropped with :attr:`~durasync.protocol.closecodes.CloseCode.ROOM_FAILED`
    and the room is reloaded from the store on next use.

    - :class:`RoomConflict` -- other nodes kept winning the conditional appends.
"""

from __future__ import annotations

__all__ = ["RoomConflict", "RoomFailed", "RoomsError"]


class RoomsError(Exception):
    """Base of the errors the rooms layer raises."""


class RoomFailed(RoomsError):
    """The room's store failed; the room must be reloaded from the store."""


class RoomConflict(RoomFailed):
    """Other nodes won :data:`~durasync.rooms.room.MAX_CONFLICT_RETRIES` conditional appends
    in a row."""
