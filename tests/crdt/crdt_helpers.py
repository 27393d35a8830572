"""Small builders for CRDT tests."""

from __future__ import annotations

from typing import Any

from durasync.crdt import Message, Op


def op(ot: str, key: str, path: str = "", value: Any = None, **extra: Any) -> Op:
    """An op; ``value=None`` means "no value" except for ops that take null explicitly."""
    kw: dict[str, Any] = dict(extra)
    if "from" in kw:
        kw["from_"] = kw.pop("from")
    o = Op(ot=ot, key=key, path=path, **kw)
    if value is not None:
        o.value = value
    return o


def msg(client: str, lt: int, *ops: Op, ts: float | None = None, mid: str | None = None) -> Message:
    """A message ``client:lt`` with the given ops."""
    return Message(
        id=mid or f"{client}:{lt}",
        client=client,
        lt=lt,
        ts=ts if ts is not None else 1000 + lt,
        ops=list(ops),
        clock={client: lt},
    )


def root_msg(client: str = "a", lt: int = 1, *children: str) -> Message:
    """Insert a root ``scene`` and the given child nodes."""
    ops = [op("node.insert", "", "children", {"key": "scene", "tag": "Scene", "name": "S"})]
    ops += [op("node.insert", "scene", "children", {"key": c, "tag": "Mesh"}) for c in children]
    return msg(client, lt, *ops)
