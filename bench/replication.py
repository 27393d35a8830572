"""Replication benchmark: a link's catch-up and live lag, side by side with their peers.

Starts two ``durasync serve`` processes on loopback (embedded stores, fsync'd): a *source*
and a *target*, the target replicating from the source through a link (``--replicate``),
and measures in one run:

1. **Catch-up.** A stream of ``--messages`` (100,000) JSON messages of 100 bytes waits on the
   source; the link is added to the target (the file is rewritten, then SIGHUP) and the time
   until the target's mirror reaches the source's tail is the catch-up time. The peer: one
   HTTP writer appending the same number of messages, one per POST and each waiting for its
   ack (closed loop), to a fresh stream of the same target server. Printed: messages/s of
   both and the ratio (target: the link at least 5x the writer; batching is the point).
2. **Live lag.** On the target server, writers append to a local stream at ``--rate``
   (1,000) messages/s for ``--duration`` s while an SSE reader on the same server records
   when each message arrives: the local SSE delivery latency (send -> arrival). Then the
   same writers append to a stream of the source at the same rate, and an SSE reader on the
   target's mirror records the replication lag (send on the source -> arrival from the
   target). Printed: both p50/p99 and the ratio of the p99s (target: lag p99 at most 2x the
   local p99 of the same server).

Never part of the test suite's pass/fail. Usage::

    .venv/bin/python bench/replication.py            # full run
    .venv/bin/python bench/replication.py --quick    # a smaller, shorter run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import ServerProc, cpu_seconds, start_ours
from streams import JSON_HEADERS, Conn, HttpError, create_stream

LINK_SETTINGS = {"discover-interval": 0.2, "live-wait": 5.0}


def _links_toml(remote: str | None) -> str:
    lines = ["[replication]"]
    for key, value in LINK_SETTINGS.items():
        lines.append(f"{key} = {json.dumps(value)}")
    if remote is not None:
        lines += [
            "[[links]]",
            'name = "bench"',
            f"remote = {json.dumps(remote)}",
            'pull = ["sensors/"]',
        ]
    return "\n".join(lines) + "\n"


def _message(i: int, size: int = 100) -> bytes:
    base = f'{{"i":{i},"t":{time.time():.6f},"pad":""}}'
    pad = max(0, size - len(base))
    return (base[:-2] + "x" * pad + '"}').encode()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _prefill(base: str, path: str, count: int) -> None:
    conn = Conn(base)
    await create_stream(conn, path)
    for start in range(0, count, 1000):
        n = min(1000, count - start)
        body = b"[" + b",".join(_message(start + k) for k in range(n)) + b"]"
        status, _, resp = await conn.request("POST", path, body, JSON_HEADERS)
        if not 200 <= status < 300:
            raise HttpError(f"prefill POST {status}: {resp[:200]!r}")
    await conn.close()


async def _tail(base: str, path: str) -> str:
    conn = Conn(base)
    try:
        status, hdrs, _ = await conn.request("HEAD", path)
    finally:
        await conn.close()
    return hdrs.get("stream-next-offset", "") if status == 200 else ""


async def _writer_baseline(base: str, path: str, count: int) -> float:
    """One closed-loop writer, one message per POST; seconds for ``count`` messages."""
    conn = Conn(base)
    await create_stream(conn, path)
    t0 = time.perf_counter()
    for i in range(count):
        status, _, resp = await conn.request("POST", path, _message(i), JSON_HEADERS)
        if not 200 <= status < 300:
            raise HttpError(f"writer POST {status}: {resp[:200]!r}")
    elapsed = time.perf_counter() - t0
    await conn.close()
    return elapsed


async def _wait_tail(base: str, path: str, want: str, within: float) -> float:
    """Poll until ``path`` on ``base`` reaches offset ``want``; returns when (perf_counter)."""
    deadline = time.perf_counter() + within
    for _ in range(int(within / 0.005) + 1):
        if await _tail(base, path) == want:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{path} did not reach {want} within {within} s")


async def _sse_reader(base: str, path: str, stop_at: float, arrivals: dict[int, float]) -> None:
    conn = Conn(base)
    offset = "-1"
    while time.time() < stop_at:
        status, hdrs, reader = await conn.send("GET", f"{path}?offset={offset}&live=sse")
        if status != 200:
            await conn.close()
            await asyncio.sleep(0.05)  # the mirror may not exist yet
            continue
        buf = b""
        try:
            async with asyncio.timeout(max(0.1, stop_at - time.time())):
                async for chunk in conn.body_chunks(status, hdrs, reader):
                    buf += chunk
                    while b"\n\n" in buf:
                        block, buf = buf.split(b"\n\n", 1)
                        now = time.time()
                        event, data = "", []
                        for line in block.split(b"\n"):
                            if line.startswith(b"event:"):
                                event = line[6:].strip().decode()
                            elif line.startswith(b"data:"):
                                data.append(line[5:].lstrip(b" "))
                        payload = b"\n".join(data)
                        if event == "data" and payload:
                            for item in json.loads(payload):
                                arrivals.setdefault(item["i"], now)
                        elif event == "control" and payload:
                            offset = json.loads(payload).get("streamNextOffset", offset)
        except TimeoutError:
            break
        await conn.close()
    await conn.close()


async def _paced_writer(
    base: str, path: str, ids: range, rate: float, start_at: float, sent: dict[int, float]
) -> None:
    conn = Conn(base)
    every = 1.0 / rate
    for k, i in enumerate(ids):
        due = start_at + k * every
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        t = time.time()
        sent[i] = t
        body = f'{{"i":{i},"t":{t:.6f}}}'.encode()
        status, _, resp = await conn.request("POST", path, body, JSON_HEADERS)
        if not 200 <= status < 300:
            raise HttpError(f"live POST {status}: {resp[:200]!r}")
    await conn.close()


async def _deliveries(
    write_to: str, read_from: str, path: str, rate: float, duration: float
) -> tuple[int, list[float]]:
    """Append to ``path`` on ``write_to`` at ``rate`` for ``duration`` s (4 paced writers,
    each message carrying its id), while one SSE reader follows ``path`` on ``read_from``;
    the latencies send -> arrival of every message (seconds)."""
    writers = 4
    count = int(rate * duration)
    start_at = time.time() + 1.0
    stop_at = start_at + duration + 10.0
    sent: dict[int, float] = {}
    seen: dict[int, float] = {}
    reader = asyncio.create_task(_sse_reader(read_from, path, stop_at, seen))
    await asyncio.gather(
        *(
            _paced_writer(write_to, path, range(w, count, writers), rate / writers, start_at, sent)
            for w in range(writers)
        )
    )
    await _wait_tail(read_from, path, await _tail(write_to, path), 60)
    for _ in range(200):  # the reader sees the last messages (bounded wait)
        if len(seen) >= count or time.time() > stop_at:
            break
        await asyncio.sleep(0.05)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    return count, [seen[i] - sent[i] for i in sent if i in seen]


async def _live(source: str, target: str, rate: float, duration: float) -> dict[str, Any]:
    """Local SSE delivery on the target (writers and reader on the target), then the
    replication lag (writers on the source, reader on the target's mirror): the same server
    delivers, at the same rate."""
    local_path = "/v1/stream/bench/local"
    conn = Conn(target)
    await create_stream(conn, local_path)
    await conn.close()
    count, local = await _deliveries(target, target, local_path, rate, duration)
    path = "/v1/stream/sensors/live"
    conn = Conn(source)
    await create_stream(conn, path)
    await conn.close()
    await _wait_tail(target, path, await _tail(source, path), 30)  # the mirror exists
    _, lag = await _deliveries(source, target, path, rate, duration)
    return {
        "messages": count,
        "local_seen": len(local),
        "target_seen": len(lag),
        "local_p50_ms": _pct(local, 0.50) * 1000,
        "local_p99_ms": _pct(local, 0.99) * 1000,
        "lag_p50_ms": _pct(lag, 0.50) * 1000,
        "lag_p99_ms": _pct(lag, 0.99) * 1000,
        "lag_mean_ms": statistics.fmean(lag) * 1000 if lag else float("nan"),
    }


def run(messages: int, rate: float, duration: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="durasync-bench-repl-"))
    links = work / "links.toml"
    links.write_text(_links_toml(None))
    source: ServerProc | None = None
    target: ServerProc | None = None
    try:
        source = start_ours(data_dir=work / "source", long_poll_timeout=30)
        target = start_ours(
            data_dir=work / "target", long_poll_timeout=30, extra=["--replicate", str(links)]
        )
        path = "/v1/stream/sensors/big"
        asyncio.run(_prefill(source.url, path, messages))
        want = asyncio.run(_tail(source.url, path))
        writer_s = asyncio.run(_writer_baseline(target.url, "/v1/stream/bench/writer", messages))
        cpu_before = cpu_seconds(target.proc.pid)
        links.write_text(_links_toml(source.url))
        t0 = time.perf_counter()
        target.proc.send_signal(signal.SIGHUP)
        done = asyncio.run(_wait_tail(target.url, path, want, 600))
        catchup_s = done - t0
        cpu_catchup = cpu_seconds(target.proc.pid) - cpu_before
        live = asyncio.run(_live(source.url, target.url, rate, duration))
        return {
            "messages": messages,
            "writer_s": writer_s,
            "catchup_s": catchup_s,
            "writer_per_s": messages / writer_s,
            "catchup_per_s": messages / catchup_s,
            "catchup_ratio": writer_s / catchup_s,
            "catchup_target_cpu_s": cpu_catchup,
            "live": live,
        }
    finally:
        for server in (target, source):
            if server is not None:
                server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="live appends per second")
    parser.add_argument("--duration", type=float, default=10.0, help="live phase seconds")
    parser.add_argument("--quick", action="store_true", help="10,000 messages, 3 s live")
    parser.add_argument("--json", action="store_true", help="print the raw results")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.duration = 10_000, 3.0
    results = run(args.messages, args.rate, args.duration)
    if args.json:
        print(json.dumps(results, indent=2))
    live = results["live"]
    print(f"catch-up of {results['messages']:,} messages (100 B JSON), embedded stores:")
    print(
        f"  single HTTP writer, 1 msg/POST : {results['writer_per_s']:>10,.0f} msg/s "
        f"({results['writer_s']:.1f} s)"
    )
    print(
        f"  replication link catch-up      : {results['catchup_per_s']:>10,.0f} msg/s "
        f"({results['catchup_s']:.2f} s, target CPU {results['catchup_target_cpu_s']:.2f} s)"
    )
    print(f"  ratio link / writer            : {results['catchup_ratio']:>10.1f}x  (target >= 5x)")
    print(
        f"live at {args.rate:,.0f} appends/s for {args.duration:.0f} s "
        f"({live['target_seen']}/{live['messages']} seen on the target):"
    )
    print(
        f"  local SSE delivery (target)    : p50 {live['local_p50_ms']:6.2f} ms  "
        f"p99 {live['local_p99_ms']:6.2f} ms"
    )
    print(
        f"  replication lag (to target SSE): p50 {live['lag_p50_ms']:6.2f} ms  "
        f"p99 {live['lag_p99_ms']:6.2f} ms"
    )
    ratio = live["lag_p99_ms"] / live["local_p99_ms"]
    print(f"  ratio lag p99 / local p99      : {ratio:>10.2f}x  (target <= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
