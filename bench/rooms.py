"""Rooms benchmark: durasync rooms vs pycrdt-websocket, same workload, one run.

Starts on loopback ``durasync serve --port 0 --data <tmp>`` (embedded durable store: every
message fsync'd into the room journal before its ``ack``; ``--memory`` too with
``--servers``) and pycrdt-websocket (``bench/_rooms_peer.py``: ``WebsocketServer`` +
``ASGIServer`` on uvicorn, no YStore), each as a subprocess stopped by PID, and drives each with
the same workload shape:

- ``--clients`` (1,000) WebSocket clients in ``--rooms`` (50) rooms, spread over ``--procs``
  (4) load-generator processes, each an asyncio (uvloop) loop of ``--client-lib`` clients:
  picows (default when installed: a Cython RFC 6455 client whose listener gets each frame
  synchronously, no task or future per message) or the ``websockets`` asyncio client; no
  permessage-deflate. Per received frame the load generator reads the clock and decodes two
  fields (``mtype`` and ``msg.ts``, a msgspec Struct that skips the rest), because it shares
  the machine's cores with the server under test;
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
  VmRSS before they connected (after one warm-up connection), divided by the clients;
- **CPU** of the server and of all load processes in the window (utime + stime from /proc,
  in cores: 1.0 = one core busy), to show how much of the 2 cores the server got.

Two load levels per server: ``--rate`` (default 1.1/s per client: ~20,900 deliveries/s
offered, the latency target's load) and ``--sat-rate`` (default 6/s: more than either server
can relay on 2 cores, to measure the maximum deliveries/s). Servers are measured one after the
other, ``--reps`` times in rotating order; the table shows medians.

Then, durasync only: a room with ``--fill`` (1,000,000) journaled messages. ``--fill-mode
store`` (default) writes it in-process with the server stopped, through the server's own
``Room`` code on the embedded store (validation, sequencing, fsync'd group commits of
``JournalRecord``, snapshots every 10,000 messages, journal trimming: the records the server
writes), from a realistic mixed editing session (:func:`_fill_frames`); ``--fill-mode ws``
sends it through the room WebSocket instead (~2,000 msgs/s: 1M takes ~10 min). The server is
started on the data and joined (its first load of the room), takes 1,000 more messages over
the WebSocket, is SIGKILLed and restarted, and we time connect -> first ``state`` frame (and
the same after a SIGTERM restart). ``--big-dir`` keeps the fill for later runs.

``--memory-only`` measures idle memory per connection for ``MEMORY_MATRIX``: uvicorn's
WebSocket implementations and permessage-deflate offered by the clients / accepted by the
server (``--ws-compression``). ``--profile PREFIX`` samples the durasync server with py-spy
(not a project dependency) in each measurement window and during the big room's join.

Usage::

    .venv/bin/python bench/rooms.py --quick        # smoke run (~1 min)
    .venv/bin/python bench/rooms.py                # full shape (~8 min with the 1M room)
    .venv/bin/python bench/rooms.py --memory-only --reps 2

Never part of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import multiprocessing as mp
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import ROOT, ServerProc, _spawn, cpu_seconds, cpu_times, start_ours

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


class _Rx(msgspec.Struct):
    """The only fields the load generator reads from a server frame (msgspec skips the rest)."""

    mtype: str
    msg: _RxMsg | None = None


class _RxMsg(msgspec.Struct):
    ts: float = 0.0


_rx_decode = msgspec.msgpack.Decoder(_Rx).decode

Handler = Any  # Callable[[bytes], None]


class WebsocketsConn:
    """A client connection on the ``websockets`` asyncio client (supports permessage-deflate)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, url: str, *, deflate: bool = False) -> WebsocketsConn:
        from websockets.asyncio.client import connect

        ws = await connect(
            url, compression="deflate" if deflate else None, max_size=1 << 26, open_timeout=60
        )
        return cls(ws)

    def negotiated(self) -> str | None:
        return self.ws.response.headers.get("Sec-WebSocket-Extensions")

    async def recv(self) -> bytes:
        data = await asyncio.wait_for(self.ws.recv(), 60)
        return data if isinstance(data, bytes) else data.encode()

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def run(self, handler: Handler) -> None:
        async for data in self.ws:
            handler(data)

    async def close(self) -> None:
        await asyncio.wait_for(self.ws.close(), 2)


class PicowsConn:
    """A client connection on picows (Cython RFC 6455 client, no permessage-deflate).

    Used by default by the load generator because it is several times cheaper per received
    frame than the ``websockets`` asyncio client (no task/future per message: the listener
    callback gets each frame synchronously), and the load generator shares the 2 cores with
    the server under test. Frames received before :meth:`run` are kept (a bounded list: only
    the join handshake happens before it).
    """

    def __init__(self) -> None:
        self.transport: Any = None
        self.pending: collections.deque[bytes] = collections.deque(maxlen=64)
        self.waiter: asyncio.Future[None] | None = None
        self.handler: Handler | None = None
        self.parts: list[bytes] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, url: str, *, deflate: bool = False) -> PicowsConn:
        from picows import ws_connect

        if deflate:
            raise ValueError("picows does not implement permessage-deflate")
        conn = cls()
        listener = _picows_listener_class()
        await ws_connect(
            lambda: listener(conn),
            url,
            websocket_handshake_timeout=60,
            max_frame_size=1 << 26,
        )
        return conn

    def negotiated(self) -> str | None:
        return None

    def _frame(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler(data)
            return
        self.pending.append(data)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _closed(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))

    async def recv(self) -> bytes:
        while not self.pending:
            if self.done.done():
                raise ConnectionError("closed")
            self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.waiter, 60)
        return self.pending.popleft()

    async def send(self, data: bytes) -> None:
        from picows import WSMsgType

        if self.done.done():
            raise ConnectionError("closed")
        self.transport.send(WSMsgType.BINARY, data)

    async def run(self, handler: Handler) -> None:
        while self.pending:
            handler(self.pending.popleft())
        self.handler = handler
        await asyncio.shield(self.done)

    async def close(self) -> None:
        if not self.done.done():
            self.transport.send_close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.done), 2)
            self.transport.disconnect()


_PICOWS_LISTENER: dict[str, Any] = {}


def _picows_listener_class() -> Any:
    if not _PICOWS_LISTENER:
        from picows import WSListener, WSMsgType

        data_types = (WSMsgType.BINARY, WSMsgType.TEXT)

        class Listener(WSListener):  # type: ignore[misc]
            def __init__(self, conn: PicowsConn) -> None:
                super().__init__()
                self.conn = conn

            def on_ws_connected(self, transport: Any) -> None:
                self.conn.transport = transport

            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                t = frame.msg_type
                conn = self.conn
                if t in data_types or t == WSMsgType.CONTINUATION:
                    if frame.fin and not conn.parts:
                        conn._frame(frame.get_payload_as_bytes())
                    else:
                        conn.parts.append(frame.get_payload_as_bytes())
                        if frame.fin:
                            data = b"".join(conn.parts)
                            conn.parts.clear()
                            conn._frame(data)
                elif t == WSMsgType.CLOSE:
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()

            def on_ws_disconnected(self, transport: Any) -> None:
                self.conn._closed()

        _PICOWS_LISTENER["cls"] = Listener
    return _PICOWS_LISTENER["cls"]


def conn_class(lib: str) -> Any:
    return PicowsConn if lib == "picows" else WebsocketsConn


def default_client_lib() -> str:
    try:
        import picows  # noqa: F401
    except ImportError:
        return "websockets"
    return "picows"


class OursClient:
    """A durasync rooms client: msgpack frames, ``crdt`` out, ``ack``/``broadcast`` in."""

    def __init__(
        self, base: str, room: str, cid: str, *, deflate: bool = False, lib: str = "websockets"
    ) -> None:
        self.url = f"{base}/v1/rooms/{room}?client={cid}"
        self.cid = cid
        self.lt = 0
        self.ws: Any = None
        self.deflate = deflate
        self.lib = lib

    async def connect(self) -> None:
        self.ws = await conn_class(self.lib).open(self.url, deflate=self.deflate)
        first = _rx_decode(await self.ws.recv())
        if first.mtype != "state":
            raise RuntimeError(f"expected state, got {first.mtype}")

    def frame(self) -> bytes:
        self.lt += 1
        now = time.time()
        return _mp_encode(
            {
                "mtype": "crdt",
                "msg": {
                    "id": f"{self.cid}:{self.lt}",
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
        r = st.r
        t_from, t_to = st.t_from, st.t_to
        now_f = time.time

        def on_frame(data: bytes) -> None:
            # Per received frame: one clock read and a decode of two fields (the load
            # generator competes with the server for the same cores).
            now = now_f()
            f = _rx_decode(data)
            mt = f.mtype
            if mt == "broadcast":
                if f.msg is not None:
                    st.delivery(now, f.msg.ts / 1000.0)
            elif mt == "ack":
                if t_from <= now < t_to:
                    r.accepted += 1
            elif mt == "error":
                r.errors += 1

        await self.ws.run(on_frame)


_PY_RE = re.compile(rb"~(c\d+)\|(\d+\.\d+)\|")


class PycrdtClient:
    """A y-websocket-protocol client: a ``pycrdt.Doc`` per client makes real Yjs updates."""

    def __init__(self, base: str, room: str, cid: str, *, lib: str = "websockets") -> None:
        from pycrdt import Doc, Map

        self.url = f"{base}/{room}"
        self.cid = cid
        self.doc: Any = Doc()
        self.map: Any = self.doc.get("m", type=Map)
        self.updates: list[bytes] = []
        self.doc.observe(lambda ev: self.updates.append(ev.update))
        self.ws: Any = None
        self.lib = lib

    async def connect(self) -> None:
        from pycrdt import create_sync_message, handle_sync_message

        self.ws = await conn_class(self.lib).open(self.url)
        # y-websocket handshake: the server sends SYNC_STEP1; answer it with SYNC_STEP2 and
        # send our own SYNC_STEP1, whose SYNC_STEP2 answer is the room's state (the "join").
        step1 = await self.ws.recv()
        reply = handle_sync_message(step1[1:], self.doc)
        if reply is not None:
            await self.ws.send(reply)
        await self.ws.send(create_sync_message(self.doc))
        while True:
            msg = await self.ws.recv()
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
        r = st.r
        t_from, t_to = st.t_from, st.t_to
        now_f = time.time
        search = _PY_RE.search

        def on_frame(data: bytes) -> None:
            now = now_f()
            if len(data) < 2 or data[0] != 0 or data[1] != 2:
                return  # awareness or sync step messages
            m = search(data)
            if m is None:
                return
            if m.group(1) == cid:
                if t_from <= now < t_to:
                    r.accepted += 1
            else:
                st.delivery(now, float(m.group(2)))

        await self.ws.run(on_frame)


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
    lib: str,
) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    res = asyncio.run(
        _worker_main(kind, base, members, rate, warmup, duration, sample_every, out, go, lib)
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
    lib: str,
) -> WorkerResult:
    cls = OursClient if kind == "durasync" else PycrdtClient
    clients = [cls(base, room, cid, lib=lib) for room, cid in members]
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
            await c.ws.close()

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
    server_cpu: float = float("nan")  # cores used by the server in the window (1.0 = one core)
    loadgen_cpu: float = float("nan")  # cores used by all load processes in the window
    #: Share of the server's CPU spent in the kernel (stime / (utime + stime)): mostly the
    #: send(2) of each frame on loopback, which runs the receiver's TCP path too.
    server_sys: float = float("nan")


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
    lib: str,
    profile: Path | None = None,
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
            args=(kind, base, p, rate, warmup, duration, sample_every, out, go[i], lib),
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
    # CPU used in the measurement window, by the server and by the load generator.
    time.sleep(max(0.0, start_at + warmup - time.time()))
    pids = [w.pid for w in ws if w.pid is not None]
    t0 = cpu_times(pid)
    c0 = (sum(t0), sum(cpu_seconds(p) for p in pids))
    spy = None
    if profile is not None:
        # py-spy (not a project dependency: pip install py-spy) samples the server in the
        # measurement window; it costs the machine a little CPU too.
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(duration)),
                "--rate",
                "50",
                "--format",
                "raw",
                "--output",
                str(profile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    time.sleep(max(0.0, start_at + warmup + duration - time.time()))
    t1 = cpu_times(pid)
    c1 = (sum(t1), sum(cpu_seconds(p) for p in pids))
    if spy is not None:
        spy.wait(timeout=60)
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
        server_cpu=(c1[0] - c0[0]) / duration,
        loadgen_cpu=(c1[1] - c0[1]) / duration,
        server_sys=(t1[1] - t0[1]) / max(1e-9, c1[0] - c0[0]),
    )


# --------------------------------------------------------------------------- idle memory


async def _idle_clients(
    base: str, clients: int, rooms: int, deflate: bool, hold: Any, expect_deflate: bool = False
) -> int:
    """Connect ``clients`` idle room clients, call ``hold()`` (blocking, in a thread), close.

    ``deflate``: the clients offer permessage-deflate; ``expect_deflate``: check the server
    accepted it (else that it did not)."""
    cs = [OursClient(base, f"m{i % rooms}", f"c{i}", deflate=deflate) for i in range(clients)]
    sem = asyncio.Semaphore(32)

    async def conn(c: OursClient) -> bool:
        async with sem:
            try:
                await c.connect()
                return True
            except Exception:
                return False

    # First member of each room first, so room loads do not race (and are not per-connection).
    ok = list(await asyncio.gather(*(conn(c) for c in cs[:rooms])))
    ok += await asyncio.gather(*(conn(c) for c in cs[rooms:]))
    live = [c for c, good in zip(cs, ok, strict=True) if good]
    ext = live[0].ws.negotiated() if live else None
    if bool(ext) != expect_deflate:
        raise RuntimeError(f"permessage-deflate negotiated: {ext!r}, expected {expect_deflate}")
    await asyncio.get_running_loop().run_in_executor(None, hold)

    async def close(c: OursClient) -> None:
        with contextlib.suppress(Exception):
            await c.ws.close()

    await asyncio.gather(*(close(c) for c in live))
    return len(live)


def idle_memory(
    extra: list[str], clients: int, rooms: int, deflate: bool, expect_deflate: bool
) -> float:
    """KiB of server RSS per idle connection (durable server with ``extra`` serve options).

    RSS after ``rooms`` warm-up connections (one per room: the rooms are loaded and the
    per-room costs paid) minus RSS with ``clients`` more idle connections, divided by
    ``clients``; read 1 s after the last join so the joins' transient buffers are freed.
    """
    tmp = Path(tempfile.mkdtemp(prefix="rooms-bench-mem-"))
    try:
        srv = start_ours(data_dir=tmp / "data", extra=extra)
        try:
            base = ws_base(srv.url)
            pid = srv.proc.pid
            marks: list[int] = []

            def hold() -> None:
                time.sleep(1.0)
                marks.append(rss_kb(pid))

            # Warm-up: one client per room (loads the rooms), then they leave.
            asyncio.run(_idle_clients(base, rooms, rooms, deflate, hold, expect_deflate))
            n = asyncio.run(
                _idle_clients(base, clients + rooms, rooms, deflate, hold, expect_deflate)
            )
            if n != clients + rooms:
                raise RuntimeError(f"only {n} of {clients + rooms} connected")
        finally:
            srv.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # marks[0]: ``rooms`` warm-up clients connected; marks[1]: ``clients + rooms`` connected.
    return (marks[1] - marks[0]) / clients


MEMORY_MATRIX: list[tuple[str, list[str], bool, bool]] = [
    # (label, extra serve options, client offers permessage-deflate, server accepts it)
    ("default, client offers no deflate", [], False, False),
    ("default, client offers deflate (browsers do)", [], True, False),
    ("--ws-compression, client offers deflate", ["--ws-compression"], True, True),
    ("--ws-impl websockets (legacy), no deflate", ["--ws-impl", "websockets"], False, False),
    ("--ws-impl wsproto, no deflate", ["--ws-impl", "wsproto"], False, False),
]


def memory_matrix(clients: int, rooms: int, reps: int) -> None:
    print(f"\n# idle memory per connection ({clients} idle clients in {rooms} rooms, {reps} reps)")
    for label, extra, deflate, accepted in MEMORY_MATRIX:
        vals: list[float] = []
        for _ in range(reps):
            try:
                vals.append(idle_memory(extra, clients, rooms, deflate, accepted))
            except Exception as exc:  # e.g. wsproto not installed
                print(f"  {label:48s} failed: {exc!r}"[:300], flush=True)
                break
        if vals:
            runs = " / ".join(f"{v:.1f}" for v in vals)
            print(
                f"  {label:48s} {statistics.median(vals):6.1f} KiB/conn ({runs});"
                f" load avg {os.getloadavg()[0]:.1f}",
                flush=True,
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
                    "id": f"{cid}:{lt}",
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


def _fill_frames(total: int, sessions: int, nodes: int, seed: int = 1) -> Any:
    """Yield ``total`` msgpack ``crdt`` frames of a realistic editing session, in order.

    The first frames build a scene (a root and ``nodes`` children, each with a text field);
    then ``sessions`` clients edit it: ~70 % LWW sets (``vector3.set`` position,
    ``number.set`` opacity, ``color.set``, ``string.set`` label), ~15 % ``vector3.add``
    drags and ~5 % ``text.insert`` typing (a 1-8 character word appended to the session's
    own run in one node's text, so text grows like a document being written: ~50k inserts,
    ~200k characters per million messages). Lamport times
    and vector clocks advance as a real client's would.
    """
    rnd = random.Random(seed)
    lt = 0
    clock: dict[str, int] = {}
    seq_of: dict[str, int] = {}
    last_char: dict[str, str | None] = {}
    words = ["the ", "scene ", "node ", "a ", "cube ", "moves ", "left ", "x", "ok. "]

    def frame(cid: str, ops: list[dict[str, Any]]) -> bytes:
        nonlocal lt
        lt += 1
        clock[cid] = lt
        msg = {
            "id": f"{cid}:{lt}",
            "client": cid,
            "lt": lt,
            "ts": 1_700_000_000_000.0 + lt,
            "clock": dict(clock),
            "ops": ops,
        }
        return _mp_encode({"mtype": "crdt", "msg": msg})

    yield frame(
        "setup", [{"ot": "node.insert", "key": "", "path": "children", "value": {"key": "root"}}]
    )
    made = 1
    for i in range(min(nodes, total - 1)):
        key = f"n{i}"
        yield frame(
            "setup",
            [
                {
                    "ot": "node.insert",
                    "key": "root",
                    "path": "children",
                    "value": {"key": key, "tag": "Mesh", "name": key, "position": [0, 0, 0]},
                },
                {"ot": "text.init", "key": key, "path": "content"},
            ],
        )
        made += 1
    cids = [f"s{k}" for k in range(sessions)]
    while made < total:
        cid = cids[rnd.randrange(sessions)]
        key = f"n{rnd.randrange(nodes)}"
        r = rnd.random()
        op: dict[str, Any]
        if r < 0.35:
            op = {
                "ot": "vector3.set",
                "key": key,
                "path": "position",
                "value": [rnd.random(), rnd.random(), rnd.random()],
            }
        elif r < 0.50:
            op = {"ot": "number.set", "key": key, "path": "opacity", "value": rnd.random()}
        elif r < 0.60:
            op = {
                "ot": "color.set",
                "key": key,
                "path": "color",
                "value": f"#{rnd.randrange(1 << 24):06x}",
            }
        elif r < 0.70:
            op = {"ot": "string.set", "key": key, "path": "label", "value": f"label {made}"}
        elif r < 0.95:
            op = {
                "ot": "vector3.add",
                "key": key,
                "path": "position",
                "value": [rnd.random() * 0.1, 0.0, rnd.random() * 0.1],
            }
        else:
            # Typing: the session's own run in the text of node n<k> (k = session index).
            key = f"n{cids.index(cid) % nodes}"
            word = words[rnd.randrange(len(words))]
            n = seq_of.get(cid, 0)
            op = {
                "ot": "text.insert",
                "key": key,
                "path": "content",
                "id": f"{cid}:{n}",
                "value": [last_char.get(cid), word],
                "seq": n,
                "ts": lt + 1,
            }
            seq_of[cid] = n + len(word)
            last_char[cid] = f"{cid}:{n + len(word) - 1}"
        yield frame(cid, [op])
        made += 1


async def _fill_store(data_dir: Path, room: str, total: int) -> dict[str, float]:
    """Write ``total`` messages into ``room`` in-process, through the server's own code.

    Opens the embedded store on ``data_dir`` (the server is not running), loads the room with
    :meth:`durasync.rooms.room.Room.load` (``create=True``) under the server's default
    :class:`~durasync.rooms.room.RoomSettings` (the CLI defaults: snapshot every 10,000
    messages, retention 10,000) and feeds every frame through
    :func:`~durasync.protocol.room_frames.decode_client_frame` (validation + normalisation, as the
    WebSocket handler does) into :meth:`Room.submit`. The room's writer task sequences,
    group-commits (fsync'd appends of ``JournalRecord``), applies, snapshots and trims exactly
    as in the server, so the server afterwards loads the room as its own; only the WebSocket
    transport (and the per-message ack round trip) is skipped.
    """
    from durasync.protocol.room_frames import CrdtFrame, decode_client_frame
    from durasync.rooms.room import Room, RoomSettings
    from durasync.store import EmbeddedStore

    settings = RoomSettings()
    limits = settings.limits()
    store = EmbeddedStore(data_dir)
    await store.open()
    t0 = time.perf_counter()
    try:
        r = await Room.load(room, store, settings, create=True)
        for data in _fill_frames(total, sessions=20, nodes=200):
            frame = decode_client_frame(data, "msgpack", limits=limits)
            assert isinstance(frame, CrdtFrame)
            await r.submit(None, frame.msg)
        await r.close()
        if r.failed or r.last_seq != total:
            raise RuntimeError(f"fill failed: last_seq {r.last_seq}, failed {r.failed}")
        dt = time.perf_counter() - t0
        # The graph the server must serve once it loads the room (canonical JSON, full view).
        graph = hashlib.sha256(r.replica.dump(live=False).encode()).hexdigest()
        epoch = r.epoch
    finally:
        await store.close()
    return {"fill_s": dt, "fill_msgs_per_s": total / dt, "graph": graph, "epoch": epoch}


def check_graph(srv: ServerProc, room: str, want: dict[str, Any]) -> None:
    """The server's view of ``room`` equals what the fill built (same seq, epoch, graph).

    Raises:
        RuntimeError: the server did not load the filled room as its own.
    """
    import httpx

    r = httpx.get(f"{srv.url}/v1/rooms/{room}", timeout=120)
    got = (
        r.status_code,
        r.headers.get("Room-Server-Seq"),
        r.headers.get("Room-Epoch"),
        hashlib.sha256(r.content).hexdigest(),
    )
    if got != (200, str(want["messages"]), want["epoch"], want["graph"]):
        raise RuntimeError(f"server view differs from the fill: {got[:3]}")


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


def big_room(
    total: int,
    conns: int,
    window: int,
    mode: str = "store",
    keep: Path | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Fill a room with ``total`` messages, then time joins after SIGKILL/SIGTERM restarts.

    ``mode="store"``: :func:`_fill_store` writes the room in-process (server stopped), then the
    server starts on the data, is joined once (its first load of the room), takes 1,000 more
    messages over the WebSocket and is SIGKILLed; ``mode="ws"``: everything goes through the
    WebSocket (``conns`` pipelined connections), then SIGKILL. ``keep``: fill into
    ``keep/filled`` once and reuse it in later runs (each run works on a copy).
    ``profile``: py-spy the server's join after the SIGKILL restart into this file.
    """
    tmp = Path(tempfile.mkdtemp(prefix="rooms-bench-big-"))
    data = tmp / "data"
    out: dict[str, Any] = {"messages": total, "mode": mode}
    extra = ["--room-rate", "1000000"]
    room = "big"
    started: list[ServerProc] = []

    def start() -> ServerProc:
        srv = start_ours(data_dir=data, extra=extra)
        started.append(srv)
        return srv

    try:
        if mode == "store":
            filled = keep / "filled" if keep is not None else data
            if keep is not None and filled.exists():
                out.update(fill_s=float("nan"), fill_msgs_per_s=float("nan"))
                out.update(msgspec.json.decode((keep / "filled.json").read_bytes()))
            else:
                out.update(asyncio.run(_fill_store(filled, room, total)))
                print(f"  filled in {out['fill_s']:.1f} s", flush=True)
                if keep is not None:
                    (keep / "filled.json").write_bytes(
                        msgspec.json.encode({"graph": out["graph"], "epoch": out["epoch"]})
                    )
            if filled != data:
                shutil.copytree(filled, data)
            out["data_mib"] = sum(f.stat().st_size for f in data.rglob("*") if f.is_file()) / (
                1 << 20
            )
            t1 = time.perf_counter()
            srv = start()
            out["start_s_fresh"] = time.perf_counter() - t1
            try:
                out["join_s_fresh"] = asyncio.run(_time_join(base_of(srv), room))[0]
                check_graph(srv, room, out)
            except Exception:
                srv.stop()
                print("\n".join(srv.output[-30:]), file=sys.stderr)
                raise
            asyncio.run(_fill(base_of(srv), room, 1000, 4, 64))
        else:
            srv = start()
            t0 = time.perf_counter()
            out["fill_msgs_per_s"] = asyncio.run(_fill(base_of(srv), room, total, conns, window))
            out["fill_s"] = time.perf_counter() - t0
        out["rss_mb_loaded"] = rss_kb(srv.proc.pid) / 1024
        srv.kill()  # SIGKILL: no graceful snapshot
        t1 = time.perf_counter()
        srv = start()
        out["restart_s_kill"] = time.perf_counter() - t1
        spy = None
        if profile is not None:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(srv.proc.pid),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # py-spy attaches
        dt, seq, jl, nbytes = asyncio.run(_time_join(base_of(srv), room))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        out.update(join_s_kill=dt, seq=seq, journal_len=jl, state_bytes=nbytes)
        out["join_s_warm"] = asyncio.run(_time_join(base_of(srv), room))[0]
        srv.stop()  # SIGTERM
        t1 = time.perf_counter()
        srv = start()
        out["restart_s_term"] = time.perf_counter() - t1
        out["join_s_term"] = asyncio.run(_time_join(base_of(srv), room))[0]
        srv.stop()
    finally:
        for srv in started:
            srv.stop()  # no-op for those already stopped or killed
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
    ap.add_argument("--loads", default="rate,sat", help="which loads to run: rate, sat or both")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument(
        "--serve-args", default="", help="extra `durasync serve` options (e.g. '--ws-impl wsproto')"
    )
    ap.add_argument(
        "--client-lib",
        choices=["picows", "websockets"],
        default=default_client_lib(),
        help="WebSocket client of the load generator (picows: cheapest per frame)",
    )
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument(
        "--profile",
        metavar="PREFIX",
        help="py-spy the durasync server in each window into PREFIX.<server>.<load>.<rep>.txt",
    )
    ap.add_argument(
        "--servers",
        default="durasync-data,pycrdt",
        help="comma list of durasync-data, durasync-memory, pycrdt",
    )
    ap.add_argument(
        "--fill", type=int, default=1_000_000, help="messages in the big room (0: skip)"
    )
    ap.add_argument(
        "--fill-mode",
        choices=["store", "ws"],
        default="store",
        help="store: write the big room in-process through the server's Room code (fast);"
        " ws: through the WebSocket (~2k msgs/s)",
    )
    ap.add_argument(
        "--big-dir",
        type=Path,
        help="keep the store-mode fill in DIR/filled and reuse it (skips the fill next time)",
    )
    ap.add_argument("--fill-conns", type=int, default=16)
    ap.add_argument("--fill-window", type=int, default=256)
    ap.add_argument("--big-only", action="store_true", help="only the big-room restart test")
    ap.add_argument(
        "--memory-only",
        action="store_true",
        help="only the idle-memory matrix (ws implementation x permessage-deflate)",
    )
    args = ap.parse_args()
    if args.quick:
        args.clients, args.rooms, args.duration, args.warmup = 200, 10, 5.0, 2.0
        args.fill = min(args.fill, 50_000)

    print(
        f"# rooms bench: {args.clients} clients, {args.rooms} rooms, rate {args.rate}/s and "
        f"{args.sat_rate}/s per client, {args.duration}s (+{args.warmup}s warmup), "
        f"{args.procs} load procs ({args.client_lib}), reps {args.reps};"
        f" load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    names = args.servers.split(",")
    if args.memory_only:
        memory_matrix(args.clients, args.rooms, args.reps)
        return 0
    results: dict[tuple[str, str], list[PhaseResult]] = {}
    for rep in range(0 if args.big_only else args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            loads = {"rate": args.rate, "sat": args.sat_rate}
            for label, rate in ((lb, loads[lb]) for lb in args.loads.split(",")):
                tmp = Path(tempfile.mkdtemp(prefix="rooms-bench-"))
                try:
                    if name == "pycrdt":
                        srv = start_pycrdt()
                        kind = "pycrdt"
                    else:
                        data = tmp / "data" if name == "durasync-data" else None
                        srv = start_ours(data_dir=data, extra=shlex.split(args.serve_args))
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
                            lib=args.client_lib,
                            profile=(
                                Path(f"{args.profile}.{name}.{label}.{rep}.txt")
                                if args.profile and name != "pycrdt"
                                else None
                            ),
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
                    f" closed {r.closed} frame {r.frame_bytes} B; cpu server"
                    f" {r.server_cpu:.2f} (kernel {r.server_sys:.0%}) loadgen"
                    f" {r.loadgen_cpu:.2f} cores; load avg"
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
            (f"@{args.rate}/s: server CPU (cores)", "rate", "server_cpu", "{:,.2f}"),
            (f"@{args.rate}/s: server CPU in kernel", "rate", "server_sys", "{:.0%}"),
            (f"@{args.rate}/s: load-gen CPU (cores)", "rate", "loadgen_cpu", "{:,.2f}"),
            (f"@{args.sat_rate}/s: offered msgs/s", "sat", "offered", "{:,.0f}"),
            (f"@{args.sat_rate}/s: ops/s in", "sat", "ops_in", "{:,.0f}"),
            (f"@{args.sat_rate}/s: deliveries/s out", "sat", "deliveries", "{:,.0f}"),
            (f"@{args.sat_rate}/s: relay p50 ms", "sat", "p50", "{:,.1f}"),
            (f"@{args.sat_rate}/s: relay p99 ms", "sat", "p99", "{:,.1f}"),
            (f"@{args.sat_rate}/s: server CPU (cores)", "sat", "server_cpu", "{:,.2f}"),
            (f"@{args.sat_rate}/s: server CPU in kernel", "sat", "server_sys", "{:.0%}"),
            (f"@{args.sat_rate}/s: load-gen CPU (cores)", "sat", "loadgen_cpu", "{:,.2f}"),
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
        how = "in-process store fill" if args.fill_mode == "store" else "WebSocket fill"
        print(f"\n# big room: {args.fill:,} messages ({how})", flush=True)
        b = big_room(
            args.fill,
            args.fill_conns,
            args.fill_window,
            args.fill_mode,
            keep=args.big_dir,
            profile=Path(f"{args.profile}.big.txt") if args.profile else None,
        )
        print(f"fill: {b['fill_s']:.1f} s ({b['fill_msgs_per_s']:,.0f} msgs/s)")
        if args.fill_mode == "store":
            print(
                f"data dir {b['data_mib']:.0f} MiB; server start {b['start_s_fresh']:.2f} s;"
                f" first join (load of the filled room) {b['join_s_fresh'] * 1000:.0f} ms;"
                " its graph, seq and epoch equal the fill's; then 1,000 messages over the"
                " WebSocket"
            )
        print(
            f"server RSS {b['rss_mb_loaded']:.0f} MiB before SIGKILL\n"
            f"after SIGKILL: server up in {b['restart_s_kill']:.2f} s; connect -> state"
            f" {b['join_s_kill'] * 1000:.0f} ms (serverSeq {b['seq']:,}, journal tail"
            f" {b['journal_len']:,} msgs, state frame {b['state_bytes'] / 1024:.0f} KiB);"
            f" second join {b['join_s_warm'] * 1000:.0f} ms\n"
            f"after SIGTERM: server up in {b['restart_s_term']:.2f} s; connect -> state"
            f" {b['join_s_term'] * 1000:.0f} ms",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
