"""Live delivery for the Redis store: the node's one tail subscription and its hints.

``wait_for`` holds no Redis connection: each store (node) has one Pub/Sub
subscription on ``P tail`` (:class:`~durasync.store.redis.subscription.Subscription`)
and fans its messages out to its local waiters; a store's own appends wake its
local waiters directly. After every (re)subscription all waiters re-check and
everything remembered from messages is dropped, so nothing published while
the subscription was away is missed.

Hints a node keeps (never authoritative state): the last tail announced per
path while subscribed (a live reader at the tail parks without asking Redis),
and, for streams that live readers on the node watch, a bounded window of the
newest messages the tail messages carried. A reader whose ``wait_for`` just
returned True gets its next ``read`` of that stream answered from the window
without a round trip (messages at offsets are immutable facts); such a read's
``up_to_date`` holds as of the node's last tail message for the stream (at
most one Pub/Sub delivery behind Redis: a later append wakes the next wait,
so nothing is missed or reordered). Every other read asks Redis, so a client
that appended through node A and reads through node B sees its append. Delete,
re-create and trim publish a re-check that drops what nodes hold of the path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from durasync.store.base import OFFSET_NOW, OFFSET_START, Entry, ReadResult
from durasync.store.errors import BadOffset, StoreUnavailable
from durasync.store.notify import Deadlines
from durasync.store.offsets import OFFSET_FMT, decode_offset
from durasync.store.redis.scripts import (
    Written,
    carried_messages,
    parse_tail_message,
)
from durasync.store.redis.subscription import Subscription

__all__ = ["Delivery", "Probe", "Tail"]

log = logging.getLogger(__name__)

#: A delivery handed from a woken ``wait_for`` to the same task's next read
#: is used only this soon after the wake-up (seconds) ...
_HANDOFF_MAX_AGE = 1.0
#: ... and at most this many are kept (oldest dropped).
_HANDOFF_MAX = 4096

#: Recent-message windows of watched streams: at most this many streams
#: (least recently updated dropped), each at most this many messages and
#: bytes, dropped when no reader waited on the stream for this long (s).
_RECENT_MAX_PATHS = 256
_RECENT_MAX_MESSAGES = 128
_RECENT_MAX_BYTES = 64 * 1024
_RECENT_UNWATCHED = 10.0

#: Paths whose last announced tail a node remembers (oldest dropped).
_KNOWN_MAX = 65536

#: Asks Redis where a wait stands: ``probe(path, offset, index)`` gives True
#: (data past the offset, or closed), False (no such stream) or the index to
#: wait past (``index``: the one resolved by an earlier probe, else None).
Probe = Callable[[str, str, "int | None"], Awaitable["bool | int"]]


class Delivery:
    """Messages an append published with its wake-up (immutable facts)."""

    __slots__ = ("at", "closed", "content_type", "first_byte", "first_index", "messages")

    def __init__(
        self,
        first_index: int,
        first_byte: int,
        messages: list[bytes],
        *,
        closed: bool,
        content_type: str,
        at: float,
    ) -> None:
        self.first_index = first_index
        self.first_byte = first_byte
        self.messages = messages
        self.closed = closed
        self.content_type = content_type
        self.at = at

    @property
    def end_index(self) -> int:
        return self.first_index + len(self.messages)

    def read(
        self, offset: str, max_bytes: int, max_messages: int, *, at_tail: bool
    ) -> ReadResult | None:
        """The read from ``offset`` these messages answer, or None (ask Redis).

        ``at_tail``: the caller knows no later append (its node's last tail
        message ends here), so a read reaching the end is ``up_to_date``.
        """
        try:
            index, byte_pos = decode_offset(offset)
        except BadOffset:
            return None
        k = index - self.first_index
        if not 0 <= k < len(self.messages):
            return None
        pos = self.first_byte
        for data in self.messages[:k]:
            pos += len(data)
        if pos != byte_pos:
            return None
        entries: list[Entry] = []
        used = 0
        current = offset
        for data in self.messages[k:]:
            if entries and (used + len(data) > max_bytes or len(entries) >= max_messages):
                break
            index += 1
            byte_pos += len(data)
            following = OFFSET_FMT % (index, byte_pos)
            entries.append(Entry(data, current, following))
            current = following
            used += len(data)
        at_end = index == self.end_index
        return ReadResult(
            entries=entries,
            next_offset=current,
            up_to_date=at_end and (at_tail or self.closed),
            closed=at_end and self.closed,
            content_type=self.content_type,
        )


class Recent:
    """The newest messages of a watched stream, contiguous, as tail messages told.

    Bounded (``_RECENT_MAX_MESSAGES`` and ``_RECENT_MAX_BYTES``, oldest
    dropped). Only used to answer live readers (see :meth:`Tail.hand_off`).
    """

    __slots__ = (
        "closed",
        "content_type",
        "first_byte",
        "first_index",
        "messages",
        "size",
        "watched_at",
    )

    def __init__(self, delivery: Delivery, watched_at: float) -> None:
        self.first_index = delivery.first_index
        self.first_byte = delivery.first_byte
        self.messages = list(delivery.messages)
        self.size = sum(len(m) for m in self.messages)
        self.content_type = delivery.content_type
        self.closed = delivery.closed
        #: Last time a reader waited on the stream (unwatched windows are dropped).
        self.watched_at = watched_at
        self._trim()

    @property
    def end_index(self) -> int:
        return self.first_index + len(self.messages)

    def extend(self, delivery: Delivery) -> bool:
        """Append the next messages; False (unchanged) unless they follow on."""
        if delivery.first_index != self.end_index or self.closed:
            return False
        self.messages.extend(delivery.messages)
        self.size += sum(len(m) for m in delivery.messages)
        self.closed = delivery.closed
        self._trim()
        return True

    def _trim(self) -> None:
        drop = 0
        size = self.size
        messages = self.messages
        while len(messages) - drop > 1 and (
            len(messages) - drop > _RECENT_MAX_MESSAGES or size > _RECENT_MAX_BYTES
        ):
            size -= len(messages[drop])
            self.first_byte += len(messages[drop])
            drop += 1
        if drop:
            del messages[:drop]
            self.first_index += drop
            self.size = size

    def delivery_from(self, index: int, at: float) -> Delivery | None:
        """The window's messages from ``index`` on, or None when it does not hold it."""
        k = index - self.first_index
        if not 0 <= k < len(self.messages):
            return None
        byte_pos = self.first_byte + sum(len(m) for m in self.messages[:k])
        return Delivery(
            index,
            byte_pos,
            self.messages[k:],
            closed=self.closed,
            content_type=self.content_type,
            at=at,
        )


class Waiter:
    """One local ``wait_for`` call: its resolved index and how it ended."""

    __slots__ = ("future", "index", "recheck", "verdict")

    def __init__(self) -> None:
        #: Set while the waiter sleeps: a bare future (not an ``Event`` under
        #: ``asyncio.timeout``: less work per wait), its timeout shared with
        #: other waits (``notify.Deadlines``).
        self.future: asyncio.Future[None] | None = None
        #: The index the caller waits past; None while its check is in flight.
        self.index: int | None = None
        self.verdict: bool | None = None
        self.recheck = False

    def wake(self) -> None:
        """Wake the sleeping waiter (its flags say why); a no-op while awake."""
        future = self.future
        if future is not None and not future.done():
            future.set_result(None)


class Tail:
    """One store's live-delivery state: its subscription, waiters and hints (module docstring).

    Everything runs on the store's event loop. Set :attr:`closed` when the
    store starts closing (waits then end as on timeout); :meth:`aclose` ends
    the subscription and every wait.
    """

    def __init__(self, redis: aioredis.Redis, channel: bytes) -> None:
        self.subscription = Subscription(
            redis, channel, on_message=self.dispatch, on_subscribed=self._resubscribed
        )
        #: Set while subscribed (read on every message: no property in between).
        self._up = self.subscription.subscribed
        self._waiters: dict[str, set[Waiter]] = {}
        self._deadlines = Deadlines()
        #: (task, path) -> what that task's next read of the path is answered with.
        self.handoffs: dict[tuple[asyncio.Task[Any], str], Delivery] = {}
        #: path -> newest messages, for streams live readers watch here.
        self._recent: dict[str, Recent] = {}
        #: path -> (tail index, closed) as the last tail message announced,
        #: valid while the subscription stays up (cleared on resubscribe).
        self._known: dict[str, tuple[int, bool]] = {}
        #: Tail messages that were not ours (another publisher on the channel).
        self.malformed_messages = 0
        self.closed = False

    @property
    def parked(self) -> int:
        """Waits parked right now, over all paths: their position is resolved (``now`` is
        fixed to a tail index) and they wait for news."""
        return sum(1 for ws in self._waiters.values() for w in ws if w.index is not None)

    @property
    def subscribed(self) -> bool:
        """The subscription is up: every tail message from now on reaches this node."""
        return self._up.is_set()

    def start(self) -> None:
        self.subscription.start()

    async def aclose(self) -> None:
        """End the subscription; every wait returns False (as on timeout)."""
        self.closed = True
        await self.subscription.aclose()
        for waiters in self._waiters.values():
            for w in waiters:
                w.verdict = False
                w.wake()
        self._waiters.clear()
        self.handoffs.clear()
        self._recent.clear()

    # -- news: tail messages and the store's own writes ------------------------

    def dispatch(self, data: bytes) -> None:
        """One tail message (from any node, this one included)."""
        try:
            header = parse_tail_message(data)
        except (ValueError, UnicodeDecodeError):
            # Someone else publishes on our channel: say so, but do not flood.
            self.malformed_messages += 1
            if self.malformed_messages % 1000 == 1:
                log.warning(
                    "ignoring malformed tail messages (%d so far): %r",
                    self.malformed_messages,
                    data[:100],
                )
            return
        path, tail_index, flag = header[0], header[1], header[2]
        self._learn(path, tail_index, flag)
        if path not in self._waiters and path not in self._recent:
            return
        delivery: Delivery | None = None
        carried = carried_messages(data, header)
        if carried is not None:
            first_index, first_byte, content_type, messages = carried
            delivery = Delivery(
                first_index,
                first_byte,
                messages,
                closed=flag == "c",
                content_type=content_type,
                at=asyncio.get_running_loop().time(),
            )
        self._remember(path, flag, delivery)
        self._wake(path, tail_index, flag)

    def appended(self, path: str, written: Written, messages: Sequence[bytes]) -> None:
        """This store's own append wrote ``messages``: wake local waiters without
        waiting for the tail message (which comes too, and changes nothing then)."""
        first_index, first_byte, tail_index, flag, carried, content_type = written
        self._learn(path, tail_index, flag)
        if path in self._waiters or path in self._recent:
            delivery = (
                Delivery(
                    first_index,
                    first_byte,
                    [bytes(m) for m in messages],
                    closed=flag == "c",
                    content_type=content_type,
                    at=asyncio.get_running_loop().time(),
                )
                if carried
                else None
            )
            self._remember(path, flag, delivery)
            self._wake(path, tail_index, flag)

    def deleted(self, path: str) -> None:
        """This store deleted ``path`` (the script published it): local waiters re-check."""
        self._learn(path, 0, "g")
        self._wake(path, 0, "g")

    def _learn(self, path: str, tail_index: int, flag: str) -> None:
        """Remember the newest tail a message announced (bounded, oldest dropped)."""
        known = self._known
        before = known.pop(path, None)
        if flag == "g":
            # A deleted or re-created stream: data handed from before is moot.
            for key in [k for k in self.handoffs if k[1] == path]:
                del self.handoffs[key]
            self._recent.pop(path, None)
            return
        if not self._up.is_set():
            return
        if len(known) >= _KNOWN_MAX:
            del known[next(iter(known))]
        # Own append replies and tail messages race on two connections: keep
        # the newest tail (tails only grow until a delete, which pops it).
        if before is not None and before[0] > tail_index:
            known[path] = before
        else:
            known[path] = (tail_index, flag == "c" or (before is not None and before[1]))

    def _remember(self, path: str, flag: str, delivery: Delivery | None) -> None:
        """Keep a watched stream's newest messages (for live readers' handoffs)."""
        recent = self._recent
        window = recent.pop(path, None)
        if delivery is None or flag == "g":
            return  # a change without data (delete, close only, large or TTL): forget
        now = delivery.at
        if window is not None:
            if now - window.watched_at > _RECENT_UNWATCHED:
                window = None  # nobody waits here any more
            elif not window.extend(delivery):
                window = Recent(delivery, window.watched_at)
        elif path in self._waiters:
            window = Recent(delivery, now)
        if window is None:
            return
        if len(recent) >= _RECENT_MAX_PATHS:
            del recent[next(iter(recent))]
        recent[path] = window

    def _wake(self, path: str, tail_index: int, flag: str) -> None:
        waiters = self._waiters.get(path)
        if not waiters:
            return
        for w in waiters:
            if w.verdict is not None:
                continue
            if flag == "g":
                # Deleted (or soft-deleted): the stream may be recreated; re-check.
                w.recheck = True
            elif w.index is None:
                w.recheck = True
            elif tail_index > w.index or flag == "c":
                w.verdict = True
            else:
                continue
            w.wake()

    async def _resubscribed(self) -> None:
        # Messages may have been missed: forget what they said, everyone re-checks.
        self._known.clear()
        self._recent.clear()
        for waiters in self._waiters.values():
            for w in waiters:
                w.recheck = True
                w.wake()

    # -- waits and handoffs ----------------------------------------------------------

    async def wait(self, path: str, offset: str, timeout: float, probe: Probe) -> bool:  # noqa: ASYNC109
        """:meth:`LogStore.wait_for` on this node; ``probe`` asks Redis when hints cannot tell."""
        if offset not in (OFFSET_START, OFFSET_NOW):
            try:
                decode_offset(offset)
            except BadOffset:
                return True  # malformed: let the caller's read report it
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        w = Waiter()
        # Registered before the probe: a tail message racing the probe re-checks.
        self._waiters.setdefault(path, set()).add(w)
        index: int | None = None
        try:
            while True:
                w.recheck = False
                w.index = None
                state = self._announced(path, offset) if index is None else None
                if state is None:
                    try:
                        state = await probe(path, offset, index)
                    except StoreUnavailable:
                        # closed meanwhile: as on timeout (the LogStore contract);
                        # else the caller's read reports the outage
                        return not self.closed
                if state is True:
                    if index is None and offset not in (OFFSET_START, OFFSET_NOW):
                        index = decode_offset(offset)[0]
                    if index is not None:
                        self.hand_off(path, index)
                    return True
                if state is False:
                    return False
                index = w.index = state
                window = self._recent.get(path)
                if window is not None:
                    window.watched_at = loop.time()
                while w.verdict is None and not w.recheck:
                    if deadline - loop.time() <= 0:
                        return False
                    # Woken by ``wake`` (the flags say why) or by the deadline
                    # (the next pass sees it passed).
                    future = w.future = loop.create_future()
                    key = self._deadlines.add(loop, future, deadline)
                    try:
                        await future
                    finally:
                        w.future = None
                        self._deadlines.discard(key, future)
                if w.verdict is not None:
                    if w.verdict:
                        self.hand_off(path, index)
                    return w.verdict
                if loop.time() >= deadline:
                    return False
        finally:
            waiters = self._waiters.get(path)
            if waiters is not None:
                waiters.discard(w)
                if not waiters:
                    del self._waiters[path]

    def _announced(self, path: str, offset: str) -> bool | int | None:
        """What the announced tail says of a wait past ``offset``: True (data past
        it, or closed), the index to wait past, or None (ask Redis).

        Subscribed since that message, and every append and close publishes
        one: a later change will wake us, so the announced tail decides
        without asking Redis (DS §5 live).
        """
        known = self._known.get(path)
        if known is None or offset in (OFFSET_START, OFFSET_NOW) or not self.subscribed:
            return None
        wanted = decode_offset(offset)[0]
        return True if known[0] > wanted or known[1] else wanted

    def hand_off(self, path: str, index: int) -> None:
        """Keep the recent messages from ``index`` for this task's next read of ``path``.

        Only the task whose ``wait_for`` just returned True gets them: a live
        reader, reading right away. Other reads always ask Redis.
        """
        task = asyncio.current_task()
        window = self._recent.get(path)
        if task is None or window is None:
            return
        now = asyncio.get_running_loop().time()
        window.watched_at = now
        delivery = window.delivery_from(index, now)
        if delivery is None:
            return
        handoffs = self.handoffs
        if len(handoffs) >= _HANDOFF_MAX:
            del handoffs[next(iter(handoffs))]
        handoffs[(task, path)] = delivery

    def take_handoff(
        self, path: str, offset: str, max_bytes: int, max_messages: int
    ) -> ReadResult | None:
        """The read this task's woken wait handed over, or None (ask Redis).

        The messages an append carried are the answer (offsets and data are
        immutable facts). ``up_to_date`` is as of this node's last tail message
        for the stream (at most one Pub/Sub delivery behind Redis; a later
        append wakes the next wait).
        """
        delivery = self.handoffs.pop((asyncio.current_task(), path), None)  # type: ignore[arg-type]
        if delivery is None or asyncio.get_running_loop().time() - delivery.at > _HANDOFF_MAX_AGE:
            return None
        known = self._known.get(path)
        at_tail = known is not None and known[0] == delivery.end_index and self.subscribed
        return delivery.read(offset, max_bytes, max_messages, at_tail=at_tail)
