"""Crash-safety harness for the embedded store (used by tests and bench/crash.py).

``python crash_writer.py DATA_DIR SPEC_JSON`` opens an EmbeddedStore and runs
the writers of SPEC concurrently until killed. After every acknowledged
append it prints ``ACK <writer> <batch> <offset,...>`` (flushed), so the
parent knows exactly what was acknowledged before its SIGKILL.

Writers: ``{"id": str, "stream": str, "producer": bool, "start": int}``.
A producer writer sends batch ``n`` as producer seq ``n`` (epoch 0) and starts
at ``start``, the first batch its previous incarnation did not see acked: that
retry must be deduplicated if it was in fact committed. A plain writer's
batches are numbered from ``start`` too (fresh ids each round). Batch ``n``
of writer ``w`` holds 1-3 messages ``w:n:j``.

:func:`run_rounds` drives several kill/restart rounds and :func:`verify`
checks the invariants: every acknowledged batch present exactly once, whole
(no partial batch), in acknowledgement order, at the offsets acknowledged;
producer batches never duplicated.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve()


def batch_messages(writer: str, n: int) -> list[bytes]:
    """Deterministic content of batch ``n`` (so a retry resends the same bytes)."""
    size = 1 + (len(writer) + n) % 3
    return [f"{writer}:{n}:{j}".encode() for j in range(size)]


async def _writer_main(data_dir: Path, spec: list[dict[str, object]]) -> None:
    from durasync.store import EmbeddedStore, Producer, StreamConfig

    store = EmbeddedStore(data_dir)
    await store.open()
    for stream in sorted({str(w["stream"]) for w in spec}):
        await store.create(stream, StreamConfig(content_type="text/plain"))
    out = sys.stdout
    out.write("READY\n")
    out.flush()

    async def run(w: dict[str, object]) -> None:
        wid, stream = str(w["id"]), str(w["stream"])
        n = int(str(w["start"]))
        while True:
            producer = Producer(wid, 0, n) if w["producer"] else None
            result = await store.append(stream, batch_messages(wid, n), producer=producer)
            offsets = ",".join(result.offsets) or "-"
            out.write(f"ACK {wid} {n} {result.status} {offsets}\n")
            out.flush()
            n += 1

    await asyncio.gather(*(run(w) for w in spec))


@dataclass
class WriterState:
    id: str
    stream: str
    producer: bool
    next_batch: int = 0
    #: (batch, offsets) acknowledged, in acknowledgement order.
    acked: list[tuple[int, list[str]]] = field(default_factory=list)


def run_round(data_dir: Path, writers: list[WriterState], kill_after: float) -> int:
    """One incarnation: start the writer process, SIGKILL it, record acks."""
    spec = [
        {"id": w.id, "stream": w.stream, "producer": w.producer, "start": w.next_batch}
        for w in writers
    ]
    proc = subprocess.Popen(
        [sys.executable, str(HERE), str(data_dir), json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    by_id = {w.id: w for w in writers}
    acks = 0
    try:
        line = proc.stdout.readline()
        if line.strip() != "READY":
            raise AssertionError(f"writer did not start: {line!r}")
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
        reader.start()
        # The random moment of the crash (not a synchronisation wait).
        time.sleep(kill_after)
        if proc.poll() is not None:
            raise AssertionError("writer exited before it was killed")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        reader.join(10)
        buffer = "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # Only complete lines are acknowledgements (a torn last line is not).
    for line in buffer.split("\n")[:-1]:
        parts = line.split()
        if not parts or parts[0] != "ACK":
            continue
        _, wid, batch, status, offsets = parts
        w = by_id[wid]
        if status == "appended":
            w.acked.append((int(batch), offsets.split(",")))
        w.next_batch = int(batch) + 1
        acks += 1
    return acks


async def verify(data_dir: Path, writers: list[WriterState]) -> int:
    """Reopen the store and check every invariant; returns messages checked."""
    from durasync.store import EmbeddedStore

    store = EmbeddedStore(data_dir)
    await store.open()
    try:
        streams: dict[str, list[tuple[bytes, str]]] = {}
        for stream in sorted({w.stream for w in writers}):
            items: list[tuple[bytes, str]] = []
            offset = "-1"
            while True:
                result = await store.read(stream, offset)
                items.extend((e.data, e.offset) for e in result.entries)
                offset = result.next_offset
                if result.up_to_date:
                    break
            streams[stream] = items
    finally:
        await store.close()
    checked = 0
    for w in writers:
        items = streams[w.stream]
        offset_of = {data: off for data, off in items}
        assert len(offset_of) == len(items), f"{w.stream}: a message is stored twice"
        mine = [data.decode() for data, _ in items if data.decode().split(":")[0] == w.id]
        # Group into batches in stored order; every batch must be whole and contiguous.
        batches: list[int] = []
        parts: dict[int, list[int]] = {}
        for text in mine:
            _, batch_text, part_text = text.split(":")
            if part_text == "0":
                batches.append(int(batch_text))
            parts.setdefault(int(batch_text), []).append(int(part_text))
        for batch, got in parts.items():
            size = len(batch_messages(w.id, batch))
            assert got == list(range(size)), f"{w.id}: batch {batch} is partial: {got}"
        assert len(batches) == len(set(batches)), f"{w.id}: a batch is stored twice"
        assert batches == sorted(batches), f"{w.id}: batches out of order {batches}"
        if w.producer:
            # Exactly once with retries: batches are exactly 0..k, no gap.
            assert batches == list(range(len(batches))), f"{w.id}: {batches}"
        for n, offsets in w.acked:
            expected = batch_messages(w.id, n)
            stored = [offset_of.get(m) for m in expected]
            assert stored == offsets, f"{w.id}: acked batch {n} at {offsets}, stored {stored}"
            checked += len(expected)
    return checked


def make_writers(round_no: int, producers: bool, prior: list[WriterState]) -> list[WriterState]:
    """Producer writers persist across rounds (they resume); plain ones are fresh."""
    if producers and prior:
        return prior
    kind = "p" if producers else f"r{round_no}"
    return [
        WriterState(id=f"{kind}w{i}", stream="/shared" if i % 2 else f"/own{i}", producer=producers)
        for i in range(6)
    ]


def run_rounds(
    data_dir: Path, rounds: int, *, seed: int, max_kill_after: float = 0.4
) -> dict[str, int]:
    """Alternate plain and producer rounds, verifying after each. Returns totals."""
    rng = random.Random(seed)
    plain_all: list[WriterState] = []
    producers: list[WriterState] = []
    acks = checked = 0
    for r in range(rounds):
        use_producers = r % 2 == 1
        if use_producers:
            producers = make_writers(r, True, producers)
            writers = producers
        else:
            writers = make_writers(r, False, [])
            plain_all.extend(writers)
        acks += run_round(data_dir, writers, rng.uniform(0.05, max_kill_after))
        checked = asyncio.run(verify(data_dir, plain_all + producers))
    return {"rounds": rounds, "acks": acks, "messages_checked": checked}


if __name__ == "__main__":
    asyncio.run(_writer_main(Path(sys.argv[1]), json.loads(sys.argv[2])))
