"""Server side of stateful reconnect for plain WebSocket endpoints (I/O shell).

:class:`ReliableHub` wraps a Starlette :class:`~starlette.websockets.WebSocket`
with the sans-I/O :class:`~durasync.protocol.ReliableSession` and a bounded
:class:`~durasync.protocol.SessionRegistry`, so an echo or broadcast
endpoint gets the same guarantee as the client: no loss, no duplicates,
order kept, across drops, for as long as a session is kept (``resume_ttl``)::

    hub = ReliableHub()

    async def echo(websocket: WebSocket) -> None:
        async def handler(conn: ReliableConnection) -> None:
            async for message in conn:
                await conn.send(message)
        await hub.serve(websocket, handler)

    app = Starlette(routes=[WebSocketRoute("/echo", echo)])

The handler runs once per *connection*. Iterating the connection yields the
messages that arrived on it (each message of the session exactly once over
all its connections); iteration ends when the transport drops, the handler
returns, and the session waits for a resume. Messages received but not yet
taken by a handler stay in the session's bounded inbox for the next
connection's handler, so no acknowledged message is lost between
connections. If the handler returns while the transport is still open, the
session ends (``bye``) and is forgotten.
Messages sent while no connection is attached wait in the session's replay
buffer and are replayed after the resume.

Memory is bounded: at most ``max_sessions`` sessions, each with a replay
buffer bounded by ``SessionLimits``. :meth:`ReliableHub.broadcast` never
blocks: a session whose replay buffer is full is a slow consumer; it is
discarded and its connection closed with 1013 (try again later, :class:`CloseCode`), so the
client reconnects into a *new* session and is told ``resumed: false`` --
never a silent gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from durasync.protocol import (
    BufferFull,
    CloseCode,
    FrameCodec,
    MessageReceived,
    Payload,
    RegistryFull,
    ReliableSession,
    RemoteProtocolError,
    SessionLimits,
    SessionRegistry,
)
from durasync.protocol.frames import Encoding, ErrorFrame

__all__ = ["ReliableConnection", "ReliableHub"]


@dataclass(slots=True)
class _Live:
    """The I/O side of one session: wake-up for its writer, its current
    connection, and its inbox of delivered messages not yet taken by a handler.

    The inbox belongs to the session, not to a connection, so a message the
    session acknowledged is never lost when a connection ends before its
    handler took it: the next connection's handler gets it first.
    """

    wake: asyncio.Event
    capacity: int
    conn: ReliableConnection | None = None
    inbox: deque[Payload] = field(default_factory=deque)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()


class ReliableConnection:
    """One WebSocket connection attached to a reliable session."""

    def __init__(
        self, hub: ReliableHub, session: ReliableSession, websocket: WebSocket, live: _Live
    ) -> None:
        self._hub = hub
        self.session = session
        self.websocket = websocket
        self.generation = session.generation
        self._live = live
        self.transport_lost = False
        """True once the WebSocket ended (as opposed to the handler returning)."""

    @property
    def session_id(self) -> str:
        """The session's id (stable across the client's reconnects)."""
        assert self.session.session_id is not None
        return self.session.session_id

    def __aiter__(self) -> AsyncIterator[Payload]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Payload]:
        live = self._live
        while True:
            if live.inbox and live.conn is self:
                item = live.inbox.popleft()
                live.notify()  # space for the reader
                yield item
                continue
            if self.transport_lost or self.session.closed or live.conn is not self:
                return
            live.changed.clear()
            await live.changed.wait()

    async def send(self, data: Payload) -> None:
        """Send ``data`` on the session: delivered exactly once, in order, even
        across the client's reconnects (while the session is kept).

        Raises:
            BufferFull: the session's replay buffer is full (the client is not
                acknowledging); nothing was queued.
        """
        self._hub._send(self.session, data)


class ReliableHub:
    """Keeps the reliable sessions of one endpoint (bounded) and serves connections.

    Args:
        encoding: frame encoding, ``"json"`` (text messages) or ``"msgpack"``.
        limits: replay buffer bounds and ack coalescing per session.
        max_sessions: sessions kept at once (attached + awaiting resume).
        resume_ttl: seconds a detached session is kept for a resume.
        handshake_timeout: seconds to wait for the client's ``hello``.
        clock: monotonic clock (injectable).
        new_id: session id factory (default: 128 random bits, URL-safe).
    """

    def __init__(
        self,
        *,
        encoding: Encoding = "json",
        limits: SessionLimits | None = None,
        max_sessions: int = 10_000,
        resume_ttl: float = 60.0,
        handshake_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        new_id: Callable[[], str] = lambda: secrets.token_urlsafe(16),
    ) -> None:
        self.limits = limits or SessionLimits()
        self.registry = SessionRegistry(
            new_id=new_id,
            codec=FrameCodec(encoding),
            limits=self.limits,
            max_sessions=max_sessions,
            resume_ttl=resume_ttl,
        )
        self.handshake_timeout = handshake_timeout
        self._clock = clock
        self._live: dict[str, _Live] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.slow_consumers_dropped = 0
        """Sessions discarded by :meth:`broadcast` because their buffer was full."""

    async def serve(
        self,
        websocket: WebSocket,
        handler: Callable[[ReliableConnection], Coroutine[Any, Any, None]],
    ) -> None:
        """Accept ``websocket``, run the handshake, and run ``handler`` for it.

        Never raises for client misbehaviour: a bad first frame or a protocol
        violation is answered with an ``error`` frame and close code 1002
        (:attr:`CloseCode.PROTOCOL_ERROR`); a full registry with 1013
        (:attr:`CloseCode.TRY_AGAIN_LATER`). Returns when the connection is over.
        """
        await websocket.accept()
        try:
            async with asyncio.timeout(self.handshake_timeout):
                first = await self._receive_one(websocket)
        except (TimeoutError, WebSocketDisconnect):
            await self._close(websocket, CloseCode.PROTOCOL_ERROR, "no hello")
            return
        if first is None:
            return
        try:
            session = self.registry.open(first, self._clock())
        except RemoteProtocolError as exc:
            await self._reject(
                websocket, exc.code, exc.message, permanent=True, code=exc.close_code
            )
            return
        except RegistryFull as exc:
            await self._reject(
                websocket, "busy", str(exc), permanent=False, code=CloseCode.TRY_AGAIN_LATER
            )
            return
        sid = session.session_id
        assert sid is not None
        live = self._live.get(sid)
        if live is None:
            live = self._live[sid] = _Live(asyncio.Event(), self.limits.ack_every * 4)
        if live.conn is not None:  # superseded: the old transport is dead or dying
            old = live.conn
            old.transport_lost = True
            self._spawn_close(old.websocket, CloseCode.NORMAL, "superseded")
        conn = ReliableConnection(self, session, websocket, live)
        live.conn = conn
        live.notify()
        live.wake.set()
        reader = asyncio.create_task(self._read_loop(conn))
        writer = asyncio.create_task(self._write_loop(conn, live))
        app = asyncio.create_task(handler(conn))
        try:
            await asyncio.wait({reader, writer, app}, return_when=asyncio.FIRST_COMPLETED)
            if app.done() and not conn.transport_lost and conn.generation == session.generation:
                # The handler is finished with this client: end the session.
                session.send_bye()
                live.wake.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await writer
                await self._close(websocket, CloseCode.NORMAL, "bye")
        finally:
            conn.transport_lost = True
            live.notify()
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            if not app.done():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await asyncio.shield(app)
                app.cancel()
            await asyncio.gather(app, return_exceptions=True)
            if live.conn is conn:
                live.conn = None
                self.registry.detach(session, self._clock())
                if self.registry.get(sid) is None:
                    self._live.pop(sid, None)
            self._expire()
            await self._close(websocket, CloseCode.NORMAL, "")

    def broadcast(self, data: Payload) -> int:
        """Queue ``data`` on every kept session (attached or awaiting resume).

        Never blocks. Returns how many sessions got it; sessions with a full
        replay buffer are discarded (see module docs).
        """
        delivered = 0
        for session in self.registry.sessions():
            if session.closed:
                continue
            try:
                self._send(session, data)
                delivered += 1
            except BufferFull:
                self._drop_slow(session)
        return delivered

    # -- internals --------------------------------------------------------------

    def _send(self, session: ReliableSession, data: Payload) -> None:
        session.send_message(data)
        sid = session.session_id
        live = self._live.get(sid) if sid else None
        if live is not None:
            live.wake.set()

    def _drop_slow(self, session: ReliableSession) -> None:
        self.slow_consumers_dropped += 1
        self.registry.discard(session)
        sid = session.session_id
        live = self._live.pop(sid, None) if sid else None
        if live is not None and live.conn is not None:
            live.conn.transport_lost = True
            self._spawn_close(live.conn.websocket, CloseCode.TRY_AGAIN_LATER, "slow consumer")

    def _spawn_close(self, websocket: WebSocket, code: int, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(self._close(websocket, code, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _expire(self) -> None:
        for sid in self.registry.expire(self._clock()):
            self._live.pop(sid, None)

    async def _read_loop(self, conn: ReliableConnection) -> None:
        session = conn.session
        live = conn._live
        try:
            while conn.generation == session.generation:
                # Backpressure before reading; a frame's messages are then
                # queued without awaiting, so cancelling this task never loses
                # a message the session already counted as received.
                while len(live.inbox) >= live.capacity and live.conn is conn:
                    live.changed.clear()
                    await live.changed.wait()
                raw = await self._receive_one(conn.websocket)
                if raw is None or conn.generation != session.generation:
                    return  # gone, or superseded by a newer connection of the session
                try:
                    session.receive_data(raw, self._clock())
                except RemoteProtocolError as exc:
                    session.send_error(exc.code, exc.message)
                    await self._flush(conn)
                    self.registry.discard(session)
                    await self._close(conn.websocket, exc.close_code, exc.code)
                    return
                for ev in session.events_received():
                    if isinstance(ev, MessageReceived):
                        live.inbox.append(ev.payload)
                    # PeerClosed: session.closed is now True; iteration ends
                    # once the handler took what is in the inbox.
                live.notify()
                live.wake.set()
        finally:
            conn.transport_lost = True
            live.notify()

    async def _write_loop(self, conn: ReliableConnection, live: _Live) -> None:
        session = conn.session
        while conn.generation == session.generation and not conn.transport_lost:
            live.wake.clear()
            session.tick(self._clock())
            await self._flush(conn)
            if session.closed:
                return  # bye sent or received: nothing more goes out on this session
            deadline = session.next_deadline()
            if deadline is None:
                await live.wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - self._clock())):
                        await live.wake.wait()

    async def _flush(self, conn: ReliableConnection) -> None:
        for frame in conn.session.data_to_send():
            if isinstance(frame, str):
                await conn.websocket.send_text(frame)
            else:
                await conn.websocket.send_bytes(frame)

    @staticmethod
    async def _receive_one(websocket: WebSocket) -> str | bytes | None:
        """One message, or None when the client went away."""
        msg = await websocket.receive()
        if msg["type"] == "websocket.disconnect":
            return None
        text = msg.get("text")
        if text is not None:
            return str(text)
        data = msg.get("bytes")
        return bytes(data) if data is not None else b""

    async def _reject(
        self, websocket: WebSocket, err: str, message: str, *, permanent: bool, code: int
    ) -> None:
        frame = self.registry.codec.encode(
            ErrorFrame(code=err, message=message, permanent=permanent)
        )
        with contextlib.suppress(Exception):
            if isinstance(frame, str):
                await websocket.send_text(frame)
            else:
                await websocket.send_bytes(frame)
        await self._close(websocket, code, err)

    @staticmethod
    async def _close(websocket: WebSocket, code: int, reason: str) -> None:
        if websocket.application_state is WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(Exception):
            await websocket.close(code, reason[:100])
