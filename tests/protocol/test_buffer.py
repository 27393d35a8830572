from __future__ import annotations

from typing import Literal

import pytest

from durasync.protocol import BufferFull, BufferLimits, OutgoingBuffer, Overflow


def test_fifo_and_byte_accounting() -> None:
    buf = OutgoingBuffer()
    buf.push("hé", 0)  # 3 UTF-8 bytes
    buf.push(b"\x00\x01", 0)
    assert len(buf) == 2 and buf.bytes == 5
    assert buf.peek() == "hé"
    assert buf.pop() == "hé"
    assert buf.pop() == b"\x00\x01"
    assert buf.bytes == 0
    with pytest.raises(IndexError):
        buf.pop()


def test_reject_on_count_keeps_state() -> None:
    buf = OutgoingBuffer(BufferLimits(max_messages=2))
    buf.push("a", 0)
    buf.push("b", 0)
    with pytest.raises(BufferFull) as ei:
        buf.push("c", 0)
    assert ei.value.reason == "count"
    assert buf.clear() == ["a", "b"]
    assert buf.events_received() == []


def test_reject_on_bytes() -> None:
    buf = OutgoingBuffer(BufferLimits(max_bytes=4))
    buf.push("abc", 0)
    with pytest.raises(BufferFull) as ei:
        buf.push("de", 0)
    assert ei.value.reason == "bytes"
    assert len(buf) == 1


def test_single_message_larger_than_budget_is_refused_under_any_policy() -> None:
    policies: list[Literal["reject", "drop_oldest"]] = ["reject", "drop_oldest"]
    for policy in policies:
        buf = OutgoingBuffer(BufferLimits(max_bytes=4, policy=policy))
        buf.push("ab", 0)
        with pytest.raises(BufferFull) as ei:
            buf.push("abcde", 0)
        assert ei.value.reason == "too_large"
        assert buf.clear() == ["ab"]


def test_drop_oldest_evicts_and_reports_once() -> None:
    buf = OutgoingBuffer(BufferLimits(max_messages=3, policy="drop_oldest"))
    for m in "abc":
        buf.push(m, 0)
    buf.push("d", 1)
    assert buf.events_received() == [Overflow(("a",), "count")]
    assert buf.events_received() == []  # drained
    assert buf.clear() == ["b", "c", "d"]


def test_drop_oldest_by_bytes_evicts_as_many_as_needed() -> None:
    buf = OutgoingBuffer(BufferLimits(max_bytes=6, policy="drop_oldest"))
    buf.push("aa", 0)
    buf.push("bb", 0)
    buf.push("cc", 0)
    buf.push("dddd", 0)
    assert buf.events_received() == [Overflow(("aa", "bb"), "bytes")]
    assert buf.clear() == ["cc", "dddd"]


def test_age_expiry_with_injected_clock() -> None:
    buf = OutgoingBuffer(BufferLimits(max_age=10))
    buf.push("old", 0)
    buf.push("new", 5)
    assert buf.next_expiry() == 10
    buf.expire(9.999)
    assert len(buf) == 2
    buf.expire(10)
    assert buf.events_received() == [Overflow(("old",), "age")]
    assert buf.next_expiry() == 15
    buf.expire(100)
    assert buf.events_received() == [Overflow(("new",), "age")]
    assert buf.next_expiry() is None and buf.bytes == 0


def test_no_ageing_when_disabled() -> None:
    buf = OutgoingBuffer(BufferLimits(max_age=None))
    buf.push("x", 0)
    buf.expire(1e9)
    assert len(buf) == 1 and buf.next_expiry() is None


def test_push_front_restores_a_popped_message() -> None:
    buf = OutgoingBuffer(BufferLimits(max_messages=2))
    buf.push("a", 1)
    buf.push("b", 2)
    t = buf.oldest_enqueued_at()
    m = buf.pop()
    buf.push_front(m, t or 0)
    assert buf.oldest_enqueued_at() == 1
    assert buf.clear() == ["a", "b"]


@pytest.mark.parametrize(
    "kwargs",
    [{"max_messages": 0}, {"max_bytes": 0}, {"max_age": 0}, {"policy": "block"}],
)
def test_limits_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BufferLimits(**kwargs)  # type: ignore[arg-type]
