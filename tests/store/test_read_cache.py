"""Shared live-tail reads (ReadCache): one store read serves readers of the
same stream version, and a changed stream is never answered from the cache."""

from __future__ import annotations

import asyncio

import pytest

from durasync.store import LogStore
from durasync.store.base import Entry, ReadResult, StreamConfig
from durasync.store.engine import ReadCache, StreamMeta
from durasync.store.errors import DataGone, NoSuchStream

TEXT = StreamConfig(content_type="text/plain")


def _meta(path: str, **kw: object) -> StreamMeta:
    config = StreamConfig(content_type="text/plain", **kw)  # type: ignore[arg-type]
    return StreamMeta(path=path, config=config, requested=config, created_at=0.0, touched_at=0.0)


def test_hit_only_for_the_same_meta_object_and_read() -> None:
    cache: ReadCache[str] = ReadCache()
    meta = _meta("a")
    cache.put(meta, "o", 10, 5, "value")
    assert cache.get(meta, "o", 10, 5) == "value"
    assert cache.get(meta, "p", 10, 5) is None
    assert cache.get(meta, "o", 11, 5) is None
    assert cache.get(meta, "o", 10, 6) is None
    # An equal but different version (appends replace the meta) misses.
    assert cache.get(_meta("a"), "o", 10, 5) is None
    cache.discard("a", "other")
    assert cache.get(meta, "o", 10, 5) == "value"
    cache.discard("a", "value")
    assert cache.get(meta, "o", 10, 5) is None


def test_bounded_and_forks_not_cached() -> None:
    cache: ReadCache[int] = ReadCache(slots=2)
    metas = [_meta(f"s{i}") for i in range(3)]
    for i, meta in enumerate(metas):
        cache.put(meta, "o", 1, 1, i)
    assert cache.get(metas[0], "o", 1, 1) is None  # oldest evicted
    assert cache.get(metas[2], "o", 1, 1) == 2
    fork = _meta("f", forked_from="s0")
    cache.put(fork, "o", 1, 1, 9)
    assert cache.get(fork, "o", 1, 1) is None


def test_small() -> None:
    res = ReadResult(
        entries=[Entry(b"x" * 10, "a", "b")] * 3, next_offset="b", up_to_date=True, closed=False
    )
    assert ReadCache.small(res, 30)
    assert not ReadCache.small(res, 29)


async def test_readers_of_one_version_share_and_a_change_invalidates(store: LogStore) -> None:
    await store.create("s", TEXT)
    start = (await store.append("s", [b"one"])).tail
    await store.append("s", [b"two"])
    first, second = await asyncio.gather(store.read("s", start), store.read("s", start))
    assert first is second  # one read served both
    assert [e.data for e in first.entries] == [b"two"] and first.up_to_date
    await store.append("s", [b"three"])
    third = await store.read("s", start)
    assert [e.data for e in third.entries] == [b"two", b"three"] and third.up_to_date
    await store.append("s", [b"four"], close=True)
    closed = await store.read("s", start)
    assert closed.closed and [e.data for e in closed.entries][-1] == b"four"


async def test_trim_and_delete_are_seen(store: LogStore) -> None:
    await store.create("t", TEXT)
    first = (await store.append("t", [b"a"])).offsets[0]
    second = (await store.append("t", [b"b"])).tail
    await store.append("t", [b"c"])
    assert [e.data for e in (await store.read("t", first)).entries] == [b"a", b"b", b"c"]
    await store.trim("t", second)
    with pytest.raises(DataGone):
        await store.read("t", first)
    await store.delete("t")
    with pytest.raises(NoSuchStream):
        await store.read("t", second)
