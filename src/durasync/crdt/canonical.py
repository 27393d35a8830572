"""Canonical JSON of a scene graph (shared/reference/crdt-canonical-json.md) and its checksum.

``{"nodes":{key:{"children":[...],"deleted":b,"name":s,"props":{...},"tag":s}},"rootKey":s}``
with keys sorted by code point, no spaces, UTF-8 without ASCII escaping, and numbers printed
like JavaScript's ``Number.prototype.toString`` after rounding to 12 significant digits
(``-0`` -> ``0``, NaN/inf -> ``null``), except integral values within +-(2^53-1), which print
with all their digits, ``int`` or ``float`` alike (docs/crdt.md "Canonical JSON"). Two graphs
are equal for sync purposes iff their canonical JSON is byte-equal; :func:`checksum` hashes it
(blake2b-128) for cheap comparison.
"""

from __future__ import annotations

import hashlib
import json
import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

from durasync.crdt.graph import TEXT, SceneGraph

__all__ = ["canonical_json", "checksum", "digest", "format_number", "format_tree", "graph_to_obj"]

_encode_str: Final = json.encoder.encode_basestring
#: The largest integer every format carries exactly (docs/crdt.md "Numbers").
_MAX_SAFE: Final = 2**53 - 1


def _js_digits(x: float) -> str:
    """JS ``Number.prototype.toString`` of a finite non-zero double (shortest digits)."""
    neg = x < 0
    s = repr(-x if neg else x)
    mant, _, e = s.partition("e")
    exp = int(e) if e else 0
    ip, _, fp = mant.partition(".")
    if fp == "0":
        fp = ""
    digits = ip + fp
    n = len(ip) + exp
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0") or "0"
    k = len(digits)
    # ECMA-262 Number::toString: value = 0.d1..dk × 10^n
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e2 = n - 1
        sign = "+" if e2 >= 0 else "-"
        out = (digits if k == 1 else digits[0] + "." + digits[1:]) + "e" + sign + str(abs(e2))
    return "-" + out if neg else out


def format_number(x: int | float) -> str:
    """Canonical text of a number (docs/crdt.md "Canonical JSON"): an integral value within
    +-(2^53-1) with all its digits (``1234567890123.0`` -> ``1234567890123``), a Python ``int``
    beyond that too (messages carry none), anything else rounded to 12 significant digits and
    printed as JavaScript prints it."""
    if type(x) is int:
        return str(x)
    x = float(x)
    if not math.isfinite(x):
        return "null"
    if x == 0:
        return "0"
    if x.is_integer() and abs(x) <= _MAX_SAFE:
        # An integral value prints whole, int or float alike: JSON and JavaScript do not tell
        # 2 from 2.0, so a JS replica holding the same value prints the same digits.
        return str(int(x))
    r = repr(x)
    mant = r.partition("e")[0]
    sig = mant.replace("-", "").replace(".", "").lstrip("0").rstrip("0")
    if len(sig) > 12:
        # round to 12 significant digits, ties away from zero (JS toPrecision picks the larger n)
        d = Decimal(x)
        q = Decimal(1).scaleb(d.adjusted() - 11)
        x = float(d.quantize(q, rounding=ROUND_HALF_UP))
        if x == 0:
            return "0"
    return _js_digits(x)


def _enc(v: Any, out: list[str], g: SceneGraph, key: str, path: str) -> None:
    t = type(v)
    if t is str:
        out.append(_encode_str(v))
    elif t is bool:
        out.append("true" if v else "false")
    elif t is int or t is float:
        out.append(format_number(v))
    elif v is None:
        out.append("null")
    elif t is list or t is tuple:
        out.append("[")
        first = True
        for x in v:
            if not first:
                out.append(",")
            first = False
            _enc(x, out, g, key, path)
        out.append("]")
    elif t is dict:
        out.append("{")
        first = True
        for k in sorted(v):
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(k))
            out.append(":")
            _enc(v[k], out, g, key, path)
        out.append("}")
    elif v is TEXT:
        doc = g.texts.get((key, path))
        out.append(_encode_str(doc.text() if doc is not None else ""))
    else:  # not reachable for validated input; never crash a dump
        out.append(_encode_str(str(v)))


def canonical_json(g: SceneGraph, *, live: bool = False, with_meta: bool = False) -> str:
    """The canonical JSON text of ``g``.

    ``live=True`` leaves tombstoned nodes out and filters them out of every ``children`` list;
    ``with_meta=True`` adds each node's ``"lww": {path: {"client", "lt"}}``.
    """
    nodes = g.nodes
    out: list[str] = ['{"nodes":{']
    first = True
    for key in sorted(nodes):
        n = nodes[key]
        deleted = n.deleted_at is not None
        if live and deleted:
            continue
        if not first:
            out.append(",")
        first = False
        out.append(_encode_str(key))
        out.append(':{"children":[')
        ch = n.children
        if live:
            ch = [
                c for c in ch if not ((m := nodes.get(c)) is not None and m.deleted_at is not None)
            ]
        out.append(",".join(_encode_str(c) for c in ch))
        out.append('],"deleted":')
        out.append("true" if deleted else "false")
        if with_meta:
            out.append(',"lww":{')
            out.append(
                ",".join(
                    f'{_encode_str(p)}:{{"client":{_encode_str(st[1])},"lt":{st[0]}}}'
                    for p, st in sorted(n.lww.items())
                )
            )
            out.append("}")
        out.append(',"name":')
        out.append(_encode_str(n.name))
        out.append(',"props":{')
        pfirst = True
        for p in sorted(n.props):
            if not pfirst:
                out.append(",")
            pfirst = False
            out.append(_encode_str(p))
            out.append(":")
            _enc(n.props[p], out, g, key, p)
        out.append('},"tag":')
        out.append(_encode_str(n.tag))
        out.append("}")
    out.append('},"rootKey":')
    out.append(_encode_str(g.root_key))
    out.append("}")
    return "".join(out)


def graph_to_obj(g: SceneGraph, *, live: bool = False, with_meta: bool = False) -> Any:
    """The canonical form as plain Python values (``json.loads(canonical_json(...))``)."""
    return json.loads(canonical_json(g, live=live, with_meta=with_meta))


def format_tree(g: SceneGraph, *, live: bool = True) -> str:
    """``g`` as an indented tree for people, one node per line (``print(graph)`` prints it).

    Each line: ``key <tag> "name"`` then the properties as ``path=value`` (values in compact
    canonical JSON, text properties as their string), children indented below their parent.
    Nodes nobody lists as a child start a tree of their own, root first. ``live=False`` also
    shows tombstoned nodes, marked ``(deleted)``. Not a stable format: for comparisons use
    :func:`canonical_json`.
    """
    obj = graph_to_obj(g, live=live)
    nodes: dict[str, Any] = obj["nodes"]
    listed = {c for n in nodes.values() for c in n["children"]}
    tops = [k for k in nodes if k not in listed]
    tops.sort(key=lambda k: (k != obj["rootKey"], k))
    lines: list[str] = []
    seen: set[str] = set()
    stack: list[tuple[str, int]] = [(k, 0) for k in reversed(tops)]
    while stack:
        key, depth = stack.pop()
        node = nodes.get(key)
        if node is None or key in seen:
            continue
        seen.add(key)
        parts = [key or '""', f"<{node['tag']}>" if node["tag"] else "<>"]
        if node["name"]:
            parts.append(json.dumps(node["name"], ensure_ascii=False))
        if node["deleted"]:
            parts.append("(deleted)")
        for path, value in node["props"].items():
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            parts.append(f"{path}={text}")
        lines.append("  " * depth + " ".join(parts))
        stack.extend((c, depth + 1) for c in reversed(node["children"]))
    return "\n".join(lines) if lines else "(empty graph)"


def checksum(g: SceneGraph, *, live: bool = True) -> str:
    """blake2b-128 hex digest of the canonical JSON (live view by default)."""
    return digest(canonical_json(g, live=live))


def digest(text: str) -> str:
    """The checksum of a canonical JSON text already built (:func:`checksum` without the build)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
