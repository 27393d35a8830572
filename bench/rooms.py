"""Rooms benchmark: durasync rooms vs pycrdt-websocket, same workload, one run (issue 4).

Starts on loopback ``durasync serve --port 0 --data <tmp>`` (embedded durable store: every
message fsync'd into the room journal before its ``ack``; ``--memory`` too with
``--servers``) and pycrdt-websocket (``bench/_rooms_peer.py``: ``WebsocketServer`` +
``ASGIServer`` on uvicorn, no YStore), each as a subprocess stopped by PID, and drives each with
the same workload shape:

- ``--clients`` (1,000) WebSocket clients in ``--rooms`` (50) rooms, spread over ``--procs``
  (4) load-generator processes, each an asyncio (uvloop) loop of ``websockets`` clients
  (no permessage-deflate on either side);
- every client updates its own node at ``--rate`` messages/s (open loop, random phase) for
  ``--duration`` s after ``--warmup`` s: durasync gets a ``crdt`` frame with one
  ``vector3.set`` op (msgpack, ~140 bytes with the message envelope); pycrdt gets a Yjs
  update made by a per-client ``pycrdt.Doc`` (``Map`` key set to a short string, ~100-byte
  sync ``update`` message) over the y-websocket sync protocol (step1/step2 then updates).

Measured per server (in the measurement window only):

- **ops/s in**: messages the server accepted: ``ack`` frames for durasync (durable), the echo
  of the sender's own update for pycrdt (it relays every update to every client, sender too);
- **deliveries/s out**: relayed messages received by the *other* members of the room
  (pycrdt's echoes to the sender are counted apart, not as deliveries);
- **relay latency** p50/p99: ``time.time()`` in the payload at send -> ``time.time()`` at a
  receiving client (one host, so one clock);
- **memory per idle connection**: server VmRSS with all clients connected and idle minus
  VmRSS before they connected (after one warm-up connection), divided by the clients.

Two load levels per server: ``--rate`` (default 1.1/s per client: ~20,900 deliveries/s
offered, the latency target's load) and ``--sat-rate`` (default 6/s: more than either server
can relay on 2 cores, to measure the maximum deliveries/s). Servers are measured one after the
other, ``--reps`` times in rotating order; the table shows medians.

Then, durasync only: a room with ``--fill`` (1,000,000) journaled messages is written through
the room WebSocket (``--fill-conns`` pipelined connections, ``--room-rate`` raised for them),
the server is SIGKILLed and restarted on the same data, and we time connect -> first
``state`` frame (and the same after a SIGTERM restart).

Usage::

    .venv/bin/python bench/rooms.py --quick        # smoke run (~1 min)
    .venv/bin/python bench/rooms.py                # full shape (several minutes)

Never part of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import ROOT, ServerProc, _spawn, start_ours

PEER_SCRIPT = Path(__file__).resolve().parent / "_rooms_peer.py"

_mp_encode = msgspec.msgpack.Encoder().encode
_mp_decode = msgspec.msgpack.Decoder().decode

# --------------------------------------------------------------------------- servers


def start_pycrdt(timeout: float = 30.0) -> ServerProc:
    return _spawn(
        "pycrdt-websocket",
        [sys.executable, str(PEER_SCRIPT), "--port", "0"],
        cwd=ROOT,
        timeout=timeout,
    )


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def ws_base(url: str) -> str:
    return url.replace("http://", "ws://", 1)


# --------------------------------------------------------------------------- load generator


@dataclass
class WorkerResult:
    connected: int = 0
    failed: int = 0
    sent: int = 0
    accepted: int = 0  # acks (durasync) / own echoes (pycrdt) in the window
    deliveries: int = 0  # relayed messages received by other members in the window
    errors: int = 0
    closed: int = 0
    latencies: list[float] = field(default_factory=list)  # ms, sampled
    frame_bytes: int = 0


class _Stats:
    def __init__(self, t_from: float, t_to: float, sample_every: int) -> None:
        self.t_from = t_from
        self.t_to = t_to
        self.sample_every = sample_every
        self.n = 0
        self.r = WorkerResult()

    def in_window(self, now: float) -> bool:
        return self.t_from <= now < self.t_to

    def delivery(self, now: float, sent_at: float) -> None:
        if self.t_from <= now < self.t_to:
            self.r.deliveries += 1
            self.n += 1
            if self.n % self.sample_every == 0:
                self.r.latencies.append((now - sent_at) * 1000.0)


class OursClient:
    """A durasync rooms client: msgpack frames, ``crdt`` out, ``ack``/``broadcast`` in."""

    def __init__(self, base: str, room: str, cid: str) -> None:
        self.url = f"{base}/v1/rooms/{room}?client={cid}"
        self.cid = cid
        self.lt = 0
        self.ws: Any = None

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, compression=None, max_size=1 << 26, open_timeout=60)
        first = _mp_decode(await asyncio.wait_for(self.ws.recv(), 60))
        if first.get("mtype") != "state":
            raise RuntimeError(f"expected state, got {first.get('mtype')}")

    def frame(self) -> bytes:
        self.lt += 1
        now = time.time()
        return _mp_encode(
            {
                "mtype": "crdt",
                "msg": {
                    "id": f"{self.cid}-{self.lt}",
                    "client": self.cid,
                    "lt": self.lt,
                    "ts": now * 1000.0,
                    "clock": {self.cid: self.lt},
                    "ops": [
                        {
                            "ot": "vector3.set",
                            "key": f"n-{self.cid}",
                            "path": "position",
                            "value": [random.random(), random.random(), random.random()],
                        }
                    ],
                },
            }
        )

    async def reader(self, st: _Stats) -> None:
        async for data in self.ws:
            now = time.time()
            f = _mp_decode(data)
            mt = f.get("mtype")
            if mt == "broadcast":
                st.delivery(now, f["msg"]["ts"] / 1000.0)
            elif mt == "ack":
                if st.in_window(now):
                    st.r.accepted += 1
            elif mt == "error":
                st.r.errors += 1


_PY_RE = re.compile(rb"~(c\d+)\|(\d+\.\d+)\|")


class PycrdtClient:
    """A y-websocket-protocol client: a ``pycrdt.Doc`` per client makes real Yjs updates."""

    def __init__(self, base: str, room: str, cid: str) -> None:
        from pycrdt import Doc, Map

        self.url = f"{base}/{room}"
        self.cid = cid
        self.doc: Any = Doc()
        self.map: Any = self.doc.get("m", type=Map)
        self.updates: list[bytes] = []
        self.doc.observe(lambda ev: self.updates.append(ev.update))
        self.ws: Any = None

    async def connect(self) -> None:
        from pycrdt import create_sync_message, handle_sync_message
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, compression=None, max_size=1 << 26, open_timeout=60)
        # y-websocket handshake: the server sends SYNC_STEP1; answer it with SYNC_STEP2 and
        # send our own SYNC_STEP1, whose SYNC_STEP2 answer is the room's state (the "join").
        step1 = await asyncio.wait_for(self.ws.recv(), 60)
        reply = handle_sync_message(step1[1:], self.doc)
        if reply is not None:
            await self.ws.send(reply)
        await self.ws.send(create_sync_message(self.doc))
        while True:
            msg = await asyncio.wait_for(self.ws.recv(), 60)
            if msg[0] == 0 and msg[1] == 1:  # SYNC, SYNC_STEP2
                break

    def frame(self) -> bytes:
        from pycrdt import create_update_message

        now = time.time()
        v = (random.random(), random.random(), random.random())
        self.map[f"n-{self.cid}"] = f"~{self.cid}|{now:.6f}|{v[0]:.6f},{v[1]:.6f},{v[2]:.6f}"
        upd = self.updates.pop()
        self.updates.clear()
        return create_update_message(upd)

    async def reader(self, st: _Stats) -> None:
        cid = self.cid.encode()
        async for data in self.ws:
            now = time.time()
            if not isinstance(data, bytes) or len(data) < 2 or data[0] != 0 or data[1] != 2:
                continue  # awareness or sync step messages
            m = _PY_RE.search(data)
            if m is None:
                continue
            if m.group(1) == cid:
                if st.in_window(now):
                    st.r.accepted += 1
            else:
                st.delivery(now, float(m.group(2)))


def _worker(
    kind: str,
    base: str,
    members: list[tuple[str, str]],
    rate: float,
    warmup: float,
    duration: float,
    sample_every: int,
    out: Any,
    go: Any,
) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    res = asyncio.run(
        _worker_main(kind, base, members, rate, warmup, duration, sample_every, out, go)
    )
    out.put(("done", res))


async def _worker_main(
    kind: str,
    base: str,
    members: list[tuple[str, str]],
    rate: float,
    warmup: float,
    duration: float,
    sample_every: int,
    out: Any,
    go: Any,
) -> WorkerResult:
    cls = OursClient if kind == "durasync" else PycrdtClient
    clients = [cls(base, room, cid) for room, cid in members]
    sem = asyncio.Semaphore(32)
    failed = 0

    async def conn(c: Any) -> bool:
        nonlocal failed
        async with sem:
            try:
                await c.connect()
                return True
            except Exception as exc:
                failed += 1
                if failed <= 3:
                    print(f"[{kind}] connect failed: {exc!r}", file=sys.stderr)
                return False

    first: dict[str, int] = {}
    for k, (room, _) in enumerate(members):
        first.setdefault(room, k)
    openers = set(first.values())
    ok_first = await asyncio.gather(*(conn(clients[k]) for k in sorted(openers)))
    ok_rest = await asyncio.gather(*(conn(c) for k, c in enumerate(clients) if k not in openers))
    ok_by_k = dict(zip(sorted(openers), ok_first, strict=True))
    rest = iter(ok_rest)
    ok = [ok_by_k[k] if k in openers else next(rest) for k in range(len(clients))]
    live = [c for c, good in zip(clients, ok, strict=True) if good]
    out.put(("ready", len(live)))
    # Wait for the main process (it reads the idle RSS meanwhile), without blocking the loop.
    start_at = await asyncio.get_running_loop().run_in_executor(None, go.get)
    t_from = start_at + warmup
    t_to = t_from + duration
    st = _Stats(t_from, t_to, sample_every)
    st.r.connected = len(live)
    st.r.failed = failed
    readers = [asyncio.create_task(c.reader(st)) for c in live]

    async def sender(c: Any) -> None:
        if rate <= 0:
            return
        period = 1.0 / rate
        nxt = start_at + random.random() * period
        while True:
            now = time.time()
            if now >= t_to:
                return
            if nxt > now:
                await asyncio.sleep(nxt - now)
            data = c.frame()
            st.r.frame_bytes = len(data)
            try:
                await c.ws.send(data)
            except Exception:
                st.r.closed += 1
                return
            if t_from <= time.time() < t_to:
                st.r.sent += 1
            nxt += period
            if nxt < time.time() - period:
                nxt = time.time()  # fell behind (backpressure): skip, do not burst

    await asyncio.gather(*(sender(c) for c in live))
    await asyncio.sleep(max(0.0, t_to - time.time()) + 0.5)
    for t in readers:
        t.cancel()
    await asyncio.gather(*readers, return_exceptions=True)

    async def close(c: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.ws.close(), 2)

    await asyncio.gather(*(close(c) for c in live))
    return st.r


@dataclass
class PhaseResult:
    server: str
    rate: float
    connected: int
    ops_in: float
    offered: float
    deliveries: float
    p50: float
    p99: float
    idle_kb_per_conn: float
    errors: int
    closed: int
    frame_bytes: int


def run_phase(
    kind: str,
    srv: ServerProc,
    *,
    clients: int,
    rooms: int,
    procs: int,
    rate: float,
    warmup: float,
    duration: float,
    tag: str,
) -> PhaseResult:
    base = ws_base(srv.url)
    pid = srv.proc.pid
    # Each phase has a fresh server, so plain ids suffice (pycrdt's payload regex wants c<digits>).
    members = [(f"{tag}{i % rooms}", f"c{i}") for i in range(clients)]
    # Whole rooms per process: each worker opens the first member of its rooms before the rest
    # (pycrdt-websocket 0.16.5 hangs clients that join a *new* room concurrently: the second
    # ``start_room`` waits on the room's start lock, held by the first for the room's life).
    parts = [[m for k, m in enumerate(members) if (k % rooms) % procs == i] for i in range(procs)]
    rss0 = rss_kb(pid)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    go = [ctx.Queue() for _ in parts]
    # sample latencies so each worker ships at most ~100k floats
    per_worker_deliv = rate * clients * (clients / rooms - 1) * duration / procs
    sample_every = max(1, int(per_worker_deliv // 100_000))
    ws = [
        ctx.Process(
            target=_worker,
            args=(kind, base, p, rate, warmup, duration, sample_every, out, go[i]),
            daemon=True,
        )
        for i, p in enumerate(parts)
    ]
    for w in ws:
        w.start()
    connected = 0
    deadline = time.time() + 180
    for _ in ws:
        tag_, n = out.get(timeout=max(1.0, deadline - time.time()))
        assert tag_ == "ready"
        connected += n
    time.sleep(1.0)  # let the server settle after the joins
    rss1 = rss_kb(pid)
    start_at = time.time() + 0.5
    for q in go:
        q.put(start_at)
    results: list[WorkerResult] = []
    for _ in ws:
        tag_, r = out.get(timeout=warmup + duration + 120)
        results.append(r)
    for w in ws:
        w.join(timeout=30)
    lat = sorted(x for r in results for x in r.latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return PhaseResult(
        server=srv.name,
        rate=rate,
        connected=connected,
        ops_in=sum(r.accepted for r in results) / duration,
        offered=sum(r.sent for r in results) / duration,
        deliveries=sum(r.deliveries for r in results) / duration,
        p50=pct(0.50),
        p99=pct(0.99),
        idle_kb_per_conn=(rss1 - rss0) / max(1, connected),
        errors=sum(r.errors for r in results),
        closed=sum(r.closed for r in results),
        frame_bytes=max(r.frame_bytes for r in results),
    )


# --------------------------------------------------------------------------- 1M-message room


async def _fill(base: str, room: str, total: int, conns: int, window: int) -> float:
    from websockets.asyncio.client import connect

    per = total // conns
    t0 = time.perf_counter()

    async def one(k: int) -> None:
        cid = f"fill{k}"
        async with connect(
            f"{base}/v1/rooms/{room}?client={cid}", compression=None, max_size=1 << 28
        ) as ws:
            first = _mp_decode(await ws.recv())
            assert first["mtype"] == "state"
            sem = asyncio.Semaphore(window)
            done = asyncio.Event()
            acked = 0

            async def read() -> None:
                nonlocal acked
                async for data in ws:
                    f = _mp_decode(data)
                    if f["mtype"] == "ack":
                        acked += 1
                        sem.release()
                        if acked == per:
                            done.set()
                            return
                    elif f["mtype"] == "error":
                        raise RuntimeError(f"fill error: {f}")

            rt = asyncio.create_task(read())
            for lt in range(1, per + 1):
                await sem.acquire()
                msg = {
                    "id": f"{cid}-{lt}",
                    "client": cid,
                    "lt": lt,
                    "ts": time.time() * 1000.0,
                    "clock": {cid: lt},
                    "ops": [
                        {
                            "ot": "vector3.set",
                            "key": f"n{lt % 1000}",
                            "path": "position",
                            "value": [lt * 1.0, 2.0, 3.0],
                        }
                    ],
                }
                await ws.send(_mp_encode({"mtype": "crdt", "msg": msg}))
            await asyncio.wait_for(done.wait(), 600)
            await rt

    await asyncio.gather(*(one(k) for k in range(conns)))
    return per * conns / (time.perf_counter() - t0)


async def _time_join(base: str, room: str) -> tuple[float, int, int, int]:
    from websockets.asyncio.client import connect

    t0 = time.perf_counter()
    async with connect(
        f"{base}/v1/rooms/{room}?client=probe{random.randrange(1 << 30)}",
        compression=None,
        max_size=1 << 30,
        open_timeout=120,
    ) as ws:
        data = await asyncio.wait_for(ws.recv(), 120)
        dt = time.perf_counter() - t0
    f = _mp_decode(data)
    assert f["mtype"] == "state", f["mtype"]
    return dt, f["serverSeq"], len(f["journal"]), len(data)


def big_room(total: int, conns: int, window: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="rooms-bench-big-"))
    out: dict[str, Any] = {"messages": total}
    extra = ["--room-rate", "1000000"]
    try:
        srv = start_ours(data_dir=tmp / "data", extra=extra)
        base = ws_base(srv.url)
        room = "big"
        t0 = time.perf_counter()
        out["fill_msgs_per_s"] = asyncio.run(_fill(base, room, total, conns, window))
        out["fill_s"] = time.perf_counter() - t0
        out["rss_mb_loaded"] = rss_kb(srv.proc.pid) / 1024
        srv.kill()  # SIGKILL: no graceful snapshot
        t1 = time.perf_counter()
        srv = start_ours(data_dir=tmp / "data", extra=extra)
        out["restart_s_kill"] = time.perf_counter() - t1
        dt, seq, jl, nbytes = asyncio.run(_time_join(base_of(srv), room))
        out.update(join_s_kill=dt, seq=seq, journal_len=jl, state_bytes=nbytes)
        out["join_s_warm"] = asyncio.run(_time_join(base_of(srv), room))[0]
        srv.stop()  # SIGTERM
        srv = start_ours(data_dir=tmp / "data", extra=extra)
        out["join_s_term"] = asyncio.run(_time_join(base_of(srv), room))[0]
        srv.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def base_of(srv: ServerProc) -> str:
    return ws_base(srv.url)


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 clients, 10 rooms, 5 s, fill 50k")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rooms", type=int, default=50)
    ap.add_argument("--rate", type=float, default=1.1, help="messages/s per client (latency)")
    ap.add_argument("--sat-rate", type=float, default=6.0, help="messages/s per client (max)")
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument(
        "--servers",
        default="durasync-data,pycrdt",
        help="comma list of durasync-data, durasync-memory, pycrdt",
    )
    ap.add_argument(
        "--fill", type=int, default=1_000_000, help="messages in the big room (0: skip)"
    )
    ap.add_argument("--fill-conns", type=int, default=16)
    ap.add_argument("--fill-window", type=int, default=256)
    ap.add_argument("--big-only", action="store_true", help="only the big-room restart test")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.rooms, args.duration, args.warmup = 200, 10, 5.0, 2.0
        args.fill = min(args.fill, 50_000)

    print(
        f"# rooms bench: {args.clients} clients, {args.rooms} rooms, rate {args.rate}/s and "
        f"{args.sat_rate}/s per client, {args.duration}s (+{args.warmup}s warmup), "
        f"{args.procs} load procs, reps {args.reps}; load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    names = args.servers.split(",")
    results: dict[tuple[str, str], list[PhaseResult]] = {}
    for rep in range(0 if args.big_only else args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            for label, rate in (("rate", args.rate), ("sat", args.sat_rate)):
                tmp = Path(tempfile.mkdtemp(prefix="rooms-bench-"))
                try:
                    if name == "pycrdt":
                        srv = start_pycrdt()
                        kind = "pycrdt"
                    else:
                        data = tmp / "data" if name == "durasync-data" else None
                        srv = start_ours(data_dir=data)
                        kind = "durasync"
                    try:
                        r = run_phase(
                            kind,
                            srv,
                            clients=args.clients,
                            rooms=args.rooms,
                            procs=args.procs,
                            rate=rate,
                            warmup=args.warmup,
                            duration=args.duration,
                            tag=label,
                        )
                    finally:
                        srv.stop()
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                r.server = name
                results.setdefault((name, label), []).append(r)
                print(
                    f"  rep {rep} {name:15s} {label}: conn {r.connected} offered {r.offered:,.0f}"
                    f" in {r.ops_in:,.0f}/s out {r.deliveries:,.0f}/s p50 {r.p50:.1f} p99"
                    f" {r.p99:.1f} ms idle {r.idle_kb_per_conn:.1f} KiB/conn err {r.errors}"
                    f" closed {r.closed} frame {r.frame_bytes} B; load avg"
                    f" {os.getloadavg()[0]:.1f}",
                    flush=True,
                )

    if args.big_only:
        names = []

    def med(name: str, label: str, attr: str) -> float:
        vals = [getattr(r, attr) for r in results.get((name, label), [])]
        return statistics.median(vals) if vals else float("nan")

    if names:
        print()
        print(f"medians of {args.reps} rep(s)")
        hdr = f"{'metric':42s}" + "".join(f"{n:>16s}" for n in names)
        print(hdr)
        rows = [
            ("connected clients", "rate", "connected", "{:,.0f}"),
            ("frame bytes (client -> server)", "rate", "frame_bytes", "{:,.0f}"),
            ("idle KiB per connection", "rate", "idle_kb_per_conn", "{:,.1f}"),
            (f"@{args.rate}/s: offered msgs/s", "rate", "offered", "{:,.0f}"),
            (f"@{args.rate}/s: ops/s in", "rate", "ops_in", "{:,.0f}"),
            (f"@{args.rate}/s: deliveries/s out", "rate", "deliveries", "{:,.0f}"),
            (f"@{args.rate}/s: relay p50 ms", "rate", "p50", "{:,.1f}"),
            (f"@{args.rate}/s: relay p99 ms", "rate", "p99", "{:,.1f}"),
            (f"@{args.sat_rate}/s: offered msgs/s", "sat", "offered", "{:,.0f}"),
            (f"@{args.sat_rate}/s: ops/s in", "sat", "ops_in", "{:,.0f}"),
            (f"@{args.sat_rate}/s: deliveries/s out", "sat", "deliveries", "{:,.0f}"),
            (f"@{args.sat_rate}/s: relay p50 ms", "sat", "p50", "{:,.1f}"),
            (f"@{args.sat_rate}/s: relay p99 ms", "sat", "p99", "{:,.1f}"),
        ]
        for title, label, attr, fmt in rows:
            print(
                f"{title:42s}" + "".join(f"{fmt.format(med(n, label, attr)):>16s}" for n in names)
            )
    ours = next((n for n in names if n.startswith("durasync")), None)
    if ours and "pycrdt" in names:
        for label in ("rate", "sat"):
            d, p = med(ours, label, "deliveries"), med("pycrdt", label, "deliveries")
            print(f"deliveries/s ratio {ours}/pycrdt @{label}: {d / p if p else float('nan'):.2f}x")

        best_o = max(med(ours, lb, "deliveries") for lb in ("rate", "sat"))
        best_p = max(med("pycrdt", lb, "deliveries") for lb in ("rate", "sat"))
        print(
            f"best deliveries/s over both loads: {ours} {best_o:,.0f}, pycrdt {best_p:,.0f}:"
            f" {best_o / best_p if best_p else float('nan'):.2f}x"
        )

    if args.fill > 0:
        print(f"\n# big room: {args.fill:,} messages via {args.fill_conns} pipelined connections")
        b = big_room(args.fill, args.fill_conns, args.fill_window)
        print(
            f"fill: {b['fill_s']:.1f} s ({b['fill_msgs_per_s']:,.0f} acked msgs/s), server RSS"
            f" {b['rss_mb_loaded']:.0f} MiB\n"
            f"after SIGKILL: server up in {b['restart_s_kill']:.2f} s; connect -> state"
            f" {b['join_s_kill'] * 1000:.0f} ms (serverSeq {b['seq']:,}, journal tail"
            f" {b['journal_len']:,} msgs, state frame {b['state_bytes'] / 1024:.0f} KiB);"
            f" second join {b['join_s_warm'] * 1000:.0f} ms\n"
            f"after SIGTERM: connect -> state {b['join_s_term'] * 1000:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
