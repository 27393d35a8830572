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
append and the last delivery. A bare future plus one ``call_at`` handle does
the same job with less work, and ``notify`` resolves every future in one
loop over an insertion-ordered dict, so readers wake in the order they began
waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

WaitState = Literal["ready", "wait", "gone"]


async def answer(value: bool) -> bool:
    """An already-known answer as a coroutine, for ``wait_for`` implementations
    that return :meth:`Notifier.wait`'s coroutine instead of awaiting it."""
    return value


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Notifier:
    """Wake-ups for ``LogStore.wait_for``. Used from the event loop only."""

    def __init__(self) -> None:
        # path -> waiting futures (a dict used as an ordered set: O(1) removal
        # when one waiter times out while many others keep waiting).
        self._waiters: dict[str, dict[asyncio.Future[None], None]] = {}
        self._closed = False

    def notify(self, path: str) -> None:
        """Wake every waiter on ``path`` (they re-check their condition)."""
        waiters = self._waiters.pop(path, None)
        if waiters:
            for future in waiters:
                if not future.done():
                    future.set_result(None)

    def close(self) -> None:
        """Wake every waiter for good; later waits return False at once."""
        self._closed = True
        everything, self._waiters = self._waiters, {}
        for waiters in everything.values():
            for future in waiters:
                if not future.done():
                    future.set_result(None)

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
            timer = loop.call_at(deadline, _expire, future)
            try:
                await future
            finally:
                timer.cancel()
                # Still registered after a timeout or a cancellation (a
                # notify pops the whole dict): unregister, O(1).
                current = self._waiters.get(path)
                if current is not None and current.pop(future, 0) is None and not current:
                    del self._waiters[path]
