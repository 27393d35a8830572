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

__all__ = ["Event", "EventBus"]

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

    async def subscribe(self) -> AsyncIterator[Event]:
        """Events published from now on, until the bus closes.

        Raises:
            RuntimeError: ``max_subscribers`` are already subscribed.
        """
        if len(self._subs) >= self.max_subscribers:
            raise RuntimeError("too many event subscribers")
        sub = _Subscriber()
        self._subs.add(sub)
        try:
            while not self._closed:
                if not sub.queue:
                    sub.wake.clear()
                    await sub.wake.wait()
                    continue
                if sub.dropped:
                    dropped, sub.dropped = sub.dropped, 0
                    yield Event(
                        type="events:dropped", link="", remote="", at=0.0, fields={"count": dropped}
                    )
                yield sub.queue.popleft()
        finally:
            self._subs.discard(sub)

    async def aclose_subscription(self, iterator: AsyncIterator[Event]) -> None:
        """Close an iterator returned by :meth:`subscribe` (idempotent)."""
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
