"""``ResilientWebSocket``: a WebSocket that reconnects, buffers and resumes.

A thin asyncio pump around the sans-I/O cores of :mod:`durasync.protocol`
(state table, backoff, bounded buffer, reliable session) on top of the
``websockets`` asyncio client. Usage::

    async with ResilientWebSocket("ws://host/echo") as ws:
        await ws.send("hello")
        async for event in ws.events():
            match event:
                case Message(data=data): ...
                case StateChanged(previous, current): ...
                case Overflow(dropped=dropped): ...
                case ErrorEvent(error=exc, permanent=p): ...

Guarantees by reconnect mode (``ResilientOptions.reconnect``):

- ``"none"``: one connection; a drop moves to ``disconnected``; the events
  iterator ends. Messages sent while not connected wait in the buffer until
  an explicit new :meth:`ResilientWebSocket.connect`.
- ``"stateless"``: reconnect with backoff; messages sent while disconnected
  are buffered (bounded) and sent after the reconnect. A message in flight
  when the connection drops may be lost, and one whose write failed is sent
  again (at-most-once delivery is *not* promised across a drop).
- ``"stateful"`` (default): the reliable session of
  :mod:`durasync.protocol.session` -- no loss, no duplicates, order kept, in
  both directions, across drops, as long as the server still has the session
  (``resume_ttl``). If it does not, a :class:`SessionOpened` event with
  ``resumed=False`` says so (messages to us may be missing; our own
  unacknowledged messages are sent again). The server must speak the
  session protocol (:mod:`durasync.endpoints.reliable`).

Messages dropped from the bounded buffer are always reported
(:class:`Overflow`), never silent. Errors are classified transient (retry
after a backoff delay) or permanent (HTTP 401/403 or other 4xx at the
handshake, protocol violation, permanent close codes): the latter move to
``failed`` and stop.

Events are consumed with :meth:`ResilientWebSocket.events` (one consumer).
Message events are backpressured: when ``event_queue_size`` messages wait
unread, reading from the socket pauses. State/overflow/error events never
block the pump; beyond ``event_queue_size + 256`` queued events new control
events are dropped and counted in ``events_dropped`` (``state`` stays exact).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from durasync.client.errors import ConnectionFailed, ConnectionNotOpen, HandshakeRejected
from durasync.protocol import (
    Backoff,
    BackoffPolicy,
    BufferLimits,
    Classification,
    ConnectionState,
    ConnectionStateMachine,
    ErrorKind,
    FrameCodec,
    MessageReceived,
    OutgoingBuffer,
    Overflow,
    Payload,
    PeerClosed,
    PeerError,
    ReliableSession,
    RemoteProtocolError,
    Role,
    SessionLimits,
    SessionOpened,
    StateChanged,
    Trigger,
    classify_close_code,
    classify_http_status,
)
from durasync.protocol.frames import Encoding

__all__ = [
    "ClientEvent",
    "ConnectTarget",
    "ErrorEvent",
    "Message",
    "Negotiate",
    "ReconnectMode",
    "ResilientOptions",
    "ResilientWebSocket",
    "TokenProvider",
    "classify_exception",
]

ReconnectMode = Literal["none", "stateless", "stateful"]

_CONTROL_SLACK = 256


@dataclass(frozen=True, slots=True)
class ConnectTarget:
    """Where to connect: the result of a negotiate step."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


Negotiate = Callable[[], Awaitable[ConnectTarget]]
"""Async callable run before every (re)connect; returns the URL and headers."""

TokenProvider = Callable[[], Awaitable[str | None]]
"""Async callable run before every (re)connect; its token is sent as
``Authorization: Bearer <token>`` (None = no header)."""


@dataclass(frozen=True, slots=True)
class Message:
    """An application message received from the server."""

    data: Payload


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """A failure; ``permanent`` True means the connection stopped (``failed``)."""

    error: BaseException
    classification: Classification

    @property
    def permanent(self) -> bool:
        """True when no reconnect will follow."""
        return self.classification.permanent


ClientEvent = StateChanged | Message | Overflow | ErrorEvent | SessionOpened
"""Everything :meth:`ResilientWebSocket.events` yields."""


@dataclass(frozen=True, slots=True)
class ResilientOptions:
    """Tunables of a :class:`ResilientWebSocket` (seconds, messages, bytes).

    Attributes:
        reconnect: ``"none"``, ``"stateless"`` or ``"stateful"``.
        backoff: reconnect schedule; ``backoff.max_attempts`` is
            ``max_reconnect_attempts`` (0 = unlimited).
        connect_timeout: bound on negotiate + token + TCP + upgrade +
            session handshake, per attempt.
        ping_interval: heartbeat ping period (None = no heartbeat).
        ping_timeout: liveness timeout: no pong within this -> the connection
            is considered dead and a reconnect starts.
        close_timeout: bound on the graceful close in :meth:`close` (flush,
            wait for acks, closing handshake).
        buffer: bounds of the outgoing buffer and its overflow policy.
        session: replay buffer bounds and ack coalescing (stateful mode).
        encoding: session frame encoding (stateful mode).
        max_message_size: largest incoming WebSocket message.
        event_queue_size: unread message events before reading pauses.
    """

    reconnect: ReconnectMode = "stateful"
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    connect_timeout: float = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 5.0
    buffer: BufferLimits = field(default_factory=BufferLimits)
    session: SessionLimits = field(default_factory=SessionLimits)
    encoding: Encoding = "json"
    max_message_size: int = 1 << 20
    event_queue_size: int = 1024

    def __post_init__(self) -> None:
        if self.reconnect not in ("none", "stateless", "stateful"):
            raise ValueError(f"unknown reconnect mode {self.reconnect!r}")
        if self.connect_timeout <= 0 or self.close_timeout < 0 or self.event_queue_size < 1:
            raise ValueError("connect_timeout > 0, close_timeout >= 0, event_queue_size >= 1")


def classify_exception(exc: BaseException) -> Classification:
    """Decide whether a connect/transport failure is worth retrying.

    HTTP statuses (WebSocket upgrade refused, negotiate failed) follow
    :func:`durasync.protocol.classify_http_status`; protocol violations,
    invalid URIs and refused handshakes marked permanent are permanent;
    timeouts, OS/network errors and abrupt closes are transient. Anything
    else (a bug in a negotiate or token callable) is permanent, so a broken
    callable does not spin forever.
    """
    if isinstance(exc, websockets.exceptions.InvalidStatus):
        return classify_http_status(exc.response.status_code)
    if isinstance(exc, httpx.HTTPStatusError):
        return classify_http_status(exc.response.status_code)
    if isinstance(exc, RemoteProtocolError):
        return Classification(ErrorKind.PERMANENT, f"protocol violation: {exc}")
    if isinstance(exc, HandshakeRejected):
        kind = ErrorKind.PERMANENT if exc.permanent else ErrorKind.TRANSIENT
        return Classification(kind, f"handshake rejected: {exc}")
    if isinstance(exc, websockets.exceptions.InvalidURI):
        return Classification(ErrorKind.PERMANENT, f"invalid URI: {exc}")
    if isinstance(exc, websockets.exceptions.ConnectionClosed):
        rcvd = exc.rcvd
        return classify_close_code(rcvd.code if rcvd is not None else None)
    if isinstance(
        exc,
        TimeoutError
        | OSError
        | EOFError
        | httpx.TransportError
        | websockets.exceptions.InvalidHandshake,
    ):
        return Classification(ErrorKind.TRANSIENT, f"{type(exc).__name__}: {exc}")
    return Classification(ErrorKind.PERMANENT, f"unexpected {type(exc).__name__}: {exc}")


class _Stop(Exception):
    """Internal: the pump ended because the connection must stop for good."""

    def __init__(self, error: BaseException, verdict: Classification) -> None:
        self.error = error
        self.verdict = verdict


class ResilientWebSocket:
    """A WebSocket client connection that survives drops (see module docs).

    Args:
        url: ``ws://`` or ``wss://`` URL; optional if ``negotiate`` is given.
        options: tunables; defaults are SignalR/Hocuspocus-like.
        negotiate: async callable returning the :class:`ConnectTarget` to use,
            awaited before every (re)connect.
        token_provider: async callable returning a bearer token, awaited
            before every (re)connect (so an expired token is refreshed).
        rng: random source in [0, 1) for the backoff jitter (tests inject one).
        clock: monotonic clock in seconds (tests may inject one).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        options: ResilientOptions | None = None,
        negotiate: Negotiate | None = None,
        token_provider: TokenProvider | None = None,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if url is None and negotiate is None:
            raise ValueError("need a url or a negotiate callable")
        self.url = url
        self.options = options or ResilientOptions()
        self._negotiate = negotiate
        self._token_provider = token_provider
        self._clock = clock
        self._machine = ConnectionStateMachine()
        self._backoff = Backoff(self.options.backoff, rng=rng)
        self._buffer = OutgoingBuffer(self.options.buffer)
        self._session: ReliableSession | None = (
            ReliableSession(
                Role.CLIENT,
                codec=FrameCodec(self.options.encoding),
                limits=self.options.session,
            )
            if self.options.reconnect == "stateful"
            else None
        )
        self._events: deque[ClientEvent] = deque()
        self._events_readable = asyncio.Event()
        self._events_space = asyncio.Event()
        self._events_space.set()
        self._wake = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._close_requested = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: ConnectionFailed | None = None
        self._progress = asyncio.Event()
        self._conn: ClientConnection | None = None
        self._pending_session_events: list[SessionOpened] = []
        self.events_dropped = 0
        """Control events dropped because nobody read :meth:`events`."""
        self.connections = 0
        """Connections opened so far (1 + successful reconnects)."""

    # -- public API -----------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """Current connection state (always exact)."""
        return self._machine.state

    @property
    def session(self) -> ReliableSession | None:
        """The reliable session core in stateful mode (read-only use), else None."""
        return self._session

    @property
    def buffered(self) -> int:
        """Messages waiting in the outgoing buffer (not yet written/numbered)."""
        return len(self._buffer)

    async def connect(self) -> None:
        """Start the connection and wait until it is ``connected``.

        Transient failures are retried with backoff meanwhile (bound the wait
        with ``asyncio.timeout`` if needed). Calling it again while running is
        a no-op; after ``failed`` or ``disconnected`` it starts again with a
        fresh backoff.

        Raises:
            ConnectionFailed: the connection reached ``failed`` (or, with
                reconnect ``"none"``, ``disconnected``) before connecting.
            ConnectionNotOpen: the connection was closed.
        """
        st = self._machine.state
        if st is ConnectionState.CLOSED:
            raise ConnectionNotOpen("closed")
        if self._task is None or self._task.done():
            self._failure = None
            self._backoff.reset()
            self._fire(Trigger.CONNECT)
            self._task = asyncio.create_task(self._run(), name="ResilientWebSocket")
        st = await self.wait_for_state(
            ConnectionState.CONNECTED,
            ConnectionState.FAILED,
            ConnectionState.DISCONNECTED,
            ConnectionState.CLOSED,
        )
        if st is ConnectionState.CONNECTED:
            return
        if st is ConnectionState.CLOSED:
            raise ConnectionNotOpen("closed")
        raise self._failure or ConnectionFailed(Classification(ErrorKind.TRANSIENT, "disconnected"))

    async def send(self, data: Payload) -> None:
        """Queue ``data`` for sending; returns without waiting for the network.

        Delivery follows the reconnect mode's guarantee (module docs).

        Raises:
            BufferFull: overflow policy ``reject`` and the buffer is full (or
                the message is larger than ``max_bytes``); nothing was queued.
            ConnectionNotOpen: the connection is closed, closing or failed.
            TypeError: ``data`` is neither str nor bytes.
        """
        if not isinstance(data, str | bytes):
            raise TypeError("data must be str or bytes")
        if self._close_requested.is_set() or self._machine.state in (
            ConnectionState.CLOSED,
            ConnectionState.FAILED,
        ):
            raise ConnectionNotOpen(self._machine.state.value)
        self._buffer.push(data, self._clock())
        self._drain_overflow()
        self._wake.set()

    async def events(self) -> AsyncIterator[ClientEvent]:
        """Yield events in order until the connection ends (closed, failed, or
        disconnected in mode ``"none"``) and every queued event was yielded."""
        while True:
            while self._events:
                ev = self._events.popleft()
                if len(self._events) < self.options.event_queue_size:
                    self._events_space.set()
                yield ev
            if self._finished():
                return
            self._events_readable.clear()
            await self._events_readable.wait()

    async def wait_for_state(self, *states: ConnectionState) -> ConnectionState:
        """Wait until the state is one of ``states`` and return it."""
        while self._machine.state not in states:
            self._state_changed.clear()
            await self._state_changed.wait()
        return self._machine.state

    async def close(self, grace: float | None = None) -> None:
        """Close gracefully: flush, wait for acks, say goodbye, close.

        In stateful mode the session ends with ``bye`` after the server
        acknowledged everything or ``grace`` seconds (default
        ``options.close_timeout``) expired; messages still unacknowledged
        then are lost and reported as one :class:`Overflow` (reason
        ``"closed"``). Idempotent; never raises for network errors.
        """
        if self._machine.state is ConnectionState.CLOSED:
            return
        self._close_timeout = self.options.close_timeout if grace is None else grace
        self._close_requested.set()
        self._wake.set()
        if self._task is not None and not self._task.done():
            try:
                async with asyncio.timeout(self._close_timeout + 1.0):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        left = self._buffer.clear()
        if self._session is not None:
            self._session.send_bye()
            left = [*self._session_unacked(), *left]
        if left:
            self._push_event(Overflow(tuple(left), "closed"))
        if self._machine.can(Trigger.CLOSE):
            self._fire(Trigger.CLOSE)

    async def __aenter__(self) -> ResilientWebSocket:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the pump ---------------------------------------------------------------

    _close_timeout: float = 0.0

    def _finished(self) -> bool:
        st = self._machine.state
        return st in (ConnectionState.CLOSED, ConnectionState.FAILED) or (
            st is ConnectionState.DISCONNECTED and (self._task is None or self._task.done())
        )

    async def _run(self) -> None:
        try:
            while not self._close_requested.is_set():
                opener = asyncio.create_task(self._open())
                closer = asyncio.create_task(self._close_requested.wait())
                await asyncio.wait({opener, closer}, return_when=asyncio.FIRST_COMPLETED)
                closer.cancel()
                if not opener.done():  # close() while connecting: abandon the attempt
                    opener.cancel()
                    await asyncio.gather(opener, return_exceptions=True)
                    return
                try:
                    conn = opener.result()
                except Exception as exc:
                    if self._close_requested.is_set():
                        return
                    if not await self._after_failure(exc, classify_exception(exc)):
                        return
                    continue
                self.connections += 1
                self._backoff.connection_opened(self._clock())
                self._fire(Trigger.OPENED)
                if self._session is not None:
                    self._flush_session_events()
                error, verdict = await self._pump(conn)
                self._backoff.connection_lost(self._clock())
                if self._session is not None:
                    self._session.connection_lost()
                if self._close_requested.is_set():
                    return
                if self._session is not None and self._session.closed:
                    # The server ended the session with "bye": nothing to resume.
                    self._fire(Trigger.DROP)
                    return
                if not await self._after_failure(error, verdict):
                    return
        finally:
            self._events_readable.set()

    async def _after_failure(self, error: BaseException, verdict: Classification) -> bool:
        """Report ``error``; wait the backoff delay. False = stop the run loop."""
        self._push_event(ErrorEvent(error, verdict))
        if verdict.permanent:
            return self._fail(error, verdict)
        if self.options.reconnect == "none":
            self._failure = ConnectionFailed(verdict)
            self._fire(Trigger.DROP)
            return False
        delay = self._backoff.next_delay()
        if delay is None:
            gave_up = Classification(
                ErrorKind.PERMANENT,
                f"gave up after {self._backoff.attempts} attempts; last: {verdict.reason}",
            )
            return self._fail(error, gave_up)
        if self._machine.state is not ConnectionState.RECONNECTING:
            self._fire(Trigger.RETRY)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._close_requested.wait()
        return not self._close_requested.is_set()

    def _fail(self, error: BaseException, verdict: Classification) -> bool:
        failure = ConnectionFailed(verdict)
        failure.__cause__ = error
        self._failure = failure
        self._fire(Trigger.FAIL)
        return False

    async def _open(self) -> ClientConnection:
        """Negotiate, get a token, connect, and (stateful) run the session handshake."""
        async with asyncio.timeout(self.options.connect_timeout):
            if self._negotiate is not None:
                target = await self._negotiate()
            else:
                assert self.url is not None
                target = ConnectTarget(self.url)
            headers = dict(target.headers)
            if self._token_provider is not None:
                token = await self._token_provider()
                if token:
                    headers["Authorization"] = f"Bearer {token}"
            conn = await ws_connect(
                target.url,
                additional_headers=headers,
                open_timeout=None,  # bounded by connect_timeout above
                ping_interval=self.options.ping_interval,
                ping_timeout=self.options.ping_timeout,
                close_timeout=self.options.close_timeout,
                max_size=self.options.max_message_size,
            )
            if self._session is None:
                return conn
            try:
                self._session.connection_made()
                for frame in self._session.data_to_send():
                    await conn.send(frame)
                first = await conn.recv()
                self._session.receive_data(first, self._clock())
                for ev in self._session.events_received():
                    if isinstance(ev, PeerError):
                        raise HandshakeRejected(ev.code, ev.message, permanent=ev.permanent)
                    if isinstance(ev, SessionOpened):
                        self._pending_session_events.append(ev)
            except BaseException:
                self._session.connection_lost()
                await conn.close()
                raise
            return conn

    def _flush_session_events(self) -> None:
        for ev in self._pending_session_events:
            self._push_event(ev)
        self._pending_session_events.clear()

    async def _pump(self, conn: ClientConnection) -> tuple[BaseException, Classification]:
        """Run reader and writer until the connection ends; return why it ended."""
        self._conn = conn
        reader = asyncio.create_task(self._read_loop(conn))
        writer = asyncio.create_task(self._write_loop(conn))
        closer = asyncio.create_task(self._close_requested.wait())
        try:
            done, _ = await asyncio.wait(
                {reader, writer, closer}, return_when=asyncio.FIRST_COMPLETED
            )
            if closer in done:
                await self._graceful_close(conn, reader, writer)
                return ConnectionNotOpen("closed"), Classification(ErrorKind.PERMANENT, "closed")
            for task in (reader, writer):
                if task in done and task.exception() is not None:
                    exc = task.exception()
                    assert exc is not None
                    if isinstance(exc, _Stop):
                        await self._abort(conn, exc.error)
                        return exc.error, exc.verdict
                    verdict = classify_exception(exc)
                    if verdict.permanent:
                        await self._abort(conn, exc)
                    return exc, verdict
            # The reader finished cleanly: the server closed the connection.
            rcvd = conn.close_code
            err = websockets.exceptions.ConnectionClosedOK(None, None)
            return err, classify_close_code(rcvd)
        finally:
            reader.cancel()
            writer.cancel()
            closer.cancel()
            await asyncio.gather(reader, writer, closer, return_exceptions=True)
            await conn.close()
            self._conn = None

    async def _abort(self, conn: ClientConnection, error: BaseException) -> None:
        code = error.close_code if isinstance(error, RemoteProtocolError) else 1011
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.options.close_timeout):
                await conn.close(code, str(error)[:100])

    async def _graceful_close(
        self, conn: ClientConnection, reader: asyncio.Task[None], writer: asyncio.Task[None]
    ) -> None:
        try:
            async with asyncio.timeout(self._close_timeout):
                while True:
                    if writer.done() or reader.done():
                        return
                    if not self._buffer and (self._session is None or self._session.unacked == 0):
                        break
                    self._wake.set()
                    self._progress.clear()
                    await self._progress.wait()
                if self._session is not None:
                    self._session.send_bye()
                    for frame in self._session.data_to_send():
                        await conn.send(frame)
        except (TimeoutError, websockets.exceptions.ConnectionClosed):
            return

    async def _read_loop(self, conn: ClientConnection) -> None:
        # Backpressure is applied *before* reading a frame, and a frame's
        # events are queued without awaiting: if this task is cancelled (the
        # connection ended), no message the session already counted as
        # received (and will acknowledge) can be lost in flight.
        while True:
            await self._wait_event_space()
            try:
                raw = await conn.recv()
            except websockets.exceptions.ConnectionClosedOK:
                return
            if self._session is None:
                self._push_message(raw)
                continue
            try:
                self._session.receive_data(raw, self._clock())
            except RemoteProtocolError as exc:
                raise _Stop(exc, classify_exception(exc)) from exc
            for ev in self._session.events_received():
                if isinstance(ev, MessageReceived):
                    self._push_message(ev.payload)
                elif isinstance(ev, PeerError):
                    err = HandshakeRejected(ev.code, ev.message, permanent=ev.permanent)
                    if ev.permanent:
                        raise _Stop(err, classify_exception(err))
                    self._push_event(ErrorEvent(err, classify_exception(err)))
                elif isinstance(ev, PeerClosed):
                    return
            self._progress.set()
            self._wake.set()  # acks may be due; acks may have freed room

    async def _write_loop(self, conn: ClientConnection) -> None:
        while True:
            self._wake.clear()
            now = self._clock()
            self._buffer.expire(now)
            self._drain_overflow()
            if self._session is None:
                while self._buffer:
                    # Peek, write, then pop: a failed write keeps the message.
                    payload = self._buffer.peek()
                    assert payload is not None
                    await conn.send(payload)
                    self._buffer.pop()
            else:
                s = self._session
                while self._buffer and s.has_room(self._buffer.peek() or ""):
                    s.send_message(self._buffer.pop())
                s.tick(now)
                for frame in s.data_to_send():
                    await conn.send(frame)
            self._progress.set()
            deadlines = [
                d
                for d in (
                    self._buffer.next_expiry(),
                    self._session.next_deadline() if self._session else None,
                )
                if d is not None
            ]
            if deadlines:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(deadlines) - self._clock())):
                        await self._wake.wait()
            else:
                await self._wake.wait()

    # -- events -----------------------------------------------------------------

    def _session_unacked(self) -> list[Payload]:
        return [] if self._session is None else self._session.unacked_payloads()

    def _fire(self, trigger: Trigger) -> None:
        change = self._machine.fire(trigger)
        self._state_changed.set()
        self._push_event(change)

    def _push_event(self, ev: ClientEvent) -> None:
        if len(self._events) >= self.options.event_queue_size + _CONTROL_SLACK:
            self.events_dropped += 1
            return
        self._events.append(ev)
        self._events_readable.set()

    async def _wait_event_space(self) -> None:
        while len(self._events) >= self.options.event_queue_size:
            self._events_space.clear()
            await self._events_space.wait()

    def _push_message(self, data: Payload) -> None:
        # Bounded by the caller: at most one frame's message past the limit.
        self._events.append(Message(data))
        self._events_readable.set()

    def _drain_overflow(self) -> None:
        for ev in self._buffer.events_received():
            self._push_event(ev)
