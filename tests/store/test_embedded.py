"""EmbeddedStore specifics: recovery on reopen, group commit, locking, failures."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from durasync.store import (
    EmbeddedStore,
    Producer,
    ProducerSeqGap,
    StoreUnavailable,
    StreamClosed,
    StreamConfig,
    StreamGone,
    open_store,
)
from durasync.store.engine import Engine

TEXT = StreamConfig(content_type="text/plain")


async def test_everything_survives_reopen(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    await store.open()
    await store.create("/a", TEXT, initial=[b"x"])
    await store.append("/a", [b"y"], producer=Producer("w", 3, 0), stream_seq="k")
    await store.append("/a", [b"z"], close=True)
    await store.create("/src", TEXT, initial=[b"s"])
    await store.create("/fork", StreamConfig(content_type="", forked_from="/src"))
    await store.delete("/src")
    tail = (await store.head("/a")).tail
    await store.close()

    store = EmbeddedStore(tmp_path)
    await store.open()
    try:
        result = await store.read("/a")
        assert [e.data for e in result.entries] == [b"x", b"y", b"z"]
        assert result.closed and result.next_offset == tail
        with pytest.raises(StreamClosed):
            await store.append("/a", [b"more"])
        with pytest.raises(StreamGone):
            await store.head("/src")
        assert [e.data for e in (await store.read("/fork")).entries] == [b"s"]
        await store.create("/b", TEXT)
        # Producer state was persisted with the data: seq 1 is next, 5 is a gap.
        await store.create("/p", TEXT)
        await store.append("/p", [b"0"], producer=Producer("w", 0, 0))
    finally:
        await store.close()
    store = EmbeddedStore(tmp_path)
    await store.open()
    try:
        with pytest.raises(ProducerSeqGap):
            await store.append("/p", [b"5"], producer=Producer("w", 0, 5))
        dup = await store.append("/p", [b"0"], producer=Producer("w", 0, 0))
        assert dup.status == "duplicate"
    finally:
        await store.close()


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    await store.open()
    try:
        await store.create("/g", TEXT)
        before = store.commits
        results = await asyncio.gather(*(store.append("/g", [b"%d" % i]) for i in range(64)))
        commits = store.commits - before
        assert len({r.offsets[0] for r in results}) == 64
        # 64 appends queued at once cannot need 64 fsyncs.
        assert commits < 32, commits
    finally:
        await store.close()


async def test_backpressure_bounds_pending_writes(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path, max_pending=2, max_batch=3)
    await store.open()
    try:
        await store.create("/bp", TEXT)
        await asyncio.gather(*(store.append("/bp", [b"x"]) for _ in range(50)))
        assert (await store.head("/bp")).message_count == 50
    finally:
        await store.close()


async def test_second_process_cannot_open_the_same_directory(tmp_path: Path) -> None:
    first = EmbeddedStore(tmp_path)
    await first.open()
    try:
        with pytest.raises(StoreUnavailable):
            await EmbeddedStore(tmp_path).open()
    finally:
        await first.close()


async def test_failed_batch_rolls_back_and_fails_every_op(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    await store.open()
    try:
        await store.create("/f", TEXT)

        gate = threading.Event()
        started = threading.Event()

        def hold(engine: Engine) -> None:
            started.set()
            gate.wait(10)

        def boom(engine: Engine) -> None:
            raise RuntimeError("disk on fire")

        # Keep the writer busy so the append and the failing op are queued
        # into the same next batch: both fail, and the append is rolled back,
        # in memory as on disk.
        held = asyncio.create_task(store._submit(hold))
        assert await asyncio.to_thread(started.wait, 10)
        tasks = [
            asyncio.create_task(store.append("/f", [b"lost"])),
            asyncio.create_task(store._submit(boom)),
        ]
        await asyncio.sleep(0)  # let both tasks run up to their queue.put
        assert store._queue.qsize() == 2
        gate.set()
        await held
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert (await store.head("/f")).message_count == 0
        ok = await store.append("/f", [b"kept"])
        assert ok.status == "appended"
        assert [e.data for e in (await store.read("/f")).entries] == [b"kept"]
    finally:
        await store.close()


async def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = open_store(data_dir=tmp_path)
    assert isinstance(store, EmbeddedStore)
    await store.open()
    await store.create("/c", TEXT)
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.append("/c", [b"x"])
    with pytest.raises(StoreUnavailable):
        await store.read("/c")
    assert await store.wait_for("/c", "now", 1.0) is False
