"""The log store: one async interface, several backends.

``durasync.store.base`` defines :class:`LogStore` and its value types; the
backends are ``memory`` (tests, ``--memory``), the embedded durable store
(default) and ``redis`` (``--redis URL``: several nodes share one Redis).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from durasync.store.base import (
    OFFSET_NOW,
    OFFSET_START,
    AppendResult,
    CreateResult,
    Entry,
    LogStore,
    Producer,
    ReadResult,
    StreamConfig,
    StreamInfo,
)
from durasync.store.embedded import EmbeddedStore
from durasync.store.errors import (
    BadOffset,
    ContentTypeMismatch,
    DataGone,
    NoSuchStream,
    ProducerBadEpochStart,
    ProducerSeqAhead,
    SeqConflict,
    StaleProducerEpoch,
    StoreClientError,
    StoreError,
    StoreUnavailable,
    StreamClosed,
    StreamExists,
    TailMismatch,
)
from durasync.store.memory import MemoryStore

if TYPE_CHECKING:
    from durasync.store.redis import RedisStore

__all__ = [
    "OFFSET_NOW",
    "OFFSET_START",
    "AppendResult",
    "BadOffset",
    "ContentTypeMismatch",
    "CreateResult",
    "DataGone",
    "EmbeddedStore",
    "Entry",
    "LogStore",
    "MemoryStore",
    "NoSuchStream",
    "Producer",
    "ProducerBadEpochStart",
    "ProducerSeqAhead",
    "ReadResult",
    "RedisStore",
    "SeqConflict",
    "StaleProducerEpoch",
    "StoreClientError",
    "StoreError",
    "StoreUnavailable",
    "StreamClosed",
    "StreamConfig",
    "StreamExists",
    "StreamInfo",
    "TailMismatch",
    "open_store",
]


def open_store(
    *, memory: bool = False, data_dir: Path | None = None, redis_url: str | None = None
) -> LogStore:
    """The store the CLI asked for, not opened yet (the caller awaits ``open()``).

    ``redis_url`` gives a :class:`RedisStore` on that Redis; ``memory=True`` a
    :class:`MemoryStore`; otherwise the embedded durable store in ``data_dir``
    (default ``./durasync-data``). At most one of them may be given
    (ValueError otherwise).
    """
    if redis_url is not None:
        if memory or data_dir is not None:
            raise ValueError("redis_url excludes memory and data_dir")
        from durasync.store.redis import RedisStore

        return RedisStore(redis_url)
    if memory:
        return MemoryStore()
    return EmbeddedStore(data_dir if data_dir is not None else Path("durasync-data"))


def __getattr__(name: str) -> Any:
    # RedisStore on first use (PEP 562): a node on the embedded store never imports redis-py,
    # which would lengthen every start-up (and a restart is part of a room's recovery time).
    if name == "RedisStore":
        from durasync.store.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
