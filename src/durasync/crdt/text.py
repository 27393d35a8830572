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

Representation (why it is fast in CPython):

- A *span* is a run of consecutive ids of one agent, adjacent in the document, each char anchored
  on its predecessor. Spans are split on demand (an anchor in the middle, a partial delete) and
  never merged, except that a local or remote insert that directly continues a visible span of
  the same agent (contiguous ids, anchored on the span's last char, landing right after it) is
  appended to that span ("span coalescing"), so typing creates no per-char objects. Per-char
  Lamport seq and ts are kept (``meta``) for coalesced spans, so a later split yields exactly the
  seq/ts the reference would have for that char: coalescing never changes any ordering decision.
- Spans live in a two-level blocked list (blocks of at most ``_MAX_BLOCK`` spans) with per-block
  visible counts and lazily recomputed prefix sums; position lookup is a cached-block check or a
  bisect; ``id -> span`` is a bisect in a per-agent sorted list of span starts.
- Continuous typing (position == end of the previous local insert) skips the position lookup
  entirely (reference §4 "client niceties").

Deviations from the reference port, all unobservable under causal delivery of ops it generates:

- An insert with empty content only raises ``max_seq`` (the port integrates an empty, invisible
  item that can still shift where later concurrent inserts land).
- Anchors are compared by exact char position; the port compares the *spans* holding them, which
  is the same thing because the port never merges spans (except in its lossy ``to_raw``).
- ``text.init`` uses the message ``ts`` instead of a wall-clock read (§4 notes the port's init is
  not deterministic across replicas).

This module is pure: no I/O, no clock reads (``ts`` is always an argument).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate, pairwise
from typing import Any

import msgspec

from durasync.crdt.errors import TextOpError

__all__ = [
    "DeleteEdit",
    "InsertEdit",
    "ReplaceEdit",
    "TextDoc",
    "TextOpError",
    "format_id",
    "parse_id",
]

#: Spans per block before the block is split in two. Small enough that an in-block linear scan
#: is cheap, large enough that the per-split renumbering of later blocks stays rare.
_MAX_BLOCK = 64


def parse_id(char_id: object, field: str = "id") -> tuple[str, int]:
    """Split ``"agent:n"`` into ``(agent, n)``; the agent may itself contain ``:``.

    Raises :class:`TextOpError` naming ``field`` when the id is not a string of that shape or
    ``n`` is not a non-negative decimal integer.
    """
    if not isinstance(char_id, str):
        raise TextOpError(field, f"char id must be a string, got {type(char_id).__name__}")
    agent, sep, num = char_id.rpartition(":")
    if not sep or not num.isascii() or not num.isdigit():
        raise TextOpError(field, f"malformed char id {char_id!r} (expected 'agent:n')")
    return agent, int(num)


def format_id(agent: str, n: int) -> str:
    """The char id ``"agent:n"``."""
    return f"{agent}:{n}"


def _check_seq(seq: object) -> int:
    if type(seq) is not int or seq < 0:
        raise TextOpError("seq", f"must be a non-negative integer, got {seq!r}")
    return seq


def _check_ts(ts: object) -> float:
    t = type(ts)
    # exact float/int first (every edit passes here): x - x is 0 only for a finite float
    if t is float:
        if ts - ts == 0:  # type: ignore[operator]
            return ts  # type: ignore[return-value]
    elif t is int:
        return ts  # type: ignore[return-value]
    elif not isinstance(ts, bool) and isinstance(ts, int | float) and math.isfinite(ts):
        return ts  # a subclass of int or float
    raise TextOpError("ts", f"must be a finite number, got {ts!r}")


class InsertEdit(msgspec.Struct, frozen=True, gc=False):
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


class DeleteEdit(msgspec.Struct, frozen=True, gc=False):
    """The wire fields of a ``text.delete``: ``rm`` = ``[(charId, length), ...]``."""

    rm: list[tuple[str, int]]


class ReplaceEdit(msgspec.Struct, frozen=True, gc=False):
    """The wire fields of a ``text.replace``: ``rm`` plus the insert (``None`` if no text)."""

    rm: list[tuple[str, int]]
    insert: InsertEdit | None


class _Span:
    """Chars ``agent:start .. agent:start+len(content)-1``, adjacent in the document.

    ``anchor``/``seq``/``ts`` are those of the first char; every later char is anchored on its
    predecessor. ``meta`` is ``None`` when all chars share ``(seq, ts)`` (one op), else the
    per-char ``(seq, ts)`` pairs of coalesced ops, flat: ``[seq0, ts0, seq1, ts1, ...]``
    (``meta[:2] == [seq, ts]``, seqs nondecreasing). Flat, because a tuple per typed char
    would be one more object for the cyclic GC to track and traverse.
    """

    __slots__ = ("agent", "anchor", "block", "content", "deleted", "meta", "seq", "start", "ts")

    def __init__(  # noqa: PLR0917 - internal, positional for speed
        self,
        agent: str,
        start: int,
        content: str,
        deleted: bool,
        anchor: str | None,
        seq: int,
        ts: float,
        meta: list[int | float] | None,
        block: _Block,
    ) -> None:
        self.agent = agent
        self.start = start
        self.content = content
        self.deleted = deleted
        self.anchor = anchor
        self.seq = seq
        self.ts = ts
        self.meta = meta
        self.block = block

    def last_seq(self) -> int:
        meta = self.meta
        return self.seq if meta is None else meta[-2]  # type: ignore[return-value]

    def clone(self, block: _Block) -> _Span:
        meta = self.meta
        return _Span(
            self.agent,
            self.start,
            self.content,
            self.deleted,
            self.anchor,
            self.seq,
            self.ts,
            None if meta is None else list(meta),
            block,
        )


class _Block:
    """A run of at most ``_MAX_BLOCK`` spans; ``idx`` is its index in ``TextDoc._blocks``.

    ``chain`` caches a summary for the insert scan (``TextDoc._chain_min``): the smallest
    ``seq`` of ``spans[1:]`` when each of them is anchored on the last char of its predecessor,
    else -1; ``None`` = not computed since the block's spans last changed.
    """

    __slots__ = ("chain", "idx", "spans")

    def __init__(self, idx: int, spans: list[_Span]) -> None:
        self.idx = idx
        self.spans = spans
        self.chain: int | None = None


class TextDoc:
    """One replicated text: a rope of spans with tombstones plus a per-agent id index.

    ``position -> span`` and ``id -> span`` are O(log n) (blocked rope with cached prefix sums
    and a bisect index per agent). The *local agent* (``agent``) is the author of local edits;
    ``clock`` is the next unused id number of that agent; ``max_seq`` is the largest Lamport
    seq seen.
    """

    __slots__ = (
        "_agent",
        "_blocks",
        "_bvis",
        "_clock",
        "_cur",
        "_idx",
        "_last_agent",
        "_last_n",
        "_last_pos",
        "_last_span",
        "_len",
        "_max_seq",
        "_prefix",
        "_text",
        "_valid",
    )

    def __init__(self, agent: str = "") -> None:
        if not isinstance(agent, str):
            raise TextOpError("agent", "must be a string")
        self._agent = agent
        self._clock = 0
        self._max_seq = 0
        first = _Block(0, [])
        self._blocks: list[_Block] = [first]
        self._bvis: list[int] = [0]  # visible chars per block
        self._prefix: list[int] = [0]  # visible chars before each block, valid up to _valid
        self._valid = 0
        self._cur = 0  # guess of the block holding the next position lookup
        self._len = 0
        # agent -> (sorted span starts, spans): id -> span by bisect.
        self._idx: dict[str, tuple[list[int], list[_Span]]] = {}
        self._text: str | None = ""
        # Continuous-typing tracking (reference §4 client niceties): the last locally inserted
        # char and the position right after it; _last_span is a guess of its span.
        self._last_pos = -1
        self._last_agent = ""
        self._last_n = -1
        self._last_span: _Span | None = None

    # -- properties -------------------------------------------------------------------------

    @property
    def agent(self) -> str:
        """The local agent (author of local edits)."""
        return self._agent

    @property
    def clock(self) -> int:
        """Next unused id number of the local agent."""
        return self._clock

    @property
    def max_seq(self) -> int:
        """Largest Lamport seq applied so far (0 for an empty doc)."""
        return self._max_seq

    # -- internal helpers -------------------------------------------------------------------

    def _find(self, agent: str, n: int) -> _Span | None:
        """The span holding char ``agent:n``, or None."""
        ent = self._idx.get(agent)
        if ent is None:
            return None
        i = bisect_right(ent[0], n) - 1
        if i < 0:
            return None
        sp = ent[1][i]
        if n < sp.start + len(sp.content):
            return sp
        return None

    def _index_add(self, sp: _Span) -> None:
        ent = self._idx.get(sp.agent)
        if ent is None:
            self._idx[sp.agent] = ([sp.start], [sp])
            return
        starts, spans = ent
        if starts[-1] < sp.start:
            starts.append(sp.start)
            spans.append(sp)
        else:
            i = bisect_right(starts, sp.start)
            starts.insert(i, sp.start)
            spans.insert(i, sp)

    def _add_vis(self, block: _Block, delta: int) -> None:
        bi = block.idx
        self._bvis[bi] += delta
        if self._valid > bi:  # noqa: PLR1730 - hot path, cheaper than min()
            self._valid = bi
        self._len += delta
        self._text = None

    def _insert_span(self, block: _Block, si: int, sp: _Span, counted: bool) -> None:
        """Put ``sp`` at index ``si`` of ``block``; ``counted`` adds its visible chars.

        Counts are added before a possible block split so the split moves them correctly.
        """
        if counted and not sp.deleted:
            self._add_vis(block, len(sp.content))
        spans = block.spans
        spans.insert(si, sp)
        sp.block = block
        block.chain = None
        if len(spans) > _MAX_BLOCK:
            self._split_block(block)

    def _split_block(self, block: _Block) -> None:
        spans = block.spans
        half = len(spans) >> 1
        moved = spans[half:]
        del spans[half:]
        block.chain = None
        bi = block.idx
        nb = _Block(bi + 1, moved)
        vis = 0
        for sp in moved:
            sp.block = nb
            if not sp.deleted:
                vis += len(sp.content)
        blocks = self._blocks
        blocks.insert(bi + 1, nb)
        for j in range(bi + 2, len(blocks)):
            blocks[j].idx = j
        self._bvis[bi] -= vis
        self._bvis.insert(bi + 1, vis)
        self._prefix.insert(bi + 1, 0)
        self._valid = min(self._valid, bi)

    @staticmethod
    def _pos_in_block(sp: _Span) -> int:
        return sp.block.spans.index(sp)

    def _split(self, sp: _Span, k: int) -> _Span:
        """Split ``sp`` before its char ``k`` (0 < k < len); ``sp`` keeps the prefix."""
        content = sp.content
        meta = sp.meta
        agent = sp.agent
        start = sp.start
        if meta is None:
            seq, ts, rest = sp.seq, sp.ts, None
        else:
            k2 = k << 1
            seq = meta[k2]  # type: ignore[assignment]
            ts = meta[k2 + 1]
            rest = meta[k2:] if len(content) - k > 1 else None
            sp.meta = meta[:k2] if k > 1 else None
        after = _Span(
            agent,
            start + k,
            content[k:],
            sp.deleted,
            f"{agent}:{start + k - 1}",
            seq,
            ts,
            rest,
            sp.block,
        )
        sp.content = content[:k]
        self._insert_span(sp.block, self._pos_in_block(sp) + 1, after, False)
        self._index_add(after)
        return after

    def _fix_prefix(self) -> None:
        v = self._valid
        bvis = self._bvis
        last = len(bvis) - 1
        if v < last:
            self._prefix[v:] = accumulate(bvis[v:last], initial=self._prefix[v])
            self._valid = last

    def _locate(self, q: int) -> tuple[_Span, int]:
        """Span and offset of visible char ``q`` (``0 <= q < len(self)``)."""
        bi = self._cur
        bvis = self._bvis
        prefix = self._prefix
        if bi <= self._valid and bi < len(bvis):
            base = prefix[bi]
            if not base <= q < base + bvis[bi]:
                bi = -1
        else:
            bi = -1
        if bi < 0:
            self._fix_prefix()
            bi = bisect_right(prefix, q) - 1
            base = prefix[bi]
            self._cur = bi
        r = q - base
        spans = self._blocks[bi].spans
        total = bvis[bi]
        if r < total >> 1:
            for sp in spans:
                if not sp.deleted:
                    n = len(sp.content)
                    if r < n:
                        return sp, r
                    r -= n
        else:
            r = total - r  # chars from the block end, >= 1
            for i in range(len(spans) - 1, -1, -1):
                sp = spans[i]
                if not sp.deleted:
                    n = len(sp.content)
                    if r <= n:
                        return sp, n - r
                    r -= n
        raise AssertionError("text rope counts are inconsistent")  # pragma: no cover

    @staticmethod
    def _chain_min(block: _Block) -> int:
        """Smallest seq of ``block.spans[1:]`` if each is anchored on its predecessor's last
        char, else -1 (cached in ``block.chain`` until the block's spans change)."""
        c = block.chain
        if c is None:
            spans = block.spans
            c = -1
            if len(spans) > 1:
                c = spans[1].seq
                for p, x in pairwise(spans):
                    if x.anchor != f"{p.agent}:{p.start + len(p.content) - 1}":
                        c = -1
                        break
                    if x.seq < c:  # noqa: PLR1730 - explicit loop breaks early
                        c = x.seq
            block.chain = c
        return c

    def _char_pos(self, char_id: str | None) -> tuple[int, ...]:
        """Document order key of a char (tombstones included); unknown/None = start."""
        if char_id is None:
            return (-1,)
        agent, _sep, num = char_id.rpartition(":")
        sp = self._find(agent, int(num))
        if sp is None:
            return (-1,)
        return (sp.block.idx, self._pos_in_block(sp), int(num) - sp.start)

    def _switch_agent(self, agent: str) -> None:
        if not isinstance(agent, str):
            raise TextOpError("agent", "must be a string")
        self._agent = agent
        ent = self._idx.get(agent)
        if ent is None:
            self._clock = 0
        else:
            self._clock = max(sp.start + len(sp.content) for sp in ent[1])

    def reserve(self, agent: str, clock: int) -> None:
        """Make ``agent`` the local agent and never allocate its ids below ``clock``.

        A replica calls this before a local edit with the highest clock it ever used on this
        doc: ids of an undone insert are absent from a re-folded doc, and reusing one would give
        two different chars one id on other replicas. Raises :class:`TextOpError` if ``agent``
        is not a string.
        """
        if agent != self._agent:
            self._switch_agent(agent)
        self._clock = max(self._clock, clock)

    def _check_position(self, position: object, field: str = "position") -> int:
        if type(position) is not int or not 0 <= position <= self._len:
            raise TextOpError(field, f"must be an integer in 0..{self._len}, got {position!r}")
        return position

    # -- remote (wire) ops --------------------------------------------------------------------

    def apply_insert(self, id: str, anchor: str | None, content: str, seq: int, ts: float) -> bool:
        """Integrate a ``text.insert``; returns False if ``id`` was already present (no-op).

        Reference §4 integration: skip a known id; split the anchor's span so the anchor is its
        last char; scan right and stop at the first span X with ``seq > X.seq``, or X's anchor
        left of ours, or (same anchor, same seq) and ``(ts, id) < (X.ts, X.id)``. An unknown
        anchor counts as document start. Raises :class:`TextOpError` for a malformed id/anchor,
        content, seq or ts (nothing is changed then).
        """
        # The checks of parse_id/_check_seq/_check_ts inline for well-formed input (every
        # remote keystroke passes here); anything unusual goes through them for the error.
        agent, sep, num = id.rpartition(":") if type(id) is str else ("", "", "")
        if sep and num.isdigit() and num.isascii():
            n = int(num)
        else:
            agent, n = parse_id(id, "id")
        if anchor is not None:
            aagent, sep, num = anchor.rpartition(":") if type(anchor) is str else ("", "", "")
            if sep and num.isdigit() and num.isascii():
                an = int(num)
            else:
                aagent, an = parse_id(anchor, "value[0]")
        if not isinstance(content, str):
            raise TextOpError("value[1]", "content must be a string")
        if type(seq) is not int or seq < 0:
            _check_seq(seq)
        t = type(ts)
        if not (t is int or (t is float and ts - ts == 0)):
            _check_ts(ts)
        if seq > self._max_seq:  # noqa: PLR1730 -- per keystroke; no max() call
            self._max_seq = seq
        if not content or self._find(agent, n) is not None:
            return False
        asp = None
        if anchor is not None:
            asp = self._find(aagent, an)
            if asp is not None and an - asp.start < len(asp.content) - 1:
                self._split(asp, an - asp.start + 1)
        blocks = self._blocks
        if asp is None:
            bi, si = 0, 0
        else:
            bi, si = asp.block.idx, self._pos_in_block(asp) + 1
        # Scan right (reference §4 step 3). Whether X's anchor is left of, at or right of ours
        # is decided without locating X's anchor in the common case: the anchor char precedes
        # every char anchored on it (RGA), so a span X anchored on the last char of the span
        # just before it (``prev``) is anchored at our anchor when ``prev`` is the anchor span,
        # and right of it when ``prev`` was scanned past. Only other anchors go through
        # ``_char_pos``. A block whose later spans all chain that way and all have a seq >=
        # ours is skipped whole once its first span was scanned past (each of them would be:
        # rule 1 never stops, and their anchors are right of ours). Same decisions as the
        # per-span rule, in O(blocks + block size) instead of O(spans x block size).
        scanned = False
        apos: tuple[int, ...] | None = None
        prev = asp
        nblocks = len(blocks)
        while True:
            spans = blocks[bi].spans
            if si >= len(spans):
                if bi + 1 >= nblocks:
                    break
                bi += 1
                si = 0
                continue
            x = spans[si]
            xseq = x.seq
            if seq > xseq:
                break
            xa = x.anchor
            if (
                prev is not None
                and xa is not None
                and xa == f"{prev.agent}:{prev.start + len(prev.content) - 1}"
            ):
                cmp = 1 if scanned else 0
            else:
                if apos is None:
                    apos = (
                        (-1,)
                        if asp is None
                        else (asp.block.idx, self._pos_in_block(asp), len(asp.content) - 1)
                    )
                xpos = self._char_pos(xa)
                cmp = -1 if xpos < apos else (0 if xpos == apos else 1)
            if cmp < 0:
                break
            if (
                cmp == 0
                and seq == xseq
                and (ts < x.ts or (ts == x.ts and id < f"{x.agent}:{x.start}"))
            ):
                break
            si += 1
            prev = x
            scanned = True
            if si == 1 and len(spans) > 1 and seq <= self._chain_min(blocks[bi]):
                prev = spans[-1]
                si = len(spans)
        block = blocks[bi]
        ln = len(content)
        if (
            not scanned
            and asp is not None
            and asp.agent == agent
            and asp.start + len(asp.content) == n
            and not asp.deleted
            and seq >= asp.last_seq()
        ):
            self._extend(asp, content, seq, ts)
        else:
            sp = _Span(agent, n, content, False, anchor, seq, ts, None, block)
            self._insert_span(block, si, sp, True)
            self._index_add(sp)
        if agent == self._agent and n + ln > self._clock:
            self._clock = n + ln
        return True

    def _extend(self, sp: _Span, content: str, seq: int, ts: float) -> None:
        """Append a directly continuing op to ``sp`` (span coalescing), keeping per-char meta."""
        meta = sp.meta
        if meta is None:
            meta = [sp.seq, sp.ts] * len(sp.content)
            sp.meta = meta
        ln = len(content)
        if ln == 1:
            meta.append(seq)
            meta.append(ts)
        else:
            meta.extend([seq, ts] * ln)
        sp.content += content
        # the span's last char moved: a following span is no longer anchored on it
        sp.block.chain = None
        self._add_vis(sp.block, ln)

    def apply_delete(self, rm: Iterable[Sequence[Any]]) -> int:
        """Tombstone every char covered by ``rm`` = ``[(charId, length), ...]``.

        Unknown ids are ignored; already deleted chars stay deleted. Returns how many visible
        chars were tombstoned. Raises :class:`TextOpError` for a malformed entry (before any
        change is made).
        """
        by_agent: dict[str, list[list[int]]] = {}
        try:
            entries = list(rm)
        except TypeError:
            raise TextOpError("rm", "must be a list of [charId, length]") from None
        for i, entry in enumerate(entries):
            if not isinstance(entry, list | tuple) or len(entry) != 2:
                raise TextOpError(f"rm[{i}]", "must be [charId, length]")
            agent, n = parse_id(entry[0], f"rm[{i}][0]")
            length = entry[1]
            if type(length) is not int or length < 0:
                raise TextOpError(f"rm[{i}][1]", f"must be a non-negative integer: {length!r}")
            by_agent.setdefault(agent, []).append([n, n + length])
        deleted = 0
        for agent, ranges in by_agent.items():
            ranges.sort()
            s, e = ranges[0]
            for r in ranges[1:]:
                if r[0] <= e:
                    e = max(e, r[1])
                else:
                    deleted += self._delete_range(agent, s, e)
                    s, e = r
            deleted += self._delete_range(agent, s, e)
        return deleted

    def _delete_range(self, agent: str, s: int, e: int) -> int:
        ent = self._idx.get(agent)
        if ent is None or s >= e:
            return 0
        starts, spans = ent
        i = bisect_right(starts, s) - 1
        if i < 0 or s >= spans[i].start + len(spans[i].content):
            i += 1
        deleted = 0
        while s < e and i < len(spans):
            sp = spans[i]
            if sp.start >= e:
                break
            s = max(s, sp.start)
            if s > sp.start:
                self._split(sp, s - sp.start)
                i += 1
                continue
            if e < sp.start + len(sp.content):
                self._split(sp, e - sp.start)
            if not sp.deleted:
                sp.deleted = True
                deleted += len(sp.content)
                self._add_vis(sp.block, -len(sp.content))
            s = sp.start + len(sp.content)
            i += 1
        return deleted

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
        """``text.replace``: :meth:`apply_delete` then :meth:`apply_insert` (if content).

        Everything is validated before anything changes; raises :class:`TextOpError`.
        """
        entries = list(rm)
        if content:
            parse_id(id, "id")
            if anchor is not None:
                parse_id(anchor, "value[0]")
            _check_seq(seq)
            _check_ts(ts)
        self.apply_delete(entries)
        if content:
            assert id is not None  # checked by parse_id above
            self.apply_insert(id, anchor, content, seq, ts)

    # -- local position-based edits ---------------------------------------------------------

    def _anchor_for(self, position: int) -> tuple[_Span | None, int]:
        """Anchor char (span, offset) for a local insert at ``position``; (None, 0) = start.

        Reuses the last locally inserted char when typing continues there (reference §4).
        """
        if position == self._last_pos and self._last_n >= 0:
            sp = self._last_span
            n = self._last_n
            if (
                sp is None
                or sp.agent != self._last_agent
                or not sp.start <= n < sp.start + len(sp.content)
            ):
                sp = self._find(self._last_agent, n)
            if sp is not None:
                return sp, n - sp.start
        if position == 0:
            return None, 0
        return self._locate(position - 1)

    def _insert_local(
        self, asp: _Span | None, off: int, content: str, ts: float, position: int
    ) -> InsertEdit:
        """Insert right after the anchor char: a local op has the highest seq, so the reference
        scan stops at the first span after the anchor (§4 step 3, rule 1)."""
        agent = self._agent
        start = self._clock
        seq = self._max_seq + 1
        ln = len(content)
        if asp is None:
            anchor = None
            block = self._blocks[0]
            sp = _Span(agent, start, content, False, None, seq, ts, None, block)
            self._insert_span(block, 0, sp, True)
            self._index_add(sp)
        else:
            anchor = f"{asp.agent}:{asp.start + off}"
            if off < len(asp.content) - 1:
                self._split(asp, off + 1)
            if asp.agent == agent and asp.start + len(asp.content) == start and not asp.deleted:
                self._extend(asp, content, seq, ts)
                sp = asp
            else:
                block = asp.block
                sp = _Span(agent, start, content, False, anchor, seq, ts, None, block)
                self._insert_span(block, self._pos_in_block(asp) + 1, sp, True)
                self._index_add(sp)
        self._max_seq = seq
        self._clock = start + ln
        self._last_pos = position + ln
        self._last_agent = agent
        self._last_n = start + ln - 1
        self._last_span = sp
        return InsertEdit(f"{agent}:{start}", anchor, content, seq, ts)

    def local_insert(
        self, position: int, content: str, ts: float, agent: str | None = None
    ) -> InsertEdit:
        """Insert ``content`` before visible ``position`` as ``agent`` (default: local agent).

        Applies the edit and returns its wire form. Continuous typing at the end of the last
        local insert reuses the last inserted char as anchor (reference §4 "client niceties").
        Raises :class:`TextOpError` if ``position`` is outside ``0..len(self)`` or ``content``
        is empty.
        """
        if agent is not None and agent != self._agent:
            self._switch_agent(agent)
        # the checkers are called only when the inline test fails (they raise the error)
        if type(position) is not int or not 0 <= position <= self._len:
            self._check_position(position)
        if not isinstance(content, str) or not content:
            raise TextOpError("value", "content must be a non-empty string")
        t = type(ts)
        if not (t is float and ts - ts == 0) and t is not int:
            _check_ts(ts)
        if position == self._last_pos and self._last_n >= 0:
            asp, off = self._anchor_for(position)
        elif position == 0:
            asp, off = None, 0
        else:
            asp, off = self._locate(position - 1)
        return self._insert_local(asp, off, content, ts, position)

    def local_delete(self, position: int, length: int) -> DeleteEdit:
        """Delete ``length`` visible chars from ``position``; returns the merged ``rm`` ranges.

        Raises :class:`TextOpError` if the range is outside ``0..len(self)``.
        """
        self._check_position(position)
        if type(length) is not int or length < 0 or position + length > self._len:
            raise TextOpError("length", f"must be an integer in 0..{self._len - position}")
        self._last_pos = -1
        self._last_n = -1
        self._last_span = None
        out: list[list[Any]] = []
        remaining = length
        while remaining > 0:
            sp, off = self._locate(position)
            if off > 0:
                sp = self._split(sp, off)
            if len(sp.content) > remaining:
                self._split(sp, remaining)
            ln = len(sp.content)
            sp.deleted = True
            self._add_vis(sp.block, -ln)
            if out and out[-1][0] == sp.agent and out[-1][1] + out[-1][2] == sp.start:
                out[-1][2] += ln
            else:
                out.append([sp.agent, sp.start, ln])
            remaining -= ln
        return DeleteEdit([(f"{a}:{n}", ln) for a, n, ln in out])

    def local_replace(
        self, position: int, length: int, content: str, ts: float, agent: str | None = None
    ) -> ReplaceEdit:
        """Replace ``length`` chars at ``position`` by ``content``: anchor captured before delete.

        ``content`` may be empty (a pure delete). Raises :class:`TextOpError` if the range is
        outside ``0..len(self)``.
        """
        if agent is not None and agent != self._agent:
            self._switch_agent(agent)
        self._check_position(position)
        if type(length) is not int or length < 0 or position + length > self._len:
            raise TextOpError("length", f"must be an integer in 0..{self._len - position}")
        if not isinstance(content, str):
            raise TextOpError("value", "content must be a string")
        _check_ts(ts)
        asp: _Span | None = None
        off = 0
        anchor_key: tuple[str, int] | None = None
        if content:
            asp, off = self._anchor_for(position)
            if asp is not None:
                anchor_key = (asp.agent, asp.start + off)
        rm = self.local_delete(position, length).rm if length else []
        if not content:
            return ReplaceEdit(rm, None)
        if anchor_key is not None:
            # The delete may have split spans: look the anchor up again by id.
            asp = self._find(*anchor_key)
            assert asp is not None
            off = anchor_key[1] - asp.start
        return ReplaceEdit(rm, self._insert_local(asp, off, content, ts, position))

    # -- reading ----------------------------------------------------------------------------

    def text(self) -> str:
        """The visible string (cached until the next change; O(n) after a change)."""
        t = self._text
        if t is None:
            t = "".join([sp.content for b in self._blocks for sp in b.spans if not sp.deleted])
            self._text = t
        return t

    def __len__(self) -> int:
        """Number of visible chars (O(1))."""
        return self._len

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return f"TextDoc(agent={self._agent!r}, len={self._len}, max_seq={self._max_seq})"

    def __contains__(self, char_id: object) -> bool:
        """Whether the char id ``"agent:n"`` has been integrated (deleted or not)."""
        if not isinstance(char_id, str):
            return False
        try:
            agent, n = parse_id(char_id)
        except TextOpError:
            return False
        return self._find(agent, n) is not None

    def span_count(self) -> int:
        """Number of spans held (tombstones included); a size/fragmentation measure."""
        return sum(len(b.spans) for b in self._blocks)

    # -- snapshots --------------------------------------------------------------------------

    def agent_clock(self, agent: str) -> int:
        """The clock a doc whose local agent is ``agent`` would have after integrating the same
        ops: one past the highest id number of ``agent`` held, 0 if none (O(spans of agent))."""
        ent = self._idx.get(agent)
        if ent is None:
            return 0
        return max(sp.start + len(sp.content) for sp in ent[1])

    def snapshot(self) -> list[Any]:
        """Lossless raw form ``[agent, clock, maxSeq, [[id, content, anchor, seq, ts, deleted]]]``.

        Items are in document order, tombstones included (the reference's 5-field items plus a
        ``deleted`` flag). JSON/msgpack-serialisable. ``from_snapshot(snapshot())`` behaves
        exactly like the original for every later op. A coalesced span is written as one item
        per run of chars sharing ``(seq, ts)``, each anchored on its predecessor.
        """
        items: list[list[Any]] = []
        append = items.append
        for b in self._blocks:
            for sp in b.spans:
                agent = sp.agent
                meta = sp.meta
                if meta is None:
                    append(
                        [f"{agent}:{sp.start}", sp.content, sp.anchor, sp.seq, sp.ts, sp.deleted]
                    )
                    continue
                content = sp.content
                i = 0
                ln = len(content)
                while i < ln:
                    seq, ts = meta[2 * i], meta[2 * i + 1]
                    j = i + 1
                    while j < ln and meta[2 * j] == seq and meta[2 * j + 1] == ts:
                        j += 1
                    anchor = sp.anchor if i == 0 else f"{agent}:{sp.start + i - 1}"
                    append([f"{agent}:{sp.start + i}", content[i:j], anchor, seq, ts, sp.deleted])
                    i = j
        return [self._agent, self._clock, self._max_seq, items]

    @classmethod
    def from_snapshot(cls, raw: Sequence[Any], agent: str | None = None) -> TextDoc:
        """Rebuild from :meth:`snapshot` (or the reference's 5-field raw form).

        ``agent`` switches the local agent (its clock is recomputed from its ids). Raises
        :class:`TextOpError` for a malformed snapshot (field ``snapshot...``).
        """
        if not isinstance(raw, list | tuple) or len(raw) != 4:
            raise TextOpError("snapshot", "must be [agent, clock, maxSeq, items]")
        ragent, clock, max_seq, items = raw
        if not isinstance(ragent, str):
            raise TextOpError("snapshot[0]", "agent must be a string")
        if type(clock) is not int or clock < 0:
            raise TextOpError("snapshot[1]", "clock must be a non-negative integer")
        if type(max_seq) is not int or max_seq < 0:
            raise TextOpError("snapshot[2]", "maxSeq must be a non-negative integer")
        if not isinstance(items, list | tuple):
            raise TextOpError("snapshot[3]", "items must be a list")
        doc = cls(ragent)
        doc._clock = clock
        doc._max_seq = max_seq
        spans: list[_Span] = []
        placeholder = doc._blocks[0]
        for i, it in enumerate(items):
            f = f"snapshot[3][{i}]"
            if not isinstance(it, list | tuple) or len(it) not in (5, 6):
                raise TextOpError(f, "must be [id, content, anchor, seq, ts(, deleted)]")
            sagent, n = parse_id(it[0], f + "[0]")
            content, anchor, seq, ts = it[1], it[2], it[3], it[4]
            deleted = it[5] if len(it) == 6 else False
            if not isinstance(content, str) or not content:
                raise TextOpError(f + "[1]", "content must be a non-empty string")
            if anchor is not None:
                parse_id(anchor, f + "[2]")
            try:
                _check_seq(seq)
                _check_ts(ts)
            except TextOpError as exc:
                raise TextOpError(f"{f}.{exc.field}", str(exc)) from None
            if not isinstance(deleted, bool):
                raise TextOpError(f + "[5]", "deleted must be a boolean")
            spans.append(_Span(sagent, n, content, deleted, anchor, seq, ts, None, placeholder))
        # Ids must not overlap: each char exists once.
        by_agent: dict[str, list[_Span]] = {}
        for sp in spans:
            by_agent.setdefault(sp.agent, []).append(sp)
        for sagent, lst in by_agent.items():
            lst.sort(key=lambda s: s.start)
            for a, b in pairwise(lst):
                if b.start < a.start + len(a.content):
                    raise TextOpError("snapshot[3]", f"overlapping ids of agent {sagent!r}")
            doc._idx[sagent] = ([s.start for s in lst], lst)
        doc._load(spans)
        if agent is not None and agent != ragent:
            doc._switch_agent(agent)
        return doc

    def _load(self, spans: list[_Span]) -> None:
        """Fill the (empty) block list with ``spans`` in document order."""
        size = _MAX_BLOCK // 2
        blocks: list[_Block] = []
        bvis: list[int] = []
        for k in range(0, len(spans), size):
            chunk = spans[k : k + size]
            b = _Block(len(blocks), chunk)
            vis = 0
            for sp in chunk:
                sp.block = b
                if not sp.deleted:
                    vis += len(sp.content)
            blocks.append(b)
            bvis.append(vis)
        if not blocks:
            blocks.append(_Block(0, []))
            bvis.append(0)
        self._blocks = blocks
        self._bvis = bvis
        self._prefix = [0] * len(blocks)
        self._valid = 0
        self._cur = 0
        self._len = sum(bvis)
        self._text = None

    @classmethod
    def initial(cls, agent: str, value: str, ts: float) -> TextDoc:
        """``text.init``: a new doc of ``agent``; a non-empty ``value`` is inserted at position 0
        as ``agent:0`` with seq 1 and the given ``ts`` (the reference uses its wall clock here;
        durasync passes the message timestamp so every replica builds the same doc)."""
        doc = cls(agent)
        if value:
            doc.local_insert(0, value, ts)
        return doc

    def copy(self) -> TextDoc:
        """An independent deep copy (O(number of spans))."""
        doc = TextDoc(self._agent)
        doc._clock = self._clock
        doc._max_seq = self._max_seq
        placeholder = doc._blocks[0]
        spans = [sp.clone(placeholder) for b in self._blocks for sp in b.spans]
        by_agent: dict[str, list[_Span]] = {}
        for sp in spans:
            by_agent.setdefault(sp.agent, []).append(sp)
        for sagent, lst in by_agent.items():
            lst.sort(key=lambda s: s.start)
            doc._idx[sagent] = ([s.start for s in lst], lst)
        doc._load(spans)
        doc._last_pos = self._last_pos
        doc._last_agent = self._last_agent
        doc._last_n = self._last_n
        return doc
