"""Random multi-session histories for convergence tests (every otype, stale views, undo/redo).

Each session is a :class:`Replica` that edits through the public API (so text edits are
position-based and translated to the wire form) and sees other sessions' messages only when a
causal delivery hands them over, so its view is stale most of the time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from durasync.crdt import Message, Op, Replica, Snapshot

ORDERS = ["XYZ", "YXZ", "ZXY", "ZYX", "YZX", "XZY"]
SCALARS: list[Any] = [0, 1, 2, "a", "b", True, None, 1.5]


@dataclass
class History:
    messages: list[Message] = field(default_factory=list)
    deps: dict[str, frozenset[str]] = field(default_factory=dict)
    sessions: dict[str, Replica] = field(default_factory=dict)
    have: dict[str, set[str]] = field(default_factory=dict)


def _num(r: random.Random) -> float:
    return r.choice([r.randint(-5, 5), round(r.uniform(-3, 3), 3)])


def _vec(r: random.Random, n: int = 3) -> list[float]:
    return [_num(r) for _ in range(n)]


def _unit_quat(r: random.Random) -> list[float]:
    q = [r.uniform(-1, 1) for _ in range(4)]
    s = math.sqrt(sum(x * x for x in q)) or 1.0
    return [x / s for x in q]


def _color(r: random.Random) -> str:
    return "#" + "".join(r.choice("0123456789abcdef") for _ in range(6))


def random_op(r: random.Random, rep: Replica, sid: str, counter: list[int], text: bool) -> Op:
    """One valid local op for session ``rep`` on its current (stale) view."""
    g = rep.graph
    keys = sorted(g.nodes)
    live = [k for k in keys if not g.nodes[k].deleted]
    key = r.choice(live or keys) if keys else "scene"
    path = r.choice(["p", "q"])
    fam = r.choice(
        [
            "node",
            "number",
            "vector3",
            "euler",
            "quaternion",
            "color",
            "string",
            "boolean",
            "array",
            "object",
        ]
        + (["text"] * 3 if text else [])
    )
    if not keys:
        fam = "number"  # nothing visible yet: an op on a missing node (ignored everywhere)
    if fam == "node":
        verb = r.choice(["insert", "insert", "insert", "remove", "move", "move"])
        if verb == "insert":
            counter[0] += 1
            return Op(
                ot="node.insert",
                key=key,
                path="children",
                value={
                    "key": f"{sid}{counter[0]}",
                    "tag": r.choice(["Mesh", "Group"]),
                    "p": _num(r),
                },
            )
        if verb == "remove":
            child = r.choice([k for k in keys if k != "scene"] or keys)
            parent = g.nodes[child].parent or ""
            return Op(ot="node.remove", key=parent, path="children", value=child)
        child = r.choice(keys)
        return Op(
            ot="node.move",
            key=g.nodes[child].parent or "",
            path="children",
            value={"nodeKey": child, "newParent": r.choice(keys)},
        )
    if fam == "number":
        return Op(
            ot=f"number.{r.choice(['set', 'add', 'multiply', 'min', 'max'])}",
            key=key,
            path=path,
            value=_num(r),
        )
    if fam == "vector3":
        verb = r.choice(["set", "add", "multiply", "applyQuaternion", "applyEuler"])
        if verb == "applyQuaternion":
            return Op(ot="vector3.applyQuaternion", key=key, path=path, value=_unit_quat(r))
        if verb == "applyEuler":
            o = Op(ot="vector3.applyEuler", key=key, path=path, value=_vec(r))
            if r.random() < 0.5:
                o.order = r.choice(ORDERS)
            if r.random() < 0.3:
                o.intrinsic = r.random() < 0.5
            return o
        return Op(ot=f"vector3.{verb}", key=key, path=path, value=_vec(r))
    if fam == "euler":
        return Op(ot=f"euler.{r.choice(['set', 'add'])}", key=key, path=path, value=_vec(r))
    if fam == "quaternion":
        return Op(
            ot=f"quaternion.{r.choice(['set', 'multiply'])}",
            key=key,
            path=path,
            value=_unit_quat(r),
        )
    if fam == "color":
        return Op(ot=f"color.{r.choice(['set', 'blend'])}", key=key, path=path, value=_color(r))
    if fam == "string":
        o = Op(
            ot=f"string.{r.choice(['set', 'concat'])}",
            key=key,
            path=path,
            value=r.choice(["x", "yz", ""]),
        )
        if o.ot == "string.concat" and r.random() < 0.5:
            o.separator = ","
        return o
    if fam == "boolean":
        return Op(
            ot=f"boolean.{r.choice(['set', 'or', 'and'])}",
            key=key,
            path=path,
            value=r.random() < 0.5,
        )
    if fam == "array":
        verb = r.choice(["set", "push", "union", "remove", "move"])
        if verb in ("set", "union"):
            return Op(
                ot=f"array.{verb}", key=key, path=path, value=r.sample(SCALARS, r.randint(0, 3))
            )
        if verb == "move":
            return Op(
                ot="array.move", key=key, path=path, from_=r.randint(0, 3), to=r.randint(0, 3)
            )
        return Op(ot=f"array.{verb}", key=key, path=path, value=r.choice(SCALARS))
    if fam == "object":
        verb = r.choice(["set", "merge", "merge"])
        value = {r.choice("abc"): r.choice(SCALARS) for _ in range(r.randint(1, 2))}
        return Op(
            ot=f"object.{verb}",
            key=key,
            path="." if verb == "merge" and r.random() < 0.3 else path,
            value=value,
        )
    # text, position based; the replica translates it into the wire form
    key = r.choice(["n0", "n1"])
    node = g.nodes.get(key)
    if node is None or node.deleted:
        # a position-based edit needs a live node (the session saw it removed)
        return Op(ot="number.add", key=key, path=path, value=1)
    doc = g.texts.get((key, "t"))
    n = len(doc) if doc is not None else 0
    verb = r.choice(["init", "insert", "insert", "insert", "insert", "delete", "replace"])
    if verb == "init" or (doc is None and r.random() < 0.3):
        return Op(ot="text.init", key=key, path="t")
    if verb == "insert" or n == 0:
        return Op(
            ot="text.insert",
            key=key,
            path="t",
            position=r.randint(0, n),
            value=[None, r.choice(["a", "bc", "xyz", "é"])],
        )
    pos = r.randint(0, n - 1)
    length = r.randint(1, min(3, n - pos))
    if verb == "delete":
        return Op(ot="text.delete", key=key, path="t", position=pos, length=length)
    return Op(ot="text.replace", key=key, path="t", position=pos, length=length, value=[None, "R"])


def deliverable(h: History, have: set[str]) -> list[Message]:
    return [m for m in h.messages if m.id not in have and h.deps[m.id] <= have]


def generate(
    r: random.Random,
    *,
    sessions: int = 3,
    steps: int = 30,
    text: bool = True,
    undo: bool = True,
    reload: bool = False,
) -> History:
    """A causally consistent history produced by ``sessions`` peers with stale views.

    ``reload``: now and then a session is replaced by a new replica with the same session id
    built from its own snapshot of a random prefix plus the rest of its journal (a client
    reload). Such a snapshot is not a prefix every replica agrees on, so only properties that
    do not need one hold for these histories (id uniqueness, not convergence).
    """
    h = History()
    sids = [chr(ord("a") + i) for i in range(sessions)]
    counter = [0]
    for sid in sids:
        h.sessions[sid] = Replica(sid)
        h.have[sid] = set()
    a = h.sessions["a"]
    a.edit(Op(ot="node.insert", key="", path="children", value={"key": "scene", "tag": "Scene"}), 1)
    for i in range(3):
        a.edit(
            Op(
                ot="node.insert",
                key="scene",
                path="children",
                value={"key": f"n{i}", "tag": "Mesh"},
            ),
            1,
        )
    _record(h, "a", a.commit(1))
    ts = 1
    for _ in range(steps):
        ts += r.randint(0, 2)
        sid = r.choice(sids)
        rep = h.sessions[sid]
        if reload and r.random() < 0.1:
            upto = r.randint(0, len(rep.messages))
            tail = [_copy(m) for m in rep.messages[upto:]]
            h.sessions[sid] = Replica.from_snapshot(sid, _copy_snapshot(rep.snapshot(upto)), tail)
            continue
        k = r.random()
        if k < 0.45:
            ready = deliverable(h, h.have[sid])
            if ready:
                for m in r.sample(ready, r.randint(1, len(ready))):
                    if h.deps[m.id] <= h.have[sid]:
                        rep.receive(_copy(m))
                        h.have[sid].add(m.id)
            continue
        if undo and k < 0.55:
            meta = rep.undo(ts) if r.random() < 0.6 else rep.redo(ts)
            if meta is not None:
                _record(h, sid, meta)
            continue
        for _ in range(r.randint(1, 3)):
            rep.edit(random_op(r, rep, sid, counter, text), ts)
        _record(h, sid, rep.commit(ts))
    return h


def _record(h: History, sid: str, m: Message | None) -> None:
    if m is None:
        return
    h.deps[m.id] = frozenset(h.have[sid])
    h.have[sid].add(m.id)
    h.messages.append(_copy(m))


def _copy(m: Message) -> Message:
    import msgspec

    return msgspec.json.decode(msgspec.json.encode(m), type=Message)


def _copy_snapshot(s: Snapshot) -> Snapshot:
    import msgspec

    return msgspec.msgpack.decode(msgspec.msgpack.encode(s), type=Snapshot)


def causal_order(r: random.Random, h: History, *, duplicates: float = 0.0) -> list[Message]:
    """A random linear extension of happens-before, with random re-deliveries."""
    have: set[str] = set()
    out: list[Message] = []
    while len(have) < len(h.messages):
        ready = deliverable(h, have)
        m = r.choice(ready)
        have.add(m.id)
        out.append(_copy(m))
        if duplicates and out and r.random() < duplicates:
            out.append(_copy(r.choice(out)))
    return out


def deliver_all(r: random.Random, h: History) -> None:
    """Hand every session every message it lacks, causally."""
    for sid, rep in h.sessions.items():
        for m in causal_order(r, h):
            if m.id not in h.have[sid]:
                rep.receive(m)
                h.have[sid].add(m.id)
