"""SIGKILL the real server while HTTP writers append; used by test_crash.py and bench/crash.py.

Each round starts ``durasync serve --data DIR --port 0``, runs concurrent
writers (own and shared ``application/json`` streams; batches of 1-3 JSON
values per POST), kills the server with SIGKILL at a random moment and
records which POSTs were acknowledged (2xx). Producer rounds send
``Producer-Id/Epoch/Seq`` and, after a restart, first retry the batch whose
acknowledgement they did not see: the server must answer 200 or 204
(duplicate) and store it once. :func:`verify` restarts the server and reads
every stream back over HTTP: every acknowledged batch present exactly once,
whole, in order; producer batches contiguous from 0; and for writers alone on
their stream, the acknowledged ``Stream-Next-Offset`` resumes exactly after
their batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from helpers import ServerProcess

STREAM_ROOT = "/v1/stream"


def batch_values(writer: str, n: int) -> list[dict[str, object]]:
    return [{"w": writer, "n": n, "j": j} for j in range(1 + (len(writer) + n) % 3)]


@dataclass
class HttpWriter:
    id: str
    stream: str
    producer: bool
    alone: bool
    next_batch: int = 0
    #: (batch, Stream-Next-Offset after it), in acknowledgement order.
    acked: list[tuple[int, str]] = field(default_factory=list)


def start(data_dir: Path) -> ServerProcess:
    return ServerProcess(["--data", str(data_dir), "--port", "0", "--long-poll-timeout", "0.5"])


async def _ensure_streams(client: httpx.AsyncClient, streams: set[str]) -> None:
    for stream in sorted(streams):
        r = await client.put(f"{STREAM_ROOT}{stream}", headers={"Content-Type": "application/json"})
        if r.status_code not in (200, 201):
            raise AssertionError(f"PUT {stream}: {r.status_code} {r.text}")


async def _write(client: httpx.AsyncClient, w: HttpWriter, stop: asyncio.Event) -> None:
    while not stop.is_set():
        n = w.next_batch
        headers = {"Content-Type": "application/json"}
        if w.producer:
            headers |= {"Producer-Id": w.id, "Producer-Epoch": "0", "Producer-Seq": str(n)}
        try:
            r = await client.post(
                f"{STREAM_ROOT}{w.stream}",
                content=json.dumps(batch_values(w.id, n)),
                headers=headers,
            )
        except httpx.HTTPError:
            return  # the server died: this batch is not acknowledged
        if r.status_code == 204 and w.producer:
            w.next_batch = n + 1  # duplicate of a batch committed before the crash
            continue
        if r.status_code not in (200, 204):
            raise AssertionError(f"POST {w.stream} -> {r.status_code} {r.text}")
        w.acked.append((n, r.headers["Stream-Next-Offset"]))
        w.next_batch = n + 1


async def run_round(data_dir: Path, writers: list[HttpWriter], kill_after: float) -> int:
    """One server incarnation, killed with SIGKILL after ``kill_after`` s of writes."""
    server = start(data_dir)
    before = sum(len(w.acked) for w in writers)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
            await _ensure_streams(client, {w.stream for w in writers})
            stop = asyncio.Event()
            tasks = [asyncio.create_task(_write(client, w, stop)) for w in writers]
            # The random crash moment (not a synchronisation wait).
            await asyncio.sleep(kill_after)
            server.proc.send_signal(signal.SIGKILL)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 15)
    finally:
        with contextlib.suppress(Exception):
            server.stop(signal.SIGKILL)
    return sum(len(w.acked) for w in writers) - before


async def _read_all(client: httpx.AsyncClient, stream: str, offset: str = "-1") -> list[dict]:  # type: ignore[type-arg]
    items: list[dict] = []  # type: ignore[type-arg]
    for _ in range(100_000):
        r = await client.get(f"{STREAM_ROOT}{stream}", params={"offset": offset})
        if r.status_code != 200:
            raise AssertionError(f"GET {stream}@{offset}: {r.status_code} {r.text}")
        items.extend(r.json())
        offset = r.headers["Stream-Next-Offset"]
        if r.headers.get("Stream-Up-To-Date") == "true":
            return items
    raise AssertionError("read did not reach the tail")


async def verify(data_dir: Path, writers: list[HttpWriter]) -> int:
    """Restart the server and check every invariant; returns batches checked."""
    server = start(data_dir)
    checked = 0
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
            streams = {w.stream: await _read_all(client, w.stream) for w in writers}
            for w in writers:
                mine = [(v["n"], v["j"]) for v in streams[w.stream] if v["w"] == w.id]
                assert len(mine) == len(set(mine)), f"{w.id}: a value is stored twice"
                batches = [n for n, j in mine if j == 0]
                for n in batches:
                    size = len(batch_values(w.id, n))
                    got = [j for m, j in mine if m == n]
                    assert got == list(range(size)), f"{w.id}: batch {n} partial {got}"
                assert batches == sorted(batches), f"{w.id}: out of order {batches}"
                stored = set(batches)
                for n, _ in w.acked:
                    assert n in stored, f"{w.id}: acknowledged batch {n} lost"
                if w.producer:
                    assert batches == list(range(len(batches))), f"{w.id}: {batches}"
                if w.alone:
                    for n, next_offset in random.sample(w.acked, min(3, len(w.acked))):
                        rest = await _read_all(client, w.stream, next_offset)
                        firsts = [v["n"] for v in rest if v["j"] == 0]
                        assert firsts == [b for b in batches if b > n], f"{w.id}: resume at {n}"
                checked += len(w.acked)
    finally:
        code = server.stop()
        assert code == 0, f"server exit code {code}"
    return checked


def make_writers(tag: str, producers: bool) -> list[HttpWriter]:
    return [
        HttpWriter(
            id=f"{tag}w{i}",
            stream=f"/crash/shared-{tag}" if i % 2 else f"/crash/{tag}-own{i}",
            producer=producers,
            alone=not i % 2,
        )
        for i in range(6)
    ]


async def run_rounds(
    data_dir: Path, rounds: int, *, seed: int, max_kill_after: float = 0.6
) -> dict[str, int]:
    """Alternate plain and producer rounds (producers resume across kills)."""
    rng = random.Random(seed)
    everyone: list[HttpWriter] = []
    producers = make_writers("p", True)
    everyone.extend(producers)
    acks = 0
    for r in range(rounds):
        if r % 2:
            writers = producers
        else:
            writers = make_writers(f"r{r}", False)
            everyone.extend(writers)
        acks += await run_round(data_dir, writers, rng.uniform(0.1, max_kill_after))
    checked = await verify(data_dir, everyone)
    return {"rounds": rounds, "acks": acks, "batches_checked": checked}
