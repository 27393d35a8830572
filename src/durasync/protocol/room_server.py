"""Server side of one room connection, sans-I/O: what a member's frames make the server do.

Theory of operation (docs/protocol.md). A WebSocket connection to ``/v1/rooms/{room}`` goes
through two stages, each a pure step the I/O shell (:mod:`durasync.rooms.service`) drives:

1. **Join.** :func:`parse_join` reads the URL (room name, ``client``, ``format``,
   ``since``/``epoch``) into a :class:`JoinRequest` or refuses it with
   :class:`JoinRefused` (close 4400). The shell authenticates, loads the room (creating a
   missing room needs write access: :meth:`JoinRequest.missing_room` otherwise), catches up
   first when :meth:`JoinRequest.needs_catch_up` says the client's position is ahead of this
   node's view, checks capacity (:meth:`JoinRequest.check_capacity`) and opens a
   :class:`ServerRoomSession`.
2. **Frames.** Every WebSocket message goes to :meth:`ServerRoomSession.receive_data` with
   the time. The session decodes it, meters it (one token per frame of any kind, whether it
   decodes or not: :class:`~durasync.protocol.room_rules.RateLimiter`), applies the rules (the
   write permission, the id namespace, the counter ceiling, the presence size limit, the
   answer budget for ``sync``/``sync-check``) and says what to do: frames for this member in
   :meth:`~ServerRoomSession.data_to_send` (``error``, ``sync-status``), and requests to the
   room in :meth:`~ServerRoomSession.events_received`: :class:`Active` (presence activity),
   :class:`Commit` (a message to sequence), :class:`PresenceSet`, :class:`StateWanted` (a
   ``state`` answer, after a catch-up if asked) and :class:`Close` (with its close code).

The room's state that the rules need (the epoch, the last serverSeq, the highest counter, the
checksum cache, whether the room failed) is read through :class:`RoomView`; the session never
changes the room. Everything the room does (sequencing, journaling, acks, broadcasts, presence
fan-out) stays in the shell.

Caller obligations, after each ``receive_*``/``send_*``: write every frame of
:meth:`~ServerRoomSession.data_to_send` to this member, in order, then act on every event of
:meth:`~ServerRoomSession.events_received`, in order; after sending a ``state`` that answered
a :class:`StateWanted` with ``charge=True``, call :meth:`~ServerRoomSession.charge_answer`
with its size. After a :class:`Close`, close the connection with its code; the session
ignores anything received afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import parse_qs

import msgspec

from durasync.crdt.messages import DEFAULT_LIMITS, Limits, Message
from durasync.protocol.closecodes import CloseCode
from durasync.protocol.errors import FrameError, JoinRefused
from durasync.protocol.room_frames import (
    ClientFrame,
    CrdtFrame,
    Format,
    PresenceUpdate,
    RoomErrorFrame,
    SyncCheckFrame,
    SyncFrame,
    SyncStatusFrame,
    decode_client_frame,
    encode_frame,
)
from durasync.protocol.room_rules import (
    ByteBudget,
    RateLimiter,
    client_problem,
    counter_problem,
    namespace_problem,
    room_name_problem,
)

__all__ = [
    "ROOM_FAILED",
    "Active",
    "Close",
    "Commit",
    "JoinRefused",
    "JoinRequest",
    "PresenceSet",
    "RoomRules",
    "RoomView",
    "ServerRoomEvent",
    "ServerRoomSession",
    "StateWanted",
    "needs_catch_up",
    "parse_join",
]

_msgpack: Final = msgspec.msgpack.Encoder()


@dataclass(frozen=True, slots=True)
class RoomRules:
    """What one connection may send and ask for (docs/protocol.md "Rate budget", "Limits").

    Attributes:
        max_frame_bytes: largest client frame (``FRAME_TOO_LARGE`` beyond).
        limits: CRDT validation bounds (ops per message, value size, depth).
        rate_per_second: client frames per second, of every type...
        rate_burst: ...with bursts up to this many (``RATE_LIMITED`` beyond).
        answer_bytes_per_second: bytes per second of work done on request (``state`` frames
            answering ``sync``, canonical JSON built for ``sync-check``)...
        answer_bytes_burst: ...with bursts up to this many.
        max_counter_step: how far a message's counters may exceed the room's highest.
        max_presence_bytes: largest presence state (msgpack-encoded).
    """

    max_frame_bytes: int = 1 << 20
    limits: Limits = DEFAULT_LIMITS
    rate_per_second: float = 1_000.0
    rate_burst: float = 2_000.0
    answer_bytes_per_second: float = float(1 << 20)
    answer_bytes_burst: float = float(8 << 20)
    max_counter_step: int = 1 << 24
    max_presence_bytes: int = 16 << 10


class RoomView(Protocol):
    """What a session reads from its room (the rooms layer's ``Room`` is one)."""

    @property
    def failed(self) -> bool:
        """The room failed (store error): its members must reconnect."""

    @property
    def epoch(self) -> str:
        """The incarnation of the room's journal (docs/protocol.md "Join and resume")."""

    @property
    def last_seq(self) -> int:
        """The last serverSeq in this node's view of the room."""

    @property
    def counter_high(self) -> int:
        """The highest Lamport-like counter of every message sequenced so far."""

    def sync_status(self, *, compute: bool) -> tuple[str | None, int, int]:
        """``(checksum, serverSeq, cost)`` of the live graph at ``serverSeq``.

        A cached checksum of the current serverSeq is returned at no cost; otherwise, with
        ``compute``, it is computed (and cached) and ``cost`` is the size of the canonical JSON
        built; without, the checksum is None. Never changes the graph.
        """


# ----------------------------------------------------------------------------- events


# Events are msgspec Structs: one or two are made per client frame, and a frozen Struct is
# about four times cheaper to create than a frozen dataclass.


class Active(msgspec.Struct, frozen=True, gc=False):
    """The member sent a frame that passed the frame budget: it is present (presence touch)."""


class Commit(msgspec.Struct, frozen=True):
    """Sequence ``msg`` (validated, within the member's namespace and the counter ceiling):
    the room journals it, then acks it to this member and broadcasts it to the others."""

    msg: Message


class PresenceSet(msgspec.Struct, frozen=True):
    """Set this member's presence state (``None`` clears it) and tell the others."""

    state: Any


class StateWanted(msgspec.Struct, frozen=True, gc=False):
    """Send this member a ``state`` frame for ``since``/``epoch`` (docs/protocol.md "Join and
    resume"); ``catch_up`` first when the position is ahead of this node's view. ``charge``:
    report the frame's size with :meth:`ServerRoomSession.charge_answer`."""

    since: int | None
    epoch: str | None
    catch_up: bool
    charge: bool = True


class Close(msgspec.Struct, frozen=True, gc=False):
    """Close the connection with ``code`` (a :class:`CloseCode`) and ``reason``."""

    code: CloseCode
    reason: str


ServerRoomEvent = Active | Commit | PresenceSet | StateWanted | Close

_ACTIVE: Final = Active()
ROOM_FAILED: Final = Close(CloseCode.ROOM_FAILED, "room failed: reconnect")
"""The close of a member whose room failed (store error): reconnect after backoff."""


# ----------------------------------------------------------------------------- join


def needs_catch_up(since: int | None, epoch: str | None, room: RoomView) -> bool:
    """Whether a position ``since``/``epoch`` is ahead of this node's view of the room.

    A client that failed over from another node may hold a position this node has not read
    yet; the node reads the journal to its tail first, so that the resume is exact
    (``recovered: true``) instead of a needless full state (docs/protocol.md "Several nodes").
    """
    return since is not None and since > room.last_seq and epoch == room.epoch


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A join as the URL asks for it (:func:`parse_join`)."""

    room: str
    client: str
    fmt: Format
    since: int | None = None
    epoch: str | None = None

    def needs_catch_up(self, room: RoomView) -> bool:
        """See :func:`needs_catch_up`."""
        return needs_catch_up(self.since, self.epoch, room)

    def missing_room(self) -> JoinRefused:
        """The refusal of a member without write access joining a room that does not exist:
        joining creates a missing room, which needs write access."""
        return JoinRefused(
            CloseCode.FORBIDDEN,
            f"room {self.room} does not exist (creating it needs write access)",
        )

    def check_capacity(self, members: int, *, replacing: bool, max_members: int) -> None:
        """Admit the join into a room with ``members`` connections on this node.

        A connection replacing one of the same client does not grow the room (DESIGN.md
        invariant 6: bounded memory per room).

        Raises:
            JoinRefused: 4429, the room is full.
        """
        if members >= max_members and not replacing:
            raise JoinRefused(CloseCode.ROOM_FULL, "room full")


def parse_join(room: str, query: str | bytes | Mapping[str, str]) -> JoinRequest:
    """Read the join URL ``/v1/rooms/{room}?client=..[&since=..&epoch=..][&format=..]``.

    ``query`` is the raw query string (as in the ASGI scope) or its parsed parameters.

    Raises:
        JoinRefused: 4400 (:attr:`CloseCode.BAD_REQUEST`) naming the first problem: the room
            name, ``client``, ``format`` or ``since``.
    """
    if isinstance(query, Mapping):
        params = dict(query)
    else:
        text = query.decode("latin-1") if isinstance(query, bytes) else query
        params = {k: v[0] for k, v in parse_qs(text).items() if v}
    client = params.get("client") or ""
    fmt = params.get("format") or "msgpack"
    problem = room_name_problem(room) or client_problem(client)
    if problem is None and fmt not in ("msgpack", "json"):
        problem = "format must be msgpack or json"
    since: int | None = None
    since_text = params.get("since")
    if problem is None and since_text is not None:
        try:
            since = int(since_text)
        except ValueError:
            problem = "since must be an integer serverSeq"
    if problem is not None:
        raise JoinRefused(CloseCode.BAD_REQUEST, problem)
    return JoinRequest(
        room=room,
        client=client,
        fmt="json" if fmt == "json" else "msgpack",
        since=since,
        epoch=params.get("epoch"),
    )


# ----------------------------------------------------------------------------- frames


class ServerRoomSession:
    """One member's connection to a room, server side (module docstring).

    Args:
        join: the member's join (client id, format).
        room: the room, read-only.
        can_write: whether the member may write (``crdt`` frames); without it they get
            ``error`` ``FORBIDDEN`` and the connection stays usable.
        rules: the member's budgets and limits.
        now: the time the connection opened (seconds of the clock later ``now`` values use).
    """

    __slots__ = (
        "_events",
        "_out",
        "answers",
        "can_write",
        "client",
        "closed",
        "fmt",
        "join",
        "limiter",
        "on_error",
        "room",
        "rules",
    )

    def __init__(
        self,
        join: JoinRequest,
        room: RoomView,
        *,
        can_write: bool,
        rules: RoomRules,
        now: float,
    ) -> None:
        self.join = join
        self.client = join.client
        """The member's session id (``client=``)."""
        self.fmt: Format = join.fmt
        """The member's frame format."""
        self.room = room
        self.can_write = can_write
        self.rules = rules
        self.closed = False
        """True once a :class:`Close` was emitted: the session ignores further input."""
        self.limiter = RateLimiter(rules.rate_per_second, rules.rate_burst, now)
        """One token per client frame of any type (docs/protocol.md "Rate budget")."""
        self.answers = ByteBudget(rules.answer_bytes_per_second, rules.answer_bytes_burst, now)
        """Bytes of work done on request (``sync`` states, ``sync-check`` checksums)."""
        self._out: list[bytes] = []
        self._events: list[ServerRoomEvent] = []
        self.on_error: Callable[[str], None] | None = None
        """Called with the code of every ``error`` frame queued (the shell counts them)."""

    # -- draining ---------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """Encoded frames for this member, in order (drained). JSON frames are text."""
        out, self._out = self._out, []
        return out

    def events_received(self) -> list[ServerRoomEvent]:
        """What the member's frames ask of the room, in order (drained)."""
        events, self._events = self._events, []
        return events

    # -- input ------------------------------------------------------------------------

    def receive_data(self, data: bytes | str, now: float) -> None:
        """Take one WebSocket message of the member.

        Every message takes one token from the frame budget, whether it decodes or not; one
        without a token is answered ``error`` ``RATE_LIMITED`` (with the ``msgId`` of a
        ``crdt`` frame that decodes) and otherwise ignored. A message that does not decode
        is answered with the decoder's ``error`` (``FRAME_TOO_LARGE``, ``MALFORMED_FRAME``,
        ``INVALID_MESSAGE``). Never raises for anything the member sends.
        """
        if self.closed:
            return
        try:
            frame = decode_client_frame(
                data, self.fmt, max_frame_bytes=self.rules.max_frame_bytes, limits=self.rules.limits
            )
        except FrameError as exc:
            if not self.limiter.allow(now):
                self.send_error(exc.msg_id, "RATE_LIMITED", "too many frames: slow down")
            else:
                self.send_error(exc.msg_id, exc.code, exc.message)
            return
        self.receive_frame(frame, now)

    def receive_frame(self, frame: ClientFrame, now: float) -> None:
        """Take one decoded frame of the member (see :meth:`receive_data`)."""
        if self.closed:
            return
        if self.room.failed:
            self._close(ROOM_FAILED)
            return
        if not self.limiter.allow(now):
            msg_id = frame.msg.id if isinstance(frame, CrdtFrame) else None
            self.send_error(msg_id, "RATE_LIMITED", "too many frames: slow down and resend")
            return
        self._events.append(_ACTIVE)
        if isinstance(frame, CrdtFrame):
            self._receive_crdt(frame.msg)
        elif isinstance(frame, PresenceUpdate):
            self._receive_presence(frame.state)
        elif isinstance(frame, SyncFrame):
            self._receive_sync(frame, now)
        elif isinstance(frame, SyncCheckFrame):
            self._receive_sync_check(frame, now)
        # HeartbeatFrame: being active is all a heartbeat does.

    def charge_answer(self, nbytes: int, now: float) -> None:
        """A ``state`` frame of ``nbytes`` answering a ``sync`` was sent: charge the answer
        budget (docs/protocol.md "Rate budget")."""
        self.answers.charge(nbytes, now)

    # -- output intents ---------------------------------------------------------------

    def send_error(self, msg_id: str | None, code: str, error: str) -> None:
        """Queue an ``error`` frame (the connection stays usable). ``code`` is one of
        docs/protocol.md's error codes; the shell uses ``INTERNAL_ERROR`` for its own bugs."""
        if self.on_error is not None:
            self.on_error(code)
        self._out.append(
            encode_frame(RoomErrorFrame(msgId=msg_id, error=error, code=code), self.fmt)
        )

    # -- rules ------------------------------------------------------------------------

    def _receive_crdt(self, msg: Message) -> None:
        refused: tuple[str, str] | None
        if not self.can_write:
            refused = "FORBIDDEN", f"read-only access to room/{self.join.room}"
        else:
            refused = namespace_problem(msg, self.client)
            if refused is None:
                climb = counter_problem(msg, self.room.counter_high, self.rules.max_counter_step)
                if climb is not None:
                    refused = "INVALID_MESSAGE", climb
        if refused is not None:
            self.send_error(msg.id, *refused)
            return
        self._events.append(Commit(msg))

    def _receive_presence(self, state: Any) -> None:
        limit = self.rules.max_presence_bytes
        if len(_msgpack.encode(state)) > limit:
            self.send_error(None, "PRESENCE_TOO_LARGE", f"presence state over {limit} bytes")
            return
        self._events.append(PresenceSet(state))

    def _receive_sync(self, frame: SyncFrame, now: float) -> None:
        if not self.answers.available(now):
            self.send_error(None, "RATE_LIMITED", "state answers over budget: retry later")
            return
        catch_up = needs_catch_up(frame.since, frame.epoch, self.room)
        self._events.append(StateWanted(frame.since, frame.epoch, catch_up))

    def _receive_sync_check(self, frame: SyncCheckFrame, now: float) -> None:
        # The checksum is computed at most once per serverSeq per room, whoever asks; a
        # member whose answer budget is spent gets ``status: null`` unless it is cached.
        status, seq, cost = self.room.sync_status(compute=self.answers.available(now))
        if cost:
            self.answers.charge(cost, now)
        frame_out = SyncStatusFrame(requestId=frame.requestId, status=status, serverSeq=seq)
        self._out.append(encode_frame(frame_out, self.fmt))

    def _close(self, close: Close) -> None:
        self.closed = True
        self._events.append(close)
