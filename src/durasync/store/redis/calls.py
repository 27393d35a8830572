"""The pipelined call connection: every Redis call of a store goes through it.

Calls issued in one event-loop tick go to Redis as one write on one
connection, without waiting for earlier replies (RESP answers in order; Redis
runs them in one pass and shares one fsync), and replies are matched to calls
in order by a reader task; callers await a plain future. So one append is one
EVALSHA round trip with no task, pool checkout or pipeline object of its own,
and a caller cancelled mid-call (a client that went away) ends cancelled
instead of redis-py swallowing the cancellation (redis-py #2028). At most
``_MAX_IN_FLIGHT`` calls are outstanding; more wait in the queue (bounded by
their waiting callers).

Failures: any Redis connection error or timeout fails the calls it affects
with :class:`StoreUnavailable`; commands are never retried (a retried append
could apply twice), and the next call connects anew. A connection that answers
nothing for ``timeout`` seconds while calls wait (a hung Redis, a partition
without FIN/RST) is dropped and its calls fail. A ``NOSCRIPT`` reply (Redis
lost its script cache, e.g. after a restart: the call did not run) loads the
script and re-sends the call once.

Used by :class:`~durasync.store.redis.store.RedisStore` and by the Redis
presence bus (:mod:`durasync.rooms.presence`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import math
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from durasync.store.errors import StoreUnavailable

__all__ = ["CallConnection", "Script", "connection_pool", "redact_url"]

log = logging.getLogger(__name__)

#: Most calls sent and not yet answered on the call connection (callers
#: beyond it wait in the queue, which the waiting callers bound).
_MAX_IN_FLIGHT = 1024

#: Longest wait for each step of closing (the call loop, a connection).
CLOSE_STEP_TIMEOUT = 2.0

#: Longest wait in ``aclose`` for calls already queued or sent to be answered.
_CLOSE_DRAIN_TIMEOUT = 5.0

_pack = cast("Callable[[tuple[Any, ...]], bytes]", hiredis.pack_command)


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for logs and messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def connection_pool(
    url: str,
    *,
    max_connections: int,
    socket_timeout: float,
    connect_timeout: float,
    pool_timeout: float,
    health_check_interval: float,
) -> aioredis.BlockingConnectionPool:
    """A redis-py pool for ``url`` that never retries a command.

    Callers beyond ``max_connections`` wait up to ``pool_timeout`` seconds;
    ``socket_timeout`` bounds every command on a pooled connection. It also
    supplies the connection class and settings of a :class:`CallConnection`.
    """
    return aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        health_check_interval=health_check_interval,
        # Never retry a command: an append whose reply was lost may have
        # been applied, and a blind retry would apply it twice.
        retry=Retry(NoBackoff(), 0),
    )


class Script:
    """A Lua script run by ``EVALSHA`` (its SHA1 computed here, loaded on NOSCRIPT)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _Call:
    """One call: its script (None: a plain command, ``name``), the call as
    RESP bytes and the caller's future (None: the connection's own SCRIPT LOAD)."""

    __slots__ = ("future", "name", "packed", "redone", "script")

    def __init__(
        self,
        script: Script | None,
        name: str | None,
        packed: bytes,
        future: asyncio.Future[Any] | None,
    ) -> None:
        self.script = script
        self.name = name
        self.packed = packed
        self.future = future
        #: Re-sent once after NOSCRIPT (a second NOSCRIPT is an error).
        self.redone = False


def _fail_calls(calls: list[_Call], failure: StoreUnavailable) -> None:
    """Fail the waiting callers of ``calls`` (internal calls and gone callers: nothing)."""
    for call in calls:
        if call.future is not None and not call.future.done():
            call.future.set_exception(failure)


class CallConnection:
    """One connection for calls, written back to back, replies read in order.

    ``pool`` supplies the connection class and settings (its ``socket_timeout``
    is replaced by ``timeout``, enforced by the call loop instead: redis-py
    would start a task per write to apply it). ``response_callbacks`` shape the
    replies of plain commands as redis-py does (e.g. ``HGETALL`` as a dict);
    script replies are returned as Redis sent them. ``on_send`` runs whenever a
    batch of calls is about to be written.

    :meth:`call` and :meth:`run` return a future resolved with the reply, or
    failed with :class:`StoreUnavailable` (any Redis error; for writes the
    outcome is then unknown). Cancelling the future abandons the call: it may
    still run. After :meth:`aclose` new calls fail with StoreUnavailable.
    """

    def __init__(
        self,
        pool: aioredis.ConnectionPool,
        *,
        timeout: float,
        response_callbacks: Mapping[Any, Callable[..., Any]],
        on_send: Callable[[], None] | None = None,
    ) -> None:
        self._connection_class = pool.connection_class
        self._kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        self._timeout = timeout
        self._callbacks = response_callbacks
        self._on_send = on_send
        #: Calls queued, sent (awaiting replies, in order) and to re-send
        #: after NOSCRIPT; see ``_call_loop``.
        self._pending: list[_Call] = []
        self._sent: collections.deque[_Call] = collections.deque()
        self._redo: list[_Call] = []
        self._pending_ready = asyncio.Event()
        self._caller: asyncio.Task[None] | None = None
        #: Loop time of the connection's last progress (a reply, or a write
        #: when nothing was outstanding).
        self._progress_at = 0.0
        self._closed = False

    def call(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one plain command (``call("HGETALL", key)``); its reply shaped by redis-py."""
        return self._enqueue(None, args[0], args)

    def run(
        self, script: Script, args: Sequence[Any], *, keys: Sequence[Any] = ()
    ) -> asyncio.Future[Any]:
        """Queue one ``EVALSHA`` of ``script`` with ``keys`` and ``args``."""
        return self._enqueue(script, None, ("EVALSHA", script.sha, len(keys), *keys, *args))

    async def aclose(self) -> None:
        """Let calls already queued or sent finish (bounded), then fail what is left."""
        self._closed = True
        caller, self._caller = self._caller, None
        if caller is None:
            return
        # Their callers are waiting: the call loop ends once they are answered.
        self._pending_ready.set()
        done, _ = await asyncio.wait({caller}, timeout=_CLOSE_DRAIN_TIMEOUT)
        if not done:
            caller.cancel()
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(CLOSE_STEP_TIMEOUT):
                await caller
        closed = StoreUnavailable("the store is closed")
        self._fail_sent(closed)
        self._fail_queued(closed)

    def _enqueue(
        self, script: Script | None, name: str | None, command: tuple[Any, ...]
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._caller is None or self._caller.done():
            if self._closed:
                future.set_exception(StoreUnavailable("the store is closed"))
                return future
            self._caller = loop.create_task(self._call_loop(), name="redis-calls")
        try:
            # hiredis packs in C (redis-py's pure-Python packing is several times slower).
            packed = _pack(command)
        except TypeError:  # bytearray and the like: as bytes
            packed = _pack(tuple(bytes(a) if isinstance(a, bytearray) else a for a in command))
        self._pending.append(_Call(script, name, packed, future))
        self._pending_ready.set()
        return future

    async def _call_loop(self) -> None:
        """Connect, run the writer and reader halves, replace a failed connection.

        A writer task sends what callers queued as soon as it can (one write
        per loop iteration, without waiting for earlier replies) and a reader
        task matches each reply to the oldest call sent. There is no task, pool
        checkout or pipeline object per call or per batch: on this path they
        cost as much CPU as the calls themselves.

        Failures: a call that was written is never sent again (an append whose
        reply was lost may have been applied), except after a NOSCRIPT reply
        (the call did not run): the script is loaded and the call re-sent once,
        ahead of everything not yet written. A connection that fails, or that
        answers nothing for ``timeout`` seconds while calls wait, is dropped:
        its calls fail with StoreUnavailable (outcome unknown) and the next
        calls connect anew. Calls still queued when a connection cannot be
        made fail with StoreUnavailable (they were never sent).
        """
        loop = asyncio.get_running_loop()
        while not self._closed or self._pending or self._redo:
            if not (self._pending or self._redo):
                self._pending_ready.clear()
                await self._pending_ready.wait()
                continue
            conn = self._connection_class(**self._kwargs)
            writer: asyncio.Task[None] | None = None
            reader: asyncio.Task[None] | None = None
            try:
                try:
                    # Bounded: a Redis that accepts connections but does not answer.
                    async with asyncio.timeout(self._timeout):
                        await conn.connect()  # type: ignore[no-untyped-call]
                except (RedisError, OSError, TimeoutError) as exc:
                    self._fail_queued(StoreUnavailable(f"redis: cannot connect: {exc}"))
                    continue
                self._progress_at = loop.time()
                writer = loop.create_task(self._write_calls(conn))
                reader = loop.create_task(self._read_replies(conn))
                if await self._watch(writer, reader):
                    return  # closing, and every call was answered
            except (RedisError, OSError) as exc:
                if self._sent:
                    log.warning("redis call connection lost with calls in flight (%s)", exc)
                self._fail_sent(StoreUnavailable(f"redis: {exc}"))
            except Exception as exc:
                # Never let the calls die with a bug: log, fail what was sent, go on.
                log.exception("redis call connection failed; reconnecting")
                self._fail_sent(StoreUnavailable(f"redis call failed: {exc!r}"))
            except BaseException as exc:
                self._fail_sent(StoreUnavailable(f"redis call failed: {exc!r}"))
                self._fail_queued(StoreUnavailable(f"redis call failed: {exc!r}"))
                raise
            finally:
                for half in (writer, reader):
                    if half is not None:
                        half.cancel()
                        with contextlib.suppress(BaseException):
                            await half
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_STEP_TIMEOUT):
                        await conn.disconnect()

    async def _watch(self, writer: asyncio.Task[None], reader: asyncio.Task[None]) -> bool:
        """Wait while the connection works. True: closed with every call answered.

        Raises:
            RedisError: the connection ended or made no progress for ``timeout``.
        """
        loop = asyncio.get_running_loop()
        check_every = max(min(self._timeout / 4, 0.5), 0.01)
        while True:
            done, _ = await asyncio.wait(
                {writer, reader}, timeout=check_every, return_when=asyncio.FIRST_COMPLETED
            )
            if done:
                for task in done:
                    task.result()  # its error
                if writer in done and self._closed:
                    return True
                raise RedisConnectionError("the call connection ended")
            if self._sent and loop.time() - self._progress_at > self._timeout:
                raise RedisTimeoutError(f"no reply from redis for {self._timeout:g} s")

    async def _write_calls(self, conn: Any) -> None:
        """Send queued calls as they come (the writer half of ``_call_loop``)."""
        loop = asyncio.get_running_loop()
        ready = self._pending_ready
        on_send = self._on_send
        while True:
            if self._closed and not (self._pending or self._redo or self._sent):
                return
            if not self._redo and (not self._pending or len(self._sent) >= _MAX_IN_FLIGHT):
                ready.clear()
                await ready.wait()
                continue
            if on_send is not None:
                on_send()
            batch: list[_Call] = []
            if self._redo:
                # NOSCRIPT: load each script once, then its calls, ahead of the rest.
                loaded: set[int] = set()
                for call in self._redo:
                    script = call.script
                    if script is not None and id(script) not in loaded:
                        loaded.add(id(script))
                        load = _pack(("SCRIPT", "LOAD", script.source))
                        batch.append(_Call(None, "SCRIPT", load, None))
                    batch.append(call)
                self._redo = []
            room = max(_MAX_IN_FLIGHT - len(self._sent) - len(batch), 0)
            batch += self._pending[:room]
            del self._pending[:room]
            packed = b"".join([call.packed for call in batch])
            if not self._sent:
                self._progress_at = loop.time()
            # Sent from here on: on any failure their outcome is unknown.
            self._sent.extend(batch)
            await conn.send_packed_command(packed, check_health=False)

    async def _read_replies(self, conn: Any) -> None:
        """Match replies to sent calls in order (the reader half of ``_call_loop``)."""
        loop = asyncio.get_running_loop()
        sent = self._sent
        callbacks = self._callbacks
        while True:
            try:
                reply = await conn.read_response(timeout=math.inf, disconnect_on_error=False)
            except ResponseError as exc:
                reply = exc
            if not sent:
                raise RedisConnectionError("a reply that no call asked for")
            call = sent.popleft()
            self._progress_at = loop.time()
            if (len(sent) < _MAX_IN_FLIGHT and self._pending) or (self._closed and not sent):
                self._pending_ready.set()
            future = call.future
            if isinstance(reply, NoScriptError) and call.script is not None and not call.redone:
                call.redone = True
                self._redo.append(call)
                self._pending_ready.set()
                continue
            if future is None or future.done():
                continue  # internal (SCRIPT LOAD), or the caller went away; it ran anyway
            if isinstance(reply, RedisError):
                future.set_exception(StoreUnavailable(f"redis: {reply}"))
                continue
            if call.name is not None:
                # As redis-py's parse_response: the command's reply callback.
                callback = callbacks.get(call.name)
                if callback is not None:
                    try:
                        reply = callback(reply)
                    except Exception as exc:  # a reply redis-py cannot shape
                        future.set_exception(StoreUnavailable(f"redis: {exc!r}"))
                        continue
            future.set_result(reply)

    def _fail_sent(self, failure: StoreUnavailable) -> None:
        sent = list(self._sent)
        self._sent.clear()
        _fail_calls(sent, failure)

    def _fail_queued(self, failure: StoreUnavailable) -> None:
        queued, self._pending, self._redo = [*self._redo, *self._pending], [], []
        _fail_calls(queued, failure)
