"""The log store interface: append-only, durable, ordered streams.

Every part of durasync sits on this one interface (DESIGN.md, "The log is the
truth"). A stream is a named, append-only sequence of messages; each message
is opaque bytes and gets an *offset* when it is appended.

Guarantees every implementation gives:

- **Acknowledged means durable.** ``append`` returns only after the batch is
  as durable as the backend promises (fsync for the embedded store). A batch
  is atomic: after a crash either all of its messages are visible or none.
- **One order.** Offsets are opaque, fixed-width strings that sort
  lexicographically in append order and stay valid for the stream's life.
  ``-1`` and ``now`` are sentinels, never real offsets.
- **Atomic checks.** The producer (epoch, seq), ``Stream-Seq`` and closure
  checks of an append happen atomically with the write, and producer state
  commits with the data (Durable Streams §3).
- **No backend leaks.** Only plain Python values and the msgspec Structs
  below cross this interface: no SQLite rows, Redis replies or threads.

Errors are subclasses of :class:`~durasync.store.errors.StoreError` (defined in
:mod:`durasync.store.errors`); each names what happened so the HTTP layer can map it to a
status without string matching.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Literal, Protocol, Self

import msgspec

#: Sentinel offsets of the Durable Streams protocol (§4). Never real offsets.
OFFSET_START = "-1"
OFFSET_NOW = "now"


class StreamConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What a stream is created with; compared on an idempotent re-create.

    ``ttl_seconds`` is a sliding TTL (reset by appends and reads);
    ``expires_at`` is an absolute Unix time in seconds. At most one is set.
    ``expires_at_text`` keeps the client's RFC 3339 text so it can be echoed.

    For a fork, an empty ``content_type`` (``""``) means "inherit the source's";
    a non-empty one must have the source's media type (ContentTypeMismatch).
    ``fork_offset`` ``None`` means the source's tail; the created stream's
    :attr:`StreamInfo.config` shows the resolved offset and the effective
    (possibly inherited) content type and expiry.
    """

    content_type: str = "application/octet-stream"
    ttl_seconds: int | None = None
    expires_at: float | None = None
    expires_at_text: str | None = None
    #: Fork source path and the offset in the source's offset space where the
    #: fork begins (Durable Streams §6). Reads below it come from the source.
    forked_from: str | None = None
    fork_offset: str | None = None
    #: ``Stream-Fork-Sub-Offset`` (DS §6): messages (JSON) or bytes past
    #: ``fork_offset`` that the fork copies from the source's next append.
    #: Stores only record and compare it (idempotent re-create, 409 on a
    #: different value): the HTTP layer materializes that prefix and passes
    #: it to ``create`` as ``initial`` messages, so no store slices messages.
    fork_sub_offset: int = 0


class Producer(msgspec.Struct, frozen=True):
    """Idempotent producer headers of one append (Durable Streams §3)."""

    producer_id: str
    epoch: int
    seq: int


class StreamInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Metadata of a stream, as HEAD shows it."""

    path: str
    config: StreamConfig
    #: Offset just past the last message (where the next append lands).
    tail: str
    #: Offset of the first retained message (``trim`` raises it).
    start: str
    closed: bool = False
    #: Soft-deleted: deleted while forks still read from it (§6).
    soft_deleted: bool = False
    message_count: int = 0
    byte_count: int = 0
    created_at: float = 0.0
    #: Last time an append or read touched the stream (sliding TTL).
    touched_at: float = 0.0
    #: The last ``Stream-Seq`` accepted (None: none yet). It is stored atomically with the
    #: data, so a writer that puts its own position in it (a replica copying another log)
    #: reads here exactly how far its writes got, also after a crash.
    last_stream_seq: str | None = None


class Entry(msgspec.Struct, frozen=True):
    """One stored message and the offset just past it."""

    data: bytes
    #: Offset of this message (where a read that returns it started).
    offset: str
    #: Offset just past this message (resume a read here).
    next_offset: str


class ReadResult(msgspec.Struct, frozen=True, kw_only=True):
    """A batch read from an offset."""

    entries: list[Entry]
    #: Where the next read continues: past the last entry, or the requested
    #: offset when nothing was returned.
    next_offset: str
    #: True iff ``next_offset`` is the stream's tail at the time of the read.
    up_to_date: bool
    #: True iff the stream is closed and ``next_offset`` is its final offset.
    closed: bool
    #: The stream's content type, so a read needs no extra ``head`` call.
    #: ``None`` when a backend cannot say cheaply (the caller then asks ``head``).
    content_type: str | None = None


AppendStatus = Literal["appended", "duplicate", "closed_only"]


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of an accepted append.

    ``status`` is ``appended`` when data was written, ``duplicate`` when an
    idempotent producer retry was recognised (nothing written), and
    ``closed_only`` for a close with no data.
    """

    status: AppendStatus
    #: Offsets of the appended messages, in order (empty unless appended).
    offsets: list[str]
    #: The stream's tail after the call.
    tail: str
    closed: bool
    #: Producer epoch and highest accepted seq after the call, if a producer
    #: was given.
    producer_epoch: int | None = None
    producer_seq: int | None = None


class CreateResult(msgspec.Struct, frozen=True, kw_only=True):
    created: bool
    info: StreamInfo


# --------------------------------------------------------------------------
# The interface.
# --------------------------------------------------------------------------


class StoreObserver(Protocol):
    """What a store reports to whoever watches it (the server's metrics)."""

    def commit(self, seconds: float, operations: int | None) -> None:
        """A commit took ``seconds`` (an fsync'd transaction, or an append's round trip);
        ``operations``: how many operations the transaction carried, when it batched.
        May be called from a store's own thread."""

    def availability(self, available: bool) -> None:
        """The backend became unreachable (``False``) or reachable again (``True``)."""


class LogStore(abc.ABC):
    """One async interface over every backend (memory, embedded, redis).

    Use ``async with store:`` (or :meth:`open` ... :meth:`close`). All methods
    are coroutine-safe: any number of tasks may call them concurrently. Paths
    are opaque non-empty strings validated by the caller. ``now`` arguments are
    Unix times in seconds, passed in so that TTL logic is testable; ``None``
    means the backend's clock.
    """

    #: The backend's name (``memory``, ``embedded``, ``redis``), for logs and metrics.
    name: str = "abstract"
    #: True when several server processes share the store (Redis): any other
    #: process may create, append to or delete streams at any time, so a layer
    #: that keeps state about streams must keep it in the store, not in its
    #: own memory (e.g. the DS §9 subscriptions). False for stores that one
    #: process owns (memory, embedded).
    shared: bool = False
    #: Told about commits and, for shared stores, about losing and regaining the backend
    #: (metrics and logs; see :class:`StoreObserver`). Set before :meth:`open`.
    observer: StoreObserver | None = None

    @property
    def available(self) -> bool:
        """False while the backend is known to be unreachable (a shared store whose server
        is down); local stores are always available once open."""
        return True

    @abc.abstractmethod
    async def open(self) -> None:
        """Open or recover the backend. Must be called before any other call."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush, wake every waiter (they return as on timeout) and release resources."""

    async def __aenter__(self) -> Self:
        """``async with store:`` opens the store and closes it on the way out, whatever
        happens inside. Errors of :meth:`open` propagate (nothing to close then)."""
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def create(
        self,
        path: str,
        config: StreamConfig,
        *,
        initial: Sequence[bytes] = (),
        closed: bool = False,
        now: float | None = None,
    ) -> CreateResult:
        """Create a stream, or confirm an identical existing one (idempotent).

        Raises:
            StreamExists: an existing stream differs in config or closure.
            NoSuchStream: ``config.forked_from`` names no stream.
            DataGone: the fork source is soft-deleted (the HTTP layer maps
                this to 409 for PUT).
            BadOffset: ``config.fork_offset`` is malformed or beyond the source tail.
        """

    @abc.abstractmethod
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
        """Append a batch atomically (and optionally close the stream).

        Returns once durable. Checks run atomically with the write in the
        order of Durable Streams §2 POST: closed -> content type -> producer ->
        ``Stream-Seq``. A producer retry already applied returns
        ``status="duplicate"`` and writes nothing.

        Raises:
            NoSuchStream, DataGone, StreamClosed, ContentTypeMismatch,
            StaleProducerEpoch, ProducerSeqAhead, ProducerBadEpochStart, SeqConflict,
            StoreUnavailable.
        """

    @abc.abstractmethod
    async def append_at(
        self,
        path: str,
        offset: str,
        messages: Sequence[bytes],
        *,
        close: bool = False,
        now: float | None = None,
    ) -> AppendResult:
        """Replica append: append ``messages`` so that the first lands exactly at ``offset``
        (and optionally close the stream), atomically, or change nothing.

        For a writer that copies another log and must keep its offsets: it names where each
        batch starts in the source, and the store checks, atomically with the write, that this
        is where the stream ends. So a replica holds the source's messages at the source's
        offsets, without holes or duplicates, even when a crash or a second writer intervenes.

        - The stream's tail is ``offset``: the batch is appended (``status="appended"``; with
          no messages and ``close``: closed, ``closed_only``).
        - The stream retains no message (its start is its tail, e.g. new and empty) and
          ``offset`` lies beyond its tail: the stream's start and tail first move to
          ``offset``, as if the messages before it had been trimmed (reads below it raise
          :class:`DataGone`); then the batch is appended. Not for forks.
        - Otherwise :class:`TailMismatch` with the actual tail (the caller skips what is
          already there, or starts over).

        No content type, producer or ``Stream-Seq`` check: the caller created the stream with
        the source's content type. Renews a sliding TTL and wakes live readers like
        :meth:`append`. ``messages`` empty without ``close`` is the caller's bug (ValueError).

        Raises:
            NoSuchStream, DataGone, TailMismatch, BadOffset (malformed ``offset``),
            StreamClosed (closed stream; a repeated close at the tail is ``closed_only``),
            StoreUnavailable.
        """

    @abc.abstractmethod
    async def read(
        self,
        path: str,
        offset: str = OFFSET_START,
        *,
        max_bytes: int = 1 << 20,
        max_messages: int = 10_000,
        now: float | None = None,
    ) -> ReadResult:
        """Read messages at and after ``offset`` (``-1``: start, ``now``: tail).

        Returns at least one message if any is available, even one larger than
        ``max_bytes``. For a fork, entries below the fork offset come from the
        source. Touches a sliding TTL.

        Raises:
            NoSuchStream, DataGone (soft-deleted, or offset below retention),
            BadOffset.
        """

    @abc.abstractmethod
    async def wait_for(self, path: str, offset: str, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until the stream has data past ``offset`` or gets closed.

        Returns True at once if that is already so, False on timeout or when
        the store closes. Never raises for a missing stream: returns False
        (the caller's next read reports it).
        """

    @abc.abstractmethod
    async def head(self, path: str, *, now: float | None = None) -> StreamInfo:
        """Metadata of a stream. Does not touch a sliding TTL.

        Raises:
            NoSuchStream, DataGone.
        """

    @abc.abstractmethod
    async def delete(self, path: str) -> None:
        """Delete a stream; soft-delete it while forks read from it (§6).

        Raises:
            NoSuchStream, DataGone (already soft-deleted).
        """

    @abc.abstractmethod
    async def list_streams(self, prefix: str = "", *, limit: int = 1000) -> list[StreamInfo]:
        """Live streams whose path starts with ``prefix``, sorted by path."""

    @abc.abstractmethod
    async def trim(self, path: str, below: str) -> int:
        """Drop messages with offsets below ``below``; returns how many.

        Later reads below the new start raise :class:`DataGone`.
        """
