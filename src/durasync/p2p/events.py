"""Typed events of the p2p peers, delivered to callbacks and to async iterators.

Each event is a frozen dataclass whose ``name`` is the seed's event name (``"reconnecting"``,
``"queue-overflow"``...). :class:`Emitter` calls the callbacks registered with
``on(name, callback)`` with the event's fields as positional arguments (as the seed's
``on('reconnecting', (attempt, max, delay) => ...)``) and hands the event object to every
running :meth:`Emitter.events` iterator. A callback that raises is logged, never propagated.
Each iterator buffers at most ``limit`` events; beyond that the oldest are dropped and counted
in :attr:`Emitter.dropped` (a consumer that stops reading cannot grow memory).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "BufferedAmountLow",
    "ChannelAccepted",
    "ChannelClosed",
    "ChannelError",
    "ChannelOpened",
    "Closed",
    "Connected",
    "ConnectionOpened",
    "Disconnected",
    "Disconnection",
    "Emitter",
    "Event",
    "Failed",
    "MessageEvent",
    "Published",
    "QueueOverflow",
    "Reconnecting",
    "ServiceError",
    "StateEvent",
    "TtlRefreshed",
]

log = logging.getLogger("durasync.p2p")


@dataclass(frozen=True, slots=True)
class Event:
    name: ClassVar[str] = ""


# -- DurableConnection ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateEvent(Event):
    """``state(new, old)``."""

    name: ClassVar[str] = "state"
    state: str
    previous: str


@dataclass(frozen=True, slots=True)
class Connected(Event):
    name: ClassVar[str] = "connected"


@dataclass(frozen=True, slots=True)
class Reconnecting(Event):
    """``reconnecting(attempt, max_attempts, delay)``: attempt ``attempt`` starts in ``delay`` s."""

    name: ClassVar[str] = "reconnecting"
    attempt: int
    max_attempts: int
    delay: float


@dataclass(frozen=True, slots=True)
class Disconnected(Event):
    name: ClassVar[str] = "disconnected"


@dataclass(frozen=True, slots=True)
class Failed(Event):
    """``failed(error, permanent)``."""

    name: ClassVar[str] = "failed"
    error: BaseException
    permanent: bool


@dataclass(frozen=True, slots=True)
class Closed(Event):
    name: ClassVar[str] = "closed"


# -- DurableChannel -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelOpened(Event):
    """``open``; ``resumed`` False when the remote lost the session (messages may be missing)."""

    name: ClassVar[str] = "open"
    resumed: bool = True


@dataclass(frozen=True, slots=True)
class MessageEvent(Event):
    name: ClassVar[str] = "message"
    data: str | bytes


@dataclass(frozen=True, slots=True)
class ChannelError(Event):
    name: ClassVar[str] = "error"
    error: BaseException


@dataclass(frozen=True, slots=True)
class ChannelClosed(Event):
    name: ClassVar[str] = "close"


@dataclass(frozen=True, slots=True)
class BufferedAmountLow(Event):
    name: ClassVar[str] = "buffered-amount-low"


@dataclass(frozen=True, slots=True)
class QueueOverflow(Event):
    """``queue-overflow(dropped)``: ``dropped`` queued messages were discarded (count/age)."""

    name: ClassVar[str] = "queue-overflow"
    dropped: int


# -- DurableService -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published(Event):
    """``published(uuid, expires_at)``."""

    name: ClassVar[str] = "published"
    uuid: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class ConnectionOpened(Event):
    """``connection(connection_id)``: a peer connection of that client is up."""

    name: ClassVar[str] = "connection"
    connection_id: str


@dataclass(frozen=True, slots=True)
class Disconnection(Event):
    """``disconnection(connection_id)``: that peer connection ended."""

    name: ClassVar[str] = "disconnection"
    connection_id: str


@dataclass(frozen=True, slots=True)
class ChannelAccepted(Event):
    """``channel(channel, connection_id)``: a client opened a new durable channel."""

    name: ClassVar[str] = "channel"
    channel: Any
    connection_id: str


@dataclass(frozen=True, slots=True)
class TtlRefreshed(Event):
    name: ClassVar[str] = "ttl-refreshed"
    expires_at: float


@dataclass(frozen=True, slots=True)
class ServiceError(Event):
    """``error(error, context)``."""

    name: ClassVar[str] = "error"
    error: BaseException
    context: str


class Emitter:
    """Callbacks by event name plus any number of bounded async iterators."""

    def __init__(self, names: frozenset[str], *, limit: int = 1024) -> None:
        self._names = names
        self._handlers: dict[str, list[Callable[..., Any]]] = {}
        self._queues: list[tuple[deque[Event], asyncio.Event]] = []
        self._limit = limit
        self._finished = False
        self.dropped = 0
        """Events dropped from iterators that did not keep up."""

    def on(self, name: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Call ``callback(*fields)`` on every ``name`` event; returns an unsubscribe function.

        Raises:
            ValueError: ``name`` is not one of this object's events.
        """
        if name not in self._names:
            raise ValueError(f"unknown event {name!r}; known: {sorted(self._names)}")
        self._handlers.setdefault(name, []).append(callback)

        def off() -> None:
            with_cb = self._handlers.get(name, [])
            if callback in with_cb:
                with_cb.remove(callback)

        return off

    def has_handlers(self, name: str) -> bool:
        return bool(self._handlers.get(name))

    def emit(self, event: Event) -> None:
        args = tuple(getattr(event, f.name) for f in dataclasses.fields(event))
        for cb in list(self._handlers.get(event.name, ())):
            try:
                cb(*args)
            except Exception:
                log.exception("%s callback failed", event.name)
        for queue, ready in self._queues:
            if len(queue) >= self._limit:
                queue.popleft()
                self.dropped += 1
            queue.append(event)
            ready.set()

    def finish(self) -> None:
        """No more events: iterators end once they yielded what they hold."""
        self._finished = True
        for _, ready in self._queues:
            ready.set()

    async def events(self) -> AsyncIterator[Event]:
        """Every event from now on, in order, until :meth:`finish`."""
        queue: deque[Event] = deque()
        ready = asyncio.Event()
        entry = (queue, ready)
        self._queues.append(entry)
        try:
            while True:
                while queue:
                    yield queue.popleft()
                if self._finished:
                    return
                ready.clear()
                await ready.wait()
        finally:
            self._queues.remove(entry)
