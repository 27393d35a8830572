"""CRDT benchmark: durasync.crdt next to the reference's Python port (PyPI vuer-rtc==0.0.2).

Both sides get the same op streams, built before timing (dicts for the port, validated
msgspec ``Message`` objects for us). Workloads:

  (a) 100k LWW sets over 1,000 nodes      (number/vector3/color.set, one op per message)
  (b) 100k additive drag deltas           (vector3.add on transform.position)
  (c) a typing trace of 200k single-char edits at moving positions in one text
  (d) a 10k-message join of a 100-client room (snapshot-less journal)

What is timed on each side:

  (a), (b)  ours: ``Replica.receive`` (validation, dedupe, canonical order, checkpoints);
            the room server's path, ``Replica.receive_many`` of sequenced batches of 10 already
            validated messages; and the bare ``SceneGraph.apply_message``; port:
            ``applyMessageMut`` (its bare dispatcher: no dedupe, no journal -- its cheapest
            path) and its replica ``GraphStore.receive`` on a prefix.
  (c)       position-based local edits (``TextDoc.local_insert/local_delete`` vs the port's
            ``insert_with_split``/``remove``), then the generated wire ops applied on a second
            replica (``apply_insert/apply_delete`` vs ``apply``/``apply_delete``). The port's
            rope is a flat list (O(n) per edit), so it runs only the first ``--port-text`` edits
            of the same trace; its rate on that shorter (smaller-document) prefix is an upper
            bound of its full-trace rate, so the printed ratio is a lower bound.
  (d)       ours: ``Replica("joiner", sequenced=True)`` then ``receive_many(journal, serverSeqs,
            validate=False)`` (the messages were validated when decoded, before timing, like
            the port's message objects are built before timing), and the same with validation
            in the timed part; port: ``Snapshot(graph=createEmptyGraph(), vectorClock={})``
            then ``initFromServer("joiner", snapshot, journal)``. Exactly these two calls are
            timed on each side; building the message objects is not.

Process state: each workload builds its streams itself and drops them, with everything both
sides built, before the next workload starts, and the collector runs in between; within (d)
each side runs after dropping its previous result. So a full run measures every workload in
the state it has when run alone (``--only``). (Before this, (d) ran next to the 100k-message
stream of (b) still alive, ~570k tracked objects, which made the port's ``initFromServer``
~1.5x faster than alone; see bench/README.md "## CRDT".)

The final states are checked to agree between the two sides: canonical JSON of the graphs
(byte for byte) for (a), (b), (d), the text for (c).

Usage: python bench/crdt.py [--quick] [--runs N] [--port-text N]
Needs the port: pip install vuer-rtc==0.0.2 (pyproject extra "bench").
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from durasync.crdt.canonical import canonical_json
from durasync.crdt.graph import Node, SceneGraph
from durasync.crdt.messages import Message, decode_message_obj
from durasync.crdt.replica import Replica
from durasync.crdt.text import DeleteEdit, InsertEdit, TextDoc

try:
    from vuer_rtc.client.graph_store import GraphStore as PortStore
    from vuer_rtc.client.graph_store import Snapshot as PortSnapshot
    from vuer_rtc.client.graph_store import initFromServer as port_init_from_server
    from vuer_rtc.crdt import rope as port_rope
    from vuer_rtc.operations.dispatcher import applyMessageMut as port_apply_mut
    from vuer_rtc.operations.dispatcher import createEmptyGraph as port_empty_graph
    from vuer_rtc.operations.types import CRDTMessage as PortMessage
except ImportError:  # pragma: no cover - the benchmark needs the port
    sys.exit("bench/crdt.py needs the reference port: pip install vuer-rtc==0.0.2")

# -- op streams -------------------------------------------------------------------------------


def msg(client: str, lt: int, ops: list[dict[str, Any]], ts: float) -> dict[str, Any]:
    return {"id": f"{client}:{lt}", "client": client, "lt": lt, "ts": ts, "clock": {}, "ops": ops}


def setup_nodes(n_nodes: int) -> list[dict[str, Any]]:
    """A root plus ``n_nodes - 1`` children, one node.insert message each."""
    out = [msg("setup", 1, [_insert("", "root")], 0.0)]
    for i in range(1, n_nodes):
        out.append(msg("setup", i + 1, [_insert("root", f"n{i}")], float(i)))
    return out


def _insert(parent: str, key: str) -> dict[str, Any]:
    return {
        "ot": "node.insert",
        "key": parent,
        "path": "children",
        "value": {"key": key, "tag": "Mesh", "name": key, "transform.position": [0, 0, 0]},
    }


def lww_stream(n: int, n_nodes: int, n_clients: int, lt0: int) -> list[dict[str, Any]]:
    rnd = random.Random(1)
    out = []
    for i in range(n):
        key = "root" if (k := rnd.randrange(n_nodes)) == 0 else f"n{k}"
        r = rnd.random()
        if r < 0.4:
            op = {"ot": "number.set", "key": key, "path": "opacity", "value": rnd.random()}
        elif r < 0.8:
            v = [rnd.random(), rnd.random(), rnd.random()]
            op = {"ot": "vector3.set", "key": key, "path": "transform.position", "value": v}
        else:
            c = f"#{rnd.randrange(1 << 24):06x}"
            op = {"ot": "color.set", "key": key, "path": "material.color", "value": c}
        client = f"c{rnd.randrange(n_clients)}"
        out.append(msg(client, lt0 + i, [op], 1e6 + i))
    return out


def drag_stream(n: int, n_nodes: int, n_clients: int, lt0: int) -> list[dict[str, Any]]:
    rnd = random.Random(2)
    out = []
    for i in range(n):
        key = "root" if (k := rnd.randrange(n_nodes)) == 0 else f"n{k}"
        d = [rnd.uniform(-0.01, 0.01), rnd.uniform(-0.01, 0.01), 0.0]
        op = {"ot": "vector3.add", "key": key, "path": "transform.position", "value": d}
        out.append(msg(f"c{rnd.randrange(n_clients)}", lt0 + i, [op], 1e6 + i))
    return out


def join_stream(n: int, n_clients: int) -> list[dict[str, Any]]:
    """A room journal: clients create nodes, set, drag, rename; Lamport times interleave."""
    rnd = random.Random(3)
    out = [msg("c0", 1, [_insert("", "root")], 0.0)]
    keys = ["root"]
    lt = 1
    for i in range(1, n):
        lt += 1
        client = f"c{rnd.randrange(n_clients)}"
        r = rnd.random()
        key = rnd.choice(keys)
        if r < 0.1 or len(keys) < 10:
            new = f"k{i}"
            ops = [_insert(rnd.choice(keys), new)]
            keys.append(new)
        elif r < 0.5:
            v = [rnd.random(), rnd.random(), rnd.random()]
            ops = [{"ot": "vector3.set", "key": key, "path": "transform.position", "value": v}]
        elif r < 0.85:
            d = [rnd.uniform(-0.01, 0.01), rnd.uniform(-0.01, 0.01), 0.0]
            ops = [{"ot": "vector3.add", "key": key, "path": "transform.position", "value": d}]
        else:
            ops = [{"ot": "string.set", "key": key, "path": "label", "value": f"label {i}"}]
        out.append(msg(client, lt, ops, float(i)))
    return out


def typing_trace(n: int, seed: int = 7) -> list[tuple[int, str | None]]:
    """(position, char) inserts and (position, None) backspaces: runs of typing, ~12 %
    backspaces, and a jump of the cursor to a random position on ~2 % of the edits."""
    rnd = random.Random(seed)
    length = 0
    cursor = 0
    out: list[tuple[int, str | None]] = []
    for _ in range(n):
        r = rnd.random()
        if r < 0.02:
            cursor = rnd.randint(0, length)
        if r > 0.88 and cursor > 0:
            cursor -= 1
            out.append((cursor, None))
            length -= 1
        else:
            out.append((cursor, "abcdefghij"[rnd.randrange(10)]))
            cursor += 1
            length += 1
    return out


# -- drivers ----------------------------------------------------------------------------------


def ours_msgs(dicts: list[dict[str, Any]]) -> list[Message]:
    return [decode_message_obj(d) for d in dicts]


def port_msgs(dicts: list[dict[str, Any]]) -> list[Any]:
    return [
        PortMessage(
            id=d["id"],
            client=d["client"],
            clock=d["clock"],
            lt=d["lt"],
            ts=d["ts"],
            ops=[dict(o) for o in d["ops"]],
        )
        for d in dicts
    ]


def port_canonical(pg: Any) -> str:
    """The port's graph in our canonical JSON (crdt-canonical-json.md), to compare states."""
    g = SceneGraph()
    g.root_key = pg.rootKey or ""
    for key, pn in pg.nodes.items():
        n = Node(key, tag=pn.tag, name=pn.name, children=list(pn.children))
        n.props = dict(pn.properties)
        n.deleted_at = pn._crdt.deletedAt
        g.nodes[key] = n
    return canonical_json(g)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_rate(n: int, runs: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    rates = []
    out = None
    for _ in range(runs):
        dt, out = timed(fn)
        rates.append(n / dt)
    return statistics.median(rates), out


def bench_graph_stream(
    name: str, setup: list[dict[str, Any]], stream: list[dict[str, Any]], runs: int, n_store: int
) -> list[tuple[str, float, float | None]]:
    n = len(stream)

    def ours_replica() -> Replica:
        rep = Replica("server")
        rep.receive_many(ours_msgs(setup))
        msgs = ours_msgs(stream)
        recv = rep.receive
        t0 = time.perf_counter()
        for m in msgs:
            recv(m)
        return rep, time.perf_counter() - t0

    def ours_server() -> Any:
        # The room server's path: every committed batch (here 10 messages) is already
        # validated (frame decode) and sequenced, and folded with receive_many(validate=False).
        rep = Replica("server")
        setup_msgs = ours_msgs(setup)
        rep.receive_many(setup_msgs, range(len(setup_msgs)))
        msgs = ours_msgs(stream)
        base = len(setup_msgs)
        t0 = time.perf_counter()
        for i in range(0, len(msgs), 10):
            batch = msgs[i : i + 10]
            rep.receive_many(batch, range(base + i, base + i + len(batch)), validate=False)
        return rep, time.perf_counter() - t0

    def ours_bare() -> Any:
        rep = Replica("server")
        rep.receive_many(ours_msgs(setup))
        g = rep.graph
        msgs = ours_msgs(stream)
        apply = g.apply_message
        t0 = time.perf_counter()
        for m in msgs:
            apply(m)
        return g, time.perf_counter() - t0

    def port() -> Any:
        g = port_empty_graph()
        for m in port_msgs(setup):
            port_apply_mut(g, m)
        msgs = port_msgs(stream)
        t0 = time.perf_counter()
        for m in msgs:
            port_apply_mut(g, m)
        return g, time.perf_counter() - t0

    def port_store() -> Any:
        # The port's replica: GraphStore.receive dedupes by id, journals, and rebuilds the
        # graph from snapshot + journal on every message (reference §5). O(journal) per
        # message, so it runs only the first n_store messages of the stream.
        g = port_empty_graph()
        for m in port_msgs(setup):
            port_apply_mut(g, m)
        store = PortStore("server", initial_snapshot=PortSnapshot(graph=g, vectorClock={}))
        msgs = port_msgs(stream[:n_store])
        recv = store.receive
        t0 = time.perf_counter()
        for m in msgs:
            recv(m)
        return store, time.perf_counter() - t0

    def rate(fn: Callable[[], Any], count: int = n) -> tuple[float, Any]:
        rates = []
        out = None
        for _ in range(runs):
            gc.collect()
            out, dt = fn()
            rates.append(count / dt)
        return statistics.median(rates), out

    r_rep, rep = rate(ours_replica)
    r_srv, srv = rate(ours_server)
    r_bare, g = rate(ours_bare)
    r_port, pg = rate(port)
    r_store, _ = rate(port_store, min(n, n_store))
    # same op stream -> the same graph on all three (canonical JSON, byte for byte)
    assert canonical_json(rep.graph) == canonical_json(g) == port_canonical(pg)
    assert canonical_json(srv.graph) == canonical_json(g)
    return [
        (f"{name}: Replica.receive vs GraphStore.receive*", r_rep, r_store),
        (f"{name}: Replica.receive vs applyMessageMut", r_rep, r_port),
        (f"{name}: room server receive_many(10, validate=False) vs applyMessageMut", r_srv, r_port),
        (f"{name}: SceneGraph.apply_message vs applyMessageMut", r_bare, r_port),
    ]


def bench_text(n: int, n_port: int, runs: int) -> list[tuple[str, float, float | None]]:
    trace = typing_trace(n)

    def ours_local() -> tuple[TextDoc, list[Any]]:
        d = TextDoc("alice")
        ins, dele = d.local_insert, d.local_delete
        ops: list[Any] = []
        add = ops.append
        ts = 1.0
        for pos, ch in trace:
            add(ins(pos, ch, ts) if ch is not None else dele(pos, 1))
        return d, ops

    r_local, (doc, ops) = median_rate(n, runs, ours_local)

    def ours_remote() -> TextDoc:
        r = TextDoc("bob")
        ai, ad = r.apply_insert, r.apply_delete
        for op in ops:
            if type(op) is InsertEdit:
                ai(op.id, op.anchor, op.content, op.seq, op.ts)
            else:
                assert isinstance(op, DeleteEdit)
                ad(op.rm)
        return r

    r_remote, remote = median_rate(n, runs, ours_remote)
    assert remote.text() == doc.text()

    ptrace = trace[:n_port]
    port_rope.time.time = lambda: 1.0  # same ts as ours; the port reads its wall clock

    def port_local() -> tuple[Any, list[Any]]:
        p = port_rope.create("alice")
        ins, rem = port_rope.insert_with_split, port_rope.remove
        pops: list[Any] = []
        for pos, ch in ptrace:
            pops.append(ins(p, pos, ch) if ch is not None else rem(p, pos, 1))
        return p, pops

    p_local, (prope, pops) = median_rate(len(ptrace), max(1, runs // 2), port_local)

    def port_remote() -> Any:
        p = port_rope.create("bob")
        for op in pops:
            if op["ot"] == "insert":
                port_rope.apply(p, op)
            else:
                port_rope.apply_delete(p, op)
        return p

    p_remote, premote = median_rate(len(ptrace), max(1, runs // 2), port_remote)
    # Same trace prefix -> same text on both sides.
    check = TextDoc("alice")
    for pos, ch in ptrace:
        if ch is not None:
            check.local_insert(pos, ch, 1.0)
        else:
            check.local_delete(pos, 1)
    assert port_rope.get_text(prope) == port_rope.get_text(premote) == check.text()
    return [
        ("(c) text local edits*", r_local, p_local),
        ("(c) text remote apply*", r_remote, p_remote),
    ]


def bench_join(n: int, n_clients: int, runs: int) -> list[tuple[str, float, float | None]]:
    journal = join_stream(n, n_clients)

    def ours() -> Any:
        # Messages are decoded and validated before timing (ours_msgs: decode_message_obj),
        # as the room client's frame decoder does, so the fold does not validate them again.
        msgs = ours_msgs(journal)
        seqs = list(range(len(msgs)))
        t0 = time.perf_counter()
        rep = Replica("joiner", sequenced=True)
        rep.receive_many(msgs, seqs, validate=False)
        return rep, time.perf_counter() - t0

    def ours_validating() -> Any:
        msgs = ours_msgs(journal)
        seqs = list(range(len(msgs)))
        t0 = time.perf_counter()
        rep = Replica("joiner", sequenced=True)
        rep.receive_many(msgs, seqs)
        return rep, time.perf_counter() - t0

    def port() -> Any:
        msgs = port_msgs(journal)
        t0 = time.perf_counter()
        snap = PortSnapshot(graph=port_empty_graph(), vectorClock={})
        state = port_init_from_server("joiner", snap, msgs)
        return state, time.perf_counter() - t0

    # A join takes milliseconds: run the three sides interleaved, 3x as many times as the
    # other workloads, so that load changes on a shared machine hit all of them alike.
    rates: dict[str, list[float]] = {"ours": [], "port": [], "val": []}
    outs: dict[str, Any] = {}
    sides = {"ours": ours, "port": port, "val": ours_validating}
    for _ in range(3 * runs):
        for name, fn in sides.items():
            outs.pop(name, None)  # each side runs without its previous result alive
            gc.collect()
            outs[name], dt = fn()
            rates[name].append(n / dt)
    r_ours, r_port, r_val = (statistics.median(rates[k]) for k in ("ours", "port", "val"))
    rep, state, rep_v = outs["ours"], outs["port"], outs["val"]
    # same journal -> the same graph (canonical JSON, byte for byte)
    assert rep.dump() == rep_v.dump() == port_canonical(state.graph)
    return [
        (f"(d) join {n} msgs/{n_clients} clients: receive_many vs initFromServer", r_ours, r_port),
        ("(d) same, validating again in receive_many", r_val, r_port),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10x smaller streams, 1 run")
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--port-text", type=int, default=20_000, help="edits of (c) for the port")
    ap.add_argument(
        "--port-store", type=int, default=100, help="messages of (a)/(b) for GraphStore.receive"
    )
    ap.add_argument("--only", choices=["a", "b", "c", "d"], action="append")
    args = ap.parse_args()
    scale = 10 if args.quick else 1
    runs = 1 if args.quick else args.runs
    n_port_text = min(args.port_text, 5_000) if args.quick else args.port_text
    n_store = min(args.port_store, 50) if args.quick else args.port_store
    only = set(args.only or ["a", "b", "c", "d"])
    rows: list[tuple[str, float, float | None]] = []
    # Each workload builds its own streams and drops them (and everything both sides built)
    # before the next one starts, then the collector runs: a workload never runs next to the
    # previous workloads' data (hundreds of thousands of live objects that every collection
    # walks), so a full run measures each workload as it measures alone.
    workloads: list[tuple[str, Callable[[], list[tuple[str, float, float | None]]]]] = [
        (
            "a",
            lambda: bench_graph_stream(
                "(a) LWW sets",
                setup_nodes(1000),
                lww_stream(100_000 // scale, 1000, 100, lt0=10_000),
                runs,
                n_store,
            ),
        ),
        (
            "b",
            lambda: bench_graph_stream(
                "(b) drag deltas",
                setup_nodes(1000),
                drag_stream(100_000 // scale, 1000, 100, lt0=10_000),
                runs,
                n_store,
            ),
        ),
        ("c", lambda: bench_text(200_000 // scale, n_port_text, runs)),
        ("d", lambda: bench_join(10_000 // scale, 100, runs)),
    ]
    for key, run in workloads:
        if key in only:
            gc.collect()
            rows += run()
    width = max(len(r[0]) for r in rows)
    print(f"{'workload':<{width}}  {'ours ops/s':>12}  {'port ops/s':>12}  {'ratio':>7}")
    for name, ours, port in rows:
        ratio = f"{ours / port:6.1f}x" if port else "   n/a"
        pstr = f"{port:12,.0f}" if port else f"{'n/a':>12}"
        print(f"{name:<{width}}  {ours:12,.0f}  {pstr}  {ratio}")
    print(
        f"* port run on the first {n_store} messages of the stream ((a)/(b)) or the first "
        f"{n_port_text} edits ((c)); its cost per item grows with the journal/document, so "
        "these port rates are upper bounds and the ratios lower bounds."
    )


if __name__ == "__main__":
    main()
