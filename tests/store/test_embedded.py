"""EmbeddedStore specifics: recovery on reopen, group commit, locking, failures."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from durasync.store import (
    CreateResult,
    DataGone,
    EmbeddedStore,
    Producer,
    ProducerSeqAhead,
    StoreUnavailable,
    StreamClosed,
    StreamConfig,
    open_store,
)
from durasync.store.engine import Engine
from durasync.store.offsets import encode_offset

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

    async with EmbeddedStore(tmp_path) as store:
        result = await store.read("/a")
        assert [e.data for e in result.entries] == [b"x", b"y", b"z"]
        assert result.closed and result.next_offset == tail
        with pytest.raises(StreamClosed):
            await store.append("/a", [b"more"])
        with pytest.raises(DataGone):
            await store.head("/src")
        assert [e.data for e in (await store.read("/fork")).entries] == [b"s"]
        await store.create("/b", TEXT)
        # Producer state was persisted with the data: seq 1 is next, 5 is a gap.
        await store.create("/p", TEXT)
        await store.append("/p", [b"0"], producer=Producer("w", 0, 0))
    async with EmbeddedStore(tmp_path) as store:
        with pytest.raises(ProducerSeqAhead):
            await store.append("/p", [b"5"], producer=Producer("w", 0, 5))
        dup = await store.append("/p", [b"0"], producer=Producer("w", 0, 0))
        assert dup.status == "duplicate"


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    async with EmbeddedStore(tmp_path) as store:
        await store.create("/g", TEXT)
        before = store.commits
        results = await asyncio.gather(*(store.append("/g", [b"%d" % i]) for i in range(64)))
        commits = store.commits - before
        assert len({r.offsets[0] for r in results}) == 64
        # 64 appends queued at once cannot need 64 fsyncs.
        assert commits < 32, commits


async def test_backpressure_bounds_pending_writes(tmp_path: Path) -> None:
    async with EmbeddedStore(tmp_path, max_pending=2, max_batch=3) as store:
        await store.create("/bp", TEXT)
        await asyncio.gather(*(store.append("/bp", [b"x"]) for _ in range(50)))
        assert (await store.head("/bp")).message_count == 50


async def test_data_path_that_is_a_file_says_not_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(StoreUnavailable, match=r"file: not a directory$"):
        await EmbeddedStore(path).open()


async def test_second_process_cannot_open_the_same_directory(tmp_path: Path) -> None:
    first = EmbeddedStore(tmp_path)
    await first.open()
    try:
        with pytest.raises(StoreUnavailable):
            await EmbeddedStore(tmp_path).open()
    finally:
        await first.close()


async def test_failed_batch_rolls_back_and_fails_every_op(tmp_path: Path) -> None:
    async with EmbeddedStore(tmp_path) as store:
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


async def test_one_batch_of_mixed_writes_applies_in_order(tmp_path: Path) -> None:
    """Buffered rows are written in order around reads, deletes and trims of the same batch."""
    async with EmbeddedStore(tmp_path) as store:
        await store.create("/d", TEXT)
        gate = threading.Event()
        started = threading.Event()

        def hold(engine: Engine) -> None:
            started.set()
            gate.wait(10)

        held = asyncio.create_task(store._submit(hold))
        assert await asyncio.to_thread(started.wait, 10)
        many = [b"m%03d" % i for i in range(150)]  # more than one multi-row INSERT
        ops = [
            store.append("/d", [b"gone"], producer=Producer("p", 0, 0)),
            store.delete("/d"),
            store.create("/d", TEXT, initial=[b"new"]),
            store.append("/d", [b"again"], producer=Producer("p", 0, 0)),
            store.create("/src", TEXT, initial=many),
            # The fork point is checked against rows written earlier in this batch.
            store.create("/fork", StreamConfig(content_type="", forked_from="/src")),
            store.append("/src", [b"after-fork"]),
            store.create("/t", TEXT, initial=many),
            # Trims rows that are still buffered in this batch (4 bytes each).
            store.trim("/t", encode_offset(100, 400)),
        ]
        tasks = [asyncio.create_task(op) for op in ops]
        await asyncio.sleep(0)
        assert store._queue.qsize() == len(ops)
        commits = store.commits
        gate.set()
        await held
        results = await asyncio.gather(*tasks)
        assert store.commits == commits + 2  # the held op's batch, then all of these in one
        fork_created = results[5]
        assert isinstance(fork_created, CreateResult) and fork_created.created
        assert results[8] == 100

    async with EmbeddedStore(tmp_path) as store:
        assert [e.data for e in (await store.read("/d")).entries] == [b"new", b"again"]
        # The producer state written before the delete did not survive it.
        dup = await store.append("/d", [b"again"], producer=Producer("p", 0, 0))
        assert dup.status == "duplicate"
        src = await store.read("/src", max_messages=1000)
        assert [e.data for e in src.entries] == [*many, b"after-fork"]
        fork = await store.read("/fork", max_messages=1000)
        assert [e.data for e in fork.entries] == many
        t = await store.read("/t", max_messages=1000)
        assert [e.data for e in t.entries] == many[100:]


async def test_a_lone_writer_never_waits_for_the_commit_window(tmp_path: Path) -> None:
    # A window far longer than any fsync: if a lone writer waited for it,
    # 20 sequential appends would take at least 20 s (the bound below leaves
    # 0.5 s per append for fsync on a loaded machine).
    async with EmbeddedStore(tmp_path, commit_window=1.0) as store:
        await store.create("/w", TEXT)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(20):
            await store.append("/w", [b"%d" % i])
        assert loop.time() - started < 10.0
        assert store.commits >= 21  # one commit per sequential append


async def test_the_commit_window_gathers_writers_in_flight(tmp_path: Path) -> None:
    # After a batch of 9 that took ~0.3 s to commit, the next first arrival
    # waits (up to min(window, 0.3 s)) for the others in flight, even when
    # they arrive one by one: 8 staggered appends share one commit.
    async with EmbeddedStore(tmp_path, commit_window=0.5) as store:
        await store.create("/g", TEXT)
        gate = threading.Event()
        started = threading.Event()

        def hold(engine: Engine) -> None:
            started.set()
            gate.wait(10)

        def slow(engine: Engine) -> None:
            threading.Event().wait(0.3)

        held = asyncio.create_task(store._submit(hold))
        assert await asyncio.to_thread(started.wait, 10)
        first: list[asyncio.Task[object]] = [
            asyncio.create_task(store.append("/g", [b"a"])) for _ in range(8)
        ]
        first.append(asyncio.create_task(store._submit(slow)))
        await asyncio.sleep(0)
        gate.set()
        await held
        await asyncio.gather(*first)
        commits = store.commits
        tasks = []
        for _ in range(8):
            tasks.append(asyncio.create_task(store.append("/g", [b"b"])))
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
        assert store.commits - commits == 1, store.commits - commits
        assert (await store.head("/g")).message_count == 16


async def test_one_batch_touching_many_streams_persists_every_stream(tmp_path: Path) -> None:
    # More streams than one multi-row metadata statement holds.
    async with EmbeddedStore(tmp_path) as store:
        gate = threading.Event()
        started = threading.Event()

        def hold(engine: Engine) -> None:
            started.set()
            gate.wait(10)

        held = asyncio.create_task(store._submit(hold))
        assert await asyncio.to_thread(started.wait, 10)
        tasks = [
            asyncio.create_task(store.create(f"/many/{i}", TEXT, initial=[b"%d" % i]))
            for i in range(150)
        ]
        await asyncio.sleep(0)
        assert store._queue.qsize() == 150
        gate.set()
        await held
        await asyncio.gather(*tasks)
    async with EmbeddedStore(tmp_path) as store:
        listed = await store.list_streams("/many/")
        assert len(listed) == 150
        for i in (0, 63, 64, 127, 128, 149):
            assert [e.data for e in (await store.read(f"/many/{i}")).entries] == [b"%d" % i]
