"""Sans-I/O core of replication: tokens, checkpoints, delivery ordinals, the link status machine
and push outcome classification.

Nothing here touches sockets, the store or a clock: times are arguments and the random source
is injected, so tests drive every rule directly (shared/reference/enbox-sync.md §§3, 4, 7 are
the model; the differences are noted where they matter).

- :class:`Token` ``(stream, epoch, position)``: a position in one incarnation of one source
  log. Positions compare only inside one ``(stream, epoch)`` domain (:func:`same_domain`);
  a token of another domain is never "before" or "after", it is a gap.
- :class:`Checkpoint` (durable, per link, direction and log): ``received`` may run ahead
  (observability); ``applied`` is the resume point: everything delivered before it is durably
  applied.
- :class:`OrdinalTracker`: deliveries get ordinals on arrival; the checkpoint advances only
  over the contiguous prefix of committed ordinals, so an entry that completes early never
  moves it past one still in flight. Bounded: more than ``limit`` in flight is an overflow
  (the link repairs).
- :class:`LinkMachine`: ``initializing -> live <-> repairing -> degraded_poll`` plus
  ``paused``, with the repair schedule (1 s / 3 s / 10 s, then one attempt every 15-30 s,
  jittered) and a generation counter that stale tasks compare to stop.
- :func:`classify_response` / :func:`classify_failure`: succeeded / permanent / transient, and
  :func:`retry_delay` for the push retry schedule (Retry-After honoured, bounded).
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, Literal, TypeVar

import msgspec

__all__ = [
    "EVENT_TYPES",
    "Checkpoint",
    "DeadLetter",
    "InFlightOverflow",
    "LinkMachine",
    "LinkStatus",
    "MachineEvent",
    "OrdinalTracker",
    "Outcome",
    "OutcomeKind",
    "Token",
    "TokenDomainError",
    "classify_failure",
    "classify_response",
    "compare_positions",
    "parse_retry_after",
    "retry_delay",
    "same_domain",
]

LinkStatus = Literal["initializing", "live", "repairing", "degraded_poll", "paused"]
Connectivity = Literal["online", "offline", "unknown"]

#: Every event type a link emits (docs/replication.md "Events").
EVENT_TYPES: Final = (
    "link:status-change",
    "link:connectivity-change",
    "checkpoint:pull-advance",
    "checkpoint:push-advance",
    "gap:detected",
    "repair:started",
    "repair:completed",
    "repair:failed",
    "degraded-poll:entered",
    "reconcile:needed",
    "reconcile:completed",
    "dead-letter:added",
)


# ------------------------------------------------------------------------------------ tokens


class TokenDomainError(ValueError):
    """Two tokens of different ``(stream, epoch)`` domains were compared (a gap, not an order)."""


class Token(msgspec.Struct, frozen=True, kw_only=True):
    """A position in one incarnation of one source log.

    ``stream`` names the source log (for durasync: the source server's id and the stream path
    or room), ``epoch`` its incarnation (a re-created stream or a replaced store has a new
    one), ``position`` the number of entries before the boundary (a stream's message index, a
    room's serverSeq), ``ref`` what the source calls that position (a stream offset, the id of
    the message at it), kept for display and checks.
    """

    stream: str
    epoch: str
    position: int
    ref: str | None = None


def same_domain(a: Token, b: Token) -> bool:
    """Whether ``a`` and ``b`` are comparable: the same stream and epoch."""
    return a.stream == b.stream and a.epoch == b.epoch


def compare_positions(a: Token, b: Token) -> int:
    """-1, 0 or 1 as ``a`` is before, at or after ``b``.

    Raises:
        TokenDomainError: the tokens belong to different streams or epochs.
    """
    if not same_domain(a, b):
        raise TokenDomainError(
            f"tokens of different domains: ({a.stream}, {a.epoch}) vs ({b.stream}, {b.epoch})"
        )
    return (a.position > b.position) - (a.position < b.position)


class Checkpoint(msgspec.Struct, kw_only=True):
    """Durable progress of one direction of one link for one log (enbox-sync.md §3.2).

    ``applied`` is the resume point (every entry delivered before it is durably applied);
    ``received`` is the highest token seen, which may run ahead while entries are in flight.
    Both always belong to the same domain; :meth:`accepts` says whether a new token does.
    """

    received: Token | None = None
    applied: Token | None = None

    def accepts(self, token: Token) -> bool:
        """True if ``token`` is of this checkpoint's domain (or there is no baseline yet)."""
        base = self.applied or self.received
        return base is None or same_domain(base, token)

    def note_received(self, token: Token) -> bool:
        """Raise ``received`` to ``token`` if it is higher; returns whether it moved.

        Raises:
            TokenDomainError: ``token`` is of another domain.
        """
        if not self.accepts(token):
            raise TokenDomainError(f"token of another domain: ({token.stream}, {token.epoch})")
        if self.received is None or compare_positions(token, self.received) > 0:
            self.received = token
            return True
        return False

    def commit(self, token: Token) -> bool:
        """Make ``token`` the resume point if it is ahead of the current one; returns whether
        it moved. ``received`` follows when it was behind.

        Raises:
            TokenDomainError: ``token`` is of another domain.
        """
        if not self.accepts(token):
            raise TokenDomainError(f"token of another domain: ({token.stream}, {token.epoch})")
        if self.applied is not None and compare_positions(token, self.applied) <= 0:
            return False
        self.applied = token
        if self.received is None or compare_positions(token, self.received) > 0:
            self.received = token
        return True

    def reset(self, token: Token | None = None) -> None:
        """Start over at ``token`` (or with no baseline): after a gap or a repair."""
        self.received = token
        self.applied = token


# ---------------------------------------------------------------------------------- ordinals

_T = TypeVar("_T")


class InFlightOverflow(Exception):
    """More deliveries in flight than the tracker's limit: the link must repair."""


class OrdinalTracker(Generic[_T]):
    """Delivery-order tracking (enbox-sync.md §3.3): a checkpoint moves only over a contiguous
    run of committed deliveries.

    :meth:`deliver` gives each arriving entry the next ordinal (before any await); when its
    apply is durable the shell calls :meth:`commit`, which returns the newest token of the
    contiguous committed prefix if it grew (else None). An entry committed early waits for
    the ones delivered before it. At most ``limit`` entries may be in flight.
    """

    __slots__ = ("_committed", "_in_flight", "limit", "next_commit", "next_delivery")

    def __init__(self, limit: int = 100) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.next_delivery = 0
        self.next_commit = 0
        self._in_flight: dict[int, _T] = {}
        self._committed: set[int] = set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def deliver(self, token: _T) -> int:
        """The ordinal of a newly arrived entry.

        Raises:
            InFlightOverflow: ``limit`` entries are already in flight (nothing recorded).
        """
        if len(self._in_flight) >= self.limit:
            raise InFlightOverflow(f"more than {self.limit} deliveries in flight")
        ordinal = self.next_delivery
        self.next_delivery += 1
        self._in_flight[ordinal] = token
        return ordinal

    def commit(self, ordinal: int) -> _T | None:
        """Mark ``ordinal`` durably applied; the newest token of the drained prefix, or None.

        Committing an unknown or already drained ordinal changes nothing (returns None).
        """
        if ordinal not in self._in_flight or ordinal in self._committed:
            return None
        self._committed.add(ordinal)
        newest: _T | None = None
        while self.next_commit in self._committed:
            self._committed.discard(self.next_commit)
            newest = self._in_flight.pop(self.next_commit)
            self.next_commit += 1
        return newest

    def reset(self) -> None:
        """Forget everything in flight (repair); ordinals keep counting up."""
        self._in_flight.clear()
        self._committed.clear()
        self.next_commit = self.next_delivery


# ---------------------------------------------------------------------------- status machine


class MachineEvent(msgspec.Struct, frozen=True):
    """An event the machine emits; the shell adds the link, remote and time."""

    type: str
    fields: dict[str, Any] = {}


class LinkMachine:
    """The link status machine (enbox-sync.md §4), with the schedule of repairs.

    States and transitions:

    - ``initializing`` -> ``live`` (:meth:`opened`) or -> ``repairing`` (:meth:`trouble`);
    - ``live`` -> ``repairing`` (:meth:`trouble`: a gap, a failed apply, an overflow);
    - ``repairing`` -> ``live`` (:meth:`repair_succeeded`), or stays ``repairing`` after the
      1st and 2nd failure (next attempt after ``repair_delays[0]``, ``[1]``...), or ->
      ``degraded_poll`` after ``len(repair_delays)`` failures in a row;
    - ``degraded_poll``: one repair every ``poll_min + random() * poll_jitter`` seconds; when
      one is due the link is ``repairing`` for that attempt; success -> ``live``, failure ->
      back to ``degraded_poll``;
    - any -> ``paused`` (:meth:`pause`, by the operator) and ``paused`` -> ``initializing``
      (:meth:`resume`). While paused nothing is due.

    Every teardown (pause, resume, :meth:`restart`) increments :attr:`generation`: a task
    started under another generation must stop (stale timers, handlers, repairs).
    Each method returns the events it caused, in order.
    """

    def __init__(
        self,
        *,
        repair_delays: Sequence[float] = (1.0, 3.0, 10.0),
        poll_min: float = 15.0,
        poll_jitter: float = 15.0,
        random: Callable[[], float],
        status: LinkStatus = "initializing",
    ) -> None:
        if not repair_delays:
            raise ValueError("repair_delays must not be empty")
        self.repair_delays = tuple(repair_delays)
        self.poll_min = poll_min
        self.poll_jitter = poll_jitter
        self._random = random
        self.status: LinkStatus = status
        self.generation = 0
        #: Consecutive failed repairs (reset by a success and by each degraded poll tick).
        self.attempts = 0
        #: When the next repair is due (None: none scheduled).
        self.next_repair_at: float | None = None
        #: Why the link is repairing (gap reason or failure), for the status view.
        self.reason: str | None = None
        self._polling = False

    # -- helpers -------------------------------------------------------------------------

    def _to(self, status: LinkStatus, out: list[MachineEvent]) -> None:
        if status == self.status:
            return
        out.append(MachineEvent("link:status-change", {"from": self.status, "to": status}))
        self.status = status
        if status == "degraded_poll":
            out.append(MachineEvent("degraded-poll:entered", {}))

    def due(self, now: float) -> bool:
        """Whether a repair should start now."""
        return (
            self.status in ("repairing", "degraded_poll")
            and self.next_repair_at is not None
            and now >= self.next_repair_at
        )

    def delay(self, now: float) -> float | None:
        """Seconds until the next repair is due (0 if due), or None if none is scheduled."""
        if self.status not in ("repairing", "degraded_poll") or self.next_repair_at is None:
            return None
        return max(0.0, self.next_repair_at - now)

    # -- transitions ---------------------------------------------------------------------

    def opened(self) -> list[MachineEvent]:
        """The link's subscriptions are open: ``initializing`` -> ``live``. Ignored in other
        states (a repair ends through :meth:`repair_succeeded`)."""
        out: list[MachineEvent] = []
        if self.status == "initializing":
            self.attempts = 0
            self.next_repair_at = None
            self.reason = None
            self._to("live", out)
        return out

    def trouble(self, now: float, reason: str) -> list[MachineEvent]:
        """A gap, a failed apply or an in-flight overflow: repair now.

        From ``initializing``/``live`` the link goes ``repairing`` with a repair due at
        ``now``; while already repairing or polling nothing changes (the scheduled repair
        covers it); ignored while paused.
        """
        out: list[MachineEvent] = []
        if self.status in ("initializing", "live"):
            self.attempts = 0
            self.reason = reason
            self.next_repair_at = now
            self._to("repairing", out)
        return out

    def repair_started(self, now: float) -> list[MachineEvent]:
        """A due repair begins (the shell checked :meth:`due`). In ``degraded_poll`` the
        attempt count restarts and the link is ``repairing`` for this one attempt."""
        out: list[MachineEvent] = []
        if self.status == "degraded_poll":
            self._polling = True
            self.attempts = 0
            self._to("repairing", out)
        self.next_repair_at = None
        out.append(MachineEvent("repair:started", {"attempt": self.attempts + 1}))
        return out

    def repair_succeeded(self) -> list[MachineEvent]:
        """The repair converged: ``live``, attempts reset."""
        out: list[MachineEvent] = []
        if self.status != "repairing":
            return out
        self.attempts = 0
        self.next_repair_at = None
        self.reason = None
        self._polling = False
        out.append(MachineEvent("repair:completed", {}))
        self._to("live", out)
        return out

    def repair_failed(self, now: float, error: str) -> list[MachineEvent]:
        """A repair failed: schedule the next attempt (1 s, 3 s, 10 s), or degrade to one
        attempt every 15-30 s after the last delay was used (and after every failed poll)."""
        out: list[MachineEvent] = []
        if self.status != "repairing":
            return out
        self.attempts += 1
        out.append(MachineEvent("repair:failed", {"attempt": self.attempts, "error": error[:500]}))
        if self._polling or self.attempts >= len(self.repair_delays):
            self._polling = False
            self.next_repair_at = now + self.poll_min + self._random() * self.poll_jitter
            self._to("degraded_poll", out)
        else:
            self.next_repair_at = now + self.repair_delays[self.attempts - 1]
        return out

    def pause(self) -> list[MachineEvent]:
        """The operator paused the link: nothing runs until :meth:`resume`."""
        out: list[MachineEvent] = []
        if self.status != "paused":
            self.generation += 1
            self.next_repair_at = None
            self._polling = False
            self._to("paused", out)
        return out

    def resume(self) -> list[MachineEvent]:
        """The operator resumed the link: start over from ``initializing``."""
        out: list[MachineEvent] = []
        if self.status == "paused":
            self.generation += 1
            self.attempts = 0
            self.reason = None
            self._to("initializing", out)
        return out

    def restart(self) -> list[MachineEvent]:
        """Tear down and start over (config reload of the same link, shutdown): every task of
        the old generation stops. A paused link stays paused."""
        self.generation += 1
        out: list[MachineEvent] = []
        if self.status != "paused":
            self.attempts = 0
            self.next_repair_at = None
            self._polling = False
            self._to("initializing", out)
        return out


# ---------------------------------------------------------------------------------- outcomes

OutcomeKind = Literal["succeeded", "permanent", "transient"]

#: 4xx answers that a retry may cure: timeout, too early, rate limited.
_TRANSIENT_4XX: Final = frozenset((408, 425, 429))


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one push request came to. ``retry_after`` (seconds) only for transient ones that
    named it; ``detail`` is the remote's error (bounded) or the local failure."""

    kind: OutcomeKind
    status: int | None = None
    retry_after: float | None = None
    detail: str = ""


def parse_retry_after(value: str | None, now: float, *, limit: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date), at most
    ``limit``; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(int(text[:12])), limit)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, min(when.timestamp() - now, limit))


def classify_response(
    status: int,
    *,
    detail: str = "",
    retry_after: str | None = None,
    now: float = 0.0,
    max_retry_after: float = 60.0,
) -> Outcome:
    """Classify a push answer (enbox-sync.md §7).

    - 2xx: succeeded (a producer duplicate is a 204: "already there" is a success);
    - 408, 425, 429 and 5xx: transient, honouring ``Retry-After`` (at most
      ``max_retry_after``);
    - every other status (400, 401, 403, 404 after the create failed, 409, 410, 413, ...):
      permanent: the same request fails the same way until someone fixes something.
    """
    detail = detail[:1000]
    if 200 <= status <= 299:
        return Outcome(kind="succeeded", status=status)
    if status in _TRANSIENT_4XX or 500 <= status <= 599:
        wait = parse_retry_after(retry_after, now, limit=max_retry_after)
        return Outcome(kind="transient", status=status, retry_after=wait, detail=detail)
    return Outcome(kind="permanent", status=status, detail=detail)


def classify_failure(error: str) -> Outcome:
    """A request that got no answer (timeout, refused, reset): transient."""
    return Outcome(kind="transient", detail=error[:1000])


def retry_delay(attempt: int, delays: Sequence[float], retry_after: float | None) -> float | None:
    """Delay before retry number ``attempt`` (1-based) of a transient failure, or None when
    the schedule is exhausted (then the link reconciles). A ``Retry-After`` lengthens the
    scheduled delay, never shortens it."""
    if attempt < 1 or attempt > len(delays):
        return None
    delay = delays[attempt - 1]
    if retry_after is not None and math.isfinite(retry_after):
        delay = max(delay, retry_after)
    return delay


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A push the remote refused permanently: never retried until the operator asks.

    ``kind`` is ``stream`` (``key`` = stream path, ``item`` = the local offset the refused
    batch starts at: the stream's push is parked there, later messages wait so that order
    holds) or ``room`` (``key`` = room, ``item`` = message id: only that message is left out).
    """

    id: str
    link: str
    kind: Literal["stream", "room"]
    key: str
    item: str
    status: int
    error: str
    at: float
