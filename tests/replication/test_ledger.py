"""The durable ledger on every store backend: replay after reopen, compaction, identity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis as redis_sync

from durasync.replication.config import LinkConfig
from durasync.replication.core import Checkpoint, DeadLetter, Token
from durasync.replication.ledger import LinkLedger, ledger_path, server_identity
from durasync.store import EmbeddedStore, LogStore, MemoryStore
from durasync.store.redis import RedisStore

LINK = LinkConfig(name="l", remote="http://127.0.0.1:1", pull=("a/",), rooms=("r-",))


@pytest.fixture(params=["memory", "embedded", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogStore]:
    s: LogStore
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "embedded":
        s = EmbeddedStore(tmp_path / "d")
    else:
        url = request.getfixturevalue("redis_url")
        client = redis_sync.Redis.from_url(url, socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()
        s = RedisStore(url)
    async with s:
        yield s


def tok(p: int, epoch: str = "e") -> Token:
    return Token(stream="srv/a/x", epoch=epoch, position=p, ref=f"o{p}")


def letter(i: int) -> DeadLetter:
    return DeadLetter(
        id=f"d{i}", link="l", kind="room", key="r-1", item=f"c:{i}", status=403, error="no", at=1.0
    )


async def test_server_identity_is_stable(store: LogStore) -> None:
    first = await server_identity(store)
    assert first == await server_identity(store) and len(first) == 24


async def test_ledger_replays_status_checkpoints_and_dead_letters(store: LogStore) -> None:
    ledger = LinkLedger(store, LINK)
    state = await ledger.load()
    assert state.status == "initializing" and not state.checkpoints
    key = ("pull", "stream", "a/x")
    cp = ledger.checkpoint(key)
    cp.commit(tok(3))
    ledger.record_checkpoint(key, cp, {"epoch": "e"})
    cp.commit(tok(9))
    ledger.record_checkpoint(key, cp)
    ledger.set_status("live")
    ledger.set_needs_reconcile(True)
    ledger.add_dead_letter(letter(1))
    ledger.add_dead_letter(letter(2))
    ledger.clear_dead_letters(["d1", "nope"])
    gone = ("push", "stream", "b")
    ledger.record_checkpoint(gone, Checkpoint(applied=tok(1)), {"x": 1})
    ledger.forget(gone)
    assert ledger.pending > 0
    await ledger.flush()
    assert ledger.pending == 0
    again = await LinkLedger(store, LINK).load()
    assert again.status == "live" and again.needs_reconcile
    assert again.checkpoints[key].applied == tok(9)
    assert again.info[key] == {"epoch": "e"}
    assert list(again.dead) == ["d2"]
    assert gone not in again.checkpoints and gone not in again.info
    # Not flushed: not durable.
    ledger.set_status("paused")
    assert (await LinkLedger(store, LINK).load()).status == "live"


async def test_ledger_compacts_and_trims_behind_a_state_record(store: LogStore) -> None:
    ledger = LinkLedger(store, LINK, compact_every=50)
    await ledger.load()
    key = ("pull", "room", "r-1")
    cp = ledger.checkpoint(key)
    for i in range(1, 200):
        cp.commit(tok(i))
        ledger.record_checkpoint(key, cp)
        if i % 7 == 0:
            await ledger.flush()
    await ledger.flush()
    info = await store.head(ledger_path(LINK.link_id))
    assert info.message_count < 60  # trimmed behind the last state record
    again = await LinkLedger(store, LINK).load()
    assert again.checkpoints[key].applied == tok(199)


async def test_a_different_scope_is_a_different_ledger(store: LogStore) -> None:
    other = LinkConfig(name="l", remote=LINK.remote, pull=("a/", "b/"), rooms=("r-",))
    one = LinkLedger(store, LINK)
    await one.load()
    one.set_status("live")
    await one.flush()
    assert (await LinkLedger(store, other).load()).status == "initializing"


async def test_a_bad_record_is_skipped(store: LogStore) -> None:
    ledger = LinkLedger(store, LINK)
    await ledger.load()
    ledger.set_status("live")
    await ledger.flush()
    await store.append(ledger_path(LINK.link_id), [b'{"type":"nonsense"}', b"[1]"])
    ledger.set_needs_reconcile(True)
    await ledger.flush()
    again = LinkLedger(store, LINK)
    state = await again.load()
    assert again.skipped == 2 and state.status == "live" and state.needs_reconcile
