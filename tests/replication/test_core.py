"""Pure parts of replication, without sockets: tokens, checkpoints, ordinals, the status
machine (injected clock and random source), outcome classification."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durasync.replication.core import (
    Checkpoint,
    InFlightOverflow,
    LinkMachine,
    OrdinalTracker,
    Token,
    TokenDomainError,
    classify_failure,
    classify_response,
    compare_positions,
    parse_retry_after,
    retry_delay,
    same_domain,
)


def tok(position: int, *, stream: str = "s", epoch: str = "e") -> Token:
    return Token(stream=stream, epoch=epoch, position=position)


# -- token domains ---------------------------------------------------------------------------


def test_tokens_compare_only_within_one_stream_and_epoch() -> None:
    assert compare_positions(tok(3), tok(5)) == -1
    assert compare_positions(tok(5), tok(5)) == 0
    assert compare_positions(tok(9), tok(5)) == 1
    assert same_domain(tok(1), tok(2))
    assert not same_domain(tok(1), tok(1, epoch="other"))
    with pytest.raises(TokenDomainError):
        compare_positions(tok(1), tok(2, epoch="e2"))
    with pytest.raises(TokenDomainError):
        compare_positions(tok(1), tok(2, stream="t"))


def test_checkpoint_refuses_tokens_of_another_domain_and_never_moves_back() -> None:
    cp = Checkpoint()
    assert cp.accepts(tok(1, epoch="anything"))  # no baseline yet
    assert cp.note_received(tok(5))
    assert not cp.note_received(tok(3))  # received only rises
    assert cp.commit(tok(2)) and cp.applied == tok(2) and cp.received == tok(5)
    assert not cp.commit(tok(1))
    assert not cp.accepts(tok(9, epoch="new"))
    with pytest.raises(TokenDomainError):
        cp.commit(tok(9, epoch="new"))
    with pytest.raises(TokenDomainError):
        cp.note_received(tok(9, stream="other"))
    cp.reset(tok(0, epoch="new"))
    assert cp.accepts(tok(1, epoch="new")) and not cp.accepts(tok(1))
    assert cp.commit(tok(7, epoch="new")) and cp.received == tok(7, epoch="new")


# -- ordinals --------------------------------------------------------------------------------


def test_an_entry_completing_early_never_moves_the_checkpoint_past_one_in_flight() -> None:
    tracker: OrdinalTracker[Token] = OrdinalTracker(limit=10)
    ordinals = [tracker.deliver(tok(p)) for p in (10, 11, 12, 13)]
    assert tracker.commit(ordinals[2]) is None  # 12 done, 10 and 11 still in flight
    assert tracker.commit(ordinals[3]) is None
    assert tracker.commit(ordinals[0]) == tok(10)  # only 10 drains
    assert tracker.commit(ordinals[1]) == tok(13)  # 11 completes the run up to 13
    assert tracker.in_flight == 0
    assert tracker.commit(ordinals[1]) is None  # idempotent


def test_ordinal_tracker_is_bounded_and_reset_forgets_in_flight() -> None:
    tracker: OrdinalTracker[int] = OrdinalTracker(limit=3)
    for i in range(3):
        tracker.deliver(i)
    with pytest.raises(InFlightOverflow):
        tracker.deliver(3)
    assert tracker.in_flight == 3
    tracker.reset()
    assert tracker.in_flight == 0
    o = tracker.deliver(99)
    assert tracker.commit(o) == 99


@settings(max_examples=200, deadline=None)
@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=2**31))
def test_checkpoint_is_always_the_end_of_the_committed_prefix(order: list[int], seed: int) -> None:
    """Random completion orders: after each commit the checkpoint is exactly the newest token
    whose ordinal and every earlier one are committed."""
    tracker: OrdinalTracker[int] = OrdinalTracker(limit=30)
    ordinals = [tracker.deliver(p) for p in range(30)]
    committed: set[int] = set()
    checkpoint = -1
    for i in order:
        got = tracker.commit(ordinals[i])
        committed.add(i)
        prefix = -1
        while prefix + 1 in committed:
            prefix += 1
        if got is not None:
            assert got > checkpoint
            checkpoint = got
        assert checkpoint == prefix
    assert checkpoint == 29


# -- status machine ---------------------------------------------------------------------------


class FakeRandom:
    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.values[(self.calls - 1) % len(self.values)]


def types(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.type for e in events]


def test_repair_schedule_then_degraded_poll_with_jitter_until_success() -> None:
    rnd = FakeRandom([0.5, 0.0, 1.0])
    m = LinkMachine(random=rnd)
    assert types(m.opened()) == ["link:status-change"] and m.status == "live"
    assert types(m.trouble(100.0, "token_too_old")) == ["link:status-change"]
    assert m.status == "repairing" and m.due(100.0) and m.reason == "token_too_old"
    # three failures: 1 s, 3 s, then degraded
    assert types(m.repair_started(100.0)) == ["repair:started"]
    assert not m.due(100.0)
    assert types(m.repair_failed(100.5, "refused")) == ["repair:failed"]
    assert m.status == "repairing" and not m.due(101.4) and m.due(101.5)
    m.repair_started(101.5)
    m.repair_failed(102.0, "refused")
    assert m.delay(102.0) == pytest.approx(3.0)
    m.repair_started(105.0)
    ev = m.repair_failed(106.0, "refused")
    assert types(ev) == ["repair:failed", "link:status-change", "degraded-poll:entered"]
    assert m.status == "degraded_poll"
    assert m.next_repair_at == pytest.approx(106.0 + 15.0 + 0.5 * 15.0)
    # a poll tick: repairing for one attempt; failure goes back to degraded with new jitter
    assert not m.due(120.0) and m.due(128.5)
    ev = m.repair_started(128.5)
    assert types(ev) == ["link:status-change", "repair:started"] and m.status == "repairing"
    assert ev[1].fields["attempt"] == 1
    ev = m.repair_failed(129.0, "still refused")
    assert m.status == "degraded_poll" and "degraded-poll:entered" in types(ev)
    assert m.next_repair_at == pytest.approx(129.0 + 15.0 + 0.0 * 15.0)
    m.repair_started(144.0)
    assert types(m.repair_succeeded()) == ["repair:completed", "link:status-change"]
    assert m.status == "live" and m.attempts == 0 and m.delay(1e9) is None
    assert rnd.calls == 2


def test_poll_jitter_stays_within_15_to_30_seconds() -> None:
    rng = random.Random(7)
    for _ in range(200):
        m = LinkMachine(random=rng.random)
        m.trouble(0.0, "x")
        failed_at = 0.0
        for _ in range(3):
            m.repair_started(failed_at)
            m.repair_failed(failed_at, "e")
            assert m.next_repair_at is not None
            if m.status == "repairing":
                failed_at = m.next_repair_at
        assert m.status == "degraded_poll" and m.next_repair_at is not None
        assert 15.0 <= m.next_repair_at - failed_at <= 30.0


def test_pause_really_pauses_and_resume_starts_over_with_a_new_generation() -> None:
    m = LinkMachine(random=lambda: 0.0)
    m.opened()
    g = m.generation
    m.trouble(5.0, "gap")
    assert types(m.pause()) == ["link:status-change"] and m.status == "paused"
    assert m.generation == g + 1
    assert not m.due(1e9) and m.delay(1e9) is None
    assert m.trouble(6.0, "gap") == [] and m.status == "paused"
    assert m.opened() == [] and m.status == "paused"
    assert m.pause() == []
    assert types(m.resume()) == ["link:status-change"] and m.status == "initializing"
    assert m.generation == g + 2
    m.restart()
    assert m.generation == g + 3 and m.status == "initializing"


def test_trouble_while_repairing_does_not_reschedule() -> None:
    m = LinkMachine(random=lambda: 0.0)
    m.trouble(0.0, "first")
    m.repair_started(0.0)
    m.repair_failed(0.0, "e")
    due = m.next_repair_at
    assert m.trouble(0.5, "second") == [] and m.next_repair_at == due and m.reason == "first"


# -- outcomes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "succeeded"),
        (201, "succeeded"),
        (204, "succeeded"),
        (400, "permanent"),
        (401, "permanent"),
        (403, "permanent"),
        (404, "permanent"),
        (409, "permanent"),
        (410, "permanent"),
        (413, "permanent"),
        (408, "transient"),
        (425, "transient"),
        (429, "transient"),
        (500, "transient"),
        (502, "transient"),
        (503, "transient"),
        (504, "transient"),
        (301, "permanent"),
    ],
)
def test_outcome_classification(status: int, kind: str) -> None:
    assert classify_response(status, detail="x").kind == kind


def test_retry_after_is_honoured_and_bounded() -> None:
    out = classify_response(503, retry_after="7", max_retry_after=60)
    assert out.kind == "transient" and out.retry_after == 7
    assert classify_response(429, retry_after="99999", max_retry_after=60).retry_after == 60
    assert classify_response(503, retry_after="soon").retry_after is None
    assert classify_response(403, retry_after="5").retry_after is None
    # an HTTP date, relative to the injected clock
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:30 GMT", 10.0, limit=60) == 20.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:05 GMT", 10.0, limit=60) == 0.0
    assert classify_failure("connection refused").kind == "transient"
    assert len(classify_response(400, detail="x" * 5000).detail) == 1000


def test_push_retry_schedule_then_exhausted() -> None:
    delays = (0.0, 0.25, 1.0, 2.0)
    assert [retry_delay(i, delays, None) for i in range(1, 6)] == [0.0, 0.25, 1.0, 2.0, None]
    assert retry_delay(2, delays, 5.0) == 5.0  # Retry-After lengthens
    assert retry_delay(4, delays, 0.5) == 2.0  # never shortens
    assert retry_delay(0, delays, None) is None
