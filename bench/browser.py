"""Browser benchmark: the JS replica (js/dist/durasync.mjs) in headless Chromium next to the
Python replica (durasync.crdt) on the CRDT workloads of bench/crdt.py, in the same run; and the
bundle's gzipped size.

Workloads (the streams of bench/crdt.py, built once in Python and handed to both sides):

  (a) 100k LWW sets over 1,000 nodes           Replica.receive, one message at a time
  (b) 100k additive drag deltas                 Replica.receive, one message at a time
      (a)/(b) also as the room server's path: receive_many of sequenced batches of 10
  (c) a typing trace of 200k single-char edits  TextDoc local edits, then the wire ops applied
                                                on a second doc
  (d) a 10k-message join of a 100-client room   Replica(sequenced).receive_many(journal, seqs)

Both sides decode (and validate) the messages before timing, then time exactly the calls
listed; each figure is the median of ``--runs`` runs, the sides interleaved per run. Both sides
must end in the same state: the canonical JSON of the graphs byte for byte ((a), (b), (d)) and
the text ((c)).

Then the room client end to end: ``durasync serve`` (embedded store, a temp dir) gets a room
journal of workload (d)'s kind -- messages of 100 clients, each sent by a connection of its
client -- in two rooms:

- worst case, 10,000 messages with no snapshot in between (``--room-snapshot-every 100000``):
  a join receives all 10,000 in its ``state`` frame;
- the server's default snapshot policy (a snapshot every 10,000 messages), 15,000 messages:
  a join receives the snapshot at ~10,000 plus a tail of ~5,000 (the mean tail under that
  policy); the bench waits until the background snapshot is there.

Timed: a new ``RoomClient`` (TypeScript, in Chromium) from its constructor until ``join()``
resolves -- WebSocket connect, the server's state frame, decode, validation, the replica --
next to the Python ``RoomClient``'s ``join()`` of the same room, sides interleaved, in both
formats; both must end with the same canonical JSON. Also printed: the page's main-thread CPU
time during the TS join (CDP ``Performance`` ``ThreadTime``), which a loaded machine moves much
less than the wall time.

Usage: python bench/browser.py [--quick] [--runs N] [--joins-only]
       (needs chromium: `make chromium-deps`)
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import gzip
import http.server
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from playwright.sync_api import sync_playwright  # noqa: E402

from _peers import start_ours  # noqa: E402
from crdt import (  # noqa: E402  (bench/crdt.py: the same workloads)
    drag_stream,
    join_stream,
    lww_stream,
    setup_nodes,
    typing_trace,
)
from durasync.client.room import RoomClient  # noqa: E402
from durasync.crdt import Replica, decode_message_obj  # noqa: E402
from durasync.crdt.text import DeleteEdit, InsertEdit, TextDoc  # noqa: E402

CHROMIUM = os.environ.get("DURASYNC_CHROMIUM", "/usr/bin/chromium")
DIST = ROOT / "js" / "dist"

PAGE = """<!doctype html><link rel="icon" href="data:,"><title>bench</title>
<script type="module">
import * as D from "/durasync.mjs"; window.D = D; window.ready = true;
</script>
"""

# The JS side of every workload; each returns [seconds, check] for one run.
JS = """
window.bench = {
  stream(setup, stream, mode) {
    const S = setup.map((m) => D.decodeMessage(m));
    const M = stream.map((m) => D.decodeMessage(m));
    const r = new D.Replica("server");
    if (mode === "receive") {
      r.receiveMany(S);
      const t0 = performance.now();
      for (const m of M) r.receive(m);
      return [(performance.now() - t0) / 1000, r.dump()];
    }
    r.receiveMany(S, S.map((_, i) => i));
    const base = S.length;
    const t0 = performance.now();
    for (let i = 0; i < M.length; i += 10) {
      const b = M.slice(i, i + 10);
      r.receiveMany(b, b.map((_, j) => base + i + j), { validate: false });
    }
    return [(performance.now() - t0) / 1000, r.dump()];
  },
  text(trace) {
    const t0 = performance.now();
    const d = new D.TextDoc("alice");
    const ops = [];
    for (const [pos, ch] of trace) {
      ops.push(ch !== null ? d.localInsert(pos, ch, 1) : d.localDelete(pos, 1));
    }
    const t1 = performance.now();
    const r = new D.TextDoc("bob");
    for (const op of ops) {
      if (Array.isArray(op)) r.applyDelete(op);
      else r.applyInsert(op.id, op.anchor, op.content, op.seq, op.ts);
    }
    const t2 = performance.now();
    if (r.text() !== d.text()) throw new Error("texts differ");
    return [(t1 - t0) / 1000, (t2 - t1) / 1000, d.text()];
  },
  join(journal) {
    const M = journal.map((m) => D.decodeMessage(m));
    const seqs = M.map((_, i) => i);
    const t0 = performance.now();
    const r = new D.Replica("joiner", { sequenced: true });
    r.receiveMany(M, seqs, { validate: false });
    return [(performance.now() - t0) / 1000, r.dump()];
  },
};
"""


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path in ("/", "/index.html"):
            body = PAGE.encode()
            ctype = "text/html"
        elif self.path == "/durasync.mjs":
            body = (DIST / "durasync.mjs").read_bytes()
            ctype = "text/javascript"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def py_stream(
    setup: list[dict[str, Any]], stream: list[dict[str, Any]], mode: str
) -> tuple[float, str]:
    S = [decode_message_obj(m) for m in setup]
    M = [decode_message_obj(m) for m in stream]
    r = Replica("server")
    gc.collect()
    if mode == "receive":
        r.receive_many(S)
        recv = r.receive
        t0 = time.perf_counter()
        for m in M:
            recv(m)
        return time.perf_counter() - t0, r.dump()
    r.receive_many(S, range(len(S)))
    base = len(S)
    t0 = time.perf_counter()
    for i in range(0, len(M), 10):
        b = M[i : i + 10]
        r.receive_many(b, range(base + i, base + i + len(b)), validate=False)
    return time.perf_counter() - t0, r.dump()


def py_text(trace: list[tuple[int, str | None]]) -> tuple[float, float, str]:
    gc.collect()
    t0 = time.perf_counter()
    d = TextDoc("alice")
    ops: list[Any] = []
    for pos, ch in trace:
        ops.append(d.local_insert(pos, ch, 1.0) if ch is not None else d.local_delete(pos, 1))
    t1 = time.perf_counter()
    r = TextDoc("bob")
    for op in ops:
        if type(op) is InsertEdit:
            r.apply_insert(op.id, op.anchor, op.content, op.seq, op.ts)
        else:
            assert isinstance(op, DeleteEdit)
            r.apply_delete(op.rm)
    t2 = time.perf_counter()
    assert r.text() == d.text()
    return t1 - t0, t2 - t1, d.text()


def py_join(journal: list[dict[str, Any]]) -> tuple[float, str]:
    M = [decode_message_obj(m) for m in journal]
    gc.collect()
    t0 = time.perf_counter()
    r = Replica("joiner", sequenced=True)
    r.receive_many(M, range(len(M)), validate=False)
    return time.perf_counter() - t0, r.dump()


# One room join by the TypeScript RoomClient: seconds until join() resolved (the client stays
# in window.rc for ROOM_DUMP_JS, so the canonical dump is not timed).
ROOM_JOIN_JS = """
async ([url, room, format]) => {
  const D = window.D ?? (window.D = await import(url + "/js/durasync.mjs"));
  const t0 = performance.now();
  const rc = new D.RoomClient(url, room, { format });
  await rc.join();
  const t = (performance.now() - t0) / 1000;
  window.rc = rc;
  return t;
}
"""
ROOM_DUMP_JS = """
async () => {
  const dump = window.rc.dump();
  await window.rc.close(0);
  window.rc = null;
  return dump;
}
"""


def _thread_time(cdp: Any) -> float:
    """CPU seconds of the page's main thread so far (CDP Performance ``ThreadTime``)."""
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return float(next(m["value"] for m in metrics if m["name"] == "ThreadTime"))


def _ts_join(page: Any, cdp: Any, url: str, room: str, fmt: str) -> tuple[float, float, str]:
    """(wall seconds, main-thread CPU seconds, canonical JSON) of one TS RoomClient join."""
    cpu0 = _thread_time(cdp)
    t = page.evaluate(ROOM_JOIN_JS, [url, room, fmt])
    cpu = _thread_time(cdp) - cpu0
    return t, cpu, page.evaluate(ROOM_DUMP_JS)


async def _fill_room(ws: str, room: str, journal: list[dict[str, Any]]) -> None:
    """Journal ``journal`` in ``room``: each message sent by a connection of its own client
    (the id namespace rule), one client after another (members would each get every other
    client's messages broadcast), pipelined, every ack awaited."""
    import msgspec
    from websockets.asyncio.client import connect

    by_client: dict[str, list[dict[str, Any]]] = {}
    for m in journal:
        by_client.setdefault(m["client"], []).append(m)
    for cid, msgs in by_client.items():
        url = f"{ws}/v1/rooms/{room}?client={cid}&format=msgpack"
        async with connect(url, compression=None, max_size=1 << 28, ping_interval=None) as conn:
            first = msgspec.msgpack.decode(await conn.recv())
            assert first["mtype"] == "state"
            for m in msgs:
                await conn.send(msgspec.msgpack.encode({"mtype": "crdt", "msg": m}))
            acked = 0
            while acked < len(msgs):
                f = msgspec.msgpack.decode(await conn.recv())
                if f["mtype"] == "error":
                    raise RuntimeError(f"fill refused: {f}")
                acked += f["mtype"] == "ack"


async def _py_room_join(ws: str, room: str, fmt: str) -> tuple[float, str]:
    gc.collect()
    t0 = time.perf_counter()
    client = RoomClient(ws, room, fmt=fmt)  # type: ignore[arg-type]
    await client.join()
    t = time.perf_counter() - t0
    dump = client.replica.dump()
    await client.close(grace=0)
    return t, dump


async def _state_shape(ws: str, room: str) -> tuple[int | None, int, int]:
    """(snapshot seq or None, journal length, serverSeq) of a fresh join's ``state`` frame."""
    import msgspec
    from websockets.asyncio.client import connect

    url = f"{ws}/v1/rooms/{room}?client=bench-probe&format=msgpack"
    async with connect(url, compression=None, max_size=1 << 28, ping_interval=None) as conn:
        f = msgspec.msgpack.decode(await conn.recv())
    snap = f["snapshot"]
    return (snap["seq"] if snap else None), len(f["journal"]), f["serverSeq"]


def _wait_for_snapshot(loop_thread: Any, ws: str, room: str, timeout: float = 120.0) -> None:
    """The default policy snapshots in the background: wait (bounded) until a join gets one."""
    deadline = time.monotonic() + timeout
    while True:
        snap, _, _ = loop_thread.submit(asyncio.run, _state_shape(ws, room)).result()
        if snap is not None:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no snapshot of {room} within {timeout:.0f} s")
        time.sleep(0.5)


# (label, messages journaled, extra `durasync serve` arguments)
JOIN_ROOMS: list[tuple[str, int, list[str]]] = [
    # worst case: no snapshot folds the history, the state frame carries all of it
    ("no snapshot", 10_000, ["--room-snapshot-every", "100000"]),
    # the server's default policy (a snapshot every 10,000 messages): a room of 15,000 joins
    # from the snapshot at 10,000 plus a tail of 5,000, the mean tail under that policy
    ("default policy", 15_000, []),
]


def room_joins(
    browser: Any, scale: int, runs: int, formats: tuple[str, ...] = ("msgpack", "json")
) -> list[tuple[str, str, str, float, float, float]]:
    """Median join time of the TS and the Python RoomClient, per room and format (see the
    docstring): rows of (room, what the state frame held, format, TS seconds, TS main-thread
    CPU seconds, Python seconds)."""
    rows: list[tuple[str, str, str, float, float, float]] = []
    for label, n_msgs, extra in JOIN_ROOMS:
        n = n_msgs // scale
        with (
            tempfile.TemporaryDirectory() as data,
            concurrent.futures.ThreadPoolExecutor(1) as loop_thread,
        ):
            srv = start_ours(data_dir=Path(data), extra=extra)
            try:
                ws = "ws://" + srv.url.split("://", 1)[1]
                journal = join_stream(n, 100)
                room = "bench-join"
                loop_thread.submit(asyncio.run, _fill_room(ws, room, journal)).result()
                if not extra and n >= 10_000:
                    _wait_for_snapshot(loop_thread, ws, room)
                snap, tail, seq = loop_thread.submit(asyncio.run, _state_shape(ws, room)).result()
                held = f"{tail:,} journaled" if snap is None else f"snapshot@{snap:,} + {tail:,}"
                page = browser.new_page()
                page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
                page.goto(f"{srv.url}/healthz")
                # warm-up: the room loads into the server's memory, the page compiles the module
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
                _ts_join(page, cdp, srv.url, room, "msgpack")
                for fmt in formats:
                    t_js: list[float] = []
                    c_js: list[float] = []
                    t_py: list[float] = []
                    for _ in range(runs):
                        tj, cj, dj = _ts_join(page, cdp, srv.url, room, fmt)
                        tp, dp = loop_thread.submit(
                            asyncio.run, _py_room_join(ws, room, fmt)
                        ).result()
                        assert dj == dp, f"room join ({label}, {fmt}): the two clients differ"
                        t_js.append(tj)
                        c_js.append(cj)
                        t_py.append(tp)
                    rows.append(
                        (
                            f"{label}, {seq:,} msgs",
                            held,
                            fmt,
                            statistics.median(t_js),
                            statistics.median(c_js),
                            statistics.median(t_py),
                        )
                    )
                page.close()
            finally:
                srv.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10x smaller streams, 1 run")
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument(
        "--joins-only", action="store_true", help="only the room joins (no replica workloads)"
    )
    args = ap.parse_args()
    scale = 10 if args.quick else 1
    runs = 1 if args.quick else args.runs
    if not (DIST / "durasync.mjs").exists():
        sys.exit("build the bundle first: make js-build")
    bundle = (DIST / "durasync.mjs").read_bytes()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rows: list[tuple[str, float, float]] = []
    joins: list[tuple[str, str, str, float, float, float]] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            page.wait_for_function("() => window.ready === true")
            page.evaluate(JS)
            version = browser.version
            if args.joins_only:
                joins = room_joins(browser, scale, 1 if args.quick else max(runs, 5))
                browser.close()
                return _print(version, runs, rows, joins, bundle)

            def both(
                name: str, n: int, js: Callable[[], Any], py: Callable[[], Any], idx: int = 0
            ) -> None:
                t_js: list[float] = []
                t_py: list[float] = []
                for _ in range(runs):
                    rj = js()
                    rp = py()
                    assert rj[-1] == rp[-1], f"{name}: the two sides differ"
                    t_js.append(rj[idx])
                    t_py.append(rp[idx])
                rows.append((name, n / statistics.median(t_js), n / statistics.median(t_py)))

            n = 100_000 // scale
            setup = setup_nodes(1000)
            for label, stream in (
                ("(a) LWW sets", lww_stream(n, 1000, 100, lt0=10_000)),
                ("(b) drag deltas", drag_stream(n, 1000, 100, lt0=10_000)),
            ):
                payload = json.dumps([setup, stream])
                page.evaluate(f"window.W = {payload}")
                for mode, what in (("receive", "Replica.receive"), ("server", "receive_many(10)")):
                    both(
                        f"{label}: {what}",
                        n,
                        lambda mode=mode: page.evaluate(
                            f"() => bench.stream(W[0], W[1], {json.dumps(mode)})"
                        ),
                        lambda mode=mode, stream=stream: py_stream(setup, stream, mode),
                    )
                page.evaluate("window.W = null")
            trace = typing_trace(200_000 // scale)
            page.evaluate(f"window.T = {json.dumps(trace)}")
            for i, what in ((0, "local edits"), (1, "remote apply")):
                both(
                    f"(c) text {what}",
                    len(trace),
                    lambda: page.evaluate("() => bench.text(T)"),
                    lambda: py_text(trace),
                    idx=i,
                )
            page.evaluate("window.T = null")
            journal = join_stream(10_000 // scale, 100)
            page.evaluate(f"window.J = {json.dumps(journal)}")
            both(
                f"(d) join {len(journal)} msgs/100 clients",
                len(journal),
                lambda: page.evaluate("() => bench.join(J)"),
                lambda: py_join(journal),
            )
            joins = room_joins(browser, scale, 1 if args.quick else max(runs, 5))
            browser.close()
    finally:
        server.shutdown()
    _print(version, runs, rows, joins, bundle)


def _print(
    version: str,
    runs: int,
    rows: list[tuple[str, float, float]],
    joins: list[tuple[str, str, str, float, float, float]],
    bundle: bytes,
) -> None:
    print(f"Chromium {version}, CPython {sys.version.split()[0]}, runs={runs}")
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if rows:
        width = max(len(r[0]) for r in rows)
        print(f"{'workload':<{width}}  {'JS ops/s':>12}  {'Python ops/s':>12}  {'JS/Py':>6}")
        for name, js, py in rows:
            print(f"{name:<{width}}  {js:12,.0f}  {py:12,.0f}  {js / py:5.1f}x")
    print("\nroom join of 100 clients' messages (durasync serve, embedded store), medians;")
    print("TS CPU = the page's main-thread CPU time during the join (CDP ThreadTime)")
    width = max(len(j[0]) for j in joins)
    held_w = max(len(j[1]) for j in joins)
    print(
        f"{'room':<{width}}  {'state frame':<{held_w}}  {'format':<7}  {'TS RoomClient':>13}"
        f"  {'TS CPU':>7}  {'Python RoomClient':>17}  {'Py/TS':>6}"
    )
    for room, held, fmt, tj, cj, tp in joins:
        print(
            f"{room:<{width}}  {held:<{held_w}}  {fmt:<7}  {tj * 1000:10.0f} ms"
            f"  {cj * 1000:4.0f} ms  {tp * 1000:14.0f} ms  {tp / tj:5.1f}x"
        )
    print("target: TS join of the 10,000-message room < 300 ms")
    print(
        f"bundle js/dist/durasync.mjs: {len(bundle):,} B minified, "
        f"{len(gzip.compress(bundle, 9)):,} B gzipped (target < 60 KB)"
    )


if __name__ == "__main__":
    main()
