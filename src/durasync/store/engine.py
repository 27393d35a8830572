"""The stream state machine shared by the memory and embedded backends.

:class:`Engine` holds every stream's metadata and producer state in memory and
applies creates, appends, closes, deletes and trims with the pure rules of
:mod:`durasync.store.rules`. It does no I/O of its own: message bytes and
persistence go through a :class:`Persistence` it is given. The memory store
keeps messages in lists; the embedded store writes them, and every metadata
change, in the SQLite transaction of the current group commit.

Reads are a pure walk over a fork chain (:func:`read_stream`), so a backend
can run them against a published snapshot of the metadata on another thread.

The engine is synchronous and not thread-safe: one owner calls it (the event
loop for memory, the writer thread for embedded). Section numbers refer to
shared/reference/durable-streams-protocol.md ("DS").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from durasync.store.base import (
    OFFSET_NOW,
    OFFSET_START,
    AppendResult,
    CreateResult,
    Entry,
    Producer,
    ReadResult,
    StreamConfig,
    StreamInfo,
)
from durasync.store.errors import (
    BadOffset,
    DataGone,
    NoSuchStream,
    StoreError,
    StreamClosed,
    StreamExists,
    TailMismatch,
)
from durasync.store.notify import Notifier, WaitState, answer
from durasync.store.offsets import OFFSET_FMT, decode_offset, encode_offset
from durasync.store.rules import (
    DEFAULT_CONTENT_TYPE,
    AppendPlan,
    ProducerState,
    fork_config,
    is_expired,
    plan_append,
    same_create,
)


class StreamMeta(msgspec.Struct, frozen=True, kw_only=True):
    """Everything about a stream except its messages and producer states.

    Indices count messages in the stream's offset space (a fork shares its
    source's); byte positions count payload bytes. The stream's own messages
    occupy ``[base_index, tail_index)``; a fork reads ``[0, base_index)`` from
    its source.
    """

    path: str
    #: Effective config (inherited content type / expiry, resolved fork offset).
    config: StreamConfig
    #: Config as first requested, for the idempotent re-create comparison.
    requested: StreamConfig
    created_at: float
    #: Last append (persisted); reads touch :attr:`Engine.touched` only.
    touched_at: float
    closed: bool = False
    #: Producer request that closed the stream (DS §3 closed-stream retry).
    closed_by: Producer | None = None
    soft_deleted: bool = False
    #: Live forks reading from this stream (DS §6 soft-delete).
    fork_refs: int = 0
    base_index: int = 0
    base_byte: int = 0
    start_index: int = 0
    start_byte: int = 0
    tail_index: int = 0
    tail_byte: int = 0
    last_stream_seq: str | None = None

    @property
    def tail(self) -> str:
        # Hot (every append and read); both fields stay far below 10**16.
        return OFFSET_FMT % (self.tail_index, self.tail_byte)


class Persistence(Protocol):
    """Where an :class:`Engine` keeps message bytes and records its changes.

    Every call happens on the engine's owner; a durable backend applies them
    to the transaction of the batch in flight.
    """

    def write_messages(
        self, path: str, first_index: int, first_byte: int, messages: Sequence[bytes]
    ) -> None: ...

    def read_own(
        self, path: str, lo: int, hi: int, max_bytes: int, max_messages: int
    ) -> list[tuple[int, int, bytes]]:
        """Own messages with ``lo <= index < hi`` as (index, byte, data), ascending.

        Stops after ``max_messages`` or once ``max_bytes`` would be exceeded
        (the first message is always included).
        """
        ...

    def drop_stream(self, path: str) -> None:
        """Forget the stream's messages, producer states and metadata."""
        ...

    def trim_messages(self, path: str, below_index: int) -> None: ...

    def save_meta(self, meta: StreamMeta) -> None: ...

    def save_producer(self, path: str, producer_id: str, state: ProducerState) -> None: ...


#: :func:`decode_offset` for the live paths: every reader woken by an append
#: presents the same offset (its read and its next wait both decode it), so
#: a small cache turns its regex and int parsing into a dict hit.
#: Bounded; malformed offsets raise and are never cached.
_decode_live_offset = functools.lru_cache(maxsize=4096)(decode_offset)

MetaLookup = Callable[[str], "StreamMeta | None"]
ReadOwn = Callable[[str, int, int, int, int], list[tuple[int, int, bytes]]]


def stream_info(meta: StreamMeta) -> StreamInfo:
    """The :class:`StreamInfo` HEAD shows for ``meta``."""
    return StreamInfo(
        path=meta.path,
        config=meta.config,
        tail=meta.tail,
        start=encode_offset(meta.start_index, meta.start_byte),
        closed=meta.closed,
        soft_deleted=meta.soft_deleted,
        message_count=meta.tail_index - meta.start_index,
        byte_count=meta.tail_byte - meta.start_byte,
        created_at=meta.created_at,
        touched_at=meta.touched_at,
        last_stream_seq=meta.last_stream_seq,
    )


def confirm_create(
    path: str, existing: StreamMeta, config: StreamConfig, closed: bool
) -> CreateResult:
    """A create of ``path`` where ``existing`` lives (shared by backends).

    DS §2 PUT: an identical re-create succeeds (``created=False``).

    Raises:
        StreamExists: the config or closure differs, or ``existing`` is
            soft-deleted (DS §6: its path cannot be reused while forks live).
    """
    if existing.soft_deleted:
        raise StreamExists(f"{path!r} is held by a deleted stream that forks still read")
    if same_create(existing.requested, existing.config, existing.closed, config, closed):
        return CreateResult(created=False, info=stream_info(existing))
    raise StreamExists(f"stream {path!r} exists with a different configuration")


def live_meta(
    meta: StreamMeta | None, path: str, touched: dict[str, float], now: float
) -> StreamMeta:
    """``meta`` if the stream is readable at ``now`` (shared by backends).

    Raises:
        NoSuchStream: absent or expired (DS §1: expired == absent).
        DataGone: soft-deleted (DS §6).
    """
    if meta is None or is_expired(meta.config, max(meta.touched_at, touched.get(path, 0.0)), now):
        raise NoSuchStream(f"no stream at {path!r}")
    if meta.soft_deleted:
        raise DataGone(f"stream {path!r} was deleted")
    return meta


def _fork_segments(lookup: MetaLookup, meta: StreamMeta, index: int) -> list[tuple[str, int, int]]:
    """The ``(path, lo, hi)`` index ranges a read from ``index`` covers along ``meta``'s fork
    chain, oldest source first: each stream owns ``[base_index, min(tail_index, the child's
    fork point))`` (DS §6)."""
    segments: list[tuple[str, int, int]] = []
    cur: StreamMeta | None = meta
    upper = meta.tail_index
    while cur is not None:
        hi = min(upper, cur.tail_index)
        if hi > cur.base_index:
            segments.append((cur.path, cur.base_index, hi))
        upper = min(upper, cur.base_index)
        if upper <= index or cur.config.forked_from is None:
            break
        cur = lookup(cur.config.forked_from)
    segments.reverse()
    return segments


def read_stream(
    lookup: MetaLookup,
    meta: StreamMeta,
    offset: str,
    *,
    max_bytes: int,
    max_messages: int,
    read_own: ReadOwn,
) -> ReadResult:
    """Read ``meta``'s stream from ``offset``, stitching fork sources (DS §6).

    Raises:
        BadOffset: malformed, beyond the tail, or not a message boundary.
        DataGone: below the retained start (trimmed).
    """
    if offset == OFFSET_START:
        index, byte_pos = meta.start_index, meta.start_byte
    elif offset == OFFSET_NOW:
        index, byte_pos = meta.tail_index, meta.tail_byte
    else:
        index, byte_pos = _decode_live_offset(offset)
    start_offset = (
        encode_offset(index, byte_pos) if offset in (OFFSET_START, OFFSET_NOW) else offset
    )
    content_type = meta.config.content_type
    if index > meta.tail_index or (index == meta.tail_index and byte_pos != meta.tail_byte):
        raise BadOffset(f"offset {offset} is beyond the stream's tail {meta.tail}")
    if index == meta.tail_index:
        return ReadResult(
            entries=[],
            next_offset=start_offset,
            up_to_date=True,
            closed=meta.closed,
            content_type=content_type,
        )
    if index < meta.start_index:
        raise DataGone(f"offset {offset} is below the retained start")
    segments = _fork_segments(lookup, meta, index)
    entries: list[Entry] = []
    append = entries.append
    used_bytes = 0
    expect = index
    full = False
    # Each boundary is formatted once: an entry's ``next_offset`` is the next
    # entry's ``offset`` (string formatting dominated catch-up reads). No range
    # check: every value here lies within the stream's already-encoded tail.
    current = start_offset
    cur_byte = byte_pos
    for path, lo, hi in segments:
        if hi <= expect:
            continue
        left = max_messages - len(entries)
        budget = max_bytes - used_bytes
        rows = read_own(path, max(lo, expect), hi, max(budget, 1), left)
        if not rows:
            break
        for row_index, row_byte, data in rows:
            if row_index != expect:
                # A hole: the data below was trimmed (or a fork source's was).
                raise DataGone(f"offset {offset} is below the retained data")
            if not entries and row_byte != byte_pos:
                raise BadOffset(f"offset {offset} is not a message boundary")
            if entries and (used_bytes + len(data) > max_bytes or len(entries) >= max_messages):
                full = True
                break
            if row_byte != cur_byte:
                # Not expected (rows are contiguous), but report what is stored.
                current = OFFSET_FMT % (row_index, row_byte)
                cur_byte = row_byte
            size = len(data)
            expect += 1
            cur_byte += size
            following = OFFSET_FMT % (expect, cur_byte)
            append(Entry(data, current, following))
            current = following
            used_bytes += size
        if full or expect < hi or len(entries) >= max_messages or used_bytes >= max_bytes:
            # Limits reached (read_own stops early on its budget as well).
            break
    if not entries:
        raise DataGone(f"offset {offset} is below the retained data")
    next_offset = entries[-1].next_offset
    up_to_date = expect == meta.tail_index
    return ReadResult(
        entries=entries,
        next_offset=next_offset,
        up_to_date=up_to_date,
        closed=meta.closed and up_to_date,
        content_type=content_type,
    )


_V = TypeVar("_V")


class ReadCache(Generic[_V]):
    """The last small read of each stream, shared by readers of the same version.

    Live readers woken by one append all read the same new entries from the
    same offset; this lets one store read serve them all. A slot is valid
    only while the stream's :class:`StreamMeta` is the very object the read
    was made against (metas are immutable and replaced on every append,
    close, trim or delete), so a hit returns exactly what a fresh read would.
    Forks are not cached (their source can be trimmed under them).

    Bounded: at most ``slots`` streams, one result each, and only results of
    at most ``max_bytes`` payload bytes (live-tail reads, not catch-up chunks).
    ``_V`` is the stored value: a :class:`ReadResult`, or a backend's pending
    read of one.
    """

    __slots__ = ("_entries", "max_bytes", "slots")

    def __init__(self, *, slots: int = 256, max_bytes: int = 64 * 1024) -> None:
        self.slots = slots
        self.max_bytes = max_bytes
        self._entries: dict[str, tuple[StreamMeta, str, int, int, _V]] = {}

    def get(self, meta: StreamMeta, offset: str, max_bytes: int, max_messages: int) -> _V | None:
        """The value stored for this exact read of this version of the stream."""
        entry = self._entries.get(meta.path)
        if (
            entry is not None
            and entry[0] is meta
            and entry[1] == offset
            and entry[2] == max_bytes
            and entry[3] == max_messages
        ):
            return entry[4]
        return None

    def put(
        self, meta: StreamMeta, offset: str, max_bytes: int, max_messages: int, value: _V
    ) -> None:
        """Remember ``value`` for this read (replacing the stream's slot)."""
        if meta.config.forked_from is not None:
            return
        entries = self._entries
        entries.pop(meta.path, None)
        if len(entries) >= self.slots:
            # Evict the oldest slot (dicts keep insertion order).
            del entries[next(iter(entries))]
        entries[meta.path] = (meta, offset, max_bytes, max_messages, value)

    def discard(self, path: str, value: _V) -> None:
        """Drop ``path``'s slot if it still holds ``value``."""
        entry = self._entries.get(path)
        if entry is not None and entry[4] is value:
            del self._entries[path]

    @staticmethod
    def small(result: ReadResult, max_bytes: int) -> bool:
        """Whether ``result`` is small enough to keep (at most ``max_bytes`` payload)."""
        total = 0
        for entry in result.entries:
            total += len(entry.data)
            if total > max_bytes:
                return False
        return True


def wait_state(meta: StreamMeta | None, index: int) -> WaitState:
    """Whether a reader waiting past ``index`` can go on (shared by backends)."""
    if meta is None or meta.soft_deleted:
        return "gone"
    if meta.tail_index > index or meta.closed:
        return "ready"
    return "wait"


def wait_index(meta: StreamMeta | None, offset: str) -> int | None:
    """Index a wait starts from, or None when the offset is malformed."""
    if offset == OFFSET_START:
        return meta.start_index if meta is not None else 0
    if offset == OFFSET_NOW:
        return meta.tail_index if meta is not None else 0
    try:
        return _decode_live_offset(offset)[0]
    except StoreError:
        return None


def wait_for_append(
    notifier: Notifier,
    metas: Mapping[str, StreamMeta],
    path: str,
    offset: str,
    timeout: float,
) -> Coroutine[Any, Any, bool]:
    """:meth:`LogStore.wait_for` of the in-process backends, over their visible ``metas``.

    A plain function returning the notifier's coroutine (same contract as ``async def``):
    one coroutine frame less that every suspend and resume of a live wait would pass
    through. A malformed offset answers True at once: the caller's read reports it.
    """
    index = wait_index(metas.get(path), offset)
    if index is None:
        return answer(True)
    start = index
    return notifier.wait(path, lambda: wait_state(metas.get(path), start), timeout)


def _advanced(
    meta: StreamMeta,
    plan: AppendPlan,
    index: int,
    byte_pos: int,
    *,
    producer: Producer | None,
    now: float,
) -> StreamMeta:
    """``meta`` after an append that ends at ``(index, byte_pos)``: one replace per append."""
    if plan.close:
        return msgspec.structs.replace(
            meta,
            tail_index=index,
            tail_byte=byte_pos,
            touched_at=now,
            last_stream_seq=plan.stream_seq
            if plan.stream_seq is not None
            else meta.last_stream_seq,
            closed=True,
            closed_by=producer,
        )
    if plan.stream_seq is not None:
        return msgspec.structs.replace(
            meta,
            tail_index=index,
            tail_byte=byte_pos,
            touched_at=now,
            last_stream_seq=plan.stream_seq,
        )
    return msgspec.structs.replace(meta, tail_index=index, tail_byte=byte_pos, touched_at=now)


class Engine:
    """Authoritative stream state; see the module docstring.

    ``touched`` maps a path to its last read/append time (sliding TTL, DS §2);
    it may be updated by the event loop while another thread owns the engine
    (plain float stores, atomic in CPython), and is only ever raised.
    """

    def __init__(self, persistence: Persistence) -> None:
        self.persistence = persistence
        self.metas: dict[str, StreamMeta] = {}
        self.producers: dict[str, dict[str, ProducerState]] = {}
        self.touched: dict[str, float] = {}

    # -- lookups -----------------------------------------------------------

    def last_touch(self, meta: StreamMeta) -> float:
        return max(meta.touched_at, self.touched.get(meta.path, 0.0))

    def live(self, path: str, now: float) -> StreamMeta:
        """The stream at ``path`` if it is readable.

        Raises:
            NoSuchStream: absent or expired. DataGone: soft-deleted.
        """
        return live_meta(self.metas.get(path), path, self.touched, now)

    def _put(self, meta: StreamMeta) -> None:
        self.metas[meta.path] = meta
        self.persistence.save_meta(meta)

    def _reap_expired(self, path: str, now: float) -> None:
        """Remove an expired stream lazily (expired == absent, DS §1)."""
        meta = self.metas.get(path)
        if (
            meta is not None
            and not meta.soft_deleted
            and is_expired(meta.config, self.last_touch(meta), now)
        ):
            self._delete(meta)

    # -- create --------------------------------------------------------------

    def create(
        self,
        path: str,
        config: StreamConfig,
        initial: Sequence[bytes],
        closed: bool,
        now: float,
    ) -> CreateResult:
        """See :meth:`LogStore.create`."""
        self._reap_expired(path, now)
        existing = self.metas.get(path)
        if existing is not None:
            return confirm_create(path, existing, config, closed)
        if config.fork_sub_offset and config.forked_from is None:
            raise BadOffset("a fork sub-offset needs a fork source")
        base_index = base_byte = 0
        effective = config
        source: StreamMeta | None = None
        if config.forked_from is not None:
            if config.fork_sub_offset and config.fork_offset is None:
                raise BadOffset("a fork sub-offset needs an explicit fork offset")
            self._reap_expired(config.forked_from, now)
            source = self.metas.get(config.forked_from)
            if source is None:
                raise NoSuchStream(f"fork source {config.forked_from!r} does not exist")
            if source.soft_deleted:
                raise DataGone(f"fork source {config.forked_from!r} was deleted")
            if config.fork_offset is None:
                base_index, base_byte = source.tail_index, source.tail_byte
            else:
                base_index, base_byte = self._boundary(source, config.fork_offset)
            fork_offset = encode_offset(base_index, base_byte)
            effective = fork_config(config, source.config, fork_offset)
            config = msgspec.structs.replace(config, fork_offset=fork_offset)
        elif not config.content_type:
            config = effective = msgspec.structs.replace(config, content_type=DEFAULT_CONTENT_TYPE)
        meta = StreamMeta(
            path=path,
            config=effective,
            requested=config,
            created_at=now,
            touched_at=now,
            base_index=base_index,
            base_byte=base_byte,
            start_index=0,
            start_byte=0,
            tail_index=base_index,
            tail_byte=base_byte,
        )
        if initial:
            meta = self._write(meta, initial)
        if closed:
            meta = msgspec.structs.replace(meta, closed=True)
        if source is not None:
            self._put(msgspec.structs.replace(source, fork_refs=source.fork_refs + 1))
        self._put(meta)
        self.touched[path] = now
        return CreateResult(created=True, info=stream_info(meta))

    def _boundary(self, source: StreamMeta, offset: str) -> tuple[int, int]:
        """Validate ``offset`` as a boundary of ``source`` (DS §6: else 400)."""
        index, byte_pos = decode_offset(offset)
        if index == source.tail_index and byte_pos == source.tail_byte:
            return index, byte_pos
        if index >= source.tail_index:
            raise BadOffset(f"fork offset {offset} is beyond the source's tail")
        try:
            read_stream(
                self.metas.get,
                source,
                offset,
                max_bytes=1,
                max_messages=1,
                read_own=self.persistence.read_own,
            )
        except DataGone as exc:
            raise BadOffset(f"fork offset {offset} is below the source's retained data") from exc
        return index, byte_pos

    def _write(self, meta: StreamMeta, messages: Sequence[bytes]) -> StreamMeta:
        self.persistence.write_messages(meta.path, meta.tail_index, meta.tail_byte, messages)
        return msgspec.structs.replace(
            meta,
            tail_index=meta.tail_index + len(messages),
            tail_byte=meta.tail_byte + sum(len(m) for m in messages),
        )

    # -- append --------------------------------------------------------------

    def append(
        self,
        path: str,
        messages: Sequence[bytes],
        *,
        content_type: str | None,
        producer: Producer | None,
        stream_seq: str | None,
        close: bool,
        now: float,
    ) -> AppendResult:
        """See :meth:`LogStore.append` (without the durability wait).

        Three steps: the rules decide (:func:`~durasync.store.rules.plan_append`), an outcome
        that writes nothing is answered at once, otherwise the messages are written and the
        stream's meta and producer state advance together.
        """
        meta = self.live(path, now)
        states = self.producers.get(path)
        state = states.get(producer.producer_id) if states and producer else None
        plan = plan_append(
            stream_content_type=meta.config.content_type,
            closed=meta.closed,
            closed_by=meta.closed_by,
            last_stream_seq=meta.last_stream_seq,
            producer_state=state,
            message_count=len(messages),
            content_type=content_type,
            producer=producer,
            stream_seq=stream_seq,
            close=close,
            tail=meta.tail,
            now=now,
        )
        if plan.kind != "append":
            return self._answer_unwritten(path, meta, plan, producer, now)
        offsets: list[str] = []
        index, byte_pos = meta.tail_index, meta.tail_byte
        for data in messages:
            offsets.append(OFFSET_FMT % (index, byte_pos))
            index, byte_pos = index + 1, byte_pos + len(data)
        if messages:
            self.persistence.write_messages(path, meta.tail_index, meta.tail_byte, messages)
        meta = _advanced(meta, plan, index, byte_pos, producer=producer, now=now)
        self._put(meta)
        self.touched[path] = now
        if producer is not None and plan.producer_state is not None:
            self.producers.setdefault(path, {})[producer.producer_id] = plan.producer_state
            self.persistence.save_producer(path, producer.producer_id, plan.producer_state)
        return AppendResult(
            status="appended" if messages else "closed_only",
            offsets=offsets,
            tail=meta.tail,
            closed=meta.closed,
            producer_epoch=plan.producer_state.epoch if plan.producer_state else None,
            producer_seq=plan.producer_state.last_seq if plan.producer_state else None,
        )

    def _answer_unwritten(
        self,
        path: str,
        meta: StreamMeta,
        plan: AppendPlan,
        producer: Producer | None,
        now: float,
    ) -> AppendResult:
        """The answer of an append the rules settled without writing (a duplicate, or
        close-only on a closed stream)."""
        if plan.kind == "closed_duplicate":
            assert producer is not None
            return AppendResult(
                status="duplicate",
                offsets=[],
                tail=meta.tail,
                closed=True,
                producer_epoch=producer.epoch,
                producer_seq=producer.seq,
            )
        if plan.kind == "duplicate":
            assert plan.producer_state is not None
            return AppendResult(
                status="duplicate",
                offsets=[],
                tail=meta.tail,
                closed=meta.closed,
                producer_epoch=plan.producer_state.epoch,
                producer_seq=plan.producer_state.last_seq,
            )
        # "closed_only": DS §2: close-only on a closed stream is 204, but still renews a
        # sliding TTL (every append does).
        self.touched[path] = now
        return AppendResult(status="closed_only", offsets=[], tail=meta.tail, closed=True)

    def append_at(
        self, path: str, offset: str, messages: Sequence[bytes], *, close: bool, now: float
    ) -> AppendResult:
        """See :meth:`LogStore.append_at` (without the durability wait)."""
        if not messages and not close:
            raise ValueError("append of no messages without close")
        meta = self.live(path, now)
        index, byte_pos = decode_offset(offset)
        at_tail = index == meta.tail_index and byte_pos == meta.tail_byte
        if meta.closed:
            if at_tail and not messages:
                self.touched[path] = now
                return AppendResult(status="closed_only", offsets=[], tail=meta.tail, closed=True)
            raise StreamClosed("stream is closed", tail=meta.tail)
        if not at_tail:
            if not (
                meta.start_index == meta.tail_index
                and meta.config.forked_from is None
                and index > meta.tail_index
                and byte_pos >= meta.tail_byte
            ):
                raise TailMismatch(
                    f"offset {offset} is not the tail {meta.tail} of {path!r}", tail=meta.tail
                )
            # Nothing retained: the stream starts over at ``offset`` (as if trimmed there).
            meta = msgspec.structs.replace(
                meta,
                start_index=index,
                start_byte=byte_pos,
                tail_index=index,
                tail_byte=byte_pos,
            )
        offsets: list[str] = []
        for data in messages:
            offsets.append(OFFSET_FMT % (index, byte_pos))
            index, byte_pos = index + 1, byte_pos + len(data)
        if messages:
            self.persistence.write_messages(path, meta.tail_index, meta.tail_byte, messages)
        meta = msgspec.structs.replace(
            meta, tail_index=index, tail_byte=byte_pos, touched_at=now, closed=close
        )
        self._put(meta)
        self.touched[path] = now
        return AppendResult(
            status="appended" if messages else "closed_only",
            offsets=offsets,
            tail=meta.tail,
            closed=meta.closed,
        )

    # -- delete / trim ---------------------------------------------------------

    def delete(self, path: str, now: float) -> list[str]:
        """See :meth:`LogStore.delete`. Returns the paths removed or soft-deleted."""
        meta = self.live(path, now)
        return self._delete(meta)

    def _delete(self, meta: StreamMeta) -> list[str]:
        if meta.fork_refs > 0:
            # DS §6: forks still read this stream's data; keep it, hide the URL.
            self._put(msgspec.structs.replace(meta, soft_deleted=True))
            return [meta.path]
        removed = [meta.path]
        cur: StreamMeta | None = meta
        while cur is not None:
            self.metas.pop(cur.path, None)
            self.producers.pop(cur.path, None)
            self.touched.pop(cur.path, None)
            self.persistence.drop_stream(cur.path)
            parent_path = cur.config.forked_from
            cur = None
            if parent_path is not None:
                parent = self.metas.get(parent_path)
                if parent is not None:
                    parent = msgspec.structs.replace(parent, fork_refs=max(parent.fork_refs - 1, 0))
                    if parent.soft_deleted and parent.fork_refs == 0:
                        # The last fork went: garbage-collect the source (cascades).
                        removed.append(parent.path)
                        cur = parent
                    else:
                        self._put(parent)
        return removed

    def trim(self, path: str, below: str, now: float) -> int:
        """See :meth:`LogStore.trim`. Only the stream's own messages are dropped."""
        meta = self.live(path, now)
        index, byte_pos = decode_offset(below)
        if index <= meta.start_index:
            return 0
        if index != meta.tail_index or byte_pos != meta.tail_byte:
            if index > meta.tail_index:
                raise BadOffset(f"trim offset {below} is beyond the tail")
            read_stream(
                self.metas.get,
                meta,
                below,
                max_bytes=1,
                max_messages=1,
                read_own=self.persistence.read_own,
            )
        dropped = index - meta.start_index
        self.persistence.trim_messages(path, index)
        self._put(msgspec.structs.replace(meta, start_index=index, start_byte=byte_pos))
        return dropped

    def list_streams(self, prefix: str, limit: int, now: float) -> list[StreamInfo]:
        out: list[StreamInfo] = []
        for path in sorted(p for p in self.metas if p.startswith(prefix)):
            meta = self.metas[path]
            if meta.soft_deleted or is_expired(meta.config, self.last_touch(meta), now):
                continue
            out.append(stream_info(meta))
            if len(out) >= limit:
                break
        return out
