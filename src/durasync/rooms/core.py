"""Sans-I/O room state: sequencing, the durable dedupe window, which journal records form
the journal, resume planning, presence, and the room's highest counter.

Nothing here touches sockets, the store or a clock: times are arguments. What one member may
send (budgets, id namespaces, the counter ceiling) is decided per connection by
:class:`~durasync.protocol.room_server.ServerRoomSession` with the rules of
:mod:`durasync.protocol.room_rules`. The I/O shell :mod:`durasync.rooms.room` drives these
pieces in the order of the pipeline: (session: validate -> namespace and counters) -> dedupe
-> assign serverSeq -> journal -> apply -> ack -> broadcast.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from durasync.crdt.messages import Message
from durasync.protocol.room_rules import id_owner, message_counters_max

__all__ = [
    "BatchPlan",
    "CounterCeiling",
    "DedupeWindow",
    "PresenceTable",
    "ResumePlan",
    "Sequencer",
    "journal_run",
    "plan_resume",
]


class DedupeWindow:
    """Ids of the last ``capacity`` sequenced messages -> their serverSeq.

    Durable: the window is rebuilt on load from the snapshot record (which stores it) plus the
    journal tail, so a resend after a restart is recognised. A resend older than
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

    def ids_of(self, client: str, *, upto: int | None = None) -> list[str]:
        """Ids in the window owned by ``client`` (:func:`id_owner`; ids are ``<client>:<lt>``),
        only those sequenced at or before ``upto`` when given."""
        prefix = client + ":"
        return [
            i
            for i, seq in self._ids.items()
            if i.startswith(prefix) and id_owner(i) == client and (upto is None or seq <= upto)
        ]

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


class CounterCeiling:
    """The highest Lamport-like counter (``lt``, clock entries, text ``seq``) of every message
    the room sequenced: the base of the counter ceiling a member's next message must stay under
    (:func:`~durasync.protocol.room_rules.counter_problem`)."""

    __slots__ = ("high",)

    def __init__(self, high: int = 0) -> None:
        #: The highest counter of every message sequenced so far.
        self.high = high

    def note(self, msg: Message) -> None:
        """``msg`` was sequenced: raise the base to its counters."""
        top = message_counters_max(msg)
        self.high = max(self.high, top)
