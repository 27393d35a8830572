"""Client side of a room connection, sans-I/O: the member's replica, outbox and resume.

Theory of operation (docs/protocol.md "Join and resume", docs/client.md "RoomClient").

The session outlives connections. It holds the member's :class:`~durasync.crdt.Replica`
(confirmed messages in the server's order, plus the member's own pending ones and edit
buffer), the *outbox* of committed messages the server has not acknowledged, in commit order,
and the resume position: the last ``serverSeq`` received and the ``epoch`` it belongs to.

- **Join and resume.** Every connection is opened with :meth:`ClientRoomSession.join_params`
  (``since``/``epoch`` once a position is known). The server's first frame is ``state``:
  ``recovered: true`` (same epoch, journal still reaching back) applies exactly the missed
  messages; ``recovered: false`` (first join, a new epoch, a trimmed journal) *reloads* the
  replica from the snapshot and journal: the edit buffer is committed first so nothing is
  lost, own messages the state already holds leave the outbox, and the Lamport time never
  goes back (ids are ``<client>:<lt>``; a reused one would be deduped away by the server).
- **Resend after state.** Frames go out only while *connected*: between a ``state`` and the
  connection's loss. After each ``state`` the whole outbox is sent again in commit order (the
  server dedupes by id and acks a resend with its original ``serverSeq``), then the presence
  state and every pending ``sync-check``. Frames of a lost connection are dropped
  (:meth:`~ClientRoomSession.connection_lost`): what matters is sent again after the next
  ``state``.
- **Acks and errors.** An ``ack`` confirms the message (it leaves the outbox). An ``error``
  naming one of ours drops it and its optimistic effect, except ``RATE_LIMITED``, which is
  resent after :data:`RETRY_DELAY`. A ``sync-status`` without a status (the server's answer
  budget is spent) or a ``RATE_LIMITED`` without a ``msgId`` makes every pending check ask
  again after the same delay.

Nothing here reads a clock or awaits: every call that can create a message or a timer takes
``now`` (seconds of the wall clock: message timestamps are ``now * 1000`` ms, and retries are
due ``RETRY_DELAY`` later). Caller obligations, after each ``receive_*``, ``tick`` or local
call (:meth:`~ClientRoomSession.edit`, :meth:`~ClientRoomSession.commit`, ...): write every
item of :meth:`~ClientRoomSession.data_to_send`, in order, as one WebSocket message each (a
``str`` as a text message, ``bytes`` as binary), and process
:meth:`~ClientRoomSession.events_received`; call :meth:`~ClientRoomSession.tick` no later
than :meth:`~ClientRoomSession.next_deadline`; call
:meth:`~ClientRoomSession.connection_lost` when the transport ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from durasync.crdt.graph import SceneGraph
from durasync.crdt.messages import META_OTYPES, Message, Op
from durasync.crdt.replica import Replica
from durasync.protocol.errors import RemoteProtocolError
from durasync.protocol.room_frames import (
    AckFrame,
    BroadcastFrame,
    ClientFrame,
    CrdtFrame,
    Format,
    HeartbeatFrame,
    PingFrame,
    PresenceFrame,
    PresenceUpdate,
    RoomErrorFrame,
    ServerFrame,
    StateFrame,
    SyncCheckFrame,
    SyncStatusFrame,
    decode_server_frame,
    encode_frame,
)

__all__ = [
    "RETRY_DELAY",
    "ChangeOrigin",
    "CheckResult",
    "ClientRoomEvent",
    "ClientRoomSession",
    "PresenceEvent",
    "RoomChange",
    "RoomError",
]

#: Seconds before a ``RATE_LIMITED`` message is resent and an unanswered ``sync-check`` asked
#: again (docs/protocol.md: "drop; resend later").
RETRY_DELAY: Final = 0.5

ChangeOrigin = Literal["local", "remote", "reload", "rejected"]


@dataclass(frozen=True, slots=True)
class RoomChange:
    """The visible graph changed. ``keys`` are the node keys affected (for ``reload``:
    every key of the old and the new graph)."""

    keys: frozenset[str]
    origin: ChangeOrigin


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A member's presence changed (``event``: ``sync``/``join``/``update``/``leave``)."""

    event: str
    client: str | None
    state: Any
    members: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RoomError:
    """The server rejected a frame (``msg_id`` names our message when known)."""

    code: str
    error: str
    msg_id: str | None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The answer to the ``sync-check`` ``request_id``: the server's checksum ``status`` at
    ``server_seq``; ``matches`` when that is our position and our graph's checksum then."""

    request_id: str
    status: str
    server_seq: int
    matches: bool


ClientRoomEvent = RoomChange | PresenceEvent | RoomError | CheckResult

_RESEND: Final = "resend"
_RECHECK: Final = "recheck"


class ClientRoomSession:
    """One member of a room, client side (module docstring).

    Args:
        client_id: the member's session id; its messages are ``<client_id>:<lt>``.
        fmt: ``"msgpack"`` (binary frames) or ``"json"`` (text frames).
        retry_delay: seconds before a rate-limited frame is sent again.
    """

    def __init__(
        self, client_id: str, *, fmt: Format = "msgpack", retry_delay: float = RETRY_DELAY
    ) -> None:
        self.client_id = client_id
        self.fmt: Format = fmt
        self.retry_delay = retry_delay
        self.replica = Replica(client_id, sequenced=True)
        """The member's replica (replaced by a reload)."""
        self.server_seq: int | None = None
        """Last serverSeq received (the resume position)."""
        self.epoch: str | None = None
        """Epoch of the room incarnation ``server_seq`` belongs to."""
        self.reloads = 0
        """Full states received (``recovered: false``), the first join included."""
        self.lamport = False
        """The room is replicated between servers: its messages fold in Lamport order, not by
        serverSeq (the ``state`` frame's ``order``; docs/replication.md "Rooms")."""
        self.presence: dict[str, Any] = {}
        """Presence state of every member present (client id -> state)."""
        self.connected = False
        """A connection is up and its ``state`` was applied: frames go out."""
        self._outbox: dict[str, Message] = {}
        self._my_presence: Any = None
        self._checks: dict[str, None] = {}
        self._timers: dict[tuple[str, str], float] = {}
        self._out: list[bytes | str] = []
        self._events: list[ClientRoomEvent] = []

    # -- reading ----------------------------------------------------------------------

    @property
    def graph(self) -> SceneGraph:
        """The visible graph: confirmed messages + own pending ones + the edit buffer."""
        return self.replica.graph

    @property
    def unsynced(self) -> int:
        """Committed messages the server has not acknowledged yet."""
        return len(self._outbox)

    def unacked(self) -> list[Message]:
        """The unacknowledged messages, in commit order."""
        return list(self._outbox.values())

    def join_params(self) -> dict[str, str]:
        """The query of the next connection's URL: ``client``, ``format`` and, once a position
        is known, ``since``/``epoch`` (docs/protocol.md "Endpoint")."""
        query = {"client": self.client_id, "format": self.fmt}
        if self.server_seq is not None and self.epoch is not None:
            query["since"] = str(self.server_seq)
            query["epoch"] = self.epoch
        return query

    # -- draining ---------------------------------------------------------------------

    def data_to_send(self) -> list[bytes | str]:
        """Encoded frames to write, in order (drained): JSON frames are ``str``."""
        out, self._out = self._out, []
        return out

    def events_received(self) -> list[ClientRoomEvent]:
        """Events since the last call, in order (drained)."""
        events, self._events = self._events, []
        return events

    # -- timers -----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must run next (a pending retry), or None."""
        return min(self._timers.values(), default=None)

    def tick(self, now: float) -> None:
        """Fire due retries: resend rate-limited messages, ask pending checks again (only
        while connected; otherwise the next ``state`` sends them anyway)."""
        due = [key for key, at in self._timers.items() if at <= now]
        for key in due:
            del self._timers[key]
            kind, ident = key
            if not self.connected:
                continue
            if kind == _RESEND:
                msg = self._outbox.get(ident)
                if msg is not None:
                    self._send(CrdtFrame(msg))
            elif ident in self._checks:
                self._send(SyncCheckFrame(requestId=ident))

    # -- connection -------------------------------------------------------------------

    def connection_lost(self) -> None:
        """The transport ended: stop sending; frames not written yet are dropped (the next
        ``state`` sends again what matters)."""
        self.connected = False
        self._out.clear()

    def receive_data(self, data: bytes | str, now: float) -> None:
        """Process one WebSocket message from the server.

        Raises:
            RemoteProtocolError: ``bad_frame``, the message is not a frame of this protocol
                (nothing changed; the caller may log it and go on).
        """
        try:
            frame = decode_server_frame(data)
        except msgspec.DecodeError as exc:
            raise RemoteProtocolError("bad_frame", f"undecodable server frame: {exc}") from None
        self.receive_frame(frame, now)

    def receive_frame(self, frame: ServerFrame, now: float) -> None:
        """Process one decoded server frame (see :meth:`receive_data`)."""
        if isinstance(frame, BroadcastFrame):
            self._advance(frame.serverSeq)
            if self._take(frame.msg, frame.serverSeq):
                self._emit(RoomChange(self._keys([frame.msg]), "remote"))
        elif isinstance(frame, AckFrame):
            self._receive_ack(frame)
        elif isinstance(frame, StateFrame):
            self._receive_state(frame, now)
        elif isinstance(frame, PresenceFrame):
            self._receive_presence(frame)
        elif isinstance(frame, PingFrame):
            self._send(HeartbeatFrame(client=self.client_id))
        elif isinstance(frame, RoomErrorFrame):
            self._receive_error(frame, now)
        elif isinstance(frame, SyncStatusFrame):
            self._receive_sync_status(frame, now)

    # -- local intents ----------------------------------------------------------------

    def edit(self, op: Op | Mapping[str, Any], now: float) -> Op:
        """Buffer one op and apply it optimistically (see :meth:`durasync.crdt.Replica.edit`).

        Raises:
            CRDTValidationError: malformed op (nothing changes).
        """
        applied = self.replica.edit(op, now * 1000.0)
        self._emit(RoomChange(frozenset({applied.key}), "local"))
        return applied

    def commit(self, now: float) -> Message | None:
        """Commit the edit buffer as one message into the outbox (sent when connected).

        Returns the message, or None if the buffer was empty.
        """
        msg = self.replica.commit(now * 1000.0)
        if msg is not None:
            self._queue(msg)
        return msg

    def undo(self, now: float) -> Message | None:
        """Undo our newest effective message; None if nothing.

        A non-empty edit buffer is committed first, as its own message, queued (and sent)
        before the undo, which then targets it.
        """
        self.commit(now)
        return self._meta(self.replica.undo(now * 1000.0))

    def redo(self, now: float) -> Message | None:
        """Redo our newest undone message; None if nothing is undone."""
        return self._meta(self.replica.redo(now * 1000.0))

    def send_presence(self, state: Any) -> None:
        """Set our presence state (``None`` clears it); announced again after reconnects."""
        self._my_presence = state
        self._send(PresenceUpdate(state))

    def send_check(self, request_id: str) -> None:
        """Ask for the server's graph checksum; answered by a :class:`CheckResult` with
        ``request_id``, asked again after reconnects and refusals until answered or
        :meth:`cancel_check`."""
        self._checks[request_id] = None
        self._send(SyncCheckFrame(requestId=request_id))

    def cancel_check(self, request_id: str) -> None:
        """Stop asking ``request_id`` (its answer, if one still comes, is ignored)."""
        self._checks.pop(request_id, None)
        self._timers.pop((_RECHECK, request_id), None)

    # -- frames -----------------------------------------------------------------------

    def _take(self, msg: Message, seq: int) -> bool:
        """Fold a confirmed message at ``seq`` (by serverSeq, or in Lamport order)."""
        if self.lamport:
            return self.replica.receive(msgspec.structs.replace(msg, serverSeq=None))
        return self.replica.receive(msg, seq)

    def _take_many(self, replica: Replica, msgs: list[Message]) -> None:
        if self.lamport:
            replica.receive_many([msgspec.structs.replace(m, serverSeq=None) for m in msgs])
        else:
            replica.receive_many(msgs, [m.serverSeq for m in msgs])

    def _receive_ack(self, frame: AckFrame) -> None:
        self._advance(frame.serverSeq)
        msg = self._outbox.pop(frame.msgId, None)
        acked = self.replica.ack(frame.msgId, None if self.lamport else frame.serverSeq)
        if not acked and msg is not None and not self.replica.has(msg.id):
            # Reloaded while it was in flight: the new replica does not hold it yet.
            self._take(msg, frame.serverSeq)
            self._emit(RoomChange(self._keys([msg]), "remote"))

    def _receive_state(self, frame: StateFrame, now: float) -> None:
        if frame.recovered and frame.epoch == self.epoch:
            msgs = frame.journal
            self._take_many(self.replica, msgs)
            if msgs:
                self._emit(RoomChange(self._keys(msgs), "remote"))
        else:
            self.lamport = frame.order == "lamport"
            self._reload(frame, now)
        self.server_seq = frame.serverSeq
        self.epoch = frame.epoch
        self.connected = True
        # docs/protocol.md "Join and resume": after a state, resend every unacked message.
        for msg in self._outbox.values():
            self._send(CrdtFrame(msg))
        if self._my_presence is not None:
            self._send(PresenceUpdate(self._my_presence))
        # A sync-check sent while offline, or lost with the connection it went out on, would
        # wait forever: ask again on the new connection (the answer reflects this state).
        for request in self._checks:
            self._send(SyncCheckFrame(requestId=request))

    def _reload(self, frame: StateFrame, now: float) -> None:
        old = self.replica
        # Uncommitted edits become a message, so the reload does not lose them.
        pending = old.commit(now * 1000.0)
        if pending is not None:
            self._outbox[pending.id] = pending
        before = set(old.graph.nodes)
        journal = frame.journal
        if frame.snapshot is not None:
            new = Replica(self.client_id, sequenced=True, snapshot=frame.snapshot)
        else:
            new = Replica(self.client_id, sequenced=True)
        self._take_many(new, journal)
        # Message ids are "<client>:<lt>": never reuse a Lamport time we already used.
        new.lt = max(new.lt, old.lt)
        own = max(old.clock.get(self.client_id, 0), new.clock.get(self.client_id, 0))
        new.clock[self.client_id] = own
        # Own messages the server already holds are confirmed by the state itself.
        for mid in [m for m in self._outbox if new.has(m)]:
            del self._outbox[mid]
        self.replica = new
        self.reloads += 1
        self._emit(RoomChange(frozenset(before | set(new.graph.nodes)), "reload"))

    def _receive_presence(self, frame: PresenceFrame) -> None:
        if frame.event == "sync":
            self.presence = dict(frame.members or {})
        elif frame.client is not None:
            if frame.event == "leave":
                self.presence.pop(frame.client, None)
            else:
                self.presence[frame.client] = frame.state
        self._emit(PresenceEvent(frame.event, frame.client, frame.state, dict(self.presence)))

    def _receive_error(self, frame: RoomErrorFrame, now: float) -> None:
        mid = frame.msgId
        if mid is None and frame.code == "RATE_LIMITED":
            # Any frame may be refused over the server's frame budget; a refused sync-check
            # would leave its check waiting: ask the pending ones again after the pause.
            for request in self._checks:
                self._later(_RECHECK, request, now)
        if mid is not None and mid in self._outbox:
            if frame.code == "RATE_LIMITED":
                self._later(_RESEND, mid, now)
            else:
                msg = self._outbox.pop(mid)
                self.replica.reject(mid)
                self._emit(RoomChange(self._keys([msg]), "rejected"))
        self._emit(RoomError(frame.code, frame.error, mid))

    def _receive_sync_status(self, frame: SyncStatusFrame, now: float) -> None:
        request = str(frame.requestId)
        if request not in self._checks:
            return
        if frame.status is None:
            # Not computed now (the server's per-connection answer budget): ask again.
            self._later(_RECHECK, request, now)
            return
        del self._checks[request]
        self._timers.pop((_RECHECK, request), None)
        matches = frame.serverSeq == self.server_seq and frame.status == self.replica.checksum(
            live=True
        )
        self._emit(CheckResult(request, frame.status, frame.serverSeq, matches))

    # -- internals --------------------------------------------------------------------

    def _advance(self, seq: int) -> None:
        # Acks of resends carry their original (older) seq: never move backwards.
        if self.server_seq is None or seq > self.server_seq:
            self.server_seq = seq

    def _meta(self, msg: Message | None) -> Message | None:
        if msg is not None:
            self._queue(msg)
            self._emit(RoomChange(self._keys([msg]), "local"))
        return msg

    def _queue(self, msg: Message) -> None:
        self._outbox[msg.id] = msg
        self._send(CrdtFrame(msg))

    def _send(self, frame: ClientFrame) -> None:
        # Not connected: dropped here on purpose; what matters is sent after the next state.
        if not self.connected:
            return
        data = encode_frame(frame, self.fmt)
        self._out.append(data.decode() if self.fmt == "json" else data)

    def _later(self, kind: str, ident: str, now: float) -> None:
        """Do ``kind`` for ``ident`` after :attr:`retry_delay` (one pending retry per item)."""
        self._timers.setdefault((kind, ident), now + self.retry_delay)

    def _emit(self, event: ClientRoomEvent) -> None:
        self._events.append(event)

    def _keys(self, msgs: list[Message]) -> frozenset[str]:
        keys: set[str] = set()
        targets: set[str] = set()
        for m in msgs:
            for op in m.ops:
                if op.ot in META_OTYPES:
                    if isinstance(op.targetMsgId, str):
                        targets.add(op.targetMsgId)
                else:
                    keys.add(op.key)
        if targets:
            # Undo/redo: the keys of the messages they flip.
            for m in [*self.replica.messages, *self.replica.unacked()]:
                if m.id in targets:
                    keys.update(o.key for o in m.ops if o.ot not in META_OTYPES)
        return frozenset(keys)
