"""Rooms across a link, both ways (multi-master): journals, origins, reconciliation.

Every server keeps its own room journal (its own ``serverSeq``); a link copies messages
between the two journals in both directions, and message ids are the dedupe key everywhere:

- **pull**: the link follows the remote room's journal (a live framed read of its records
  from a journal offset) and applies every message this server does not hold yet through the
  room's own pipeline (dedupe, ``serverSeq``, durable journal append, graph, broadcast to the
  local members);
- **push**: the link follows the local journal and sends the remote every message it did not
  get from that remote (``POST .../messages``); the remote applies them the same way.

**Origin tracking.** A journal record of a message that came over a link carries ``origin``
(the server where a client first wrote it) and ``via`` (the server it came from). The remote
leaves out of what it sends a server every record whose origin or via *is* that server, and
the push leaves out what came from the remote: a message never goes back to the server it came
from, exactly (no cache, no TTL). Where several paths exist (a triangle) a message may arrive
twice by different servers; the id makes the second a duplicate.

**Checkpoints.** Pull: a token ``(remote server:room, room epoch, serverSeq)`` whose ``ref`` is
the remote journal offset after it, advanced by the ordinal tracker over frames whose messages
are durably journaled here (several frames may be in flight, at most ``max-in-flight``).
Push: the local journal offset and ``serverSeq`` after the last batch the remote accepted.
A message applied but not yet checkpointed comes again on replay and is a duplicate.

**Gaps and repair.** A pull cursor the remote cannot serve (its journal was trimmed behind a
snapshot past it, the room was re-created, the store replaced) is a 410 gap; a push cursor
below the local journal's start (trimmed while the link was down) is one too. Repair is set
reconciliation of the message ids of the two rooms with a hash tree
(:mod:`~durasync.replication.reconcile`): only the buckets that differ are compared, the
messages only the remote holds are fetched and applied, the ones only this server holds are
pushed. The pull cursor then restarts at the remote's latest position, taken *before* the
reconciliation, so nothing written meanwhile is missed. The same reconciliation runs every
``reconcile-interval`` while the link is live (integrity check).

The set of a room's message ids is its journal plus its archive (``__rooms/<room>/archive``:
journal records the room moved there before trimming them behind a snapshot), read by
:class:`RoomIndex`, incrementally.

The rooms layer provides the :class:`RoomPort` (apply messages with their origin, durably).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import msgspec

from durasync.crdt.errors import CRDTValidationError
from durasync.crdt.messages import Limits, Message, validate_message
from durasync.protocol.room_rules import namespace_problem
from durasync.replication.core import OrdinalTracker, Token, retry_delay
from durasync.replication.reconcile import (
    BucketAnswer,
    BucketQuery,
    IdSet,
    Reconciler,
)
from durasync.replication.remote import GapError, RemoteError, StreamMissing
from durasync.replication.wire import GapBody, GapReason
from durasync.rooms.errors import RoomFailed
from durasync.rooms.room import archive_path, journal_path, meta_path
from durasync.store.base import OFFSET_START, LogStore
from durasync.store.errors import DataGone, NoSuchStream, StoreError
from durasync.store.offsets import decode_offset

if TYPE_CHECKING:
    from durasync.replication.link import LinkRunner
    from durasync.rooms.service import RoomService

__all__ = [
    "ROOM_PREFIX",
    "ApplyResult",
    "RoomIndex",
    "RoomPort",
    "RoomRecord",
    "RoomSync",
    "decode_record",
]

log = logging.getLogger("durasync.replication")

ROOM_PREFIX: Final = "__rooms/"
#: Messages per push request and per fetch request.
PUSH_BATCH: Final = 500
FETCH_BATCH: Final = 1000
#: Validation of records read back from a journal: shape and numbers (sizes were checked
#: when the message was first accepted).
_LOAD_LIMITS: Final = Limits(
    max_ops=1 << 40, max_string=1 << 40, max_value_items=1 << 40, max_key=1 << 40
)


class RoomRecord(msgspec.Struct, omit_defaults=True):
    """A room journal record as replication reads it: the message, its ``serverSeq`` and,
    for a message that came over a link, its ``origin`` and ``via`` servers."""

    serverSeq: int
    msg: Message
    origin: str | None = None
    via: str | None = None


_record_decoder: Final = msgspec.json.Decoder(RoomRecord)


class _Meta(msgspec.Struct):
    epoch: str


_meta_decoder: Final = msgspec.json.Decoder(_Meta)


def decode_record(data: bytes) -> RoomRecord | None:
    """A journal record, validated (None if it does not decode or validate: such records are
    skipped by the room too)."""
    try:
        rec = _record_decoder.decode(data)
        if rec.serverSeq < 1:
            return None
        validate_message(rec.msg, limits=_LOAD_LIMITS)
    except (msgspec.MsgspecError, RecursionError, CRDTValidationError):
        return None
    return rec


async def room_epoch(store: LogStore, room: str) -> str | None:
    """The room's epoch (first valid meta record), None if the room does not exist."""
    try:
        res = await store.read(meta_path(room), OFFSET_START, max_messages=16)
    except (NoSuchStream, DataGone):
        return None
    for entry in res.entries:
        try:
            epoch = _meta_decoder.decode(entry.data).epoch
        except msgspec.MsgspecError:
            continue
        if epoch:
            return epoch
    return None


ApplyStatus = Literal["applied", "duplicate", "rejected"]


class ApplyResult(msgspec.Struct, frozen=True, kw_only=True):
    """What applying one message did: journaled (at ``seq``), already held, or refused."""

    id: str
    status: ApplyStatus
    seq: int | None = None
    error: str | None = None


class RoomPort(Protocol):
    """What replication needs from the rooms layer."""

    async def reload(self, room: str) -> None:
        """Reload ``room`` if it is loaded and its replication changed (its fold order)."""
        ...

    async def apply(
        self, room: str, items: Sequence[tuple[Message, str | None, str | None]]
    ) -> list[ApplyResult]:
        """Sequence and journal each ``(message, origin, via)`` this room does not hold yet
        (creating the room if needed) and return once they are durable, in order; messages
        already held are duplicates; a message that does not validate is rejected.

        Raises:
            StoreError: the store failed (nothing returned is durable then).
        """
        ...


class RoomIndex:
    """Every message id of one room (archive + journal), read incrementally from the store.

    :meth:`refresh` reads what was appended since the last call. A journal trimmed past the
    index's offset moved its records to the archive first (the room archives before it
    trims), so reading the archive on, then the journal from its start, loses nothing.
    """

    def __init__(self, store: LogStore, room: str) -> None:
        self.store = store
        self.room = room
        self.ids = IdSet()
        self._archive_offset = OFFSET_START
        self._journal_offset = OFFSET_START
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Take in the records appended since the last refresh.

        Raises:
            StoreError: the store failed.
        """
        async with self._lock:
            self._archive_offset = await self._read(archive_path(self.room), self._archive_offset)
            try:
                self._journal_offset = await self._read(
                    journal_path(self.room), self._journal_offset
                )
            except DataGone:
                self._journal_offset = await self._read(journal_path(self.room), OFFSET_START)

    async def _read(self, path: str, offset: str) -> str:
        while True:
            try:
                res = await self.store.read(path, offset, max_bytes=8 << 20, max_messages=50_000)
            except NoSuchStream:
                return offset
            for entry in res.entries:
                rec = decode_record(entry.data)
                if rec is not None:
                    self.ids.add(rec.msg.id)
            offset = res.next_offset
            if res.up_to_date or not res.entries:
                return offset

    async def fetch(self, wanted: set[str]) -> list[RoomRecord]:
        """The records of the ``wanted`` ids this room holds (archive and journal).

        Raises:
            StoreError: the store failed.
        """
        found: dict[str, RoomRecord] = {}
        for path in (archive_path(self.room), journal_path(self.room)):
            offset = OFFSET_START
            while len(found) < len(wanted):
                try:
                    res = await self.store.read(
                        path, offset, max_bytes=8 << 20, max_messages=50_000
                    )
                except NoSuchStream:
                    break
                for entry in res.entries:
                    rec = decode_record(entry.data)
                    if rec is not None and rec.msg.id in wanted and rec.msg.id not in found:
                        found[rec.msg.id] = rec
                offset = res.next_offset
                if res.up_to_date or not res.entries:
                    break
        return list(found.values())


class RoomIndexes:
    """The :class:`RoomIndex` of recently used rooms, shared by the peer API, the room port
    and the links (bounded: the least recently used ones are dropped and rebuilt on use)."""

    def __init__(self, store: LogStore, limit: int = 64) -> None:
        self.store = store
        self.limit = limit
        self._indexes: dict[str, RoomIndex] = {}

    def get(self, room: str) -> RoomIndex:
        index = self._indexes.pop(room, None)
        if index is None:
            index = RoomIndex(self.store, room)
        self._indexes[room] = index
        while len(self._indexes) > self.limit:
            del self._indexes[next(iter(self._indexes))]
        return index


class ServiceRoomPort:
    """:class:`RoomPort` over the rooms layer: validates relayed messages with the room's
    limits and the id namespace rule
    (:func:`~durasync.protocol.room_rules.namespace_problem`), leaves out those the room
    holds (its complete id set, :class:`RoomIndex`, and the room's own dedupe window for
    concurrent arrivals) and sequences the rest with
    :meth:`~durasync.rooms.room.Room.submit_relayed`."""

    def __init__(self, service: RoomService, indexes: RoomIndexes) -> None:
        self.service = service
        self.indexes = indexes

    async def reload(self, room: str) -> None:
        if room in self.service.rooms:
            with contextlib.suppress(NoSuchStream):
                await self.service.get_room(room, create=False)

    async def apply(
        self, room: str, items: Sequence[tuple[Message, str | None, str | None]]
    ) -> list[ApplyResult]:
        limits = self.service.settings.limits()
        results: list[ApplyResult | None] = [None] * len(items)
        index = self.indexes.get(room)
        await index.refresh()
        fresh: list[int] = []
        for i, (msg, _, _) in enumerate(items):
            try:
                validate_message(msg, limits=limits)
            except CRDTValidationError as exc:
                results[i] = ApplyResult(id=msg.id, status="rejected", error=str(exc)[:500])
                continue
            # The rule its first server applied to the member that wrote it (its own
            # client): relayed messages cannot write in another client's namespace either.
            # (No counter ceiling here: a server offline for long is legitimately far ahead.)
            problem = namespace_problem(msg, msg.client)
            if problem is not None:
                results[i] = ApplyResult(id=msg.id, status="rejected", error=problem[1])
                continue
            if msg.id in index.ids:
                results[i] = ApplyResult(id=msg.id, status="duplicate")
                continue
            fresh.append(i)
        if fresh:
            target = await self.service.get_room(room, create=True)
            seqs = await target.submit_relayed([items[i] for i in fresh])
            for i, seq in zip(fresh, seqs, strict=True):
                msg_id = items[i][0].id
                results[i] = ApplyResult(id=msg_id, status="applied", seq=seq)
                index.ids.add(msg_id)
        return [r for r in results if r is not None]


# ------------------------------------------------------------------------------ wire types


class JournalFrame(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One frame of a live framed read of a room journal: the records (as stored) from
    ``offset`` whose origin and via are not the asking server, the offset and ``serverSeq``
    after the range read (``next``, ``last``), and where the journal starts and ends."""

    server: str
    epoch: str
    offset: str
    next: str
    last: int
    first_seq: int
    last_seq: int
    records: list[bytes]
    up_to_date: bool


class RoomHead(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    room: str
    epoch: str
    first_seq: int
    last_seq: int


class RoomList(msgspec.Struct, frozen=True, kw_only=True):
    server: str
    rooms: list[RoomHead]


class PushItem(msgspec.Struct, frozen=True, kw_only=True):
    msg: Message
    origin: str | None = None


class PushBody(msgspec.Struct, frozen=True, kw_only=True):
    server: str
    items: list[PushItem]


class PushAnswer(msgspec.Struct, frozen=True, kw_only=True):
    results: list[ApplyResult]


class ReconcileBody(msgspec.Struct, frozen=True, kw_only=True):
    queries: list[BucketQuery]


class ReconcileAnswer(msgspec.Struct, frozen=True, kw_only=True):
    answers: list[BucketAnswer]


class FetchBody(msgspec.Struct, frozen=True, kw_only=True):
    ids: list[str]


class FetchAnswer(msgspec.Struct, frozen=True, kw_only=True):
    items: list[RoomRecord]


async def room_head(store: LogStore, room: str) -> RoomHead | None:
    """Where a room's journal starts and ends (None: no such room)."""
    epoch = await room_epoch(store, room)
    if epoch is None:
        return None
    try:
        info = await store.head(journal_path(room))
    except (NoSuchStream, DataGone):
        return None
    return RoomHead(
        room=room,
        epoch=epoch,
        first_seq=decode_offset(info.start)[0] + 1,
        last_seq=decode_offset(info.tail)[0],
    )


# ------------------------------------------------------------------------------- the unit


class RoomSync:
    """One replicated room on one link: pull and push tasks, repair by reconciliation."""

    kind: Literal["stream", "room"] = "room"

    def __init__(self, link: LinkRunner, room: str, port: RoomPort) -> None:
        self.link = link
        self.path = room
        self.room = room
        self.port = port
        self.task: asyncio.Task[None] | None = None
        self.repair_reason: str | None = None
        self.parked = False
        self.behind = 0
        self.behind_since: float | None = None
        self.done = False
        self.direction: Literal["pull", "push"] = "pull"
        self.index = link.service.room_indexes.get(room)
        self._wake = asyncio.Event()
        #: Messages the remote refused for good (dead letters), left out of later pushes.
        self._refused: set[str] = set()
        #: ``(fetched, pushed)`` by this unit's repairs so far (tests and metrics). A repair
        #: can be followed by a second one that moves nothing: the messages it applied may
        #: make the local room snapshot and trim its journal past the push cursor.
        self.transferred = (0, 0)

    @property
    def key(self) -> tuple[Literal["pull", "push"], Literal["stream", "room"], str]:
        return ("pull", "room", self.room)

    @property
    def push_key(self) -> tuple[Literal["pull", "push"], Literal["stream", "room"], str]:
        return ("push", "room", self.room)

    def note_lag(self, behind: int) -> None:
        self.behind = max(0, behind)
        if self.behind == 0:
            self.behind_since = None
        elif self.behind_since is None:
            self.behind_since = self.link.clock()

    def reset_probe(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Pull and push until the link stops, a gap (then the link repairs), or the room is
        parked on a dead letter (push only; the pull goes on).

        On first contact (no cursors yet, or the remote room is another incarnation than the
        one the cursors belong to) the two rooms are reconciled first: both may already hold
        messages (edits made while no link existed)."""
        backoff = 0.2
        while not self.link.stopping and self.repair_reason is None:
            try:
                await self.link.service.mark_room(self.room)
                if await self._needs_reconcile():
                    await self.reconcile(reset_cursors=True)
                break
            except (RemoteError, StoreError, RoomFailed) as exc:
                log.debug("link %s room %s: %s", self.link.name, self.room, exc)
                await self.link.sleep(backoff)
                backoff = min(5.0, backoff * 2)
        pull = asyncio.ensure_future(self._loop(self._pull))
        push = asyncio.ensure_future(self._loop(self._push))
        try:
            await asyncio.wait({pull, push}, return_when=asyncio.FIRST_COMPLETED)
            if self.repair_reason is not None:
                return
            await asyncio.gather(pull, push)
        finally:
            for task in (pull, push):
                task.cancel()
            for task in (pull, push):
                with contextlib.suppress(BaseException):
                    await task

    async def _loop(self, step: Any) -> None:
        backoff = 0.2
        while not self.link.stopping and self.repair_reason is None:
            try:
                if await step():
                    return
                backoff = 0.2
            except GapError as exc:
                self.link.gap(self, exc.body.reason, exc.body)
                return
            except _LocalGap as exc:
                self.link.gap(self, exc.reason, None)
                return
            except (RemoteError, StoreError, RoomFailed) as exc:
                log.debug("link %s room %s: %s", self.link.name, self.room, exc)
                await self.link.sleep(backoff)
                backoff = min(5.0, backoff * 2)

    # -- pull ----------------------------------------------------------------------------

    async def _pull(self) -> bool:
        """Follow the remote journal until the response ends (False: go on) or the room
        is gone at the remote (True)."""
        link = self.link
        ledger = link.ledger
        remote_id = link.remote_id
        assert remote_id is not None
        head = await self._remote_head()
        if head is None:
            # Not (yet) at the remote: the push creates it.
            await link.sleep(link.settings.discover_interval)
            return False
        facts = ledger.info(self.key)
        cp = ledger.checkpoint(self.key)
        stream = f"{remote_id}:{self.room}"
        if cp.applied is None:
            # The remote room appeared after the reconciliation (created by our push):
            # everything in it came from here or later, so reading it from its start is
            # complete and cheap (the remote leaves out what came from here).
            cp.reset(Token(stream=stream, epoch=head.epoch, position=0, ref=OFFSET_START))
            ledger.record_checkpoint(self.key, cp, {"epoch": head.epoch})
            await ledger.flush()
        elif facts.get("epoch") != head.epoch:
            raise GapError(_gap_body("epoch_mismatch", cp.applied, head, stream))
        assert cp.applied is not None
        offset = cp.applied.ref or OFFSET_START
        tracker: OrdinalTracker[Token] = OrdinalTracker(link.settings.max_in_flight)
        window = asyncio.Semaphore(link.settings.max_in_flight)
        pending: set[asyncio.Task[None]] = set()
        errors: list[BaseException] = []
        params = {
            "offset": offset,
            "server": remote_id,
            "epoch": head.epoch,
            "peer": link.server_id,
        }
        try:
            async for frame in link.remote.follow_frames(
                f"/v1/replication/rooms/{self.room}/journal",
                params,
                JournalFrame,
                heartbeat=link.settings.live_wait,
            ):
                if frame.epoch != head.epoch or frame.server != remote_id:
                    raise GapError(_gap_body("epoch_mismatch", cp.applied, head, stream))
                token = Token(stream=stream, epoch=head.epoch, position=frame.last, ref=frame.next)
                self.note_lag(frame.last_seq - frame.last)
                await window.acquire()
                ordinal = tracker.deliver(token)
                task = asyncio.ensure_future(self._apply_frame(frame))
                pending.add(task)

                def done(t: asyncio.Task[None], o: int = ordinal) -> None:
                    pending.discard(t)
                    window.release()
                    if t.cancelled():
                        return
                    error = t.exception()
                    if error is not None:
                        # The checkpoint never passes this frame: the pull starts over from
                        # it (what was applied after it is a duplicate then).
                        errors.append(error)
                        return
                    newest = tracker.commit(o)
                    if newest is not None and cp.commit(newest):
                        ledger.record_checkpoint(self.key, cp)
                        link.advanced("pull", self.room, cp)

                task.add_done_callback(done)
                if errors:
                    raise errors[0]
            if pending:
                await asyncio.gather(*pending)
        except StreamMissing:
            return False
        finally:
            for t in pending:
                t.cancel()
        return False

    async def _apply_frame(self, frame: JournalFrame) -> None:
        items: list[tuple[Message, str | None, str | None]] = []
        remote_id = self.link.remote_id
        for data in frame.records:
            rec = decode_record(data)
            if rec is None:
                continue
            if rec.msg.id in self.index.ids:
                continue
            rec.msg.serverSeq = None
            items.append((rec.msg, rec.origin or remote_id, remote_id))
        if items:
            results = await self.port.apply(self.room, items)
            for result in results:
                if result.status != "rejected":
                    self.index.ids.add(result.id)
            self.link.count_moved("pulled", sum(1 for r in results if r.status == "applied"))

    async def _needs_reconcile(self) -> bool:
        """No cursors yet (first contact), or the remote room is not the incarnation the
        pull cursor belongs to."""
        ledger = self.link.ledger
        pull = ledger.checkpoint(self.key)
        push = ledger.checkpoint(self.push_key)
        if pull.applied is None or push.applied is None:
            return True
        head = await self._remote_head()
        return head is not None and ledger.info(self.key).get("epoch") != head.epoch

    async def _remote_head(self) -> RoomHead | None:
        remote = self.link.remote
        resp = await remote.request(
            "GET",
            f"{remote.base}/v1/replication/rooms",
            params={"prefix": self.room, "exact": "1"},
            what=f"room {self.room!r}",
        )
        if resp.status_code != 200:
            raise remote.fail(resp, f"room {self.room!r}")
        try:
            listing = msgspec.json.decode(resp.content, type=RoomList)
        except msgspec.DecodeError as exc:
            raise remote.fail(resp, f"room {self.room!r}: {exc}") from None
        for head in listing.rooms:
            if head.room == self.room:
                return head
        return None

    # -- push ----------------------------------------------------------------------------

    async def _push(self) -> bool:
        """Send the remote every local message it did not come from, from the push cursor on;
        True when parked on a dead letter."""
        link = self.link
        ledger = link.ledger
        store = link.store
        remote_id = link.remote_id
        assert remote_id is not None
        cp = ledger.checkpoint(self.push_key)
        if cp.applied is None:
            local = await room_head(store, self.room)
            if local is None:
                await link.sleep(link.settings.discover_interval)
                return False
            # The local room appeared after the reconciliation (created by our pull): its
            # messages came from the remote (left out below) or later.
            cp.reset(
                Token(
                    stream=f"{link.server_id}:{self.room}",
                    epoch=local.epoch,
                    position=0,
                    ref=OFFSET_START,
                )
            )
            ledger.record_checkpoint(self.push_key, cp, {"epoch": local.epoch})
            await ledger.flush()
        at = cp.applied
        assert at is not None
        offset = at.ref or OFFSET_START
        try:
            res = await store.read(
                journal_path(self.room),
                offset,
                max_bytes=link.settings.batch_bytes,
                max_messages=PUSH_BATCH,
            )
        except DataGone:
            raise _LocalGap("token_too_old") from None
        except NoSuchStream:
            await self.link.sleep(link.settings.discover_interval)
            return False
        items: list[PushItem] = []
        last = at.position
        for entry in res.entries:
            rec = decode_record(entry.data)
            if rec is None:
                continue
            last = rec.serverSeq
            if remote_id in (rec.origin, rec.via) or rec.msg.id in self._refused:
                continue
            rec.msg.serverSeq = None
            items.append(PushItem(msg=rec.msg, origin=rec.origin or link.server_id))
        if items and not await self._send(items):
            return True
        if res.entries:
            token = Token(stream=at.stream, epoch=at.epoch, position=last, ref=res.next_offset)
            if cp.commit(token):
                ledger.record_checkpoint(self.push_key, cp)
                link.advanced("push", self.room, cp)
        if res.up_to_date:
            self._wake.clear()
            waiter = asyncio.ensure_future(
                store.wait_for(journal_path(self.room), res.next_offset, link.settings.live_wait)
            )
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                waker.cancel()
        return False

    async def _send(self, items: list[PushItem]) -> bool:
        """POST ``items`` until accepted (retrying transient failures); False if the remote
        refused the request for good (dead letter, the push parks)."""
        link = self.link
        body = PushBody(server=link.server_id, items=items)
        what = f"push room {self.room!r}"
        attempt = 0
        while True:
            try:
                resp = await link.remote.json(
                    "POST", f"/v1/replication/rooms/{self.room}/messages", what=what, body=body
                )
            except RemoteError as exc:
                error = exc
            else:
                if resp.status_code == 200:
                    answer = msgspec.json.decode(resp.content, type=PushAnswer)
                    # The remote's answer is input: it counts at most the items sent.
                    accepted = sum(1 for r in answer.results if r.status == "applied")
                    link.count_moved("pushed", min(len(items), accepted))
                    for result in answer.results:
                        if result.status == "rejected":
                            self._refused.add(result.id)
                            link.dead_letter(
                                "room", self.room, result.id, 400, result.error or "rejected"
                            )
                    if self._exhausted:
                        self._exhausted = False
                        await link.reconciled()
                    return True
                error = link.remote.fail(resp, what)
                if not error.transient:
                    self.parked = True
                    link.dead_letter(
                        "room",
                        self.room,
                        items[0].msg.id,
                        resp.status_code,
                        error.outcome.detail,
                    )
                    return False
            attempt += 1
            delay = retry_delay(attempt, link.settings.push_retry_delays, error.outcome.retry_after)
            if delay is None:
                if not self._exhausted:
                    self._exhausted = True
                    await link.needs_reconcile("push-retry-exhausted")
                raise error
            await link.sleep(delay)

    _exhausted = False

    # -- repair --------------------------------------------------------------------------

    async def repair(self) -> None:
        """Reconcile the two rooms' message sets and restart both cursors (raises on
        failure; the link retries)."""
        fetched, pushed = await self.reconcile(reset_cursors=True)
        self.transferred = (self.transferred[0] + fetched, self.transferred[1] + pushed)
        self.repair_reason = None

    async def reconcile(self, *, reset_cursors: bool) -> tuple[int, int]:
        """Hash-tree reconciliation: fetch and apply what only the remote holds, push what
        only this server holds. Returns ``(fetched, pushed)``.

        With ``reset_cursors`` the pull cursor restarts at the remote's journal tail and the
        push cursor at the local one, both taken *before* comparing (what is written
        meanwhile is replicated from them).
        """
        link = self.link
        remote_id = link.remote_id
        assert remote_id is not None
        head = await self._remote_head()
        local = await room_head(link.store, self.room)
        local_tail = None
        if reset_cursors:
            try:
                local_tail = (await link.store.head(journal_path(self.room))).tail
            except (NoSuchStream, DataGone):
                local_tail = None
        await self.index.refresh()
        snapshot = IdSet(self.index.ids.ids(""))
        fetched = pushed = 0
        if head is not None:
            rec = Reconciler(snapshot)
            while not rec.done:
                asked = rec.queries()
                resp = await link.remote.json(
                    "POST",
                    f"/v1/replication/rooms/{self.room}/reconcile",
                    what=f"reconcile room {self.room!r}",
                    body=ReconcileBody(queries=asked),
                )
                if resp.status_code != 200:
                    raise link.remote.fail(resp, "reconcile")
                answer = msgspec.json.decode(resp.content, type=ReconcileAnswer)
                rec.receive(answer.answers, asked)
            only_remote = sorted(rec.only_remote)
            only_local = rec.only_local
        else:
            only_remote = []
            only_local = set(snapshot.ids(""))
        for i in range(0, len(only_remote), FETCH_BATCH):
            wanted = only_remote[i : i + FETCH_BATCH]
            resp = await link.remote.json(
                "POST",
                f"/v1/replication/rooms/{self.room}/fetch",
                what=f"fetch room {self.room!r}",
                body=FetchBody(ids=wanted),
            )
            if resp.status_code != 200:
                raise link.remote.fail(resp, "fetch")
            answer_items = msgspec.json.decode(resp.content, type=FetchAnswer).items
            items: list[tuple[Message, str | None, str | None]] = []
            for item in answer_items:
                if item.msg.id not in self.index.ids and item.msg.id in set(wanted):
                    item.msg.serverSeq = None
                    items.append((item.msg, item.origin or remote_id, remote_id))
            if items:
                results = await self.port.apply(self.room, items)
                applied = sum(1 for r in results if r.status == "applied")
                fetched += applied
                link.count_moved("pulled", applied)
                for r in results:
                    if r.status != "rejected":
                        self.index.ids.add(r.id)
        if only_local:
            records = await self.index.fetch(set(only_local))
            push = [
                PushItem(msg=_unsequenced(r.msg), origin=r.origin or link.server_id)
                for r in records
                if r.msg.id not in self._refused
            ]
            for i in range(0, len(push), PUSH_BATCH):
                if not await self._send(push[i : i + PUSH_BATCH]):
                    break
                pushed += len(push[i : i + PUSH_BATCH])
        if reset_cursors:
            ledger = link.ledger
            if head is not None:
                stream = f"{remote_id}:{self.room}"
                pull = ledger.checkpoint(self.key)
                pull.reset(
                    Token(
                        stream=stream,
                        epoch=head.epoch,
                        position=head.last_seq,
                        ref=await self._remote_tail_offset(),
                    )
                )
                ledger.record_checkpoint(self.key, pull, {"epoch": head.epoch})
            if local is not None and local_tail is not None:
                push_cp = ledger.checkpoint(self.push_key)
                push_cp.reset(
                    Token(
                        stream=f"{link.server_id}:{self.room}",
                        epoch=local.epoch,
                        position=decode_offset(local_tail)[0],
                        ref=local_tail,
                    )
                )
                ledger.record_checkpoint(self.push_key, push_cp, {"epoch": local.epoch})
            await ledger.flush()
        return fetched, pushed

    async def _remote_tail_offset(self) -> str:
        """The remote journal's tail offset (an empty live read answers it)."""
        remote = self.link.remote
        resp = await remote.request(
            "GET",
            f"{remote.base}/v1/replication/rooms/{self.room}/journal",
            params={"offset": "now", "peer": self.link.server_id},
            what=f"room {self.room!r} tail",
        )
        if resp.status_code != 200:
            raise remote.fail(resp, "room tail")
        return msgspec.msgpack.decode(resp.content, type=JournalFrame).next


class _LocalGap(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _unsequenced(msg: Message) -> Message:
    return msgspec.structs.replace(msg, serverSeq=None)


def _gap_body(reason: GapReason, requested: Token | None, head: RoomHead, stream: str) -> GapBody:
    return GapBody(
        error={"code": "GAP", "message": reason},
        requested=requested or Token(stream=stream, epoch="", position=0),
        oldest_available=Token(stream=stream, epoch=head.epoch, position=head.first_seq - 1),
        latest_available=Token(stream=stream, epoch=head.epoch, position=head.last_seq),
        reason=reason,
    )
