"""``DurableConnection``: the connecting side, which reconnects by itself.

Usage::

    conn = DurableConnection("http://127.0.0.1:4437", username="alice",
                             service_fqn="com.example.chat@1.0.0")
    chat = conn.create_channel("chat")
    conn.on("reconnecting", lambda attempt, max_attempts, delay: ...)
    await conn.connect()
    await chat.write("hello")
    async for message in chat: ...
    await conn.close()

Each attempt finds the service (by username + FQN, re-resolved every time, or by UUID), takes
one of its pooled offers, answers it (a fresh RTCPeerConnection: aiortc has no ICE restart),
and waits (``connection_timeout``) for the peer connection and its control channel. An offer
another client won meanwhile (409) is simply replaced by the next free one within the same
attempt. Once connected, every channel gets a data channel on the new peer connection and its
reliable session resumes: nothing in flight is lost or doubled (see
:mod:`durasync.p2p.channel`).

A peer connection is declared dead when the control channel's heartbeat stops for
``heartbeat_timeout`` (5 s) or aiortc reports it failed/closed. Then: state ``reconnecting``,
event ``disconnected``, and attempts follow the backoff schedule (1 s, 2 s, 4 s ... 30 s, each
±20 %), each announced by ``reconnecting(attempt, max_attempts, delay)``. A failed attempt
emits ``failed(error, permanent=False)``; after ``max_reconnect_attempts`` consecutive failures
(or a refusal that retrying cannot fix: 400, 401, 403, and 404 before the first connection)
the state becomes ``failed`` and
``failed(error, permanent=True)`` is emitted. A connection that stayed up at least
``heartbeat_timeout`` resets the attempt counter.

States and events follow rondevu 0.9: ``connecting`` (initial), ``connected``,
``reconnecting``, ``disconnected`` (unused: a drop always reconnects), ``failed``, ``closed``;
events ``state(new, old)``, ``connected``, ``reconnecting(attempt, max, delay)``,
``disconnected``, ``failed(error, permanent)``, ``closed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from durasync.p2p.channel import SESSION_PROTOCOL, DurableChannel, new_client_session
from durasync.p2p.client import RendezvousClient
from durasync.p2p.control import Control
from durasync.p2p.errors import PeerConnectionFailed, RendezvousError
from durasync.p2p.events import (
    Closed,
    Connected,
    Disconnected,
    Emitter,
    Event,
    Failed,
    Reconnecting,
    StateEvent,
)
from durasync.p2p.options import ChannelOptions, ConnectionOptions
from durasync.p2p.rtc import PeerLink
from durasync.protocol import (
    Backoff,
    BackoffPolicy,
    ConnectionState,
    ConnectionStateMachine,
    InvalidTransition,
    Trigger,
)

__all__ = ["ConnectionState", "DurableConnection", "PeerConnectionFailed"]

log = logging.getLogger("durasync.p2p")

_EVENTS = frozenset({"state", "connected", "reconnecting", "disconnected", "failed", "closed"})


def _permanent(exc: BaseException, *, ever_connected: bool) -> bool:
    """Refusals retrying cannot fix. A missing service (404) is permanent only before the
    first connection (a wrong name); afterwards its host may be restarting."""
    if isinstance(exc, RendezvousError):
        return exc.status in (400, 401, 403, 413) or (exc.status == 404 and not ever_connected)
    return False


class DurableConnection:
    """A connection to a published service that survives peer-connection loss (module docs).

    Args:
        url: the rendezvous server (``http://host:port``).
        username, service_fqn: find the service by name (re-resolved on every attempt)...
        uuid: ...or by its UUID.
        options: reconnect schedule, timeouts, heartbeat, ICE servers, channel bounds.
        client: an existing :class:`RendezvousClient` (tests); made from ``url`` otherwise.
        rng: random source in [0, 1) for the backoff jitter.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        service_fqn: str | None = None,
        uuid: str | None = None,
        options: ConnectionOptions | None = None,
        client: RendezvousClient | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if uuid is None and (username is None or service_fqn is None):
            raise ValueError("give username and service_fqn, or uuid")
        self.username = username
        self.service_fqn = service_fqn
        self.uuid = uuid
        self.options = options or ConnectionOptions()
        o = self.options
        self._client = client or RendezvousClient(url, token=o.token)
        self._own_client = client is None
        self.connection_id = secrets.token_urlsafe(12)
        """Identifies this connection to the host across reconnects."""
        self._machine = ConnectionStateMachine()
        self._machine.fire(Trigger.CONNECT)  # the seed starts in "connecting"
        self._backoff = Backoff(
            BackoffPolicy(
                initial_delay=o.reconnect_backoff_base,
                max_delay=o.reconnect_backoff_max,
                multiplier=2.0,
                min_delay=0.0,
                max_attempts=o.max_reconnect_attempts,
                stable_after=o.heartbeat_timeout,
                jitter=o.reconnect_jitter,
            ),
            rng=rng,
        )
        self._emitter = Emitter(_EVENTS)
        self._channels: dict[str, DurableChannel] = {}
        self._link: PeerLink | None = None
        self._control: Control | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._failure: BaseException | None = None
        self.connections = 0
        """Peer connections established so far."""
        self.service_uuid: str | None = uuid
        """The service's UUID once found."""

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> ConnectionState:
        return self._machine.state

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Register ``callback`` for ``state``, ``connected``, ``reconnecting``,
        ``disconnected``, ``failed`` or ``closed``; returns an unsubscribe function."""
        return self._emitter.on(event, callback)

    def events(self) -> AsyncIterator[Event]:
        """Every event from now on until ``closed``/``failed``."""
        return self._emitter.events()

    def create_channel(self, label: str, options: ChannelOptions | None = None) -> DurableChannel:
        """The durable channel ``label`` (created once; the same object on later calls).

        It opens on the current peer connection and on every later one.

        Raises:
            ValueError: empty or over-long label.
        """
        if not label or len(label) > 128:
            raise ValueError("channel label must be 1-128 characters")
        channel = self._channels.get(label)
        if channel is not None and not channel.closed:
            return channel
        opts = options or self.options.channel
        channel = DurableChannel(
            label, new_client_session(opts), opts, on_closed=self._channel_closed
        )
        self._channels[label] = channel
        if self._link is not None and self.state is ConnectionState.CONNECTED:
            self._open_on(self._link, channel)
        return channel

    def channel(self, label: str) -> DurableChannel | None:
        return self._channels.get(label)

    async def connect(self) -> None:
        """Start connecting and wait until ``connected`` (retrying with backoff meanwhile).

        Raises:
            PeerConnectionFailed: the connection reached ``failed`` (or was closed) first.
        """
        if self._task is None:
            if self.state is not ConnectionState.CONNECTING:
                raise PeerConnectionFailed(
                    f"connect() is legal in 'connecting', not {self.state.value!r}"
                )
            self._task = asyncio.create_task(self._run(), name="DurableConnection")
        while self.state not in (
            ConnectionState.CONNECTED,
            ConnectionState.FAILED,
            ConnectionState.CLOSED,
        ):
            self._state_changed.clear()
            await self._state_changed.wait()
        if self.state is not ConnectionState.CONNECTED:
            raise PeerConnectionFailed(str(self._failure or self.state.value)) from self._failure

    async def wait_for_state(self, *states: ConnectionState) -> ConnectionState:
        while self.state not in states:
            self._state_changed.clear()
            await self._state_changed.wait()
        return self.state

    async def close(self, grace: float = 5.0) -> None:
        """Close the channels (waiting up to ``grace`` s for acknowledgements), the peer
        connection, and stop. Idempotent."""
        if self.state is ConnectionState.CLOSED:
            return
        if self.state is ConnectionState.CONNECTED:
            await asyncio.gather(*(c.close(grace) for c in list(self._channels.values())))
        self._closing.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for c in list(self._channels.values()):
            await c.close(0)
        await self._drop_link()
        if self._own_client:
            await self._client.aclose()
        self._fire(Trigger.CLOSE)
        self._emitter.emit(Closed())
        self._emitter.finish()

    def simulate_network_loss(self) -> None:
        """Drop all traffic of the current peer connection silently (tests and drills)."""
        if self._link is not None:
            self._link.blackhole()

    # ------------------------------------------------------------------ the loop

    def _fire(self, trigger: Trigger) -> None:
        try:
            change = self._machine.fire(trigger)
        except InvalidTransition:
            return
        self._state_changed.set()
        self._emitter.emit(StateEvent(change.current.value, change.previous.value))

    async def _run(self) -> None:
        o = self.options
        while not self._closing.is_set():
            try:
                async with asyncio.timeout(o.connection_timeout):
                    link = await self._attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._drop_link()
                if _permanent(exc, ever_connected=self.connections > 0):
                    self._fail(exc)
                    return
                self._emitter.emit(Failed(exc, False))
                if not await self._wait_backoff(exc):
                    return
                continue
            self.connections += 1
            self._backoff.connection_opened(time.monotonic())
            self._fire(Trigger.OPENED)
            self._emitter.emit(Connected())
            for channel in list(self._channels.values()):
                if not channel.closed:
                    self._open_on(link, channel)
            dead = asyncio.Event()
            link.on_dead = dead.set
            if self._control is not None:
                self._control.on_dead = dead.set
            if link.dead:
                dead.set()
            await dead.wait()
            self._backoff.connection_lost(time.monotonic())
            for channel in self._channels.values():
                channel.detach()
            await self._drop_link()
            if self._closing.is_set():
                return
            self._fire(Trigger.RETRY)
            self._emitter.emit(Disconnected())
            if not await self._wait_backoff(ConnectionError("peer connection lost")):
                return

    async def _wait_backoff(self, exc: BaseException) -> bool:
        delay = self._backoff.next_delay()
        if delay is None:
            self._fail(
                PeerConnectionFailed(
                    f"gave up after {self._backoff.attempts} attempts; last: {exc}"
                )
            )
            return False
        if self.state is ConnectionState.CONNECTING:
            self._fire(Trigger.RETRY)
        self._emitter.emit(
            Reconnecting(self._backoff.attempts, self.options.max_reconnect_attempts, delay)
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closing.wait()
        return not self._closing.is_set()

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        self._fire(Trigger.FAIL)
        self._emitter.emit(Failed(exc, True))
        self._emitter.finish()

    async def _attempt(self) -> PeerLink:
        o = self.options
        c = self._client
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            asked = loop.time()
            left = max(0.1, o.connection_timeout - (asked - started))
            if self.uuid is not None:
                found = await c.discover(uuid=self.uuid, wait=min(5.0, left))
            else:
                found = await c.discover(
                    username=self.username, fqn=self.service_fqn, wait=min(5.0, left)
                )
            self.service_uuid = found.uuid
            if found.offer_id is None or found.offer_sdp is None:
                # Every offer taken: the server's wait parked us until the pool refilled or
                # its wait ran out; never spin if a server answers without waiting.
                await asyncio.sleep(max(0.0, 0.25 - (loop.time() - asked)))
                continue
            link = PeerLink(o.ice_servers)
            self._link = link
            answer = await link.make_answer(found.offer_sdp)
            try:
                token = await c.answer(found.uuid, found.offer_id, answer)
            except RendezvousError as exc:
                await self._drop_link()
                if exc.status in (404, 409, 410):
                    continue  # another client won this offer, or it just went: take the next
                raise
            break
        trickle: asyncio.Task[None] | None = None
        if "a=end-of-candidates" not in found.offer_sdp:
            trickle = asyncio.create_task(self._trickle(link, found.uuid, found.offer_id, token))
        try:
            opened = asyncio.Event()
            await link.connected.wait()
            await link.control_ready.wait()
            control = Control(
                link,
                interval=o.heartbeat_interval,
                timeout=o.heartbeat_timeout,
                on_dead=opened.clear,
            )
            await control.opened.wait()
            control.start(hello=self.connection_id)
            self._control = control
        finally:
            if trickle is not None:
                trickle.cancel()
        return link

    async def _trickle(self, link: PeerLink, uuid: str, offer_id: str, token: str) -> None:
        since = "-1"
        while not link.dead:
            try:
                cands, since = await self._client.offerer_candidates(
                    uuid, offer_id, token, since, wait=10.0
                )
            except RendezvousError:
                return
            for cand in cands:
                with contextlib.suppress(Exception):
                    await link.add_remote_candidate(cand)

    def _open_on(self, link: PeerLink, channel: DurableChannel) -> None:
        channel.attach(link.create_channel(channel.label, SESSION_PROTOCOL))

    def _channel_closed(self, channel: DurableChannel) -> None:
        if self._channels.get(channel.label) is channel:
            del self._channels[channel.label]

    async def _drop_link(self) -> None:
        control, self._control = self._control, None
        if control is not None:
            control.stop()
        link, self._link = self._link, None
        if link is not None:
            link.on_dead = _nothing
            await link.close()


def _nothing() -> None:
    return None
