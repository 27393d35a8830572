"""Offset encoding: order-preserving, round-trips, rejects junk (DS §4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durasync.store import BadOffset
from durasync.store.offsets import MAX_FIELD, ZERO_OFFSET, decode_offset, encode_offset, is_offset

fields = st.integers(min_value=0, max_value=MAX_FIELD)


@given(fields, fields)
def test_round_trip(index: int, byte_pos: int) -> None:
    text = encode_offset(index, byte_pos)
    assert decode_offset(text) == (index, byte_pos)
    assert len(text) == 33 and is_offset(text)
    assert text not in ("-1", "now")
    assert not set(text) & set(",&=?/")


@given(fields, fields, fields, fields)
def test_lexicographic_order_is_numeric_order(a: int, b: int, c: int, d: int) -> None:
    assert (encode_offset(a, b) < encode_offset(c, d)) == ((a, b) < (c, d))


@given(st.text(max_size=40))
def test_decode_rejects_everything_not_an_offset(text: str) -> None:
    if is_offset(text):
        assert encode_offset(*decode_offset(text)) == text
    else:
        with pytest.raises(BadOffset):
            decode_offset(text)


@pytest.mark.parametrize(
    "bad",
    [
        "-1",
        "now",
        "",
        "0_0",
        ZERO_OFFSET + "0",
        ZERO_OFFSET.replace("_", "-"),
        "٠" * 16 + "_" + "0" * 16,
    ],
)
def test_decode_rejects(bad: str) -> None:
    with pytest.raises(BadOffset):
        decode_offset(bad)


def test_encode_range() -> None:
    assert encode_offset(0, 0) == ZERO_OFFSET
    with pytest.raises(ValueError):
        encode_offset(-1, 0)
    with pytest.raises(ValueError):
        encode_offset(0, MAX_FIELD + 1)
