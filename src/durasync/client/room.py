"""``RoomClient``: a member of a collaborative room (docs/protocol.md) with a local replica.

Usage::

    async with RoomClient("ws://127.0.0.1:4437", "board") as room:
        room.edit({"ot": "node.insert", "key": "root", "path": "children", "value": {...}})
        room.commit()                      # one message, applied optimistically at once
        await room.synced()                # every committed message is durable on the server
        room.graph.nodes["n1"]             # the visible graph (confirmed + own pending)

Guarantees:

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
import functools
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode

import msgspec

from durasync.client.websocket import (
    ConnectTarget,
    Message,
    ResilientOptions,
    ResilientWebSocket,
    TokenProvider,
)
from durasync.crdt import Replica
from durasync.crdt.graph import SceneGraph
from durasync.crdt.messages import META_OTYPES, Op
from durasync.crdt.messages import Message as CrdtMessage
from durasync.protocol import ConnectionState, StateChanged
from durasync.rooms.frames import (
    AckFrame,
    BroadcastFrame,
    CrdtFrame,
    ErrorFrame,
    Format,
    HeartbeatFrame,
    PingFrame,
    PresenceFrame,
    PresenceUpdate,
    ServerFrame,
    StateFrame,
    SyncCheckFrame,
    SyncStatusFrame,
)

__all__ = ["PresenceEvent", "RoomChange", "RoomClient", "RoomError"]

log = logging.getLogger(__name__)

ChangeOrigin = Literal["local", "remote", "reload", "rejected"]

#: Resend delay after ``RATE_LIMITED`` (docs/protocol.md: "drop; resend later").
RATE_LIMIT_RETRY_S = 0.5


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


_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_json_decoder: msgspec.json.Decoder[ServerFrame] = msgspec.json.Decoder(ServerFrame)
_msgpack_decoder: msgspec.msgpack.Decoder[ServerFrame] = msgspec.msgpack.Decoder(ServerFrame)


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
        clock: wall clock in seconds for message timestamps (ms on the wire).
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
        self.replica = Replica(self.client_id, sequenced=True)
        self.server_seq: int | None = None
        """Last serverSeq received (the resume position)."""
        self.epoch: str | None = None
        """Epoch of the room incarnation ``server_seq`` belongs to."""
        self.reloads = 0
        """Full states received (``recovered: false``), the first join included."""
        self.presence: dict[str, Any] = {}
        """Presence state of every member present (client id -> state)."""
        self._outbox: dict[str, CrdtMessage] = {}
        self._live = False  # connected and this connection's state frame applied
        self._my_presence: Any = None
        self._changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._checks: dict[str, asyncio.Future[tuple[str | None, int]]] = {}
        self._change_cbs: list[Callable[[RoomChange], None]] = []
        self._presence_cbs: list[Callable[[PresenceEvent], None]] = []
        self._error_cbs: list[Callable[[RoomError], None]] = []
        self._timers: set[asyncio.TimerHandle] = set()

    # -- lifecycle ----------------------------------------------------------------------

    async def join(self) -> None:
        """Connect and wait for the room's state (the replica is loaded when this returns).

        Raises:
            ConnectionFailed: the connection failed permanently before joining.
        """
        if self._pump is None:
            self._pump = asyncio.create_task(self._run(), name=f"RoomClient {self.room}")
        await self._ws.connect()
        await self._wait(lambda: self._live)

    async def close(self, grace: float = 2.0) -> None:
        """Leave the room. Messages still unacknowledged after ``grace`` seconds are not
        sent again (they remain in :meth:`unacked`). Idempotent."""
        if self._live and self._outbox:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self.synced()
        self._live = False
        for t in self._timers:
            t.cancel()
        await self._ws.close(grace=0.5)
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    async def __aenter__(self) -> RoomClient:
        await self.join()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- reading ------------------------------------------------------------------------

    @property
    def graph(self) -> SceneGraph:
        """The visible graph: confirmed messages + own pending ones + the edit buffer."""
        return self.replica.graph

    @property
    def connected(self) -> bool:
        """Connected and the room state of this connection applied."""
        return self._live

    @property
    def unsynced(self) -> int:
        """Committed messages the server has not acknowledged yet."""
        return len(self._outbox)

    def unacked(self) -> list[CrdtMessage]:
        """The unacknowledged messages, in commit order."""
        return list(self._outbox.values())

    async def synced(self) -> None:
        """Wait until connected and every committed message is acknowledged (durable).

        Uncommitted edits (the edit buffer) are not waited for: call :meth:`commit` first.
        """
        await self._wait(lambda: self._live and not self._outbox)

    async def check(self) -> bool:
        """Ask the server for its graph checksum and compare it with ours (call after
        :meth:`synced`, with no uncommitted edits). True when they are equal.

        Survives reconnects: a request sent while offline or lost with its connection is asked
        again after the next ``state``; one the server did not answer now (``status: null``, or
        ``RATE_LIMITED``: its per-connection budgets) is asked again after a pause. Bound it
        with ``asyncio.timeout`` if the server may be gone for good."""
        request = uuid.uuid4().hex
        fut: asyncio.Future[tuple[str | None, int]] = asyncio.get_running_loop().create_future()
        self._checks[request] = fut
        try:
            await self._send(SyncCheckFrame(requestId=request))
            status, seq = await fut
        finally:
            self._checks.pop(request, None)
        return seq == self.server_seq and status == self.replica.checksum(live=True)

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
        applied = self.replica.edit(op, self._now())
        self._emit(RoomChange(frozenset({applied.key}), "local"))
        return applied

    def commit(self) -> CrdtMessage | None:
        """Commit the edit buffer as one message and send it (or queue it until connected).

        Returns the message, or None if the buffer was empty.
        """
        msg = self.replica.commit(self._now())
        if msg is not None:
            self._queue(msg)
        return msg

    def undo(self) -> CrdtMessage | None:
        """Undo our newest effective message (commits the buffer first); None if nothing."""
        return self._meta(self.replica.undo(self._now()))

    def redo(self) -> CrdtMessage | None:
        """Redo our newest undone message; None if nothing is undone."""
        return self._meta(self.replica.redo(self._now()))

    async def set_presence(self, state: Any) -> None:
        """Set our presence state (``None`` clears it); re-announced after reconnects."""
        self._my_presence = state
        if self._live:
            await self._send(PresenceUpdate(state))

    # -- internals ----------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock() * 1000.0

    def _meta(self, msg: CrdtMessage | None) -> CrdtMessage | None:
        if msg is not None:
            self._queue(msg)
            self._emit(RoomChange(self._keys([msg]), "local"))
        return msg

    def _queue(self, msg: CrdtMessage) -> None:
        self._outbox[msg.id] = msg
        self._changed.set()
        if self._live:
            self._send_soon(CrdtFrame(msg))

    def _send_soon(self, frame: Any) -> None:
        data = self._encode(frame)
        task = asyncio.get_running_loop().create_task(self._send_raw(data))
        task.add_done_callback(_log_failure)

    async def _send(self, frame: Any) -> None:
        await self._send_raw(self._encode(frame))

    async def _send_raw(self, data: bytes | str) -> None:
        # Not connected: dropped here on purpose; the outbox is resent after the next state.
        if self._live:
            await self._ws.send(data)

    def _encode(self, frame: Any) -> bytes | str:
        if self.fmt == "json":
            return _json_encoder.encode(frame).decode()
        return _msgpack_encoder.encode(frame)

    async def _target(self) -> ConnectTarget:
        # Called before every (re)connect attempt: any call after the first follows a drop or
        # a failed attempt, so it moves to the next node (a killed node's clients fail over).
        if self._attempts and len(self.urls) > 1:
            self._url_index = (self._url_index + 1) % len(self.urls)
            self.url = self.urls[self._url_index]
        self._attempts += 1
        query = {"client": self.client_id, "format": self.fmt}
        if self.server_seq is not None and self.epoch is not None:
            query["since"] = str(self.server_seq)
            query["epoch"] = self.epoch
        return ConnectTarget(f"{self.url}/v1/rooms/{quote(self.room, safe='')}?{urlencode(query)}")

    async def _wait(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            if self._pump is not None and self._pump.done():
                self._pump.result()
                raise RuntimeError("room client stopped")
            self._changed.clear()
            await self._changed.wait()

    async def _run(self) -> None:
        async for event in self._ws.events():
            if isinstance(event, Message):
                try:
                    frame = self._decode(event.data)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    log.warning("room %s: undecodable server frame: %s", self.room, exc)
                    continue
                await self._handle(frame)
            elif isinstance(event, StateChanged) and event.current is not ConnectionState.CONNECTED:
                self._live = False
            self._changed.set()
        self._live = False
        self._changed.set()

    def _decode(self, data: bytes | str) -> ServerFrame:
        if isinstance(data, str):
            return _json_decoder.decode(data)
        return _msgpack_decoder.decode(data)

    async def _handle(self, frame: ServerFrame) -> None:
        if isinstance(frame, BroadcastFrame):
            self._advance(frame.serverSeq)
            if self.replica.receive(frame.msg, frame.serverSeq):
                self._emit(RoomChange(self._keys([frame.msg]), "remote"))
        elif isinstance(frame, AckFrame):
            self._advance(frame.serverSeq)
            msg = self._outbox.pop(frame.msgId, None)
            if not self.replica.ack(frame.msgId, frame.serverSeq) and (
                msg is not None and not self.replica.has(msg.id)
            ):
                # Reloaded while it was in flight: the new replica does not hold it yet.
                self.replica.receive(msg, frame.serverSeq)
                self._emit(RoomChange(self._keys([msg]), "remote"))
        elif isinstance(frame, StateFrame):
            await self._apply_state(frame)
        elif isinstance(frame, PresenceFrame):
            self._apply_presence(frame)
        elif isinstance(frame, PingFrame):
            await self._send(HeartbeatFrame(client=self.client_id))
        elif isinstance(frame, ErrorFrame):
            self._apply_error(frame)
        elif isinstance(frame, SyncStatusFrame):
            request = str(frame.requestId)
            fut = self._checks.get(request)
            if fut is None or fut.done():
                pass
            elif frame.status is None:
                # Not computed now (the server's per-connection answer budget): ask again.
                self._later(functools.partial(self._recheck, request))
            else:
                fut.set_result((frame.status, frame.serverSeq))

    def _advance(self, seq: int) -> None:
        # Acks of resends carry their original (older) seq: never move backwards.
        if self.server_seq is None or seq > self.server_seq:
            self.server_seq = seq

    async def _apply_state(self, frame: StateFrame) -> None:
        if frame.recovered and frame.epoch == self.epoch:
            msgs = frame.journal
            self.replica.receive_many(msgs, [m.serverSeq for m in msgs])
            if msgs:
                self._emit(RoomChange(self._keys(msgs), "remote"))
        else:
            self._reload(frame)
        self.server_seq = frame.serverSeq
        self.epoch = frame.epoch
        self._live = True
        self._changed.set()
        # docs/protocol.md "Join and resume": after a state, resend every unacked message.
        for msg in list(self._outbox.values()):
            await self._send(CrdtFrame(msg))
        if self._my_presence is not None:
            await self._send(PresenceUpdate(self._my_presence))
        # A sync-check sent while offline, or lost with the connection it went out on, would
        # wait forever: ask again on the new connection (the answer reflects this state).
        for request in list(self._checks):
            await self._send(SyncCheckFrame(requestId=request))

    def _reload(self, frame: StateFrame) -> None:
        old = self.replica
        # Uncommitted edits become a message, so the reload does not lose them.
        pending = old.commit(self._now())
        if pending is not None:
            self._outbox[pending.id] = pending
        before = set(old.graph.nodes)
        journal = frame.journal
        if frame.snapshot is not None:
            new = Replica(self.client_id, sequenced=True, snapshot=frame.snapshot)
        else:
            new = Replica(self.client_id, sequenced=True)
        new.receive_many(journal, [m.serverSeq for m in journal])
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

    def _apply_presence(self, frame: PresenceFrame) -> None:
        if frame.event == "sync":
            self.presence = dict(frame.members or {})
        elif frame.client is not None:
            if frame.event == "leave":
                self.presence.pop(frame.client, None)
            else:
                self.presence[frame.client] = frame.state
        ev = PresenceEvent(frame.event, frame.client, frame.state, dict(self.presence))
        for cb in list(self._presence_cbs):
            _call(cb, ev)

    def _apply_error(self, frame: ErrorFrame) -> None:
        err = RoomError(frame.code, frame.error, frame.msgId)
        mid = frame.msgId
        if mid is None and frame.code == "RATE_LIMITED" and self._checks:
            # Any frame may be refused over the server's frame budget; a refused sync-check
            # would leave check() waiting: ask the pending ones again after the pause.
            for request in list(self._checks):
                self._later(functools.partial(self._recheck, request))
        if mid is not None and mid in self._outbox:
            if frame.code == "RATE_LIMITED":
                self._later(functools.partial(self._resend, mid))
            else:
                msg = self._outbox.pop(mid)
                self.replica.reject(mid)
                self._emit(RoomChange(self._keys([msg]), "rejected"))
                self._changed.set()
        for cb in list(self._error_cbs):
            _call(cb, err)

    def _later(self, action: Callable[[], None]) -> None:
        """Run ``action`` after :data:`RATE_LIMIT_RETRY_S` (cancelled by :meth:`close`)."""
        self._timers = {t for t in self._timers if not t.cancelled()}
        handle = asyncio.get_running_loop().call_later(RATE_LIMIT_RETRY_S, action)
        self._timers.add(handle)

    def _resend(self, mid: str) -> None:
        msg = self._outbox.get(mid)
        if msg is not None and self._live:
            self._send_soon(CrdtFrame(msg))

    def _recheck(self, request: str) -> None:
        fut = self._checks.get(request)
        if fut is not None and not fut.done() and self._live:
            self._send_soon(SyncCheckFrame(requestId=request))

    def _keys(self, msgs: list[CrdtMessage]) -> frozenset[str]:
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

    def _emit(self, change: RoomChange) -> None:
        for cb in list(self._change_cbs):
            _call(cb, change)


def _call(cb: Callable[[Any], None], arg: Any) -> None:
    try:
        cb(arg)
    except Exception:
        log.exception("room client callback failed")


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("room client send failed: %s", task.exception())
