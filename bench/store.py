"""Store benchmark: fsync'd appends/s with 1, 8 and 64 concurrent writers.

    .venv/bin/python bench/store.py [--seconds 3] [--writers 1,8,64] [--stores redis,...]

Rows:

- ``embedded``: :class:`durasync.store.EmbeddedStore` (SQLite WAL,
  ``synchronous=FULL``, group commit), every append acknowledged after fsync.
- ``segment``: a minimal append-only segment-file prototype with the same
  group commit (one writer thread; each batch = ``write`` of length-prefixed
  records + ``os.fsync``). No index, no metadata, no producer state: it is the
  ceiling a segment-file design could reach, to judge whether SQLite costs much.
- ``memory``: :class:`durasync.store.MemoryStore`, no durability (reference).
- ``redis``: :class:`durasync.store.RedisStore` on a ``redis-server`` the bench
  starts on a free loopback port (tests/redisproc.py: AOF, ``appendfsync
  always``, so an acknowledged append is fsync'd), with a second store on the
  same Redis subscribed as another node would be.

Each writer appends 200-byte messages, one per append, to its own stream, as
fast as acknowledgements come back. ``cpu us`` is this process's CPU time per
append (the store's own threads included; redis-server's not). Not part of the
test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

from durasync.store import EmbeddedStore, LogStore, MemoryStore, RedisStore, StreamConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from redisproc import RedisServer

STORES = ("embedded", "segment", "memory", "redis")

PAYLOAD = b'{"k":"' + b"x" * 192 + b'"}'
assert len(PAYLOAD) == 200


class SegmentPrototype:
    """Append-only file + group commit, for comparison only (see module doc)."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._queue: queue.SimpleQueue[tuple[bytes, asyncio.Future[int]] | None] = (
            queue.SimpleQueue()
        )
        self._loop = asyncio.get_running_loop()
        self._pos = 0
        self.commits = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < 1024:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            buf = b"".join(struct.pack(">I", len(d)) + d for d, _ in batch)
            os.write(self._fd, buf)
            os.fsync(self._fd)
            self.commits += 1
            results = []
            for data, fut in batch:
                self._pos += 4 + len(data)
                results.append((fut, self._pos))
            self._loop.call_soon_threadsafe(_resolve, results)

    async def append(self, data: bytes) -> int:
        fut: asyncio.Future[int] = self._loop.create_future()
        self._queue.put((data, fut))
        return await fut

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        os.close(self._fd)


def _resolve(results: list[tuple[asyncio.Future[int], int]]) -> None:
    for fut, pos in results:
        fut.set_result(pos)


async def _drive(writers: int, seconds: float, append_one: object) -> tuple[int, list[float]]:
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    count = 0

    async def writer(w: int) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await append_one(w)  # type: ignore[operator]
            latencies.append(time.perf_counter() - t)
            count += 1

    await asyncio.gather(*(writer(w) for w in range(writers)))
    return count, latencies


async def bench_store(
    kind: str, writers: int, seconds: float, tmp: Path, redis_url: str | None = None
) -> dict[str, float]:
    store: LogStore
    other: LogStore | None = None
    if kind == "embedded":
        store = EmbeddedStore(tmp / f"{kind}-{writers}")
    elif kind == "redis":
        assert redis_url is not None
        # A second node on the same Redis: every append's tail message reaches it too.
        store, other = RedisStore(redis_url), RedisStore(redis_url)
        await other.open()
    else:
        store = MemoryStore()
    await store.open()
    try:
        for w in range(writers):
            await store.create(f"/b/{writers}/{w}", StreamConfig(content_type="application/json"))

        async def one(w: int) -> None:
            await store.append(f"/b/{writers}/{w}", [PAYLOAD])

        start = time.perf_counter()
        cpu = time.process_time()
        count, lat = await _drive(writers, seconds, one)
        cpu = time.process_time() - cpu
        elapsed = time.perf_counter() - start
        commits = store.commits if isinstance(store, EmbeddedStore) else 0
    finally:
        await store.close()
        if other is not None:
            await other.close()
    return _row(count, elapsed, lat, commits, cpu)


async def bench_segment(writers: int, seconds: float, tmp: Path) -> dict[str, float]:
    seg = SegmentPrototype(tmp / f"segment-{writers}.log")
    try:

        async def one(w: int) -> None:
            await seg.append(PAYLOAD)

        start = time.perf_counter()
        cpu = time.process_time()
        count, lat = await _drive(writers, seconds, one)
        cpu = time.process_time() - cpu
        elapsed = time.perf_counter() - start
    finally:
        seg.close()
    return _row(count, elapsed, lat, seg.commits, cpu)


def _row(
    count: int, elapsed: float, lat: list[float], commits: int, cpu: float
) -> dict[str, float]:
    lat.sort()
    return {
        "appends_s": count / elapsed,
        "per_commit": count / commits if commits else 0.0,
        "cpu_us": cpu / count * 1e6 if count else 0.0,
        "p50_ms": statistics.median(lat) * 1000 if lat else 0.0,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0.0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--writers", default="1,8,64")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    parser.add_argument("--stores", default=",".join(STORES), help="rows to run, in this order")
    args = parser.parse_args()
    counts = [int(x) for x in args.writers.split(",")]
    kinds = args.stores.split(",")
    if unknown := set(kinds) - set(STORES):
        parser.error(f"unknown stores: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmpdir:
        tmp = Path(tmpdir)
        redis = RedisServer(tmp / "redis") if "redis" in kinds else None
        try:
            header = f"{'store':<10} {'writers':>7} {'appends/s':>10} {'per fsync':>9}"
            print(f"{header} {'p50 ms':>8} {'p99 ms':>8} {'cpu us':>7}")
            for writers in counts:
                for kind in kinds:
                    if kind == "segment":
                        row = await bench_segment(writers, args.seconds, tmp)
                    else:
                        url = redis.url if redis is not None else None
                        row = await bench_store(kind, writers, args.seconds, tmp, url)
                    print(
                        f"{kind:<10} {writers:>7} {row['appends_s']:>10.0f}"
                        f" {row['per_commit']:>9.1f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
                        f" {row['cpu_us']:>7.1f}",
                        flush=True,
                    )
        finally:
            if redis is not None:
                redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
