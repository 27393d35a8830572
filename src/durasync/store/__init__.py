"""The log store: one async interface, several backends.

``durasync.store.base`` defines :class:`LogStore` and its value types; the
backends are ``memory`` (tests, ``--memory``) and the embedded durable store
(default). A Redis backend follows the same interface.
"""

from __future__ import annotations

from pathlib import Path

from durasync.store.base import (
    OFFSET_NOW,
    OFFSET_START,
    AppendResult,
    BadOffset,
    ContentTypeMismatch,
    CreateResult,
    Entry,
    LogStore,
    Producer,
    ProducerBadEpochStart,
    ProducerFenced,
    ProducerSeqGap,
    ReadResult,
    SeqConflict,
    StoreClientError,
    StoreError,
    StoreUnavailable,
    StreamClosed,
    StreamConfig,
    StreamExists,
    StreamGone,
    StreamInfo,
    StreamNotFound,
)
from durasync.store.embedded import EmbeddedStore
from durasync.store.memory import MemoryStore

__all__ = [
    "OFFSET_NOW",
    "OFFSET_START",
    "AppendResult",
    "BadOffset",
    "ContentTypeMismatch",
    "CreateResult",
    "EmbeddedStore",
    "Entry",
    "LogStore",
    "MemoryStore",
    "Producer",
    "ProducerBadEpochStart",
    "ProducerFenced",
    "ProducerSeqGap",
    "ReadResult",
    "SeqConflict",
    "StoreClientError",
    "StoreError",
    "StoreUnavailable",
    "StreamClosed",
    "StreamConfig",
    "StreamExists",
    "StreamGone",
    "StreamInfo",
    "StreamNotFound",
    "open_store",
]


def open_store(*, memory: bool = False, data_dir: Path | None = None) -> LogStore:
    """The store the CLI asked for, not opened yet (the caller awaits ``open()``).

    ``memory=True`` gives a :class:`MemoryStore`; otherwise the embedded
    durable store in ``data_dir`` (default ``./durasync-data``).
    """
    if memory:
        return MemoryStore()
    return EmbeddedStore(data_dir if data_dir is not None else Path("durasync-data"))
