"""Typed replication events and their bus (asyncio; bounded per subscriber).

Every event carries its ``type`` (one of :data:`~durasync.replication.core.EVENT_TYPES`),
the link's ``link`` name and ``remote``, the time ``at`` and its own fields (docs/replication.md
"Events"). Subscribers iterate :meth:`EventBus.subscribe`; each has its own queue of at most
``limit`` events: a subscriber that does not keep up loses the oldest ones and is told how
many with a ``events:dropped`` event, so a slow reader never holds the links back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import msgspec

__all__ = ["Event", "EventBus", "Subscription"]

log = logging.getLogger("durasync.replication")


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One event; :meth:`to_json` flattens ``fields`` next to the common keys."""

    type: str
    link: str
    remote: str
    at: float
    fields: dict[str, Any] = {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.fields)
        out.update(type=self.type, link=self.link, remote=self.remote, at=self.at)
        return out

    def to_json(self) -> bytes:
        return msgspec.json.encode(self.to_dict())


class _Subscriber:
    __slots__ = ("dropped", "queue", "wake")

    def __init__(self) -> None:
        self.queue: deque[Event] = deque()
        self.dropped = 0
        self.wake = asyncio.Event()


class EventBus:
    """Fan-out of events to any number of subscribers, each bounded to ``limit`` events."""

    def __init__(self, *, limit: int = 1024, max_subscribers: int = 256) -> None:
        self.limit = limit
        self.max_subscribers = max_subscribers
        self._subs: set[_Subscriber] = set()
        self._closed = False
        #: Events published (for tests and metrics).
        self.published = 0

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, event: Event) -> None:
        """Queue ``event`` for every subscriber (never blocks; drops a slow one's oldest)."""
        self.published += 1
        log.debug("replication event %s", event.to_dict())
        for sub in self._subs:
            if len(sub.queue) >= self.limit:
                sub.queue.popleft()
                sub.dropped += 1
            sub.queue.append(event)
            sub.wake.set()

    def close(self) -> None:
        """End every subscription (their iterators stop)."""
        self._closed = True
        for sub in self._subs:
            sub.wake.set()

    def subscribe(self) -> Subscription:
        """Events published from now on (the subscription counts from this call, before
        the first ``anext``), until the bus closes or :meth:`Subscription.aclose`.

        Raises:
            RuntimeError: ``max_subscribers`` are already subscribed.
        """
        if len(self._subs) >= self.max_subscribers:
            raise RuntimeError("too many event subscribers")
        sub = _Subscriber()
        self._subs.add(sub)
        return Subscription(self, sub)

    async def aclose_subscription(self, iterator: AsyncIterator[Event]) -> None:
        """Close an iterator returned by :meth:`subscribe` (idempotent)."""
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


class Subscription:
    """An async iterator of the events of one :meth:`EventBus.subscribe`. It ends when the
    bus closes or :meth:`aclose` is called. A wait for the next event may be cancelled (a
    timeout, for a heartbeat) and iterated again: nothing is lost. Call :meth:`aclose` when
    done (it stays subscribed, and queues up to the bus's ``limit`` events, until then)."""

    __slots__ = ("_bus", "_done", "_sub")

    def __init__(self, bus: EventBus, sub: _Subscriber) -> None:
        self._bus = bus
        self._sub = sub
        self._done = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        sub = self._sub
        while not self._bus._closed and not self._done:
            if not sub.queue:
                sub.wake.clear()
                await sub.wake.wait()
                continue
            if sub.dropped:
                dropped, sub.dropped = sub.dropped, 0
                return Event(
                    type="events:dropped", link="", remote="", at=0.0, fields={"count": dropped}
                )
            return sub.queue.popleft()
        self._close()
        raise StopAsyncIteration

    def _close(self) -> None:
        self._done = True
        self._bus._subs.discard(self._sub)

    async def aclose(self) -> None:
        """Unsubscribe (idempotent); the iterator ends."""
        self._close()
