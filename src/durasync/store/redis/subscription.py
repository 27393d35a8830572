"""One Pub/Sub subscription to one channel, kept up for as long as its owner runs.

A node subscribes once per channel (not per stream, room or reader) and fans
the messages out itself: the Redis store's tail channel
(:mod:`durasync.store.redis.tail`) and the presence channel
(:mod:`durasync.rooms.presence`) each use one :class:`Subscription`.

A reader task reads the subscription's replies straight off its connection
(redis-py's per-message PubSub machinery costs as much CPU as the appends that
publish them). The subscription PINGs every ``_PING_EVERY`` seconds and
replaces the connection when nothing (message or PONG) came for
``_DEAD_AFTER`` seconds: a partition without FIN/RST raises nothing by itself.
Any failure resubscribes with backoff (0.05 s doubling to 2 s). After every
confirmed (re)subscription the owner's ``on_subscribed`` runs before any
further message is handed over, so the owner can re-check whatever it may have
missed while the subscription was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from durasync.store.errors import StoreUnavailable
from durasync.store.redis.calls import CLOSE_STEP_TIMEOUT

__all__ = ["Subscription"]

log = logging.getLogger(__name__)

#: PING this often (seconds) when idle, and treat the connection as dead
#: after this long without any message or PONG.
_PING_EVERY = 1.0
_DEAD_AFTER = 3.5

#: Backoff between resubscriptions (seconds): first, and most.
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0


class Subscription:
    """``channel`` on ``redis``, subscribed from :meth:`start` until :meth:`aclose`.

    ``on_message(data)`` gets every message's payload, in order, on the event
    loop; it must not raise (an exception is logged and resubscribes, which is
    safe but costly). ``on_subscribed()`` is awaited after each confirmed
    (re)subscription; an error from it (e.g. StoreUnavailable) resubscribes.
    ``subscribed`` is set while the subscription is confirmed and up;
    ``subscriptions`` counts confirmed (re)subscriptions.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        channel: bytes,
        *,
        on_message: Callable[[bytes], None],
        on_subscribed: Callable[[], Awaitable[None]],
    ) -> None:
        self._redis = redis
        self.channel = channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self.subscribed = asyncio.Event()
        self.subscriptions = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Loop time the subscription last delivered anything (message or PONG).
        self._seen = 0.0
        #: Called with True after each confirmed (re)subscription and with False when a
        #: confirmed subscription is lost (the owner's availability signal).
        self.on_state: Callable[[bool], None] | None = None

    def start(self) -> None:
        """Start subscribing (in a task of its own; returns at once)."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"redis-pubsub-{self.channel.decode(errors='replace')}"
            )

    async def aclose(self) -> None:
        """Unsubscribe and stop (bounded: never hangs on a stuck connection)."""
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(CLOSE_STEP_TIMEOUT):
                await task

    async def _run(self) -> None:
        backoff = _BACKOFF_FIRST
        loop = asyncio.get_running_loop()
        while not self._closed:
            pubsub = self._redis.pubsub()
            reader: asyncio.Task[None] | None = None
            try:
                await pubsub.subscribe(self.channel)
                conn = pubsub.connection
                if conn is None:
                    raise RedisConnectionError("the subscription has no connection")
                self._seen = loop.time()
                reader = asyncio.create_task(self._read(conn))
                while True:
                    await asyncio.wait({reader}, timeout=_PING_EVERY)
                    if reader.done():
                        reader.result()  # its error
                        raise RedisConnectionError("the subscription ended")
                    if loop.time() - self._seen > _DEAD_AFTER:
                        raise RedisConnectionError("the subscription stopped answering PING")
                    if self.subscribed.is_set():
                        backoff = _BACKOFF_FIRST
                    await conn.send_command("PING", b"durasync", check_health=False)
            except (RedisError, OSError, StoreUnavailable) as exc:
                log.warning("redis subscription to %r lost (%s); reconnecting", self.channel, exc)
            except Exception:
                # Never let live delivery die with a bug: log, resubscribe.
                log.exception("redis subscriber of %r failed; resubscribing", self.channel)
            finally:
                if self.subscribed.is_set() and self.on_state is not None:
                    self.on_state(False)
                self.subscribed.clear()
                if reader is not None:
                    reader.cancel()
                    with contextlib.suppress(BaseException):
                        await reader
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_STEP_TIMEOUT):
                        await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _read(self, conn: Any) -> None:
        """Read the subscription's replies until the connection fails."""
        loop = asyncio.get_running_loop()
        while True:
            reply = await conn.read_response(
                timeout=math.inf, disconnect_on_error=False, push_request=True
            )
            self._seen = loop.time()
            if not isinstance(reply, list) or not reply:
                continue
            kind = reply[0]
            if kind == b"message":
                self._on_message(reply[2])
            elif kind == b"subscribe":
                # Confirmed: from now on every message reaches us. Some may
                # have been published while we were not subscribed.
                self.subscriptions += 1
                self.subscribed.set()
                if self.on_state is not None:
                    self.on_state(True)
                await self._on_subscribed()
                self._seen = loop.time()
