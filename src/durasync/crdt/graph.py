"""The scene graph and the apply function of every otype (vuer-rtc-semantics.md §1, §3).

Model: a flat ``nodes`` dict ``key -> Node``; the tree exists only through ``children`` key
lists (plus, in durasync, a ``parent`` pointer with its own LWW stamp). Properties are flat and
keyed by the full path string (``"transform.position"`` is one key). ``lww`` maps a path to the
stamp ``(lt, client)`` of the write that currently wins it. Removal only tombstones
(``deleted_at``). ``root_key`` is the first node ever inserted.

:meth:`SceneGraph.apply_message` applies one message's ops **in the order given** with the
reference semantics, so replaying a journal in file order reproduces the reference's per-op
results, except for these deliberate deviations (each fixes a reference defect; see also
docs/crdt.md):

1. ``node.move``: the parent pointer is LWW by ``(lt, client)`` and a move that would create a
   cycle (new parent = the node or one of its descendants) is refused. The node is taken out
   of its *actual* current parent, not of the parent named by the op, so two concurrent moves
   can never leave it under two parents (reference §8).
2. ``node.remove`` also unlists the node from its actual parent (after a concurrent move the
   named parent may be stale).
3. ``color.blend`` rounds half-up like JS ``Math.round`` (the Python port rounds half-to-even).
4. An op never raises on an unexpected *current* value: an additive op whose current value has
   the wrong type (for example ``number.add`` on a string) uses the otype's default instead of
   crashing like the port.
5. Text: each ``(node key, path)`` has one :class:`~durasync.crdt.text.TextDoc` kept in
   ``SceneGraph.texts``; a text op on a live node integrates into it and the visible property
   is the rope's text (stored as the :data:`TEXT` marker, rendered on read). Like every
   property op, a text op on a missing or tombstoned node does nothing (no doc is created, the
   doc of a removed node keeps the text it had). ``text.init`` with a value inserts it as
   ``client:0`` with seq 1 and the message timestamp, so it is deterministic and idempotent
   (the port uses its wall clock and re-inserts on every init).
6. ``array.move`` (TS docs, absent from the port) moves the element at index ``from`` to
   index ``to`` (clamped); an out-of-range ``from`` is a no-op.
7. Arithmetic results are numbers as JavaScript holds them: an integer result beyond
   +-(2**53 - 1) (``number.add``/``multiply``, the vector, Euler and quaternion ops) is stored
   as the nearest float, which is what JS computes; Python's exact big integers would differ
   from JS replicas and would not fit msgpack. So every number in the graph stays encodable.

Performance: nodes are ``__slots__`` objects with plain dicts; values are never mutated in place
(every op builds a new list/dict), which lets checkpoints share nodes copy-on-write
(:meth:`SceneGraph.checkpoint`). A node records the write epoch of the graph that created or
cloned it; a graph may mutate a node in place only when the node's epoch is the graph's
current one. An epoch is a token object the graph makes for itself (no shared counter: the
graph owns its epochs) and a checkpoint (or restore) moves the graph to a fresh one, so a node
shared with a checkpoint, or with any other graph, is cloned before its first write -- one
identity comparison on an object the op touches anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

from msgspec import UNSET

from durasync.crdt.messages import Message, Op
from durasync.crdt.text import TextDoc

__all__ = ["TEXT", "Checkpoint", "Node", "SceneGraph", "apply_op"]


class _TextMarker:
    """The value of a text property: render with ``SceneGraph.texts[(key, path)].text()``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TEXT"


#: Marker stored in ``Node.props[path]`` for a text property.
TEXT: Final = _TextMarker()

Stamp = tuple[int, str]


class Epoch:
    """A write epoch (see the module docstring): compared by identity only."""

    __slots__ = ()


#: The epoch of a node built outside a graph (``Node(...)``, a decoded snapshot): never a
#: graph's, so such a node is cloned before the first write of any graph.
UNOWNED: Final = Epoch()


class Node:
    """One scene node. Treat values as immutable; mutate only through ops."""

    __slots__ = (
        "children",
        "created_at",
        "csorted",
        "deleted_at",
        "epoch",
        "key",
        "lww",
        "name",
        "parent",
        "props",
        "pstamp",
        "tag",
    )

    def __init__(
        self,
        key: str,
        *,
        tag: str = "",
        name: str = "",
        children: list[str] | None = None,
        props: dict[str, Any] | None = None,
        created_at: float = 0,
        parent: str | None = None,
        pstamp: Stamp | None = None,
    ) -> None:
        self.key = key
        self.tag = tag
        self.name = name
        self.children: list[str] = children if children is not None else []
        self.props: dict[str, Any] = props if props is not None else {}
        self.lww: dict[str, Stamp] = {}
        self.created_at = created_at
        self.deleted_at: float | None = None
        self.parent = parent
        self.pstamp = pstamp
        # children known to be sorted by (created_at, key) with every child present
        self.csorted = not self.children
        self.epoch = UNOWNED

    @property
    def deleted(self) -> bool:
        """Whether the node is tombstoned."""
        return self.deleted_at is not None

    def clone(self, epoch: Epoch = UNOWNED) -> Node:
        """A copy (of write epoch ``epoch``) whose containers can be mutated without affecting
        ``self``."""
        n = Node.__new__(Node)
        n.key = self.key
        n.tag = self.tag
        n.name = self.name
        n.children = self.children.copy()
        n.props = self.props.copy()
        n.lww = self.lww.copy()
        n.created_at = self.created_at
        n.deleted_at = self.deleted_at
        n.parent = self.parent
        n.pstamp = self.pstamp
        n.csorted = self.csorted
        n.epoch = epoch
        return n

    def __repr__(self) -> str:
        return f"Node({self.key!r}, tag={self.tag!r}, children={self.children!r})"


class Checkpoint:
    """A frozen copy of a graph's node table (nodes shared copy-on-write)."""

    __slots__ = ("nodes", "root_key")

    def __init__(self, nodes: dict[str, Node], root_key: str) -> None:
        self.nodes = nodes
        self.root_key = root_key


class SceneGraph:
    """Flat nodes + text docs. Apply messages with :meth:`apply_message`.

    ``cow=True`` enables :meth:`checkpoint` / :meth:`restore`, which are cheap (O(number of
    nodes) pointer copies); a node is cloned the first time it is written after a checkpoint.
    Every graph clones a node it did not create or clone itself before writing it (module
    docstring, write epochs). Text docs live outside checkpoints (deviation 5).
    """

    __slots__ = ("_cow", "epoch", "missing_refs", "nodes", "root_key", "texts")

    def __init__(self, *, cow: bool = False) -> None:
        self.nodes: dict[str, Node] = {}
        self.root_key = ""
        self.texts: dict[tuple[str, str], TextDoc] = {}
        self._cow = cow
        #: the write epoch: nodes of this epoch are this graph's own, mutable in place
        self.epoch = Epoch()
        #: (key, path) of text docs that saw an op naming a char id they do not hold
        self.missing_refs: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        deleted = sum(1 for n in self.nodes.values() if n.deleted_at is not None)
        return (
            f"<SceneGraph root={self.root_key!r} nodes={len(self.nodes) - deleted}"
            f" deleted={deleted} texts={len(self.texts)}>"
        )

    def __str__(self) -> str:
        """The graph as an indented tree (:func:`durasync.crdt.canonical.format_tree`)."""
        from durasync.crdt.canonical import format_tree

        return format_tree(self)

    # -- copy-on-write -------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Freeze the current node table; later writes clone nodes before touching them."""
        if not self._cow:
            raise RuntimeError("checkpoint() needs a SceneGraph(cow=True)")
        self.epoch = Epoch()
        return Checkpoint(self.nodes.copy(), self.root_key)

    def restore(self, cp: Checkpoint) -> None:
        """Return the node table to ``cp`` (text docs are not touched)."""
        self.nodes = cp.nodes.copy()
        self.root_key = cp.root_key
        self.epoch = Epoch()

    def share_nodes(self) -> None:
        """Treat every current node as shared (cloned before its next write), e.g. after
        adopting nodes that other objects still reference."""
        self.epoch = Epoch()

    def writable(self, key: str) -> Node | None:
        """The node ``key`` made safe to mutate (cloned if shared with a checkpoint)."""
        n = self.nodes.get(key)
        if n is None:
            return None
        if n.epoch is not self.epoch:
            n = self.nodes[key] = n.clone(self.epoch)
        return n

    def _live(self, key: str) -> Node | None:
        """The writable node ``key`` if it exists and is not tombstoned."""
        n = self.nodes.get(key)
        if n is None or n.deleted_at is not None:
            return None
        if n.epoch is not self.epoch:
            n = self.nodes[key] = n.clone(self.epoch)
        return n

    # -- applying ------------------------------------------------------------------------------

    def apply_message(self, msg: Message) -> None:
        """Apply every non-meta op of a *validated* message in order (never raises)."""
        lt = msg.lt
        client = msg.client
        ts = msg.ts if msg.ts is not None else 0
        for op in msg.ops:
            fn = _HANDLERS.get(op.ot)
            if fn is not None:
                fn(self, op, lt, client, ts)

    def apply_ops(self, ops: list[Op], lt: int, client: str, ts: float) -> None:
        """Apply validated ops with the given stamp (used for local edits)."""
        for op in ops:
            fn = _HANDLERS.get(op.ot)
            if fn is not None:
                fn(self, op, lt, client, ts)

    # -- reading -------------------------------------------------------------------------------

    def get(self, key: str, path: str, default: Any = None) -> Any:
        """The visible value of property ``path`` of node ``key`` (text rendered)."""
        n = self.nodes.get(key)
        if n is None:
            return default
        v = n.props.get(path, default)
        if v is TEXT:
            doc = self.texts.get((key, path))
            return doc.text() if doc is not None else ""
        return v

    def __len__(self) -> int:
        return len(self.nodes)


def apply_op(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    """Apply one validated op to ``g`` with the stamp ``(lt, client)`` and timestamp ``ts``."""
    fn = _HANDLERS.get(op.ot)
    if fn is not None:
        fn(g, op, lt, client, ts)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _lww(n: Node, path: str, value: Any, lt: int, client: str) -> None:
    # reference §3 "LWW rule": no stamp, or higher lt, or equal lt and higher client
    st = n.lww.get(path)
    if st is None or lt > st[0] or (lt == st[0] and client > st[1]):
        n.props[path] = value
        n.lww[path] = (lt, client)


def _num(v: Any, default: float) -> float:
    t = type(v)
    return v if (t is int or t is float) else default


def _fit(x: float) -> float:
    """An arithmetic result as JavaScript holds it: an integer beyond +-(2**53 - 1) becomes the
    nearest float (exactly what JS computes from the same safe operands, IEEE rounding once).

    Keeps every number in the graph encodable in msgpack and exact in JS: validated values are
    within that range, and sums and products of them stay far below ``float`` overflow.
    """
    if type(x) is int and not -9007199254740991 <= x <= 9007199254740991:
        return float(x)
    return x


def _fit3(r: list[float]) -> list[float]:
    if type(r[0]) is int or type(r[1]) is int or type(r[2]) is int:
        return [_fit(x) for x in r]
    return r


def _vec(v: Any, n: int) -> list[float] | None:
    if type(v) is list and len(v) == n:
        for x in v:
            t = type(x)
            if t is not int and t is not float:
                return None
        return v
    return None


# ---------------------------------------------------------------------------------------------
# per-otype handlers (reference §3 table)
# ---------------------------------------------------------------------------------------------

Handler = Callable[[SceneGraph, Op, int, str, float], None]


# The three handlers below carry most of the traffic (drags and LWW sets): they inline
# ``_live``/``_lww``/``_vec`` (one Python call per op instead of three) and ``_set`` compares
# the LWW stamp before cloning a checkpointed node, so a losing write copies nothing.


def _set(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    key = op.key
    n = g.nodes.get(key)
    if n is None or n.deleted_at is not None:
        return
    path = op.path
    # reference §3 "LWW rule": no stamp, or higher lt, or equal lt and higher client
    st = n.lww.get(path)
    if st is None or lt > st[0] or (lt == st[0] and client > st[1]):
        if n.epoch is not g.epoch:
            n = g.nodes[key] = n.clone(g.epoch)
        v = op.value
        t = type(v)
        if t is list:
            v = list(v)
        elif t is dict:
            v = dict(v)
        n.props[path] = v
        n.lww[path] = (lt, client)


def _number_add(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    key = op.key
    n = g.nodes.get(key)
    if n is None or n.deleted_at is not None:
        return
    if n.epoch is not g.epoch:
        n = g.nodes[key] = n.clone(g.epoch)
    props = n.props
    path = op.path
    c = props.get(path)
    t = type(c)
    r = (c if (t is int or t is float) else 0) + op.value
    props[path] = _fit(r) if type(r) is int else r


def _number_multiply(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        n.props[op.path] = _fit(_num(n.props.get(op.path), 1) * op.value)


def _number_min(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        n.props[op.path] = min(_num(n.props.get(op.path), math.inf), op.value)


def _number_max(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        n.props[op.path] = max(_num(n.props.get(op.path), -math.inf), op.value)


def _vector3_add(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    key = op.key
    n = g.nodes.get(key)
    if n is None or n.deleted_at is not None:
        return
    if n.epoch is not g.epoch:
        n = g.nodes[key] = n.clone(g.epoch)
    props = n.props
    path = op.path
    v = op.value
    c = props.get(path)
    # the current value counts only if it is a list of 3 numbers (else the default [0, 0, 0])
    if type(c) is list and len(c) == 3:
        c0, c1, c2 = c
        t0, t1, t2 = type(c0), type(c1), type(c2)
        if t0 is float and t1 is float and t2 is float:  # float sums: nothing to fit
            props[path] = [c0 + v[0], c1 + v[1], c2 + v[2]]
            return
        if (t0 is float or t0 is int) and (t1 is float or t1 is int) and (t2 is float or t2 is int):
            props[path] = _fit3([c0 + v[0], c1 + v[1], c2 + v[2]])
            return
    props[path] = [v[0], v[1], v[2]]


def _vector3_multiply(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        c = _vec(n.props.get(op.path), 3)
        v = op.value
        n.props[op.path] = (
            [v[0], v[1], v[2]] if c is None else _fit3([c[0] * v[0], c[1] * v[1], c[2] * v[2]])
        )


def _rotate(v: list[float], q: list[float]) -> list[float]:
    """q · v · q⁻¹ for a unit quaternion q = [x, y, z, w] (reference §3 applyQuaternion)."""
    vx, vy, vz = v[0], v[1], v[2]
    qx, qy, qz, qw = q[0], q[1], q[2], q[3]
    ix = qw * vx + qy * vz - qz * vy
    iy = qw * vy + qz * vx - qx * vz
    iz = qw * vz + qx * vy - qy * vx
    iw = -qx * vx - qy * vy - qz * vz
    return [
        ix * qw + iw * -qx + iy * -qz - iz * -qy,
        iy * qw + iw * -qy + iz * -qx - ix * -qz,
        iz * qw + iw * -qz + ix * -qy - iy * -qx,
    ]


def _quat_from_euler(x: float, y: float, z: float, order: str) -> list[float]:
    """three.js ``Quaternion.setFromEuler`` formulas for the six orders."""
    c1, s1 = math.cos(x / 2), math.sin(x / 2)
    c2, s2 = math.cos(y / 2), math.sin(y / 2)
    c3, s3 = math.cos(z / 2), math.sin(z / 2)
    a = s1 * c2 * c3
    b = c1 * s2 * s3
    c = c1 * s2 * c3
    d = s1 * c2 * s3
    e = c1 * c2 * s3
    f = s1 * s2 * c3
    h = c1 * c2 * c3
    k = s1 * s2 * s3
    if order == "XYZ":
        return [a + b, c - d, e + f, h - k]
    if order == "YXZ":
        return [a + b, c - d, e - f, h + k]
    if order == "ZXY":
        return [a - b, c + d, e + f, h - k]
    if order == "ZYX":
        return [a - b, c + d, e - f, h + k]
    if order == "YZX":
        return [a + b, c + d, e - f, h - k]
    # XZY (validation admits only the six orders)
    return [a - b, c - d, e + f, h + k]


def _vector3_apply_quaternion(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        c = _vec(n.props.get(op.path), 3) or [0, 0, 0]
        n.props[op.path] = _fit3(_rotate(c, op.value))


def _vector3_apply_euler(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        order = op.order if op.order is not UNSET else "XYZ"
        if op.intrinsic is False:
            order = order[::-1]
        v = op.value
        q = _quat_from_euler(v[0], v[1], v[2], order)
        c = _vec(n.props.get(op.path), 3) or [0, 0, 0]
        n.props[op.path] = _rotate(c, q)


def _quaternion_multiply(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        a = _vec(n.props.get(op.path), 4) or [0, 0, 0, 1]
        n.props[op.path] = [_fit(x) for x in quat_mul(a, op.value)]


def quat_mul(a: list[float], b: list[float]) -> list[float]:
    """Hamilton product a ⊗ b in xyzw order."""
    ax, ay, az, aw = a[0], a[1], a[2], a[3]
    bx, by, bz, bw = b[0], b[1], b[2], b[3]
    return [
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ]


def _hex_rgb(s: str) -> tuple[int, int, int] | None:
    h = s[1:] if s.startswith("#") else s
    if len(h) != 6:
        return None
    try:
        x = int(h, 16)
    except ValueError:
        return None
    return (x >> 16) & 255, (x >> 8) & 255, x & 255


def _color_blend(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        cur = n.props.get(op.path)
        b = _hex_rgb(op.value)
        a = _hex_rgb(cur) if type(cur) is str else None
        assert b is not None  # validated
        if a is None:
            a = b
        # deviation 3: half-up (JS Math.round), i.e. floor((x + y) / 2 + 0.5)
        r, gg, bb = ((a[i] + b[i] + 1) // 2 for i in range(3))
        n.props[op.path] = f"#{r:02x}{gg:02x}{bb:02x}"


def _string_concat(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        cur = n.props.get(op.path)
        if cur is TEXT:
            doc = g.texts.get((op.key, op.path))
            cur = doc.text() if doc is not None else ""
        sep = op.separator if op.separator is not UNSET else ""
        n.props[op.path] = f"{cur}{sep}{op.value}" if (type(cur) is str and cur) else op.value


def _boolean_or(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        cur = n.props.get(op.path)
        n.props[op.path] = (cur if type(cur) is bool else False) or op.value


def _boolean_and(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        cur = n.props.get(op.path)
        n.props[op.path] = (cur if type(cur) is bool else True) and op.value


def _array_cur(n: Node, path: str) -> list[Any]:
    cur = n.props.get(path)
    return cur if type(cur) is list else []


def _array_push(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        n.props[op.path] = [*_array_cur(n, op.path), op.value]


def _array_union(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        merged = list(_array_cur(n, op.path))
        for x in op.value:
            if x not in merged:
                merged.append(x)
        n.props[op.path] = merged


def _array_remove(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        v = op.value
        n.props[op.path] = [x for x in _array_cur(n, op.path) if x != v]


def _array_move(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        arr = list(_array_cur(n, op.path))
        src = op.from_
        dst = op.to
        assert isinstance(src, int) and isinstance(dst, int)  # validated
        if 0 <= src < len(arr):
            x = arr.pop(src)
            arr.insert(max(0, min(dst, len(arr))), x)
            n.props[op.path] = arr


_MERGE_SKIP: Final = frozenset({"key", "tag", "children", "_crdt"})


def _object_merge(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    n = g._live(op.key)
    if n is not None:
        path = op.path
        if path in (".", ""):
            # reference §3: merge into the node's own property bag; `name` is not skipped
            for k, v in op.value.items():
                if k not in _MERGE_SKIP:
                    n.props[k] = v
        else:
            cur = n.props.get(path)
            n.props[path] = {**(cur if type(cur) is dict else {}), **op.value}


def _attach(g: SceneGraph, parent: Node, child_key: str) -> None:
    """Append ``child_key`` to ``parent.children`` keeping the order (createdAt, key)."""
    ch = parent.children
    nodes = g.nodes
    if parent.csorted:
        if not ch:
            ch.append(child_key)
            return
        last = nodes.get(ch[-1])
        c = nodes[child_key]
        if last is not None and (
            last.created_at < c.created_at
            or (last.created_at == c.created_at and last.key <= child_key)
        ):
            ch.append(child_key)
            return
    ch.append(child_key)
    _resort(nodes, parent)


def _resort(nodes: dict[str, Node], parent: Node) -> None:
    """Re-sort ``parent.children`` by (createdAt, key); missing children count as 0 (§3)."""
    ok = True

    def sort_key(k: str) -> tuple[float, str]:
        nonlocal ok
        m = nodes.get(k)
        if m is None:
            ok = False
            return (0, k)
        return (m.created_at, k)

    parent.children.sort(key=sort_key)
    parent.csorted = ok


def _node_insert(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    v = op.value
    nk = v["key"]
    nodes = g.nodes
    if nk in nodes:
        return  # idempotent, even over a tombstone (no resurrection)
    pk = op.key
    epoch = g.epoch
    # The parent made writable (SceneGraph.writable, inlined: joins replay many inserts).
    parent = nodes.get(pk) if pk else None
    if parent is not None and parent.epoch is not epoch:
        parent = nodes[pk] = parent.clone(epoch)
    # Built slot by slot (as in Node.clone): the keyword-argument __init__ is the largest
    # single cost of an insert. The node fields leave the property bag by one pop each
    # (which also reads them); "key" is always present (validated, read above).
    props = v.copy()
    pop = props.pop
    del props["key"]
    n = Node.__new__(Node)
    n.key = nk
    n.tag = pop("tag", "")
    n.name = pop("name", "")
    ch = pop("children", None)
    if type(ch) is list and ch:
        n.children = list(ch)
        n.csorted = False
    else:
        n.children = []
        n.csorted = True
    n.props = props
    n.lww = {}
    n.created_at = ts
    n.deleted_at = None
    n.parent = pk if parent is not None else None
    n.pstamp = (lt, client)
    n.epoch = epoch
    nodes[nk] = n
    if not g.root_key:
        g.root_key = nk
    if parent is not None:
        siblings = parent.children
        if nk in siblings:
            return
        # _attach's append path, inlined: children sorted by (createdAt, key) and the new
        # node sorts last (the common case: inserts arrive in time order)
        if parent.csorted:
            if not siblings:
                siblings.append(nk)
                return
            last = nodes.get(siblings[-1])
            if last is not None and (
                last.created_at < ts or (last.created_at == ts and last.key <= nk)
            ):
                siblings.append(nk)
                return
        _attach(g, parent, nk)


def _unlist(g: SceneGraph, parent_key: str | None, child: str) -> None:
    if parent_key is None:
        return
    p = g.nodes.get(parent_key)
    if p is not None and child in p.children:
        p = g.writable(parent_key)
        assert p is not None
        p.children = [k for k in p.children if k != child]


def _node_remove(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    ck = op.value
    n = g.writable(ck)
    if n is None:
        return
    n.deleted_at = ts  # unconditional tombstone (reference §3)
    _unlist(g, op.key, ck)
    if n.parent != op.key:
        _unlist(g, n.parent, ck)  # deviation 2


def _node_move(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    v = op.value
    nk = v["nodeKey"]
    np_key = v["newParent"]
    n = g.nodes.get(nk)
    newp = g.nodes.get(np_key)
    if n is None or n.deleted_at is not None or newp is None:
        return
    st = n.pstamp
    if st is not None and not (lt > st[0] or (lt == st[0] and client > st[1])):
        return  # deviation 1: parent pointer is LWW
    # refuse cycles: the new parent must not be the node or one of its descendants
    cur: str | None = np_key
    hops = 0
    while cur is not None and hops <= len(g.nodes):
        if cur == nk:
            return
        p = g.nodes.get(cur)
        cur = p.parent if p is not None else None
        hops += 1
    n = g.writable(nk)
    assert n is not None
    old = n.parent
    n.pstamp = (lt, client)
    if old == np_key and nk in newp.children:
        return
    _unlist(g, old, nk)
    if op.key != old:
        _unlist(g, op.key, nk)
    n.parent = np_key
    newp = g.writable(np_key)
    assert newp is not None
    if nk not in newp.children:
        _attach(g, newp, nk)


# -- text (deviation 5) --------------------------------------------------------------------------


def _doc(g: SceneGraph, op: Op, client: str) -> TextDoc:
    k = (op.key, op.path)
    d = g.texts.get(k)
    if d is None:
        d = TextDoc(client)
        g.texts[k] = d
    return d


def _mark(g: SceneGraph, op: Op) -> None:
    n = g.nodes.get(op.key)
    if n is None or n.deleted_at is not None or n.props.get(op.path) is TEXT:
        return
    n = g._live(op.key)
    assert n is not None
    n.props[op.path] = TEXT


def _check_refs(g: SceneGraph, d: TextDoc, op: Op, anchor: Any) -> None:
    if op.id is not UNSET and op.id not in d and anchor is not None and anchor not in d:
        g.missing_refs.add((op.key, op.path))


def _check_rm(g: SceneGraph, d: TextDoc, op: Op) -> None:
    assert op.rm is not UNSET
    for r in op.rm:
        if r[0] not in d:
            g.missing_refs.add((op.key, op.path))
            return


def apply_text_only(g: SceneGraph, op: Op, client: str, ts: float) -> None:
    """Integrate a text op into its doc without touching node properties (rope rebuilds)."""
    ot = op.ot
    if ot == "text.init":
        k = (op.key, op.path)
        d = g.texts.get(k)
        v = op.value if type(op.value) is str else ""
        if d is None:
            g.texts[k] = TextDoc.initial(client, v, ts) if v else TextDoc(client)
        elif v:
            d.apply_insert(f"{client}:0", None, v, 1, ts)
        return
    if ot == "text.delete":
        d0 = g.texts.get((op.key, op.path))
        if d0 is None:
            if op.rm:
                g.missing_refs.add((op.key, op.path))
            return
        _check_rm(g, d0, op)
        assert op.rm is not UNSET
        d0.apply_delete(op.rm)
        return
    d = _doc(g, op, client)
    anchor, content = op.value
    assert op.seq is not UNSET and op.ts is not UNSET
    if ot == "text.insert":
        _check_refs(g, d, op, anchor)
        assert op.id is not UNSET
        d.apply_insert(op.id, anchor, content, op.seq, op.ts)
    else:
        _check_rm(g, d, op)
        _check_refs(g, d, op, anchor)
        assert op.rm is not UNSET
        d.apply_replace(
            op.rm, op.id if op.id is not UNSET else None, anchor, content, seq=op.seq, ts=op.ts
        )


def _text_op(g: SceneGraph, op: Op, lt: int, client: str, ts: float) -> None:
    """Every text otype: integrate into the doc, then mark the property as text.

    A no-op on a missing or tombstoned node, like every property op. Only a delete can find
    no doc (it then records a missing reference and marks nothing); every other text op
    creates the doc it needs.
    """
    n = g.nodes.get(op.key)
    if n is None or n.deleted_at is not None:
        return
    apply_text_only(g, op, client, ts)
    if (op.key, op.path) in g.texts:
        _mark(g, op)


_HANDLERS: Final[dict[str, Handler]] = {
    "number.set": _set,
    "number.add": _number_add,
    "number.multiply": _number_multiply,
    "number.min": _number_min,
    "number.max": _number_max,
    "vector3.set": _set,
    "vector3.add": _vector3_add,
    "vector3.multiply": _vector3_multiply,
    "vector3.applyQuaternion": _vector3_apply_quaternion,
    "vector3.applyEuler": _vector3_apply_euler,
    "euler.set": _set,
    "euler.add": _vector3_add,
    "quaternion.set": _set,
    "quaternion.multiply": _quaternion_multiply,
    "color.set": _set,
    "color.blend": _color_blend,
    "string.set": _set,
    "string.concat": _string_concat,
    "boolean.set": _set,
    "boolean.or": _boolean_or,
    "boolean.and": _boolean_and,
    "array.set": _set,
    "array.push": _array_push,
    "array.union": _array_union,
    "array.remove": _array_remove,
    "array.move": _array_move,
    "object.set": _set,
    "object.merge": _object_merge,
    "node.insert": _node_insert,
    "node.remove": _node_remove,
    "node.move": _node_move,
    "text.init": _text_op,
    "text.insert": _text_op,
    "text.delete": _text_op,
    "text.replace": _text_op,
    # meta.undo / meta.redo are handled by the Replica (exclusion from replay), not here
}
