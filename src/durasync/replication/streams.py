"""Streams across a link: mirror (pull) and forward (push), one unit per stream.

**Mirror, exact** (the remote is durasync): the unit reads the remote stream with the framed
replication read (message bytes with their boundaries) and appends each batch with
:meth:`~durasync.store.base.LogStore.append_at` at the offset the source gave, so the mirror
holds the same messages at the same offsets: a reader can move between source and mirror
with the offset it holds. The resume point is the mirror's own tail (written atomically with
the data), so a crash can neither skip nor repeat a message; the ledger keeps the source's
``(server, epoch)`` domain and reports the checkpoint. A 410 gap (the source was re-created,
replaced or cannot serve the cursor) makes the link repair: the mirror is dropped and copied
again from the source's start.

**Mirror, plain** (any other Durable Streams server): ordinary catch-up and long-poll reads;
each answer becomes one local append (JSON answers keep their message boundaries, others
become one message), carrying the source's ``Stream-Next-Offset`` as the local append's
``Stream-Seq``: stored atomically with the data, it is the resume point (content identical,
offsets the mirror's own).

**Forward**: every local message is appended once, in local order, to the same path on the
remote, with an idempotent producer (DS §3) whose id is derived from the link, the local
stream and its incarnation. Batch ``[p, q)`` is sent with ``Producer-Epoch = q`` and
``Producer-Seq = 0``, so the remote's producer epoch is always the end position of the last
batch it applied:

- a retry of a batch that was applied is a duplicate (same epoch): 204, nothing twice;
- after a restart the first batch is a single message ``[p, p+1)``: a remote that already
  holds more answers 403 with ``Producer-Epoch: e`` (fenced), and the unit continues at
  ``e``; one that holds exactly ``p+1`` answers duplicate; otherwise it applies it. No
  message is skipped or repeated, whatever happened before the restart.

Outcomes: 2xx succeeded; transient failures are retried (0 / 250 ms / 1 s / 2 s, Retry-After
honoured) and then the link is marked ``needs_reconcile`` and the unit keeps retrying with
backoff (re-probing when it gets through); a permanent refusal (401, 403, 409 closed,
413, ...) records a dead letter and parks that stream's push there (later messages wait, so
order holds) until the operator retries; every other stream goes on.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import logging
import random
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

from durasync.httpwire import is_json
from durasync.protocol.backoff import Backoff, BackoffPolicy
from durasync.replication.core import Checkpoint, Outcome, Token, retry_delay
from durasync.replication.remote import GapError, RemoteError, StreamMissing
from durasync.replication.wire import StreamEntry, StreamRead
from durasync.store.base import OFFSET_START, AppendResult, StreamConfig, StreamInfo
from durasync.store.errors import (
    DataGone,
    NoSuchStream,
    SeqConflict,
    StoreError,
    StreamClosed,
    StreamExists,
    TailMismatch,
)
from durasync.store.offsets import decode_offset, encode_offset

if TYPE_CHECKING:
    from durasync.replication.link import LinkRunner

__all__ = ["StreamMirror", "StreamPush", "producer_id", "stream_epoch"]

log = logging.getLogger("durasync.replication")

#: Reconnect backoff of a unit whose remote does not answer (seconds).
UNIT_BACKOFF: Final = BackoffPolicy(
    initial_delay=0.2, max_delay=5.0, multiplier=2.0, min_delay=0.05, stable_after=1.0
)


def stream_epoch(info: StreamInfo) -> str:
    """The incarnation of a stream: its creation time (a re-created stream has a new one)."""
    return f"{info.created_at:.6f}"


def _position(offset: str) -> int:
    return decode_offset(offset)[0]


class _FrameQueue:
    """Frames of a live read waiting to be written: bounded in bytes (the reader waits, and
    TCP pushes back on the source), taken in contiguous runs."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._frames: collections.deque[StreamRead] = collections.deque()
        self._bytes = 0
        self._ended = False
        self._changed = asyncio.Condition()

    @staticmethod
    def _size(read: StreamRead) -> int:
        return sum(len(e) for e in read.entries) + 64

    async def put(self, read: StreamRead) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._bytes < self.max_bytes)
            self._frames.append(read)
            self._bytes += self._size(read)
            self._changed.notify_all()

    async def end(self) -> None:
        """No more frames will come: wake the writer."""
        self._ended = True
        async with self._changed:
            self._changed.notify_all()

    async def take(self, max_messages: int, max_bytes: int) -> list[StreamRead]:
        """The frames queued now (at least one; at most the bounds, beyond the first), or
        ``[]`` once the reader ended and everything was taken."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._frames) or self._ended)
            out: list[StreamRead] = []
            messages = size = 0
            while self._frames:
                read = self._frames[0]
                n, b = len(read.entries), self._size(read)
                if out and (messages + n > max_messages or size + b > max_bytes):
                    break
                out.append(self._frames.popleft())
                self._bytes -= b
                messages += n
                size += b
            self._changed.notify_all()
            return out


class _Unit:
    """What mirror and push units share: their task, repair flag, dead-letter park, lag."""

    kind: Literal["stream", "room"] = "stream"
    direction: Literal["pull", "push"] = "pull"

    def __init__(self, link: LinkRunner, path: str) -> None:
        self.link = link
        self.path = path
        self.task: asyncio.Task[None] | None = None
        #: Why the unit waits for the link's repair (None: it does not).
        self.repair_reason: str | None = None
        #: Parked on a dead letter until the operator retries.
        self.parked = False
        #: Entries known to be behind and since when (for the lag view).
        self.behind = 0
        self.behind_since: float | None = None
        self.done = False
        self._backoff = Backoff(UNIT_BACKOFF, rng=random.random)

    @property
    def key(self) -> tuple[Literal["pull", "push"], Literal["stream", "room"], str]:
        return (self.direction, self.kind, self.path)

    def note_lag(self, behind: int) -> None:
        self.behind = max(0, behind)
        if self.behind == 0:
            self.behind_since = None
        elif self.behind_since is None:
            self.behind_since = self.link.clock()

    async def pause_after_failure(self, error: Exception) -> None:
        delay = self._backoff.next_delay() or UNIT_BACKOFF.max_delay
        log.debug(
            "link %s %s %s: %s; retry in %.2fs",
            self.link.name,
            self.direction,
            self.path,
            error,
            delay,
        )
        await self.link.sleep(delay)

    def reset_backoff(self) -> None:
        self._backoff = Backoff(UNIT_BACKOFF, rng=random.random)

    async def run(self) -> None:
        raise NotImplementedError

    async def repair(self) -> None:
        """Bring the unit back to a state it can continue from (raises on failure)."""


# ------------------------------------------------------------------------------------ mirror


class StreamMirror(_Unit):
    """Mirrors one remote stream into the local store (see the module docstring)."""

    direction = "pull"

    def __init__(self, link: LinkRunner, path: str, entry: StreamEntry | None) -> None:
        super().__init__(link, path)
        #: What the last listing said about the source (exact mode).
        self.entry = entry

    # -- shared ------------------------------------------------------------------------

    async def _local(self) -> StreamInfo | None:
        try:
            return await self.link.store.head(self.path)
        except (NoSuchStream, DataGone):
            return None

    async def _drop_local(self) -> None:
        with contextlib.suppress(NoSuchStream, DataGone):
            await self.link.store.delete(self.path)
        self.link.ledger.forget(self.key)
        await self.link.ledger.flush()

    async def run(self) -> None:
        exact = self.link.remote_id is not None
        while not self.link.stopping and self.repair_reason is None and not self.done:
            try:
                if exact:
                    await self._step_exact()
                else:
                    await self._step_plain()
                self.reset_backoff()
            except GapError as exc:
                self.link.gap(self, exc.body.reason, exc.body)
                return
            except StreamMissing:
                log.info("link %s: %s was deleted at the source", self.link.name, self.path)
                await self._drop_local()
                self.done = True
            except RemoteError as exc:
                if exc.transient:
                    await self.pause_after_failure(exc)
                else:
                    log.warning("link %s: mirror of %s: %s", self.link.name, self.path, exc)
                    await self.link.sleep(self.link.settings.discover_interval)
            except StoreError as exc:
                await self.pause_after_failure(exc)

    async def repair(self) -> None:
        """Start over: drop the local copy and its checkpoint; the next run copies the
        source's current incarnation from its start."""
        await self._drop_local()
        self.repair_reason = None

    # -- exact ---------------------------------------------------------------------------

    async def _step_exact(self) -> None:
        link = self.link
        ledger = link.ledger
        info = ledger.info(self.key)
        local = await self._local()
        if "epoch" not in info:
            entry = self.entry
            if entry is None:
                self.done = True  # not (or no longer) listed: discovery decides
                return
            if local is not None:
                log.error(
                    "link %s: local stream %r exists and is not a mirror; not touching it",
                    link.name,
                    self.path,
                )
                self.done = True
                return
            # Record the source's domain durably before the local stream exists, so a crash
            # in between can never leave a local stream the ledger does not explain.
            info = {"mode": "exact", "server": link.remote_id, "epoch": entry.epoch}
            ledger.record_checkpoint(self.key, ledger.checkpoint(self.key), info)
            await ledger.flush()
        if local is None:
            content_type = self.entry.content_type if self.entry else "application/octet-stream"
            with contextlib.suppress(StreamExists):
                await link.store.create(self.path, StreamConfig(content_type=content_type))
            local = await self._local()
            if local is None:
                return
        if local.closed and self.entry is not None:
            self.note_lag(0)
            self.done = True  # complete; discovery notices a deletion or a re-creation
            return
        await self._follow_exact(local, str(info["server"]), str(info["epoch"]))

    async def _follow_exact(self, local: StreamInfo, server: str, epoch: str) -> None:
        """Copy from the local tail on with a live framed read: the source sends batch after
        batch as it gets data, so catching up and following are one loop. Frames are read
        by a task of their own into a bounded queue while this one writes: every local
        append takes all the frames that arrived during the previous one (one fsync for
        them all, never one per frame behind a slow disk). Returns when the response ends
        (the caller reconnects), the stream is closed and copied or deleted, a gap, or the
        link stops; errors are raised."""
        link = self.link
        frames = _FrameQueue(link.settings.batch_bytes)
        reader = asyncio.ensure_future(self._receive(local.tail, server, epoch, frames))
        try:
            await self._write_frames(local, server, epoch, frames)
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        if reader.done() and not reader.cancelled():
            error = reader.exception()
            if error is not None:
                raise error

    async def _receive(self, tail: str, server: str, epoch: str, frames: _FrameQueue) -> None:
        try:
            async for read in self.link.remote.follow_stream(
                self.path, tail, server=server, epoch=epoch, heartbeat=self.link.settings.live_wait
            ):
                await frames.put(read)
        finally:
            await frames.end()

    async def _write_frames(
        self, local: StreamInfo, server: str, epoch: str, frames: _FrameQueue
    ) -> None:
        link = self.link
        ledger = link.ledger
        token_stream = f"{server}:{self.path}"
        tail = local.tail
        while not link.stopping and self.repair_reason is None:
            batch = await frames.take(link.settings.batch_messages, link.settings.batch_bytes)
            if not batch:
                return  # the response ended (or the reader failed: raised by the caller)
            last = batch[-1]
            if any(r.epoch != epoch or r.server != server for r in batch):
                link.gap(self, "epoch_mismatch", None)
                return
            if local.closed:
                self.done = True  # still there (a listing missed it): nothing to copy
                return
            if batch[0].offset != tail:
                return  # not where this side ends: reconnect from the tail
            entries = [data for r in batch for data in r.entries]
            close = last.closed and last.up_to_date
            if entries or close:
                try:
                    result = await link.store.append_at(
                        self.path, batch[0].offset, entries, close=close
                    )
                    tail = result.tail
                    link.count_moved("pulled", len(entries))
                except TailMismatch:
                    return  # written meanwhile (a replay): reconnect from the tail
                except StreamClosed:
                    self.done = True
                    return
            self.note_lag(_position(last.tail) - _position(tail))
            cp = ledger.checkpoint(self.key)
            cp.note_received(
                Token(
                    stream=token_stream, epoch=epoch, position=_position(last.tail), ref=last.tail
                )
            )
            if cp.commit(
                Token(stream=token_stream, epoch=epoch, position=_position(tail), ref=tail)
            ):
                ledger.record_checkpoint(self.key, cp)
                link.advanced("pull", self.path, cp)
            if close:
                self.done = True
                return

    # -- plain ---------------------------------------------------------------------------

    async def _step_plain(self) -> None:
        link = self.link
        remote = link.remote
        local = await self._local()
        if local is not None and local.closed:
            # Complete: only a deletion at the source is left to notice.
            gone = await remote.request(
                "GET", remote.stream_url(self.path), params={"offset": "now"}, what="inspect"
            )
            if gone.status_code == 404:
                await self._drop_local()
            self.note_lag(0)
            self.done = True
            return
        if local is None:
            head = await remote.request(
                "GET", remote.stream_url(self.path), params={"offset": "now"}, what="inspect"
            )
            if head.status_code == 404:
                self.done = True
                return
            if head.status_code != 200:
                raise remote.fail(head, f"inspect {self.path!r}")
            content_type = head.headers.get("content-type") or "application/octet-stream"
            link.ledger.record_checkpoint(
                self.key, link.ledger.checkpoint(self.key), {"mode": "plain"}
            )
            await link.ledger.flush()
            with contextlib.suppress(StreamExists):
                await link.store.create(self.path, StreamConfig(content_type=content_type))
            local = await self._local()
            if local is None:
                return
        offset = local.last_stream_seq or OFFSET_START
        params = {"offset": offset}
        wait = 0.0
        if self.behind == 0 and local.last_stream_seq is not None:
            params["live"] = "long-poll"
            wait = link.settings.live_wait
        resp = await remote.request(
            "GET",
            remote.stream_url(self.path),
            params=params,
            what=f"read {self.path!r}",
            wait=wait,
        )
        if resp.status_code == 404:
            log.info("link %s: %s was deleted at the source", link.name, self.path)
            await self._drop_local()
            self.done = True
            return
        if resp.status_code == 410:
            link.gap(self, "token_too_old", None)
            return
        if resp.status_code not in (200, 204):
            raise remote.fail(resp, f"read {self.path!r}")
        next_offset = resp.headers.get("stream-next-offset") or offset
        closed = resp.headers.get("stream-closed", "").lower() == "true"
        up_to_date = resp.headers.get("stream-up-to-date", "").lower() == "true"
        messages: list[bytes] = []
        if resp.status_code == 200 and resp.content:
            if is_json(local.config.content_type):
                from durasync.streams.protocol import RequestRefused, parse_json_messages

                try:
                    messages = parse_json_messages(resp.content, allow_empty_array=True)
                except RequestRefused as exc:
                    raise RemoteError(
                        Outcome(
                            kind="permanent",
                            status=200,
                            detail=f"invalid JSON from the source: {exc.message}",
                        ),
                        f"read {self.path!r}",
                    ) from None
            else:
                messages = [resp.content]
        close = closed and up_to_date
        moved = next_offset != offset
        result: AppendResult | None = None
        try:
            if messages:
                result = await link.store.append(
                    self.path, messages, stream_seq=next_offset if moved else None, close=close
                )
                link.count_moved("pulled", len(messages))
            elif close:
                result = await link.store.append(self.path, [], close=True)
        except SeqConflict:
            result = None  # applied before (a replay): the next round reads from past it
        except StreamClosed:
            self.done = True
            return
        self.note_lag(0 if up_to_date else 1)
        if result is not None and result.offsets:
            cp = link.ledger.checkpoint(self.key)
            token = Token(
                stream=f"{remote.base}:{self.path}",
                epoch="plain",
                position=_position(result.tail),
                ref=next_offset,
            )
            if not cp.accepts(token):
                cp.reset()
            if cp.commit(token):
                link.ledger.record_checkpoint(self.key, cp)
                link.advanced("pull", self.path, cp)
        if close:
            self.done = True


# -------------------------------------------------------------------------------------- push


class _Batch(NamedTuple):
    """One push request: local messages ``[offset, end)``, sent with producer ``epoch``."""

    offset: str
    end: str
    epoch: int
    body: bytes
    content_type: str
    close: bool


def producer_id(server_id: str, link_id: str, path: str, epoch: str) -> str:
    """The producer id a link forwards one incarnation of one local stream with."""
    digest = hashlib.sha256(f"{server_id}\n{link_id}\n{path}\n{epoch}".encode()).digest()
    return "durasync-" + base64.urlsafe_b64encode(digest[:18]).decode()


class StreamPush(_Unit):
    """Forwards one local stream to the same path on the remote (module docstring)."""

    direction = "push"

    def __init__(self, link: LinkRunner, path: str) -> None:
        super().__init__(link, path)
        self._uncertain = True
        self._remote_ready = False
        #: True after a transient failure exhausted its retries (the link reconciles).
        self._exhausted = False
        self._wake = asyncio.Event()
        #: Local offset of the next message to forward (where a dead letter parks the push).
        self._at = OFFSET_START

    def wake(self) -> None:
        self._wake.set()

    def reset_probe(self) -> None:
        """Re-probe the remote with the next batch (the periodic integrity reconcile)."""
        self._uncertain = True
        self._wake.set()

    async def run(self) -> None:
        while not self.link.stopping and not self.done and not self.parked:
            try:
                await self._step()
                self.reset_backoff()
            except RemoteError as exc:
                if exc.transient:
                    await self.pause_after_failure(exc)
                else:
                    # Refused for good (creating or inspecting the remote stream): park here.
                    self._dead(self._at, exc.status or 0, exc.outcome.detail or str(exc))
            except StoreError as exc:
                await self.pause_after_failure(exc)

    async def _start(self, info: StreamInfo) -> tuple[dict[str, object], Checkpoint]:
        """The ledger facts of the local incarnation being forwarded (reset when it changed)."""
        link = self.link
        ledger = link.ledger
        epoch = stream_epoch(info)
        facts = ledger.info(self.key)
        cp = ledger.checkpoint(self.key)
        if facts.get("epoch") != epoch:
            facts = {
                "epoch": epoch,
                "producer": producer_id(link.server_id, link.config.link_id, self.path, epoch),
                "closed": False,
            }
            cp.reset()
            ledger.record_checkpoint(self.key, cp, facts)
            await ledger.flush()
            self._uncertain = True
            self._remote_ready = False
        return facts, cp

    async def _ensure_remote(self, content_type: str) -> None:
        remote = self.link.remote
        url = remote.stream_url(self.path)
        # A GET at the tail rather than HEAD: a refusal then carries the remote's reason.
        head = await remote.request(
            "GET", url, params={"offset": "now"}, what=f"inspect {self.path!r}"
        )
        if head.status_code == 200:
            self._remote_ready = True
            return
        if head.status_code != 404:
            raise remote.fail(head, f"inspect {self.path!r}")
        put = await remote.request(
            "PUT", url, headers={"Content-Type": content_type}, what=f"create {self.path!r}"
        )
        if put.status_code not in (200, 201):
            raise remote.fail(put, f"create {self.path!r}")
        self._remote_ready = True

    async def _step(self) -> None:
        link = self.link
        store = link.store
        try:
            info = await store.head(self.path)
        except (NoSuchStream, DataGone):
            self.done = True  # deleted locally: nothing more to forward (deletes stay local)
            return
        facts, cp = await self._start(info)
        if facts.get("closed"):
            self.note_lag(0)
            self.done = True
            return
        start_index, start_byte = decode_offset(info.start)
        if cp.applied is None or cp.applied.position < start_index:
            offset = info.start
        else:
            offset = cp.applied.ref or encode_offset(start_index, start_byte)
        self._at = offset
        position = _position(offset)
        tail_index = _position(info.tail)
        self.note_lag(tail_index - position)
        if not self._remote_ready:
            await self._ensure_remote(info.config.content_type)
        if position >= tail_index and not info.closed:
            self._wake.clear()
            waiter = asyncio.ensure_future(
                store.wait_for(self.path, offset, link.settings.live_wait)
            )
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                waker.cancel()
            return
        json_mode = is_json(info.config.content_type)
        entries = []
        if position < tail_index:
            many = json_mode and not self._uncertain
            read = await store.read(
                self.path,
                offset,
                max_bytes=link.settings.batch_bytes if many else 1,
                max_messages=link.settings.batch_messages if many else 1,
            )
            entries = read.entries
        end = entries[-1].next_offset if entries else offset
        close = info.closed and _position(end) >= tail_index
        if entries:
            body = (
                b"[" + b",".join(e.data for e in entries) + b"]"
                if json_mode
                else b"".join(e.data for e in entries)
            )
            epoch = _position(end)
        else:
            body = b""
            epoch = _position(end) + 1  # a close after everything: one past the last batch
        batch = _Batch(offset, end, epoch, body, info.config.content_type, close)
        await self._send(facts, cp, batch)

    async def _send(self, facts: dict[str, object], cp: Checkpoint, batch: _Batch) -> None:
        """Send one batch until it succeeds, is refused for good (dead letter), or the
        retries run out (RemoteError; the link reconciles)."""
        offset, end, epoch, body = batch.offset, batch.end, batch.epoch, batch.body
        content_type, close = batch.content_type, batch.close
        link = self.link
        remote = link.remote
        headers = {
            "Producer-Id": str(facts["producer"]),
            "Producer-Epoch": str(epoch),
            "Producer-Seq": "0",
        }
        if body:
            headers["Content-Type"] = content_type
        if close:
            headers["Stream-Closed"] = "true"
        what = f"forward {self.path!r}"
        attempt = 0
        while True:
            try:
                resp = await remote.request(
                    "POST", remote.stream_url(self.path), headers=headers, content=body, what=what
                )
            except RemoteError as exc:
                error = exc
            else:
                if 200 <= resp.status_code <= 299:
                    confirmed = end
                    break
                fenced = resp.headers.get("producer-epoch")
                if resp.status_code == 403 and fenced is not None and fenced.isdigit():
                    # The remote holds everything up to its producer epoch (module docstring).
                    held = int(fenced)
                    local_tail = _position((await link.store.head(self.path)).tail)
                    if held <= _position(offset) or held > local_tail:
                        self._dead(offset, 409, f"remote producer epoch {held} out of range")
                        return
                    read = await link.store.read(
                        self.path, offset, max_messages=held - _position(offset), max_bytes=1 << 62
                    )
                    confirmed = read.next_offset
                    break
                if resp.status_code == 404:
                    self._remote_ready = False
                error = remote.fail(resp, what)
                if not error.transient:
                    self._dead(offset, resp.status_code, error.outcome.detail)
                    return
            attempt += 1
            delay = retry_delay(attempt, link.settings.push_retry_delays, error.outcome.retry_after)
            if delay is None:
                if not self._exhausted:
                    self._exhausted = True
                    await link.needs_reconcile("push-retry-exhausted")
                self._uncertain = True
                raise error
            await link.sleep(delay)
            if link.stopping:
                return
        link.count_moved("pushed", _position(confirmed) - _position(offset))
        self._uncertain = False
        if self._exhausted:
            self._exhausted = False
            await link.reconciled()
        token = Token(
            stream=f"{link.server_id}:{self.path}",
            epoch=str(facts["epoch"]),
            position=_position(confirmed),
            ref=confirmed,
        )
        changed = cp.commit(token)
        if close and _position(confirmed) >= _position(end):
            facts = dict(facts, closed=True)
            link.ledger.record_checkpoint(self.key, cp, facts)
            changed = True
        elif changed:
            link.ledger.record_checkpoint(self.key, cp)
        if changed:
            link.advanced("push", self.path, cp)

    def _dead(self, offset: str, status: int, error: str) -> None:
        self.parked = True
        self.link.dead_letter("stream", self.path, offset, status, error)

    async def retry(self) -> None:
        """The operator retries after a fix: unpark (the next batch starts with a probe)."""
        self.parked = False
        self._uncertain = True
        self._remote_ready = False
