"""The LogStore contract, run against every backend.

Each test states one rule of the store interface (base.py) or of the Durable
Streams protocol (shared/reference/durable-streams-protocol.md, "DS") at
store level. Backends are parametrised by the ``store`` fixture (conftest).
"""

from __future__ import annotations

import asyncio

import pytest

from durasync.store import (
    OFFSET_NOW,
    OFFSET_START,
    BadOffset,
    ContentTypeMismatch,
    DataGone,
    LogStore,
    NoSuchStream,
    Producer,
    ProducerBadEpochStart,
    ProducerSeqAhead,
    SeqConflict,
    StaleProducerEpoch,
    StreamClosed,
    StreamConfig,
    StreamExists,
    TailMismatch,
)
from durasync.store.offsets import ZERO_OFFSET, decode_offset
from helpers import eventually

from .conftest import waiting

TEXT = StreamConfig(content_type="text/plain")
JSON = StreamConfig(content_type="application/json")


async def all_data(store: LogStore, path: str, offset: str = OFFSET_START) -> list[bytes]:
    result = await store.read(path, offset)
    return [e.data for e in result.entries]


# -- create ---------------------------------------------------------------------


async def test_create_is_idempotent_and_detects_conflicts(store: LogStore) -> None:
    first = await store.create("/a", TEXT, initial=[b"x"])
    assert first.created and first.info.message_count == 1
    again = await store.create("/a", StreamConfig(content_type="TEXT/PLAIN; charset=utf-8"))
    assert not again.created and again.info.tail == first.info.tail
    with pytest.raises(StreamExists):
        await store.create("/a", JSON)
    with pytest.raises(StreamExists):
        await store.create("/a", StreamConfig(content_type="text/plain", ttl_seconds=10))
    with pytest.raises(StreamExists):
        await store.create("/a", TEXT, closed=True)


async def test_create_closed_and_closure_mismatch(store: LogStore) -> None:
    created = await store.create("/c", TEXT, initial=[b"all"], closed=True)
    assert created.info.closed
    assert (await store.create("/c", TEXT, closed=True)).created is False
    # DS §2 PUT: a plain PUT to a closed stream conflicts.
    with pytest.raises(StreamExists):
        await store.create("/c", TEXT)
    result = await store.read("/c")
    assert [e.data for e in result.entries] == [b"all"]
    assert result.closed and result.up_to_date


async def test_initial_offsets_start_at_zero_and_head(store: LogStore) -> None:
    created = await store.create("/h", TEXT, initial=[b"ab", b"cde"])
    assert created.info.start == ZERO_OFFSET
    assert decode_offset(created.info.tail) == (2, 5)
    info = await store.head("/h")
    assert info.byte_count == 5 and info.message_count == 2
    assert info.config.content_type == "text/plain"
    with pytest.raises(NoSuchStream):
        await store.head("/missing")


# -- append ---------------------------------------------------------------------


async def test_append_returns_increasing_offsets_and_reads_back(store: LogStore) -> None:
    await store.create("/s", TEXT)
    r1 = await store.append("/s", [b"one", b"two"], content_type="text/plain")
    r2 = await store.append("/s", [b"three"])
    assert r1.status == "appended" and len(r1.offsets) == 2
    offsets = [*r1.offsets, *r2.offsets, r2.tail]
    assert offsets == sorted(offsets) and len(set(offsets)) == 4
    result = await store.read("/s")
    assert [e.data for e in result.entries] == [b"one", b"two", b"three"]
    assert [e.offset for e in result.entries] == offsets[:3]
    assert result.next_offset == r2.tail and result.up_to_date and not result.closed
    # Resume from any boundary.
    assert await all_data(store, "/s", r1.offsets[1]) == [b"two", b"three"]
    tail_read = await store.read("/s", r2.tail)
    assert tail_read.entries == [] and tail_read.next_offset == r2.tail and tail_read.up_to_date


async def test_append_to_missing_stream(store: LogStore) -> None:
    with pytest.raises(NoSuchStream):
        await store.append("/nope", [b"x"])


async def test_content_type_mismatch_is_case_insensitive_media_type(store: LogStore) -> None:
    await store.create("/ct", TEXT)
    await store.append("/ct", [b"a"], content_type="TEXT/PLAIN; charset=utf-8")
    with pytest.raises(ContentTypeMismatch):
        await store.append("/ct", [b"b"], content_type="application/json")


async def test_stream_seq_must_increase_lexicographically(store: LogStore) -> None:
    await store.create("/q", TEXT)
    await store.append("/q", [b"1"], stream_seq="a")
    await store.append("/q", [b"2"], stream_seq="b")
    with pytest.raises(SeqConflict):
        await store.append("/q", [b"3"], stream_seq="b")
    with pytest.raises(SeqConflict):
        await store.append("/q", [b"3"], stream_seq="a9")
    await store.append("/q", [b"3"], stream_seq="ba")
    # "10" < "9" byte-wise: lexicographic, not numeric.
    await store.create("/q2", TEXT)
    await store.append("/q2", [b"x"], stream_seq="9")
    with pytest.raises(SeqConflict):
        await store.append("/q2", [b"y"], stream_seq="10")


# -- producers (DS §3) ------------------------------------------------------------


async def test_producer_accept_duplicate_gap(store: LogStore) -> None:
    await store.create("/p", TEXT)
    r0 = await store.append("/p", [b"a"], producer=Producer("w", 0, 0))
    assert r0.status == "appended" and (r0.producer_epoch, r0.producer_seq) == (0, 0)
    r1 = await store.append("/p", [b"b"], producer=Producer("w", 0, 1))
    assert r1.status == "appended" and r1.producer_seq == 1
    dup = await store.append("/p", [b"b"], producer=Producer("w", 0, 1))
    assert dup.status == "duplicate" and dup.offsets == [] and dup.producer_seq == 1
    old = await store.append("/p", [b"a"], producer=Producer("w", 0, 0))
    assert old.status == "duplicate"
    with pytest.raises(ProducerSeqAhead) as gap:
        await store.append("/p", [b"d"], producer=Producer("w", 0, 3))
    assert (gap.value.expected, gap.value.received) == (2, 3)
    assert await all_data(store, "/p") == [b"a", b"b"]


async def test_producer_unknown_must_start_at_zero(store: LogStore) -> None:
    await store.create("/p0", TEXT)
    with pytest.raises(ProducerSeqAhead) as gap:
        await store.append("/p0", [b"a"], producer=Producer("new", 0, 5))
    assert gap.value.expected == 0


async def test_producer_epochs_fence_zombies(store: LogStore) -> None:
    await store.create("/e", TEXT)
    await store.append("/e", [b"a"], producer=Producer("w", 1, 0))
    with pytest.raises(StaleProducerEpoch) as fenced:
        await store.append("/e", [b"z"], producer=Producer("w", 0, 1))
    assert fenced.value.current_epoch == 1
    with pytest.raises(ProducerBadEpochStart):
        await store.append("/e", [b"x"], producer=Producer("w", 2, 1))
    bumped = await store.append("/e", [b"b"], producer=Producer("w", 2, 0))
    assert bumped.status == "appended" and bumped.producer_epoch == 2
    # Producers are independent of each other.
    other = await store.append("/e", [b"c"], producer=Producer("v", 0, 0))
    assert other.status == "appended"
    assert await all_data(store, "/e") == [b"a", b"b", b"c"]


async def test_failed_check_does_not_advance_producer(store: LogStore) -> None:
    await store.create("/f", TEXT)
    await store.append("/f", [b"a"], producer=Producer("w", 0, 0), stream_seq="5")
    # Stream-Seq regression after a valid producer seq: nothing is committed...
    with pytest.raises(SeqConflict):
        await store.append("/f", [b"b"], producer=Producer("w", 0, 1), stream_seq="4")
    # ... so the same producer seq is still new, not a duplicate.
    ok = await store.append("/f", [b"b"], producer=Producer("w", 0, 1), stream_seq="6")
    assert ok.status == "appended"


async def test_check_order_closed_before_content_type_before_producer(store: LogStore) -> None:
    await store.create("/o", TEXT)
    await store.append("/o", [b"a"], producer=Producer("w", 1, 0))
    # content type is checked before the (stale) producer epoch
    with pytest.raises(ContentTypeMismatch):
        await store.append(
            "/o", [b"x"], content_type="application/json", producer=Producer("w", 0, 0)
        )
    # producer is checked before Stream-Seq
    await store.append("/o", [b"b"], stream_seq="z")
    with pytest.raises(StaleProducerEpoch):
        await store.append("/o", [b"x"], producer=Producer("w", 0, 0), stream_seq="a")
    await store.append("/o", [], close=True)
    # closed comes before everything
    with pytest.raises(StreamClosed) as closed:
        await store.append("/o", [b"x"], content_type="application/json")
    assert closed.value.tail == (await store.head("/o")).tail


# -- closure (DS §2, §3) ---------------------------------------------------------------


async def test_close_with_data_and_close_only(store: LogStore) -> None:
    await store.create("/cl", TEXT)
    r = await store.append("/cl", [b"last"], close=True)
    assert r.status == "appended" and r.closed
    again = await store.append("/cl", [], close=True)
    assert again.status == "closed_only" and again.closed and again.tail == r.tail
    with pytest.raises(StreamClosed):
        await store.append("/cl", [b"more"])
    result = await store.read("/cl")
    assert result.closed and [e.data for e in result.entries] == [b"last"]
    info = await store.head("/cl")
    assert info.closed


async def test_close_only_on_open_stream(store: LogStore) -> None:
    await store.create("/co", TEXT, initial=[b"a"])
    r = await store.append("/co", [], close=True)
    assert r.status == "closed_only" and r.closed and r.offsets == []
    assert (await store.read("/co", OFFSET_NOW)).closed


async def test_producer_close_retry_is_duplicate(store: LogStore) -> None:
    await store.create("/pc", TEXT)
    await store.append("/pc", [b"a"], producer=Producer("w", 0, 0))
    closing = await store.append("/pc", [b"b"], producer=Producer("w", 0, 1), close=True)
    assert closing.closed
    retry = await store.append("/pc", [b"b"], producer=Producer("w", 0, 1), close=True)
    assert retry.status == "duplicate" and retry.closed and retry.tail == closing.tail
    with pytest.raises(StreamClosed):
        await store.append("/pc", [b"c"], producer=Producer("w", 0, 2))
    with pytest.raises(StreamClosed):
        await store.append("/pc", [], producer=Producer("w", 0, 2), close=True)
    assert await all_data(store, "/pc") == [b"a", b"b"]


# -- reads --------------------------------------------------------------------------------


async def test_read_limits_return_at_least_one_message(store: LogStore) -> None:
    await store.create("/l", TEXT, initial=[b"x" * 10, b"y" * 10, b"z" * 10])
    one = await store.read("/l", max_bytes=5)
    assert [e.data for e in one.entries] == [b"x" * 10] and not one.up_to_date
    two = await store.read("/l", max_bytes=20)
    assert len(two.entries) == 2 and not two.up_to_date
    by_count = await store.read("/l", max_messages=2)
    assert len(by_count.entries) == 2
    rest = await store.read("/l", by_count.next_offset)
    assert [e.data for e in rest.entries] == [b"z" * 10] and rest.up_to_date


async def test_read_sentinels(store: LogStore) -> None:
    await store.create("/n", TEXT, initial=[b"a"])
    now = await store.read("/n", OFFSET_NOW)
    assert now.entries == [] and now.up_to_date
    assert now.next_offset == (await store.head("/n")).tail
    start = await store.read("/n", OFFSET_START)
    assert [e.data for e in start.entries] == [b"a"]


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "",
        "-2",
        "0000000000000000_000000000000000",
        "0000000000000000,0000000000000000",
        "0000000000000001_0000000000000000",  # index 1 is a boundary, byte 0 is not
        "0000000000000005_0000000000000003",  # beyond the tail
        "9999999999999999_9999999999999999",
    ],
)
async def test_read_rejects_malformed_and_non_boundary_offsets(store: LogStore, bad: str) -> None:
    await store.create("/b", TEXT, initial=[b"abc", b"de"])
    with pytest.raises(BadOffset):
        await store.read("/b", bad)


async def test_read_missing_stream(store: LogStore) -> None:
    with pytest.raises(NoSuchStream):
        await store.read("/missing")


# -- wait_for --------------------------------------------------------------------------


async def test_async_with_opens_and_closes_even_on_error(new_store: LogStore) -> None:
    waiter: asyncio.Task[bool] | None = None
    with pytest.raises(RuntimeError, match="inside"):
        async with new_store as store:
            assert store is new_store
            tail = (await store.create("/w", TEXT)).info.tail
            waiter = asyncio.create_task(store.wait_for("/w", tail, 30.0))
            await asyncio.sleep(0)
            raise RuntimeError("inside")
    # close() ran on the way out: the parked waiter returned as on a timeout
    assert waiter is not None
    assert await asyncio.wait_for(waiter, 5.0) is False


async def test_wait_for_is_woken_by_append(store: LogStore) -> None:
    created = await store.create("/w", TEXT)
    tail = created.info.tail
    assert not await store.wait_for("/w", tail, 0.01)
    waiter = asyncio.create_task(store.wait_for("/w", tail, 5.0))
    await asyncio.sleep(0)
    assert not waiter.done()
    await store.append("/w", [b"x"])
    assert await asyncio.wait_for(waiter, 5.0)
    # Data already past the offset: returns at once.
    assert await store.wait_for("/w", tail, 0.0)


async def test_wait_for_is_woken_by_close_and_delete(store: LogStore) -> None:
    created = await store.create("/wc", TEXT)
    waiter = asyncio.create_task(store.wait_for("/wc", created.info.tail, 5.0))
    await asyncio.sleep(0)
    await store.append("/wc", [], close=True)
    assert await asyncio.wait_for(waiter, 5.0)
    created = await store.create("/wd", TEXT)
    waiter = asyncio.create_task(store.wait_for("/wd", OFFSET_NOW, 5.0))
    await asyncio.sleep(0)
    await store.delete("/wd")
    assert await asyncio.wait_for(waiter, 5.0) is False
    assert await store.wait_for("/never", OFFSET_NOW, 0.01) is False


async def test_wait_for_now_waits_for_the_next_append(store: LogStore) -> None:
    await store.create("/wn", TEXT, initial=[b"old"])
    waiter = asyncio.create_task(store.wait_for("/wn", OFFSET_NOW, 5.0))
    await eventually(lambda: waiting(store) == 1)
    assert not waiter.done()
    await store.append("/wn", [b"new"])
    assert await asyncio.wait_for(waiter, 5.0)


# -- delete, list ------------------------------------------------------------------------------


async def test_delete_and_list(store: LogStore) -> None:
    for path in ("/x/1", "/x/2", "/y/1"):
        await store.create(path, TEXT)
    assert [i.path for i in await store.list_streams("/x/")] == ["/x/1", "/x/2"]
    assert len(await store.list_streams(limit=2)) == 2
    await store.delete("/x/1")
    with pytest.raises(NoSuchStream):
        await store.delete("/x/1")
    with pytest.raises(NoSuchStream):
        await store.read("/x/1")
    assert [i.path for i in await store.list_streams("/x/")] == ["/x/2"]
    # A deleted path can be created again (DS §1 says SHOULD NOT reuse, but the
    # store allows it: the HTTP layer decides).
    assert (await store.create("/x/1", TEXT)).created


# -- trim -----------------------------------------------------------------------------------


async def test_trim_makes_old_offsets_gone(store: LogStore) -> None:
    created = await store.create("/t", TEXT, initial=[b"a", b"b", b"c"])
    first = (await store.read("/t")).entries
    dropped = await store.trim("/t", first[2].offset)
    assert dropped == 2
    with pytest.raises(DataGone):
        await store.read("/t", first[0].offset)
    with pytest.raises(DataGone):
        await store.read("/t", created.info.start)
    assert await all_data(store, "/t") == [b"c"]
    info = await store.head("/t")
    assert info.start == first[2].offset and info.message_count == 1
    assert await store.trim("/t", first[1].offset) == 0


# -- TTL and expiry (DS §1, §2) ----------------------------------------------------------------


async def test_sliding_ttl_renewed_by_append_and_read_not_head(store: LogStore) -> None:
    t0 = 1_000_000.0
    await store.create("/ttl", StreamConfig(content_type="text/plain", ttl_seconds=10), now=t0)
    await store.append("/ttl", [b"a"], now=t0 + 8)
    await store.read("/ttl", now=t0 + 16)
    await store.head("/ttl", now=t0 + 25)  # does not renew
    await store.read("/ttl", now=t0 + 25.9)
    with pytest.raises(NoSuchStream):
        await store.head("/ttl", now=t0 + 36)
    with pytest.raises(NoSuchStream):
        await store.append("/ttl", [b"b"], now=t0 + 36)


async def test_close_only_renews_sliding_ttl(store: LogStore) -> None:
    t0 = 2_000_000.0
    await store.create("/tc", StreamConfig(content_type="text/plain", ttl_seconds=10), now=t0)
    await store.append("/tc", [], close=True, now=t0 + 8)
    await store.append("/tc", [], close=True, now=t0 + 16)
    assert (await store.head("/tc", now=t0 + 25)).closed


async def test_absolute_expiry_means_absent(store: LogStore) -> None:
    t0 = 3_000_000.0
    config = StreamConfig(content_type="text/plain", expires_at=t0 + 5)
    await store.create("/ex", config, initial=[b"a"], now=t0)
    assert await store.read("/ex", now=t0 + 4)
    with pytest.raises(NoSuchStream):
        await store.read("/ex", now=t0 + 5)
    # An expired path is free again.
    assert (await store.create("/ex", TEXT, now=t0 + 6)).created


# -- forks (DS §6) --------------------------------------------------------------------------------


async def test_fork_reads_stitch_source_and_own(store: LogStore) -> None:
    await store.create("/src", TEXT, initial=[b"a", b"b", b"c"])
    src_entries = (await store.read("/src")).entries
    fork = await store.create(
        "/fork",
        StreamConfig(content_type="", forked_from="/src", fork_offset=src_entries[2].offset),
    )
    assert fork.info.config.content_type == "text/plain"
    assert fork.info.tail == src_entries[2].offset
    await store.append("/src", [b"src-later"])
    own = await store.append("/fork", [b"f1", b"f2"])
    result = await store.read("/fork")
    assert [e.data for e in result.entries] == [b"a", b"b", b"f1", b"f2"]
    # Shared offset space: inherited entries keep the source's offsets.
    assert [e.offset for e in result.entries[:2]] == [e.offset for e in src_entries[:2]]
    assert result.entries[2].offset == src_entries[2].offset == own.offsets[0]
    # Resume inside the inherited part, and with tiny limits across the seam.
    assert await all_data(store, "/fork", src_entries[1].offset) == [b"b", b"f1", b"f2"]
    seam = await store.read("/fork", src_entries[1].offset, max_messages=1)
    assert [e.data for e in seam.entries] == [b"b"]
    assert await all_data(store, "/fork", seam.next_offset) == [b"f1", b"f2"]
    assert await all_data(store, "/src") == [b"a", b"b", b"c", b"src-later"]


async def test_fork_defaults_to_source_tail_and_idempotent(store: LogStore) -> None:
    src = await store.create("/s2", TEXT, initial=[b"a"])
    cfg = StreamConfig(content_type="text/plain", forked_from="/s2")
    fork = await store.create("/f2", cfg)
    assert fork.info.config.fork_offset == src.info.tail
    assert await all_data(store, "/f2") == [b"a"]
    assert not (await store.create("/f2", cfg)).created
    explicit = StreamConfig(content_type="", forked_from="/s2", fork_offset=src.info.tail)
    assert not (await store.create("/f2", explicit)).created
    with pytest.raises(StreamExists):
        await store.create(
            "/f2", StreamConfig(content_type="", forked_from="/s2", fork_sub_offset=1)
        )
    with pytest.raises(StreamExists):
        await store.create(
            "/f2", StreamConfig(content_type="", forked_from="/s2", fork_offset=ZERO_OFFSET)
        )


async def test_fork_errors(store: LogStore) -> None:
    await store.create("/s3", TEXT, initial=[b"abc"])
    with pytest.raises(NoSuchStream):
        await store.create("/f3", StreamConfig(forked_from="/none"))
    for bad in ("9999999999999999_9999999999999999", "junk", "0000000000000000_0000000000000001"):
        with pytest.raises(BadOffset):
            await store.create(
                "/f3", StreamConfig(content_type="", forked_from="/s3", fork_offset=bad)
            )
    with pytest.raises(ContentTypeMismatch):
        await store.create("/f3", StreamConfig(content_type="application/json", forked_from="/s3"))
    with pytest.raises(BadOffset):
        await store.create(
            "/f3", StreamConfig(content_type="", forked_from="/s3", fork_sub_offset=1)
        )
    with pytest.raises(BadOffset):
        await store.create("/f3", StreamConfig(content_type="text/plain", fork_sub_offset=1))
    # A fork of a closed source starts open.
    await store.create("/s3c", TEXT, initial=[b"x"], closed=True)
    fork = await store.create("/f3c", StreamConfig(content_type="", forked_from="/s3c"))
    assert not fork.info.closed
    await store.append("/f3c", [b"y"])
    assert await all_data(store, "/f3c") == [b"x", b"y"]


async def test_fork_with_sub_offset_records_it_and_uses_initial(store: LogStore) -> None:
    await store.create("/s4", TEXT, initial=[b"hello"])
    cfg = StreamConfig(
        content_type="", forked_from="/s4", fork_offset=ZERO_OFFSET, fork_sub_offset=3
    )
    fork = await store.create("/f4", cfg, initial=[b"hel", b"XY"])
    assert fork.info.config.fork_sub_offset == 3
    assert await all_data(store, "/f4") == [b"hel", b"XY"]
    assert not (await store.create("/f4", cfg)).created
    with pytest.raises(StreamExists):
        await store.create(
            "/f4",
            StreamConfig(
                content_type="", forked_from="/s4", fork_offset=ZERO_OFFSET, fork_sub_offset=2
            ),
        )


async def test_fork_has_no_producer_or_seq_state_and_inherits_ttl(store: LogStore) -> None:
    t0 = 4_000_000.0
    src_cfg = StreamConfig(content_type="text/plain", ttl_seconds=100)
    await store.create("/s5", src_cfg, now=t0)
    await store.append("/s5", [b"a"], producer=Producer("w", 0, 0), stream_seq="m", now=t0)
    fork = await store.create("/f5", StreamConfig(content_type="", forked_from="/s5"), now=t0)
    assert fork.info.config.ttl_seconds == 100
    r = await store.append("/f5", [b"b"], producer=Producer("w", 0, 0), stream_seq="a", now=t0)
    assert r.status == "appended"
    own_ttl = StreamConfig(content_type="", forked_from="/s5", ttl_seconds=5)
    assert (await store.create("/f5b", own_ttl, now=t0)).info.config.ttl_seconds == 5


async def test_live_waits_on_fork_only_woken_by_fork_appends(store: LogStore) -> None:
    await store.create("/s6", TEXT, initial=[b"a"])
    fork = await store.create("/f6", StreamConfig(content_type="", forked_from="/s6"))
    waiter = asyncio.create_task(store.wait_for("/f6", fork.info.tail, 5.0))
    source = asyncio.create_task(store.wait_for("/s6", OFFSET_NOW, 5.0))
    await eventually(lambda: waiting(store) == 2)
    await store.append("/s6", [b"src"])
    # The source's waiter saw the append: a wake-up of the fork's would have come with it.
    assert await asyncio.wait_for(source, 5.0)
    assert not waiter.done()
    await store.append("/f6", [b"own"])
    assert await asyncio.wait_for(waiter, 5.0)


async def test_soft_delete_keeps_data_for_forks_then_gc(store: LogStore) -> None:
    await store.create("/s7", TEXT, initial=[b"a", b"b"])
    await store.create("/f7", StreamConfig(content_type="", forked_from="/s7"))
    await store.create("/g7", StreamConfig(content_type="", forked_from="/f7"))
    await store.delete("/s7")
    for op in (
        store.head("/s7"),
        store.read("/s7"),
        store.append("/s7", [b"x"]),
        store.delete("/s7"),
    ):
        with pytest.raises(DataGone):
            await op
    with pytest.raises(StreamExists):
        await store.create("/s7", TEXT)
    with pytest.raises(DataGone):
        await store.create("/h7", StreamConfig(content_type="", forked_from="/s7"))
    assert "/s7" not in [i.path for i in await store.list_streams()]
    assert await all_data(store, "/f7") == [b"a", b"b"]
    assert await all_data(store, "/g7") == [b"a", b"b"]
    await store.delete("/f7")  # soft (g7 reads it)
    assert await all_data(store, "/g7") == [b"a", b"b"]
    await store.delete("/g7")  # last fork: f7 and then s7 are collected
    assert (await store.create("/s7", TEXT)).created
    assert (await store.create("/f7", TEXT)).created
    assert await all_data(store, "/s7") == []


async def test_many_concurrent_appends_keep_one_order(store: LogStore) -> None:
    await store.create("/cc", TEXT)

    async def writer(w: int) -> list[str]:
        out = []
        for i in range(20):
            r = await store.append("/cc", [f"{w}:{i}".encode()])
            out.extend(r.offsets)
        return out

    results = await asyncio.gather(*(writer(w) for w in range(8)))
    all_offsets = [o for r in results for o in r]
    assert len(set(all_offsets)) == 160
    data = await all_data(store, "/cc")
    assert len(data) == 160
    for w in range(8):
        mine = [d for d in data if d.startswith(f"{w}:".encode())]
        assert mine == [f"{w}:{i}".encode() for i in range(20)]


# -- replica append (append_at) ------------------------------------------------------------


async def test_append_at_lands_at_the_named_offset_with_the_source_offsets(store: LogStore) -> None:
    await store.create("/src", TEXT, initial=[b"a", b"bcd"])
    src = await store.append("/src", [b"ef", b"g"])
    await store.create("/rep", TEXT)
    first = await store.append_at("/rep", ZERO_OFFSET, [b"a", b"bcd"])
    assert first.status == "appended" and first.offsets[0] == ZERO_OFFSET
    second = await store.append_at("/rep", first.tail, [b"ef", b"g"])
    assert second.offsets == src.offsets and second.tail == src.tail
    assert await all_data(store, "/rep") == [b"a", b"bcd", b"ef", b"g"]
    # The same read from every offset on both.
    for offset in [ZERO_OFFSET, *(e.offset for e in (await store.read("/src")).entries)]:
        assert (await store.read("/rep", offset)).entries == (
            await store.read("/src", offset)
        ).entries


async def test_append_at_elsewhere_than_the_tail_changes_nothing(store: LogStore) -> None:
    await store.create("/r1", TEXT)
    done = await store.append_at("/r1", ZERO_OFFSET, [b"xy", b"z"])
    behind, ahead = done.offsets[1], "0000000000000009_0000000000000099"
    for offset in (behind, ZERO_OFFSET, ahead):
        with pytest.raises(TailMismatch) as info:
            await store.append_at("/r1", offset, [b"q"])
        assert info.value.tail == done.tail
    assert await all_data(store, "/r1") == [b"xy", b"z"]
    with pytest.raises(BadOffset):
        await store.append_at("/r1", "nonsense", [b"q"])
    with pytest.raises(NoSuchStream):
        await store.append_at("/none", ZERO_OFFSET, [b"q"])
    with pytest.raises(ValueError):
        await store.append_at("/r1", done.tail, [])


async def test_append_at_moves_the_start_of_a_stream_that_retains_nothing(store: LogStore) -> None:
    await store.create("/r2", TEXT)
    start = "0000000000000005_0000000000000040"
    result = await store.append_at("/r2", start, [b"m5", b"m6"])
    assert result.offsets[0] == start and decode_offset(result.tail) == (7, 44)
    info = await store.head("/r2")
    assert info.start == start and info.message_count == 2
    assert await all_data(store, "/r2") == [b"m5", b"m6"]
    with pytest.raises(DataGone):
        await store.read("/r2", ZERO_OFFSET)
    # Holding messages, it no longer jumps.
    with pytest.raises(TailMismatch):
        await store.append_at("/r2", "0000000000000009_0000000000000050", [b"x"])
    # Trimmed to its tail it retains nothing again, and may jump again.
    await store.trim("/r2", result.tail)
    jumped = await store.append_at("/r2", "0000000000000009_0000000000000050", [b"x"])
    assert jumped.offsets == ["0000000000000009_0000000000000050"]
    assert await all_data(store, "/r2") == [b"x"]


async def test_append_at_closes_and_a_repeated_close_is_idempotent(store: LogStore) -> None:
    await store.create("/r3", TEXT)
    done = await store.append_at("/r3", ZERO_OFFSET, [b"last"], close=True)
    assert done.closed and done.status == "appended"
    again = await store.append_at("/r3", done.tail, [], close=True)
    assert again.status == "closed_only" and again.closed
    with pytest.raises(StreamClosed):
        await store.append_at("/r3", done.tail, [b"more"])
    read = await store.read("/r3")
    assert read.closed and [e.data for e in read.entries] == [b"last"]
    await store.create("/r4", TEXT)
    closed = await store.append_at("/r4", ZERO_OFFSET, [], close=True)
    assert closed.closed and closed.status == "closed_only"


async def test_append_at_wakes_live_readers(store: LogStore) -> None:
    await store.create("/r5", TEXT)
    waiter = asyncio.ensure_future(store.wait_for("/r5", ZERO_OFFSET, 5.0))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await store.append_at("/r5", ZERO_OFFSET, [b"x"])
    assert await asyncio.wait_for(waiter, 5.0)


async def test_concurrent_append_at_one_wins(store: LogStore) -> None:
    await store.create("/r6", TEXT)
    results = await asyncio.gather(
        *(store.append_at("/r6", ZERO_OFFSET, [f"w{i}".encode()]) for i in range(6)),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    assert len(wins) == 1
    assert all(isinstance(r, TailMismatch) for r in results if isinstance(r, BaseException))
    assert len(await all_data(store, "/r6")) == 1


async def test_head_reports_the_last_stream_seq(store: LogStore) -> None:
    await store.create("/r7", TEXT)
    assert (await store.head("/r7")).last_stream_seq is None
    await store.append("/r7", [b"a"], stream_seq="0005")
    assert (await store.head("/r7")).last_stream_seq == "0005"
    with pytest.raises(SeqConflict):
        await store.append("/r7", [b"b"], stream_seq="0005")
    assert (await store.head("/r7")).last_stream_seq == "0005"
    assert [i.last_stream_seq for i in await store.list_streams("/r7")] == ["0005"]
