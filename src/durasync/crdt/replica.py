"""A replica of a room's scene graph: confirmed journal fold + pending local edits.

Convergence rule (DESIGN.md invariant 4): the visible graph is

    fold(base snapshot, confirmed messages in canonical order, skipping excluded ones)
      + own committed-but-unconfirmed messages (commit order) + the edit buffer

where the **canonical order** is the server's sequence (``serverSeq``) for messages a server
sequenced, then ``(lamportTime, client, id)`` for the others. The fold depends only on the *set*
of confirmed messages (and their serverSeq), never on arrival order or duplicates, so any two
replicas holding the same set have identical graphs for every otype, including the ones that
diverge in the reference (rotations, ``color.blend``, ``string.concat``, ``array.push/union``,
``object.merge``, set mixed with add, concurrent ``node.move``).

Speed: the common case -- a message that sorts after everything folded so far -- is applied in
place. A message that lands earlier (or an undo/redo that flips an old message) restores the
nearest copy-on-write checkpoint at or before that position and replays only the suffix.
Checkpoints are taken every ``checkpoint_every`` (8) folded messages while messages have recently
arrived out of order, else every ``max(8, 2 * nodes)`` (each checkpoint makes the next write of
every node clone it), and are thinned to a bounded count.
Pending local edits sit on top of a "tip" checkpoint and are re-applied after every change of
the fold (rebase).

Undo/redo are *exclusion from replay* (reference §5): a message's non-meta ops are skipped while
the last ``meta.undo``/``meta.redo`` naming it (in canonical order; pending metas count as the
newest) is an undo. Unlike the reference, an undo that arrives before its target still applies.

Text: text ops integrate into the per-(key, path) :class:`~durasync.crdt.text.TextDoc` as they
are folded (idempotent on re-fold). When a doc sees an op naming a char it does not hold
(non-causal arrival, or an anchor inside an undone message), or when a message with text ops is
excluded/re-included, that doc is rebuilt from the snapshot's doc by integrating every included
text op in canonical order (a linear extension of causality), so the text too depends only on
the message set.

Deviations from the reference client store (vuer-rtc-semantics.md §5), all deliberate:

- The fold order is canonical instead of arrival order (the whole point, see above).
- Text ops in the edit buffer never merge or replace each other (the reference overwrites an
  insert by a later delete on the same path, losing text); each keeps its own slot, in order.
- The vector clock counts, per session, the highest own-counter seen in that session's messages
  (an O(1) update per message) instead of merging every entry of every received clock.
- An undo/redo arriving before its target is remembered and applied when the target arrives.
- Compaction bakes exclusions in: a redo of a message folded into the snapshot has no effect
  (as in the reference); compact only a prefix all replicas agree on (the server's journal).

Errors: :class:`~durasync.crdt.errors.CRDTValidationError` for a malformed message or edit
(nothing is changed); :class:`~durasync.crdt.errors.CRDTUsageError` for a snapshot of an
unknown format.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final

import msgspec
from msgspec import UNSET

from durasync.crdt.canonical import canonical_json, checksum
from durasync.crdt.errors import CRDTUsageError, CRDTValidationError
from durasync.crdt.graph import TEXT, Checkpoint, Node, SceneGraph, apply_text_only, quat_mul
from durasync.crdt.messages import (
    ADDITIVE_OTYPES,
    DEFAULT_LIMITS,
    META_OTYPES,
    TEXT_OTYPES,
    Limits,
    Message,
    Op,
    validate_message,
    validate_op,
)
from durasync.crdt.text import TextDoc, TextOpError

__all__ = ["NodeState", "Replica", "Snapshot"]

SortKey = tuple[int, int, str, str]
_MAX_CHECKPOINTS: Final = 40
SNAPSHOT_VERSION: Final = 1


def sort_key(msg: Message) -> SortKey:
    """The canonical position of a confirmed message (module docstring)."""
    if msg.serverSeq is not None:
        return (0, msg.serverSeq, "", msg.id)
    return (1, msg.lt, msg.client, msg.id)


_NO_TEXTS: Final[frozenset[tuple[str, str]]] = frozenset()
_NO_METAS: Final[tuple[tuple[str, bool], ...]] = ()


class _Entry:
    __slots__ = ("excluded", "key", "metas", "msg", "texts")

    def __init__(self, msg: Message, key: SortKey) -> None:
        self.msg = msg
        self.key = key
        self.excluded = False
        metas: list[tuple[str, bool]] | None = None
        texts: set[tuple[str, str]] | None = None
        for op in msg.ops:
            ot = op.ot
            c = ot[0]
            if c == "m" and ot in META_OTYPES:
                assert isinstance(op.targetMsgId, str)
                if metas is None:
                    metas = []
                metas.append((op.targetMsgId, ot == "meta.undo"))
            elif c == "t" and ot in TEXT_OTYPES:
                if texts is None:
                    texts = set()
                texts.add((op.key, op.path))
        self.metas: Sequence[tuple[str, bool]] = _NO_METAS if metas is None else metas
        self.texts: AbstractSet[tuple[str, str]] = _NO_TEXTS if texts is None else texts


class NodeState(msgspec.Struct, array_like=True):
    """Serialised node: text properties are listed in ``text_paths`` (their docs in ``texts``)."""

    key: str
    tag: str
    name: str
    children: list[str]
    props: dict[str, Any]
    text_paths: list[str]
    lww: list[tuple[str, int, str]]
    created_at: int | float
    deleted_at: int | float | None
    parent: str | None
    pstamp: tuple[int, str] | None


class Snapshot(msgspec.Struct, omit_defaults=True):
    """A folded prefix of the journal: the graph, its text docs (lossless), clocks and ids.

    ``seen`` holds the ids of every folded message so that resends stay deduplicated;
    ``seq`` is the highest ``serverSeq`` folded (-1 if none). Serialisable with msgspec to JSON
    or msgpack; :meth:`Replica.from_snapshot` + the journal tail rebuilds the same graph.
    """

    version: int = SNAPSHOT_VERSION
    root_key: str = ""
    nodes: list[NodeState] = msgspec.field(default_factory=list)
    texts: list[tuple[str, str, Any]] = msgspec.field(default_factory=list)
    lt: int = 0
    clock: dict[str, int] = msgspec.field(default_factory=dict)
    seen: list[str] = msgspec.field(default_factory=list)
    seq: int = -1


def _encode_node(n: Node) -> NodeState:
    props = {}
    text_paths = []
    for p, v in n.props.items():
        if v is TEXT:
            text_paths.append(p)
        else:
            props[p] = v
    return NodeState(
        n.key,
        n.tag,
        n.name,
        list(n.children),
        props,
        text_paths,
        [(p, st[0], st[1]) for p, st in n.lww.items()],
        n.created_at,
        n.deleted_at,
        n.parent,
        n.pstamp,
    )


def _decode_node(s: NodeState) -> Node:
    props: dict[str, Any] = dict(s.props)
    for p in s.text_paths:
        props[p] = TEXT
    n = Node(
        s.key,
        tag=s.tag,
        name=s.name,
        children=list(s.children),
        props=props,
        created_at=s.created_at,
        parent=s.parent,
        pstamp=s.pstamp,
    )
    n.lww = {p: (lt, c) for p, lt, c in s.lww}
    n.deleted_at = s.deleted_at
    n.csorted = False
    return n


class Replica:
    """One participant's copy of a room graph (see the module docstring for the rules).

    ``sequenced=True`` (a client of a sequencing server): own commits stay *pending* until
    :meth:`ack` (or the server's echo) confirms them with a ``serverSeq``. ``sequenced=False``
    (the server itself, or peer-to-peer): own commits are confirmed immediately.
    ``checkpoint_every`` is the number of folded messages between two fold checkpoints while
    messages arrive out of order; in order, the interval grows to ``max(checkpoint_every,
    2 * nodes)`` so that copy-on-write clones stay below one per two messages.
    """

    def __init__(
        self,
        session_id: str,
        *,
        sequenced: bool = False,
        limits: Limits = DEFAULT_LIMITS,
        snapshot: Snapshot | None = None,
        checkpoint_every: int = 8,
    ) -> None:
        self.session_id = session_id
        self._cp_every = max(1, checkpoint_every)
        self._ooo_recent = 0
        self.sequenced = sequenced
        self.limits = limits
        self.lt = 0
        self.clock: dict[str, int] = {}
        self._g = SceneGraph(cow=True)
        self._entries: list[_Entry] = []
        self._keys: list[SortKey] = []
        self._by_id: dict[str, _Entry] = {}
        self._seen: set[str] = set()
        self._seq = -1
        self._pending: list[Message] = []
        self._pending_ids: dict[str, Message] = {}
        self._buffer: dict[str, Op] = {}
        self._buffer_ts: float = 0
        self._text_slot = 0
        # target id -> {meta message id: (order, is_undo)}
        self._metas: dict[str, dict[str, tuple[tuple[int, int, str, str], bool]]] = {}
        self._excluded: set[str] = set()
        self._unresolved: set[tuple[str, str]] = set()
        self._base_texts: dict[tuple[str, str], list[Any]] = {}
        self._base_lt = 0
        self._base_clock: dict[str, int] = {}
        if snapshot is not None:
            self._load_snapshot(snapshot)
        self._cps: list[tuple[int, Checkpoint]] = [(0, self._g.checkpoint())]
        self._folded = 0
        self._tip: Checkpoint | None = None

    # ------------------------------------------------------------------------------ reading

    @property
    def graph(self) -> SceneGraph:
        """The visible graph (fold + pending + buffer). Read-only for callers."""
        return self._g

    def dump(self, *, live: bool = False, with_meta: bool = False) -> str:
        """Canonical JSON of the visible graph."""
        return canonical_json(self._g, live=live, with_meta=with_meta)

    def checksum(self, *, live: bool = True) -> str:
        """Checksum of the visible graph's canonical JSON (compare only with no pending edits)."""
        return checksum(self._g, live=live)

    def has(self, msg_id: str) -> bool:
        """Whether the message is known (confirmed, folded into the snapshot, or pending)."""
        return msg_id in self._by_id or msg_id in self._seen or msg_id in self._pending_ids

    @property
    def messages(self) -> list[Message]:
        """Confirmed journal tail (after the snapshot) in canonical order."""
        return [e.msg for e in self._entries]

    def unacked(self) -> list[Message]:
        """Own committed messages not yet confirmed, in commit order (to resend on reconnect)."""
        return list(self._pending)

    @property
    def pending_count(self) -> int:
        """Number of unconfirmed own messages."""
        return len(self._pending)

    def is_excluded(self, msg_id: str) -> bool:
        """Whether ``msg_id`` is currently undone."""
        return msg_id in self._excluded

    # ------------------------------------------------------------------------------ receiving

    def receive(
        self, msg: Message, server_seq: int | None = None, *, validate: bool = True
    ) -> bool:
        """Take a confirmed message (remote, or own echoed back). Returns False if a duplicate.

        ``server_seq`` (or ``msg.serverSeq``) places it in the server's order. Raises
        :class:`CRDTValidationError` for a malformed message, before changing anything.
        ``validate=False`` skips validation for messages that were already validated (decoded
        with :func:`~durasync.crdt.messages.decode_message`, or read back from our own journal).
        """
        if validate:
            validate_message(msg, limits=self.limits)
        if server_seq is not None:
            msg.serverSeq = server_seq
        if self._fast_append(msg):
            return True
        return self.receive_many([msg], validate=False) == 1

    def _fast_append(self, msg: Message) -> bool:
        """Fold ``msg`` in place if it sorts after everything folded (the common case).

        Returns False (changing nothing) when the general path is needed: a duplicate, an
        earlier position, a meta op, pending rebuilds of text docs.
        """
        mid = msg.id
        entries = self._entries
        # fast path: a new message that sorts after everything already folded
        if (
            self._folded == len(entries)
            and mid not in self._by_id
            and mid not in self._seen
            and mid not in self._pending_ids
            and not self._unresolved
        ):
            key = sort_key(msg)
            keys = self._keys
            if not keys or key > keys[-1]:
                e = _Entry(msg, key)
                if not e.metas:
                    keys.append(key)
                    entries.append(e)
                    self._by_id[mid] = e
                    self._note_clock(msg)
                    if self._excluded and mid in self._excluded:
                        e.excluded = True
                    if self._tip is not None:
                        self._g.restore(self._tip)
                        self._tip = None
                    self._fold_one(e)
                    if self._pending or self._buffer:
                        self._apply_overlay()
                    g = self._g
                    if g.missing_refs:
                        missing = g.missing_refs
                        g.missing_refs = set()
                        self._rebuild_texts(missing)
                    return True
        return False

    def receive_many(
        self,
        msgs: Iterable[Message],
        server_seqs: Iterable[int | None] | None = None,
        *,
        validate: bool = True,
    ) -> int:
        """Take many confirmed messages with one re-fold (joins, catch-up). Returns # new.

        All messages are validated first: if any is malformed nothing is applied.
        """
        batch = list(msgs)
        seqs = list(server_seqs) if server_seqs is not None else [None] * len(batch)
        if len(seqs) != len(batch):
            raise CRDTUsageError("server_seqs must match msgs in length")
        if validate:
            for i, m in enumerate(batch):
                try:
                    validate_message(m, limits=self.limits)
                except CRDTValidationError as exc:
                    field = f"msgs[{i}].{exc.field}" if len(batch) > 1 else exc.field
                    raise CRDTValidationError(field, exc.message) from None
        start = 0
        added = 0
        for m, sq in zip(batch, seqs, strict=True):
            if sq is not None:
                m.serverSeq = sq
            if not self._fast_append(m):
                break
            start += 1
        if start == len(batch):
            return start
        added = start
        batch = batch[start:]
        seqs = seqs[start:]
        low: int | None = None
        fast: list[_Entry] = []
        new: list[_Entry] = []
        flipped: set[str] = set()
        for m0, s in zip(batch, seqs, strict=True):
            m = m0
            if s is not None:
                m.serverSeq = s
            old = self._by_id.get(m.id)
            if old is not None:
                if m.serverSeq is not None and old.msg.serverSeq is None:
                    pos = self._reposition(old, m.serverSeq)
                    low = pos if low is None else min(low, pos)
                continue
            if m.id in self._seen:
                continue
            own = self._pending_ids.pop(m.id, None)
            if own is not None:
                self._pending.remove(own)
                if own.ops is not m.ops:
                    own.serverSeq = m.serverSeq
                    m = own
                for target, _ in _Entry(m, sort_key(m)).metas:
                    self._metas.get(target, {}).pop(m.id, None)
                    flipped.add(target)
            added += 1
            self._note_clock(m)
            e = _Entry(m, sort_key(m))
            new.append(e)
            p = bisect.bisect_right(self._keys, e.key)
            self._keys.insert(p, e.key)
            self._entries.insert(p, e)
            self._by_id[m.id] = e
            e.excluded = m.id in self._excluded
            for target, undo in e.metas:
                self._metas.setdefault(target, {})[m.id] = (e.key, undo)
                flipped.add(target)
            if low is None and p == len(self._entries) - 1 and p == self._folded + len(fast):
                fast.append(e)
            else:
                low = p if low is None else min(low, p)
                if fast:
                    low = min(low, self._folded)
                    fast.clear()
        if added == start and low is None and not flipped:
            return added
        self._after_change(low, fast, flipped, new=new)
        return added

    def ack(self, msg_id: str, server_seq: int | None = None) -> bool:
        """The server persisted our message ``msg_id`` at ``server_seq``: confirm it.

        Returns False if ``msg_id`` is not one of our pending messages (already confirmed).
        """
        m = self._pending_ids.get(msg_id)
        if m is None:
            e = self._by_id.get(msg_id)
            if e is not None and server_seq is not None and e.msg.serverSeq is None:
                pos = self._reposition(e, server_seq)
                self._after_change(pos, [], set())
            return False
        self.receive_many([m], [server_seq], validate=False)
        return True

    def reject(self, msg_id: str) -> bool:
        """The server refused our pending message: drop it (and its optimistic effect)."""
        m = self._pending_ids.pop(msg_id, None)
        if m is None:
            return False
        self._pending.remove(m)
        e = _Entry(m, sort_key(m))
        flipped = set()
        for target, _ in e.metas:
            self._metas.get(target, {}).pop(m.id, None)
            flipped.add(target)
        self._after_change(None, [], flipped, extra_texts=e.texts)
        return True

    # ------------------------------------------------------------------------------ local edits

    def edit(self, op: Op | Mapping[str, Any], ts: float) -> Op:
        """Buffer a local op and apply it optimistically; returns the (wire-form) op buffered.

        Additive ops of the same otype on the same ``key:path`` merge (sum / product /
        quaternion product); other ops replace the slot; text ops always get their own slot.
        Position-based text edits (``position``/``length``) are translated into the wire form
        here. Raises :class:`CRDTValidationError` for a malformed op (nothing changes).
        """
        if not isinstance(op, Op):
            try:
                op = msgspec.convert(op, Op)
            except msgspec.MsgspecError as exc:
                raise CRDTValidationError("op", str(exc)) from None
        validate_op(op, "op", limits=self.limits, local=True)
        if op.ot in META_OTYPES:
            raise CRDTValidationError("op.ot", "use undo()/redo() for meta ops")
        if op.ot in TEXT_OTYPES:
            op = self._local_text(op, ts)
        self._ensure_tip()
        self._buffer_ts = ts
        if op.ot in TEXT_OTYPES:
            self._text_slot += 1
            self._buffer[f"\x00text:{self._text_slot}"] = op
            self._g.apply_ops([op], self.lt + 1, self.session_id, ts)
            return op
        slot = f"{op.key}:{op.path}"
        old = self._buffer.get(slot)
        if old is None:
            self._buffer[slot] = op
            self._g.apply_ops([op], self.lt + 1, self.session_id, ts)
            return op
        if old.ot == op.ot and op.ot in ADDITIVE_OTYPES:
            op = msgspec.structs.replace(old, value=_merge(op.ot, old.value, op.value))
        self._buffer[slot] = op
        self._rebase()
        return op

    def _local_text(self, op: Op, ts: float) -> Op:
        """Translate a position-based text edit into its wire form (applies it to the doc)."""
        if op.ot == "text.init" or (op.position is UNSET):
            return op
        k = (op.key, op.path)
        d = self._g.texts.get(k)
        if d is None:
            d = TextDoc(self.session_id)
            self._g.texts[k] = d
        v = op.value
        content = v[1] if isinstance(v, list) else v
        assert isinstance(op.position, int)
        try:
            if op.ot == "text.insert":
                assert isinstance(content, str)
                ins = d.local_insert(op.position, content, ts, agent=self.session_id)
                return Op(
                    ot=op.ot,
                    key=op.key,
                    path=op.path,
                    id=ins.id,
                    value=ins.value,
                    seq=ins.seq,
                    ts=ins.ts,
                )
            length = op.length if isinstance(op.length, int) else 0
            if op.ot == "text.delete":
                de = d.local_delete(op.position, length)
                return Op(ot=op.ot, key=op.key, path=op.path, rm=[list(r) for r in de.rm])
            assert isinstance(content, str)
            rep = d.local_replace(op.position, length, content, ts, agent=self.session_id)
            out = Op(ot=op.ot, key=op.key, path=op.path, rm=[list(r) for r in rep.rm])
            if rep.insert is not None:
                out.id = rep.insert.id
                out.value = rep.insert.value
                out.seq = rep.insert.seq
                out.ts = rep.insert.ts
            else:
                out.ot = "text.delete"
            return out
        except TextOpError as exc:
            raise CRDTValidationError(f"op.{exc.field}", str(exc)) from None

    def commit(self, ts: float | None = None) -> Message | None:
        """Turn the edit buffer into a message (None if empty) and return it for sending."""
        if not self._buffer:
            return None
        ops = list(self._buffer.values())
        if ts is None:
            ts = self._buffer_ts
        msg = self._new_message(ops, ts)
        self._buffer.clear()
        self._commit_message(msg, rebase=ts != self._buffer_ts)
        return msg

    def cancel(self) -> None:
        """Drop the edit buffer and its optimistic effect."""
        if not self._buffer:
            return
        texts = {(o.key, o.path) for o in self._buffer.values() if o.ot in TEXT_OTYPES}
        self._buffer.clear()
        self._after_change(None, [], set(), extra_texts=texts)

    def undo(self, ts: float) -> Message | None:
        """Undo our newest effective message (committing the buffer first). None if nothing."""
        if self._buffer:
            self.commit(ts)
        target = self._own_target(excluded=False)
        if target is None:
            return None
        return self._meta_message("meta.undo", target, ts)

    def redo(self, ts: float) -> Message | None:
        """Redo our newest undone message. None if nothing is undone."""
        target = self._own_target(excluded=True)
        if target is None:
            return None
        return self._meta_message("meta.redo", target, ts)

    # ------------------------------------------------------------------------------ snapshots

    def snapshot(self, upto: int | None = None) -> Snapshot:
        """Snapshot of the base + the first ``upto`` confirmed messages (default: all)."""
        n = len(self._entries) if upto is None else max(0, min(upto, len(self._entries)))
        g = self._fold_prefix(n)
        texts = g.texts
        lt = 0
        clock = dict(self._base_clock)
        seen = list(self._seen)
        seq = self._seq
        for e in self._entries[:n]:
            m = e.msg
            lt = max(lt, m.lt)
            c = m.clock.get(m.client, 0)
            if c > clock.get(m.client, 0):
                clock[m.client] = c
            seen.append(m.id)
            if m.serverSeq is not None:
                seq = max(seq, m.serverSeq)
        return Snapshot(
            root_key=g.root_key,
            nodes=[_encode_node(x) for x in g.nodes.values()],
            texts=[(k, p, d.snapshot()) for (k, p), d in sorted(texts.items())],
            lt=max(lt, self._base_lt),
            clock=clock,
            seen=seen,
            seq=seq,
        )

    def compact(self, upto: int | None = None) -> Snapshot:
        """Fold the first ``upto`` confirmed messages (default: all) into the base snapshot.

        The journal tail after ``upto`` is kept; exclusions of folded messages become final.
        Returns the new snapshot.
        """
        snap = self.snapshot(upto)
        n = len(self._entries) if upto is None else max(0, min(upto, len(self._entries)))
        tail = self._entries[n:]
        pending = self._pending
        buffer = self._buffer
        self._reset_from(snap)
        for e in tail:
            self._entries.append(e)
            self._keys.append(e.key)
            self._by_id[e.msg.id] = e
            for target, undo in e.metas:
                self._metas.setdefault(target, {})[e.msg.id] = (e.key, undo)
        self._pending = pending
        self._pending_ids = {m.id: m for m in pending}
        for m in pending:
            for target, undo in _Entry(m, sort_key(m)).metas:
                self._metas.setdefault(target, {})[m.id] = ((2, m.lt, m.client, m.id), undo)
        self._buffer = buffer
        self._excluded = {t for t in self._metas if self._status(t)}
        for e in self._entries:
            e.excluded = e.msg.id in self._excluded
        all_texts: set[tuple[str, str]] = set(self._g.texts)
        for e in tail:
            all_texts |= e.texts
        self._refold(0)
        self._rebuild_texts(all_texts)
        return snap

    @classmethod
    def from_snapshot(
        cls,
        session_id: str,
        snapshot: Snapshot,
        tail: Iterable[Message] = (),
        *,
        sequenced: bool = False,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Replica:
        """A replica rebuilt from a snapshot plus the confirmed journal tail."""
        r = cls(session_id, sequenced=sequenced, limits=limits, snapshot=snapshot)
        r.receive_many(tail)
        return r

    # ------------------------------------------------------------------------------ internals

    def _load_snapshot(self, snap: Snapshot) -> None:
        if snap.version != SNAPSHOT_VERSION:
            raise CRDTUsageError(f"unsupported snapshot version {snap.version}")
        g = self._g
        g.nodes = {s.key: _decode_node(s) for s in snap.nodes}
        g.root_key = snap.root_key
        g._own = set()
        try:
            g.texts = {(k, p): TextDoc.from_snapshot(raw) for k, p, raw in snap.texts}
        except TextOpError as exc:
            raise CRDTValidationError(f"texts.{exc.field}", str(exc)) from None
        self._base_texts = {(k, p): raw for k, p, raw in snap.texts}
        self._seen = set(snap.seen)
        self._seq = snap.seq
        self._base_lt = snap.lt
        self._base_clock = dict(snap.clock)
        self.lt = max(self.lt, snap.lt)
        for c, v in snap.clock.items():
            if v > self.clock.get(c, 0):
                self.clock[c] = v

    def _reset_from(self, snap: Snapshot) -> None:
        lt, clock = self.lt, self.clock
        self._g = SceneGraph(cow=True)
        self._entries = []
        self._keys = []
        self._by_id = {}
        self._metas = {}
        self._unresolved = set()
        self._load_snapshot(snap)
        self.lt = max(lt, self.lt)
        self.clock = clock
        self._cps = [(0, self._g.checkpoint())]
        self._folded = 0
        self._tip = None

    def _note_clock(self, m: Message) -> None:
        self.lt = max(self.lt, m.lt)
        c = m.clock.get(m.client, 0)
        if c > self.clock.get(m.client, 0):
            self.clock[m.client] = c

    def _reposition(self, e: _Entry, seq: int) -> int:
        """Move ``e`` to its place as a sequenced message; returns the lowest changed index."""
        old = bisect.bisect_left(self._keys, e.key)
        del self._keys[old]
        del self._entries[old]
        e.msg.serverSeq = seq
        e.key = sort_key(e.msg)
        p = bisect.bisect_right(self._keys, e.key)
        self._keys.insert(p, e.key)
        self._entries.insert(p, e)
        for target, undo in e.metas:
            self._metas.setdefault(target, {})[e.msg.id] = (e.key, undo)
        return min(old, p)

    def _status(self, target: str) -> bool:
        metas = self._metas.get(target)
        if not metas:
            return False
        return max(metas.values())[1]

    def _after_change(
        self,
        low: int | None,
        fast: list[_Entry],
        flipped: set[str],
        *,
        new: Iterable[_Entry] = (),
        extra_texts: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Bring the visible graph up to date after the journal/pending/buffer changed."""
        rebuild: set[tuple[str, str]] = set(extra_texts)
        for target in flipped:
            now = self._status(target)
            if now == (target in self._excluded):
                continue
            if now:
                self._excluded.add(target)
            else:
                self._excluded.discard(target)
            e = self._by_id.get(target)
            if e is not None:
                e.excluded = now
                rebuild |= e.texts
                pos = bisect.bisect_left(self._keys, e.key)
                if pos < self._folded:
                    low = pos if low is None else min(low, pos)
                    fast = []
            else:
                pm = self._pending_ids.get(target)
                if pm is not None:
                    rebuild |= _Entry(pm, sort_key(pm)).texts
        if low is not None:
            self._refold(low)
        else:
            if self._tip is not None:
                self._g.restore(self._tip)
                self._tip = None
            for e in fast:
                self._fold_one(e)
            self._apply_overlay()
        if self._unresolved:
            # a doc that once saw an unknown char id is rebuilt until all ids are known
            for e in new:
                rebuild |= e.texts & self._unresolved
        g = self._g
        if g.missing_refs:
            rebuild |= g.missing_refs
            g.missing_refs = set()
        if rebuild:
            self._rebuild_texts(rebuild)

    def _fold_one(self, e: _Entry) -> None:
        if not e.excluded:
            self._g.apply_message(e.msg)
        self._folded += 1
        last = self._cps[-1][0]
        # dense checkpoints while messages arrive out of order (short re-folds), sparse ones
        # otherwise (each checkpoint makes the next write of every node clone it)
        if self._ooo_recent:
            self._ooo_recent -= 1
            every = self._cp_every
        else:
            every = max(self._cp_every, len(self._g.nodes) << 1)
        if self._folded - last >= every:
            self._cps.append((self._folded, self._g.checkpoint()))
            if len(self._cps) > _MAX_CHECKPOINTS:
                # thin the older half, keep the base and the recent ones
                del self._cps[1 : _MAX_CHECKPOINTS // 2 : 2]

    def _refold(self, low: int) -> None:
        self._ooo_recent = 4096
        cps = self._cps
        i = len(cps) - 1
        while cps[i][0] > low:
            i -= 1
        del cps[i + 1 :]
        pos, cp = cps[i]
        self._g.restore(cp)
        self._tip = None
        self._folded = pos
        for e in self._entries[pos:]:
            self._fold_one(e)
        self._apply_overlay()

    def _ensure_tip(self) -> None:
        if self._tip is None:
            self._tip = self._g.checkpoint()

    def _apply_overlay(self) -> None:
        """Apply pending messages and the buffer on top of the fold (tip saved first)."""
        if not self._pending and not self._buffer:
            self._tip = None
            return
        self._tip = self._g.checkpoint()
        g = self._g
        for m in self._pending:
            if m.id not in self._excluded:
                g.apply_message(m)
        if self._buffer:
            g.apply_ops(list(self._buffer.values()), self.lt + 1, self.session_id, self._buffer_ts)

    def _rebase(self) -> None:
        if self._tip is not None:
            self._g.restore(self._tip)
            self._tip = None
        self._apply_overlay()

    def _rebuild_texts(self, targets: Iterable[tuple[str, str]]) -> None:
        """Rebuild text docs from the snapshot's docs + every included op, canonical order."""
        targets = set(targets)
        if not targets:
            return
        scratch = SceneGraph()
        for k in targets:
            raw = self._base_texts.get(k)
            if raw is not None:
                scratch.texts[k] = TextDoc.from_snapshot(raw)

        def feed(m: Message) -> None:
            ts = m.ts if m.ts is not None else 0
            for op in m.ops:
                if op.ot in TEXT_OTYPES and (op.key, op.path) in targets:
                    apply_text_only(scratch, op, m.client, ts)

        for e in self._entries:
            if not e.excluded and e.texts & targets:
                feed(e.msg)
        for m in self._pending:
            if m.id not in self._excluded:
                feed(m)
        for op in self._buffer.values():
            if op.ot in TEXT_OTYPES and (op.key, op.path) in targets:
                apply_text_only(scratch, op, self.session_id, self._buffer_ts)
        for k in targets:
            d = scratch.texts.get(k)
            if d is not None:
                self._g.texts[k] = d
            else:
                self._g.texts.pop(k, None)
            if k in scratch.missing_refs:
                self._unresolved.add(k)
            else:
                self._unresolved.discard(k)

    def _fold_prefix(self, n: int) -> SceneGraph:
        """A graph (with its own text docs) equal to base + the first ``n`` confirmed messages."""
        g = SceneGraph(cow=True)
        g.restore(self._cps[0][1])
        g.texts = {k: TextDoc.from_snapshot(raw) for k, raw in self._base_texts.items()}
        for e in self._entries[:n]:
            if not e.excluded:
                g.apply_message(e.msg)
        return g

    def _new_message(self, ops: list[Op], ts: float) -> Message:
        self.lt += 1
        self.clock[self.session_id] = self.clock.get(self.session_id, 0) + 1
        return Message(
            id=f"{self.session_id}:{self.lt}",
            client=self.session_id,
            lt=self.lt,
            ts=ts,
            ops=ops,
            clock=dict(self.clock),
        )

    def _commit_message(self, msg: Message, *, rebase: bool) -> None:
        e = _Entry(msg, sort_key(msg))
        if not self.sequenced:
            self._buffer.clear()
            self._pending_ids[msg.id] = msg
            self._pending.append(msg)
            self.receive_many([msg], validate=False)
            return
        self._pending.append(msg)
        self._pending_ids[msg.id] = msg
        flipped = set()
        for target, undo in e.metas:
            self._metas.setdefault(target, {})[msg.id] = ((2, msg.lt, msg.client, msg.id), undo)
            flipped.add(target)
        if flipped or rebase:
            self._after_change(None, [], flipped)

    def _own_target(self, *, excluded: bool) -> str | None:
        for m in reversed(self._pending):
            if not any(o.ot in META_OTYPES for o in m.ops) and (m.id in self._excluded) == excluded:
                return m.id
        for e in reversed(self._entries):
            m = e.msg
            if m.client == self.session_id and not e.metas and (m.id in self._excluded) == excluded:
                return m.id
        return None

    def _meta_message(self, ot: str, target: str, ts: float) -> Message:
        msg = self._new_message([Op(ot=ot, key="_meta", path="_meta", targetMsgId=target)], ts)
        self._commit_message(msg, rebase=False)
        return msg


def _merge(ot: str, a: Any, b: Any) -> Any:
    """Merge two buffered additive values (reference §5 ``edit``)."""
    if ot == "number.add":
        return a + b
    if ot == "number.multiply":
        return a * b
    if ot == "vector3.add":
        return [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
    return quat_mul(a, b)  # quaternion.multiply: (cur ⊗ a) ⊗ b == cur ⊗ (a ⊗ b)
