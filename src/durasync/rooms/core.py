"""Sans-I/O room core: sequencing, durable dedupe window, resume planning, presence, and the
rules that bound what one member can do (room names, id namespaces, the counter ceiling, the
frame and answer budgets).

Nothing here touches sockets, the store or a clock: times are arguments. The I/O shells
(:mod:`durasync.rooms.room`, :mod:`durasync.rooms.service`) drive these pieces in the order of
the pipeline: validate -> namespace and counters -> dedupe -> assign serverSeq -> journal ->
apply -> ack -> broadcast.
"""

from __future__ import annotations

import collections
import itertools
import re
from collections.abc import Sequence
from typing import Any, Final, Literal

import msgspec
from msgspec import UNSET

from durasync.crdt.messages import META_OTYPES, Message

__all__ = [
    "BatchPlan",
    "ByteBudget",
    "CounterCeiling",
    "DedupeWindow",
    "PresenceTable",
    "RateLimiter",
    "ResumePlan",
    "Sequencer",
    "id_owner",
    "journal_run",
    "namespace_problem",
    "plan_resume",
    "room_name_problem",
]

_ROOM_RE: Final = re.compile(r"[A-Za-z0-9._~-]{1,128}")


def room_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a room, or None if it can.

    A room name is 1-128 of ``[A-Za-z0-9._~-]`` and not made of dots only: it becomes a path
    segment (``__rooms/<name>/...``), so ``.``, ``..`` (also when sent as ``%2e%2e``), the empty
    name, ``/``, control characters and over-long names are refused.
    """
    if not _ROOM_RE.fullmatch(name):
        return "room names are 1-128 of [A-Za-z0-9._~-]"
    if not name.strip("."):
        return "a room name cannot be made of dots only"
    return None


def id_owner(msg_id: str) -> str | None:
    """The client that owns the id ``msg_id`` = ``<client>:<n>`` (None if it has no ``:``).

    The owner is everything before the *last* ``:`` (a client id may contain ``:``, the part
    after it never does), so every id has at most one owner.
    """
    owner, sep, rest = msg_id.rpartition(":")
    if not sep or not rest or ":" in rest:
        return None
    return owner


def namespace_problem(msg: Message, client: str) -> tuple[str, str] | None:
    """``(code, text)`` if ``msg`` writes outside the namespace of ``client``, else None.

    The rule (docs/protocol.md "Id namespaces"): ``msg.client`` is the connection's client
    (``WRONG_CLIENT``); the message id is ``<client>:<suffix>`` with a suffix without ``:``
    (vuer-rtc forms ``<sessionId>:<lamportTime>``), the char ids a text op creates are
    ``<client>:<n>``, and undo/redo target only the client's own messages (``FOREIGN_ID``).
    So no two senders can ever use the same message id, and a resend is recognised only as a
    duplicate of the sender's own message.
    """
    if msg.client != client:
        return "WRONG_CLIENT", "msg.client must equal the connection's client"
    if id_owner(msg.id) != client:
        return "FOREIGN_ID", f"msg.id must be '{client}:<n>' (n without ':')"
    for i, op in enumerate(msg.ops):
        ot = op.ot
        if ot.startswith("text."):
            if op.id is not UNSET and op.id.rpartition(":")[0] != client:
                return "FOREIGN_ID", f"msg.ops[{i}].id: char ids must be '{client}:<n>'"
        elif ot in META_OTYPES:
            target = op.targetMsgId
            if target is not UNSET and id_owner(target) != client:
                return "FOREIGN_ID", f"msg.ops[{i}].targetMsgId: not a message of {client}"
    return None


class DedupeWindow:
    """Ids of the last ``capacity`` sequenced messages -> their serverSeq.

    Durable: the window is rebuilt on load from the snapshot record (which stores it) plus the
    journal tail, so a resend after a restart is recognised (issue 4 §3). A resend older than
    the window is not recognised; clients resend only unacknowledged, hence recent, messages.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._ids: collections.OrderedDict[str, int] = collections.OrderedDict()

    def get(self, msg_id: str) -> int | None:
        """serverSeq of ``msg_id`` if it is in the window."""
        return self._ids.get(msg_id)

    def add(self, msg_id: str, seq: int) -> None:
        """Remember ``msg_id`` at ``seq``, forgetting the oldest beyond capacity."""
        self._ids[msg_id] = seq
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def items(self) -> list[tuple[str, int]]:
        """The window, oldest first (what the snapshot record stores)."""
        return list(self._ids.items())

    def ids_of(self, client: str) -> list[str]:
        """Ids in the window owned by ``client`` (:func:`id_owner`; ids are ``<client>:<lt>``)."""
        prefix = client + ":"
        return [i for i in self._ids if i.startswith(prefix) and id_owner(i) == client]

    def __len__(self) -> int:
        return len(self._ids)


def journal_run(seqs: Sequence[int], snapshot_seq: int) -> list[int]:
    """Indices (ascending) of the journal records to keep, given their serverSeqs in stream order.

    A journal written only by rooms is one run of consecutive serverSeqs. Records that do not
    belong to it (written by anything else) are left out: the run kept is the longest chain of
    consecutive serverSeqs in stream order (skipping records in between), where for each
    serverSeq the first record carrying it counts. A run that continues the snapshot (starts at
    or before ``snapshot_seq + 1`` and reaches it) is preferred to any other; among equals the
    longest, then the one ending first (a later record repeating a position is not the room's).
    Empty for no records.
    """
    n = len(seqs)
    if n == 0:
        return []
    if seqs[-1] - seqs[0] == n - 1 and all(b == a + 1 for a, b in itertools.pairwise(seqs)):
        return list(range(n))  # the common case: one run, nothing else
    link = [-1] * n
    length = [1] * n
    start = list(seqs)
    first: dict[int, int] = {}
    for i, s in enumerate(seqs):
        j = first.get(s - 1)
        if j is not None:
            link[i] = j
            length[i] = length[j] + 1
            start[i] = start[j]
        first.setdefault(s, i)

    def rank(i: int) -> tuple[bool, int, int]:
        continues = start[i] <= snapshot_seq + 1 <= seqs[i] + 1
        return continues, length[i], -i

    end = max(range(n), key=rank)
    kept: list[int] = []
    while end >= 0:
        kept.append(end)
        end = link[end]
    kept.reverse()
    return kept


class BatchPlan(msgspec.Struct):
    """Outcome of :meth:`Sequencer.plan`: what to journal and what to ack as duplicates."""

    #: (message, assigned serverSeq), in order; the journal batch.
    accepted: list[tuple[Message, int]]
    #: (index in the input batch, original serverSeq) of recognised resends.
    duplicates: list[tuple[int, int]]
    #: Index in the input batch of each accepted message (parallel to ``accepted``).
    accepted_index: list[int]


class Sequencer:
    """The room's total order: ``serverSeq`` = 1 + the journal position (1-based, dense).

    :meth:`plan` assigns positions to a batch without committing them; :meth:`commit` makes
    them current once the journal append is durable, so a failed append consumes nothing.
    """

    def __init__(self, last_seq: int, dedupe: DedupeWindow) -> None:
        self.last_seq = last_seq
        self.dedupe = dedupe

    def plan(self, msgs: list[Message]) -> BatchPlan:
        """Dedupe by id (window and within the batch) and assign consecutive positions."""
        accepted: list[tuple[Message, int]] = []
        index: list[int] = []
        dups: list[tuple[int, int]] = []
        in_batch: dict[str, int] = {}
        seq = self.last_seq
        for i, m in enumerate(msgs):
            old = self.dedupe.get(m.id)
            if old is None:
                old = in_batch.get(m.id)
            if old is not None:
                dups.append((i, old))
                continue
            seq += 1
            in_batch[m.id] = seq
            accepted.append((m, seq))
            index.append(i)
        return BatchPlan(accepted, dups, index)

    def commit(self, plan: BatchPlan) -> None:
        """The plan's batch is durable: advance the position and remember the ids."""
        for m, seq in plan.accepted:
            self.dedupe.add(m.id, seq)
            self.last_seq = seq


class ResumePlan(msgspec.Struct, frozen=True):
    """How to answer a join: ``recover`` replays seqs ``since+1..`` (``recovered: true``);
    ``full`` sends snapshot + tail (``recovered: false``)."""

    kind: Literal["recover", "full"]
    reason: str


def plan_resume(
    *,
    since: int | None,
    epoch: str | None,
    room_epoch: str,
    first_available: int,
    last_seq: int,
) -> ResumePlan:
    """Decide between an exact resume and a full state (DESIGN.md "Join / resume").

    ``first_available`` is the lowest serverSeq the server can still replay (journal retention).
    Never a silent partial recovery: any doubt gives ``full``.
    """
    if since is None:
        return ResumePlan("full", "new client")
    if epoch != room_epoch:
        return ResumePlan("full", "epoch differs")
    if since < 0 or since > last_seq:
        return ResumePlan("full", "position unknown to this epoch")
    if since + 1 < first_available:
        return ResumePlan("full", "journal no longer reaches back")
    return ResumePlan("recover", "gap replayable")


class PresenceTable:
    """Per-client awareness state with expiry (extension to vuer-rtc, docs/protocol.md).

    A client is present from its first frame until it leaves or stays silent for ``timeout``
    seconds. State values are opaque (bounded by the frame size limit).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._state: dict[str, Any] = {}
        self._seen: dict[str, float] = {}

    def touch(self, client: str, now: float) -> bool:
        """Record activity. Returns True if ``client`` was not present (a join)."""
        joined = client not in self._seen
        self._seen[client] = now
        if joined:
            self._state[client] = None
        return joined

    def update(self, client: str, state: Any, now: float) -> bool:
        """Set the state; returns True if this is also a join."""
        joined = self.touch(client, now)
        self._state[client] = state
        return joined

    def leave(self, client: str) -> bool:
        """Remove ``client``; returns True if it was present."""
        self._state.pop(client, None)
        return self._seen.pop(client, None) is not None

    def expire(self, now: float) -> list[str]:
        """Remove and return clients silent for longer than the timeout."""
        gone = [c for c, t in self._seen.items() if now - t > self.timeout]
        for c in gone:
            self.leave(c)
        return gone

    def members(self) -> dict[str, Any]:
        """Client -> state of everyone present."""
        return dict(self._state)

    def __contains__(self, client: object) -> bool:
        return client in self._seen

    def close(self) -> None:
        """Nothing to release (one process; :mod:`durasync.rooms.presence` for the shared one)."""


class RateLimiter:
    """Token bucket: ``rate`` frames per second with bursts up to ``burst``."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def allow(self, now: float) -> bool:
        """Take one token; False (and nothing taken) when the bucket is empty."""
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class ByteBudget:
    """Token bucket in bytes that may go into debt: ``rate`` bytes per second, up to ``burst``.

    :meth:`available` says whether one more answer may start (the balance is positive);
    :meth:`charge` takes what the answer actually cost, which may push the balance below zero,
    so an answer larger than ``burst`` is still possible once, after which the next waits until
    the debt is repaid. Over any interval ``t`` the charges therefore total at most
    ``burst + rate * t`` plus one answer.
    """

    __slots__ = ("_balance", "_last", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._balance = burst
        self._last = now

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._balance = min(self.burst, self._balance + elapsed * self.rate)
            self._last = now

    def available(self, now: float) -> bool:
        """Whether an answer may be given now (the balance is above zero)."""
        self._refill(now)
        return self._balance > 0

    def charge(self, cost: float, now: float) -> None:
        """Take ``cost`` bytes (the balance may go negative)."""
        self._refill(now)
        self._balance -= cost


def message_counters_max(msg: Message) -> int:
    """The largest Lamport-like counter ``msg`` carries: ``lt``, its vector clock's entries
    and the ``seq`` of its ops (text ops allocate ``max seq seen + 1``)."""
    high = msg.lt
    clock = msg.clock
    if clock:
        c = max(clock.values())
        high = max(high, c)
    for op in msg.ops:
        s = op.seq
        if s is not UNSET and s > high:
            high = s
    return high


class CounterCeiling:
    """Keeps Lamport-like counters far from the top of their range.

    Lamport times, vector clock entries and text ``seq`` grow by "highest seen plus one", and
    validation caps every integer at ``MAX_SAFE_INTEGER``. Without a ceiling one message with a
    counter at the cap would make every later honest message exceed it (refused), so writes to
    the room would stop for good. A message is therefore accepted only if its counters exceed
    the room's highest counter so far by at most ``step``: the room's counters rise by at most
    ``step`` per sequenced message, and reaching the cap takes ``MAX_SAFE_INTEGER / step``
    messages. Honest clients stay within the step (each of their counters is at most one more
    than what they have seen, plus their own unsent messages).
    """

    __slots__ = ("high", "step")

    def __init__(self, step: int, high: int = 0) -> None:
        self.step = step
        #: The highest counter of every message sequenced so far.
        self.high = high

    def problem(self, msg: Message) -> str | None:
        """Why ``msg`` climbs too far (text naming the counter), or None."""
        top = message_counters_max(msg)
        if top <= self.high + self.step:
            return None
        return (
            f"msg: a counter (lt, clock or seq) of {top} is more than {self.step} beyond the "
            f"room's highest ({self.high})"
        )

    def note(self, msg: Message) -> None:
        """``msg`` was sequenced: raise the ceiling's base to its counters."""
        top = message_counters_max(msg)
        self.high = max(self.high, top)
