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
arrived out of order, else every ``max(8, 8 * nodes)`` (each checkpoint makes the next write of
every node clone it, so this bounds clones to one per eight messages; the price is a re-fold of
up to ``8 * nodes`` messages for a late arrival or an undo of an old message), and are thinned
to a bounded count. A batch of in-order sequenced messages (a join, catch-up, a room server's
committed batch) is folded in one pass over the messages -- for each: the order and dedupe
checks, the handler lookups (a meta op stops the run before any op of its message is applied),
the dedupe index, clocks and ops -- and checkpointed at most once, at its end; the first message
that is not new, in order, sequenced and meta-free hands the rest of the batch to the general
path, so the result is always the one of taking the messages one at a time.
Pending local edits sit on top of a "tip" checkpoint and are re-applied after every change of
the fold (rebase).

Undo/redo are *exclusion from replay* (reference §5): a message's non-meta ops are skipped while
the last ``meta.undo``/``meta.redo`` naming it (in canonical order; pending metas count as the
newest) is an undo. Unlike the reference, an undo that arrives before its target still applies.

Text: text ops integrate into the per-(key, path) :class:`~durasync.crdt.text.TextDoc` as they
are folded (idempotent on re-fold), and only while their node is live at their place in the
fold (a text op on a missing or tombstoned node is a no-op, like every property op). When a doc
sees an op naming a char it does not hold (non-causal arrival, or an anchor inside an undone
message), when a message with text ops is excluded/re-included, or when the life of its node
changes under ops it already integrated (a ``node.insert``/``node.remove`` of that node landing
before the end of the fold, excluded/re-included or moved by its ``serverSeq``, or a confirmed
removal folded under own pending text edits), that doc is rebuilt from the snapshot's doc by
integrating every included text op in canonical order (a linear extension of causality) while
its node is live, so the text too depends only on the message set.

Text ids: a session never allocates one char id twice, even across undo and reload. The ids of
an undone insert are absent from the folded text but stay burnt (a redo brings the chars back;
a second char with the same id would be dropped as a duplicate by every replica that holds the
first, losing text or diverging). The replica keeps, per text doc, the high-water mark of its
own session's ids, raised by its local edits and by every message it takes that allocates ids
(``text.insert``/``text.replace`` ids, ``text.init`` with a value), excluded ones included; a
snapshot lists in ``Snapshot.burnt`` the ids of undone inserts it folded (their chars are not
in its docs), so a client that reloads from the server's snapshot + journal with its old
session id recovers the mark from both and types past it.

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
import math
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import msgspec
from msgspec import UNSET

from durasync.crdt.canonical import canonical_json, checksum
from durasync.crdt.errors import CRDTUsageError, CRDTValidationError, TextOpError
from durasync.crdt.graph import (
    _HANDLERS,
    TEXT,
    Checkpoint,
    Node,
    SceneGraph,
    apply_text_only,
    quat_mul,
)
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
from durasync.crdt.text import TextDoc

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
#: The one handler of every text otype (a fold records text keys when it meets it).
_TEXT_HANDLER: Final = _HANDLERS["text.insert"]
_SERVER_SEQ: Final = operator.attrgetter("serverSeq")
_NO_METAS: Final[tuple[tuple[str, bool], ...]] = ()
#: The ops that start or end a node's life (text ops apply only in between).
_LIFECYCLE_OTYPES: Final = frozenset({"node.insert", "node.remove"})


def _metas_of(msg: Message) -> tuple[tuple[str, bool], ...]:
    """``(target id, is_undo)`` of every meta op of ``msg`` (usually none)."""
    out = _NO_METAS
    for op in msg.ops:
        ot = op.ot
        if ot[0] == "m" and ot in META_OTYPES:
            assert isinstance(op.targetMsgId, str)
            out = (*out, (op.targetMsgId, ot == "meta.undo"))
    return out


def _texts_of(msg: Message) -> frozenset[tuple[str, str]]:
    """The ``(key, path)`` of every text doc ``msg`` touches (usually none)."""
    return frozenset((op.key, op.path) for op in msg.ops if op.ot in TEXT_OTYPES)


def _text_ids_used(op: Op, client: str) -> tuple[str, int] | None:
    """``(agent, next id number)`` of the chars a text op creates, or None if it creates none.

    ``text.insert``/``text.replace`` create ``agent:n .. agent:n+len-1`` (their ``id`` and
    content); ``text.init`` with a value creates ``client:0 ..`` (graph ``apply_text_only``).
    """
    if op.ot == "text.init":
        v = op.value
        return (client, len(v)) if type(v) is str and v else None
    if op.ot == "text.delete" or type(op.id) is not str:
        return None
    agent, sep, num = op.id.rpartition(":")
    v = op.value
    if not sep or not num.isdigit() or type(v) is not list or len(v) != 2:
        return None
    content = v[1]
    return (agent, int(num) + len(content)) if type(content) is str else None


def _text_ids_of(msg: Message) -> Iterator[tuple[str, str, str, int]]:
    """``(key, path, agent, next id number)`` for every text op of ``msg`` that creates chars."""
    for op in msg.ops:
        if op.ot in TEXT_OTYPES:
            used = _text_ids_used(op, msg.client)
            if used is not None:
                yield op.key, op.path, used[0], used[1]


def _lifecycle_keys(msg: Message) -> set[str]:
    """Keys of the nodes ``msg`` inserts or removes (whose life a text op depends on)."""
    out: set[str] = set()
    for op in msg.ops:
        ot = op.ot
        if ot == "node.remove":
            out.add(op.value)
        elif ot == "node.insert":
            out.add(op.value["key"])
    return out


class _NodeLife:
    """Whether watched nodes are live while ops are replayed in fold order.

    Mirrors the ``node.insert``/``node.remove`` handlers of :mod:`~durasync.crdt.graph` for
    the node keys in ``watch``, starting from ``base`` (the snapshot's nodes): an insert makes
    a missing node live (never a removed one), a remove kills an existing one for good.
    """

    __slots__ = ("_state", "_watch")

    def __init__(self, base: Mapping[str, Node], watch: Iterable[str]) -> None:
        self._watch = set(watch)
        self._state: dict[str, bool] = {}
        for k in self._watch:
            n = base.get(k)
            if n is not None:
                self._state[k] = n.deleted_at is None

    def step(self, op: Op) -> None:
        """Follow one ``node.insert``/``node.remove`` (other ops are ignored)."""
        ot = op.ot
        if ot == "node.insert":
            k = op.value["key"]
            if k in self._watch and k not in self._state:
                self._state[k] = True
        elif ot == "node.remove" and op.value in self._state:
            self._state[op.value] = False

    def live(self, key: str) -> bool:
        """Whether ``key`` (watched) is live at this point of the replay."""
        return self._state.get(key, False)


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
    ``seq`` is the highest ``serverSeq`` folded (-1 if none). ``burnt`` lists, per text doc
    and agent, ``(key, path, agent, next id number)`` for the char ids allocated by folded
    messages that were excluded (undone) when folded, whose chars are therefore absent from
    ``texts``: a session reloading from this snapshot never allocates those ids again (module
    docstring, "Text ids"). Empty (and then omitted, so the encoding is the one of snapshots
    written before the field existed) when no folded text insert was undone; snapshots
    without it decode with it empty. Serialisable with msgspec to JSON or msgpack;
    :meth:`Replica.from_snapshot` + the journal tail rebuilds the same graph.
    """

    version: int = SNAPSHOT_VERSION
    root_key: str = ""
    nodes: list[NodeState] = msgspec.field(default_factory=list)
    texts: list[tuple[str, str, Any]] = msgspec.field(default_factory=list)
    lt: int = 0
    clock: dict[str, int] = msgspec.field(default_factory=dict)
    seen: list[str] = msgspec.field(default_factory=list)
    seq: int = -1
    burnt: list[tuple[str, str, str, int]] = msgspec.field(default_factory=list)


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
    8 * nodes)`` so that copy-on-write clones stay below one per eight messages.
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
        # The confirmed journal tail in canonical order. Messages are stored as they are (no
        # per-message wrapper object: joins and the room server's apply path allocate nothing
        # per message but what the fold itself needs). Sort keys are materialised lazily:
        # ``_keys[i] == sort_key(_msgs[i])`` for ``i < len(_keys)``; ``_key_list()`` completes
        # the list before any bisect (only out-of-order arrivals and undo/redo need one).
        self._msgs: list[Message] = []
        self._keys: list[SortKey] = []
        self._by_id: dict[str, Message] = {}
        # (key, path) of the text docs touched by confirmed messages that have text ops
        self._text_keys: dict[str, frozenset[tuple[str, str]]] = {}
        self._seen: set[str] = set()
        self._seq = -1
        self._pending: list[Message] = []
        self._pending_ids: dict[str, Message] = {}
        self._buffer: dict[str, Op] = {}
        #: Highest own text-id clock used per doc: ids of undone inserts stay burnt.
        self._text_hwm: dict[tuple[str, str], int] = {}
        self._buffer_ts: float = 0
        self._text_slot = 0
        # target id -> {meta message id: (order, is_undo)}
        self._metas: dict[str, dict[str, tuple[tuple[int, int, str, str], bool]]] = {}
        self._excluded: set[str] = set()
        self._unresolved: set[tuple[str, str]] = set()
        self._base_texts: dict[tuple[str, str], list[Any]] = {}
        #: Snapshot.burnt of the base: ids of undone inserts folded into it, per doc and agent
        self._base_burnt: dict[tuple[str, str, str], int] = {}
        self._base_lt = 0
        self._base_clock: dict[str, int] = {}
        # True while every live text doc integrated its ops in canonical order (in-place folds
        # of messages that sort last, canonical rebuilds), so it equals a re-fold's doc and
        # snapshot() may encode it. Integration in arrival order is not always the same: an
        # op whose anchor sorts after it is placed at the document start by the canonical
        # fold (reference §4 unknown anchor) but after its anchor when the anchor arrived
        # first. Cleared by a message with text ops that lands before the end of the journal
        # and by local text edits (they also cover pending messages moved by an ack); set
        # again by compact(). Re-folds for undo/redo keep it: they rebuild the docs touched.
        self._texts_canonical = True
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
        return list(self._msgs)

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
        Received messages are kept in the journal: do not mutate them afterwards.
        """
        if validate:
            validate_message(msg, limits=self.limits)
        if (
            self._folded == len(self._msgs)
            and not self._unresolved
            and self._take_in_order(msg, server_seq)
        ):
            self._after_in_order((msg,))
            return True
        seqs = None if server_seq is None else (server_seq,)
        return self.receive_many((msg,), seqs, validate=False) == 1

    def receive_many(
        self,
        msgs: Iterable[Message],
        server_seqs: Iterable[int | None] | None = None,
        *,
        validate: bool = True,
    ) -> int:
        """Take many confirmed messages with one re-fold (joins, catch-up). Returns # new.

        All messages are validated first: if any is malformed nothing is applied
        (:class:`CRDTValidationError` naming ``msgs[i].field``). ``validate=False`` is for
        messages validated already (decoded with
        :func:`~durasync.crdt.messages.decode_message`, read back from our own journal): a
        malformed message then is a caller bug and may corrupt the graph.

        The messages that sort after everything folded so far (a join, a server's in-order
        stream) are folded in place by one tight loop (:meth:`_fold_in_order`); the rest go
        through the general path (bisect insert, re-fold from a checkpoint).
        """
        batch = msgs if type(msgs) is list or type(msgs) is tuple else list(msgs)
        n = len(batch)
        if server_seqs is not None:
            seqs = (
                server_seqs
                if type(server_seqs) is list or type(server_seqs) is tuple
                else list(server_seqs)
            )
            if len(seqs) != n:
                raise CRDTUsageError("server_seqs must match msgs in length")
        else:
            seqs = None
        if validate:
            for i, m in enumerate(batch):
                try:
                    validate_message(m, limits=self.limits)
                except CRDTValidationError as exc:
                    field = f"msgs[{i}].{exc.field}" if n > 1 else exc.field
                    raise CRDTValidationError(field, exc.message) from None
        start = self._fold_in_order(batch, seqs)
        if start == n:
            return start
        added = start
        low: int | None = None
        fast: list[Message] = []
        new: list[Message] = []
        flipped: set[str] = set()
        # nodes whose life changes before the end of the fold (text docs to rebuild)
        lifecycle: set[str] = set()
        by_id = self._by_id
        for i in range(start, n):
            m = batch[i]
            s = m.serverSeq if seqs is None or seqs[i] is None else seqs[i]
            mid = m.id
            stored = by_id.get(mid)
            if stored is not None:
                # a resend or the echo of a message we hold: it may bring its serverSeq
                if s is not None and stored.serverSeq is None:
                    pos = self._reposition(stored, s)
                    low = pos if low is None else min(low, pos)
                    lifecycle |= _lifecycle_keys(stored)
                continue
            if mid in self._seen:
                continue
            m.serverSeq = s
            own = self._pending_ids.pop(mid, None)
            if own is not None:
                self._pending.remove(own)
                if own.ops is not m.ops:
                    own.serverSeq = s
                    m = own
                for target, _ in _metas_of(m):
                    self._metas.get(target, {}).pop(mid, None)
                    flipped.add(target)
            added += 1
            self._note_clock(m)
            new.append(m)
            key = sort_key(m)
            keys = self._key_list()
            p = bisect.bisect_right(keys, key)
            keys.insert(p, key)
            self._msgs.insert(p, m)
            by_id[mid] = m
            texts = _texts_of(m)
            if texts:
                self._text_keys[mid] = texts
                self._note_text_ids(m)
            for target, undo in _metas_of(m):
                self._metas.setdefault(target, {})[mid] = (key, undo)
                flipped.add(target)
            if low is None and p == len(self._msgs) - 1 and p == self._folded + len(fast):
                fast.append(m)
            else:
                if texts and p < len(self._msgs) - 1:
                    # its text ops integrate after ops of messages that sort after it
                    self._texts_canonical = False
                if p < len(self._msgs) - 1:
                    lifecycle |= _lifecycle_keys(m)
                low = p if low is None else min(low, p)
                if fast:
                    low = min(low, self._folded)
                    fast.clear()
        if added == start and low is None and not flipped:
            return added
        self._after_change(low, fast, flipped, new=new, lifecycle=lifecycle)
        return added

    def _fold_in_order(self, batch: Sequence[Message], seqs: Sequence[int | None] | None) -> int:
        """Fold the longest prefix of ``batch`` that sorts after everything folded so far.

        This is the common case of a join and of a server's own stream: each message is new,
        has no meta op and sorts after the last confirmed message, and the fold is up to date,
        so the message is appended and applied in place -- no sort key, no bisect, no wrapper
        object, no re-fold. Returns how many messages it took; the rest of the batch goes
        through the general path of :meth:`receive_many`. The resulting state is exactly what
        the general path would produce (same journal order, same fold).

        Sequenced messages go through :meth:`_fold_sequenced_run` (one pass, checks fused
        with the apply); unsequenced ones, and every message while disorder is recent (dense
        checkpoints, as in :meth:`_fold_one`), through :meth:`_take_in_order`. A run of
        sequenced messages is checkpointed at most once, at its end (a checkpoint in the
        middle of a long join would make every node written after it clone itself; the price
        is a longer re-fold if a message later lands inside that run).
        """
        if self._folded != len(self._msgs) or self._unresolved:
            return 0
        n = len(batch)
        i = 0
        if n > 3 and self._ooo_recent == 0:
            i = self._fold_sequenced_run(batch, seqs)
            if i:
                self._maybe_checkpoint()
        take = self._take_in_order
        while i < n:
            s = None if seqs is None else seqs[i]
            if not take(batch[i], s):
                break
            i += 1
        if i:
            self._after_in_order(batch[:i] if i < n else batch)
        elif self._tip is None and (self._pending or self._buffer):
            self._apply_overlay()  # _fold_sequenced_run took the overlay off but took nothing
        return i

    def _take_in_order(self, m: Message, s: int | None) -> bool:
        """Append and apply ``m`` if it is new, has no meta op and sorts after the last
        confirmed message (the fold being up to date); else change nothing, return False.

        The caller finishes with :meth:`_after_in_order` (overlay, text rebuilds).
        """
        mid = m.id
        if mid in self._by_id or mid in self._seen or mid in self._pending_ids:
            return False
        if s is None:
            s = m.serverSeq
        msgs = self._msgs
        if msgs:
            last = msgs[-1]
            ls = last.serverSeq
            if s is not None:
                # after a sequenced message only a higher serverSeq; never after an
                # unsequenced one (sort_key: sequenced messages sort first)
                if ls is None or s <= ls:
                    return False
            elif ls is None and (1, m.lt, m.client, mid) <= sort_key(last):
                return False
        ops = m.ops
        texts: set[tuple[str, str]] | None = None
        for op in ops:
            ot = op.ot
            c = ot[0]
            if c == "m" and ot in META_OTYPES:
                return False
            if c == "t" and ot in TEXT_OTYPES:
                if texts is None:
                    texts = set()
                texts.add((op.key, op.path))
        g = self._g
        if self._tip is not None:
            g.restore(self._tip)
            self._tip = None
        m.serverSeq = s
        msgs.append(m)
        self._by_id[mid] = m
        if texts is not None:
            self._text_keys[mid] = frozenset(texts)
            self._note_text_ids(m)
        lt = m.lt
        if lt > self.lt:  # noqa: PLR1730 -- no max() call on the per-message path
            self.lt = lt
        client = m.client
        ck = m.clock
        if ck:
            cc = ck.get(client)
            if cc is not None and cc > self.clock.get(client, 0):
                self.clock[client] = cc
        if not (self._excluded and mid in self._excluded):
            ts = m.ts
            if ts is None:
                ts = 0
            handlers = _HANDLERS
            for op in ops:
                fn = handlers.get(op.ot)
                if fn is not None:
                    fn(g, op, lt, client, ts)
        self._folded += 1
        self._maybe_checkpoint()
        return True

    def _after_in_order(self, taken: Sequence[Message]) -> None:
        """Re-apply the overlay and rebuild text docs that saw unknown ids, or whose node one
        of the ``taken`` messages (folded in place) removed under own pending text edits."""
        rebuild = None
        if self._pending or self._buffer:
            self._apply_overlay()
            rebuild = self._removed_under_overlay(taken)
        g = self._g
        if g.missing_refs:
            missing = g.missing_refs
            g.missing_refs = set()
            rebuild = missing if not rebuild else rebuild | missing
        if rebuild:
            self._rebuild_texts(rebuild)

    def _fold_sequenced_run(
        self, batch: Sequence[Message], seqs: Sequence[int | None] | None
    ) -> int:
        """Append and apply the longest prefix of ``batch`` that a join can take in one pass.

        A message is taken while it is sequenced with a serverSeq above the last one folded,
        new (not confirmed, not earlier in the batch, not in the snapshot, not pending), not
        excluded by an early undo, and without meta op; the first message that is not stops
        the run, *before* any of its ops is applied (its handlers are looked up first), so
        what was taken is exactly a prefix that the per-message path would have taken too.
        Everything a message needs is done in the same pass over it (dedupe index, serverSeq,
        Lamport time, clock, text keys, ops): a journal of thousands of cold message objects
        is walked once. Returns the number taken; the caller checkpoints and re-applies the
        overlay. The overlay (pending + buffer) is taken off before the first op is applied.
        """
        msgs = self._msgs
        last: float = -math.inf
        if msgs:
            ls = msgs[-1].serverSeq
            if ls is None:
                return 0  # unsequenced messages sort after every sequenced one
            last = ls
        g = self._g
        if self._tip is not None:
            g.restore(self._tip)
            self._tip = None
        by_id = self._by_id
        seen = self._seen
        pend = self._pending_ids
        excl = self._excluded
        others = bool(seen or pend or excl)
        hget = _HANDLERS.get
        text_fn = _TEXT_HANDLER
        text_keys = self._text_keys
        clock = self.clock
        lt_max = self.lt
        taken = 0
        for m, s in zip(batch, map(_SERVER_SEQ, batch) if seqs is None else seqs, strict=False):
            if s is None or s <= last:
                break
            mid = m.id
            if mid in by_id or (others and (mid in seen or mid in pend or mid in excl)):
                break
            ops = m.ops
            lt = m.lt
            client = m.client
            ts = m.ts
            if ts is None:
                ts = 0
            # look every handler up before applying any op: a meta op stops the run here
            if len(ops) == 1:
                op = ops[0]
                fn = hget(op.ot)
                if fn is None:
                    break
                if fn is text_fn:
                    text_keys[mid] = frozenset(((op.key, op.path),))
                    self._note_text_ids(m)
                fn(g, op, lt, client, ts)
            else:
                fns = [hget(op.ot) for op in ops]
                if None in fns:
                    break
                if text_fn in fns:
                    text_keys[mid] = _texts_of(m)
                    self._note_text_ids(m)
                for op, f in zip(ops, fns, strict=True):
                    f(g, op, lt, client, ts)  # type: ignore[misc]
            by_id[mid] = m
            m.serverSeq = s
            last = s
            if lt > lt_max:  # noqa: PLR1730 -- no max() call in the per-message loop
                lt_max = lt
            ck = m.clock
            if ck:
                cc = ck.get(client)
                if cc is not None and cc > clock.get(client, 0):
                    clock[client] = cc
            taken += 1
        if taken:
            msgs.extend(batch if taken == len(batch) else batch[:taken])
            self._folded = len(msgs)
            self.lt = lt_max
        return taken

    def ack(self, msg_id: str, server_seq: int | None = None) -> bool:
        """The server persisted our message ``msg_id`` at ``server_seq``: confirm it.

        Returns False if ``msg_id`` is not one of our pending messages (already confirmed).
        """
        m = self._pending_ids.get(msg_id)
        if m is None:
            stored = self._by_id.get(msg_id)
            if stored is not None and server_seq is not None and stored.serverSeq is None:
                pos = self._reposition(stored, server_seq)
                self._after_change(pos, [], set(), lifecycle=_lifecycle_keys(stored))
            return False
        self.receive_many([m], [server_seq], validate=False)
        return True

    def reject(self, msg_id: str) -> bool:
        """The server refused our pending message: drop it (and its optimistic effect)."""
        m = self._pending_ids.pop(msg_id, None)
        if m is None:
            return False
        self._pending.remove(m)
        flipped = set()
        for target, _ in _metas_of(m):
            self._metas.get(target, {}).pop(m.id, None)
            flipped.add(target)
        self._after_change(
            None, [], flipped, extra_texts=_texts_of(m), lifecycle=_lifecycle_keys(m)
        )
        return True

    # ------------------------------------------------------------------------------ local edits

    def edit(self, op: Op | Mapping[str, Any], ts: float) -> Op:
        """Buffer a local op and apply it optimistically; returns the (wire-form) op buffered.

        Additive ops of the same otype on the same ``key:path`` merge (sum / product /
        quaternion product); other ops replace the slot; text ops always get their own slot.
        Position-based text edits (``position``/``length``) are translated into the wire form
        here. Raises :class:`CRDTValidationError` for a malformed op, or a position-based text
        edit of a node that is missing or removed in the visible graph (field ``op.key``; a
        text op there would have no effect anyway). Nothing changes then.
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
            # integrated into the live doc now, ahead of messages that may sort before it
            self._texts_canonical = False
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
        n = self._g.nodes.get(op.key)
        if n is None or n.deleted_at is not None:
            raise CRDTValidationError("op.key", f"node {op.key!r} is missing or removed")
        k = (op.key, op.path)
        d = self._g.texts.get(k)
        if d is None:
            d = TextDoc(self.session_id)
            self._g.texts[k] = d
        v = op.value
        content = v[1] if isinstance(v, list) else v
        assert isinstance(op.position, int)
        hwm = self._text_hwm.get(k)
        if hwm is not None:
            # An undo re-fold may have dropped our newest chars and with them the doc's clock.
            d.reserve(self.session_id, hwm)
        try:
            if op.ot == "text.insert":
                assert isinstance(content, str)
                ins = d.local_insert(op.position, content, ts, agent=self.session_id)
                self._text_hwm[k] = d.clock
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
                return Op(ot=op.ot, key=op.key, path=op.path, rm=list(de.rm))
            assert isinstance(content, str)
            rep = d.local_replace(op.position, length, content, ts, agent=self.session_id)
            self._text_hwm[k] = d.clock
            out = Op(ot=op.ot, key=op.key, path=op.path, rm=list(rep.rm))
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
        """Snapshot of the base + the first ``upto`` confirmed messages (default: all).

        When that is the whole journal, nothing local sits on top (no pending message, no
        buffered edit) and the text docs integrated their ops in canonical order and hold no
        unresolved char reference (an out-of-order text op, a local text edit, or an op naming
        a char a doc lacked -- a re-fold re-applies such ops to the live doc -- make it
        re-fold; the server folds its own sequence in place), the visible graph *is* that
        fold and is encoded directly, in O(graph + journal); otherwise the prefix is re-folded
        from the base (O(base + every message)). Both give the same snapshot content. The
        snapshot copies node tables and text docs and shares only property values, which the
        graph never mutates in place (every op stores a new value). Raises nothing.
        """
        total = len(self._msgs)
        n = total if upto is None else max(0, min(upto, total))
        if (
            n == total
            and self._texts_canonical
            and not self._unresolved
            and self._tip is None
            and not self._pending
            and not self._buffer
        ):
            headers = self._text_headers()
            if headers is not None:
                return self._snapshot_of(self._g, n, headers)
        return self._snapshot_of(self._fold_prefix(n), n)

    def _text_headers(self) -> dict[tuple[str, str], tuple[str, int]] | None:
        """The ``(agent, clock)`` each live text doc would have in a re-fold, or None.

        Doc *contents* do not depend on arrival order (canonical fold, idempotent
        integration), but a doc's local agent is whoever created it: here the first
        message that *arrived* (or our own local edit), in a re-fold the first included
        message in canonical order with a creating text op (anything but ``text.delete``,
        graph ``apply_text_only``) on a live node, or the base snapshot's doc. The agent's
        clock is one past its highest id held (``TextDoc.agent_clock``), at least the base
        doc's clock. None if a live doc has no such origin (the caller then re-folds).
        """
        docs = self._g.texts
        out: dict[tuple[str, str], tuple[str, int]] = {}
        for k, raw in self._base_texts.items():
            d = docs.get(k)
            if d is not None:
                out[k] = (raw[0], max(raw[1], d.agent_clock(raw[0])))
        missing = len(docs) - len(out)
        if missing:
            excluded = self._excluded
            # a creating op counts only where its node is live (else it is a no-op)
            life = _NodeLife(self._cps[0][1].nodes, {k for k, _ in docs.keys() - out.keys()})
            for m in self._msgs:
                if m.id in excluded:
                    continue
                for op in m.ops:
                    ot = op.ot
                    if ot in _LIFECYCLE_OTYPES:
                        life.step(op)
                        continue
                    k = (op.key, op.path)
                    if (
                        ot in TEXT_OTYPES
                        and ot != "text.delete"
                        and k not in out
                        and life.live(op.key)
                    ):
                        d = docs.get(k)
                        if d is None:
                            return None  # the re-fold has a doc the live graph lacks
                        out[k] = (m.client, d.agent_clock(m.client))
                        missing -= 1
                if not missing:
                    break
            if missing:
                return None
        return out

    def _snapshot_of(
        self,
        g: SceneGraph,
        n: int,
        headers: dict[tuple[str, str], tuple[str, int]] | None = None,
    ) -> Snapshot:
        """Encode ``g``, which must equal the base + the first ``n`` confirmed messages.

        ``headers`` replaces each text doc's ``(agent, clock)`` (see :meth:`_text_headers`).
        """
        texts = g.texts
        lt = 0
        clock = dict(self._base_clock)
        seen = list(self._seen)
        seq = self._seq
        burnt = dict(self._base_burnt)
        excluded = self._excluded
        for m in self._msgs[:n]:
            if excluded and m.id in excluded and m.id in self._text_keys:
                for key, path, agent, nxt in _text_ids_of(m):
                    if nxt > burnt.get((key, path, agent), 0):
                        burnt[(key, path, agent)] = nxt
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
            texts=[
                (k, p, d.snapshot() if headers is None else _with_header(d, headers[(k, p)]))
                for (k, p), d in sorted(texts.items())
            ],
            lt=max(lt, self._base_lt),
            clock=clock,
            seen=seen,
            seq=seq,
            burnt=[(k, p, a, c) for (k, p, a), c in sorted(burnt.items())],
        )

    def compact(self, upto: int | None = None) -> Snapshot:
        """Fold the first ``upto`` confirmed messages (default: all) into the base snapshot.

        The journal tail after ``upto`` is kept; exclusions of folded messages become final.
        Returns the new snapshot.
        """
        snap = self.snapshot(upto)
        n = len(self._msgs) if upto is None else max(0, min(upto, len(self._msgs)))
        tail = self._msgs[n:]
        pending = self._pending
        buffer = self._buffer
        self._reset_from(snap)
        all_texts: set[tuple[str, str]] = set(self._g.texts)
        for m in tail:
            self._msgs.append(m)
            self._by_id[m.id] = m
            for target, undo in _metas_of(m):
                self._metas.setdefault(target, {})[m.id] = (sort_key(m), undo)
            texts = _texts_of(m)
            if texts:
                self._text_keys[m.id] = texts
                all_texts |= texts
        self._pending = pending
        self._pending_ids = {m.id: m for m in pending}
        for m in pending:
            for target, undo in _metas_of(m):
                self._metas.setdefault(target, {})[m.id] = ((2, m.lt, m.client, m.id), undo)
        self._buffer = buffer
        self._excluded = {t for t in self._metas if self._status(t)}
        self._refold(0)
        self._rebuild_texts(all_texts)
        # every doc was just rebuilt in canonical order (pending and buffered ops on top)
        self._texts_canonical = not self._pending and not self._buffer
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
        g.share_nodes()
        try:
            g.texts = {(k, p): TextDoc.from_snapshot(raw) for k, p, raw in snap.texts}
        except TextOpError as exc:
            raise CRDTValidationError(f"texts.{exc.field}", str(exc)) from None
        self._base_texts = {(k, p): raw for k, p, raw in snap.texts}
        self._base_burnt = {(k, p, a): c for k, p, a, c in snap.burnt}
        me = self.session_id
        for key, path, agent, nxt in snap.burnt:
            if agent == me and nxt > self._text_hwm.get((key, path), 0):
                self._text_hwm[(key, path)] = nxt
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
        self._msgs = []
        self._keys = []
        self._by_id = {}
        self._text_keys = {}
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

    def _note_text_ids(self, m: Message) -> None:
        """Raise our text-id high-water marks to cover every id of ours that ``m`` allocates.

        Called for every message with text ops the replica takes (confirmed by any path, or
        committed by us), whether or not it is excluded: an undone insert's chars are not in
        the folded doc, yet its ids are burnt (module docstring, "Text ids"). The marks are
        never lowered (compact keeps them; a snapshot carries the burnt ids it folds).
        """
        hwm = self._text_hwm
        me = self.session_id
        for key, path, agent, nxt in _text_ids_of(m):
            if agent == me and nxt > hwm.get((key, path), 0):
                hwm[(key, path)] = nxt

    def _key_list(self) -> list[SortKey]:
        """``_keys`` completed to cover every confirmed message (for a bisect)."""
        keys = self._keys
        k = len(keys)
        if k < len(self._msgs):
            keys.extend([sort_key(m) for m in self._msgs[k:]])
        return keys

    def _position(self, m: Message) -> int:
        """The index of the confirmed message ``m`` in ``_msgs``."""
        keys = self._key_list()
        return bisect.bisect_left(keys, sort_key(m))

    def _reposition(self, m: Message, seq: int) -> int:
        """Move ``m`` to its place as a sequenced message; returns the lowest changed index."""
        keys = self._key_list()
        old = bisect.bisect_left(keys, sort_key(m))
        del keys[old]
        del self._msgs[old]
        m.serverSeq = seq
        key = sort_key(m)
        p = bisect.bisect_right(keys, key)
        keys.insert(p, key)
        self._msgs.insert(p, m)
        for target, undo in _metas_of(m):
            self._metas.setdefault(target, {})[m.id] = (key, undo)
        return min(old, p)

    def _status(self, target: str) -> bool:
        metas = self._metas.get(target)
        if not metas:
            return False
        return max(metas.values())[1]

    def _after_change(
        self,
        low: int | None,
        fast: list[Message],
        flipped: set[str],
        *,
        new: Sequence[Message] = (),
        extra_texts: Iterable[tuple[str, str]] = (),
        lifecycle: Iterable[str] = (),
    ) -> None:
        """Bring the visible graph up to date after the journal/pending/buffer changed.

        ``lifecycle``: nodes inserted or removed at a new place of the fold (their text docs
        may hold ops that are no-ops now, or lack ops that apply now: rebuilt).
        """
        rebuild: set[tuple[str, str]] = set(extra_texts)
        life: set[str] = set(lifecycle)
        for target in flipped:
            now = self._status(target)
            if now == (target in self._excluded):
                continue
            if now:
                self._excluded.add(target)
            else:
                self._excluded.discard(target)
            stored = self._by_id.get(target)
            if stored is not None:
                rebuild |= self._text_keys.get(target, _NO_TEXTS)
                life |= _lifecycle_keys(stored)
                pos = self._position(stored)
                if pos < self._folded:
                    low = pos if low is None else min(low, pos)
                    fast = []
            else:
                pm = self._pending_ids.get(target)
                if pm is not None:
                    rebuild |= _texts_of(pm)
                    life |= _lifecycle_keys(pm)
        if low is not None:
            self._refold(low)
        else:
            if self._tip is not None:
                self._g.restore(self._tip)
                self._tip = None
            for m in fast:
                self._fold_one(m)
            self._apply_overlay()
        if self._unresolved:
            # a doc that once saw an unknown char id is rebuilt until all ids are known
            for m in new:
                rebuild |= self._text_keys.get(m.id, _NO_TEXTS) & self._unresolved
        if life:
            rebuild |= self._docs_of(life)
        if new and (self._pending or self._buffer):
            rebuild |= self._removed_under_overlay(new)
        g = self._g
        if g.missing_refs:
            rebuild |= g.missing_refs
            g.missing_refs = set()
        if rebuild:
            self._rebuild_texts(rebuild)

    def _fold_one(self, m: Message) -> None:
        if not (self._excluded and m.id in self._excluded):
            self._g.apply_message(m)
        self._folded += 1
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        # dense checkpoints while messages arrive out of order (short re-folds), sparse ones
        # otherwise (each checkpoint makes the next write of every node clone it)
        every = self._cp_every
        if self._ooo_recent:
            self._ooo_recent -= 1
        else:
            sparse = len(self._g.nodes) << 3
            if sparse > every:  # noqa: PLR1730 -- runs per message; no max() call
                every = sparse
        if self._folded - self._cps[-1][0] >= every:
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
        for m in self._msgs[pos:]:
            self._fold_one(m)
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

    def _docs_of(self, keys: set[str]) -> set[tuple[str, str]]:
        """The ``(key, path)`` of every text doc of the nodes ``keys``."""
        if not keys:
            return set()
        return {k for k in self._g.texts if k[0] in keys}

    def _removed_under_overlay(self, folded: Iterable[Message]) -> set[tuple[str, str]]:
        """Text docs of nodes that own pending or buffered text ops edit and that one of the
        ``folded`` confirmed messages removes: those ops were integrated while the node was
        live and are no-ops now (they sort after the removal)."""
        edited: set[str] = set()
        for m in self._pending:
            if m.id not in self._excluded:
                edited.update(op.key for op in m.ops if op.ot in TEXT_OTYPES)
        edited.update(op.key for op in self._buffer.values() if op.ot in TEXT_OTYPES)
        if not edited:
            return set()
        hit = {
            op.value
            for m in folded
            for op in m.ops
            if op.ot == "node.remove" and op.value in edited
        }
        return self._docs_of(hit)

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
        life = _NodeLife(self._cps[0][1].nodes, {k for k, _ in targets})

        def feed(ops: Iterable[Op], client: str, ts: float) -> None:
            for op in ops:
                ot = op.ot
                if ot in TEXT_OTYPES:
                    if (op.key, op.path) in targets and life.live(op.key):
                        apply_text_only(scratch, op, client, ts)
                elif ot in _LIFECYCLE_OTYPES:
                    life.step(op)

        excluded = self._excluded
        for m in self._msgs:
            if m.id not in excluded:
                feed(m.ops, m.client, m.ts if m.ts is not None else 0)
        for m in self._pending:
            if m.id not in excluded:
                feed(m.ops, m.client, m.ts if m.ts is not None else 0)
        feed(self._buffer.values(), self.session_id, self._buffer_ts)
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
        for m in self._msgs[:n]:
            if m.id not in self._excluded:
                g.apply_message(m)
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
        self._note_text_ids(msg)  # a local text.init allocates ids too
        if not self.sequenced:
            self._buffer.clear()
            self._pending_ids[msg.id] = msg
            self._pending.append(msg)
            self.receive_many([msg], validate=False)
            return
        self._pending.append(msg)
        self._pending_ids[msg.id] = msg
        flipped = set()
        for target, undo in _metas_of(msg):
            self._metas.setdefault(target, {})[msg.id] = ((2, msg.lt, msg.client, msg.id), undo)
            flipped.add(target)
        if flipped or rebase:
            self._after_change(None, [], flipped)

    def _own_target(self, *, excluded: bool) -> str | None:
        for m in reversed(self._pending):
            if not any(o.ot in META_OTYPES for o in m.ops) and (m.id in self._excluded) == excluded:
                return m.id
        for m in reversed(self._msgs):
            if (
                m.client == self.session_id
                and not _metas_of(m)
                and (m.id in self._excluded) == excluded
            ):
                return m.id
        return None

    def _meta_message(self, ot: str, target: str, ts: float) -> Message:
        msg = self._new_message([Op(ot=ot, key="_meta", path="_meta", targetMsgId=target)], ts)
        self._commit_message(msg, rebase=False)
        return msg


def _with_header(d: TextDoc, header: tuple[str, int]) -> list[Any]:
    raw = d.snapshot()
    raw[0], raw[1] = header
    return raw


def _merge(ot: str, a: Any, b: Any) -> Any:
    """Merge two buffered additive values (reference §5 ``edit``)."""
    if ot == "number.add":
        return a + b
    if ot == "number.multiply":
        return a * b
    if ot == "vector3.add":
        return [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
    return quat_mul(a, b)  # quaternion.multiply: (cur ⊗ a) ⊗ b == cur ⊗ (a ⊗ b)
