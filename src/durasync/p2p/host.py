"""``DurableService``: the host side. Publishes a service, keeps offers open, accepts clients.

Usage::

    service = DurableService("http://127.0.0.1:4437", username="alice",
                             identity=Identity.load_or_create(Path("alice.key")),
                             service_fqn="com.example.chat@1.0.0")
    async def echo(channel, connection_id):
        async for message in channel:
            await channel.write(message)
    service.on_channel(echo)
    await service.start()          # claims the name, publishes, emits "published"
    ...
    await service.close()

What it does:

- claims the username with its Ed25519 key, then publishes the service with ``pool_size``
  offers (each a fresh RTCPeerConnection with its control channel); the service UUID is the
  same after every refresh, republish and restart;
- waits for answers on the server's owner feed (a long-poll woken by the answer's append, so
  no polling delay); takes the answered offer out of its pool before handling it and makes a
  new one at once (the pool refills);
- refreshes the TTL when ``ttl_refresh_margin`` (20 %) of it is left, keeping the UUID
  (``ttl-refreshed(expires_at)``); a refresh the server refuses because the service expired
  republishes it; other failures emit ``error(exc, "ttl-refresh")`` and retry after 5 s;
- keeps every client's reliable sessions (bounded: ``max_sessions``, ``session_resume_ttl``)
  so a client that reconnects on a new peer connection resumes its channels exactly where they
  were; a new session is handed to the ``channel`` callbacks / :meth:`channels` iterator with
  the client's connection id;
- watches each peer connection with the control channel's heartbeat (dead after
  ``heartbeat_timeout``), emitting ``connection(id)`` / ``disconnection(id)``.

Events: ``published(uuid, expires_at)``, ``connection(connection_id)``,
``disconnection(connection_id)``, ``ttl-refreshed(expires_at)``, ``error(error, context)``,
``closed``, and ``channel(channel, connection_id)`` for new durable channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from durasync.p2p.channel import SESSION_PROTOCOL, DurableChannel
from durasync.p2p.client import RendezvousClient
from durasync.p2p.control import Control
from durasync.p2p.errors import RendezvousError
from durasync.p2p.events import (
    ChannelAccepted,
    Closed,
    ConnectionOpened,
    Disconnection,
    Emitter,
    Event,
    Published,
    ServiceError,
    TtlRefreshed,
)
from durasync.p2p.identity import Identity
from durasync.p2p.options import ServiceOptions
from durasync.p2p.rtc import CONTROL_LABEL, DataChannel, PeerLink
from durasync.protocol import (
    FrameCodec,
    RegistryFull,
    RemoteProtocolError,
    SessionRegistry,
)
from durasync.protocol.frames import ErrorFrame

__all__ = ["DurableService"]

log = logging.getLogger("durasync.p2p")

_EVENTS = frozenset(
    {"published", "connection", "disconnection", "ttl-refreshed", "error", "closed", "channel"}
)
ChannelHandler = Callable[[DurableChannel, str], Awaitable[None] | None]


class _Peer:
    """One accepted peer connection and the channels attached to it."""

    def __init__(self, link: PeerLink, offer_id: str) -> None:
        self.link = link
        self.offer_id = offer_id
        self.connection_id: str | None = None
        self.control: Control | None = None
        self.channels: dict[DurableChannel, DataChannel] = {}
        #: New channels opened before the control channel's hello named the client.
        self.unannounced: list[DurableChannel] = []
        #: Trickled candidates that arrived before the answer was applied.
        self.early_candidates: list[str] | None = []


class DurableService:
    """A published service that accepts durable connections (see module docs).

    Args:
        url: the rendezvous server.
        username: the owner's name; ``identity``: its key.
        service_fqn: ``reverse.domain.name@semver``.
        options: TTL, pool, sessions, heartbeat, ICE servers, channel bounds.
        handler: called as ``handler(channel, connection_id)`` for every new channel (may be
            a coroutine function; it then runs as a task).
    """

    def __init__(
        self,
        url: str,
        *,
        username: str,
        identity: Identity,
        service_fqn: str,
        options: ServiceOptions | None = None,
        handler: ChannelHandler | None = None,
        client: RendezvousClient | None = None,
    ) -> None:
        self.username = username
        self.identity = identity
        self.service_fqn = service_fqn
        self.options = options or ServiceOptions()
        conn = self.options.connection
        self._client = client or RendezvousClient(url, identity=identity, token=conn.token)
        self._own_client = client is None
        self._emitter = Emitter(_EVENTS)
        self._registry = SessionRegistry(
            new_id=lambda: secrets.token_urlsafe(16),
            codec=FrameCodec("msgpack"),
            limits=conn.channel.session,
            max_sessions=self.options.max_sessions,
            resume_ttl=self.options.session_resume_ttl,
        )
        self._channels: dict[str, DurableChannel] = {}
        self._pool: dict[str, PeerLink] = {}
        self._peers: set[_Peer] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._new_channels: deque[tuple[DurableChannel, str]] = deque()
        self._new_channel_ready = asyncio.Event()
        self._running = False
        self._refilling = False
        self.uuid: str | None = None
        """The service UUID once published (stable across refreshes and restarts)."""
        self.expires_at = 0.0
        """Expiry of the service as the server last said (Unix seconds)."""
        if handler is not None:
            self.on_channel(handler)

    # ------------------------------------------------------------------ public API

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Register ``callback`` for ``published``, ``connection``, ``disconnection``,
        ``ttl-refreshed``, ``error``, ``closed`` or ``channel``; returns an unsubscribe
        function."""
        return self._emitter.on(event, callback)

    def on_channel(self, handler: ChannelHandler) -> Callable[[], None]:
        """Run ``handler(channel, connection_id)`` for every new channel (coroutines as tasks)."""

        def call(channel: DurableChannel, connection_id: str) -> None:
            result = handler(channel, connection_id)
            if asyncio.iscoroutine(result):
                self._spawn(result)

        return self._emitter.on("channel", call)

    def events(self) -> AsyncIterator[Event]:
        return self._emitter.events()

    async def channels(self) -> AsyncIterator[tuple[DurableChannel, str]]:
        """New channels as ``(channel, connection_id)``, until :meth:`close`."""
        while True:
            while self._new_channels:
                yield self._new_channels.popleft()
            if not self._running:
                return
            self._new_channel_ready.clear()
            await self._new_channel_ready.wait()

    @property
    def connection_ids(self) -> set[str]:
        """Clients with a live peer connection right now."""
        return {p.connection_id for p in self._peers if p.connection_id is not None}

    async def start(self) -> None:
        """Claim the name, publish with ``pool_size`` offers, start serving.

        Raises:
            RendezvousError: the server refused (name taken by another key, bad FQN...).
        """
        await self._client.claim(self.username)
        await self._publish()
        self._running = True
        self._spawn(self._feed_loop())
        self._spawn(self._refresh_loop())
        self._spawn(self._expire_loop())

    async def close(self, grace: float = 2.0) -> None:
        """Close every channel (``grace`` s for acknowledgements), every peer connection,
        unpublish the service, emit ``closed``. Idempotent."""
        if not self._running:
            return
        self._running = False
        self._new_channel_ready.set()
        await asyncio.gather(*(c.close(grace) for c in list(self._channels.values())))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for peer in list(self._peers):
            await self._drop_peer(peer, notify=False)
        for link in self._pool.values():
            await link.close()
        self._pool.clear()
        if self.uuid is not None:
            with contextlib.suppress(RendezvousError):
                await self._client.unpublish(self.uuid)
        if self._own_client:
            await self._client.aclose()
        self._emitter.emit(Closed())
        self._emitter.finish()

    def simulate_network_loss(self) -> None:
        """Silently drop all traffic of every current peer connection (tests and drills)."""
        for peer in self._peers:
            peer.link.blackhole()

    # ------------------------------------------------------------------ publishing

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            assert exc is not None
            log.error("service task failed", exc_info=exc)
            self._emitter.emit(ServiceError(exc, "task"))

    async def _new_offer(self) -> tuple[PeerLink, str]:
        link = PeerLink(self.options.connection.ice_servers)
        sdp = await link.make_offer()
        return link, sdp

    async def _publish(self) -> None:
        """(Re)publish with a fresh pool; the UUID stays the same."""
        made = [await self._new_offer() for _ in range(self.options.pool_size)]
        o = self.options
        try:
            pub = await self._client.publish(
                self.username,
                self.service_fqn,
                [sdp for _, sdp in made],
                ttl=o.ttl,
                public=o.is_public,
                metadata=dict(o.metadata),
            )
        except BaseException:
            for link, _ in made:
                await link.close()
            raise
        old, self._pool = self._pool, {}
        for link in old.values():
            await link.close()
        for oid, (link, _) in zip(pub.offer_ids, made, strict=True):
            self._pool[oid] = link
        self.uuid = pub.uuid
        self.expires_at = pub.expires_at
        self._emitter.emit(Published(pub.uuid, pub.expires_at))

    async def _refill(self) -> None:
        if self._refilling:
            return
        self._refilling = True
        try:
            while self._running and len(self._pool) < self.options.pool_size:
                link, sdp = await self._new_offer()
                try:
                    assert self.uuid is not None
                    (oid,) = await self._client.add_offers(self.uuid, [sdp])
                except RendezvousError as exc:
                    await link.close()
                    self._emitter.emit(ServiceError(exc, "refill"))
                    if exc.status in (404, 410):
                        await self._publish()
                        return
                    await asyncio.sleep(1.0)
                    continue
                self._pool[oid] = link
        finally:
            self._refilling = False

    async def _refresh_loop(self) -> None:
        margin = self.options.ttl_refresh_margin
        while self._running:
            delay = max(0.0, (self.expires_at - time.time()) * (1 - margin))
            await asyncio.sleep(delay)
            try:
                assert self.uuid is not None
                self.expires_at = await self._client.refresh(self.uuid, ttl=self.options.ttl)
            except RendezvousError as exc:
                if exc.status in (404, 410):
                    try:
                        await self._publish()
                        continue
                    except RendezvousError as again:
                        exc = again
                self._emitter.emit(ServiceError(exc, "ttl-refresh"))
                await asyncio.sleep(5.0)
                continue
            self._emitter.emit(TtlRefreshed(self.expires_at))

    async def _expire_loop(self) -> None:
        while self._running:
            await asyncio.sleep(min(10.0, self.options.session_resume_ttl / 2))
            for sid in self._registry.expire(time.monotonic()):
                channel = self._channels.pop(sid, None)
                if channel is not None:
                    await channel.close(0)

    # ------------------------------------------------------------------ answers

    async def _feed_loop(self) -> None:
        since = "-1"
        failures = 0
        while self._running:
            try:
                events = await self._client.owner_events(self.username, since, wait=25.0)
            except RendezvousError as exc:
                failures += 1
                self._emitter.emit(ServiceError(exc, "events"))
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            failures = 0
            since = events.next
            for answer in events.answers:
                link = self._pool.pop(answer.offer_id, None)
                if link is None:
                    continue  # an offer of an earlier pool or process
                peer = _Peer(link, answer.offer_id)
                self._peers.add(peer)
                self._spawn(self._accept(peer, answer.sdp))
            for offer_id, cand in events.candidates:
                for peer in self._peers:
                    if peer.offer_id != offer_id:
                        continue
                    if peer.early_candidates is not None:
                        peer.early_candidates.append(cand)
                    else:
                        with contextlib.suppress(Exception):
                            await peer.link.add_remote_candidate(cand)
            if len(self._pool) < self.options.pool_size:
                self._spawn(self._refill())

    async def _accept(self, peer: _Peer, answer_sdp: str) -> None:
        o = self.options.connection
        link = peer.link
        link.on_channel = lambda dc: self._remote_channel(peer, dc)

        def dead() -> None:
            self._spawn(self._drop_peer(peer))

        link.on_dead = dead
        hello = asyncio.get_running_loop().create_future()

        def said_hello(connection_id: str) -> None:
            if not hello.done():
                hello.set_result(connection_id)

        control = Control(
            link,
            interval=o.heartbeat_interval,
            timeout=o.heartbeat_timeout,
            on_dead=dead,
            on_hello=said_hello,
        )
        peer.control = control
        try:
            await link.accept_answer(answer_sdp)
            early, peer.early_candidates = peer.early_candidates or [], None
            for cand in early:
                with contextlib.suppress(Exception):
                    await link.add_remote_candidate(cand)
            async with asyncio.timeout(o.connection_timeout):
                await control.opened.wait()
                control.start()
                peer.connection_id = await hello
        except (TimeoutError, Exception) as exc:
            self._emitter.emit(ServiceError(exc, "accept"))
            await self._drop_peer(peer, notify=False)
            return
        self._emitter.emit(ConnectionOpened(peer.connection_id))
        for channel in peer.unannounced:
            self._announce(channel, peer.connection_id)
        peer.unannounced.clear()

    def _remote_channel(self, peer: _Peer, dc: DataChannel) -> None:
        if dc.label == CONTROL_LABEL:
            return
        if dc.protocol != SESSION_PROTOCOL:
            dc.close()
            return

        def first(raw: str | bytes) -> None:
            self._first_frame(peer, dc, raw)

        dc.on_message = first

    def _first_frame(self, peer: _Peer, dc: DataChannel, raw: str | bytes) -> None:
        try:
            session = self._registry.open(raw, time.monotonic())
        except (RemoteProtocolError, RegistryFull) as exc:
            code = exc.code if isinstance(exc, RemoteProtocolError) else "busy"
            frame = self._registry.codec.encode(
                ErrorFrame(
                    code=code, message=str(exc), permanent=isinstance(exc, RemoteProtocolError)
                )
            )
            with contextlib.suppress(Exception):
                dc.send(frame)
            dc.close()
            return
        sid = session.session_id
        assert sid is not None
        channel = self._channels.get(sid)
        new = channel is None or channel.session is not session
        if channel is None or channel.session is not session:
            channel = DurableChannel(
                dc.label,
                session,
                self.options.connection.channel,
                on_closed=self._channel_closed,
            )
            self._channels[sid] = channel
        for other in self._peers:
            other.channels.pop(channel, None)
        peer.channels[channel] = dc
        channel.attach(dc, handshake_done=True)
        if new:
            if peer.connection_id is None:
                peer.unannounced.append(channel)  # announced with the client's id on hello
            else:
                self._announce(channel, peer.connection_id)

    def _announce(self, channel: DurableChannel, connection_id: str) -> None:
        self._new_channels.append((channel, connection_id))
        self._new_channel_ready.set()
        self._emitter.emit(ChannelAccepted(channel, connection_id))

    def _channel_closed(self, channel: DurableChannel) -> None:
        sid = channel.session.session_id
        if sid is not None and self._channels.get(sid) is channel:
            del self._channels[sid]
            self._registry.discard(channel.session)
        for peer in self._peers:
            peer.channels.pop(channel, None)

    async def _drop_peer(self, peer: _Peer, *, notify: bool = True) -> None:
        if peer not in self._peers:
            return
        self._peers.discard(peer)
        if peer.control is not None:
            peer.control.stop()
        now = time.monotonic()
        for channel, dc in list(peer.channels.items()):
            if channel.attached_link is dc:
                channel.detach()
                self._registry.detach(channel.session, now)
        peer.channels.clear()
        await peer.link.close()
        if notify and peer.connection_id is not None:
            self._emitter.emit(Disconnection(peer.connection_id))
