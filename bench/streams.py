"""Durable Streams benchmark: durasync vs the npm reference server, in one run.

Starts, one at a time on loopback, our server (embedded durable store and
``--memory``) and the npm reference ``@durable-streams/server`` (file-backed
``dataDir`` and memory), drives each with the same load generator and prints
one table with the ratios. Never part of the test suite's pass/fail.

Measured per server:

- appends/s, 8 writers each on its own stream, 200-byte JSON messages, one
  message per POST, each writer waiting for its ack (closed loop);
- appends/s, 8 writers on one shared stream, same messages;
- catch-up read MB/s of a 100k-message stream (payload bytes / wall time,
  following ``Stream-Next-Offset`` from ``-1`` until up to date);
- live-tail delivery latency p50/p99 for 50 long-poll and 50 SSE readers of
  one stream while a writer appends a timestamped message every 20 ms.

The load generator is a raw asyncio HTTP/1.1 keep-alive client spread over
several processes (``--procs``), so neither httpx nor one Python process is
the bottleneck. Usage::

    .venv/bin/python bench/streams.py            # full run (a few minutes)
    .venv/bin/python bench/streams.py --quick    # short smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

from _peers import ServerProc, node_available, start_ours, start_reference

# --------------------------------------------------------------------------
# A minimal HTTP/1.1 keep-alive client (enough for these servers).
# --------------------------------------------------------------------------


class HttpError(Exception):
    pass


class Conn:
    """One keep-alive connection; reconnects transparently when the peer closed."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.host_header = f"{self.host}:{self.port}".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, limit=1 << 22
            )
        return self.reader, self.writer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    def _request_bytes(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        head = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self.host_header]
        for name, value in headers.items():
            head.append(f"{name}: {value}".encode())
        if body or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body)}".encode())
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    async def send(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], asyncio.StreamReader]:
        """Send a request; return status, lower-cased headers, and the reader."""
        for attempt in (0, 1):
            reader, writer = await self._ensure()
            try:
                writer.write(self._request_bytes(method, path, body, headers or {}))
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionError):
                await self.close()
                if attempt:
                    raise
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdrs: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        return status, hdrs, reader

    async def body_chunks(
        self, status: int, hdrs: dict[str, str], reader: asyncio.StreamReader, method: str = "GET"
    ) -> AsyncIterator[bytes]:
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return
                data = await reader.readexactly(size + 2)
                yield data[:-2]
        elif "content-length" in hdrs:
            n = int(hdrs["content-length"])
            if n:
                yield await reader.readexactly(n)
        else:  # until close
            while chunk := await reader.read(1 << 16):
                yield chunk
            await self.close()
        if hdrs.get("connection", "").lower() == "close":
            await self.close()

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        status, hdrs, reader = await self.send(method, path, body, headers)
        out = b"".join([c async for c in self.body_chunks(status, hdrs, reader, method)])
        return status, hdrs, out


JSON_HEADERS = {"Content-Type": "application/json"}


def message(i: int, size: int = 200) -> bytes:
    """A JSON object of exactly ``size`` bytes carrying its send time."""
    base = f'{{"i":{i},"t":{time.time():.6f},"pad":""}}'
    pad = max(0, size - len(base))
    return (base[:-2] + "x" * pad + '"}').encode()


async def create_stream(conn: Conn, path: str) -> None:
    status, _, body = await conn.request("PUT", path, b"", JSON_HEADERS)
    if status not in (200, 201):
        raise HttpError(f"PUT {path}: {status} {body[:200]!r}")


# --------------------------------------------------------------------------
# Phases, each run inside worker processes.
# --------------------------------------------------------------------------


async def _append_loop(base: str, path: str, start_at: float, end_at: float) -> dict[str, Any]:
    conn = Conn(base)
    n = 0
    errors = 0
    lat: list[float] = []
    body = message(0)
    await conn._ensure()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    while time.time() < end_at:
        t0 = time.perf_counter()
        status, _, _ = await conn.request("POST", path, body, JSON_HEADERS)
        if 200 <= status < 300:
            n += 1
            lat.append(time.perf_counter() - t0)
        else:
            errors += 1
    await conn.close()
    return {"n": n, "errors": errors, "lat": lat}


def _proc_appends(args: tuple[str, list[str], float, float]) -> dict[str, Any]:
    base, paths, start_at, end_at = args

    async def run() -> list[dict[str, Any]]:
        return await asyncio.gather(*(_append_loop(base, p, start_at, end_at) for p in paths))

    parts = asyncio.run(run())
    return {
        "n": sum(p["n"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "lat": [x for p in parts for x in p["lat"]][::10],
    }


async def _long_poll_reader(
    base: str, path: str, offset: str, stop_at: float, lat: list[float]
) -> None:
    conn = Conn(base)
    while time.time() < stop_at:
        try:
            status, hdrs, body = await asyncio.wait_for(
                conn.request("GET", f"{path}?offset={offset}&live=long-poll"),
                timeout=max(0.1, stop_at - time.time() + 1),
            )
        except TimeoutError:
            break
        now = time.time()
        if status == 200 and body:
            for item in json.loads(body):
                lat.append(now - item["t"])
        if status in (200, 204):
            offset = hdrs.get("stream-next-offset", offset)
        else:
            raise HttpError(f"long-poll {status}")
    await conn.close()


async def _sse_reader(base: str, path: str, offset: str, stop_at: float, lat: list[float]) -> None:
    conn = Conn(base)
    while time.time() < stop_at:
        status, hdrs, reader = await conn.send("GET", f"{path}?offset={offset}&live=sse")
        if status != 200:
            raise HttpError(f"sse {status}")
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
                                lat.append(now - item["t"])
                        elif event == "control" and payload:
                            ctl = json.loads(payload)
                            offset = ctl.get("streamNextOffset", offset)
        except TimeoutError:
            break
        await conn.close()  # the server ended the SSE response; reconnect
    await conn.close()


def _proc_tail(args: tuple[str, str, str, int, int, float]) -> dict[str, Any]:
    base, path, offset, n_lp, n_sse, stop_at = args

    async def run() -> dict[str, Any]:
        lp: list[float] = []
        sse: list[float] = []
        tasks = [_long_poll_reader(base, path, offset, stop_at, lp) for _ in range(n_lp)]
        tasks += [_sse_reader(base, path, offset, stop_at, sse) for _ in range(n_sse)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        return {"lp": lp, "sse": sse, "errors": errors[:5], "n_errors": len(errors)}

    return asyncio.run(run())


# --------------------------------------------------------------------------
# Orchestration.
# --------------------------------------------------------------------------


PHASES = ("own", "shared", "catchup", "tail")


@dataclass
class Config:
    duration: float
    catchup_messages: int
    tail_duration: float
    tail_readers: int
    tail_interval: float
    procs: int
    reps: int = 3
    writers: int = 8
    phases: tuple[str, ...] = PHASES


def _split(items: list[Any], n: int) -> list[list[Any]]:
    return [items[i::n] for i in range(n) if items[i::n]]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def bench_appends(pool: Any, base: str, paths: list[str], cfg: Config) -> dict[str, float]:
    start_at = time.time() + 0.5
    end_at = start_at + cfg.duration
    parts = pool.map(
        _proc_appends, [(base, chunk, start_at, end_at) for chunk in _split(paths, cfg.procs)]
    )
    n = sum(p["n"] for p in parts)
    lat = [x for p in parts for x in p["lat"]]
    return {
        "appends_per_s": n / cfg.duration,
        "errors": sum(p["errors"] for p in parts),
        "p50_ms": _pct(lat, 0.5) * 1000,
        "p99_ms": _pct(lat, 0.99) * 1000,
    }


async def _prefill(base: str, path: str, count: int) -> None:
    conn = Conn(base)
    await create_stream(conn, path)
    batch = 1000
    one = message(0)
    for start in range(0, count, batch):
        n = min(batch, count - start)
        body = b"[" + b",".join([one] * n) + b"]"
        status, _, resp = await conn.request("POST", path, body, JSON_HEADERS)
        if not 200 <= status < 300:
            raise HttpError(f"prefill POST {status}: {resp[:200]!r}")
    await conn.close()


async def _catchup_once(base: str, path: str) -> tuple[int, float, int]:
    conn = Conn(base)
    offset = "-1"
    total = 0
    requests = 0
    t0 = time.perf_counter()
    while True:
        status, hdrs, body = await conn.request("GET", f"{path}?offset={offset}")
        requests += 1
        if status != 200:
            raise HttpError(f"catch-up GET {status}: {body[:200]!r}")
        total += len(body)
        offset = hdrs["stream-next-offset"]
        if hdrs.get("stream-up-to-date", "").lower() == "true":
            break
    elapsed = time.perf_counter() - t0
    await conn.close()
    return total, elapsed, requests


def bench_catchup(base: str, path: str) -> dict[str, float]:
    """One full catch-up read of the prefilled stream at ``path``."""
    total, elapsed, requests = asyncio.run(_catchup_once(base, path))
    return {"mb_per_s": total / elapsed / 1e6, "bytes": total, "requests": requests}


async def _tail_writer(base: str, path: str, start_at: float, end_at: float, every: float) -> int:
    conn = Conn(base)
    await conn._ensure()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    n = 0
    next_at = time.time()
    while time.time() < end_at:
        status, _, _ = await conn.request("POST", path, message(n), JSON_HEADERS)
        if 200 <= status < 300:
            n += 1
        next_at += every
        await asyncio.sleep(max(0.0, next_at - time.time()))
    await conn.close()
    return n


def bench_tail(pool: Any, base: str, prefix: str, cfg: Config) -> dict[str, float]:
    path = f"{prefix}/tail-{uuid.uuid4().hex[:6]}"

    async def setup() -> str:
        conn = Conn(base)
        await create_stream(conn, path)
        _status, hdrs, _ = await conn.request("HEAD", path)
        await conn.close()
        return hdrs["stream-next-offset"]

    offset = asyncio.run(setup())
    readers_per_proc = _split(list(range(cfg.tail_readers)), cfg.procs)
    write_start = time.time() + 1.5  # readers connect and park first
    write_end = write_start + cfg.tail_duration
    stop_at = write_end + 1.0
    jobs = [(base, path, offset, len(r), len(r), stop_at) for r in readers_per_proc]
    async_result = pool.map_async(_proc_tail, jobs)
    sent = asyncio.run(_tail_writer(base, path, write_start, write_end, cfg.tail_interval))
    parts = async_result.get(timeout=cfg.tail_duration + 60)
    lp = [x for p in parts for x in p["lp"]]
    sse = [x for p in parts for x in p["sse"]]
    n_readers = sum(len(r) for r in readers_per_proc)
    return {
        "sent": sent,
        "lp_delivered_frac": len(lp) / max(1, sent * n_readers),
        "sse_delivered_frac": len(sse) / max(1, sent * n_readers),
        "lp_p50_ms": _pct(lp, 0.5) * 1000,
        "lp_p99_ms": _pct(lp, 0.99) * 1000,
        "sse_p50_ms": _pct(sse, 0.5) * 1000,
        "sse_p99_ms": _pct(sse, 0.99) * 1000,
        "reader_errors": sum(p["n_errors"] for p in parts),
    }


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of process ``pid`` from /proc (Linux), in seconds; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_all(
    starters: dict[str, Callable[[], ServerProc]], cfg: Config, pool: Any
) -> dict[str, dict[str, Any]]:
    """Run every phase on every server, interleaved, ``cfg.reps`` times.

    All servers run at once (an idle server costs nothing) and each phase
    visits them in a rotating order, so background load on this shared
    machine hits every server alike instead of whichever ran last. Each
    metric is the median over the repetitions.
    """
    names = list(starters)
    servers: dict[str, ServerProc] = {}
    samples: dict[str, dict[str, list[dict[str, float]]]] = {n: {} for n in names}
    prefix = {n: f"/v1/stream/bench-{uuid.uuid4().hex[:8]}" for n in names}
    try:
        for name in names:
            print(f"[{name}] starting", file=sys.stderr, flush=True)
            servers[name] = starters[name]()

        async def setup(base: str, pre: str) -> None:
            conn = Conn(base)
            for i in range(cfg.writers):
                await create_stream(conn, f"{pre}/own-{i}")
            await create_stream(conn, f"{pre}/shared")
            await conn.close()
            if "catchup" in cfg.phases:
                await _prefill(base, f"{pre}/catchup", cfg.catchup_messages)

        for name in names:
            print(f"[{name}] setup + prefill", file=sys.stderr, flush=True)
            asyncio.run(setup(servers[name].url, prefix[name]))

        def phase(section: str, fn: Callable[[str, str], dict[str, float]]) -> None:
            for rep in range(cfg.reps):
                k = rep % len(names)
                for name in names[k:] + names[:k]:
                    print(f"[{name}] {section} #{rep + 1}", file=sys.stderr, flush=True)
                    pid = servers[name].proc.pid
                    cpu = _cpu_seconds(pid)
                    result = fn(servers[name].url, prefix[name])
                    if "appends_per_s" in result and cpu is not None:
                        # Server CPU (utime + stime) per append: less sensitive to what else
                        # runs on a shared machine than appends/s.
                        spent = (_cpu_seconds(pid) or cpu) - cpu
                        done = result["appends_per_s"] * cfg.duration
                        result["cpu_us"] = spent * 1e6 / done if done else 0.0
                    samples[name].setdefault(section, []).append(result)

        own = [f"own-{i}" for i in range(cfg.writers)]
        if "own" in cfg.phases:
            phase("own", lambda b, pre: bench_appends(pool, b, [f"{pre}/{o}" for o in own], cfg))
        if "shared" in cfg.phases:
            phase(
                "shared",
                lambda b, pre: bench_appends(pool, b, [f"{pre}/shared"] * cfg.writers, cfg),
            )
        if "catchup" in cfg.phases:
            phase("catchup", lambda b, pre: bench_catchup(b, f"{pre}/catchup"))
        if "tail" in cfg.phases:
            phase("tail", lambda b, pre: bench_tail(pool, b, pre, cfg))
    finally:
        exit_codes = {name: proc.stop() for name, proc in servers.items()}
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        results[name] = {"exit_code": exit_codes.get(name)}
        for section, runs in samples[name].items():
            keys = runs[0].keys()
            results[name][section] = {k: statistics.median(r[k] for r in runs) for k in keys}
            if section == "catchup":
                results[name][section]["mb_per_s_best"] = max(r["mb_per_s"] for r in runs)
    return results


ROWS: list[tuple[str, str, str, bool]] = [
    # label, section, key, higher_is_better
    ("appends/s, 8 writers, own streams", "own", "appends_per_s", True),
    ("  append p99 ms (own)", "own", "p99_ms", False),
    ("  server CPU us per append (own)", "own", "cpu_us", False),
    ("appends/s, 8 writers, shared stream", "shared", "appends_per_s", True),
    ("  append p99 ms (shared)", "shared", "p99_ms", False),
    ("  server CPU us per append (shared)", "shared", "cpu_us", False),
    ("catch-up MB/s (median)", "catchup", "mb_per_s", True),
    ("catch-up MB/s (best)", "catchup", "mb_per_s_best", True),
    ("long-poll p50 ms", "tail", "lp_p50_ms", False),
    ("long-poll p99 ms", "tail", "lp_p99_ms", False),
    ("SSE p50 ms", "tail", "sse_p50_ms", False),
    ("SSE p99 ms", "tail", "sse_p99_ms", False),
    ("  long-poll delivered fraction", "tail", "lp_delivered_frac", True),
    ("  SSE delivered fraction", "tail", "sse_delivered_frac", True),
]


def print_table(results: dict[str, dict[str, Any]]) -> None:
    pairs = [("ours-durable", "ref-file"), ("ours-memory", "ref-memory")]
    cols = [c for pair in pairs for c in pair if c in results]
    header = f"{'metric':38}" + "".join(f"{c:>14}" for c in cols)
    ratio_cols = [(a, b) for a, b in pairs if a in results and b in results]
    header += "".join(f"{'ratio ' + a.split('-')[1]:>16}" for a, _ in ratio_cols)
    print(header)
    print("-" * len(header))
    for label, section, key, _higher in ROWS:
        line = f"{label:38}"
        for c in cols:
            v = results[c].get(section, {}).get(key)
            line += f"{v:>14.2f}" if isinstance(v, float | int) else f"{'-':>14}"
        for a, b in ratio_cols:
            va = results[a].get(section, {}).get(key)
            vb = results[b].get(section, {}).get(key)
            if isinstance(va, float | int) and isinstance(vb, float | int) and vb:
                line += f"{va / vb:>15.2f}x"
            else:
                line += f"{'-':>16}"
        print(line)
    print("(ratio = ours / reference; for latency rows lower is better)")


def print_metrics_cost(results: dict[str, dict[str, Any]]) -> None:
    """Metrics on (ours-*) next to metrics off (ours-*-nometrics), when both ran."""
    pairs = [(a, a + "-nometrics") for a in ("ours-durable", "ours-memory")]
    pairs = [(a, b) for a, b in pairs if a in results and b in results]
    if not pairs:
        return
    print()
    header = f"{'metrics on / off':38}"
    header += "".join(f"{a:>16}{'off':>10}{'on/off':>9}" for a, _ in pairs)
    print(header)
    print("-" * len(header))
    for label, section, key, _higher in ROWS:
        if section not in ("own", "shared"):
            continue
        line = f"{label:38}"
        for a, b in pairs:
            va = results[a].get(section, {}).get(key)
            vb = results[b].get(section, {}).get(key)
            if isinstance(va, float | int) and isinstance(vb, float | int) and vb:
                line += f"{va:>16.2f}{vb:>10.2f}{va / vb:>8.3f}x"
            else:
                line += f"{'-':>35}"
        print(line)


def check_targets(results: dict[str, dict[str, Any]]) -> list[str]:
    """The streams layer's performance targets (ratios to the reference server), as pass/fail
    lines."""
    out: list[str] = []

    def get(name: str, section: str, key: str) -> float | None:
        v = results.get(name, {}).get(section, {}).get(key)
        return float(v) if isinstance(v, float | int) else None

    def line(label: str, ok: bool | None, detail: str) -> None:
        mark = "n/a " if ok is None else ("PASS" if ok else "MISS")
        out.append(f"[{mark}] {label}: {detail}")

    for section in ("own", "shared"):
        a, b = (
            get("ours-durable", section, "appends_per_s"),
            get("ref-file", section, "appends_per_s"),
        )
        line(
            f"durable appends/s ({section}) >= 3x reference file",
            None if a is None or b is None else a >= 3 * b,
            f"{a} vs {b}" if a is None or b is None else f"{a:.0f} vs {b:.0f} = {a / b:.2f}x",
        )
        a, b = (
            get("ours-memory", section, "appends_per_s"),
            get("ref-memory", section, "appends_per_s"),
        )
        line(
            f"memory appends/s ({section}) >= reference memory",
            None if a is None or b is None else a >= b,
            f"{a} vs {b}" if a is None or b is None else f"{a:.0f} vs {b:.0f} = {a / b:.2f}x",
        )
    for ours, ref in (("ours-durable", "ref-file"), ("ours-memory", "ref-memory")):
        a, b = get(ours, "catchup", "mb_per_s"), get(ref, "catchup", "mb_per_s")
        line(
            f"catch-up MB/s {ours} >= {ref}",
            None if a is None or b is None else a >= b,
            f"{a} vs {b}" if a is None or b is None else f"{a:.1f} vs {b:.1f} = {a / b:.2f}x",
        )
        a, b = get(ours, "tail", "sse_p99_ms"), get(ref, "tail", "sse_p99_ms")
        line(
            f"SSE p99 {ours} <= {ref}",
            None if a is None or b is None else a <= b,
            f"{a} vs {b}" if a is None or b is None else f"{a:.1f} ms vs {b:.1f} ms",
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="short run (smoke test of the bench)")
    ap.add_argument("--duration", type=float, help="seconds per append phase")
    ap.add_argument("--catchup-messages", type=int)
    ap.add_argument("--tail-duration", type=float)
    ap.add_argument("--tail-readers", type=int, help="readers of each kind (long-poll, SSE)")
    ap.add_argument("--reps", type=int, help="interleaved repetitions per phase (median)")
    ap.add_argument("--procs", type=int, default=max(2, min(4, os.cpu_count() or 2)))
    ap.add_argument(
        "--servers",
        default="ours-durable,ref-file,ours-memory,ref-memory",
        help=(
            "comma-separated subset of ours-durable,ours-memory,ref-file,ref-memory,"
            "ours-durable-nometrics,ours-memory-nometrics (metrics off)"
        ),
    )
    ap.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="comma-separated subset of " + ",".join(PHASES) + " (default: all)",
    )
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args(argv)
    cfg = Config(
        duration=args.duration or (2.0 if args.quick else 5.0),
        catchup_messages=args.catchup_messages or (20_000 if args.quick else 100_000),
        tail_duration=args.tail_duration or (2.0 if args.quick else 5.0),
        tail_readers=args.tail_readers or (10 if args.quick else 50),
        tail_interval=0.02,
        procs=args.procs,
        reps=args.reps or (1 if args.quick else 3),
        phases=tuple(ph for ph in PHASES if ph in args.phases.split(",")),
    )
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if any(n.startswith("ref") for n in names) and not node_available():
        print("node or tests/js/node_modules missing: skipping the reference", file=sys.stderr)
        names = [n for n in names if not n.startswith("ref")]
    tmp = Path(tempfile.mkdtemp(prefix="durasync-bench-"))
    # Long-poll timeouts well above the phase length, the same for both.
    starters: dict[str, Callable[[], ServerProc]] = {
        "ours-durable": lambda: start_ours(data_dir=tmp / "ours", long_poll_timeout=20),
        "ours-memory": lambda: start_ours(long_poll_timeout=20),
        "ref-file": lambda: start_reference(data_dir=tmp / "ref", long_poll_timeout=20),
        "ref-memory": lambda: start_reference(long_poll_timeout=20),
        # The cost of metrics: the same servers with `--no-metrics` (compare with ours-*).
        "ours-durable-nometrics": lambda: start_ours(
            data_dir=tmp / "ours-nm", long_poll_timeout=20, extra=["--no-metrics"]
        ),
        "ours-memory-nometrics": lambda: start_ours(long_poll_timeout=20, extra=["--no-metrics"]),
    }
    ctx = mp.get_context("spawn")
    try:
        with ctx.Pool(cfg.procs) as pool:
            results = run_all({n: starters[n] for n in names}, cfg, pool)
    finally:
        # The servers are stopped by now: their data (100k-message streams) goes too.
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        f"durasync streams bench — {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{os.cpu_count()} CPUs, load generator {cfg.procs} processes; "
        f"append phases {cfg.duration:.0f} s, catch-up {cfg.catchup_messages} msgs, "
        f"tail {cfg.tail_readers}+{cfg.tail_readers} readers {cfg.tail_duration:.0f} s; "
        f"median of {cfg.reps} interleaved runs"
    )
    print_table(results)
    print_metrics_cost(results)
    print()
    for line in check_targets(results):
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"config": cfg.__dict__, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
