"""In-process wake-ups for live readers, keyed by stream path.

Appends, closures and deletes call :meth:`Notifier.notify`; ``wait_for``
callers sleep on a future of their own, registered under the path. Memory is
bounded by the number of waiters right now: a path's registrations are
dropped as soon as it is notified, and a waiter that times out or is
cancelled removes its own.

Why one future per waiter instead of an :class:`asyncio.Event` per path under
``asyncio.timeout``: one append wakes every live reader of its stream, and on
the live-tail benchmark (100 readers of one stream) the per-wait cost of an
``asyncio.timeout`` context (a ``Timeout`` object, a rescheduled timer, the
``uncancel`` bookkeeping) was a measurable share of the time between the
append and the last delivery. A bare future, with its timeout served by a
timer shared with the other waits ending in the same 10 ms (:class:`Deadlines`),
does the same job with less work, and ``notify`` resolves every future in one
loop over an insertion-ordered dict, so readers wake in the order they began
waiting.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from typing import Final, Literal

WaitState = Literal["ready", "wait", "gone"]

#: Width (seconds) of a :class:`Deadlines` bucket: how late a wait's timeout
#: may fire (never early).
DEADLINE_GRANULE: Final = 0.01


def _wake_all(futures: Iterable[asyncio.Future[None]]) -> None:
    """Resolve every future of ``futures`` that is still pending (its waiter re-checks)."""
    for future in futures:
        if not future.done():
            future.set_result(None)


async def answer(value: bool) -> bool:
    """An already-known answer as a coroutine, for ``wait_for`` implementations
    that return :meth:`Notifier.wait`'s coroutine instead of awaiting it."""
    return value


class Deadlines:
    """Resolves waiting futures at their deadlines with one event-loop timer
    per ``granule``-wide bucket of deadlines, instead of one timer per wait.

    Why: a live reader sleeps once per delivery (SSE) or per request
    (long-poll), and on uvloop a ``call_at`` plus its ``cancel`` (a libuv
    timer handle each) costs more than the rest of the wait. Waits
    whose deadlines fall in the same bucket share its timer, so thousands of
    waits per second make at most ~1/granule timers per second.

    Guarantees: a future added with ``deadline`` is resolved (result None) at
    the first loop time >= the end of its bucket, i.e. at most ``granule``
    late and never before ``deadline`` (up to the loop's own timer
    resolution, as with ``call_at``). Memory: one entry per pending wait (a
    wait that ends first removes its own with :meth:`discard`) and at most
    one bucket per granule up to the furthest pending deadline. Used from one
    event loop at a time; meeting a new loop (tests run one per test) drops
    the old loop's buckets, whose timers will never fire.
    """

    __slots__ = ("_buckets", "_granule", "_loop")

    def __init__(self, granule: float = DEADLINE_GRANULE) -> None:
        self._granule = granule
        self._buckets: dict[int, dict[asyncio.Future[None], None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], deadline: float
    ) -> int:
        """Resolve ``future`` once ``deadline`` (loop time) has passed; returns its bucket."""
        if loop is not self._loop:
            self._loop = loop
            self._buckets = {}
        key = math.ceil(deadline / self._granule)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
            loop.call_at(key * self._granule, self._fire, key)
        bucket[future] = None
        return key

    def discard(self, key: int, future: asyncio.Future[None]) -> None:
        """Forget ``future`` (its wait ended first); O(1)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.pop(future, None)

    @property
    def pending(self) -> int:
        """Futures registered right now (for tests)."""
        return sum(len(b) for b in self._buckets.values())

    def _fire(self, key: int) -> None:
        bucket = self._buckets.pop(key, None)
        if bucket:
            _wake_all(bucket)


class Notifier:
    """Wake-ups for ``LogStore.wait_for``. Used from the event loop only."""

    def __init__(self) -> None:
        # path -> waiting futures (a dict used as an ordered set: O(1) removal
        # when one waiter times out while many others keep waiting).
        self._waiters: dict[str, dict[asyncio.Future[None], None]] = {}
        self._deadlines = Deadlines()
        self._closed = False

    def notify(self, path: str) -> None:
        """Wake every waiter on ``path`` (they re-check their condition)."""
        waiters = self._waiters.pop(path, None)
        if waiters:
            _wake_all(waiters)

    def close(self) -> None:
        """Wake every waiter for good; later waits return False at once."""
        self._closed = True
        everything, self._waiters = self._waiters, {}
        for waiters in everything.values():
            _wake_all(waiters)

    @property
    def waiting_paths(self) -> int:
        """Paths with at least one waiter right now."""
        return len(self._waiters)

    @property
    def waiters(self) -> int:
        """Waiters registered right now, over all paths."""
        return sum(len(w) for w in self._waiters.values())

    async def wait(
        self,
        path: str,
        check: Callable[[], WaitState],
        timeout: float,  # noqa: ASYNC109 - the deadline is part of the contract
    ) -> bool:
        """Wait until ``check()`` says ``ready`` (True), or ``gone``/timeout/close (False).

        ``check`` is called first and again after every wake-up, so a
        notification that raced ahead of the registration is never missed:
        the caller's condition is the truth, a wake-up only says "look again".
        Cancellation propagates; the waiter's registration is removed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            if self._closed:
                return False
            state = check()
            if state != "wait":
                return state == "ready"
            if deadline - loop.time() <= 0:
                return False
            future: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters.get(path)
            if waiters is None:
                waiters = self._waiters[path] = {}
            waiters[future] = None
            key = self._deadlines.add(loop, future, deadline)
            try:
                await future
            finally:
                self._deadlines.discard(key, future)
                # Still registered after a timeout or a cancellation (a
                # notify pops the whole dict): unregister, O(1).
                current = self._waiters.get(path)
                if current is not None and current.pop(future, 0) is None and not current:
                    del self._waiters[path]
