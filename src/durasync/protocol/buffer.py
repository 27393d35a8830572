"""A bounded outgoing buffer (count, bytes, age) with an explicit overflow policy.

Messages the application sends while the connection is down (or while the
stateful session's replay window is full) wait here. Every bound is hard
(DESIGN invariant 6) and every drop is reported as an :class:`Overflow`
event, never silent:

- ``policy="reject"`` (default): :meth:`OutgoingBuffer.push` raises
  :class:`~durasync.protocol.errors.BufferFull` and nothing is enqueued; the
  caller still owns the message (backpressure).
- ``policy="drop_oldest"``: the oldest messages are evicted to make room and
  reported in one ``Overflow`` event.

Messages older than ``max_age`` are evicted by :meth:`OutgoingBuffer.expire`
(reason ``"age"``) whatever the policy: a buffered chat line from ten
minutes ago is usually worse than none. ``max_age=None`` disables ageing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from durasync.protocol.errors import BufferFull

__all__ = ["BufferLimits", "OutgoingBuffer", "Overflow", "Payload", "payload_size"]

Payload = str | bytes
"""One application message: text (a WebSocket text frame) or binary."""

OverflowPolicy = Literal["reject", "drop_oldest"]


def payload_size(payload: Payload) -> int:
    """Size in bytes on the wire (UTF-8 for text)."""
    return len(payload) if isinstance(payload, bytes) else len(payload.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class BufferLimits:
    """Bounds of an :class:`OutgoingBuffer`.

    Attributes:
        max_messages: most messages held at once (>= 1).
        max_bytes: most payload bytes held at once (>= 1).
        max_age: seconds a message may wait before it is dropped; None = forever.
        policy: what :meth:`OutgoingBuffer.push` does when a bound is hit.
    """

    max_messages: int = 1000
    max_bytes: int = 1 << 20
    max_age: float | None = 60.0
    policy: OverflowPolicy = "reject"

    def __post_init__(self) -> None:
        if self.max_messages < 1 or self.max_bytes < 1:
            raise ValueError("max_messages and max_bytes must be >= 1")
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError("max_age must be > 0 or None")
        if self.policy not in ("reject", "drop_oldest"):
            raise ValueError(f"unknown overflow policy {self.policy!r}")


@dataclass(frozen=True, slots=True)
class Overflow:
    """Messages dropped from a buffer, oldest first, and why.

    ``reason`` is ``"count"``, ``"bytes"`` (evicted by ``drop_oldest``) or
    ``"age"`` (expired).
    """

    dropped: tuple[Payload, ...]
    reason: str


@dataclass(slots=True)
class _Item:
    payload: Payload
    size: int
    enqueued_at: float


class OutgoingBuffer:
    """FIFO of outgoing messages with hard bounds (sans-I/O: ``now`` is passed in)."""

    def __init__(self, limits: BufferLimits | None = None) -> None:
        self.limits = limits or BufferLimits()
        self._items: deque[_Item] = deque()
        self._bytes = 0
        self._events: list[Overflow] = []

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        """Payload bytes currently held."""
        return self._bytes

    def push(self, payload: Payload, now: float) -> None:
        """Append ``payload``.

        Raises:
            BufferFull: policy ``reject`` and a bound would be exceeded, or the
                message alone exceeds ``max_bytes`` (any policy). Nothing changed.
        """
        size = payload_size(payload)
        lim = self.limits
        if size > lim.max_bytes:
            raise BufferFull("too_large")
        over_count = len(self._items) + 1 > lim.max_messages
        over_bytes = self._bytes + size > lim.max_bytes
        if over_count or over_bytes:
            if lim.policy == "reject":
                raise BufferFull("count" if over_count else "bytes")
            dropped: list[Payload] = []
            while self._items and (
                len(self._items) + 1 > lim.max_messages or self._bytes + size > lim.max_bytes
            ):
                dropped.append(self._popleft().payload)
            self._events.append(Overflow(tuple(dropped), "count" if over_count else "bytes"))
        self._items.append(_Item(payload, size, now))
        self._bytes += size

    def peek(self) -> Payload | None:
        """The oldest message, or None when empty."""
        return self._items[0].payload if self._items else None

    def pop(self) -> Payload:
        """Remove and return the oldest message.

        Raises:
            IndexError: the buffer is empty.
        """
        return self._popleft().payload

    def push_front(self, payload: Payload, enqueued_at: float) -> None:
        """Put back a message that was popped but could not be sent.

        Ignores the bounds on purpose: the message was already admitted, so
        re-admitting it must not fail or evict (the total is unchanged).
        """
        size = payload_size(payload)
        self._items.appendleft(_Item(payload, size, enqueued_at))
        self._bytes += size

    def oldest_enqueued_at(self) -> float | None:
        """Enqueue time of the oldest message (for :meth:`push_front`)."""
        return self._items[0].enqueued_at if self._items else None

    def expire(self, now: float) -> None:
        """Drop messages older than ``max_age`` (one ``Overflow`` event, reason ``age``)."""
        max_age = self.limits.max_age
        if max_age is None:
            return
        dropped: list[Payload] = []
        while self._items and now - self._items[0].enqueued_at >= max_age:
            dropped.append(self._popleft().payload)
        if dropped:
            self._events.append(Overflow(tuple(dropped), "age"))

    def next_expiry(self) -> float | None:
        """When the oldest message expires (for the I/O shell's timer), or None."""
        if self.limits.max_age is None or not self._items:
            return None
        return self._items[0].enqueued_at + self.limits.max_age

    def clear(self) -> list[Payload]:
        """Remove and return everything, oldest first (no event)."""
        out = [it.payload for it in self._items]
        self._items.clear()
        self._bytes = 0
        return out

    def events_received(self) -> list[Overflow]:
        """Overflow events since the last call (drained)."""
        ev, self._events = self._events, []
        return ev

    def _popleft(self) -> _Item:
        item = self._items.popleft()
        self._bytes -= item.size
        return item
