from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from durasync.protocol import Backoff, BackoffPolicy


def seq_rng(values: list[float]) -> Callable[[], float]:
    it = iter(values)
    return lambda: next(it)


def test_default_caps_double_from_one_second_to_thirty() -> None:
    b = Backoff()
    assert [b.cap(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert b.cap(10_000) == 30  # no overflow for huge attempt counts


def test_full_jitter_spans_floor_to_cap() -> None:
    # r=0 gives the floor, r->1 gives (almost) the cap.
    b = Backoff(BackoffPolicy(min_delay=0.1), rng=seq_rng([0.0, 0.999999, 0.5]))
    assert b.next_delay() == pytest.approx(0.1)
    assert b.next_delay() == pytest.approx(2.0, abs=1e-5)  # attempt 1: cap 2
    assert b.next_delay() == pytest.approx(0.1 + 0.5 * (4 - 0.1))


def test_delays_are_uniform_over_the_window() -> None:
    rng = random.Random(42)
    b = Backoff(BackoffPolicy(initial_delay=1, max_delay=1, min_delay=0), rng=rng.random)
    delays = [b.next_delay() for _ in range(4000)]
    assert all(d is not None and 0 <= d < 1 for d in delays)
    # Each tenth of the window gets ~10% (full jitter, not clustered).
    buckets = [0] * 10
    for d in delays:
        assert d is not None
        buckets[int(d * 10)] += 1
    assert min(buckets) > 300 and max(buckets) < 500


def test_floor_never_exceeds_cap() -> None:
    b = Backoff(BackoffPolicy(initial_delay=0.05, max_delay=0.05, min_delay=1), rng=lambda: 0.0)
    assert b.next_delay() == pytest.approx(0.05)


def test_max_attempts_gives_up() -> None:
    b = Backoff(BackoffPolicy(max_attempts=3), rng=lambda: 0.5)
    assert [b.next_delay() is not None for _ in range(3)] == [True, True, True]
    assert b.next_delay() is None
    assert b.next_delay() is None
    b.reset()
    assert b.next_delay() is not None


def test_zero_max_attempts_is_unlimited() -> None:
    b = Backoff(BackoffPolicy(max_attempts=0), rng=lambda: 0.5)
    assert all(b.next_delay() is not None for _ in range(1000))


def test_quick_drop_after_open_keeps_growing_and_keeps_floor() -> None:
    """A server that accepts then drops at once must not cause a hot loop."""
    b = Backoff(BackoffPolicy(stable_after=5, min_delay=0.2), rng=lambda: 0.0)
    now = 0.0
    caps = []
    for _ in range(6):
        d = b.next_delay()
        assert d is not None and d >= 0.2  # the floor holds even with r = 0
        caps.append(b.cap(b.attempts - 1))
        now += d
        b.connection_opened(now)
        now += 0.01  # dropped right away
        b.connection_lost(now)
    assert caps == [1, 2, 4, 8, 16, 30]


def test_stable_connection_resets_attempts() -> None:
    b = Backoff(BackoffPolicy(stable_after=5), rng=lambda: 0.5)
    for _ in range(4):
        b.next_delay()
    b.connection_opened(100.0)
    b.connection_lost(105.0)
    assert b.attempts == 0
    assert b.next_delay() == pytest.approx(0.1 + 0.5 * 0.9)


def test_bad_random_source_is_rejected() -> None:
    b = Backoff(rng=lambda: 1.0)
    with pytest.raises(ValueError):
        b.next_delay()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_delay": 0},
        {"initial_delay": 5, "max_delay": 1},
        {"multiplier": 0.5},
        {"min_delay": -1},
        {"max_attempts": -1},
    ],
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)  # type: ignore[arg-type]


def test_plus_minus_jitter_schedule() -> None:
    """``jitter=0.2``: cap ± 20 % (1, 2, 4, ... 30 s caps), never below the floor."""
    policy = BackoffPolicy(initial_delay=1.0, max_delay=30.0, jitter=0.2, min_delay=0.0)
    lows = Backoff(policy, rng=lambda: 0.0)
    highs = Backoff(policy, rng=lambda: 0.999999)
    mids = Backoff(policy, rng=lambda: 0.5)
    for cap in (1, 2, 4, 8, 16, 30, 30):
        assert lows.next_delay() == pytest.approx(cap * 0.8)
        assert highs.next_delay() == pytest.approx(cap * 1.2, rel=1e-5)
        assert mids.next_delay() == pytest.approx(cap)
    with pytest.raises(ValueError):
        BackoffPolicy(jitter=1.0)
