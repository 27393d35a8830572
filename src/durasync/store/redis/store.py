"""The Redis :class:`LogStore`: the store's I/O, on top of the scripts, calls and tail.

Every stream operation is one script call (:mod:`.scripts`) on the store's
call connection (:mod:`.calls`); live waits and their hints are the tail's
(:mod:`.tail`). See the package docstring for the layout and guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from durasync.store.base import (
    OFFSET_NOW,
    OFFSET_START,
    AppendResult,
    CreateResult,
    LogStore,
    Producer,
    ReadResult,
    StreamConfig,
    StreamInfo,
)
from durasync.store.engine import StreamMeta, confirm_create, live_meta, stream_info
from durasync.store.errors import (
    BadOffset,
    DataGone,
    NoSuchStream,
    StoreClientError,
    StoreUnavailable,
    StreamExists,
)
from durasync.store.notify import answer
from durasync.store.offsets import decode_offset
from durasync.store.redis import scripts
from durasync.store.redis.calls import (
    CLOSE_STEP_TIMEOUT,
    CallConnection,
    Script,
    connection_pool,
    redact_url,
)
from durasync.store.redis.scripts import ForkPoint
from durasync.store.redis.tail import Tail
from durasync.store.rules import DEFAULT_CONTENT_TYPE, fork_config, is_expired

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

#: Attempts of a create whose fork source changed under it (then 503).
_CREATE_ATTEMPTS = 5

#: Longest wait in ``open`` for the tail subscription to come up (seconds).
_OPEN_SUBSCRIBE_TIMEOUT = 5.0


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a shared task's exception as seen (its callers may all have left)."""
    if not task.cancelled():
        task.exception()


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_text(*texts: str) -> None:
    """Paths, producer ids and Stream-Seq values must be UTF-8 (Redis keys).

    Raises:
        StoreClientError: a text holds lone surrogates (HTTP 400).
    """
    for text in texts:
        if not _encodable(text):
            raise StoreClientError(f"not valid UTF-8 text: {text[:64]!r}")


class RedisStore(LogStore):
    """The ``redis`` backend; see the package docstring for layout and guarantees.

    ``url`` is a ``redis://HOST:PORT/DB`` (or ``rediss://``, ``unix://``) URL.
    ``max_connections`` bounds the connection pool (the subscription and the
    start-up check; calls share one connection of their own); ``socket_timeout``
    bounds every command, so a hung Redis gives StoreUnavailable, not a hang.
    ``clock`` supplies ``now`` when a call passes none.
    """

    name = "redis"
    shared = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "durasync:",
        max_connections: int = 64,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        pool_timeout: float = 2.0,
        health_check_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._clock = clock
        self._pool = connection_pool(
            url,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
            health_check_interval=health_check_interval,
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        #: Live reads issued in one tick share one call until it is sent.
        self._read_joins: dict[tuple[str, str, int, int], asyncio.Task[ReadResult]] = {}
        self._calls = CallConnection(
            self._pool,
            timeout=socket_timeout,
            response_callbacks=self._redis.response_callbacks,
            on_send=self._read_joins.clear,
        )
        self._tail = Tail(self._redis, (prefix + "tail").encode())
        self._tail.subscription.on_state = self._subscription_state
        #: Whether the subscription was ever confirmed (a later loss is "Redis lost").
        self._was_up = False
        self._closed = False

    @property
    def subscriptions(self) -> int:
        """Times the tail subscription was (re)confirmed; tests and metrics read it."""
        return self._tail.subscription.subscriptions

    @property
    def malformed_messages(self) -> int:
        """Tail messages that were not ours (another publisher on the channel)."""
        return self._tail.malformed_messages

    @property
    def available(self) -> bool:
        """True while the node's subscription to Redis is confirmed and up: it PINGs Redis
        every second, so a Redis that is down or unreachable shows within a few seconds."""
        return not self._closed and self._tail.subscription.subscribed.is_set()

    def _subscription_state(self, up: bool) -> None:
        """Lifecycle lines and the observer on losing and regaining Redis."""
        if up:
            if self._was_up:
                log.warning("redis at %s regained", redact_url(self.url))
            else:
                log.info("redis at %s connected", redact_url(self.url))
            self._was_up = True
        elif self._closed:
            return
        else:
            log.warning("redis at %s lost", redact_url(self.url))
        if self.observer is not None:
            self.observer.availability(up)

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        """Check that Redis answers and start the node's one Pub/Sub subscriber.

        Raises:
            StoreUnavailable: Redis does not answer.
        """
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise StoreUnavailable(
                f"redis at {redact_url(self.url)} is unavailable: {exc}"
            ) from exc
        self._tail.start()
        # Live delivery relies on the subscription: wait (bounded) until it is up.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_OPEN_SUBSCRIBE_TIMEOUT):
                await self._tail.subscription.subscribed.wait()

    async def close(self) -> None:
        self._closed = True
        self._tail.closed = True
        await self._calls.aclose()
        await self._tail.aclose()
        for close in (self._redis.aclose, self._pool.aclose):
            try:
                async with asyncio.timeout(CLOSE_STEP_TIMEOUT):
                    await close()
            except (TimeoutError, RedisError, OSError) as exc:
                log.warning("closing the redis connections: %r", exc)

    # -- calls -------------------------------------------------------------------

    def _run(self, script: Script, args: list[Any]) -> asyncio.Future[Any]:
        """Run one script call on the store's call connection (await the result).

        Every call issued during one event-loop iteration goes to Redis in one
        write (Redis runs them in one pass and one fsync); each call is still
        its own atomic script. The caller awaits a plain future and redis-py
        runs in the connection's own tasks, so cancelling a caller (a client
        that went away) can never be swallowed or half-applied inside redis-py.

        A plain function returning the call's future: no coroutine of its own
        on every call.

        Raises:
            StoreUnavailable: any Redis error (outcome unknown for writes).
        """
        return self._calls.run(script, args)

    def _command(self, *args: Any) -> asyncio.Future[Any]:
        """Run one plain command on the same connection as the scripts (await the result)."""
        return self._calls.call(*args)

    async def _fetch_raw(self, path: str) -> dict[bytes, bytes]:
        raw = cast("dict[bytes, bytes]", await self._command("HGETALL", self.prefix + "m:" + path))
        return raw

    async def _fetch_meta(self, path: str) -> StreamMeta | None:
        raw = await self._fetch_raw(path)
        return scripts.parse_meta(path, scripts.flat(raw)) if raw else None

    # -- create ------------------------------------------------------------------

    async def create(
        self,
        path: str,
        config: StreamConfig,
        *,
        initial: Sequence[bytes] = (),
        closed: bool = False,
        now: float | None = None,
    ) -> CreateResult:
        _check_text(path, config.forked_from or "")
        when = self._now(now)
        for _ in range(_CREATE_ATTEMPTS):
            existing = await self._fetch_meta(path)
            if existing is not None and not (
                not existing.soft_deleted and is_expired(existing.config, existing.touched_at, when)
            ):
                return confirm_create(path, existing, config, closed)
            args = await self._create_args(path, config, initial, closed, when)
            res = await self._run(scripts.CREATE, args)
            status = res[0]
            if status == b"created":
                meta = scripts.parse_meta(path, res[1:])
                return CreateResult(created=True, info=stream_info(meta))
            if status == b"exists":
                return confirm_create(path, scripts.parse_meta(path, res[1:]), config, closed)
            if status == b"exists_deleted":
                raise StreamExists(f"{path!r} is held by a deleted stream that forks still read")
            if status == b"source_not_found":
                raise NoSuchStream(f"fork source {config.forked_from!r} does not exist")
            if status == b"source_gone":
                raise DataGone(f"fork source {config.forked_from!r} was deleted")
            # ``retry``: the fork source changed between our look and the script.
        raise StoreUnavailable(f"create of {path!r} kept racing changes of its fork source")

    async def _create_args(
        self,
        path: str,
        config: StreamConfig,
        initial: Sequence[bytes],
        closed: bool,
        now: float,
    ) -> list[Any]:
        """Validate a create and compute what the script writes (DS §2 PUT, §6)."""
        if config.fork_sub_offset and config.forked_from is None:
            raise BadOffset("a fork sub-offset needs a fork source")
        fork: ForkPoint | None = None
        effective = requested = config
        if config.forked_from is not None:
            source, fork = await self._fork_point(config, now)
            effective = fork_config(config, source.config, source.tail)
        elif not config.content_type:
            effective = requested = msgspec.structs.replace(
                config, content_type=DEFAULT_CONTENT_TYPE
            )
        return scripts.create_args(
            self.prefix,
            path,
            effective=effective,
            requested=requested,
            closed=closed,
            fork=fork,
            incarnation=uuid.uuid4().hex,
            initial=initial,
            now=now,
        )

    async def _fork_point(self, config: StreamConfig, now: float) -> tuple[StreamMeta, ForkPoint]:
        """The fork source of ``config`` as it is now, and where the fork starts (DS §6).

        Raises:
            NoSuchStream, DataGone: the source is absent, expired or deleted.
            BadOffset: the fork offset is not a boundary the source retains.
        """
        assert config.forked_from is not None
        if config.fork_sub_offset and config.fork_offset is None:
            raise BadOffset("a fork sub-offset needs an explicit fork offset")
        raw = await self._fetch_raw(config.forked_from)
        if not raw:
            raise NoSuchStream(f"fork source {config.forked_from!r} does not exist")
        source = scripts.parse_meta(config.forked_from, scripts.flat(raw))
        # The script checks it still is this incarnation of the source.
        source_inc = raw.get(b"inc", b"").decode()
        if not source.soft_deleted and is_expired(source.config, source.touched_at, now):
            if source.fork_refs > 0:
                raise DataGone(f"fork source {config.forked_from!r} expired")
            raise NoSuchStream(f"fork source {config.forked_from!r} does not exist")
        if source.soft_deleted:
            raise DataGone(f"fork source {config.forked_from!r} was deleted")
        if config.fork_offset is None:
            return source, ForkPoint("t", 0, 0, source_inc)
        index, byte_pos = await self._boundary(source, config.fork_offset, now)
        return source, ForkPoint("o", index, byte_pos, source_inc)

    async def _boundary(self, source: StreamMeta, offset: str, now: float) -> tuple[int, int]:
        """Validate ``offset`` as a boundary of ``source`` (DS §6: else 400)."""
        index, byte_pos = decode_offset(offset)
        if index == source.tail_index and byte_pos == source.tail_byte:
            return index, byte_pos
        if index >= source.tail_index:
            raise BadOffset(f"fork offset {offset} is beyond the source's tail")
        try:
            await self._read_call(source.path, offset, 1, 1, now, touch=False)
        except DataGone as exc:
            raise BadOffset(f"fork offset {offset} is below the source's retained data") from exc
        return index, byte_pos

    # -- append ------------------------------------------------------------------

    async def append(
        self,
        path: str,
        messages: Sequence[bytes],
        *,
        content_type: str | None = None,
        producer: Producer | None = None,
        stream_seq: str | None = None,
        close: bool = False,
        now: float | None = None,
    ) -> AppendResult:
        if not messages and not close:
            raise ValueError("append of no messages without close")
        _check_text(path, producer.producer_id if producer else "", stream_seq or "")
        args = scripts.append_args(
            self.prefix,
            path,
            messages,
            content_type=content_type,
            producer=producer,
            stream_seq=stream_seq,
            close=close,
            now=self._now(now),
        )
        observer = self.observer
        if observer is None:
            res = await self._run(scripts.APPEND, args)
        else:
            started = time.perf_counter()
            res = await self._run(scripts.APPEND, args)
            observer.commit(time.perf_counter() - started, None)
        result, written = scripts.append_reply(path, messages, producer, res)
        if written is not None:
            self._tail.appended(path, written, messages)
        return result

    async def append_at(
        self,
        path: str,
        offset: str,
        messages: Sequence[bytes],
        *,
        close: bool = False,
        now: float | None = None,
    ) -> AppendResult:
        if not messages and not close:
            raise ValueError("append of no messages without close")
        _check_text(path)
        args = scripts.append_at_args(
            self.prefix, path, offset, messages, close=close, now=self._now(now)
        )
        res = await self._run(scripts.APPEND_AT, args)
        result, written = scripts.append_reply(path, messages, None, res)
        if written is not None:
            if isinstance(res, bytes) and res.startswith(b"rebased "):
                # The stream moved to a new start: local waiters re-check, as the script
                # published for the other nodes.
                self._tail.deleted(path)
            else:
                self._tail.appended(path, written, messages)
        return result

    # -- read --------------------------------------------------------------------

    async def read(
        self,
        path: str,
        offset: str = OFFSET_START,
        *,
        max_bytes: int = 1 << 20,
        max_messages: int = 10_000,
        now: float | None = None,
    ) -> ReadResult:
        _check_text(path)
        if now is not None:
            return await self._read_call(path, offset, max_bytes, max_messages, now, touch=True)
        tail = self._tail
        if tail.handoffs:
            # The read right after this task's wait_for was woken by an append
            # that carried its messages: no round trip. Only streams without
            # TTL or expiry carry data (nothing to renew or check).
            handed = tail.take_handoff(path, offset, max_bytes, max_messages)
            if handed is not None:
                return handed
        # Live readers woken by one append all read the same range in the same
        # loop tick: they share one Redis call. A read is joined only until it
        # is sent (the call connection's ``on_send`` forgets the key), so every
        # reader gets a read made after its own call began: never a state older
        # than its request.
        key = (path, offset, max_bytes, max_messages)
        shared = self._read_joins.get(key)
        if shared is None:
            shared = asyncio.get_running_loop().create_task(
                self._read_call(path, offset, max_bytes, max_messages, self._clock(), touch=True)
            )
            shared.add_done_callback(_retrieve)
            self._read_joins[key] = shared
        return await asyncio.shield(shared)

    async def _read_call(
        self,
        path: str,
        offset: str,
        max_bytes: int,
        max_messages: int,
        now: float,
        *,
        touch: bool,
    ) -> ReadResult:
        args = scripts.read_args(
            self.prefix, path, offset, max_bytes, max_messages, now=now, touch=touch
        )
        return scripts.read_reply(path, offset, await self._run(scripts.READ, args))

    # -- wait --------------------------------------------------------------------

    def wait_for(self, path: str, offset: str, timeout: float) -> Coroutine[Any, Any, bool]:
        # A plain function returning the tail's coroutine (same contract as
        # ``async def``): no coroutine frame of its own that every suspend and
        # resume of a live wait would pass through.
        if self._closed or not _encodable(path):
            return answer(False)
        return self._tail.wait(path, offset, timeout, self._wait_probe)

    async def _wait_probe(self, path: str, offset: str, index: int | None) -> bool | int:
        """True (ready), False (gone) or the index to wait past (see ``tail.Probe``)."""
        values = await self._command(
            "HMGET", self.prefix + "m:" + path, "ti", "si", "cl", "sd", "ttl", "exp", "ta"
        )
        ti_raw, si_raw, cl, sd, ttl, exp, ta = values
        if ti_raw is None or sd is not None:
            return False
        now = self._clock()
        if exp is not None and now >= float(exp):
            return False
        if ttl is not None and ta is not None and now >= float(ta) + float(ttl):
            return False
        tail = int(ti_raw)
        if index is None:
            if offset == OFFSET_START:
                index = int(si_raw or 0)
            elif offset == OFFSET_NOW:
                index = tail
            else:
                index = decode_offset(offset)[0]
        if tail > index or cl is not None:
            return True
        return index

    # -- head, delete, list, trim ---------------------------------------------------

    async def head(self, path: str, *, now: float | None = None) -> StreamInfo:
        _check_text(path)
        meta = live_meta(await self._fetch_meta(path), path, {}, self._now(now))
        return stream_info(meta)

    async def delete(self, path: str) -> None:
        _check_text(path)
        res = await self._run(scripts.DELETE, [self.prefix, path, scripts.time_text(self._clock())])
        status = res[0]
        if status == b"not_found":
            raise NoSuchStream(f"no stream at {path!r}")
        if status == b"gone":
            raise DataGone(f"stream {path!r} was deleted")
        # The script published the deletion; wake local waiters without the round trip.
        self._tail.deleted(path)

    async def list_streams(self, prefix: str = "", *, limit: int = 1000) -> list[StreamInfo]:
        _check_text(prefix)
        now = self._clock()
        out: list[StreamInfo] = []
        low = b"[" + prefix.encode()
        high = b"(" + prefix.encode() + b"\xff" if prefix else b"+"
        batch = max(min(limit, 1000), 16)
        key = self.prefix + "paths"
        while len(out) < limit:
            names = cast(
                "list[bytes]",
                await self._command("ZRANGEBYLEX", key, low, high, "LIMIT", 0, batch),
            )
            if not names:
                break
            # Issued together: one pipeline.
            hashes = await asyncio.gather(*(self._fetch_raw(name.decode()) for name in names))
            missing: list[bytes] = []
            for name, h in zip(names, hashes, strict=True):
                if not h:
                    missing.append(name)
                    continue
                meta = scripts.parse_meta(name.decode(), scripts.flat(h))
                if meta.soft_deleted or is_expired(meta.config, meta.touched_at, now):
                    continue
                out.append(stream_info(meta))
                if len(out) >= limit:
                    break
            if missing:
                await self._run(scripts.PRUNE, [self.prefix, *missing])
            if len(names) < batch:
                break
            low = b"(" + names[-1]
        return out

    async def trim(self, path: str, below: str) -> int:
        _check_text(path)
        now = self._clock()
        index, byte_pos = decode_offset(below)
        meta = live_meta(await self._fetch_meta(path), path, {}, now)
        if index <= meta.start_index:
            return 0
        if index != meta.tail_index or byte_pos != meta.tail_byte:
            if index > meta.tail_index:
                raise BadOffset(f"trim offset {below} is beyond the tail")
            # Validate the boundary (BadOffset / DataGone like the engine).
            await self._read_call(path, below, 1, 1, now, touch=False)
        res = await self._run(
            scripts.TRIM,
            [self.prefix, path, scripts.time_text(now), str(index), str(byte_pos)],
        )
        status = res[0]
        if status == b"ok":
            return int(res[1])
        if status == b"not_found":
            raise NoSuchStream(f"no stream at {path!r}")
        if status == b"gone":
            raise DataGone(f"stream {path!r} was deleted")
        raise BadOffset(f"trim offset {below} is beyond the tail")
