"""Reconnect delays: exponential backoff with full jitter and a floor.

Theory of operation. Attempt ``n`` (0-based, counted since the last *stable*
connection) gets a cap ``min(max_delay, initial_delay * multiplier**n)`` and
a delay drawn uniformly from ``[min(min_delay, cap), cap]`` ("full jitter",
AWS architecture blog 2015, with a floor). Full jitter spreads a crowd of
clients that lost the same server over the whole window instead of letting
them retry in lock-step.

Two rules prevent a hot reconnect loop against a server that accepts and
then immediately drops connections (the `websockets` iterator resets its
backoff on every successful open, peers.md §5.2):

1. every delay is at least ``min_delay`` (the floor), and
2. the attempt counter is reset only when a connection stayed open for at
   least ``stable_after`` seconds; a connection that opens and drops quickly
   counts as a failed attempt, so the window keeps growing.

With ``jitter`` set (a fraction ``j``), the delay is drawn uniformly from
``[cap * (1 - j), cap * (1 + j)]`` instead (the "±20 %" schedule of rondevu's
durable connections, used by :mod:`durasync.p2p`), still never below the floor.

No clock and no randomness are read here: ``now`` is an argument and the
random source is injected (a callable returning floats in ``[0, 1)``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "BackoffPolicy"]


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Tunables of the reconnect schedule (seconds).

    Attributes:
        initial_delay: cap of the first retry window.
        max_delay: largest cap.
        multiplier: growth of the cap per failed attempt.
        min_delay: floor applied to every delay (hot-loop guard).
        max_attempts: give up after this many consecutive failed attempts;
            0 means never give up.
        stable_after: a connection that stayed open this long resets the
            attempt counter; shorter-lived connections count as failures.
        jitter: None for full jitter; a fraction in [0, 1) for a delay of
            ``cap`` ± ``jitter * cap`` (uniform).
    """

    initial_delay: float = 1.0
    max_delay: float = 30.0
    multiplier: float = 2.0
    min_delay: float = 0.1
    max_attempts: int = 0
    stable_after: float = 5.0
    jitter: float | None = None

    def __post_init__(self) -> None:
        if self.initial_delay <= 0 or self.max_delay < self.initial_delay:
            raise ValueError("need 0 < initial_delay <= max_delay")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")
        if self.min_delay < 0 or self.max_attempts < 0 or self.stable_after < 0:
            raise ValueError("min_delay, max_attempts and stable_after must be >= 0")
        if self.jitter is not None and not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")


class Backoff:
    """The reconnect schedule of one client (sans-I/O).

    Call :meth:`next_delay` after every failed attempt or lost connection;
    it returns the seconds to wait, or ``None`` when ``max_attempts`` is
    exhausted (the caller must then stop: state ``failed``). Call
    :meth:`connection_opened` when a connection opens and
    :meth:`connection_lost` when it ends.
    """

    def __init__(
        self, policy: BackoffPolicy | None = None, *, rng: Callable[[], float] = random.random
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self._rng = rng
        self.attempts = 0
        """Consecutive failed attempts since the last stable connection."""
        self._opened_at: float | None = None

    def cap(self, attempt: int) -> float:
        """Upper bound of the jitter window for 0-based ``attempt``."""
        p = self.policy
        # Compute in a loop-free, overflow-safe way: stop growing once capped.
        cap = p.initial_delay
        for _ in range(attempt):
            cap *= p.multiplier
            if cap >= p.max_delay:
                return p.max_delay
        return min(cap, p.max_delay)

    def next_delay(self) -> float | None:
        """Delay before the next attempt, or ``None`` to give up.

        Each call counts one failed attempt.
        """
        p = self.policy
        if p.max_attempts and self.attempts >= p.max_attempts:
            return None
        cap = self.cap(self.attempts)
        self.attempts += 1
        r = self._rng()
        if not 0.0 <= r < 1.0:
            raise ValueError(f"random source returned {r!r}, outside [0, 1)")
        if p.jitter is not None:
            return max(p.min_delay, cap * (1 - p.jitter + 2 * p.jitter * r))
        low = min(p.min_delay, cap)
        return low + r * (cap - low)

    def connection_opened(self, now: float) -> None:
        """Record that a connection opened at ``now`` (not yet a reset)."""
        self._opened_at = now

    def connection_lost(self, now: float) -> None:
        """Record that the open connection ended at ``now``.

        Resets the attempt counter only if it lived ``stable_after`` seconds.
        """
        if self._opened_at is not None and now - self._opened_at >= self.policy.stable_after:
            self.attempts = 0
        self._opened_at = None

    def reset(self) -> None:
        """Forget all failures (used on an explicit user ``connect()``)."""
        self.attempts = 0
        self._opened_at = None
