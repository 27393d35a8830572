"""Reconnect storm: N clients lose the server at once; when do they come back?

    python bench/storm.py [--clients 500] [--procs 5] [--window 1.0]

Setup (all loopback):

- a tiny reliable echo server (Starlette + :class:`durasync.endpoints.ReliableHub`
  on uvicorn) runs as a subprocess and prints the wall-clock time of every
  WebSocket it accepts;
- ``--procs`` worker processes each hold ``clients/procs``
  :class:`~durasync.client.ResilientWebSocket` clients (stateful mode), so
  the load generator does not serialise the reconnects in one event loop;
- a *replacement* server is started on the same port first (``SO_REUSEPORT``),
  then the original is SIGKILLed: the clients see their connections reset at
  the same instant and the replacement is already accepting, so what is
  measured is the clients' reconnect schedule, not the server's start-up.

The replacement's accept times, relative to the kill, give p0/p50/p99/max of
the reconnect time and the largest number of clients accepted in one 50 ms
slice. Two schedules run one after the other:

- ``full jitter``: the default policy (first window ``--window`` s, delay
  uniform in [min_delay, window]);
- ``fixed``: the same window without jitter (every client waits exactly
  ``--window``), the lock-step burst that jitter exists to avoid.

Never part of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import sys
import time
from dataclasses import dataclass

SLICE = 0.05


# -- server subprocess ------------------------------------------------------------------


def serve(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from durasync.endpoints.reliable import ReliableConnection, ReliableHub

    hub = ReliableHub()

    async def echo(websocket: WebSocket) -> None:
        sys.stdout.write(f"accept {time.time():.6f}\n")
        sys.stdout.flush()

        async def handler(conn: ReliableConnection) -> None:
            async for message in conn:
                await conn.send(message)

        await hub.serve(websocket, handler)

    app = Starlette(routes=[WebSocketRoute("/echo", echo)])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    print(f"listening {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        app,
        log_level="error",
        lifespan="off",
        ws="websockets-sansio",
        ws_ping_interval=None,
        backlog=4096,
    )
    uvicorn.Server(config).run(sockets=[sock])


# -- worker subprocess ------------------------------------------------------------------


async def work(url: str, clients: int, seed: int, window: float, jitter: bool) -> None:
    import random

    from durasync.client import ResilientOptions, ResilientWebSocket
    from durasync.protocol import BackoffPolicy, ConnectionState

    # Full jitter: uniform in [min_delay, window]; fixed: exactly `window`.
    # stable_after < the time the clients stay connected before the kill, so
    # the reconnect is attempt 0 (first window) as for a long-lived connection.
    policy = BackoffPolicy(
        initial_delay=window,
        max_delay=30.0,
        min_delay=0.01 if jitter else window,
        stable_after=0.5,
    )
    options = ResilientOptions(backoff=policy, ping_interval=None, connect_timeout=30.0)
    socks = [
        ResilientWebSocket(url, options=options, rng=random.Random(seed * 100_000 + i).random)
        for i in range(clients)
    ]
    # Connect a few at a time: the initial connection is not what is measured.
    for i in range(0, clients, 25):
        await asyncio.gather(*(ws.connect() for ws in socks[i : i + 25]))
    print("ready", flush=True)

    async def back(ws: ResilientWebSocket) -> None:
        await ws.wait_for_state(ConnectionState.RECONNECTING)
        await ws.wait_for_state(ConnectionState.CONNECTED)

    await asyncio.gather(*(back(ws) for ws in socks))
    print("reconnected", flush=True)
    # Stay connected until the parent closes stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.gather(*(ws.close(grace=0.2) for ws in socks), return_exceptions=True)


# -- driver -----------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    clients: int
    times: list[float]

    def row(self) -> str:
        t = sorted(self.times)
        if not t:
            return f"| {self.name} | {self.clients} | 0 | - | - | - | - | - | - |"
        p99 = t[min(len(t) - 1, int(0.99 * len(t)))]
        slices: dict[int, int] = {}
        for x in t:
            slices[int(x / SLICE)] = slices.get(int(x / SLICE), 0) + 1
        return (
            f"| {self.name} | {self.clients} | {len(t)} | {t[0] * 1000:.0f} | "
            f"{statistics.median(t) * 1000:.0f} | {p99 * 1000:.0f} | {t[-1] * 1000:.0f} | "
            f"{max(slices.values())} | {len(slices)} |"
        )

    def histogram(self, window: float) -> str:
        n = max(1, int(max(self.times, default=0) / SLICE) + 1)
        n = max(n, int(window / SLICE))
        counts = [0] * n
        for x in self.times:
            counts[int(x / SLICE)] += 1
        top = max(counts) or 1
        lines = []
        for i, c in enumerate(counts):
            bar = "#" * round(40 * c / top)
            lines.append(f"  {i * SLICE * 1000:5.0f}-{(i + 1) * SLICE * 1000:5.0f} ms {c:4d} {bar}")
        return "\n".join(lines)


class Proc:
    """A subprocess of this script with its stdout lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, *args: str) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().strip())
            self.changed.set()
        self.changed.set()

    async def wait_line(self, prefix: str, limit: float) -> str:
        async with asyncio.timeout(limit):
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                if self.reader.done():
                    raise RuntimeError(f"subprocess ended before {prefix!r}: {self.lines[-5:]}")
                self.changed.clear()
                await self.changed.wait()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(Exception):
            await self.reader


async def storm(name: str, clients: int, procs: int, window: float, jitter: bool) -> Result:
    first = await Proc.start("serve", "--port", "0")
    port = int((await first.wait_line("listening", 30)).split()[1])
    workers: list[Proc] = []
    second: Proc | None = None
    try:
        per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
        for i, n in enumerate(per):
            workers.append(
                await Proc.start(
                    "work",
                    "--url",
                    f"ws://127.0.0.1:{port}/echo",
                    "--clients",
                    str(n),
                    "--seed",
                    str(i + 1),
                    "--window",
                    str(window),
                    *(["--fixed"] if not jitter else []),
                )
            )
        for w in workers:
            await w.wait_line("ready", 120)
        second = await Proc.start("serve", "--port", str(port))
        await second.wait_line("listening", 30)
        await asyncio.sleep(1.0)  # every connection is older than stable_after
        killed_at = time.time()
        first.proc.send_signal(signal.SIGKILL)
        for w in workers:
            await w.wait_line("reconnected", 120)
        times = [
            float(line.split()[1]) - killed_at
            for line in second.lines
            if line.startswith("accept ")
        ]
        return Result(name, clients, times)
    finally:
        await asyncio.gather(*(w.stop() for w in workers))
        for p in (first, second):
            if p is not None:
                if p.proc.returncode is None:
                    p.proc.send_signal(signal.SIGTERM)
                await p.stop()


async def drive(args: argparse.Namespace) -> None:
    results = [
        await storm("full jitter", args.clients, args.procs, args.window, True),
        await storm("fixed (no jitter)", args.clients, args.procs, args.window, False),
    ]
    print(
        f"\nreconnect storm: {args.clients} clients in {args.procs} processes, "
        f"first backoff window {args.window:g} s; times from the SIGKILL to the "
        f"replacement server's accept"
    )
    print(
        "| schedule | clients | accepted | p0 ms | p50 ms | p99 ms | max ms | "
        f"max per {SLICE * 1000:.0f} ms | slices used |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(r.row())
    for r in results:
        print(f"\n{r.name}: accepts per {SLICE * 1000:.0f} ms slice")
        print(r.histogram(args.window))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, default=0)
    w = sub.add_parser("work")
    w.add_argument("--url", required=True)
    w.add_argument("--clients", type=int, required=True)
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--window", type=float, required=True)
    w.add_argument("--fixed", action="store_true")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--procs", type=int, default=5)
    parser.add_argument("--window", type=float, default=1.0)
    args = parser.parse_args()
    if args.cmd == "serve":
        serve(args.port)
    elif args.cmd == "work":
        asyncio.run(work(args.url, args.clients, args.seed, args.window, not args.fixed))
    else:
        asyncio.run(drive(args))


if __name__ == "__main__":
    main()
