"""In-process wake-ups for live readers, keyed by stream path.

Appends, closures and deletes call :meth:`Notifier.notify`; ``wait_for``
callers sleep on one :class:`asyncio.Event` per path that has waiters. Memory
is bounded by the number of paths with a waiter right now: an event is dropped
as soon as it fires or its last waiter leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

WaitState = Literal["ready", "wait", "gone"]


class Notifier:
    """Wake-ups for ``LogStore.wait_for``. Used from the event loop only."""

    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.Event, int]] = {}
        self._closed = False

    def notify(self, path: str) -> None:
        """Wake every waiter on ``path`` (they re-check their condition)."""
        entry = self._events.pop(path, None)
        if entry is not None:
            entry[0].set()

    def close(self) -> None:
        """Wake every waiter for good; later waits return False at once."""
        self._closed = True
        events, self._events = self._events, {}
        for event, _ in events.values():
            event.set()

    @property
    def waiting_paths(self) -> int:
        return len(self._events)

    async def wait(
        self,
        path: str,
        check: Callable[[], WaitState],
        timeout: float,  # noqa: ASYNC109 - the deadline is part of the contract
    ) -> bool:
        """Wait until ``check()`` says ``ready`` (True), or ``gone``/timeout/close (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            if self._closed:
                return False
            state = check()
            if state != "wait":
                return state == "ready"
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            event, count = self._events.get(path, (None, 0))
            if event is None:
                event = asyncio.Event()
            self._events[path] = (event, count + 1)
            try:
                async with asyncio.timeout(remaining):
                    await event.wait()
            except TimeoutError:
                pass
            finally:
                entry = self._events.get(path)
                if entry is not None and entry[0] is event:
                    if entry[1] <= 1:
                        del self._events[path]
                    else:
                        self._events[path] = (event, entry[1] - 1)
