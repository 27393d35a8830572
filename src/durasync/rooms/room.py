"""One room in memory: journal -> graph, members, group-committed writer, snapshots.

Store layout of room ``R`` (all ordinary streams of the log store):

- ``__rooms/R/meta`` (JSON): one record ``{"epoch": ...}``. A new random epoch is written when
  the room is first created in a store, so a replaced or wiped store gets a new epoch and
  clients cannot resume into it by accident.
- ``__rooms/R/journal`` (``application/json``): one record ``{"serverSeq", "msg"}`` per
  sequenced message; serverSeq = 1 + journal index. Served by ``GET /v1/rooms/R/journal``.
- ``__rooms/R/snapshot`` (msgpack): the latest :class:`SnapshotRecord` only (older ones are
  trimmed): the graph folded up to ``seq``, the journal offset after it and the dedupe window.

Guarantees: nothing is acked or broadcast before the journal append returned (durable); one
order per room, the same on every node; resends are acked with their original serverSeq.

Several nodes (docs/protocol.md "Several nodes"): any number of processes may load
the same room from one shared store. The room's order is decided *in the store*, by optimistic
concurrency on the journal's ``Stream-Seq`` (Durable Streams §2 POST; the store checks it
atomically with the write, :class:`~durasync.store.base.SeqConflict` otherwise):

- Every journal append carries ``stream_seq = "%016d" % first_serverSeq_of_the_batch``.
- A node's *view* of the journal (``Room._offset``, ``Sequencer.last_seq = L``) always ends at a
  batch boundary: it advances only by its own whole appends and by reads that continue until
  ``up_to_date`` (a batch is atomic, so the tail is always a batch boundary).
- Claim: the append of a batch planned from view ``L`` (first seq ``L + 1``) succeeds iff the
  journal holds exactly ``L`` messages. By induction every batch in the journal starts right
  after the previous one ends, so the last ``Stream-Seq`` is the first seq ``F`` of the last
  batch, and the journal's length is ``>= F``. If the journal holds ``L`` messages the last batch
  started at ``F <= L < L + 1``: accepted. If it holds more than ``L``, the batch that follows
  message ``L`` started at ``L + 1`` (boundary), so the last ``Stream-Seq >= L + 1``: rejected.
  (A journal cannot hold fewer than ``L``: the view only contains what was read or written.)
  So "first seq of my batch > last Stream-Seq" is an exact compare-and-set on the length.
- On :class:`SeqConflict` the node *catches up*: reads from its offset to the tail, applies the
  entries, broadcasts them to its members and adds their ids to the dedupe window; then it
  re-plans the batch (messages now in the journal are duplicates: acked with their original
  serverSeq) and retries, at most :data:`MAX_CONFLICT_RETRIES` times, then fails the room.
- A *follower* task per room waits on the journal (``store.wait_for``) and applies what other
  nodes appended, broadcasting it to every local member. Following and committing hold one
  lock, so the graph, the tail and the dedupe window change in one order. A node's own appends
  advance its offset, so on one node the follower never reads anything back.
- Journal entries written before ``Stream-Seq`` was used (no ``Stream-Seq`` recorded) still load:
  the first conditional append is compared with "no previous value" and succeeds. The argument
  above needs every writer of a room to use the conditional append.
- Snapshots are conditional too (``stream_seq`` = padded snapshot seq): a stale node's snapshot
  can never replace a newer one; only the node whose snapshot won trims the snapshot and the
  journal streams, behind that snapshot. Loading takes the last (= newest) snapshot record.

Loading never fails on a bad record (defence in depth: only this module writes these streams,
but a record written by an older version or by anyone who reached the store could be bad): a
journal record that does not decode, does not validate as a message (e.g. a number out of
range) or does not continue the order is skipped with a logged error; a snapshot record that
does not decode or build is skipped for the newest one that does; a meta record without a valid
epoch is skipped, and a meta stream without any gets a fresh epoch appended (the first valid
record wins on every node). The room stays usable (view, join, edit) with what remains.

Snapshots do not stall the room: the writer only captures the previous record and the tail
after it; a worker thread folds them into a new replica and encodes the record while the
writer keeps sequencing; the lock is then held only to catch that replica up with what was
sequenced meanwhile and swap it in (:meth:`Room._plan_snapshot`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import secrets
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Final, Literal

import msgspec

from durasync.crdt.canonical import digest
from durasync.crdt.errors import CRDTValidationError
from durasync.crdt.messages import Limits, Message, validate_message
from durasync.crdt.replica import Replica, Snapshot
from durasync.metrics import Metrics
from durasync.protocol.closecodes import CloseCode
from durasync.protocol.room_frames import (
    AckFrame,
    BroadcastFrame,
    Format,
    PresenceFrame,
    ServerFrame,
    StateFrame,
    encode_frame,
)
from durasync.protocol.room_rules import id_owner
from durasync.protocol.room_server import ROOM_FAILED, RoomRules
from durasync.rooms.core import (
    BatchPlan,
    CounterCeiling,
    DedupeWindow,
    PresenceTable,
    Sequencer,
    journal_run,
    plan_resume,
)
from durasync.rooms.errors import RoomConflict, RoomFailed
from durasync.rooms.presence import PresenceBus, RoomPresence
from durasync.store.base import OFFSET_START, LogStore, StreamConfig
from durasync.store.errors import DataGone, NoSuchStream, SeqConflict, StreamExists
from durasync.store.offsets import decode_offset

__all__ = [
    "MAX_CONFLICT_RETRIES",
    "JournalRecord",
    "Member",
    "Room",
    "RoomSettings",
    "SnapshotRecord",
    "journal_path",
]

log = logging.getLogger("durasync.rooms")

#: Conditional journal appends lost in a row (other nodes kept winning) before the room fails.
MAX_CONFLICT_RETRIES: Final = 64
#: Seconds a snapshot's replica folds entries sequenced meanwhile before yielding the loop.
CATCH_UP_SLICE: Final = 0.005
_CATCH_UP_CHUNK: Final = 8
#: Seconds the follower pauses after a wake-up caused by this node's own append.
FOLLOW_REARM: Final = 0.002


class RoomSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Tunables of the rooms layer (CLI ``durasync serve --room-*``)."""

    snapshot_every_messages: int = 10_000
    snapshot_every_bytes: int = 8 << 20
    #: Journal messages kept behind the latest snapshot (resume window).
    retention_messages: int = 10_000
    #: Seconds a room with no members stays in memory.
    idle_timeout: float = 60.0
    max_frame_bytes: int = 1 << 20
    max_ops: int = 1_000
    #: Longest string value (and the text of one insert) in a message.
    max_value_bytes: int = 256 << 10
    #: Bytes queued for one connection before it is dropped with 4008 (resume).
    send_queue_bytes: int = 4 << 20
    #: Per-connection client frames per second (every frame type counts one) and burst.
    rate_per_second: float = 1_000.0
    rate_burst: float = 2_000.0
    #: Per-connection bytes per second of work done on request: ``state`` frames answering
    #: ``sync`` and canonical JSON built for ``sync-check``; and its burst.
    sync_bytes_per_second: float = float(1 << 20)
    sync_bytes_burst: float = float(8 << 20)
    #: How far a message's Lamport-like counters (lt, clock entries, text seq) may exceed the
    #: room's highest so far (:func:`~durasync.protocol.room_rules.counter_problem`).
    max_counter_step: int = 1 << 24
    #: Seconds of silence after which a client's presence expires; with several nodes also
    #: the time within which a dead node's members disappear from everyone's view.
    presence_timeout: float = 30.0
    #: Connections per room on one node (more are closed with 4429).
    max_members: int = 10_000
    #: Largest presence state of one member (msgpack-encoded bytes).
    max_presence_bytes: int = 16 << 10
    #: Seconds the journal follower waits per ``wait_for`` call before checking again.
    follow_timeout: float = 30.0
    ping_interval: float = 15.0
    #: Message ids remembered for dedupe (durable through the snapshot record).
    dedupe_window: int = 10_000
    #: Largest group-commit batch and the bound of a room's inbox.
    max_batch: int = 1_024
    inbox_size: int = 4_096

    def limits(self) -> Limits:
        return Limits(max_ops=self.max_ops, max_string=self.max_value_bytes)

    def rules(self) -> RoomRules:
        """What one connection may send and ask for (applied by its session)."""
        return RoomRules(
            max_frame_bytes=self.max_frame_bytes,
            limits=self.limits(),
            rate_per_second=self.rate_per_second,
            rate_burst=self.rate_burst,
            answer_bytes_per_second=self.sync_bytes_per_second,
            answer_bytes_burst=self.sync_bytes_burst,
            max_counter_step=self.max_counter_step,
            max_presence_bytes=self.max_presence_bytes,
        )


def journal_path(room: str) -> str:
    return f"__rooms/{room}/journal"


def snapshot_path(room: str) -> str:
    return f"__rooms/{room}/snapshot"


def meta_path(room: str) -> str:
    return f"__rooms/{room}/meta"


class JournalRecord(msgspec.Struct, omit_defaults=True):
    """One journal entry (JSON): what ``GET /v1/rooms/R/journal`` readers see.

    A message that came over a replication link records the server where a client first
    wrote it (``origin``) and the server it came from (``via``); replication never sends a
    message back to either (docs/replication.md "Rooms"). Absent for local messages.
    """

    serverSeq: int
    msg: Message
    origin: str | None = None
    via: str | None = None


class MetaRecord(msgspec.Struct):
    epoch: str
    created_at: float = 0.0


class SnapshotRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Snapshot of a room at ``seq``; ``journal_offset`` is the journal offset after ``seq``.

    Replicated rooms (folded in Lamport order, see :class:`Room`) also record the
    ``frontier``, the Lamport key ``(lt, client, id)`` of the last message folded in, and
    ``rebuilt_at``, the serverSeq at which the room last had to be refolded.
    """

    epoch: str
    seq: int
    journal_offset: str
    snapshot: Snapshot
    recent: list[tuple[str, int]]
    frontier: tuple[int, str, str] | None = None
    rebuilt_at: int = 0


_journal_decoder: Final = msgspec.json.Decoder(JournalRecord)
_journal_encoder: Final = msgspec.json.Encoder()
_snapshot_decoder: Final = msgspec.msgpack.Decoder(SnapshotRecord)
_meta_decoder: Final = msgspec.json.Decoder(MetaRecord)
_msgpack: Final = msgspec.msgpack.Encoder()
_EPOCH_RE: Final = re.compile(r"[A-Za-z0-9._~-]{1,128}")
#: Validation of journal records read back: shape and numeric ranges only. The size limits
#: applied when a message was accepted are not applied again (settings may have changed).
_LOAD_LIMITS: Final = Limits(
    max_ops=1 << 40, max_string=1 << 40, max_value_items=1 << 40, max_key=1 << 40
)


def decode_journal_record(data: bytes) -> JournalRecord:
    """Decode and validate one journal record as read from the store.

    Raises:
        ValueError: the record does not decode, its ``serverSeq`` is not positive, or its
            message fails validation (e.g. a number out of range); the text says why.
    """
    try:
        rec = _journal_decoder.decode(data)
        if rec.serverSeq < 1:
            raise ValueError(f"serverSeq {rec.serverSeq} is not positive")
        validate_message(rec.msg, limits=_LOAD_LIMITS)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise ValueError(f"does not decode: {exc}") from None
    except CRDTValidationError as exc:
        raise ValueError(f"invalid message: {exc}") from None
    rec.msg.serverSeq = rec.serverSeq
    return rec


def archive_path(room: str) -> str:
    """Journal records a replicated room moved out of its journal before trimming them."""
    return f"__rooms/{room}/archive"


LamportKey = tuple[int, str, str]


def lamport_key(msg: Message) -> LamportKey:
    """A message's place in the Lamport order of replicated rooms (the canonical order of
    messages without a serverSeq, docs/crdt.md)."""
    return (msg.lt, msg.client, msg.id)


def unsequenced(msgs: list[Message]) -> list[Message]:
    """Copies of ``msgs`` without ``serverSeq`` (folded in Lamport order; the originals keep
    their serverSeq for the frames)."""
    return [msgspec.structs.replace(m, serverSeq=None) for m in msgs]


def below(msgs: list[Message], floor: LamportKey | None) -> bool:
    """Whether one of ``msgs`` sorts below ``floor`` in Lamport order (a snapshot's frontier:
    the replicated room must refold before it may snapshot again)."""
    return floor is not None and any(lamport_key(m) < floor for m in msgs)


def _counters_of(replica: Replica) -> int:
    """The highest Lamport-like counter a loaded replica holds: its Lamport time, its merged
    vector clock's entries and its text docs' highest ``seq``."""
    high = replica.lt
    if replica.clock:
        high = max(high, *replica.clock.values())
    for doc in replica.graph.texts.values():
        high = max(high, doc.max_seq)
    return high


class _TailItem:
    __slots__ = ("msg", "offset", "seq")

    def __init__(self, seq: int, msg: Message, offset: str) -> None:
        self.seq = seq
        self.msg = msg
        self.offset = offset


class _SnapshotPlan:
    """What one snapshot folds, captured on the write loop (see :meth:`Room._plan_snapshot`)."""

    __slots__ = (
        "base",
        "epoch",
        "frontier",
        "journal_offset",
        "lamport",
        "limits",
        "msgs",
        "recent",
        "seq",
        "since_bytes",
        "since_msgs",
        "trim_journal_at",
    )

    def __init__(
        self,
        *,
        base: SnapshotRecord,
        seq: int,
        epoch: str,
        journal_offset: str,
        msgs: list[Message],
        recent: list[tuple[str, int]],
        limits: Limits,
        since_msgs: int,
        since_bytes: int,
        trim_journal_at: str | None,
        lamport: bool = False,
        frontier: LamportKey | None = None,
    ) -> None:
        self.lamport = lamport
        self.frontier = frontier
        self.base = base
        self.seq = seq
        self.epoch = epoch
        self.journal_offset = journal_offset
        self.msgs = msgs
        self.recent = recent
        self.limits = limits
        self.since_msgs = since_msgs
        self.since_bytes = since_bytes
        self.trim_journal_at = trim_journal_at


def _build_snapshot(plan: _SnapshotPlan) -> tuple[Replica, SnapshotRecord, bytes]:
    """Fold ``plan`` into a new replica and its encoded snapshot record (thread-safe).

    Touches only the plan's immutable inputs and objects it creates, so it runs in a worker
    thread while the room's write loop goes on (the GIL switches every few ms, so the loop
    keeps sequencing; msgspec's encode is one short C call).
    """
    replica = Replica("server", limits=plan.limits, snapshot=plan.base.snapshot)
    if plan.lamport:
        replica.receive_many(unsequenced(plan.msgs), validate=False)
    else:
        replica.receive_many(plan.msgs, [m.serverSeq for m in plan.msgs], validate=False)
    # ``seen`` stays out of the record: dedupe is the sequencer's window (``recent``).
    snap = msgspec.structs.replace(replica.snapshot(), seen=[])
    rec = SnapshotRecord(
        epoch=plan.epoch,
        seq=plan.seq,
        journal_offset=plan.journal_offset,
        snapshot=snap,
        recent=plan.recent,
        frontier=plan.frontier,
        rebuilt_at=plan.base.rebuilt_at,
    )
    data = _msgpack.encode(rec)
    # The room continues with this replica (caught up on the loop): it is what a reload from
    # the previous snapshot plus the journal builds, and it holds only the messages since the
    # previous snapshot, so the room's memory stays bounded (about two snapshot intervals)
    # without a second rebuild from ``snap``.
    return replica, rec, data


SendRaw = Callable[[bytes, Format], Coroutine[Any, Any, None]]
CloseRaw = Callable[[int, str], Awaitable[None]]


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], waiting: Any) -> Generator[Any, Any, None]:
    """Finish ``coro``, already started by hand and suspended on ``waiting``, inside a task.

    What ``coro`` yields (an asyncio future, or None for a bare reschedule) is passed up to
    the task unchanged, and what the task sends or throws back (a result, a cancellation)
    goes down to ``coro``: the task drives it exactly as if it had started it itself. This
    is Python 3.12's eager task start (``asyncio.eager_task_factory``) for one coroutine.
    """
    while True:
        try:
            value = yield waiting
        except BaseException as exc:  # a cancellation (or error) thrown in by the task
            try:
                waiting = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting = coro.send(value)
            except StopIteration:
                return


class Member:
    """One WebSocket connection in a room, with a bounded outgoing queue.

    Frames are queued as encoded bytes by :meth:`enqueue`, which never waits (the room's
    broadcast path must not wait for any one member). A sender task drains the queue by
    awaiting ``send``; the ASGI server's ``websocket.send`` waits while the transport's
    write buffer is above its high-water mark (uvicorn's websockets-sansio and wsproto
    implementations await ``writable``, set by ``pause_writing``/``resume_writing``), so a
    reader that stops reading stops the sender, the queue fills, and once the queued bytes
    behind the frame at the head of the queue would exceed ``limit`` the connection is dropped
    with :attr:`CloseCode.RESUME` (DESIGN.md invariant 6). The head frame does not count, so one
    frame larger than ``limit`` (the ``state`` of a big room) does not make joining impossible.

    Idle members cost little: the sender task and
    the queue exist only while frames are waiting. On an idle member :meth:`enqueue` starts
    ``send`` at once, in the caller's step: a writable transport takes the frame without
    suspending, so the common case costs no task, no queue and no loop round (at 20,000
    deliveries/s a task per delivery was a tenth of the server's Python time). Only if
    ``send`` suspends (the transport is paused) does a sender task take over: it finishes that
    frame (:func:`_resume`), sends what was queued behind it until the queue is empty, then
    drops the queue and ends. At most one sender exists at a time (``_task`` is cleared only
    by the task itself, after its last ``send`` returned), so frames leave in the order they
    were queued.

    Per-connection memory is therefore bounded by ``limit`` + two frames (the head of the
    queue and the one being written) + the transport's high-water mark (64 KiB) + the kernel
    socket send buffer (docs/protocol.md "Limits").

    The close after a drop also waits for the transport; if it cannot be written within
    ``close_timeout`` seconds (the peer reads nothing at all) the member is *abandoned*: its
    ``owner`` task (the connection handler) is cancelled so it stops waiting for frames, and
    the ASGI server closes the transport when the handler returns.
    """

    __slots__ = (
        "_close",
        "_closing",
        "_queue",
        "_send",
        "_task",
        "abandoned",
        "client",
        "close_code",
        "close_timeout",
        "closed",
        "fmt",
        "limit",
        "on_drop",
        "overflowed",
        "owner",
        "queued_bytes",
    )

    def __init__(
        self,
        client: str,
        fmt: Format,
        *,
        send: SendRaw,
        close: CloseRaw,
        limit: int,
        close_timeout: float = 10.0,
    ) -> None:
        self.client = client
        self.fmt: Format = fmt
        self._send = send
        self._close = close
        self.limit = limit
        #: Frames waiting for the sender; None while nothing is queued (idle members).
        self._queue: collections.deque[bytes] | None = None
        self.queued_bytes = 0
        self.closed = False
        self.close_code: int | None = None
        #: The running sender task, if frames are being sent.
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self.on_drop: Callable[[Member], None] | None = None
        self.close_timeout = close_timeout
        #: The task handling this connection; cancelled if the member is abandoned.
        self.owner: asyncio.Task[Any] | None = None
        #: True once a server-side close could not be written in ``close_timeout``.
        self.abandoned = False
        #: True once dropped because its send queue overflowed (a slow consumer).
        self.overflowed = False

    def start(self) -> None:
        """Make the calling task the connection's ``owner`` (the sender starts on demand)."""
        self.owner = asyncio.current_task()

    @property
    def sending(self) -> bool:
        """Whether a sender task is at work (frames queued or being written)."""
        return self._task is not None and not self._task.done()

    def enqueue(self, data: bytes) -> None:
        """Queue one encoded frame without waiting; beyond the byte bound, drop (4008)."""
        if self.closed:
            return
        if self._task is None:
            # Idle (class docstring): write now; a task only if the transport makes us wait.
            sending = self._send(data, self.fmt)
            try:
                waiting = sending.send(None)
            except StopIteration:
                return
            except Exception:
                self._lost()
                return
            fresh: collections.deque[bytes] = collections.deque()
            self._queue = fresh
            self._task = asyncio.get_running_loop().create_task(
                self._run(fresh, _resume(sending, waiting))
            )
            return
        queue = self._queue
        assert queue is not None  # a sender exists, so does its queue
        # The frame at the head of the queue does not count: one frame larger than the bound
        # (a big ``state``) can always be sent, and the next frames must fit behind it. (The
        # frame being written has left the queue and does not count either.)
        if queue and self.queued_bytes - len(queue[0]) + len(data) > self.limit:
            self.overflowed = True
            self.drop(CloseCode.RESUME, "send queue overflow: resume with since/epoch")
            return
        queue.append(data)
        self.queued_bytes += len(data)

    def drop(self, code: int, reason: str) -> None:
        """Close the connection from the server side without waiting for it."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self._queue = None
        self.queued_bytes = 0
        if self._task is not None:
            self._task.cancel()
        if self.on_drop is not None:
            self.on_drop(self)
        # The member owns the close task (as it owns its sender): the connection handler holds
        # the member until it returns, and it awaits this task in :meth:`stop` before that.
        self._closing = asyncio.get_running_loop().create_task(self._close_quietly(code, reason))

    async def _close_quietly(self, code: int, reason: str) -> None:
        try:
            # Waits while the transport is paused: the close frame goes out after what the
            # reader already has in flight, so a reader that resumes reading sees the code.
            await asyncio.wait_for(self._close(code, reason), self.close_timeout)
        except TimeoutError:
            # The peer reads nothing: stop the handler's receive wait so the connection ends.
            self.abandoned = True
            if self.owner is not None and not self.owner.done():
                self.owner.cancel("room member abandoned: close could not be written")
        except Exception:
            pass  # the socket is already gone; the receive loop sees the disconnect

    def _lost(self) -> None:
        # The socket is gone; the receive loop notices and leaves the room.
        self.closed = True
        self._queue = None
        self.queued_bytes = 0

    async def _run(self, queue: collections.deque[bytes], first: Awaitable[None]) -> None:
        """Finish ``first`` (the send that had to wait), then drain ``queue``."""
        try:
            await first
            while queue and not self.closed:
                data = queue.popleft()
                self.queued_bytes -= len(data)
                await self._send(data, self.fmt)
        except asyncio.CancelledError:
            pass
        except Exception:
            self._lost()
        finally:
            # Nothing can be queued between the loop's last check and here (no await), so an
            # empty queue stays empty until the next enqueue, which starts a new sender.
            self._task = None
            if self._queue is queue and not queue:
                self._queue = None

    async def stop(self) -> None:
        """Stop the sender; wait (at most ``close_timeout``) for a pending server-side close.

        The connection handler calls this before returning to the ASGI server, which closes
        the transport as soon as the application returns: the close frame (and its code, e.g.
        4008) must be written first.
        """
        self.closed = True
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._closing is not None and not self._closing.done():
            # asyncio.wait: neither raises the close's outcome nor cancels it if we are.
            await asyncio.wait({self._closing})


class _Relayed:
    """A message that came over a replication link, waiting in the inbox: where it came
    from, and the future its journaled serverSeq is set on."""

    __slots__ = ("future", "origin", "via")

    def __init__(self, origin: str | None, via: str | None, future: asyncio.Future[int]) -> None:
        self.origin = origin
        self.via = via
        self.future = future


class Room:
    """A loaded room. Create with :meth:`load`; feed messages with :meth:`submit`.

    It is the :class:`~durasync.protocol.room_server.RoomView` its members' sessions read
    (``failed``, ``epoch``, ``last_seq``, ``counter_high``, ``sync_status``).

    **Replicated rooms** (``lamport=True``; docs/replication.md "Rooms") are journaled by
    several servers, each in its own serverSeq order, so their graph is folded in the Lamport
    order ``(lt, client, id)`` of the message set instead (the same on every server): the
    messages' serverSeq still orders this server's journal, acks and resumes, and the
    ``state`` frames say ``order: "lamport"`` so members fold the same way. Their snapshots
    record their ``frontier`` (the highest Lamport key folded); a message that arrives later
    and sorts below the frontier (edits made
    offline elsewhere) makes the room refold everything from its archive and journal
    (:meth:`_rebuild`) and send every member a full ``state``. Their epoch carries the mode
    (``<epoch>-lamport``), so no client resumes a fold of the other order. Before trimming
    their journal behind a snapshot they move the records into ``__rooms/R/archive``: the
    message set stays complete for refolds and for reconciliation with other servers.

    Two tasks run per room: the writer (group commit of the inbox) and the follower (entries
    other nodes appended). Both hold :attr:`_lock` while they change the graph, the tail, the
    dedupe window or the journal offset; if either fails the room is marked ``failed`` and its
    members are dropped with 4011 (the service reloads it on next use).
    """

    #: Counters of the server (the service sets its own on every room it loads).
    metrics: Metrics = Metrics(enabled=False)

    def __init__(
        self,
        name: str,
        store: LogStore,
        settings: RoomSettings,
        presence: RoomPresence | None = None,
        *,
        lamport: bool = False,
    ) -> None:
        self.name = name
        self.store = store
        self.settings = settings
        #: Replicated: folded in Lamport order (class docstring).
        self.lamport = lamport
        #: The Lamport key of the last message folded into the snapshot (replicated rooms).
        self.frontier: LamportKey | None = None
        #: A message below the frontier was folded: the room must refold (replicated rooms).
        self._stale = False
        #: Refolds of the whole message set (replicated rooms; tests and metrics).
        self.rebuilds = 0
        #: Relayed messages waiting for their serverSeq (failed with the room).
        self._relayed: set[asyncio.Future[int]] = set()
        self.epoch = ""
        self.replica = Replica("server", limits=settings.limits())
        self.sequencer = Sequencer(0, DedupeWindow(settings.dedupe_window))
        self.snap = SnapshotRecord(
            epoch="", seq=0, journal_offset=OFFSET_START, snapshot=Snapshot(), recent=[]
        )
        self._tail: collections.deque[_TailItem] = collections.deque()
        #: The highest Lamport-like counter sequenced, and how far a new message may climb.
        self.counters = CounterCeiling()
        #: (serverSeq, checksum) of the live graph, computed at most once per serverSeq.
        self._checksum: tuple[int, str] | None = None
        #: Canonical JSON texts built for ``sync-check`` (for tests and metrics).
        self.checksums_built = 0
        #: Journal, snapshot and meta records skipped because they did not decode or fit.
        self.skipped_records = 0
        self.members: set[Member] = set()
        self.presence: RoomPresence = (
            presence if presence is not None else PresenceTable(settings.presence_timeout)
        )
        self._clients: collections.Counter[str] = collections.Counter()
        self.inbox: asyncio.Queue[tuple[Member | _Relayed | None, Message]] = asyncio.Queue(
            settings.inbox_size
        )
        self._writer: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        #: The snapshot being built off the write loop (at most one at a time).
        self._snapshotting: asyncio.Task[None] | None = None
        #: Journal offset just past the last entry in this node's view (a batch boundary).
        self._offset = OFFSET_START
        self._lock = asyncio.Lock()
        self._since_snap_msgs = 0
        self._since_snap_bytes = 0
        self.failed = False
        self.last_active = time.monotonic()
        #: Conditional appends this node lost (another node appended first); for tests/metrics.
        self.conflicts = 0
        #: Journal entries applied from other nodes (follower and catch-up).
        self.followed = 0
        #: Reloads after the journal was trimmed past this node's view.
        self.resyncs = 0

    # ------------------------------------------------------------------ loading

    @classmethod
    async def load(
        cls,
        name: str,
        store: LogStore,
        settings: RoomSettings,
        *,
        create: bool,
        presence: PresenceBus | None = None,
        lamport: bool = False,
    ) -> Room:
        """Load a room from its latest snapshot plus the journal tail and start following it.

        ``presence`` shares the room's presence with other nodes (default: this process only).

        Raises:
            NoSuchStream: the room does not exist and ``create`` is False.
            StoreError: the store failed while loading.
        """
        room = cls(name, store, settings, lamport=lamport)
        epoch = await room._read_epoch()
        if epoch is None:
            if not create:
                raise NoSuchStream(f"no room {name!r}")
            epoch = await room._create()
        room.epoch = f"{epoch}-lamport" if lamport else epoch
        await room._load_state()
        if presence is not None:
            room.presence = await presence.attach(name, room._on_remote_presence)
        loop = asyncio.get_running_loop()
        room._writer = loop.create_task(room._write_loop())
        room._follower = loop.create_task(room._follow_loop())
        return room

    async def _read_epoch(self) -> str | None:
        """The room's epoch: that of the first meta record with a valid one.

        None if the room does not exist (no meta stream). A meta stream without any valid
        record (a crash cannot leave one: the record is written with the stream) gets a fresh
        epoch appended; the first valid record wins on every node, so concurrent repairs agree.
        """
        epoch = await self._first_epoch()
        if epoch is not False:
            return epoch
        log.error("room %s: no valid meta record; appending a new epoch", self.name)
        record = msgspec.json.encode(MetaRecord(epoch=secrets.token_hex(8), created_at=time.time()))
        await self.store.append(meta_path(self.name), [record])
        epoch = await self._first_epoch()
        if not isinstance(epoch, str):  # our own append cannot have vanished but by a wipe
            raise NoSuchStream(f"room {self.name}: meta stream disappeared")
        return epoch

    async def _first_epoch(self) -> str | Literal[False] | None:
        """The first valid epoch in the meta stream; None if there is no stream, False if
        there is one without a valid record (each invalid record is logged)."""
        offset = OFFSET_START
        while True:
            try:
                res = await self.store.read(meta_path(self.name), offset, max_messages=16)
            except NoSuchStream:
                return None
            for e in res.entries:
                try:
                    epoch = _meta_decoder.decode(e.data).epoch
                except (msgspec.MsgspecError, RecursionError) as exc:
                    self._skip("meta", e.offset, f"does not decode: {exc}")
                    continue
                if _EPOCH_RE.fullmatch(epoch):
                    return epoch
                self._skip("meta", e.offset, "not a valid epoch")
            offset = res.next_offset
            if res.up_to_date or not res.entries:
                return False

    def _skip(self, stream: str, offset: str, why: str) -> None:
        """Log and count a record that loading leaves out."""
        self.skipped_records += 1
        log.error("room %s: skipping %s record at offset %s: %s", self.name, stream, offset, why)

    async def _create(self) -> str:
        # Journal first, meta last: a crash in between leaves a journal without meta, which the
        # next load treats as a new epoch (continuity cannot be proven).
        await self.store.create(
            journal_path(self.name), StreamConfig(content_type="application/json")
        )
        await self.store.create(snapshot_path(self.name), StreamConfig())
        epoch = secrets.token_hex(8)
        record = msgspec.json.encode(MetaRecord(epoch=epoch, created_at=time.time()))
        try:
            res = await self.store.create(
                meta_path(self.name),
                StreamConfig(content_type="application/json"),
                initial=[record],
            )
            if res.created:
                return epoch
        except StreamExists:
            pass
        # A concurrent creator won (another node on a shared store; an identical create is
        # idempotent and keeps ITS record): use the stored epoch, never our unstored one.
        existing = await self._read_epoch()
        if existing is None:
            raise StreamExists(f"room {self.name}: meta exists without an epoch record")
        return existing

    async def _load_state(self) -> None:
        """Latest snapshot + journal tail into this (fresh) room object.

        Another node may snapshot and trim the journal between reading the snapshot and
        reading the journal; then the journal no longer continues the snapshot read, and the
        load starts over (bounded; each retry sees a newer snapshot). If the journal still
        does not continue the snapshot on the last attempt, the records are missing for
        another reason (a bad newest snapshot was skipped for an older one): the load logs the
        gap and goes on from the journal's first record.
        """
        attempts = 8
        for attempt in range(attempts):
            self.replica = Replica("server", limits=self.settings.limits())
            self.sequencer = Sequencer(0, DedupeWindow(self.settings.dedupe_window))
            self.snap = SnapshotRecord(
                epoch=self.epoch,
                seq=0,
                journal_offset=OFFSET_START,
                snapshot=Snapshot(),
                recent=[],
            )
            self._tail.clear()
            self._since_snap_msgs = self._since_snap_bytes = 0
            self.frontier = None
            self._stale = False
            await self._load_snapshot()
            if await self._replay_journal(accept_gap=attempt == attempts - 1):
                break
        if self._stale:
            await self._rebuild()
        self.counters.high = _counters_of(self.replica)

    def _fold(self, replica: Replica, msgs: list[Message], seqs: list[int | None]) -> None:
        """Fold journaled messages into ``replica``: by serverSeq, or in Lamport order in a
        replicated room (which then notes a message below the snapshot's frontier)."""
        if not self.lamport:
            replica.receive_many(msgs, seqs, validate=False)
            return
        replica.receive_many(unsequenced(msgs), validate=False)
        if replica is self.replica and below(msgs, self.frontier):
            self._stale = True

    async def _load_snapshot(self) -> None:
        # Several records may be present for a moment (a node appended a newer snapshot and
        # has not trimmed the older yet); conditional appends make the last one the newest.
        # Normally at most a few; all are kept so that a bad newest one falls back to the next.
        records: list[tuple[str, bytes]] = []
        offset = OFFSET_START
        try:
            while True:
                res = await self.store.read(snapshot_path(self.name), offset, max_messages=16)
                records.extend((e.offset, e.data) for e in res.entries)
                offset = res.next_offset
                if res.up_to_date or not res.entries:
                    break
        except NoSuchStream:
            return
        for offset, data in reversed(records):
            try:
                rec = _snapshot_decoder.decode(data)
                replica = Replica("server", limits=self.settings.limits(), snapshot=rec.snapshot)
            except Exception as exc:  # any failure to decode or rebuild: the record is bad
                self._skip("snapshot", offset, f"does not load: {exc!r}")
                continue
            self.snap = rec
            self.replica = replica
            self.frontier = rec.frontier
            for msg_id, seq in rec.recent:
                self.sequencer.dedupe.add(msg_id, seq)
            self.sequencer.last_seq = rec.seq
            return

    async def _replay_journal(self, *, accept_gap: bool = False) -> bool:
        """Fold the journal after the snapshot; False if it does not continue the snapshot.

        Records that do not decode or validate are skipped (logged), and so are those outside
        the run of consecutive serverSeqs that forms the journal
        (:func:`~durasync.rooms.core.journal_run`), so the tail stays contiguous. If that run
        starts after the snapshot, the journal was trimmed behind a newer snapshot meanwhile
        (False), unless there is no snapshot (then nothing was trimmed by a snapshot this node
        can read) or ``accept_gap``: the load then goes on from the run's first record and
        logs the gap.
        """
        path = journal_path(self.name)
        offset = OFFSET_START
        records: list[tuple[str, JournalRecord, int]] = []
        while True:
            res = await self.store.read(path, offset, max_bytes=8 << 20, max_messages=50_000)
            for e in res.entries:
                try:
                    records.append((e.offset, decode_journal_record(e.data), len(e.data)))
                except ValueError as exc:
                    self._skip("journal", e.offset, str(exc))
            offset = res.next_offset
            # Read to the tail: the view must end at a batch boundary (module docstring).
            if res.up_to_date or not res.entries:
                break
        snap_seq = self.snap.seq
        kept = journal_run([rec.serverSeq for _, rec, _ in records], snap_seq)
        if kept and records[kept[0]][1].serverSeq > snap_seq + 1:
            first = records[kept[0]][1].serverSeq
            if snap_seq > 0 and not accept_gap:
                return False
            log.error(
                "room %s: journal starts at serverSeq %d, after the snapshot at %d: "
                "messages in between are lost",
                self.name,
                first,
                snap_seq,
            )
            self.sequencer.last_seq = first - 1
        keep = set(kept)
        msgs: list[Message] = []
        seqs: list[int | None] = []
        for i, (at, rec, size) in enumerate(records):
            seq = rec.serverSeq
            if i not in keep:
                self._skip("journal", at, f"serverSeq {seq} is not in the journal's run")
                continue
            self._tail.append(_TailItem(seq, rec.msg, at))
            if seq > snap_seq:
                msgs.append(rec.msg)
                seqs.append(seq)
                self._remember(rec.msg, seq)
                self.sequencer.last_seq = seq
                self._since_snap_msgs += 1
                self._since_snap_bytes += size
        self._offset = offset
        if msgs:
            self._fold(self.replica, msgs, seqs)
        return True

    def _remember(self, msg: Message, seq: int) -> None:
        """Add a journaled message's id to the dedupe window, unless its id is not its
        sender's (journaled before ids were checked): a resend of it is then never taken for
        a duplicate of another sender's message."""
        if id_owner(msg.id) == msg.client:
            self.sequencer.dedupe.add(msg.id, seq)

    # ------------------------------------------------------------------ members

    def join(self, member: Member, *, since: int | None, epoch: str | None, now: float) -> None:
        """Admit ``member``: queue its ``state`` and the presence table, announce it.

        Synchronous on purpose: no broadcast can interleave between the state and membership.
        """
        self.members.add(member)
        member.on_drop = self._on_drop
        self._clients[member.client] += 1
        self.last_active = time.monotonic()
        member.enqueue(self.state_frame(member, since=since, epoch=epoch))
        member.enqueue(
            encode_frame(PresenceFrame(event="sync", members=self.presence.members()), member.fmt)
        )
        self.touch(member, now)

    def state_frame(self, member: Member, *, since: int | None, epoch: str | None) -> bytes:
        """The encoded ``state`` frame answering a join or ``sync`` (docs/protocol.md "Join and
        resume")."""
        first = self._tail[0].seq if self._tail else self.sequencer.last_seq + 1
        # A replicated room refolded at ``rebuilt_at``: a position before it belongs to a
        # fold that no longer exists (the client needs the full state).
        first = max(first, self.snap.rebuilt_at + 1)
        order: Literal["lamport"] | None = "lamport" if self.lamport else None
        plan = plan_resume(
            since=since,
            epoch=epoch,
            room_epoch=self.epoch,
            first_available=first,
            last_seq=self.sequencer.last_seq,
        )
        if plan.kind == "recover":
            assert since is not None
            journal = self._tail_after(since)
            frame = StateFrame(
                snapshot=None,
                journal=journal,
                serverSeq=self.sequencer.last_seq,
                epoch=self.epoch,
                recovered=True,
                order=order,
            )
        else:
            # The client's own recent ids folded into the snapshot ride along so its replica
            # does not re-apply a pending message that is already in it. Only those: an id in
            # ``seen`` is taken as folded, so one of the journal tail would be skipped.
            snapshot = msgspec.structs.replace(
                self.snap.snapshot,
                seen=self.sequencer.dedupe.ids_of(member.client, upto=self.snap.seq),
            )
            frame = StateFrame(
                snapshot=snapshot,
                journal=self._tail_after(self.snap.seq),
                serverSeq=self.sequencer.last_seq,
                epoch=self.epoch,
                recovered=False,
                order=order,
            )
        return encode_frame(frame, member.fmt)

    def _tail_after(self, seq: int) -> list[Message]:
        out: list[Message] = []
        for item in reversed(self._tail):
            if item.seq <= seq:
                break
            out.append(item.msg)
        out.reverse()
        return out

    def touch(self, member: Member, now: float) -> None:
        """Activity of ``member``: keeps presence alive, announces a (re)join."""
        if self.presence.touch(member.client, now):
            self._send_others(PresenceFrame(event="join", client=member.client), member)

    def set_presence(self, member: Member, state: Any, now: float) -> None:
        joined = self.presence.update(member.client, state, now)
        self._send_others(
            PresenceFrame(event="join" if joined else "update", client=member.client, state=state),
            member,
        )

    def expire_presence(self, now: float) -> None:
        for client in self.presence.expire(now):
            self._send_others(PresenceFrame(event="leave", client=client, reason="expired"), None)

    def leave(self, member: Member) -> None:
        """Remove ``member`` (idempotent); its presence leaves with its last connection."""
        if member not in self.members:
            return
        self.members.discard(member)
        self._clients[member.client] -= 1
        self.last_active = time.monotonic()
        if self._clients[member.client] <= 0:
            del self._clients[member.client]
            if self.presence.leave(member.client):
                self._send_others(
                    PresenceFrame(event="leave", client=member.client, reason="left"), member
                )

    def _on_drop(self, member: Member) -> None:
        if member.overflowed:
            self.metrics.room_slow_consumers.inc()
        self.leave(member)

    def _send_others(self, frame: ServerFrame, skip: Member | None) -> None:
        """Queue ``frame`` for every member but ``skip``, encoded once per format."""
        encoded: dict[str, bytes] = {}
        sent = 0
        # A copy: enqueue may drop a slow member, which leaves the set.
        for m in tuple(self.members):
            if m is skip:
                continue
            data = encoded.get(m.fmt)
            if data is None:
                data = encoded[m.fmt] = encode_frame(frame, m.fmt)
            m.enqueue(data)
            sent += 1
        self.metrics.room_frames_relayed.inc(sent)

    def _on_remote_presence(self, frame: PresenceFrame) -> None:
        """A presence change on another node (from the presence bus): tell every local member."""
        self._send_others(frame, None)

    def send_all(self, frames: dict[str, bytes]) -> None:
        for m in list(self.members):
            m.enqueue(frames[m.fmt])

    # ------------------------------------------------------------------ writing

    async def submit(self, member: Member | None, msg: Message) -> None:
        """Queue a validated message for sequencing (waits while the inbox is full)."""
        if self.failed:
            raise RoomFailed(self.name)
        await self.inbox.put((member, msg))

    async def submit_relayed(
        self, items: list[tuple[Message, str | None, str | None]]
    ) -> list[int]:
        """Sequence messages that came over a replication link, each ``(message, origin,
        via)`` (validated by the caller), and return their serverSeqs once they are journaled
        (durable), in order. A message this room sequenced recently (its dedupe window) is not
        journaled again: its original serverSeq is returned. Members get them as broadcasts.

        Raises:
            RoomFailed: the room failed (nothing returned is durable then).
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[int]] = []
        for msg, origin, via in items:
            if self.failed:
                break
            future: asyncio.Future[int] = loop.create_future()
            self._relayed.add(future)
            future.add_done_callback(self._relayed.discard)
            futures.append(future)
            await self.inbox.put((_Relayed(origin, via, future), msg))
        if self.failed:
            self._fail_relayed()
        return [await f for f in futures]

    def _fail_relayed(self) -> None:
        for future in list(self._relayed):
            if not future.done():
                future.set_exception(RoomFailed(self.name))
                future.exception()  # retrieved here: a caller that left must not warn

    def _fail(self, what: str) -> None:
        log.exception("room %s failed (%s); it will be reloaded from the store", self.name, what)
        self.failed = True
        self._fail_relayed()
        for m in list(self.members):
            m.drop(ROOM_FAILED.code, ROOM_FAILED.reason)

    async def _write_loop(self) -> None:
        try:
            while True:
                first = await self.inbox.get()
                batch = [first]
                while len(batch) < self.settings.max_batch:
                    try:
                        batch.append(self.inbox.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                try:
                    async with self._lock:
                        await self._commit(batch)
                finally:
                    for _ in batch:
                        self.inbox.task_done()
        except asyncio.CancelledError:
            raise
        except Exception:
            self._fail("writer")

    async def _follow_loop(self) -> None:
        """Apply what other nodes append to the journal: each node keeps its members' graphs
        current from the shared journal."""
        path = journal_path(self.name)
        loop = asyncio.get_running_loop()
        timeout = self.settings.follow_timeout
        try:
            while not self.failed:
                offset = self._offset
                started = loop.time()
                ready = await self.store.wait_for(path, offset, timeout)
                if not ready:
                    if loop.time() - started < timeout / 2:
                        # wait_for gave up early (stream gone, store closing): do not spin;
                        # the next read (writer or here) reports a real failure.
                        await asyncio.sleep(min(1.0, timeout))
                    continue
                if self._offset != offset:
                    # Woken by our own append (on one node: always): nothing to read. Every
                    # own append wakes a waiting follower, so while this node writes, re-arm at
                    # most every FOLLOW_REARM seconds (the single-node hot path stays one
                    # wake per interval, not per batch); meanwhile our own conditional appends
                    # catch up on other nodes' entries anyway, so they wait at most that long.
                    await asyncio.sleep(FOLLOW_REARM)
                    continue
                async with self._lock:
                    if self._offset == offset:
                        await self._catch_up()
        except asyncio.CancelledError:
            raise
        except Exception:
            self._fail("follower")

    async def _catch_up(self) -> None:
        """Read the journal from this node's offset to the tail and apply it (lock held).

        Entries are applied as the writer applies its own (tail, dedupe window, graph) and
        broadcast to every local member (their senders are on other nodes).

        If the journal was trimmed past this node's view (another node snapshotted while this
        one lagged by more than the retention), the room reloads instead (:meth:`_resync`).

        Raises:
            StoreError: the store failed (the caller fails the room).
        """
        path = journal_path(self.name)
        while True:
            try:
                res = await self.store.read(
                    path, self._offset, max_bytes=8 << 20, max_messages=10_000
                )
            except DataGone:
                # Another node snapshotted and trimmed past our view (we lagged by more than
                # the retention): the gap cannot be broadcast, so reload and resync members.
                await self._resync()
                return
            msgs: list[Message] = []
            seqs: list[int | None] = []
            for e in res.entries:
                try:
                    rec = decode_journal_record(e.data)
                except ValueError as exc:
                    self._skip("journal", e.offset, str(exc))
                    continue
                seq = rec.serverSeq
                if seq <= self.sequencer.last_seq:
                    continue  # defensive: never apply a position twice
                if seq != self.sequencer.last_seq + 1:
                    self._skip(
                        "journal", e.offset, f"serverSeq {seq} does not follow {self.last_seq}"
                    )
                    continue
                msg = rec.msg
                self._tail.append(_TailItem(seq, msg, e.offset))
                self._remember(msg, seq)
                self.counters.note(msg)
                self.sequencer.last_seq = seq
                self._since_snap_bytes += len(e.data)
                msgs.append(msg)
                seqs.append(seq)
            self._offset = res.next_offset
            if msgs:
                self.followed += len(msgs)
                self._since_snap_msgs += len(msgs)
                try:
                    self._fold(self.replica, msgs, seqs)
                except Exception:
                    log.exception("room %s: applying a followed batch failed", self.name)
                for m, s in zip(msgs, seqs, strict=True):
                    assert s is not None
                    self._broadcast(m, s, None)
            if res.up_to_date or not res.entries:
                break
        self._trim_tail_memory()
        if self._stale:
            await self._rebuild()

    async def catch_up(self) -> None:
        """Bring this node's view up to the journal's tail now (instead of waiting for the
        follower): a client resuming from a position another node gave it (failover) gets
        ``recovered: true`` instead of a needless full state.

        Raises:
            StoreError: the store failed (the follower will fail the room too).
        """
        async with self._lock:
            await self._catch_up()

    async def _resync(self) -> None:
        """Reload from the latest snapshot + tail (lock held); every member gets a full
        ``state`` (``recovered: false``), as a client does after a trimmed-journal resume."""
        fresh = Room(self.name, self.store, self.settings, lamport=self.lamport)
        fresh.epoch = self.epoch
        await fresh._load_state()
        log.warning(
            "room %s: journal trimmed past this node's view (seq %d); reloaded at seq %d",
            self.name,
            self.sequencer.last_seq,
            fresh.sequencer.last_seq,
        )
        self.replica = fresh.replica
        self.sequencer = fresh.sequencer
        self.snap = fresh.snap
        self.frontier = fresh.frontier
        self._tail = fresh._tail
        self._offset = fresh._offset
        self._since_snap_msgs = fresh._since_snap_msgs
        self._since_snap_bytes = fresh._since_snap_bytes
        self.resyncs += 1
        for m in tuple(self.members):
            m.enqueue(self.state_frame(m, since=None, epoch=None))

    def _broadcast(self, msg: Message, seq: int, skip: Member | None) -> None:
        self._send_others(BroadcastFrame(msg, seq), skip)

    async def _commit(self, batch: list[tuple[Member | _Relayed | None, Message]]) -> None:
        """Sequence ``batch`` (lock held): journal it durably, then ack and broadcast it."""
        origins = {
            msg.id: (sender.origin, sender.via)
            for sender, msg in batch
            if isinstance(sender, _Relayed)
        }
        plan = await self._append([m for _, m in batch], origins)
        self.metrics.room_messages.inc(len(plan.accepted))
        self.last_active = time.monotonic()
        self._answer(batch, plan)
        self._trim_tail_memory()
        if self._stale:
            await self._rebuild()
        self._start_snapshot_if_due()

    async def _append(
        self,
        msgs: list[Message],
        origins: dict[str, tuple[str | None, str | None]] | None = None,
    ) -> BatchPlan:
        """Journal the new messages of ``msgs`` with one conditional append and apply them.

        Durable before anything else happens (nothing is acked before the append returned);
        conditional on this node's view (module docstring: an exact compare-and-set on the
        journal's length). When another node appended first, its entries are taken and the
        batch re-planned (resends of what it journaled are now duplicates of known ids).

        Raises:
            RoomConflict: :data:`MAX_CONFLICT_RETRIES` conditional appends lost in a row.
            StoreError: the store failed.
        """
        plan = self.sequencer.plan(msgs)
        attempts = 0
        relayed = origins or {}
        while plan.accepted:
            records = [
                _journal_encoder.encode(JournalRecord(seq, msg, *relayed.get(msg.id, (None, None))))
                for msg, seq in plan.accepted
            ]
            try:
                res = await self.store.append(
                    journal_path(self.name), records, stream_seq=f"{plan.accepted[0][1]:016d}"
                )
            except SeqConflict:
                self.conflicts += 1
                attempts += 1
                if attempts >= MAX_CONFLICT_RETRIES:
                    raise RoomConflict(
                        f"room {self.name}: {attempts} conditional appends lost in a row"
                    ) from None
                await self._catch_up()
                plan = self.sequencer.plan(msgs)
                continue
            self.sequencer.commit(plan)
            self._offset = res.tail
            self._apply_appended(plan, res.offsets, records)
            break
        return plan

    def _apply_appended(self, plan: BatchPlan, offsets: list[str], records: list[bytes]) -> None:
        """The plan's messages are journaled at ``offsets``: keep them in the tail, raise the
        counter base and fold them into the graph."""
        msgs: list[Message] = []
        seqs: list[int | None] = []
        for (msg, seq), offset, rec in zip(plan.accepted, offsets, records, strict=True):
            msg.serverSeq = seq
            self.counters.note(msg)
            self._tail.append(_TailItem(seq, msg, offset))
            msgs.append(msg)
            seqs.append(seq)
            self._since_snap_bytes += len(rec)
        self._since_snap_msgs += len(msgs)
        try:
            self._fold(self.replica, msgs, seqs)
        except Exception:
            # The message is journaled (durable, acked): a fold failure is a bug in the CRDT
            # layer, not the sender's fault: log it and keep the room serving.
            log.exception("room %s: applying a journaled batch failed", self.name)

    def _answer(
        self, batch: list[tuple[Member | _Relayed | None, Message]], plan: BatchPlan
    ) -> None:
        """Acks (to senders) then broadcasts (to the others), each frame encoded once per
        format; recognised resends are acked with their original serverSeq. A relayed
        message's serverSeq goes to its future instead of an ack."""
        for (member, msg), (_, seq) in zip(
            [batch[i] for i in plan.accepted_index], plan.accepted, strict=True
        ):
            if isinstance(member, _Relayed):
                if not member.future.done():
                    member.future.set_result(seq)
                self._broadcast(msg, seq, None)
                continue
            if member is not None:
                member.enqueue(encode_frame(AckFrame(msg.id, seq), member.fmt))
            self._broadcast(msg, seq, member)
        for i, seq in plan.duplicates:
            member, msg = batch[i]
            if isinstance(member, _Relayed):
                if not member.future.done():
                    member.future.set_result(seq)
            elif member is not None:
                member.enqueue(encode_frame(AckFrame(msg.id, seq), member.fmt))

    def _start_snapshot_if_due(self) -> None:
        """Start building a snapshot off the write loop when one is due (sequencing goes on
        meanwhile, without a relay stall per snapshot; see :meth:`_plan_snapshot`)."""
        if self._snapshot_due() and self._snapshotting is None:
            planned = self._plan_snapshot()
            if planned is not None:
                self._snapshotting = asyncio.get_running_loop().create_task(
                    self._snapshot_in_background(planned)
                )

    def _snapshot_due(self) -> bool:
        return (
            self._since_snap_msgs >= self.settings.snapshot_every_messages
            or self._since_snap_bytes >= self.settings.snapshot_every_bytes
        )

    def _trim_tail_memory(self) -> None:
        keep_from = self.snap.seq - self.settings.retention_messages + 1
        while self._tail and self._tail[0].seq < keep_from:
            self._tail.popleft()

    def _plan_snapshot(self) -> _SnapshotPlan | None:
        """Capture what the next snapshot folds (lock held or on the write loop; cheap).

        A snapshot at ``seq`` is the previous snapshot record plus the journal entries after
        it up to ``seq``, all of which are in ``_tail`` (it keeps everything after
        ``snap.seq``). These are immutable by now (a sequenced message is never changed; the
        previous record is never mutated), so :func:`_build_snapshot` can fold them in a
        worker thread into a *new* replica while the write loop keeps sequencing on the live
        one: the room's graph is never shared with the thread. Returns None if nothing is new.
        """
        seq = self.sequencer.last_seq
        base = self.snap
        if seq <= base.seq:
            return None
        msgs = self._tail_after(base.seq)
        if len(msgs) != seq - base.seq:
            raise RoomFailed(f"room {self.name}: tail does not reach back to seq {base.seq}")
        frontier: LamportKey | None = None
        if self.lamport:
            # Every message after the previous snapshot sorts after its frontier (a message
            # below it made the room refold): the new frontier is the highest key folded.
            if below(msgs, base.frontier):
                return None
            frontier = max(lamport_key(m) for m in msgs)
            if base.frontier is not None and base.frontier > frontier:
                frontier = base.frontier
        # The journal is trimmed behind the snapshot to ``retention_messages`` entries: the
        # offset of the first kept entry (entries are contiguous in the tail).
        keep_from = seq - self.settings.retention_messages + 1
        trim_at: str | None = None
        if self._tail and keep_from > 1:
            i = keep_from - self._tail[0].seq
            if 0 < i < len(self._tail):
                item = self._tail[i]
                if item.seq == keep_from:
                    trim_at = item.offset
            elif i <= 0 and self._tail[0].seq > 1:
                trim_at = self._tail[0].offset
        return _SnapshotPlan(
            base=base,
            seq=seq,
            epoch=self.epoch,
            journal_offset=self._offset,
            msgs=msgs,
            recent=self.sequencer.dedupe.items(),
            limits=self.settings.limits(),
            since_msgs=self._since_snap_msgs,
            since_bytes=self._since_snap_bytes,
            trim_journal_at=trim_at,
            lamport=self.lamport,
            frontier=frontier,
        )

    def _below(self, plan: _SnapshotPlan) -> bool:
        """A replicated room journaled, after the snapshot ``plan`` folds, a message that sorts
        below its frontier: that snapshot must not be used."""
        return plan.lamport and below(self._tail_after(plan.seq), plan.frontier)

    async def _store_snapshot(self, plan: _SnapshotPlan, data: bytes) -> str | None:
        """Append the record conditionally; its offset if it won, None if a newer one won."""
        try:
            res = await self.store.append(
                snapshot_path(self.name), [data], stream_seq=f"{plan.seq:016d}"
            )
        except SeqConflict:
            return None
        return res.offsets[0]

    async def _catch_up_replica(self, plan: _SnapshotPlan, replica: Replica) -> int | None:
        """Fold what was sequenced while the snapshot was built into ``replica``, without the
        lock and yielding every :data:`CATCH_UP_SLICE` seconds (the writer keeps going; each
        entry costs the same fold it cost the live replica). Returns the seq folded up to,
        None if the room moved on another way (resync, failure) or a fold failed.
        """
        caught = plan.seq
        loop = asyncio.get_running_loop()
        while True:
            if self.failed or self.snap is not plan.base:
                return None
            after = self._tail_after(caught)
            if len(after) <= _CATCH_UP_CHUNK:
                return caught  # the rest is folded under the lock, with the swap
            started = loop.time()
            try:
                for i in range(0, len(after), _CATCH_UP_CHUNK):
                    chunk = after[i : i + _CATCH_UP_CHUNK]
                    self._fold(replica, chunk, [m.serverSeq for m in chunk])
                    caught = chunk[-1].serverSeq or caught
                    if loop.time() - started >= CATCH_UP_SLICE:
                        break
            except Exception:
                log.exception("room %s: catching up a snapshot replica failed", self.name)
                return None
            await asyncio.sleep(0)

    def _install_snapshot(
        self, plan: _SnapshotPlan, replica: Replica, rec: SnapshotRecord, caught: int
    ) -> bool:
        """Swap in the replica built from ``rec`` (lock held), folded up to ``caught``,
        after folding the rest of the live view into it.

        Not installed (False) if the room's state moved on another way meanwhile (a resync or
        another snapshot replaced ``snap``) or catching up failed: the live replica stays.
        """
        if self.failed or self.snap is not plan.base or self.sequencer.last_seq < caught:
            return False
        if self._below(plan):
            return False
        # Entries sequenced since ``caught``: a short fold on the loop.
        after = self._tail_after(caught)
        if after:
            try:
                self._fold(replica, after, [m.serverSeq for m in after])
            except Exception:
                log.exception("room %s: catching up a snapshot replica failed", self.name)
                return False
        self.snap = rec
        self.frontier = rec.frontier
        # The live replica held every message since the snapshot before ``plan.base`` (its
        # history, id set and fold checkpoints); the new one only those after ``plan.base``.
        self.replica = replica
        self._since_snap_msgs = max(0, self._since_snap_msgs - plan.since_msgs)
        self._since_snap_bytes = max(0, self._since_snap_bytes - plan.since_bytes)
        self._trim_tail_memory()
        return True

    async def _trim_behind(self, plan: _SnapshotPlan, snapshot_offset: str) -> None:
        """Trim the snapshot stream and the journal behind the snapshot that won.

        Another node may have stored a newer snapshot meanwhile and trimmed past these
        offsets already (:class:`DataGone`): then there is nothing left to trim here.
        """
        with contextlib.suppress(DataGone):
            await self.store.trim(snapshot_path(self.name), snapshot_offset)
        if plan.trim_journal_at is not None:
            with contextlib.suppress(DataGone):
                if self.lamport:
                    await self._archive(plan.trim_journal_at)
                await self.store.trim(journal_path(self.name), plan.trim_journal_at)

    async def _archive(self, below: str) -> None:
        """Append the journal records below offset ``below`` to the room's archive (before they
        are trimmed: a replicated room keeps its whole message set). A crash between this and
        the trim leaves records in both; readers take each id once.

        Raises:
            DataGone: the journal was trimmed past them already (another node archived).
            StoreError: the store failed (nothing is trimmed then).
        """
        path = archive_path(self.name)
        await self.store.create(path, StreamConfig(content_type="application/json"))
        stop = decode_offset(below)[0]
        offset = OFFSET_START
        while True:
            res = await self.store.read(
                journal_path(self.name), offset, max_bytes=4 << 20, max_messages=1_000
            )
            records = [e.data for e in res.entries if decode_offset(e.offset)[0] < stop]
            if records:
                await self.store.append(path, records)
            if len(records) < len(res.entries) or res.up_to_date or not res.entries:
                return
            offset = res.next_offset

    async def _rebuild(self) -> None:
        """Refold a replicated room's whole message set (archive and journal) in Lamport order
        (lock held): a message that sorts below the snapshot's frontier was journaled (edits
        made offline elsewhere arrived). The result becomes the room's snapshot at the current
        serverSeq (stored when it is newer than the stored one), ``rebuilt_at`` makes every
        resume from before it a full state, and every member gets a full ``state`` now.

        Raises:
            StoreError: the store failed.
        """
        self._stale = False
        seen: set[str] = set()
        msgs: list[Message] = []
        for path in (archive_path(self.name), journal_path(self.name)):
            offset = OFFSET_START
            while True:
                try:
                    res = await self.store.read(
                        path, offset, max_bytes=8 << 20, max_messages=50_000
                    )
                except NoSuchStream:
                    break
                for e in res.entries:
                    try:
                        entry = decode_journal_record(e.data)
                    except ValueError:
                        continue
                    if entry.msg.id not in seen:
                        seen.add(entry.msg.id)
                        msgs.append(entry.msg)
                offset = res.next_offset
                if res.up_to_date or not res.entries:
                    break
        replica = Replica("server", limits=self.settings.limits())
        replica.receive_many(unsequenced(msgs), validate=False)
        snapshot = msgspec.structs.replace(replica.snapshot(), seen=[])
        seq = self.sequencer.last_seq
        frontier = max((lamport_key(m) for m in msgs), default=None)
        rec = SnapshotRecord(
            epoch=self.epoch,
            seq=seq,
            journal_offset=self._offset,
            snapshot=snapshot,
            recent=self.sequencer.dedupe.items(),
            frontier=frontier,
            rebuilt_at=seq,
        )
        if seq > self.snap.seq:
            with contextlib.suppress(SeqConflict):
                await self.store.append(
                    snapshot_path(self.name), [_msgpack.encode(rec)], stream_seq=f"{seq:016d}"
                )
        self.snap = rec
        self.frontier = frontier
        self.replica = Replica("server", limits=self.settings.limits(), snapshot=snapshot)
        self._since_snap_msgs = self._since_snap_bytes = 0
        self._checksum = None
        self.rebuilds += 1
        log.warning(
            "room %s: refolded %d messages in Lamport order at serverSeq %d",
            self.name,
            len(msgs),
            seq,
        )
        for m in tuple(self.members):
            m.enqueue(self.state_frame(m, since=None, epoch=None))

    async def _snapshot_in_background(self, plan: _SnapshotPlan) -> None:
        """Build (worker thread), store, install and trim snapshots; fails the room if the
        store fails (as a failed journal append does).

        If enough was written meanwhile for another snapshot, the next one follows at once
        (otherwise a room that went quiet would wait for its next message).
        """
        next_plan: _SnapshotPlan | None = plan
        try:
            while next_plan is not None:
                plan = next_plan
                started = time.perf_counter()
                replica, rec, data = await asyncio.to_thread(_build_snapshot, plan)
                won = None if self._below(plan) else await self._store_snapshot(plan, data)
                self.metrics.room_snapshot_seconds.observe(time.perf_counter() - started)
                caught = await self._catch_up_replica(plan, replica)
                async with self._lock:
                    installed = caught is not None and self._install_snapshot(
                        plan, replica, rec, caught
                    )
                    due = installed and not self.failed and self._snapshot_due()
                    next_plan = self._plan_snapshot() if due else None
                if won is not None:
                    await self._trim_behind(plan, won)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._fail("snapshot")
        finally:
            self._snapshotting = None

    async def take_snapshot(self) -> bool:
        """Fold everything in this node's view into a snapshot record, conditionally, now.

        Called with the room's lock held (tests, tools); the writer snapshots in the
        background instead (:meth:`_plan_snapshot`). The append carries ``stream_seq`` =
        padded snapshot seq, so a snapshot older than (or as old as) the newest one in the
        store is refused by the store; only the winner trims the snapshot stream and the
        journal (behind its own snapshot). Either way the in-memory replica is replaced by the
        one the snapshot was folded with (correct at ``seq``), to keep memory bounded. A
        background snapshot still being built is then abandoned at install (``snap`` moved);
        its conditional append cannot replace a newer record.

        Returns True if this snapshot was stored (False: nothing new, or a newer one won).

        Raises:
            StoreError: the store failed.
        """
        plan = self._plan_snapshot()
        if plan is None:
            return False
        replica, rec, data = await asyncio.to_thread(_build_snapshot, plan)
        won = await self._store_snapshot(plan, data)
        self._install_snapshot(plan, replica, rec, plan.seq)
        if won is not None:
            await self._trim_behind(plan, won)
        return won is not None

    @property
    def last_seq(self) -> int:
        """The last serverSeq in this node's view."""
        return self.sequencer.last_seq

    @property
    def counter_high(self) -> int:
        """The highest Lamport-like counter of every message sequenced so far."""
        return self.counters.high

    def sync_status(self, *, compute: bool) -> tuple[str | None, int, int]:
        """``(checksum, serverSeq, cost)`` of the live graph for a ``sync-check``.

        The checksum is computed at most once per serverSeq (the graph at a serverSeq is the
        same whoever asks); ``cost`` is the length of the canonical JSON built now (0 when the
        cached value answers). Without ``compute`` an uncached checksum is None.
        """
        seq = self.sequencer.last_seq
        cached = self._checksum
        if cached is not None and cached[0] == seq:
            return cached[1], seq, 0
        if not compute:
            return None, seq, 0
        text = self.replica.dump(live=True)
        status = digest(text)
        self.checksums_built += 1
        self._checksum = (seq, status)
        return status, seq, len(text)

    def first_available(self) -> int:
        return self._tail[0].seq if self._tail else self.sequencer.last_seq + 1

    async def close(self, code: int = CloseCode.RESUME, reason: str = "room unloaded") -> None:
        """Stop the writer (after draining accepted messages) and the follower, drop every
        member and detach from the presence bus."""
        if self._writer is not None:
            if not self.failed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._drain(), 5.0)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer
        # Relayed messages still waiting were not journaled: their senders retry.
        self._fail_relayed()
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower
        snapshotting = self._snapshotting
        if snapshotting is not None:
            # Let a snapshot being built finish (bounded): it is the cheapest restart point.
            await asyncio.wait({snapshotting}, timeout=10.0)
            snapshotting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await snapshotting
        for m in list(self.members):
            m.drop(code, reason)
        self.presence.close()

    async def _drain(self) -> None:
        await self.inbox.join()
