"""Offset encoding shared by every backend (pure, no I/O).

An offset names a message boundary of a stream: ``<index>_<byte>`` where
``index`` is the number of messages before the boundary and ``byte`` the
number of payload bytes before it, each as 16 zero-padded decimal digits
(``0000000000000003_0000000000000042``). This is the layout of the reference
server, so offsets a client learnt from it look familiar, and the conformance
suite's literal ``0000000000000000_0000000000000000`` is our start offset.

Why this shape (Durable Streams §4):

- fixed width, so byte-wise lexicographic order equals numeric order;
- digits and ``_`` only: URL-safe, no ``, & = ? /``, and never ``-1``/``now``;
- the index alone orders offsets; the byte part lets a store reject an offset
  that is not a boundary of *this* stream (400 instead of a wrong read) and
  lets a fork map a byte sub-offset onto a position.

A fork shares its source's offset space (§6): its own messages continue from
the fork point's ``(index, byte)``.
"""

from __future__ import annotations

import re

from durasync.store.errors import BadOffset

#: Largest value either field can hold (16 decimal digits).
MAX_FIELD = 10**16 - 1

_OFFSET_RE = re.compile(r"[0-9]{16}_[0-9]{16}")

#: ``<index>_<byte>`` as a %-format: the one formatter of offsets (hot loops use it directly,
#: with values they know are in range).
OFFSET_FMT = "%016d_%016d"

ZERO_OFFSET = OFFSET_FMT % (0, 0)


def encode_offset(index: int, byte_pos: int) -> str:
    """Encode a boundary. Raises ValueError for values outside 0..MAX_FIELD."""
    if not (0 <= index <= MAX_FIELD and 0 <= byte_pos <= MAX_FIELD):
        raise ValueError(f"offset fields out of range: {index}, {byte_pos}")
    return OFFSET_FMT % (index, byte_pos)


def decode_offset(text: str) -> tuple[int, int]:
    """Decode ``<index>_<byte>``.

    Raises:
        BadOffset: not exactly two 16-digit decimal fields joined by ``_``.
    """
    if len(text) != 33 or _OFFSET_RE.fullmatch(text) is None:
        raise BadOffset(f"malformed offset: {text[:64]!r}")
    return int(text[:16]), int(text[17:])


def is_offset(text: str) -> bool:
    """True iff ``text`` is a well-formed offset (not necessarily a boundary)."""
    return len(text) == 33 and _OFFSET_RE.fullmatch(text) is not None
