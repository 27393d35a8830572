"""``DurableChannel``: a named channel that survives its peer connection being replaced.

A durable channel runs the reliable session of :mod:`durasync.protocol.session` over a WebRTC
data channel: every message gets a sequence number, the receiver acknowledges (coalesced),
the sender keeps what is unacknowledged and replays it on the next data channel, and the
receiver drops duplicates. So a message is delivered **exactly once and in order** across any
number of peer-connection replacements, as long as both ends keep the session (the host keeps a
detached session ``session_resume_ttl`` seconds). When the host lost the session (it
restarted), the channel reopens with ``open(resumed=False)``: our unacknowledged messages are
sent again (the lost host may have seen some: at-least-once for those), and messages the lost
host had sent us but we had not received are gone. Never a silent gap.

Sending. :meth:`DurableChannel.send` queues without waiting (the seed's semantics): while the
channel is detached, messages wait in a queue bounded by ``max_queue_size`` (1000),
``max_queue_bytes`` and ``max_message_age`` (60 s); beyond that the oldest are dropped and
``queue-overflow(dropped)`` says how many. :meth:`DurableChannel.write` waits for room instead
and never drops for count or size. Messages move from the queue into the session's replay
window (``session.max_unacked_messages``) while attached, and are written to the data channel
while its ``bufferedAmount`` is under ``high_water_mark``; ``buffered-amount-low`` fires when it
falls back under ``low_water_mark``.

Receiving. Acknowledgements mean *delivered to the application*: a received message is
acknowledged once a ``message`` callback ran for it or it was placed in the bounded inbox that
``async for`` / :meth:`DurableChannel.receive` read. A reader that stops reading stops the
acknowledgements and, through the sender's replay window, the sender (end-to-end backpressure).
Messages go to ``message`` callbacks when at least one is registered, else to the iterator.

States: ``connecting`` (no data channel, or handshake running), ``open``, ``closing``
(``close()`` waits for acknowledgements, bounded), ``closed`` (by ``close()``, by the
remote's, or after the remote broke the session protocol: ``error`` then ``close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from durasync.p2p.errors import ChannelClosedError
from durasync.p2p.events import (
    BufferedAmountLow,
    ChannelClosed,
    ChannelError,
    ChannelOpened,
    Emitter,
    Event,
    MessageEvent,
    QueueOverflow,
)
from durasync.p2p.options import ChannelOptions
from durasync.protocol import (
    BufferLimits,
    FrameCodec,
    LocalProtocolError,
    MessageReceived,
    OutgoingBuffer,
    Payload,
    PeerClosed,
    PeerError,
    ReliableSession,
    RemoteProtocolError,
    Role,
    SessionOpened,
)
from durasync.protocol.buffer import payload_size
from durasync.protocol.frames import Bye, Frame, Msg

__all__ = ["SESSION_PROTOCOL", "ChannelClosedError", "ChannelState", "DurableChannel"]

log = logging.getLogger("durasync.p2p")

#: The RTCDataChannel ``protocol`` of durable channels; frames are msgpack.
SESSION_PROTOCOL = "durasync-session/1"
_EVENTS = frozenset({"open", "message", "error", "close", "buffered-amount-low", "queue-overflow"})


class ChannelState(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class DurableChannel:
    """One durable channel (see module docs). Created by a connection or a service, not directly.

    Args:
        label: the channel's name (the data channel label).
        session: the reliable session (client role on the connecting side, server role on the
            host, where the service's registry owns it).
        options: bounds.
        on_closed: called once when the channel reaches ``closed`` (owner bookkeeping).
    """

    def __init__(
        self,
        label: str,
        session: ReliableSession,
        options: ChannelOptions | None = None,
        *,
        on_closed: Callable[[DurableChannel], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.options = options or ChannelOptions()
        self.session = session
        self._clock = clock
        self._on_closed = on_closed
        self._emitter = Emitter(_EVENTS)
        self._state = ChannelState.CONNECTING
        self._queue = OutgoingBuffer(
            BufferLimits(
                max_messages=self.options.max_queue_size,
                max_bytes=self.options.max_queue_bytes,
                max_age=self.options.max_message_age,
                policy="drop_oldest",
            )
        )
        self._link: Any = None
        self._out: deque[str | bytes] = deque()
        self._frames_in: deque[Frame] = deque()
        self._inbox: deque[Payload] = deque()
        self._wake = asyncio.Event()
        self._deliver_wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._above_high = False
        self._writer_deadline: float | None = None
        self._tasks: list[asyncio.Task[None]] = [
            asyncio.create_task(self._write_loop(), name=f"channel-{label}-writer"),
            asyncio.create_task(self._deliver_loop(), name=f"channel-{label}-deliver"),
        ]
        self.messages_dropped = 0
        """Messages dropped from the detached queue (count, bytes or age)."""

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> ChannelState:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is ChannelState.CLOSED

    @property
    def buffered_amount(self) -> int:
        """Bytes the current data channel has queued, plus frames we hold back for it."""
        link = self._link
        return (link.buffered_amount if link is not None else 0) + sum(len(f) for f in self._out)

    @property
    def queued(self) -> int:
        """Messages waiting to enter the session (not yet numbered)."""
        return len(self._queue)

    @property
    def unacked(self) -> int:
        """Messages numbered and sent (or waiting to be replayed), not yet acknowledged."""
        return self.session.unacked

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Register ``callback`` for ``open``, ``message(data)``, ``error(exc)``, ``close``,
        ``buffered-amount-low`` or ``queue-overflow(dropped)``; returns an unsubscribe function."""
        return self._emitter.on(event, callback)

    def events(self) -> AsyncIterator[Event]:
        """Every event from now on (see :class:`~durasync.p2p.events.Emitter`)."""
        return self._emitter.events()

    def send(self, data: Payload) -> None:
        """Queue ``data`` (str or bytes) without waiting (see module docs for the bounds).

        Raises:
            ChannelClosedError: the channel is closing or closed.
            TypeError: ``data`` is neither str nor bytes.
            BufferFull: ``data`` alone exceeds ``max_queue_bytes``.
        """
        self._check_sendable(data)
        self._queue.push(data, self._clock())
        self._report_overflow()
        self._wake.set()

    async def write(self, data: Payload) -> None:
        """Queue ``data``, first waiting while the queue is full (never drops for space).

        Raises:
            ChannelClosedError: the channel is (or became) closing or closed.
        """
        self._check_sendable(data)
        size = payload_size(data)
        while self._queue and (
            len(self._queue) >= self.options.max_queue_size
            or self._queue.bytes + size > self.options.max_queue_bytes
        ):
            await self._wait_change()
            self._check_sendable(data)
        self.send(data)

    async def receive(self) -> Payload:
        """The next message (when no ``message`` callback is registered).

        Raises:
            ChannelClosedError: the channel closed and every received message was read.
        """
        while not self._inbox:
            if self._state is ChannelState.CLOSED:
                raise ChannelClosedError(self.label)
            await self._wait_change()
        data = self._inbox.popleft()
        self._deliver_wake.set()
        return data

    def __aiter__(self) -> AsyncIterator[Payload]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Payload]:
        while True:
            try:
                yield await self.receive()
            except ChannelClosedError:
                return

    async def drained(self) -> None:
        """Wait until everything sent so far was acknowledged by the remote application."""
        while self._queue or self.session.unacked:
            if self._state is ChannelState.CLOSED:
                raise ChannelClosedError(f"{self.label}: closed with messages unacknowledged")
            await self._wait_change()

    async def close(self, grace: float = 5.0) -> None:
        """Close for good: wait up to ``grace`` s for acknowledgements, send ``bye``, stop.

        Messages still unacknowledged after the grace are lost (a ``queue-overflow`` event
        counts them). Idempotent.
        """
        if self._state in (ChannelState.CLOSING, ChannelState.CLOSED):
            return
        self._state = ChannelState.CLOSING
        self._notify()
        with contextlib.suppress(TimeoutError, ChannelClosedError):
            async with asyncio.timeout(grace):
                while self._queue or self.session.unacked:
                    if self._state is ChannelState.CLOSED:
                        break
                    await self._wait_change()
        left = len(self._queue) + self.session.unacked
        self._queue.clear()
        if left:
            self._emitter.emit(QueueOverflow(left))
        self.session.send_bye()
        self._flush()
        link = self._link
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                while link is not None and link.is_open and (self._out or link.buffered_amount):
                    await asyncio.sleep(0.01)
                    self._flush()
        self._finish()

    # ------------------------------------------------------------------ owner side

    def attach(self, link: Any, *, handshake_done: bool = False) -> None:
        """Use ``link`` (a :class:`~durasync.p2p.rtc.DataChannel`) from now on.

        Client role: the ``hello`` goes out when the link is open. Server role: the owner ran
        the registry handshake (``handshake_done``); ``welcome`` and the replay are queued.
        """
        if self._state is ChannelState.CLOSED:
            link.close()
            return
        self._drop_link(lose_session=not handshake_done)
        self._link = link
        link.on_message = self._on_raw
        link.on_close = lambda: self._on_link_closed(link)
        link.on_buffered_low = self._on_buffered_low
        link.set_low_threshold(self.options.low_water_mark)
        if handshake_done:
            self._handle_events()
        elif link.is_open:
            self._start_handshake()
        else:
            link.on_open = self._start_handshake

    def detach(self) -> None:
        """The data channel (or its peer connection) is gone: keep the session for a resume."""
        self._drop_link()
        if self._state is ChannelState.OPEN:
            self._state = ChannelState.CONNECTING
        self._notify()

    @property
    def attached_link(self) -> Any:
        """The data channel in use, or None."""
        return self._link

    # ------------------------------------------------------------------ internals

    def _check_sendable(self, data: Payload) -> None:
        if not isinstance(data, str | bytes):
            raise TypeError("data must be str or bytes")
        if self._state in (ChannelState.CLOSING, ChannelState.CLOSED):
            raise ChannelClosedError(f"channel {self.label!r} is {self._state.value}")

    def _notify(self) -> None:
        self._changed.set()
        self._wake.set()
        self._deliver_wake.set()

    async def _wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def _drop_link(self, *, lose_session: bool = True) -> None:
        link = self._link
        if link is None:
            return
        self._link = None
        link.on_message = _ignore
        link.on_close = _nothing
        link.on_open = _nothing
        link.on_buffered_low = _nothing
        self._out.clear()
        self._frames_in.clear()
        if lose_session and self.session.attached:
            self.session.connection_lost()

    def _start_handshake(self) -> None:
        if self._link is None or self.session.closed:
            return
        try:
            self.session.connection_made()
        except LocalProtocolError:
            return
        self._flush()

    def _on_link_closed(self, link: Any) -> None:
        if link is self._link:
            self.detach()

    def _on_buffered_low(self) -> None:
        if self._above_high:
            self._above_high = False
            self._emitter.emit(BufferedAmountLow())
        self._wake.set()

    def _on_raw(self, raw: str | bytes) -> None:
        try:
            frame = self.session.codec.decode(raw)
        except RemoteProtocolError as exc:
            self._violation(exc)
            return
        if isinstance(frame, Msg | Bye) and self.session.attached:
            if not self._frames_in and (
                self._emitter.has_handlers("message") or len(self._inbox) < self.options.inbox_size
            ):
                self._feed(frame)  # the common case: no hop through the delivery task
                return
            limit = 2 * self.options.session.max_unacked_messages + 16
            if len(self._frames_in) >= limit:
                self._violation(
                    RemoteProtocolError("inbox_overflow", "peer exceeded the replay window")
                )
                return
            self._frames_in.append(frame)
            self._deliver_wake.set()
            return
        self._feed(frame)

    def _feed(self, frame: Frame) -> None:
        try:
            self.session.receive_frame(frame, self._clock())
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self._violation(exc)
            return
        self._handle_events()

    def _handle_events(self) -> None:
        for ev in self.session.events_received():
            if isinstance(ev, MessageReceived):
                if self._emitter.has_handlers("message"):
                    self._emitter.emit(MessageEvent(ev.payload))
                else:
                    self._inbox.append(ev.payload)
                    self._changed.set()
            elif isinstance(ev, SessionOpened):
                self._opened(ev)
            elif isinstance(ev, PeerClosed):
                self._finish()
                return
            elif isinstance(ev, PeerError):
                self._emitter.emit(ChannelError(RuntimeError(f"{ev.code}: {ev.message}")))
        # An ack may have freed the replay window (writers, drained()); an ack of ours may
        # be due now (written at once) or later (the writer's timer).
        self._changed.set()
        self._flush()
        deadline = self.session.next_deadline()
        if self._queue or (
            deadline is not None
            and (self._writer_deadline is None or deadline < self._writer_deadline)
        ):
            self._wake.set()

    def _opened(self, ev: SessionOpened) -> None:
        if self._state is ChannelState.CONNECTING:
            self._state = ChannelState.OPEN
        resumed = ev.resumed or ev.previous_session is None
        self._emitter.emit(ChannelOpened(resumed))
        self._notify()

    def _violation(self, exc: Exception) -> None:
        """The remote broke the session protocol: retrying cannot help, the channel closes."""
        log.warning("channel %r: %s", self.label, exc)
        self._emitter.emit(ChannelError(exc))
        self._finish()

    def _report_overflow(self) -> None:
        for ov in self._queue.events_received():
            self.messages_dropped += len(ov.dropped)
            self._emitter.emit(QueueOverflow(len(ov.dropped)))

    def _flush(self) -> None:
        """Write what the session has for the link, while under the high-water mark."""
        link = self._link
        self._out.extend(self.session.data_to_send())
        if link is None or not link.is_open:
            if link is None:
                self._out.clear()
            return
        high = self.options.high_water_mark
        try:
            while self._out:
                if link.buffered_amount > high:
                    self._above_high = True
                    return
                link.send(self._out[0])
                self._out.popleft()
        except Exception as exc:  # the data channel went away under us
            log.debug("channel %r: send failed: %s", self.label, exc)
            self.detach()

    async def _write_loop(self) -> None:
        s = self.session
        while self._state is not ChannelState.CLOSED:
            self._wake.clear()
            now = self._clock()
            self._queue.expire(now)
            self._report_overflow()
            moved = False
            if s.attached and self._link is not None:
                while self._queue and s.has_room(self._queue.peek() or ""):
                    s.send_message(self._queue.pop())
                    moved = True
                s.tick(now)
            self._flush()
            if moved:
                self._notify()
            deadlines = [d for d in (self._queue.next_expiry(), s.next_deadline()) if d is not None]
            self._writer_deadline = min(deadlines) if deadlines else None
            if deadlines:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(deadlines) - self._clock())):
                        await self._wake.wait()
            else:
                await self._wake.wait()

    async def _deliver_loop(self) -> None:
        while self._state is not ChannelState.CLOSED:
            self._deliver_wake.clear()
            fed = False
            while self._frames_in and (
                self._emitter.has_handlers("message") or len(self._inbox) < self.options.inbox_size
            ):
                self._feed(self._frames_in.popleft())
                fed = True
                if self.closed:
                    return
            if fed:
                self._flush()
                self._changed.set()
            await self._deliver_wake.wait()

    def _finish(self) -> None:
        if self._state is ChannelState.CLOSED:
            return
        self._state = ChannelState.CLOSED
        link = self._link
        self._drop_link()
        if link is not None:
            link.close()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._notify()
        self._emitter.emit(ChannelClosed())
        self._emitter.finish()
        if self._on_closed is not None:
            self._on_closed(self)


def _ignore(data: str | bytes) -> None:
    return None


def _nothing() -> None:
    return None


def new_client_session(options: ChannelOptions) -> ReliableSession:
    """A connecting-side session with the p2p encoding (msgpack)."""
    return ReliableSession(Role.CLIENT, codec=FrameCodec("msgpack"), limits=options.session)
