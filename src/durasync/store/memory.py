"""In-memory log store: for tests and ``durasync serve --memory``.

Same semantics as every backend (the shared :class:`~durasync.store.engine.Engine`
and rules) but nothing survives the process, and an append is "durable" as
soon as it is in memory. Memory grows with the data stored: the store itself
is the unbounded buffer here, by design of ``--memory``; live readers and
producer states are bounded as in every backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec

from durasync.store.base import (
    OFFSET_START,
    AppendResult,
    CreateResult,
    LogStore,
    Producer,
    ReadResult,
    StreamConfig,
    StreamInfo,
)
from durasync.store.engine import (
    Engine,
    ReadCache,
    StreamMeta,
    read_stream,
    stream_info,
    wait_for_append,
)
from durasync.store.notify import Notifier
from durasync.store.rules import ProducerState


class _OwnMessages:
    __slots__ = ("data", "first", "pos")

    def __init__(self, first: int) -> None:
        self.first = first
        self.pos: list[int] = []
        self.data: list[bytes] = []


class MemoryPersistence:
    """Message lists per stream; metadata lives in the engine itself."""

    def __init__(self) -> None:
        self.own: dict[str, _OwnMessages] = {}

    def write_messages(
        self, path: str, first_index: int, first_byte: int, messages: Sequence[bytes]
    ) -> None:
        own = self.own.get(path)
        if own is None or not own.data:
            own = self.own[path] = _OwnMessages(first_index)
        byte_pos = first_byte
        for data in messages:
            own.pos.append(byte_pos)
            own.data.append(bytes(data))
            byte_pos += len(data)

    def read_own(
        self, path: str, lo: int, hi: int, max_bytes: int, max_messages: int
    ) -> list[tuple[int, int, bytes]]:
        own = self.own.get(path)
        if own is None:
            return []
        out: list[tuple[int, int, bytes]] = []
        used = 0
        i = max(lo, own.first) - own.first
        end = min(hi - own.first, len(own.data))
        while i < end and len(out) < max_messages:
            data = own.data[i]
            if out and used + len(data) > max_bytes:
                break
            out.append((own.first + i, own.pos[i], data))
            used += len(data)
            i += 1
        return out

    def drop_stream(self, path: str) -> None:
        self.own.pop(path, None)

    def trim_messages(self, path: str, below_index: int) -> None:
        own = self.own.get(path)
        if own is None:
            return
        k = max(0, min(below_index - own.first, len(own.data)))
        del own.data[:k]
        del own.pos[:k]
        own.first += k

    def save_meta(self, meta: StreamMeta) -> None:
        """Nothing to do: the engine's dict is the only copy."""

    def save_producer(self, path: str, producer_id: str, state: ProducerState) -> None:
        """Nothing to do: the engine's dict is the only copy."""


class MemoryStore(LogStore):
    """The ``memory`` backend. ``clock`` supplies ``now`` when a call passes none."""

    name = "memory"
    shared = False

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._engine = Engine(MemoryPersistence())
        self._notifier = Notifier()
        #: One read of a new entry serves every live reader woken for it.
        self._reads: ReadCache[ReadResult] = ReadCache()

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    async def open(self) -> None:
        """Nothing to recover."""

    async def close(self) -> None:
        self._notifier.close()

    async def create(
        self,
        path: str,
        config: StreamConfig,
        *,
        initial: Sequence[bytes] = (),
        closed: bool = False,
        now: float | None = None,
    ) -> CreateResult:
        result = self._engine.create(path, config, initial, closed, self._now(now))
        if result.created:
            self._notifier.notify(path)
        return result

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
        result = self._engine.append(
            path,
            messages,
            content_type=content_type,
            producer=producer,
            stream_seq=stream_seq,
            close=close,
            now=self._now(now),
        )
        if result.offsets or result.closed:
            self._notifier.notify(path)
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
        result = self._engine.append_at(path, offset, messages, close=close, now=self._now(now))
        if result.offsets or result.closed:
            self._notifier.notify(path)
        return result

    async def read(
        self,
        path: str,
        offset: str = OFFSET_START,
        *,
        max_bytes: int = 1 << 20,
        max_messages: int = 10_000,
        now: float | None = None,
    ) -> ReadResult:
        when = self._now(now)
        meta = self._engine.live(path, when)
        # DS §2 GET: every read (offset=now included) renews a sliding TTL.
        self._engine.touched[path] = when
        reads = self._reads
        cached = reads.get(meta, offset, max_bytes, max_messages)
        if cached is not None:
            return cached
        result = read_stream(
            self._engine.metas.get,
            meta,
            offset,
            max_bytes=max_bytes,
            max_messages=max_messages,
            read_own=self._engine.persistence.read_own,
        )
        if result.entries and reads.small(result, reads.max_bytes):
            reads.put(meta, offset, max_bytes, max_messages, result)
        return result

    def wait_for(self, path: str, offset: str, timeout: float) -> Coroutine[Any, Any, bool]:
        return wait_for_append(self._notifier, self._engine.metas, path, offset, timeout)

    async def head(self, path: str, *, now: float | None = None) -> StreamInfo:
        meta = self._engine.live(path, self._now(now))
        info = stream_info(meta)
        info_touched = self._engine.last_touch(meta)
        if info_touched != info.touched_at:
            info = msgspec.structs.replace(info, touched_at=info_touched)
        return info

    async def delete(self, path: str) -> None:
        for removed in self._engine.delete(path, self._clock()):
            self._notifier.notify(removed)

    async def list_streams(self, prefix: str = "", *, limit: int = 1000) -> list[StreamInfo]:
        return self._engine.list_streams(prefix, limit, self._clock())

    async def trim(self, path: str, below: str) -> int:
        return self._engine.trim(path, below, self._clock())
