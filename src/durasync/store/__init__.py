"""The log store: one async interface, several backends.

``durasync.store.base`` defines :class:`LogStore` and its value types; the
backends are ``memory`` (tests, ``--memory``) and the embedded durable store
(default). A Redis backend follows the same interface.
"""

from __future__ import annotations

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

__all__ = [
    "OFFSET_NOW",
    "OFFSET_START",
    "AppendResult",
    "BadOffset",
    "ContentTypeMismatch",
    "CreateResult",
    "Entry",
    "LogStore",
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
]
