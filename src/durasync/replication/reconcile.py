"""Set reconciliation of message ids with a hash tree (pure; enbox-sync.md §5).

Two servers each hold a set of message ids; they find ``only_local`` and ``only_remote`` by
comparing bucket summaries, descending only into buckets that differ, and then transfer only
the messages that are missing.

Buckets. An id's key is ``sha256(id)``; a bucket is a hex prefix of keys (``""`` is the root,
``"a"`` its 16th child of one nibble, ``"a3"`` ...). A bucket's summary is its count and the
XOR of the first 128 bits of its keys: equal summaries mean (up to a 2^-128 accident per
bucket) equal contents, so equal buckets are skipped whole.

Rounds. The initiator asks the responder about a list of buckets (:class:`BucketQuery`); for
each the responder answers with the ids of the bucket when it is small (at most
``leaf_size``, or ``max_ids`` when the initiator holds nothing there and asks for them), and
otherwise with the summaries of its children ``step`` nibbles deeper
(:func:`answer_queries`). The initiator (:class:`Reconciler`) compares, settles what it can
and asks about the children that differ in the next round. ``N`` ids in ``d`` differing
buckets need about ``log_256(N / leaf_size) + 1`` rounds and transfer summaries of the
differing paths plus the ids of the differing leaves, never the whole set.

Bounds: a query carries at most :data:`MAX_QUERIES` buckets; an answer never lists more than
``max_ids`` ids per bucket (a bigger bucket answers with children instead), prefixes are hex
of at most 64 characters, and ids a peer sends that do not hash into the bucket it claims are
ignored (a bogus peer cannot make us believe a foreign id is missing).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

__all__ = [
    "MAX_QUERIES",
    "BucketAnswer",
    "BucketQuery",
    "IdSet",
    "Reconciler",
    "Summary",
    "answer_queries",
    "id_key",
    "valid_prefix",
]

#: Buckets asked about in one request.
MAX_QUERIES: Final = 1024
_HEX: Final = frozenset("0123456789abcdef")

#: ``(count, xor of the keys' first 128 bits)`` of a bucket.
Summary = tuple[int, int]


def id_key(msg_id: str) -> bytes:
    """The 32-byte tree key of an id."""
    return hashlib.sha256(msg_id.encode("utf-8", "surrogatepass")).digest()


def valid_prefix(prefix: str) -> bool:
    """Whether ``prefix`` is a bucket name: at most 64 lower-case hex characters."""
    return len(prefix) <= 64 and all(c in _HEX for c in prefix)


def _bounds(prefix: str) -> tuple[bytes, bytes]:
    lo = prefix + "0" * (64 - len(prefix))
    hi = prefix + "f" * (64 - len(prefix))
    return bytes.fromhex(lo), bytes.fromhex(hi)


class IdSet:
    """A set of ids indexed by key for bucket summaries (incremental: add and discard are
    ``O(n)`` list inserts, summaries ``O(bucket)``)."""

    __slots__ = ("_ids", "_keys")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: dict[bytes, str] = {}
        for msg_id in ids:
            self._ids[id_key(msg_id)] = msg_id
        self._keys: list[bytes] = sorted(self._ids)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, msg_id: object) -> bool:
        return isinstance(msg_id, str) and id_key(msg_id) in self._ids

    def add(self, msg_id: str) -> bool:
        """Add ``msg_id``; False if it was there."""
        key = id_key(msg_id)
        if key in self._ids:
            return False
        self._ids[key] = msg_id
        bisect.insort(self._keys, key)
        return True

    def discard(self, msg_id: str) -> None:
        key = id_key(msg_id)
        if self._ids.pop(key, None) is not None:
            i = bisect.bisect_left(self._keys, key)
            del self._keys[i]

    def _range(self, prefix: str) -> tuple[int, int]:
        if not prefix:
            return 0, len(self._keys)
        lo, hi = _bounds(prefix)
        return bisect.bisect_left(self._keys, lo), bisect.bisect_right(self._keys, hi)

    def summary(self, prefix: str) -> Summary:
        """Count and XOR of the bucket ``prefix``."""
        i, j = self._range(prefix)
        acc = 0
        keys = self._keys
        for k in range(i, j):
            acc ^= int.from_bytes(keys[k][:16])
        return j - i, acc

    def count(self, prefix: str) -> int:
        i, j = self._range(prefix)
        return j - i

    def ids(self, prefix: str) -> list[str]:
        """The ids in bucket ``prefix``."""
        i, j = self._range(prefix)
        return [self._ids[k] for k in self._keys[i:j]]

    def children(self, prefix: str, step: int) -> dict[str, Summary]:
        """Summaries of the non-empty buckets ``step`` nibbles below ``prefix``."""
        depth = min(64, len(prefix) + step)
        i, j = self._range(prefix)
        out: dict[str, list[int]] = {}
        keys = self._keys
        for k in range(i, j):
            key = keys[k]
            child = key.hex()[:depth]
            acc = out.get(child)
            if acc is None:
                out[child] = [1, int.from_bytes(key[:16])]
            else:
                acc[0] += 1
                acc[1] ^= int.from_bytes(key[:16])
        return {c: (v[0], v[1]) for c, v in out.items()}


class BucketQuery(msgspec.Struct, frozen=True, array_like=True):
    """Ask about one bucket; ``want_ids``: the initiator holds nothing there, send the ids
    when they fit (up to ``max_ids``) instead of descending."""

    prefix: str
    want_ids: bool = False


class BucketAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """The responder's view of one bucket: its ids, or its children's summaries
    (``children[c] = [count, xor as a 32-digit hex string]``)."""

    prefix: str
    count: int
    ids: list[str] | None = None
    children: dict[str, tuple[int, str]] | None = None


def answer_queries(
    ids: IdSet,
    queries: Sequence[BucketQuery],
    *,
    leaf_size: int = 64,
    max_ids: int = 10_000,
    step: int = 2,
) -> list[BucketAnswer]:
    """The responder's side of one round.

    Raises:
        ValueError: more than :data:`MAX_QUERIES` queries or a prefix that is not a bucket
            name (the HTTP layer answers 400).
    """
    if len(queries) > MAX_QUERIES:
        raise ValueError(f"at most {MAX_QUERIES} buckets per query")
    out: list[BucketAnswer] = []
    for q in queries:
        if not valid_prefix(q.prefix):
            raise ValueError(f"bucket {q.prefix[:70]!r} is not a hex prefix of at most 64 digits")
        n = ids.count(q.prefix)
        if n <= leaf_size or (q.want_ids and n <= max_ids) or len(q.prefix) >= 64:
            out.append(BucketAnswer(prefix=q.prefix, count=n, ids=ids.ids(q.prefix)))
        else:
            kids = ids.children(q.prefix, step)
            out.append(
                BucketAnswer(
                    prefix=q.prefix,
                    count=n,
                    children={c: (s[0], f"{s[1]:032x}") for c, s in kids.items()},
                )
            )
    return out


class Reconciler:
    """The initiator's side: which ids only we hold and which only the peer holds.

    Drive it with :meth:`queries` (the next round's buckets, at most :data:`MAX_QUERIES`;
    empty when done) and :meth:`receive` (the peer's answers). The local set must not change
    during a reconciliation (the shell snapshots it: ``IdSet(ids)``); ids added meanwhile on
    either side are found by the next one. ``rounds`` counts requests; ``ids_received`` the ids
    the peer listed.
    """

    def __init__(self, local: IdSet, *, step: int = 2) -> None:
        self.local = local
        self.step = step
        self.only_local: set[str] = set()
        self.only_remote: set[str] = set()
        self.rounds = 0
        self.ids_received = 0
        self._todo: list[BucketQuery] = [BucketQuery("")]

    @property
    def done(self) -> bool:
        return not self._todo

    def queries(self) -> list[BucketQuery]:
        """The buckets to ask about next (removed from the to-do list)."""
        batch, self._todo = self._todo[:MAX_QUERIES], self._todo[MAX_QUERIES:]
        if batch:
            self.rounds += 1
        return batch

    def receive(self, answers: Sequence[BucketAnswer], asked: Sequence[BucketQuery]) -> None:
        """Take the peer's answers to ``asked``. A bucket asked about but not answered is asked
        again; answers to buckets not asked are ignored."""
        wanted = {q.prefix for q in asked}
        answered: set[str] = set()
        for answer in answers:
            prefix = answer.prefix
            if prefix not in wanted or prefix in answered:
                continue
            answered.add(prefix)
            if answer.ids is not None:
                self._settle_leaf(prefix, answer.ids)
            elif answer.children is not None:
                self._compare_children(prefix, answer.children)
        self._todo.extend(q for q in asked if q.prefix not in answered)

    def _settle_leaf(self, prefix: str, remote_ids: Sequence[str]) -> None:
        self.ids_received += len(remote_ids)
        remote: set[str] = set()
        for msg_id in remote_ids:
            if isinstance(msg_id, str) and id_key(msg_id).hex().startswith(prefix):
                remote.add(msg_id)
        local = set(self.local.ids(prefix))
        self.only_remote |= remote - local
        self.only_local |= local - remote

    def _compare_children(self, prefix: str, children: dict[str, tuple[int, str]]) -> None:
        depth = min(64, len(prefix) + self.step)
        mine = self.local.children(prefix, self.step)
        for child, (count, digest) in children.items():
            if len(child) != depth or not child.startswith(prefix) or not valid_prefix(child):
                continue
            try:
                theirs: Summary = (int(count), int(digest, 16))
            except (TypeError, ValueError):
                continue
            ours = mine.get(child)
            if ours == theirs:
                continue
            if ours is None:
                self._todo.append(BucketQuery(child, want_ids=True))
            else:
                self._todo.append(BucketQuery(child))
        for child in mine:
            if child not in children:
                self.only_local.update(self.local.ids(child))
