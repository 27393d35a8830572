"""Pure decision rules shared by every backend (no I/O, no clock reads).

The embedded store, the memory store and a future Redis backend (as Lua) must
decide identically whether an append is accepted, a duplicate or an error, so
the decisions live here as plain functions over plain values. Section numbers
refer to shared/reference/durable-streams-protocol.md ("DS").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import msgspec

from durasync.httpwire import media_type
from durasync.store.base import Producer, StreamConfig
from durasync.store.errors import (
    BadOffset,
    ContentTypeMismatch,
    ProducerBadEpochStart,
    ProducerSeqAhead,
    SeqConflict,
    StaleProducerEpoch,
    StreamClosed,
)

#: Producer state not updated for this long is forgotten (DS §3 suggests 7 days).
PRODUCER_STATE_TTL_SECONDS = 7 * 24 * 3600.0

DEFAULT_CONTENT_TYPE = "application/octet-stream"


def same_media_type(a: str, b: str) -> bool:
    """Case-insensitive media-type equality ignoring parameters (DS §5)."""
    return media_type(a) == media_type(b)


def is_expired(config: StreamConfig, touched_at: float, now: float) -> bool:
    """Whether a stream is expired at ``now`` (DS §1: expired behaves as absent).

    Absolute ``expires_at`` wins; a sliding ``ttl_seconds`` counts from the last
    append or read (``touched_at``).
    """
    if config.expires_at is not None and now >= config.expires_at:
        return True
    return config.ttl_seconds is not None and now >= touched_at + config.ttl_seconds


# --------------------------------------------------------------------------
# Idempotent producers (DS §3)
# --------------------------------------------------------------------------


class ProducerState(msgspec.Struct, frozen=True):
    """Per (stream, producer id): current epoch and highest accepted seq."""

    epoch: int
    last_seq: int
    updated_at: float


ProducerVerdict = Literal["accept", "duplicate"]


def check_producer(
    state: ProducerState | None, producer: Producer, now: float
) -> tuple[ProducerVerdict, ProducerState]:
    """Decide one producer request against the current state.

    Returns ``("accept", new_state)`` or ``("duplicate", state)``; the caller
    commits ``new_state`` only together with the data.

    Raises:
        StaleProducerEpoch: epoch below the current one (403).
        ProducerBadEpochStart: a new epoch whose seq is not 0 (400).
        ProducerSeqAhead: seq beyond last+1, or a first request not at 0 (409).
    """
    if state is not None and now - state.updated_at > PRODUCER_STATE_TTL_SECONDS:
        state = None
    if state is None:
        if producer.seq != 0:
            raise ProducerSeqAhead(
                f"producer {producer.producer_id!r} is unknown: expected seq 0",
                expected=0,
                received=producer.seq,
            )
        return "accept", ProducerState(producer.epoch, 0, now)
    if producer.epoch < state.epoch:
        raise StaleProducerEpoch(
            f"producer epoch {producer.epoch} is stale (current {state.epoch})",
            current_epoch=state.epoch,
        )
    if producer.epoch > state.epoch:
        if producer.seq != 0:
            raise ProducerBadEpochStart(
                f"new producer epoch {producer.epoch} must start at seq 0, got {producer.seq}"
            )
        return "accept", ProducerState(producer.epoch, 0, now)
    if producer.seq <= state.last_seq:
        return "duplicate", state
    if producer.seq == state.last_seq + 1:
        return "accept", ProducerState(state.epoch, producer.seq, now)
    raise ProducerSeqAhead(
        f"producer seq {producer.seq} skips ahead (expected {state.last_seq + 1})",
        expected=state.last_seq + 1,
        received=producer.seq,
    )


def check_stream_seq(last: str | None, seq: str) -> None:
    """``Stream-Seq`` must be byte-wise greater than the stream's last one (DS §2).

    Scope is per stream. Raises SeqConflict otherwise.
    """
    if last is not None and seq.encode() <= last.encode():
        raise SeqConflict(f"Stream-Seq {seq!r} is not greater than {last!r}")


# --------------------------------------------------------------------------
# Append planning (DS §2 POST precedence: closed -> content type -> producer
# -> Stream-Seq)
# --------------------------------------------------------------------------

AppendKind = Literal["append", "duplicate", "closed_only", "closed_duplicate"]


class AppendPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What an accepted append does. ``kind``:

    - ``append``: write the messages (maybe none, if only closing), commit
      ``producer_state`` and ``stream_seq`` when given, close if ``close``.
    - ``duplicate``: producer retry already applied; write nothing.
    - ``closed_only``: close-only request on an already-closed stream.
    - ``closed_duplicate``: retry of the exact producer request that closed
      the stream; write nothing, report closed.
    """

    kind: AppendKind
    close: bool = False
    producer_state: ProducerState | None = None
    stream_seq: str | None = None


def plan_append(
    *,
    stream_content_type: str,
    closed: bool,
    closed_by: Producer | None,
    last_stream_seq: str | None,
    producer_state: ProducerState | None,
    message_count: int,
    content_type: str | None,
    producer: Producer | None,
    stream_seq: str | None,
    close: bool,
    tail: str,
    now: float,
) -> AppendPlan:
    """Decide an append atomically with respect to one stream's state.

    ``message_count == 0`` with ``close`` is a close-only request; with neither
    it is the caller's bug (ValueError).

    Raises:
        StreamClosed, ContentTypeMismatch, StaleProducerEpoch,
        ProducerBadEpochStart, ProducerSeqAhead, SeqConflict.
    """
    if message_count == 0 and not close:
        raise ValueError("append of no messages without close")
    if closed:
        # DS §3: the exact (id, epoch, seq) that closed the stream is a retry.
        if producer is not None and closed_by == producer:
            return AppendPlan(kind="closed_duplicate")
        if message_count == 0 and producer is None:
            return AppendPlan(kind="closed_only")
        raise StreamClosed("stream is closed", tail=tail)
    if (
        message_count > 0
        and content_type is not None
        and not same_media_type(content_type, stream_content_type)
    ):
        raise ContentTypeMismatch(
            f"content type {content_type!r} does not match the stream's {stream_content_type!r}"
        )
    new_state: ProducerState | None = None
    if producer is not None:
        verdict, new_state = check_producer(producer_state, producer, now)
        if verdict == "duplicate":
            return AppendPlan(kind="duplicate", producer_state=new_state)
    if stream_seq is not None:
        check_stream_seq(last_stream_seq, stream_seq)
    return AppendPlan(kind="append", close=close, producer_state=new_state, stream_seq=stream_seq)


# --------------------------------------------------------------------------
# Create: idempotent comparison and forks (DS §2 PUT, §6)
# --------------------------------------------------------------------------


def same_create(
    existing_requested: StreamConfig,
    existing_effective: StreamConfig,
    existing_closed: bool,
    new: StreamConfig,
    new_closed: bool,
) -> bool:
    """Whether a re-create matches an existing stream (DS §2 PUT, §6).

    Compares the media type (an empty one on a fork means "the source's"),
    the TTL and expiry as requested (not as inherited), the *current* closure
    and the fork parameters. A re-create that omits ``fork_offset`` matches any
    fork offset (the first create resolved it to the source tail).
    """
    ct_new = new.content_type or (
        existing_effective.content_type if new.forked_from else DEFAULT_CONTENT_TYPE
    )
    return (
        same_media_type(ct_new, existing_effective.content_type)
        and new.ttl_seconds == existing_requested.ttl_seconds
        and new.expires_at == existing_requested.expires_at
        and new_closed == existing_closed
        and new.forked_from == existing_requested.forked_from
        and (new.fork_offset is None or new.fork_offset == existing_effective.fork_offset)
        and new.fork_sub_offset == existing_requested.fork_sub_offset
    )


def fork_config(requested: StreamConfig, source: StreamConfig, fork_offset: str) -> StreamConfig:
    """Effective config of a new fork (DS §6).

    Content type: the source's when the request gives none (``""``), else it
    must have the source's media type (ContentTypeMismatch). Expiry: the
    fork's own TTL/Expires-At if given, else inherited from the source.
    """
    content_type = requested.content_type or source.content_type
    if not same_media_type(content_type, source.content_type):
        raise ContentTypeMismatch(
            f"fork content type {content_type!r} differs from the source's {source.content_type!r}"
        )
    ttl, expires_at, expires_text = (
        requested.ttl_seconds,
        requested.expires_at,
        requested.expires_at_text,
    )
    if ttl is None and expires_at is None:
        ttl, expires_at, expires_text = (
            source.ttl_seconds,
            source.expires_at,
            source.expires_at_text,
        )
    return msgspec.structs.replace(
        requested,
        content_type=content_type,
        ttl_seconds=ttl,
        expires_at=expires_at,
        expires_at_text=expires_text,
        fork_offset=fork_offset,
    )


def fork_prefix(
    sub_offset: int, json_mode: bool, messages_at_anchor: Iterable[bytes]
) -> list[bytes]:
    """The messages a fork copies for ``Stream-Fork-Sub-Offset`` (DS §6).

    ``messages_at_anchor`` are the source's messages from ``fork_offset`` on.
    JSON streams hold one message per JSON value, so a sub-offset of ``n``
    copies ``n`` whole messages; other streams count bytes, copying whole
    messages while they fit and the head of the next one. The HTTP layer
    passes the result to ``create`` as ``initial`` (before the PUT body).

    Raises:
        BadOffset: negative, or more than the source holds past the anchor.
    """
    if sub_offset < 0:
        raise BadOffset("fork sub-offset must be non-negative")
    out: list[bytes] = []
    remaining = sub_offset
    if remaining == 0:
        return out
    for data in messages_at_anchor:
        if json_mode:
            out.append(bytes(data))
            remaining -= 1
        elif remaining >= len(data):
            out.append(bytes(data))
            remaining -= len(data)
        else:
            out.append(bytes(data[:remaining]))
            remaining = 0
        if remaining == 0:
            return out
    raise BadOffset("fork sub-offset overshoots the source's data")
