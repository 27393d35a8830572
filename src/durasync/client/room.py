"""``RoomClient``: a member of a collaborative room (docs/protocol.md) with a local replica.

Usage::

    async with RoomClient("ws://127.0.0.1:4437", "board") as room:
        room.edit({"ot": "node.insert", "key": "root", "path": "children", "value": {...}})
        room.commit()                      # one message, applied optimistically at once
        await room.synced()                # every committed message is durable on the server
        room.graph.nodes["n1"]             # the visible graph (confirmed + own pending)

Guarantees (the rules live in the sans-I/O core
:class:`~durasync.protocol.room_client.ClientRoomSession`; this class is its asyncio pump, as
:class:`~durasync.client.ResilientWebSocket` is around
:class:`~durasync.protocol.ReliableSession`):

- **Optimistic, exactly once.** :meth:`edit` applies an op to the local replica at once;
  :meth:`commit` (and :meth:`undo`/:meth:`redo`) turns the edit buffer into a message that is
  kept in an *outbox* until the server acknowledges it. After every (re)connect, once the
  server's ``state`` frame arrived, every unacknowledged message is sent again, in commit
  order; the server dedupes by message id, so a resend is never applied twice
  (docs/protocol.md "Join and resume"). Edits made while disconnected are simply sent then.
- **Resume.** Reconnects carry ``since=<last serverSeq received>&epoch=<room epoch>``; a
  ``recovered: true`` state applies exactly the missed messages; ``recovered: false`` (new
  epoch after a store change, journal trimmed) *reloads* the replica from the snapshot and
  journal (uncommitted edits are committed first so nothing is lost; own messages not yet in
  the reloaded state reappear when their resend is acknowledged).
- **Convergence.** Every confirmed message is placed by its ``serverSeq``, so all members end
  with the server's graph (``durasync.crdt`` invariant 4).
- Rejected messages (``error`` frames naming one of ours, except ``RATE_LIMITED``, which is
  resent after a delay) are dropped from the outbox and their optimistic effect removed; the
  error is reported to :meth:`on_error` callbacks.

Transport: a :class:`~durasync.client.ResilientWebSocket` in ``stateless`` mode (backoff with
full jitter, heartbeat, connect timeout, token provider); the room protocol itself provides
the resume, so the reliable-session layer is not used. Callbacks run on the event loop and
must not block; an exception in one is logged and does not stop the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from durasync.client.websocket import (
    ConnectTarget,
    Message,
    ResilientOptions,
    ResilientWebSocket,
    TokenProvider,
)
from durasync.crdt import Replica
from durasync.crdt.graph import SceneGraph
from durasync.crdt.messages import Message as CrdtMessage
from durasync.crdt.messages import Op
from durasync.protocol import ConnectionState, RemoteProtocolError, StateChanged
from durasync.protocol.room_client import (
    CheckResult,
    ClientRoomEvent,
    ClientRoomSession,
    PresenceEvent,
    RoomChange,
    RoomError,
)
from durasync.protocol.room_frames import Format

__all__ = ["PresenceEvent", "RoomChange", "RoomClient", "RoomError"]

log = logging.getLogger(__name__)


class RoomClient:
    """One member of room ``room`` on the server at ``url`` (``ws://host:port``).

    Args:
        url: WebSocket base URL of the server (the path ``/v1/rooms/<room>`` is added), or
            several: the nodes of one cluster sharing a store (docs/protocol.md "Several
            nodes"). The first is used first; every reconnect (after a drop or a failed
            attempt) goes to the next one, round robin, and resumes there with
            ``since``/``epoch`` (the journal and the epoch are shared, so resume is exact).
        room: room name (docs/protocol.md: 1-128 of ``[A-Za-z0-9._~-]``).
        client_id: session id (default: a random one). Keep it stable across reconnects
            (this object does); a second live connection with the same id replaces the first.
        fmt: ``"msgpack"`` (default) or ``"json"``.
        options: transport options; ``reconnect`` is forced to ``"stateless"``.
        token_provider: async callable returning a bearer token, awaited per (re)connect.
        clock: wall clock in seconds: message timestamps (ms on the wire) and retry delays.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        room: str,
        *,
        client_id: str | None = None,
        fmt: Format = "msgpack",
        options: ResilientOptions | None = None,
        token_provider: TokenProvider | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("need at least one server url")
        self.urls: list[str] = [u.rstrip("/") for u in urls]
        """Every server URL, in failover order."""
        self.url = self.urls[0]
        """The URL of the current (or last) connection."""
        self._url_index = 0
        self._attempts = 0
        self.room = room
        self.client_id = client_id or uuid.uuid4().hex
        self.fmt: Format = fmt
        self._clock = clock
        opts = options or ResilientOptions()
        opts = ResilientOptions(
            reconnect="stateless",
            backoff=opts.backoff,
            connect_timeout=opts.connect_timeout,
            ping_interval=opts.ping_interval,
            ping_timeout=opts.ping_timeout,
            close_timeout=opts.close_timeout,
            buffer=opts.buffer,
            max_message_size=max(opts.max_message_size, 64 << 20),
            event_queue_size=opts.event_queue_size,
        )
        self._ws = ResilientWebSocket(
            options=opts, negotiate=self._target, token_provider=token_provider
        )
        self.session = ClientRoomSession(self.client_id, fmt=fmt)
        """The sans-I/O core (read-only use: the pump feeds it)."""
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._checks: dict[str, asyncio.Future[bool]] = {}
        self._change_cbs: list[Callable[[RoomChange], None]] = []
        self._presence_cbs: list[Callable[[PresenceEvent], None]] = []
        self._error_cbs: list[Callable[[RoomError], None]] = []

    # -- lifecycle ----------------------------------------------------------------------

    async def join(self) -> None:
        """Connect and wait for the room's state (the replica is loaded when this returns).

        Raises:
            ConnectionFailed: the connection failed permanently before joining.
        """
        if self._reader is None:
            self._reader = asyncio.create_task(self._run(), name=f"RoomClient {self.room}")
            self._writer = asyncio.create_task(self._write(), name=f"RoomClient {self.room} out")
        await self._ws.connect()
        await self._wait(lambda: self.session.connected)

    async def close(self, grace: float = 2.0) -> None:
        """Leave the room. Messages still unacknowledged after ``grace`` seconds are not
        sent again (they remain in :meth:`unacked`). Idempotent."""
        if self.session.connected and self.session.unsynced:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self.synced()
        self.session.connection_lost()
        await self._ws.close(grace=0.5)
        for task in (self._writer, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def __aenter__(self) -> RoomClient:
        await self.join()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- reading ------------------------------------------------------------------------

    @property
    def replica(self) -> Replica:
        """The member's replica (replaced when a ``recovered: false`` state reloads it)."""
        return self.session.replica

    @property
    def graph(self) -> SceneGraph:
        """The visible graph: confirmed messages + own pending ones + the edit buffer."""
        return self.session.graph

    @property
    def server_seq(self) -> int | None:
        """Last serverSeq received (the resume position)."""
        return self.session.server_seq

    @property
    def epoch(self) -> str | None:
        """Epoch of the room incarnation ``server_seq`` belongs to."""
        return self.session.epoch

    @property
    def reloads(self) -> int:
        """Full states received (``recovered: false``), the first join included."""
        return self.session.reloads

    @property
    def presence(self) -> dict[str, Any]:
        """Presence state of every member present (client id -> state)."""
        return self.session.presence

    @property
    def connected(self) -> bool:
        """Connected and the room state of this connection applied."""
        return self.session.connected

    @property
    def unsynced(self) -> int:
        """Committed messages the server has not acknowledged yet."""
        return self.session.unsynced

    def unacked(self) -> list[CrdtMessage]:
        """The unacknowledged messages, in commit order."""
        return self.session.unacked()

    async def synced(self) -> None:
        """Wait until connected and every committed message is acknowledged (durable).

        Uncommitted edits (the edit buffer) are not waited for: call :meth:`commit` first.
        """
        await self._wait(lambda: self.session.connected and not self.session.unsynced)

    async def check(self) -> bool:
        """Ask the server for its graph checksum and compare it with ours (call after
        :meth:`synced`, with no uncommitted edits). True when they are equal.

        Survives reconnects: a request sent while offline or lost with its connection is asked
        again after the next ``state``; one the server did not answer now (``status: null``, or
        ``RATE_LIMITED``: its per-connection budgets) is asked again after a pause. Bound it
        with ``asyncio.timeout`` if the server may be gone for good."""
        request = uuid.uuid4().hex
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._checks[request] = fut
        try:
            self.session.send_check(request)
            self._pump()
            return await fut
        finally:
            self._checks.pop(request, None)
            self.session.cancel_check(request)

    # -- callbacks ----------------------------------------------------------------------

    def on_change(self, callback: Callable[[RoomChange], None]) -> Callable[[], None]:
        """Call ``callback`` after every change of the visible graph; returns an unsubscribe."""
        self._change_cbs.append(callback)
        return lambda: self._change_cbs.remove(callback)

    def on_presence(self, callback: Callable[[PresenceEvent], None]) -> Callable[[], None]:
        """Call ``callback`` on every presence change; returns an unsubscribe."""
        self._presence_cbs.append(callback)
        return lambda: self._presence_cbs.remove(callback)

    def on_error(self, callback: Callable[[RoomError], None]) -> Callable[[], None]:
        """Call ``callback`` for every ``error`` frame; returns an unsubscribe."""
        self._error_cbs.append(callback)
        return lambda: self._error_cbs.remove(callback)

    # -- editing ------------------------------------------------------------------------

    def edit(self, op: Op | Mapping[str, Any]) -> Op:
        """Buffer one op and apply it optimistically (see :meth:`durasync.crdt.Replica.edit`).

        Raises:
            CRDTValidationError: malformed op (nothing changes).
        """
        applied = self.session.edit(op, self._clock())
        self._pump()
        return applied

    def commit(self) -> CrdtMessage | None:
        """Commit the edit buffer as one message and send it (or queue it until connected).

        Returns the message, or None if the buffer was empty.
        """
        msg = self.session.commit(self._clock())
        self._pump()
        return msg

    def undo(self) -> CrdtMessage | None:
        """Undo our newest effective message; None if nothing. Uncommitted edits are
        committed (and sent) first, as their own message, which the undo then targets."""
        msg = self.session.undo(self._clock())
        self._pump()
        return msg

    def redo(self) -> CrdtMessage | None:
        """Redo our newest undone message; None if nothing is undone."""
        msg = self.session.redo(self._clock())
        self._pump()
        return msg

    async def set_presence(self, state: Any) -> None:
        """Set our presence state (``None`` clears it); re-announced after reconnects."""
        self.session.send_presence(state)
        self._pump()

    # -- the pump -------------------------------------------------------------------------

    async def _target(self) -> ConnectTarget:
        # Called before every (re)connect attempt: any call after the first follows a drop or
        # a failed attempt, so it moves to the next node (a killed node's clients fail over).
        if self._attempts and len(self.urls) > 1:
            self._url_index = (self._url_index + 1) % len(self.urls)
            self.url = self.urls[self._url_index]
        self._attempts += 1
        query = urlencode(self.session.join_params())
        return ConnectTarget(f"{self.url}/v1/rooms/{quote(self.room, safe='')}?{query}")

    async def _wait(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            if self._reader is not None and self._reader.done():
                self._reader.result()
                raise RuntimeError("room client stopped")
            self._changed.clear()
            await self._changed.wait()

    async def _run(self) -> None:
        """Reader: feed every frame and connection change to the session."""
        session = self.session
        async for event in self._ws.events():
            if isinstance(event, Message):
                try:
                    session.receive_data(event.data, self._clock())
                except RemoteProtocolError as exc:
                    log.warning("room %s: %s", self.room, exc.message)
            elif isinstance(event, StateChanged) and event.current is not ConnectionState.CONNECTED:
                session.connection_lost()
            self._pump()
        session.connection_lost()
        self._changed.set()

    def _pump(self) -> None:
        """Deliver the session's events to the callbacks and wake the writer."""
        for event in self.session.events_received():
            self._deliver(event)
        self._changed.set()
        self._wake.set()

    async def _write(self) -> None:
        """Writer: send the session's frames in order and fire its retries when due."""
        session = self.session
        while True:
            self._wake.clear()
            session.tick(self._clock())
            for data in session.data_to_send():
                if not session.connected:
                    continue  # dropped: what matters is sent again after the next state
                try:
                    await self._ws.send(data)
                except Exception as exc:  # closed or failed meanwhile, buffer full
                    log.warning("room %s: send failed: %s", self.room, exc)
            deadline = session.next_deadline()
            if deadline is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - self._clock())):
                        await self._wake.wait()

    def _deliver(self, event: ClientRoomEvent) -> None:
        if isinstance(event, RoomChange):
            for on_change in list(self._change_cbs):
                _call(on_change, event)
        elif isinstance(event, PresenceEvent):
            for on_presence in list(self._presence_cbs):
                _call(on_presence, event)
        elif isinstance(event, RoomError):
            for on_error in list(self._error_cbs):
                _call(on_error, event)
        elif isinstance(event, CheckResult):
            fut = self._checks.get(event.request_id)
            if fut is not None and not fut.done():
                fut.set_result(event.matches)


def _call(cb: Callable[[Any], None], arg: Any) -> None:
    try:
        cb(arg)
    except Exception:
        log.exception("room client callback failed")
