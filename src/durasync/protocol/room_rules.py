"""The rules that bound what one room member can do, as pure functions and budgets.

docs/protocol.md states them; :class:`~durasync.protocol.room_server.ServerRoomSession`
applies them to every frame, and the rooms layer uses :func:`room_name_problem` for its HTTP
views and :func:`id_owner` for its dedupe window. Nothing here reads a clock: the budgets take
``now`` (seconds of any monotonic clock) as an argument.

- names: :func:`room_name_problem`, :func:`client_problem`;
- id namespaces: :func:`id_owner`, :func:`namespace_problem`;
- the counter ceiling: :func:`message_counters_max`, :func:`counter_problem`;
- the frame budget (:class:`RateLimiter`) and the answer budget (:class:`ByteBudget`).
"""

from __future__ import annotations

import re
from typing import Final

from msgspec import UNSET

from durasync.crdt.messages import META_OTYPES, Message

__all__ = [
    "ByteBudget",
    "RateLimiter",
    "client_problem",
    "counter_problem",
    "id_owner",
    "message_counters_max",
    "namespace_problem",
    "room_name_problem",
]

_ROOM_RE: Final = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_CLIENT_RE: Final = re.compile(r"[A-Za-z0-9._~:@-]{1,128}")


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


def client_problem(client: str) -> str | None:
    """Why ``client`` cannot be a member's session id (``client=``), or None if it can."""
    if not _CLIENT_RE.fullmatch(client):
        return "client= is required: 1-128 of [A-Za-z0-9._~:@-]"
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


def counter_problem(msg: Message, high: int, step: int) -> str | None:
    """Why ``msg`` climbs too far above the room's highest counter ``high``, or None.

    Lamport times, vector clock entries and text ``seq`` grow by "highest seen plus one", and
    validation caps every integer at ``MAX_SAFE_INTEGER``. Without a ceiling one message with a
    counter at the cap would make every later honest message exceed it (refused), so writes to
    the room would stop for good. A message is therefore accepted only if its counters exceed
    the room's highest counter so far by at most ``step``: the room's counters rise by at most
    ``step`` per sequenced message, and reaching the cap takes ``MAX_SAFE_INTEGER / step``
    messages. Honest clients stay within the step (each of their counters is at most one more
    than what they have seen, plus their own unsent messages).
    """
    top = message_counters_max(msg)
    if top <= high + step:
        return None
    return (
        f"msg: a counter (lt, clock or seq) of {top} is more than {step} beyond the "
        f"room's highest ({high})"
    )


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
