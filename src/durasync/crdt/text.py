"""Span-based RGA/YATA text CRDT (one :class:`TextDoc` per text property).

Implements the text model of vuer-rtc (shared/reference/vuer-rtc-semantics.md §4):

- Every character has the implicit id ``"agent:n"``; an insert op of ``k`` characters with id
  ``"agent:s"`` covers ``agent:s .. agent:(s+k-1)``. Each agent's ids are contiguous.
- An insert names only its *left origin* (``anchor``: the id of the character immediately to its
  left at creation time, or ``None`` for document start), a Lamport ``seq`` (per rope: the largest
  seq seen plus one) and a wall-clock ``ts`` used only as a tie-break.
- Wire forms (compact names): ``text.insert {id, value: [anchor, content], seq, ts}``,
  ``text.delete {rm: [[charId, len], ...]}``, ``text.replace {rm, id, value, seq, ts}``
  (delete then insert, anchor captured *before* the delete).

Guarantees:

- Inserts are idempotent by id; deletes only set tombstones and are idempotent; ids that are not
  present are ignored (reference §4).
- Under causal delivery (every insert's anchor and every deleted id arrives before the op that
  names it) all replicas that applied the same set of ops hold the same visible text, equal to
  the reference port's text for the same ops. durasync replicas fold confirmed messages in one
  canonical order (server sequence, else ``(lamportTime, client)``); both orders are linear
  extensions of happens-before, so the fold is causal and the text is identical everywhere.
- An unknown anchor is treated as document start, exactly like the reference (this is where
  non-causal delivery would diverge; durasync never feeds ops non-causally).

Errors: malformed ids, negative lengths or positions out of range raise :class:`TextOpError`
(a ``ValueError``) naming the offending field; the document is unchanged when that happens.

This module is pure: no I/O, no clock reads (``ts`` is always an argument).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

__all__ = [
    "DeleteEdit",
    "InsertEdit",
    "ReplaceEdit",
    "TextDoc",
    "TextOpError",
    "format_id",
    "parse_id",
]


class TextOpError(ValueError):
    """A text op or local edit is malformed; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def parse_id(char_id: str, field: str = "id") -> tuple[str, int]:
    """Split ``"agent:n"`` into ``(agent, n)``; the agent may itself contain ``:``.

    Raises :class:`TextOpError` naming ``field`` when the id is not a string of that shape or
    ``n`` is not a non-negative decimal integer.
    """
    raise NotImplementedError


def format_id(agent: str, n: int) -> str:
    """The char id ``"agent:n"``."""
    return f"{agent}:{n}"


class InsertEdit(msgspec.Struct, frozen=True):
    """The wire fields of a ``text.insert`` produced by a local edit."""

    id: str
    anchor: str | None
    content: str
    seq: int
    ts: float

    @property
    def value(self) -> list[str | None]:
        """The wire ``value``: ``[anchor, content]``."""
        return [self.anchor, self.content]


class DeleteEdit(msgspec.Struct, frozen=True):
    """The wire fields of a ``text.delete``: ``rm`` = ``[(charId, length), ...]``."""

    rm: list[tuple[str, int]]


class ReplaceEdit(msgspec.Struct, frozen=True):
    """The wire fields of a ``text.replace``: ``rm`` plus the insert (``None`` if no text)."""

    rm: list[tuple[str, int]]
    insert: InsertEdit | None


class TextDoc:
    """One replicated text: a rope of spans with tombstones plus a per-agent id index.

    ``position -> span`` and ``id -> span`` are O(log n) (blocked rope with cached prefix sums
    and a bisect index per agent). The *local agent* (``agent``) is the author of local edits;
    ``clock`` is the next unused id number of that agent; ``max_seq`` is the largest Lamport
    seq seen.
    """

    def __init__(self, agent: str = "") -> None:
        raise NotImplementedError

    # -- properties -------------------------------------------------------------------------

    @property
    def agent(self) -> str:
        """The local agent (author of local edits)."""
        raise NotImplementedError

    @property
    def clock(self) -> int:
        """Next unused id number of the local agent."""
        raise NotImplementedError

    @property
    def max_seq(self) -> int:
        """Largest Lamport seq applied so far (0 for an empty doc)."""
        raise NotImplementedError

    # -- remote (wire) ops --------------------------------------------------------------------

    def apply_insert(self, id: str, anchor: str | None, content: str, seq: int, ts: float) -> bool:
        """Integrate a ``text.insert``; returns False if ``id`` was already present (no-op).

        Raises :class:`TextOpError` for a malformed id/anchor or negative seq.
        """
        raise NotImplementedError

    def apply_delete(self, rm: Iterable[Sequence[Any]]) -> int:
        """Tombstone every char covered by ``rm`` = ``[(charId, length), ...]``.

        Unknown ids are ignored; already deleted chars stay deleted. Returns how many visible
        chars were tombstoned. Raises :class:`TextOpError` for a malformed entry (before any
        change is made).
        """
        raise NotImplementedError

    def apply_replace(
        self,
        rm: Iterable[Sequence[Any]],
        id: str | None,
        anchor: str | None,
        content: str,
        *,
        seq: int,
        ts: float,
    ) -> None:
        """``text.replace``: :meth:`apply_delete` then :meth:`apply_insert` (if content)."""
        raise NotImplementedError

    # -- local position-based edits ---------------------------------------------------------

    def local_insert(
        self, position: int, content: str, ts: float, agent: str | None = None
    ) -> InsertEdit:
        """Insert ``content`` before visible ``position`` as ``agent`` (default: local agent).

        Applies the edit and returns its wire form. Continuous typing at the end of the last
        local insert reuses the last inserted char as anchor (reference §4 "client niceties").
        Raises :class:`TextOpError` if ``position`` is outside ``0..len(self)``.
        """
        raise NotImplementedError

    def local_delete(self, position: int, length: int) -> DeleteEdit:
        """Delete ``length`` visible chars from ``position``; returns the merged ``rm`` ranges.

        Raises :class:`TextOpError` if the range is outside ``0..len(self)``.
        """
        raise NotImplementedError

    def local_replace(
        self, position: int, length: int, content: str, ts: float, agent: str | None = None
    ) -> ReplaceEdit:
        """Replace ``length`` chars at ``position`` by ``content``: anchor captured before delete.

        Raises :class:`TextOpError` if the range is outside ``0..len(self)``.
        """
        raise NotImplementedError

    # -- reading ----------------------------------------------------------------------------

    def text(self) -> str:
        """The visible string."""
        raise NotImplementedError

    def __len__(self) -> int:
        """Number of visible chars (O(1))."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.text()

    def __contains__(self, char_id: object) -> bool:
        """Whether the char id ``"agent:n"`` has been integrated (deleted or not)."""
        raise NotImplementedError

    # -- snapshots --------------------------------------------------------------------------

    def snapshot(self) -> list[Any]:
        """Lossless raw form ``[agent, clock, maxSeq, [[id, content, anchor, seq, ts, deleted]]]``.

        Items are in document order, tombstones included (the reference's 5-field items plus a
        ``deleted`` flag). JSON/msgpack-serialisable. ``from_snapshot(snapshot())`` behaves
        exactly like the original for every later op.
        """
        raise NotImplementedError

    @classmethod
    def from_snapshot(cls, raw: Sequence[Any], agent: str | None = None) -> TextDoc:
        """Rebuild from :meth:`snapshot` (or the reference's 5-field raw form).

        ``agent`` switches the local agent (its clock is recomputed from its ids). Raises
        :class:`TextOpError` for a malformed snapshot.
        """
        raise NotImplementedError

    @classmethod
    def initial(cls, agent: str, value: str, ts: float) -> TextDoc:
        """``text.init``: a new doc of ``agent``; a non-empty ``value`` is inserted at position 0
        as ``agent:0`` with seq 1 and the given ``ts`` (the reference uses its wall clock here;
        durasync passes the message timestamp so every replica builds the same doc)."""
        raise NotImplementedError

    def copy(self) -> TextDoc:
        """An independent deep copy (O(number of spans))."""
        raise NotImplementedError
