"""Sans-I/O room core: sequencing, durable dedupe window, resume planning, presence, rate limits.

Nothing here touches sockets, the store or a clock: times are arguments. The I/O shell
(:mod:`durasync.rooms.room`) drives these pieces in the order of the pipeline
(issue 4 §3): validate -> dedupe -> assign serverSeq -> journal -> apply -> ack -> broadcast.
"""

from __future__ import annotations

import collections
from typing import Any, Literal

import msgspec

from durasync.crdt.messages import Message

__all__ = [
    "BatchPlan",
    "DedupeWindow",
    "PresenceTable",
    "RateLimiter",
    "ResumePlan",
    "Sequencer",
    "plan_resume",
]


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
        """Ids in the window sent by ``client`` (ids are ``<client>:<lt>``, §2)."""
        prefix = client + ":"
        return [i for i in self._ids if i.startswith(prefix)]

    def __len__(self) -> int:
        return len(self._ids)


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
