"""Presence buses: who is in a room, on this node only or shared by every node through Redis.

A room asks its bus for a :class:`RoomPresence` (:meth:`PresenceBus.attach`): a synchronous
view of the room's members and their awareness state (docs/protocol.md "Presence"). The room
changes it for its own connections (``touch``/``update``/``leave``/``expire``) and is called
back with a :class:`~durasync.protocol.room_frames.PresenceFrame` when a member on *another* node
joins, changes or leaves, which it broadcasts to its local members.

- :class:`LocalPresenceBus`: one process (today's behaviour): a
  :class:`~durasync.rooms.core.PresenceTable` per room.
- :class:`RedisPresenceBus` (presence is shared through Redis, with expiry):
  per room a hash ``<prefix>presence:<room>`` (client -> msgpack ``[state, node]``) and a
  sorted set ``<prefix>presence-exp:<room>`` (client -> expiry, Unix seconds); changes are
  published on ONE channel ``<prefix>presence`` that every node subscribes to once (not per
  room or member). Each node keeps a mirror per loaded room, seeded from the hash on attach
  and after every re-subscription, and refreshes the expiry of its own live members every
  ``timeout / 3`` seconds. A dead node stops refreshing, so its members' entries expire on
  every other node within ``timeout`` seconds of its last refresh (plus one sweep tick) and
  are announced as ``leave`` (``reason: "expired"``). Expiry times are wall-clock times:
  nodes' clocks must agree to well under ``timeout`` (NTP).

Bounds (DESIGN.md invariant 6): a member's state is bounded by the caller
(``RoomSettings.max_presence_bytes``); a mirror holds at most ``max_clients`` remote members
per room (more are ignored until some leave); pending Redis writes are coalesced per
(room, client) and capped at ``max_pending`` (beyond it the oldest are dropped: presence is
soft state, Redis expires what was not deleted).

Redis being unreachable never fails a room: writes are retried with backoff, the
subscription reconnects by itself, and local presence keeps working meanwhile. The Redis
connections are the store's machinery (:mod:`durasync.store.redis.calls` and
``.subscription``; see :class:`RedisPresenceBus`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import msgspec

from durasync.protocol.room_frames import PresenceFrame
from durasync.rooms.core import PresenceTable

if TYPE_CHECKING:
    from durasync.store.redis.calls import CallConnection, Script
    from durasync.store.redis.subscription import Subscription

__all__ = [
    "LocalPresenceBus",
    "PresenceBus",
    "RedisPresenceBus",
    "RoomPresence",
]

log = logging.getLogger("durasync.rooms.presence")

OnRemote = Callable[[PresenceFrame], None]


class RoomPresence(Protocol):
    """The presence of one room as one node sees it (all synchronous, no I/O waits)."""

    def touch(self, client: str, now: float) -> bool:
        """Activity of a local client at monotonic time ``now``; True if it is a join."""

    def update(self, client: str, state: Any, now: float) -> bool:
        """Set a local client's state; True if it is also a join."""

    def leave(self, client: str) -> bool:
        """A local client left; True if it was present."""

    def expire(self, now: float) -> list[str]:
        """Remove and return members whose presence expired."""

    def members(self) -> dict[str, Any]:
        """Client -> state of every member present (cluster-wide for a shared bus)."""

    def close(self) -> None:
        """The room is unloaded: stop receiving remote events; local members leave."""

    def __contains__(self, client: object) -> bool: ...


class PresenceBus(abc.ABC):
    """Hands out one :class:`RoomPresence` per loaded room; ``start``/``aclose`` in the
    service's lifespan."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start background work (subscriptions, refreshes)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Stop background work; best effort, never raises."""

    @abc.abstractmethod
    async def attach(self, room: str, on_remote: OnRemote) -> RoomPresence:
        """The presence of ``room``; ``on_remote`` is called for changes on other nodes."""

    async def counts(self, rooms: Sequence[str]) -> dict[str, int]:
        """Cluster-wide member counts of ``rooms`` when cheap; ``{}`` when unknown."""
        return {}


class LocalPresenceBus(PresenceBus):
    """Presence of this process only (one node): a :class:`PresenceTable` per room."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def attach(self, room: str, on_remote: OnRemote) -> RoomPresence:
        return PresenceTable(self.timeout)


class _Event(msgspec.Struct, omit_defaults=True):
    """One Pub/Sub message of the shared channel (msgpack)."""

    #: room, node id, kind
    r: str
    n: str
    k: Literal["set", "del", "refresh"]
    #: client (set/del), state (set), expiry in Unix seconds (set/refresh)
    c: str = ""
    s: Any = None
    x: float = 0.0
    #: clients whose expiry moves to ``x`` (refresh)
    cs: list[str] = []


_event_encoder: Final = msgspec.msgpack.Encoder()
_event_decoder: Final = msgspec.msgpack.Decoder(_Event)
_entry_decoder: Final = msgspec.msgpack.Decoder(tuple[Any, str])

#: Removes expired members of one room atomically (any node may sweep; removal is idempotent).
_SWEEP: Final = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
end
return #gone
"""


class _Op(msgspec.Struct):
    kind: Literal["set", "del"]
    state: Any = None


class _RedisRoomPresence:
    """Mirror of one room's shared presence on this node (see :class:`RedisPresenceBus`)."""

    def __init__(self, bus: RedisPresenceBus, room: str, on_remote: OnRemote) -> None:
        self.bus = bus
        self.room = room
        self.on_remote = on_remote
        self.timeout = bus.timeout
        #: Every member present, local and remote: client -> state.
        self._state: dict[str, Any] = {}
        #: Local members: client -> monotonic time of their last activity.
        self._seen: dict[str, float] = {}
        #: Remote members: client -> wall-clock expiry.
        self._remote: dict[str, float] = {}
        self.closed = False

    # -- local members (the room's own connections)

    def touch(self, client: str, now: float) -> bool:
        new_local = client not in self._seen
        self._seen[client] = now
        if not new_local:
            return False
        # A member already present through another node (a failover reconnect that beat
        # the expiry) is taken over silently: no second join.
        joined = client not in self._state
        self._remote.pop(client, None)
        if joined:
            self._state[client] = None
        self.bus._write(self.room, client, _Op("set", self._state[client]))
        return joined

    def update(self, client: str, state: Any, now: float) -> bool:
        joined = self.touch(client, now)
        self._state[client] = state
        self.bus._write(self.room, client, _Op("set", state))
        return joined

    def leave(self, client: str) -> bool:
        if self._seen.pop(client, None) is None:
            return False
        self._state.pop(client, None)
        self.bus._write(self.room, client, _Op("del"))
        return True

    def expire(self, now: float) -> list[str]:
        gone = [c for c, t in self._seen.items() if now - t > self.timeout]
        for c in gone:
            self.leave(c)
        wall = self.bus.clock()
        remote = [c for c, x in self._remote.items() if x < wall]
        for c in remote:
            del self._remote[c]
            self._state.pop(c, None)
        return gone + remote

    def members(self) -> dict[str, Any]:
        return dict(self._state)

    def __contains__(self, client: object) -> bool:
        return client in self._state

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for c in list(self._seen):
            self.leave(c)
        self.bus._detach(self)

    def local_clients(self) -> list[str]:
        return list(self._seen)

    # -- remote members (events from other nodes)

    def apply(self, ev: _Event) -> None:
        if ev.k == "refresh":
            for c in ev.cs:
                if c in self._remote:
                    self._remote[c] = ev.x
            return
        client = ev.c
        if client in self._seen:
            return  # ours now (it reconnected here); our refreshes keep it alive
        if ev.k == "del":
            if self._remote.pop(client, None) is not None:
                self._state.pop(client, None)
                self.on_remote(PresenceFrame(event="leave", client=client, reason="left"))
            return
        joined = client not in self._state
        if joined and len(self._remote) >= self.bus.max_clients:
            return  # bounded mirror: ignored until it refreshes after others left
        self._state[client] = ev.s
        self._remote[client] = ev.x
        self.on_remote(
            PresenceFrame(event="join" if joined else "update", client=client, state=ev.s)
        )

    def seed(self, entries: dict[str, tuple[Any, float]]) -> None:
        """Merge the stored entries (after attach or a re-subscription)."""
        wall = self.bus.clock()
        for client, (state, expiry) in entries.items():
            if client in self._seen or expiry < wall:
                continue
            if client not in self._state:
                if len(self._remote) >= self.bus.max_clients:
                    continue
                self._state[client] = state
                self.on_remote(PresenceFrame(event="join", client=client, state=state))
            self._remote[client] = max(expiry, self._remote.get(client, 0.0))


class RedisPresenceBus(PresenceBus):
    """Presence shared by every node through one Redis (module docstring).

    Its Redis connections are handled by the Redis store's machinery, not by a client of
    its own: writes, reads and sweeps go through a
    :class:`~durasync.store.redis.calls.CallConnection` (the calls of one loop tick in one
    write, every wait bounded by ``socket_timeout``: a dead or hung Redis fails the calls,
    never hangs them), and the presence channel through a
    :class:`~durasync.store.redis.subscription.Subscription` (PINGs, replaces a silent
    connection, resubscribes with backoff, and reloads every mirror after each
    resubscription before it applies further events). The bus has instances of its own
    rather than the store's: it is built from a URL and has a lifecycle of its own (the
    rooms service starts and closes it, the server the store), and one more connection
    pair per node is cheap.

    What the bus adds is its write policy: presence is soft state, so a failed write is
    kept (coalesced per member, bounded by ``max_pending``) and retried with backoff
    until Redis takes it, where the store never retries a call (an append could apply
    twice). Sets and deletes of a member's entry are idempotent, so a retry is exact.

    Args:
        url: ``redis://HOST:PORT/DB``.
        timeout: seconds after which an unrefreshed member expires everywhere (the rooms'
            ``presence_timeout``).
        prefix: key and channel prefix.
        max_clients: remote members mirrored per room.
        max_pending: coalesced Redis writes kept while Redis is slow or unreachable.
        clock: wall clock (Unix seconds) for the shared expiry times.
        socket_timeout: longest wait for a Redis reply (seconds).
    """

    def __init__(
        self,
        url: str,
        timeout: float,
        *,
        prefix: str = "durasync:",
        max_clients: int = 10_000,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.time,
        socket_timeout: float = 2.0,
    ) -> None:
        # Imported here: a node without Redis never imports redis-py.
        import redis.asyncio as aioredis

        from durasync.store.redis.calls import CallConnection, Script, connection_pool
        from durasync.store.redis.subscription import Subscription

        self.url = url
        self.timeout = timeout
        self.prefix = prefix
        self.max_clients = max_clients
        self.max_pending = max_pending
        self.clock = clock
        #: This process's id in the published events (its own events are ignored).
        self.node = secrets.token_hex(8)
        self.channel = f"{prefix}presence"
        # The pool serves the subscription only; calls have their own connection.
        self._pool = connection_pool(
            url,
            max_connections=4,
            socket_timeout=socket_timeout,
            connect_timeout=min(socket_timeout, 1.0),
            pool_timeout=socket_timeout,
            health_check_interval=5.0,
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._calls: CallConnection = CallConnection(
            self._pool, timeout=socket_timeout, response_callbacks=self._redis.response_callbacks
        )
        self._sweep: Script = Script(_SWEEP)
        self._subscription: Subscription = Subscription(
            self._redis,
            self.channel.encode(),
            on_message=self._dispatch,
            on_subscribed=self._reload,
        )
        self._rooms: dict[str, _RedisRoomPresence] = {}
        self._pending: dict[tuple[str, str], _Op] = {}
        self._wake = asyncio.Event()
        #: The write and refresh loops (the subscription runs on its own).
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def _hash(self, room: str) -> str:
        return f"{self.prefix}presence:{room}"

    def _zset(self, room: str) -> str:
        return f"{self.prefix}presence-exp:{room}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._subscription.start()
        self._tasks = [
            loop.create_task(self._flush_loop()),
            loop.create_task(self._refresh_loop()),
        ]
        # Best effort: an unreachable Redis must not stop the server from starting.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._subscription.subscribed.wait()

    async def aclose(self) -> None:
        for room in list(self._rooms.values()):
            room.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self._flush_once()
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self._subscription.aclose()
        await self._calls.aclose()
        for close in (self._redis.aclose, self._pool.aclose):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await close()

    async def attach(self, room: str, on_remote: OnRemote) -> RoomPresence:
        rp = _RedisRoomPresence(self, room, on_remote)
        old = self._rooms.get(room)
        if old is not None:
            old.close()
        # Registered first: events arriving during the seed apply and are newer than it.
        self._rooms[room] = rp
        try:
            rp.seed(await self._fetch(room))
        except Exception as exc:
            log.warning("presence of room %s not loaded from redis: %s", room, exc)
        return rp

    def _detach(self, rp: _RedisRoomPresence) -> None:
        if self._rooms.get(rp.room) is rp:
            del self._rooms[rp.room]

    async def counts(self, rooms: Sequence[str]) -> dict[str, int]:
        if not rooms:
            return {}
        now = repr(self.clock())
        try:
            replies = await _all(
                [self._calls.call("ZCOUNT", self._zset(room), now, "+inf") for room in rooms]
            )
        except Exception as exc:
            log.warning("presence counts from redis failed: %s", exc)
            return {}
        return {room: int(n) for room, n in zip(rooms, replies, strict=True)}

    async def _fetch(self, room: str) -> dict[str, tuple[Any, float]]:
        raw, scores = await _all(
            [
                self._calls.call("HGETALL", self._hash(room)),
                self._calls.call("ZRANGE", self._zset(room), 0, -1, "WITHSCORES"),
            ]
        )
        expiry = {_text(c): float(x) for c, x in _score_pairs(scores)}
        out: dict[str, tuple[Any, float]] = {}
        for c, blob in _hash_items(raw):
            client = _text(c)
            if client not in expiry:
                continue
            try:
                state, _node = _entry_decoder.decode(blob)
            except msgspec.DecodeError:
                continue
            out[client] = (state, expiry[client])
        return out

    # -- writes

    def _write(self, room: str, client: str, op: _Op) -> None:
        key = (room, client)
        self._pending.pop(key, None)  # re-insert: the dict's order is the write order
        self._pending[key] = op
        while len(self._pending) > self.max_pending:
            self._pending.pop(next(iter(self._pending)))
        self._wake.set()

    async def _flush_loop(self) -> None:
        delay = 0.05
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush_once()
                delay = 0.05
            except Exception as exc:
                log.warning("presence write to redis failed (retrying): %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                self._wake.set()

    async def _flush_once(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        expiry = self.clock() + self.timeout
        ttl = max(1, int(self.timeout * 2) + 1)
        call = self._calls.call
        calls: list[asyncio.Future[Any]] = []
        try:
            # Issued in one loop tick: one write to Redis.
            for (room, client), op in batch.items():
                h, z = self._hash(room), self._zset(room)
                if op.kind == "set":
                    calls += [
                        call("HSET", h, client, _event_encoder.encode((op.state, self.node))),
                        call("ZADD", z, repr(expiry), client),
                        call("EXPIRE", h, ttl),
                        call("EXPIRE", z, ttl),
                    ]
                    ev = _Event(r=room, n=self.node, k="set", c=client, s=op.state, x=expiry)
                else:
                    calls += [call("HDEL", h, client), call("ZREM", z, client)]
                    ev = _Event(r=room, n=self.node, k="del", c=client)
                calls.append(call("PUBLISH", self.channel, _event_encoder.encode(ev)))
            await _all(calls)
        except BaseException:
            # Keep what was not superseded meanwhile, newest last, within the bound.
            for key, op in batch.items():
                self._pending.setdefault(key, op)
            while len(self._pending) > self.max_pending:
                self._pending.pop(next(iter(self._pending)))
            raise

    async def _refresh_loop(self) -> None:
        """Every ``timeout / 3``: push our live members' expiry and sweep expired entries."""
        while not self._closed:
            await asyncio.sleep(self.timeout / 3)
            try:
                await self._refresh_once()
            except Exception as exc:
                log.warning("presence refresh in redis failed: %s", exc)

    async def _refresh_once(self) -> None:
        now = self.clock()
        expiry = repr(now + self.timeout)
        ttl = max(1, int(self.timeout * 2) + 1)
        rooms = list(self._rooms.values())
        if not rooms:
            return
        call = self._calls.call
        calls: list[asyncio.Future[Any]] = []
        for rp in rooms:
            h, z = self._hash(rp.room), self._zset(rp.room)
            clients = rp.local_clients()
            if clients:
                members = [x for c in clients for x in (expiry, c)]
                ev = _Event(r=rp.room, n=self.node, k="refresh", cs=clients, x=now + self.timeout)
                calls += [
                    call("ZADD", z, *members),
                    call("EXPIRE", h, ttl),
                    call("EXPIRE", z, ttl),
                    call("PUBLISH", self.channel, _event_encoder.encode(ev)),
                ]
            # Any node may sweep; removal is atomic per room and idempotent.
            calls.append(self._calls.run(self._sweep, [repr(now)], keys=[z, h]))
        await _all(calls)

    # -- the one subscription of this node

    async def _reload(self) -> None:
        """After each (re)subscription: events may have been missed, reload the mirrors."""
        rooms = list(self._rooms.values())
        entries = await _all([asyncio.ensure_future(self._fetch(rp.room)) for rp in rooms])
        for rp, seen in zip(rooms, entries, strict=True):
            if self._rooms.get(rp.room) is rp:
                rp.seed(seen)

    def _dispatch(self, data: bytes) -> None:
        try:
            ev = _event_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("undecodable presence event ignored")
            return
        if ev.n == self.node:
            return
        rp = self._rooms.get(ev.r)
        if rp is not None:
            rp.apply(ev)


async def _all(calls: Sequence[asyncio.Future[Any]]) -> list[Any]:
    """The results of ``calls`` (issued together); raises the first failure once all ended."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _score_pairs(reply: Any) -> list[tuple[Any, Any]]:
    """``ZRANGE ... WITHSCORES`` as (member, score) pairs (RESP3 pairs or a RESP2 flat list)."""
    if not reply:
        return []
    if isinstance(reply[0], list | tuple):
        return [(member, score) for member, score in reply]
    return list(zip(reply[::2], reply[1::2], strict=True))


def _hash_items(reply: Any) -> list[tuple[Any, Any]]:
    """``HGETALL`` as (field, value) pairs (a RESP3 map or a RESP2 flat list)."""
    if isinstance(reply, dict):
        return list(reply.items())
    return list(zip(reply[::2], reply[1::2], strict=True))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
