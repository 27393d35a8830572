"""Stateful reconnect: the reliable session core (sans-I/O), after SignalR's.

Theory of operation (peers.md §5.1; frames in :mod:`durasync.protocol.frames`).

A *session* outlives connections. Each side numbers the messages it sends
(1, 2, 3... never reset while the session lives) and keeps each one in a
bounded *replay buffer* until the peer acknowledges it. Receivers deliver a
message only if its seq is exactly ``last_received + 1``; a seq at or below
``last_received`` is a duplicate (expected after a replay) and is dropped; a
seq above ``last_received + 1`` means the transport lost or reordered a
message, which an ordered WebSocket cannot do, so it is a protocol violation.

Acks are coalesced: the receiver sends ``ack(last_received)`` after
``ack_every`` new messages or ``ack_interval`` seconds after the first
unacknowledged one, whichever comes first. An ack frees every buffered
message with seq <= ack.seq.

After a reconnect the client sends ``hello(session, last_seen)``, the server
answers ``welcome(session, last_seen, resumed)``, and each side treats the
other's ``last_seen`` as an ack and replays, in order, every buffered
message above it. Duplicates are dropped by the receiver rule above: no
loss, no duplicates, order kept. If the server no longer has the session
(restart, expiry) it answers ``resumed: false``: the client starts a new
session, renumbers its still-unacknowledged messages from 1 and sends them
again (they may have been processed by the lost session: at-least-once for
those only), and reports :class:`SessionOpened` with ``resumed=False`` so
the application knows that server->client messages may be missing.

Nothing here reads a clock: ``now`` is an argument; :meth:`next_deadline`
tells the I/O shell when to call :meth:`tick`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from durasync.protocol.buffer import Payload, payload_size
from durasync.protocol.errors import (
    BufferFull,
    LocalProtocolError,
    RegistryFull,
    RemoteProtocolError,
)
from durasync.protocol.frames import (
    PROTOCOL_VERSION,
    Ack,
    Bye,
    ErrorFrame,
    Frame,
    FrameCodec,
    Hello,
    Msg,
    Ping,
    Pong,
    Welcome,
)

__all__ = [
    "MessageReceived",
    "PeerClosed",
    "PeerError",
    "RegistryFull",
    "ReliableSession",
    "Role",
    "SessionEvent",
    "SessionLimits",
    "SessionOpened",
    "SessionRegistry",
]


class Role(enum.Enum):
    """Which end of the session this core plays."""

    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Bounds and ack coalescing of a session.

    Attributes:
        max_unacked_messages: replay-buffer bound in messages.
        max_unacked_bytes: replay-buffer bound in payload bytes (SignalR's
            default is 100 000 bytes).
        ack_every: send an ack after this many new messages...
        ack_interval: ...or this many seconds after the first unacked one.
    """

    max_unacked_messages: int = 1000
    max_unacked_bytes: int = 1 << 20
    ack_every: int = 16
    ack_interval: float = 0.5

    def __post_init__(self) -> None:
        if self.max_unacked_messages < 1 or self.max_unacked_bytes < 1 or self.ack_every < 1:
            raise ValueError("limits must be >= 1")
        if self.ack_interval <= 0:
            raise ValueError("ack_interval must be > 0")


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A message delivered exactly once, in order."""

    payload: Payload
    seq: int


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """A connection attached to the session.

    ``resumed`` False on a new session; ``replayed`` is how many of our
    messages were sent again on this connection; ``previous_session`` is the
    id of a session the server lost (client side; None otherwise).
    """

    session_id: str
    resumed: bool
    replayed: int
    previous_session: str | None = None


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer ended the session with ``bye``; no resume will follow."""


@dataclass(frozen=True, slots=True)
class PeerError:
    """The peer sent an ``error`` frame."""

    code: str
    message: str
    permanent: bool


SessionEvent = MessageReceived | SessionOpened | PeerClosed | PeerError


@dataclass(slots=True)
class _Sent:
    seq: int
    payload: Payload
    size: int


class ReliableSession:
    """One end of a reliable session.

    Caller obligations (websockets' sans-I/O contract): after each
    ``receive_data``/``send_*``/``tick``/``connection_made``, call
    :meth:`data_to_send` and write every item, in order, as one WebSocket
    message each; call :meth:`events_received` and process the events; call
    :meth:`tick` no later than :meth:`next_deadline`; call
    :meth:`connection_lost` when the transport ends.
    """

    def __init__(
        self,
        role: Role,
        *,
        codec: FrameCodec | None = None,
        limits: SessionLimits | None = None,
        session_id: str | None = None,
    ) -> None:
        self.role = role
        self.codec = codec or FrameCodec()
        self.limits = limits or SessionLimits()
        self.session_id = session_id
        """Server-assigned id; None on a client before its first welcome."""
        self.attached = False
        """True while a connection is attached and the handshake completed."""
        self.generation = 0
        """Incremented on every attach; lets a shell notice it was superseded."""
        self.closed = False
        """True once either side sent ``bye``: the session is over."""
        self.last_sent = 0
        """Highest seq we assigned."""
        self.last_received = 0
        """Highest seq received in order (and delivered)."""
        self.duplicates_dropped = 0
        """Messages dropped because they were already delivered (diagnostic)."""
        self._unacked: deque[_Sent] = deque()
        self._unacked_bytes = 0
        self._pending_ack = 0
        self._pending_since = 0.0
        self._hello_sent = False
        self._out: list[str | bytes] = []
        self._events: list[SessionEvent] = []

    # -- draining ---------------------------------------------------------

    def data_to_send(self) -> list[str | bytes]:
        """Encoded frames to write, in order (drained)."""
        out, self._out = self._out, []
        return out

    def events_received(self) -> list[SessionEvent]:
        """Events since the last call (drained)."""
        ev, self._events = self._events, []
        return ev

    # -- outgoing ---------------------------------------------------------

    @property
    def unacked(self) -> int:
        """Messages in the replay buffer (sent or waiting, not yet acknowledged)."""
        return len(self._unacked)

    @property
    def unacked_bytes(self) -> int:
        """Payload bytes in the replay buffer."""
        return self._unacked_bytes

    def unacked_payloads(self) -> list[Payload]:
        """Copies of the unacknowledged messages, oldest first (diagnostics, close)."""
        return [it.payload for it in self._unacked]

    def has_room(self, payload: Payload) -> bool:
        """True if :meth:`send_message` would accept ``payload`` now."""
        return (
            len(self._unacked) < self.limits.max_unacked_messages
            and self._unacked_bytes + payload_size(payload) <= self.limits.max_unacked_bytes
        )

    def send_message(self, payload: Payload) -> int:
        """Number ``payload``, keep it until acked, and send it if attached.

        Returns:
            The assigned sequence number.

        Raises:
            BufferFull: the replay buffer is full (backpressure: retry after
                acks arrive); nothing changed.
            LocalProtocolError: the session is closed.
        """
        if self.closed:
            raise LocalProtocolError("session is closed")
        if not self.has_room(payload):
            big = payload_size(payload) > self.limits.max_unacked_bytes
            raise BufferFull("too_large" if big else "replay")
        self.last_sent += 1
        item = _Sent(self.last_sent, payload, payload_size(payload))
        self._unacked.append(item)
        self._unacked_bytes += item.size
        if self.attached:
            self._out.append(self._encode_msg(item))
        return item.seq

    def send_bye(self) -> None:
        """End the session for good (graceful close). Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.attached:
            self._emit(Bye())

    def send_error(self, code: str, message: str, *, permanent: bool = True) -> None:
        """Queue an ``error`` frame (the shell closes the connection afterwards)."""
        self._emit(ErrorFrame(code=code, message=message, permanent=permanent))

    # -- connection lifecycle -------------------------------------------------

    def connection_made(self) -> None:
        """Client: a new transport is open; queue ``hello``.

        Raises:
            LocalProtocolError: called on a server session or a closed one.
        """
        if self.role is not Role.CLIENT or self.closed:
            raise LocalProtocolError("connection_made is for open client sessions")
        self.attached = False
        self._out.clear()
        self._emit(Hello(session=self.session_id, last_seen=self.last_received))
        self._hello_sent = True

    def accept_hello(self, hello: Hello, *, resumed: bool) -> None:
        """Server: attach a connection whose first frame was ``hello``.

        The registry decided ``resumed`` (True only if ``hello.session`` is
        this session). Queues ``welcome`` and then the replay.

        Raises:
            RemoteProtocolError: ``hello.last_seen`` acknowledges messages we
                never sent (``ack_from_future``).
        """
        if self.role is not Role.SERVER or self.session_id is None:
            raise LocalProtocolError("accept_hello is for server sessions with an id")
        self._detach()
        peer_last_seen = hello.last_seen if resumed else 0
        self._check_ack(peer_last_seen)
        self._emit(Welcome(session=self.session_id, last_seen=self.last_received, resumed=resumed))
        replayed = self._attach(peer_last_seen)
        self._events.append(SessionOpened(self.session_id, resumed, replayed))

    def connection_lost(self) -> None:
        """The transport ended: stop sending; keep everything needed to resume."""
        self._detach()

    # -- incoming -----------------------------------------------------------

    def receive_data(self, data: str | bytes, now: float) -> None:
        """Process one WebSocket message.

        Raises:
            RemoteProtocolError: malformed frame, frame not valid now, seq gap,
                ack from the future. The connection must be closed (code 1002)
                and not retried.
        """
        frame = self.codec.decode(data)
        self.receive_frame(frame, now)

    def receive_frame(self, frame: Frame, now: float) -> None:
        """Process one decoded frame (see :meth:`receive_data`)."""
        if isinstance(frame, ErrorFrame):
            self._events.append(PeerError(frame.code, frame.message, frame.permanent))
            return
        if self.role is Role.CLIENT and not self.attached:
            if isinstance(frame, Welcome) and self._hello_sent:
                self._receive_welcome(frame)
                return
            raise RemoteProtocolError("unexpected_frame", f"{type(frame).__name__} before welcome")
        if not self.attached:
            raise LocalProtocolError("server session received data while detached")
        if isinstance(frame, Msg):
            self._receive_msg(frame, now)
        elif isinstance(frame, Ack):
            self._check_ack(frame.seq)
            self._release(frame.seq)
        elif isinstance(frame, Bye):
            self.closed = True
            self._events.append(PeerClosed())
        elif isinstance(frame, Ping):
            self._emit(Pong(id=frame.id))
        elif isinstance(frame, Pong):
            pass  # liveness only: the shell saw a frame arrive
        else:
            raise RemoteProtocolError("unexpected_frame", f"{type(frame).__name__} mid-session")

    # -- timers ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must run next (a pending coalesced ack), or None."""
        if self._pending_ack and self.attached:
            return self._pending_since + self.limits.ack_interval
        return None

    def tick(self, now: float) -> None:
        """Fire due timers: send the coalesced ack if ``ack_interval`` elapsed."""
        if (
            self._pending_ack
            and self.attached
            and now >= self._pending_since + self.limits.ack_interval
        ):
            self._send_ack()

    # -- internals ------------------------------------------------------------

    def _emit(self, frame: Frame) -> None:
        self._out.append(self.codec.encode(frame))

    def _encode_msg(self, item: _Sent) -> str | bytes:
        p = item.payload
        frame = Msg(seq=item.seq, text=p) if isinstance(p, str) else Msg(seq=item.seq, data=p)
        return self.codec.encode(frame)

    def _detach(self) -> None:
        self.attached = False
        self._hello_sent = False
        self._out.clear()
        # The next handshake carries last_seen, which acknowledges everything.
        self._pending_ack = 0

    def _attach(self, peer_last_seen: int) -> int:
        self._release(peer_last_seen)
        self.attached = True
        self.generation += 1
        for item in self._unacked:
            self._out.append(self._encode_msg(item))
        if self.closed:
            self._emit(Bye())
        return len(self._unacked)

    def _check_ack(self, seq: int) -> None:
        if seq > self.last_sent:
            raise RemoteProtocolError(
                "ack_from_future", f"peer acknowledged {seq} but we sent only {self.last_sent}"
            )

    def _release(self, seq: int) -> None:
        while self._unacked and self._unacked[0].seq <= seq:
            self._unacked_bytes -= self._unacked.popleft().size

    def _receive_welcome(self, w: Welcome) -> None:
        previous = self.session_id
        if w.resumed:
            if previous is None or w.session != previous:
                raise RemoteProtocolError(
                    "bad_resume", "welcome resumed a session we did not ask for"
                )
            self._check_ack(w.last_seen)
            replayed = self._attach(w.last_seen)
            self._events.append(SessionOpened(w.session, True, replayed))
            return
        # New session: the server lost ours (or this is the first connection).
        # Renumber what the old session never acknowledged and send it again.
        self.session_id = w.session
        self.last_received = 0
        pending = [it.payload for it in self._unacked]
        self._unacked.clear()
        self._unacked_bytes = 0
        self.last_sent = 0
        for p in pending:
            self.last_sent += 1
            self._unacked.append(_Sent(self.last_sent, p, payload_size(p)))
            self._unacked_bytes += payload_size(p)
        replayed = self._attach(0)
        lost = previous if previous is not None and previous != w.session else None
        self._events.append(SessionOpened(w.session, False, replayed, lost))

    def _receive_msg(self, m: Msg, now: float) -> None:
        if m.seq <= self.last_received:
            self.duplicates_dropped += 1
            return
        if m.seq != self.last_received + 1:
            raise RemoteProtocolError(
                "seq_gap", f"expected seq {self.last_received + 1}, got {m.seq}"
            )
        self.last_received = m.seq
        payload: Payload = m.text if m.text is not None else (m.data or b"")
        self._events.append(MessageReceived(payload, m.seq))
        if self._pending_ack == 0:
            self._pending_since = now
        self._pending_ack += 1
        if self._pending_ack >= self.limits.ack_every:
            self._send_ack()

    def _send_ack(self) -> None:
        self._emit(Ack(seq=self.last_received))
        self._pending_ack = 0


@dataclass(slots=True)
class _Slot:
    session: ReliableSession
    detached_at: float | None


class SessionRegistry:
    """Server side: the sessions a node keeps for resumption (sans-I/O, bounded).

    A session lives while attached and for ``resume_ttl`` seconds after its
    connection ends; then it is forgotten and a late ``hello`` gets a new
    session (``resumed: false``). At most ``max_sessions`` are kept; when
    full, the longest-detached session is evicted, and if all are attached
    :meth:`open` raises :class:`RegistryFull`.
    """

    def __init__(
        self,
        *,
        new_id: Callable[[], str],
        codec: FrameCodec | None = None,
        limits: SessionLimits | None = None,
        max_sessions: int = 10_000,
        resume_ttl: float = 60.0,
    ) -> None:
        if max_sessions < 1 or resume_ttl < 0:
            raise ValueError("max_sessions >= 1 and resume_ttl >= 0 required")
        self._new_id = new_id
        self.codec = codec or FrameCodec()
        self.limits = limits or SessionLimits()
        self.max_sessions = max_sessions
        self.resume_ttl = resume_ttl
        self._slots: dict[str, _Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, session_id: str) -> ReliableSession | None:
        """The live session with this id, if any."""
        slot = self._slots.get(session_id)
        return slot.session if slot else None

    def sessions(self) -> list[ReliableSession]:
        """All sessions kept (attached or awaiting resume)."""
        return [s.session for s in self._slots.values()]

    def open(self, first_message: str | bytes, now: float) -> ReliableSession:
        """Handle a connection's first message, which must be ``hello``.

        Resumes the named session if it is still kept, otherwise creates a
        new one. The returned session is attached with ``welcome`` and the
        replay queued in its :meth:`~ReliableSession.data_to_send`.

        Raises:
            RemoteProtocolError: not a valid ``hello`` (or unsupported version).
            RegistryFull: no room for a new session.
        """
        self.expire(now)
        frame = self.codec.decode(first_message)
        if not isinstance(frame, Hello):
            raise RemoteProtocolError("unexpected_frame", "first frame must be hello")
        if frame.v != PROTOCOL_VERSION:
            raise RemoteProtocolError("unsupported_version", f"version {frame.v}")
        slot = self._slots.get(frame.session) if frame.session else None
        if slot is not None and not slot.session.closed:
            slot.detached_at = None
            slot.session.accept_hello(frame, resumed=True)
            return slot.session
        if len(self._slots) >= self.max_sessions:
            self._evict_one()
        sid = self._new_id()
        session = ReliableSession(Role.SERVER, codec=self.codec, limits=self.limits, session_id=sid)
        self._slots[sid] = _Slot(session, None)
        session.accept_hello(frame, resumed=False)
        return session

    def detach(self, session: ReliableSession, now: float) -> None:
        """A connection of ``session`` ended; keep it for ``resume_ttl`` (or drop if closed)."""
        if session.session_id is None:
            return
        slot = self._slots.get(session.session_id)
        if slot is None or slot.session is not session:
            return
        session.connection_lost()
        if session.closed:
            del self._slots[session.session_id]
        else:
            slot.detached_at = now

    def discard(self, session: ReliableSession) -> None:
        """Forget ``session`` now (slow consumer, protocol violation)."""
        if session.session_id is not None:
            slot = self._slots.get(session.session_id)
            if slot is not None and slot.session is session:
                del self._slots[session.session_id]

    def expire(self, now: float) -> list[str]:
        """Forget sessions detached for ``resume_ttl`` or more; return their ids."""
        gone = [
            sid
            for sid, slot in self._slots.items()
            if slot.detached_at is not None and now - slot.detached_at >= self.resume_ttl
        ]
        for sid in gone:
            del self._slots[sid]
        return gone

    def _evict_one(self) -> None:
        detached = [
            (s.detached_at, sid) for sid, s in self._slots.items() if s.detached_at is not None
        ]
        if not detached:
            raise RegistryFull(f"{self.max_sessions} sessions attached")
        del self._slots[min(detached)[1]]
