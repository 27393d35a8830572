"""The embedded durable store (default): SQLite in WAL mode, group commit.

Layout: one SQLite database ``<data_dir>/durasync.db`` with three tables:
``streams`` (path -> msgpack of :class:`~durasync.store.engine.StreamMeta`),
``messages`` (path, index, byte position, data) and ``producers``.

Write path. One dedicated writer thread owns the write connection and the
authoritative :class:`~durasync.store.engine.Engine`. It takes the first
queued operation, then every operation queued meanwhile (while the previous
commit was being fsync'd), applies them all in one transaction and commits
once: N concurrent appends share one fsync (group commit). When fsyncs are
slow compared with how fast appends arrive, it also waits a bounded moment
(``commit_window``) for the writers the previous batch says are in flight,
so N closed-loop writers share one fsync instead of splitting into two. ``PRAGMA
synchronous=FULL`` makes the WAL commit durable before ``COMMIT`` returns, and
only then are the callers' futures resolved: acknowledged means on disk.
Producer state, ``Stream-Seq``, closure and data of an operation are in the
same transaction (DS §3 "commit producer state and data atomically"). A
failed commit rolls the whole batch back, reloads the engine from disk and
fails every operation of the batch with :class:`StoreUnavailable`.

Checks (closed, content type, producer, Stream-Seq) are made by the engine on
the writer thread, which serialises every write, so they are atomic with the
write. A check failure raises before the engine changes anything and fails
only that operation.

Read path. After each commit the writer publishes the changed metadata to the
event loop, which keeps a read-only snapshot (``visible``) of committed
state: HEAD, list and live waits use it without I/O; reads fetch rows on a
small pool of reader threads, each with its own connection, bounded by the
snapshot's tail so they never see a half-applied batch.

Crash safety: a batch is one SQLite transaction, so after ``kill -9`` the
database holds a prefix of the committed batches: every acknowledged append,
in order, and no partial batch.

Bounds: at most ``max_pending`` operations wait for the writer (callers
beyond that wait on a semaphore: backpressure), and a batch holds at most
``max_batch`` operations.

Sliding TTL: reads renew it in memory only (a write per read would cost an
fsync); appends persist it. On open every stream's TTL clock restarts at the
open time, so a restart can only lengthen a TTL, never expire a stream early.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

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
from durasync.store.engine import (
    Engine,
    ReadCache,
    StreamMeta,
    live_meta,
    read_stream,
    stream_info,
    wait_for_append,
)
from durasync.store.errors import StoreClientError, StoreUnavailable
from durasync.store.notify import Notifier
from durasync.store.rules import ProducerState, is_expired

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    path TEXT PRIMARY KEY,
    meta BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    path TEXT NOT NULL,
    idx INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (path, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS producers (
    path TEXT NOT NULL,
    producer_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (path, producer_id)
) WITHOUT ROWID;
"""

_meta_encoder = msgspec.msgpack.Encoder()
_meta_decoder = msgspec.msgpack.Decoder(StreamMeta)


def _connect(db_path: Path) -> sqlite3.Connection:
    # 256 cached statements: the writer keeps 2 x 64 multi-row variants.
    conn = sqlite3.connect(
        db_path,
        isolation_level=None,
        check_same_thread=False,
        timeout=30.0,
        cached_statements=256,
    )
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsync'd at every commit, so a commit is durable.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _read_own(  # noqa: PLR0917 - mirrors Persistence.read_own plus the connection
    conn: sqlite3.Connection, path: str, lo: int, hi: int, max_bytes: int, max_messages: int
) -> list[tuple[int, int, bytes]]:
    out: list[tuple[int, int, bytes]] = []
    used = 0
    cursor = conn.execute(
        "SELECT idx, pos, data FROM messages WHERE path = ? AND idx >= ? AND idx < ? "
        "ORDER BY idx LIMIT ?",
        (path, lo, hi, max_messages),
    )
    for idx, pos, data in cursor:
        if out and used + len(data) > max_bytes:
            break
        out.append((idx, pos, bytes(data)))
        used += len(data)
    cursor.close()
    return out


#: Rows per multi-row ``INSERT`` of message rows (4 parameters each).
_ROWS_PER_INSERT = 64


def _insert_messages_sql(rows: int) -> str:
    return "INSERT INTO messages (path, idx, pos, data) VALUES " + ",".join(["(?, ?, ?, ?)"] * rows)


#: One statement per row count, built once (SQLite caches their compiled forms).
_INSERT_MESSAGES = [""] + [_insert_messages_sql(n) for n in range(1, _ROWS_PER_INSERT + 1)]
_REPLACE_METAS = [""] + [
    "INSERT OR REPLACE INTO streams (path, meta) VALUES " + ",".join(["(?, ?)"] * n)
    for n in range(1, _ROWS_PER_INSERT + 1)
]


class _SqlitePersistence:
    """Applies engine changes to the open transaction; records what changed.

    Message rows and producer states are buffered and written at the end of
    the batch (:meth:`flush`) in multi-row statements: each SQLite statement
    step releases and re-takes the GIL on the writer thread, and re-taking it
    while the event loop is busy can cost up to the interpreter's switch
    interval, so a batch of N appends takes a handful of steps instead of
    ~2N. Every call that reads or deletes rows flushes first, so the
    transaction always sees the batch's own writes in order.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.saved: dict[str, StreamMeta] = {}
        self.dropped: set[str] = set()
        self._rows: list[tuple[str, int, int, bytes]] = []
        self._producers: dict[tuple[str, str], ProducerState] = {}

    def reset(self) -> None:
        self.saved = {}
        self.dropped = set()
        self._rows = []
        self._producers = {}

    def write_messages(
        self, path: str, first_index: int, first_byte: int, messages: Sequence[bytes]
    ) -> None:
        rows = self._rows
        idx, pos = first_index, first_byte
        for data in messages:
            rows.append((path, idx, pos, data))
            idx, pos = idx + 1, pos + len(data)

    def _flush_writes(self) -> None:
        """Write the buffered message rows and producer states (in this transaction)."""
        rows = self._rows
        if rows:
            self._rows = []
            execute = self.conn.execute
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[start : start + _ROWS_PER_INSERT]
                execute(_INSERT_MESSAGES[len(chunk)], [v for row in chunk for v in row])
        producers = self._producers
        if producers:
            self._producers = {}
            self.conn.executemany(
                "INSERT OR REPLACE INTO producers (path, producer_id, epoch, last_seq, "
                "updated_at) VALUES (?, ?, ?, ?, ?)",
                [
                    (path, producer_id, state.epoch, state.last_seq, state.updated_at)
                    for (path, producer_id), state in producers.items()
                ],
            )

    def read_own(
        self, path: str, lo: int, hi: int, max_bytes: int, max_messages: int
    ) -> list[tuple[int, int, bytes]]:
        self._flush_writes()
        return _read_own(self.conn, path, lo, hi, max_bytes, max_messages)

    def drop_stream(self, path: str) -> None:
        self._flush_writes()
        self.conn.execute("DELETE FROM messages WHERE path = ?", (path,))
        self.conn.execute("DELETE FROM producers WHERE path = ?", (path,))
        self.conn.execute("DELETE FROM streams WHERE path = ?", (path,))
        self.saved.pop(path, None)  # a re-create in the same batch saves it again
        self.dropped.add(path)

    def trim_messages(self, path: str, below_index: int) -> None:
        self._flush_writes()
        self.conn.execute("DELETE FROM messages WHERE path = ? AND idx < ?", (path, below_index))

    def save_meta(self, meta: StreamMeta) -> None:
        # Written once per path at the end of the batch (flush): a batch of N
        # appends to one stream rewrites its row once, not N times.
        self.saved[meta.path] = meta
        self.dropped.discard(meta.path)

    def flush(self) -> None:
        """Write everything this batch changed (before COMMIT)."""
        self._flush_writes()
        saved = list(self.saved.items())
        execute = self.conn.execute
        for start in range(0, len(saved), _ROWS_PER_INSERT):
            chunk = saved[start : start + _ROWS_PER_INSERT]
            params: list[object] = []
            for path, meta in chunk:
                params.append(path)
                params.append(_meta_encoder.encode(meta))
            execute(_REPLACE_METAS[len(chunk)], params)

    def save_producer(self, path: str, producer_id: str, state: ProducerState) -> None:
        # The last state of a producer in the batch is the one that counts.
        self._producers[path, producer_id] = state


class _Op:
    """One queued write: ``fn`` runs on the writer thread against the engine."""

    __slots__ = ("fn", "future", "outcome", "queued")

    def __init__(self, fn: Callable[[Engine], Any], future: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.future = future
        self.outcome: tuple[bool, Any] = (False, None)
        #: When it was queued (``time.monotonic``): the commit window's measure.
        self.queued = time.monotonic()


_STOP = object()


async def _read_outcome(read: Awaitable[ReadResult]) -> ReadResult:
    """Await a reader-thread read, mapping SQLite failures to StoreUnavailable."""
    try:
        return await read
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"read failed: {exc}") from exc


class EmbeddedStore(LogStore):
    """The ``embedded`` backend; see the module docstring for guarantees.

    Args:
        data_dir: directory of the database (created if missing). One process
            at a time: a second ``open`` on the same directory raises
            :class:`StoreUnavailable`.
        max_pending: operations that may wait for the writer at once.
        max_batch: operations committed together at most.
        readers: reader threads (each with its own connection).
        commit_window: longest wait, in seconds, for more appends before a
            commit when the previous batch suggests more writers are in flight
            and commits take longer than those arrivals (also never longer
            than the previous commit took); 0 commits as soon as anything is
            queued. Acknowledgement still follows the fsync.
    """

    name = "embedded"
    shared = False

    def __init__(
        self,
        data_dir: Path,
        *,
        max_pending: int = 4096,
        max_batch: int = 1024,
        readers: int = 2,
        commit_window: float = 0.001,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._commit_window = commit_window
        #: Commit-window hand-shake: ops the writer still waits for (0: not
        #: waiting; written by the writer thread only) and its wake-up.
        self._wanted = 0
        self._gathered = threading.Event()
        self.db_path = self.data_dir / "durasync.db"
        self._max_batch = max_batch
        self._clock = clock
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._slots = asyncio.Semaphore(max_pending)
        self._notifier = Notifier()
        #: One read (one thread hop) of a new entry serves every live reader
        #: woken for it; pending reads are shared too (see ReadCache).
        self._reads: ReadCache[ReadResult | asyncio.Future[ReadResult]] = ReadCache()
        self._visible: dict[str, StreamMeta] = {}
        self._engine: Engine | None = None
        self._writer: threading.Thread | None = None
        self._writer_done: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._readers = readers
        self._pool: ThreadPoolExecutor | None = None
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_local = threading.local()
        self._reader_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._closed = False
        #: Transactions committed and operations they carried (group-commit stats).
        self.commits = 0
        self.committed_ops = 0

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        """Create or recover the database and start the writer thread.

        Raises:
            StoreUnavailable: the directory is unusable or locked by another process.
        """
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._open_sync)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"{self.data_dir}: {exc}") from exc
        self._writer_done = self._loop.create_future()
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="durasync-read")
        self._writer = threading.Thread(
            target=self._writer_main, name="durasync-write", daemon=True
        )
        self._writer.start()

    def _open_sync(self) -> None:
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise OSError("not a directory")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise OSError("in use by another process (one process per data directory)") from exc
        self._lock_fd = fd
        conn = _connect(self.db_path)
        conn.executescript(_SCHEMA)
        persistence = _SqlitePersistence(conn)
        engine = Engine(persistence)
        self._load(engine, conn)
        self._engine = engine
        self._visible = dict(engine.metas)

    def _load(self, engine: Engine, conn: sqlite3.Connection) -> None:
        engine.metas.clear()
        engine.producers.clear()
        now = self._clock()
        for (blob,) in conn.execute("SELECT meta FROM streams"):
            meta = _meta_decoder.decode(blob)
            engine.metas[meta.path] = meta
            # Read touches are not persisted: restart every TTL clock (see module doc).
            engine.touched[meta.path] = max(engine.touched.get(meta.path, 0.0), now)
        rows = conn.execute("SELECT path, producer_id, epoch, last_seq, updated_at FROM producers")
        for path, producer_id, epoch, last_seq, updated_at in rows:
            engine.producers.setdefault(path, {})[producer_id] = ProducerState(
                epoch, last_seq, updated_at
            )

    async def close(self) -> None:
        """Finish queued writes, stop the threads, wake waiters, release the lock."""
        if self._closed:
            return
        self._closed = True
        self._notifier.close()
        if self._writer is not None and self._writer_done is not None:
            self._queue.put(_STOP)
            await self._writer_done
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for conn in self._reader_conns:
            conn.close()
        if self._engine is not None:
            persistence = self._engine.persistence
            assert isinstance(persistence, _SqlitePersistence)
            persistence.conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- writer thread -----------------------------------------------------------

    def _writer_main(self) -> None:
        assert self._engine is not None and self._loop is not None
        engine = self._engine
        persistence = engine.persistence
        assert isinstance(persistence, _SqlitePersistence)
        conn = persistence.conn
        get, get_nowait = self._queue.get, self._queue.get_nowait
        max_batch = self._max_batch
        # Group-commit window. Closed-loop writers send their next append
        # soon after their ack, but not all at once: committing as soon as
        # the first one arrives splits N writers into a batch of 1 and a batch
        # of N-1 (two commits for N appends). When a commit (fsync) takes
        # longer than the previous batch's appends took to arrive, waiting for
        # them is cheaper than a second commit: then, if fewer are queued
        # than the previous batch held, wait for the rest, but never longer
        # than the window nor than one commit. When commits are quicker than
        # the arrivals, committing at once overlaps the commit with the
        # arrivals instead, so no wait. A lone writer (previous batch of 1)
        # never waits either way.
        expected = 1
        commit_seconds = 0.0
        spread = 0.0
        stop = False
        try:
            while not stop:
                first = get()
                if first is _STOP:
                    break
                batch: list[_Op] = [first]  # type: ignore[list-item]
                want = min(expected, max_batch)
                gathered = False
                while len(batch) < max_batch:
                    try:
                        nxt = get_nowait()
                    except queue.Empty:
                        if (
                            gathered
                            or len(batch) >= want
                            or self._commit_window <= 0
                            or spread >= commit_seconds
                        ):
                            break
                        # One wait for the whole window, woken early by the
                        # loop once enough ops are queued (``_submit``): no
                        # thread wake-up (and GIL hand-off) per arriving op.
                        gathered = True
                        self._gathered.clear()
                        self._wanted = want - len(batch)
                        if self._queue.qsize() < self._wanted:
                            self._gathered.wait(min(self._commit_window, commit_seconds))
                        self._wanted = 0
                        continue
                    if nxt is _STOP:
                        stop = True
                        break
                    batch.append(nxt)  # type: ignore[arg-type]
                started = time.monotonic()
                self._run_batch(engine, persistence, conn, batch)
                commit_seconds = time.monotonic() - started
                expected = len(batch)
                spread = batch[-1].queued - batch[0].queued
        finally:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._writer_stopped)

    def _writer_stopped(self) -> None:
        if self._writer_done is not None and not self._writer_done.done():
            self._writer_done.set_result(None)

    def _run_batch(
        self,
        engine: Engine,
        persistence: _SqlitePersistence,
        conn: sqlite3.Connection,
        batch: list[_Op],
    ) -> None:
        persistence.reset()
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                try:
                    op.outcome = (True, op.fn(engine))
                except StoreClientError as exc:
                    # The engine raises before changing anything: only this op fails.
                    op.outcome = (False, exc)
            persistence.flush()
            conn.execute("COMMIT")
            self.commits += 1
            self.committed_ops += len(batch)
            observer = self.observer
            if observer is not None:
                observer.commit(time.perf_counter() - started, len(batch))
        except Exception as exc:  # sqlite3.Error, OSError, engine bug: fail the batch
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            error = StoreUnavailable(f"write failed: {exc}")
            for op in batch:
                op.outcome = (False, error)
            try:
                self._load(engine, conn)
                saved = dict(engine.metas)
            except sqlite3.Error:
                saved = {}
            self._post(batch, saved, set(), full=True)
            return
        self._post(batch, dict(persistence.saved), set(persistence.dropped), full=False)

    def _post(
        self, batch: list[_Op], saved: dict[str, StreamMeta], dropped: set[str], full: bool
    ) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._publish, batch, saved, dropped, full)

    def _publish(
        self, batch: list[_Op], saved: dict[str, StreamMeta], dropped: set[str], full: bool
    ) -> None:
        """On the loop: make the commit visible, then answer, then wake readers."""
        if full:
            changed = set(self._visible) | set(saved)
            self._visible = saved
        else:
            for path in dropped:
                self._visible.pop(path, None)
            self._visible.update(saved)
            changed = set(saved) | dropped
        for op in batch:
            if op.future.done():
                continue
            ok, value = op.outcome
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)
        for path in changed:
            self._notifier.notify(path)

    async def _submit(self, fn: Callable[[Engine], T]) -> T:
        if self._closed or self._loop is None:
            raise StoreUnavailable("the store is closed")
        async with self._slots:
            future: asyncio.Future[T] = self._loop.create_future()
            self._queue.put(_Op(fn, future))
            wanted = self._wanted
            if wanted and self._queue.qsize() >= wanted:
                self._gathered.set()  # the writer's commit window: enough are in
            # Shield: a cancelled caller must not leave a half-known outcome;
            # the write still completes (or not) as one unit.
            return await asyncio.shield(future)

    # -- reads -------------------------------------------------------------------------

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = _connect(self.db_path)
            self._reader_local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    def _touched(self) -> dict[str, float]:
        assert self._engine is not None
        return self._engine.touched

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def _live(self, path: str, now: float) -> StreamMeta:
        return live_meta(self._visible.get(path), path, self._touched(), now)

    # -- LogStore ------------------------------------------------------------------------

    async def create(
        self,
        path: str,
        config: StreamConfig,
        *,
        initial: Sequence[bytes] = (),
        closed: bool = False,
        now: float | None = None,
    ) -> CreateResult:
        when = self._now(now)
        initial = list(initial)
        return await self._submit(lambda e: e.create(path, config, initial, closed, when))

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
        when = self._now(now)
        batch = list(messages)
        return await self._submit(
            lambda e: e.append(
                path,
                batch,
                content_type=content_type,
                producer=producer,
                stream_seq=stream_seq,
                close=close,
                now=when,
            )
        )

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
        when = self._now(now)
        batch = list(messages)
        return await self._submit(lambda e: e.append_at(path, offset, batch, close=close, now=when))

    async def read(
        self,
        path: str,
        offset: str = OFFSET_START,
        *,
        max_bytes: int = 1 << 20,
        max_messages: int = 10_000,
        now: float | None = None,
    ) -> ReadResult:
        if self._closed or self._pool is None or self._loop is None:
            raise StoreUnavailable("the store is closed")
        when = self._now(now)
        meta = self._live(path, when)
        # DS §2 GET: every read renews a sliding TTL (in memory, see module doc).
        self._touched()[path] = when
        visible = self._visible

        def run() -> ReadResult:
            return read_stream(
                visible.get,
                meta,
                offset,
                max_bytes=max_bytes,
                max_messages=max_messages,
                read_own=self._read_own_here,
            )

        if offset in (OFFSET_NOW, meta.tail):
            return run()  # at the tail: no rows to fetch, no thread hop
        reads = self._reads
        cached = reads.get(meta, offset, max_bytes, max_messages)
        if isinstance(cached, ReadResult):
            return cached
        if cached is not None:
            # Another reader's identical read is in flight: share it. shield:
            # this reader's cancellation must not cancel the others' read.
            return await _read_outcome(asyncio.shield(cached))
        pending = self._loop.run_in_executor(self._pool, run)
        reads.put(meta, offset, max_bytes, max_messages, pending)
        try:
            result = await _read_outcome(asyncio.shield(pending))
        except BaseException:
            # Failed (or this reader was cancelled): the next reader retries.
            reads.discard(path, pending)
            raise
        reads.discard(path, pending)
        if result.entries and reads.small(result, reads.max_bytes):
            reads.put(meta, offset, max_bytes, max_messages, result)
        return result

    def _read_own_here(
        self, path: str, lo: int, hi: int, max_bytes: int, max_messages: int
    ) -> list[tuple[int, int, bytes]]:
        """``read_own`` on the calling reader thread's own connection."""
        return _read_own(self._reader_conn(), path, lo, hi, max_bytes, max_messages)

    def wait_for(self, path: str, offset: str, timeout: float) -> Coroutine[Any, Any, bool]:
        return wait_for_append(self._notifier, self._visible, path, offset, timeout)

    async def head(self, path: str, *, now: float | None = None) -> StreamInfo:
        meta = self._live(path, self._now(now))
        info = stream_info(meta)
        touched = max(meta.touched_at, self._touched().get(path, 0.0))
        return msgspec.structs.replace(info, touched_at=touched)

    async def delete(self, path: str) -> None:
        when = self._clock()
        await self._submit(lambda e: e.delete(path, when))

    async def list_streams(self, prefix: str = "", *, limit: int = 1000) -> list[StreamInfo]:
        now = self._clock()
        touched = self._touched()
        out: list[StreamInfo] = []
        for path in sorted(p for p in self._visible if p.startswith(prefix)):
            meta = self._visible[path]
            last = max(meta.touched_at, touched.get(path, 0.0))
            if meta.soft_deleted or is_expired(meta.config, last, now):
                continue
            out.append(stream_info(meta))
            if len(out) >= limit:
                break
        return out

    async def trim(self, path: str, below: str) -> int:
        when = self._clock()
        return await self._submit(lambda e: e.trim(path, below, when))
