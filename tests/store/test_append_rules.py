"""One table of append cases, decided by the Python rules and by the Redis append script.

The Durable Streams append rules exist twice: in Python (``engine.live_meta`` for existence
and expiry, then ``rules.plan_append``: what the memory and embedded stores run) and in Lua
(``scripts.APPEND``: what the Redis store runs inside Redis). Every row of :data:`CASES` gives
the stream's state before, the request and the expected outcome, and runs against both: the
Python rules directly, and the Lua script on a real redis-server (the session's, see
conftest.py) whose keys the test writes from the same state. A rule changed on one side only
fails here.

For the script, the test also checks what it wrote: the new messages, tail, closure, closing
producer, Stream-Seq, producer state and last-touched time after an accepted append, and that
nothing changed otherwise (except a close-only on a closed stream renewing a sliding TTL).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import pytest
import redis.asyncio as aioredis

from durasync.httpwire import media_type
from durasync.store.base import Producer, StreamConfig
from durasync.store.engine import StreamMeta, live_meta
from durasync.store.errors import (
    ContentTypeMismatch,
    DataGone,
    NoSuchStream,
    ProducerBadEpochStart,
    ProducerSeqAhead,
    SeqConflict,
    StaleProducerEpoch,
    StoreError,
    StoreUnavailable,
    StreamClosed,
)
from durasync.store.offsets import OFFSET_FMT
from durasync.store.redis import scripts
from durasync.store.rules import (
    PRODUCER_STATE_TTL_SECONDS,
    ProducerState,
    plan_append,
)

PREFIX = "rules:"
PATH = "/s"
T0 = 1_700_000_000.0
NOW = T0 + 10.0
SAFE = 2**53 - 1  # the largest producer epoch/seq the HTTP layer accepts


@dataclass(frozen=True)
class Before:
    """The stream's state before the request (``exists=False``: no stream at all)."""

    exists: bool = True
    content_type: str = "text/plain"
    ttl_seconds: int | None = None
    expires_at: float | None = None
    touched_at: float = T0
    closed: bool = False
    closed_by: Producer | None = None
    soft_deleted: bool = False
    last_stream_seq: str | None = None
    #: State of producer ``p`` (no other producer is known).
    producer: ProducerState | None = None
    #: Tail (index, byte): the stream holds this many 10-byte messages.
    tail_index: int = 3


@dataclass(frozen=True)
class Request:
    messages: tuple[bytes, ...] = (b"m",)
    content_type: str | None = None
    producer: Producer | None = None
    stream_seq: str | None = None
    close: bool = False
    now: float = NOW


@dataclass(frozen=True)
class Outcome:
    """What the rules decide: an ``AppendPlan`` kind or an error with its fields."""

    #: ``append``, ``duplicate``, ``closed_only``, ``closed_duplicate`` or the error's class.
    kind: str | type[StoreError]
    #: The producer's (epoch, seq) recorded by an append, or reported by a duplicate.
    producer: tuple[int, int] | None = None
    #: The append closes the stream.
    close: bool = False
    #: The Stream-Seq the append records.
    stream_seq: str | None = None
    #: Error fields: ``tail`` (StreamClosed), ``current_epoch`` (StaleProducerEpoch),
    #: ``expected``/``received`` (ProducerSeqAhead).
    detail: dict[str, object] = field(default_factory=dict)


def appended(
    producer: tuple[int, int] | None = None, *, close: bool = False, stream_seq: str | None = None
) -> Outcome:
    return Outcome("append", producer, close, stream_seq)


def error(kind: type[StoreError], **detail: object) -> Outcome:
    return Outcome(kind, detail=detail)


TAIL = OFFSET_FMT % (3, 30)
CLOSED = Before(closed=True)
P14 = ProducerState(1, 4, T0)  # producer p at epoch 1, last seq 4
CLOSER = Producer("p", 1, 4)
CLOSED_BY_P = Before(closed=True, closed_by=CLOSER, producer=P14)
OLD = NOW - PRODUCER_STATE_TTL_SECONDS

CASES: list[tuple[str, Before, Request, Outcome]] = [
    # -- existence and expiry (DS §1: expired behaves as absent; §6 soft delete)
    ("missing stream", Before(exists=False), Request(), error(NoSuchStream)),
    ("sliding ttl alive", Before(ttl_seconds=60), Request(now=T0 + 59.5), appended()),
    ("sliding ttl at its end", Before(ttl_seconds=60), Request(now=T0 + 60), error(NoSuchStream)),
    (
        "sliding ttl counts from the last touch",
        Before(ttl_seconds=60, touched_at=T0 + 50),
        Request(now=T0 + 100),
        appended(),
    ),
    ("expires-at ahead", Before(expires_at=T0 + 30), Request(now=T0 + 29.5), appended()),
    ("expires-at reached", Before(expires_at=T0 + 30), Request(now=T0 + 30), error(NoSuchStream)),
    (
        "expires-at wins over a live ttl",
        Before(ttl_seconds=600, expires_at=T0 + 5),
        Request(),
        error(NoSuchStream),
    ),
    ("soft-deleted", Before(soft_deleted=True), Request(), error(DataGone)),
    (
        "expired beats soft-deleted",
        Before(soft_deleted=True, ttl_seconds=5),
        Request(),
        error(NoSuchStream),
    ),
    ("expired beats closed", Before(closed=True, ttl_seconds=5), Request(), error(NoSuchStream)),
    # -- closed streams (DS §2 POST: closed comes first; §3 closing request retried)
    ("closed: data", CLOSED, Request(), error(StreamClosed, tail=TAIL)),
    ("closed: close-only", CLOSED, Request(messages=(), close=True), Outcome("closed_only")),
    (
        "closed: close-only renews a sliding ttl",
        Before(closed=True, ttl_seconds=60),
        Request(messages=(), close=True),
        Outcome("closed_only"),
    ),
    ("closed: data with close", CLOSED, Request(close=True), error(StreamClosed, tail=TAIL)),
    (
        "closed: close-only with a producer",
        CLOSED,
        Request(messages=(), close=True, producer=Producer("q", 0, 0)),
        error(StreamClosed, tail=TAIL),
    ),
    (
        "closed: the closing producer request again",
        CLOSED_BY_P,
        Request(close=True, producer=CLOSER),
        Outcome("closed_duplicate"),
    ),
    (
        "closed: the closing request again without close",
        CLOSED_BY_P,
        Request(producer=CLOSER),
        Outcome("closed_duplicate"),
    ),
    (
        "closed: the closing close-only request again",
        Before(closed=True, closed_by=CLOSER, producer=P14),
        Request(messages=(), close=True, producer=CLOSER),
        Outcome("closed_duplicate"),
    ),
    (
        "closed: the closing producer's next seq",
        CLOSED_BY_P,
        Request(producer=Producer("p", 1, 5)),
        error(StreamClosed, tail=TAIL),
    ),
    (
        "closed: the closing seq at another epoch",
        CLOSED_BY_P,
        Request(producer=Producer("p", 2, 4)),
        error(StreamClosed, tail=TAIL),
    ),
    (
        "closed: another producer id with the closing epoch and seq",
        CLOSED_BY_P,
        Request(producer=Producer("q", 1, 4)),
        error(StreamClosed, tail=TAIL),
    ),
    (
        "closed beats content type",
        CLOSED,
        Request(content_type="application/json"),
        error(StreamClosed, tail=TAIL),
    ),
    (
        "closed beats a stale producer epoch",
        Before(closed=True, producer=P14),
        Request(producer=Producer("p", 0, 9)),
        error(StreamClosed, tail=TAIL),
    ),
    (
        "closed beats Stream-Seq",
        Before(closed=True, last_stream_seq="5"),
        Request(stream_seq="1"),
        error(StreamClosed, tail=TAIL),
    ),
    # -- content type (DS §5: media type, case-insensitive, parameters ignored)
    (
        "content type differs",
        Before(),
        Request(content_type="application/json"),
        error(ContentTypeMismatch),
    ),
    (
        "same media type, other case and parameters",
        Before(),
        Request(content_type="Text/Plain; charset=utf-8"),
        appended(),
    ),
    (
        "stream with parameters, request without",
        Before(content_type="text/plain; charset=utf-8"),
        Request(content_type="text/plain"),
        appended(),
    ),
    ("no content type given", Before(), Request(), appended()),
    ("empty content type", Before(), Request(content_type=""), error(ContentTypeMismatch)),
    (
        "close-only ignores the content type",
        Before(),
        Request(messages=(), close=True, content_type="application/json"),
        appended(close=True),
    ),
    (
        "content type beats producer",
        Before(),
        Request(content_type="application/json", producer=Producer("q", 0, 5)),
        error(ContentTypeMismatch),
    ),
    # -- idempotent producers (DS §3)
    ("new producer at seq 0", Before(), Request(producer=Producer("q", 0, 0)), appended((0, 0))),
    ("new producer at epoch 5", Before(), Request(producer=Producer("q", 5, 0)), appended((5, 0))),
    (
        "new producer not at seq 0",
        Before(),
        Request(producer=Producer("q", 0, 3)),
        error(ProducerSeqAhead, expected=0, received=3),
    ),
    ("next seq", Before(producer=P14), Request(producer=Producer("p", 1, 5)), appended((1, 5))),
    (
        "same seq is a duplicate",
        Before(producer=P14),
        Request(producer=Producer("p", 1, 4)),
        Outcome("duplicate", (1, 4)),
    ),
    (
        "older seq is a duplicate",
        Before(producer=P14),
        Request(producer=Producer("p", 1, 0)),
        Outcome("duplicate", (1, 4)),
    ),
    (
        "seq skips ahead",
        Before(producer=P14),
        Request(producer=Producer("p", 1, 7)),
        error(ProducerSeqAhead, expected=5, received=7),
    ),
    (
        "stale epoch is fenced",
        Before(producer=P14),
        Request(producer=Producer("p", 0, 9)),
        error(StaleProducerEpoch, current_epoch=1),
    ),
    (
        "stale epoch is fenced even at a duplicate seq",
        Before(producer=P14),
        Request(producer=Producer("p", 0, 0)),
        error(StaleProducerEpoch, current_epoch=1),
    ),
    (
        "new epoch at seq 0",
        Before(producer=P14),
        Request(producer=Producer("p", 2, 0)),
        appended((2, 0)),
    ),
    (
        "new epoch not at seq 0",
        Before(producer=P14),
        Request(producer=Producer("p", 2, 3)),
        error(ProducerBadEpochStart),
    ),
    (
        "state forgotten after the producer ttl: fencing too",
        Before(producer=ProducerState(3, 9, OLD - 1)),
        Request(producer=Producer("p", 0, 0)),
        appended((0, 0)),
    ),
    (
        "state forgotten after the producer ttl: seq restarts",
        Before(producer=ProducerState(3, 9, OLD - 1)),
        Request(producer=Producer("p", 3, 10)),
        error(ProducerSeqAhead, expected=0, received=10),
    ),
    (
        "state kept at exactly the producer ttl",
        Before(producer=ProducerState(3, 9, OLD)),
        Request(producer=Producer("p", 3, 10)),
        appended((3, 10)),
    ),
    (
        "producer on a close-only",
        Before(producer=P14),
        Request(messages=(), close=True, producer=Producer("p", 1, 5)),
        appended((1, 5), close=True),
    ),
    (
        "largest safe epoch and seq",
        Before(producer=ProducerState(SAFE, SAFE - 1, T0)),
        Request(producer=Producer("p", SAFE, SAFE)),
        appended((SAFE, SAFE)),
    ),
    (
        "largest safe epoch fences the one below",
        Before(producer=ProducerState(SAFE, 0, T0)),
        Request(producer=Producer("p", SAFE - 1, 0)),
        error(StaleProducerEpoch, current_epoch=SAFE),
    ),
    (
        "largest safe seq skips ahead",
        Before(producer=P14),
        Request(producer=Producer("p", 1, SAFE)),
        error(ProducerSeqAhead, expected=5, received=SAFE),
    ),
    (
        "duplicate beats Stream-Seq",
        Before(producer=P14, last_stream_seq="5"),
        Request(producer=Producer("p", 1, 4), stream_seq="1"),
        Outcome("duplicate", (1, 4)),
    ),
    (
        "producer gap beats Stream-Seq",
        Before(producer=P14, last_stream_seq="5"),
        Request(producer=Producer("p", 1, 9), stream_seq="1"),
        error(ProducerSeqAhead, expected=5, received=9),
    ),
    # -- Stream-Seq (DS §2: strictly increasing, byte-wise)
    ("first Stream-Seq", Before(), Request(stream_seq="a"), appended(stream_seq="a")),
    (
        "greater Stream-Seq",
        Before(last_stream_seq="0005"),
        Request(stream_seq="0006"),
        appended(stream_seq="0006"),
    ),
    (
        "equal Stream-Seq",
        Before(last_stream_seq="0005"),
        Request(stream_seq="0005"),
        error(SeqConflict),
    ),
    (
        "smaller Stream-Seq",
        Before(last_stream_seq="0005"),
        Request(stream_seq="0004"),
        error(SeqConflict),
    ),
    (
        "byte-wise, not by locale: a after B",
        Before(last_stream_seq="B"),
        Request(stream_seq="a"),
        appended(stream_seq="a"),
    ),
    (
        "byte-wise, not by locale: B before a",
        Before(last_stream_seq="a"),
        Request(stream_seq="B"),
        error(SeqConflict),
    ),
    (
        "a longer Stream-Seq with the same prefix is greater",
        Before(last_stream_seq="ab"),
        Request(stream_seq="abc"),
        appended(stream_seq="abc"),
    ),
    (
        "a prefix is smaller",
        Before(last_stream_seq="abc"),
        Request(stream_seq="ab"),
        error(SeqConflict),
    ),
    (
        "UTF-8 bytes compare",
        Before(last_stream_seq="z"),
        Request(stream_seq="é"),
        appended(stream_seq="é"),
    ),
    (
        "Stream-Seq on a close-only",
        Before(last_stream_seq="1"),
        Request(messages=(), close=True, stream_seq="2"),
        appended(close=True, stream_seq="2"),
    ),
    (
        "Stream-Seq conflict on a close-only",
        Before(last_stream_seq="2"),
        Request(messages=(), close=True, stream_seq="2"),
        error(SeqConflict),
    ),
    # -- close and batches
    ("close with data", Before(), Request(close=True), appended(close=True)),
    ("close-only", Before(), Request(messages=(), close=True), appended(close=True)),
    (
        "close by a producer",
        Before(producer=P14),
        Request(close=True, producer=Producer("p", 1, 5)),
        appended((1, 5), close=True),
    ),
    (
        "everything at once",
        Before(producer=P14, last_stream_seq="1", ttl_seconds=60),
        Request(
            messages=(b"a", b"bb", b""),
            content_type="TEXT/PLAIN",
            producer=Producer("p", 1, 5),
            stream_seq="2",
            close=True,
        ),
        appended((1, 5), close=True, stream_seq="2"),
    ),
    ("an empty stream", Before(tail_index=0), Request(messages=(b"x", b"y")), appended()),
]

IDS = [case[0] for case in CASES]


def stream_meta(before: Before) -> StreamMeta:
    """The state before, as the Python rules see it."""
    config = StreamConfig(
        content_type=before.content_type,
        ttl_seconds=before.ttl_seconds,
        expires_at=before.expires_at,
    )
    return StreamMeta(
        path=PATH,
        config=config,
        requested=config,
        created_at=T0 - 100,
        touched_at=before.touched_at,
        closed=before.closed,
        closed_by=before.closed_by,
        soft_deleted=before.soft_deleted,
        # A soft-deleted stream is one that forks still read.
        fork_refs=1 if before.soft_deleted else 0,
        tail_index=before.tail_index,
        tail_byte=10 * before.tail_index,
        last_stream_seq=before.last_stream_seq,
    )


def outcome_of(exc: StoreError) -> Outcome:
    detail: dict[str, object] = {}
    if isinstance(exc, StreamClosed):
        detail = {"tail": exc.tail}
    elif isinstance(exc, StaleProducerEpoch):
        detail = {"current_epoch": exc.current_epoch}
    elif isinstance(exc, ProducerSeqAhead):
        detail = {"expected": exc.expected, "received": exc.received}
    return Outcome(type(exc), detail=detail)


def python_rules(before: Before, request: Request) -> Outcome:
    """As ``Engine.append`` decides: ``live_meta``, then ``plan_append``."""
    meta = stream_meta(before) if before.exists else None
    producer = request.producer
    state = before.producer if producer is not None and producer.producer_id == "p" else None
    try:
        live = live_meta(meta, PATH, {}, request.now)
        plan = plan_append(
            stream_content_type=live.config.content_type,
            closed=live.closed,
            closed_by=live.closed_by,
            last_stream_seq=live.last_stream_seq,
            producer_state=state,
            message_count=len(request.messages),
            content_type=request.content_type,
            producer=producer,
            stream_seq=request.stream_seq,
            close=request.close,
            tail=live.tail,
            now=request.now,
        )
    except StoreError as exc:
        return outcome_of(exc)
    recorded = plan.producer_state
    return Outcome(
        plan.kind,
        (recorded.epoch, recorded.last_seq) if recorded is not None else None,
        plan.close,
        plan.stream_seq,
    )


@pytest.mark.parametrize(("before", "request_", "expected"), [c[1:] for c in CASES], ids=IDS)
def test_python_rules(before: Before, request_: Request, expected: Outcome) -> None:
    assert python_rules(before, request_) == expected


# -- the Lua script -------------------------------------------------------------------------


def meta_key() -> str:
    return PREFIX + "m:" + PATH


def meta_hash(meta: StreamMeta) -> dict[str, str]:
    """The metadata HASH the create and append scripts would have written for ``meta``."""
    cfg = msgspec.json.encode(meta.config).decode()
    fields = {
        "ct": meta.config.content_type,
        "mt": media_type(meta.config.content_type),
        "cfg": cfg,
        "req": cfg,
        "ca": scripts.time_text(meta.created_at),
        "ta": scripts.time_text(meta.touched_at),
        "refs": str(meta.fork_refs),
        "bi": "0",
        "bb": "0",
        "si": "0",
        "sb": "0",
        "ti": str(meta.tail_index),
        "tb": str(meta.tail_byte),
        "inc": "seeded",
    }
    if meta.config.ttl_seconds is not None:
        fields["ttl"] = str(meta.config.ttl_seconds)
    if meta.config.expires_at is not None:
        fields["exp"] = scripts.time_text(meta.config.expires_at)
    if meta.closed:
        fields["cl"] = "1"
    if meta.closed_by is not None:
        by = meta.closed_by
        fields["cb"] = f"{by.epoch} {by.seq} {by.producer_id}"
    if meta.soft_deleted:
        fields["sd"] = "1"
    if meta.last_stream_seq is not None:
        fields["ss"] = meta.last_stream_seq
    return fields


async def seed(client: aioredis.Redis, before: Before) -> dict[bytes, bytes]:
    """Write ``before`` as the scripts' keys; returns the metadata HASH written."""
    if not before.exists:
        return {}
    meta = stream_meta(before)
    await client.hset(meta_key(), mapping=meta_hash(meta))
    written = await client.hgetall(meta_key())
    # The same state on both sides: the store reads back exactly the Python rules' meta.
    assert scripts.parse_meta(PATH, scripts.flat(written)) == meta
    for k in range(before.tail_index):
        await client.xadd(PREFIX + "d:" + PATH, {"d": b"%010d" % k}, id=f"{k + 1}-{10 * k}")
    if before.producer is not None:
        state = before.producer
        await client.hset(
            PREFIX + "p:" + PATH,
            "p",
            f"{state.epoch} {state.last_seq} {scripts.time_text(state.updated_at)}",
        )
    return dict(written)


def lua_outcome(res: object, request: Request, after: dict[bytes, bytes]) -> Outcome:
    """The script's reply as an :class:`Outcome` (errors mapped as the store maps them)."""
    if isinstance(res, bytes):
        # "ok <old tail index> <old tail byte> <tail index> <tail byte> <flag> <epoch> <seq> ..."
        _, _, _, _, _, flag, epoch, seq, _ = res.decode().split(" ", 8)
        recorded = (int(epoch), int(seq)) if epoch != "-" else None
        stream_seq = after[b"ss"].decode() if request.stream_seq is not None else None
        return appended(recorded, close=flag == "c", stream_seq=stream_seq)
    assert isinstance(res, list)
    status = res[0]
    if status == b"dup":
        return Outcome("duplicate", (int(res[3]), int(res[4])))
    if status == b"closed_only":
        return Outcome("closed_only")
    if status == b"closed_dup":
        return Outcome("closed_duplicate")
    exc = scripts.append_error(PATH, res)
    assert isinstance(exc, StoreError) and not isinstance(exc, StoreUnavailable), res
    return outcome_of(exc)


async def check_writes(
    client: aioredis.Redis,
    before: Before,
    request: Request,
    outcome: Outcome,
    seeded: dict[bytes, bytes],
) -> None:
    """What the script wrote matches its decision (and nothing else changed)."""
    after = await client.hgetall(meta_key())
    entries = await client.xrange(PREFIX + "d:" + PATH)
    producers = await client.hgetall(PREFIX + "p:" + PATH)
    expected_producers = (
        {b"p": b"%d %d %s" % (before.producer.epoch, before.producer.last_seq,
                              scripts.time_text(before.producer.updated_at).encode())}
        if before.producer is not None
        else {}
    )  # fmt: skip
    now_text = scripts.time_text(request.now).encode()
    if outcome.kind != "append":
        expected = dict(seeded)
        if outcome.kind == "closed_only" and before.ttl_seconds is not None:
            expected[b"ta"] = now_text  # DS §2: a close-only still renews a sliding TTL
        assert after == expected
        assert len(entries) == before.tail_index
        assert producers == expected_producers
        return
    index, byte_pos = before.tail_index, 10 * before.tail_index
    new = entries[before.tail_index :]
    assert [data[b"d"] for _, data in new] == list(request.messages)
    for (entry_id, _), data in zip(new, request.messages, strict=True):
        assert entry_id == f"{index + 1}-{byte_pos}".encode()
        index, byte_pos = index + 1, byte_pos + len(data)
    expected = dict(seeded)
    expected.update({b"ti": str(index).encode(), b"tb": str(byte_pos).encode(), b"ta": now_text})
    if outcome.close:
        expected[b"cl"] = b"1"
        if request.producer is not None:
            p = request.producer
            expected[b"cb"] = f"{p.epoch} {p.seq} {p.producer_id}".encode()
    if outcome.stream_seq is not None:
        expected[b"ss"] = outcome.stream_seq.encode()
    assert after == expected
    if outcome.producer is not None:
        assert request.producer is not None
        expected_producers[request.producer.producer_id.encode()] = b"%d %d %s" % (
            *outcome.producer,
            now_text,
        )
    assert producers == expected_producers


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.mark.parametrize(("before", "request_", "expected"), [c[1:] for c in CASES], ids=IDS)
async def test_lua_script(
    client: aioredis.Redis, before: Before, request_: Request, expected: Outcome
) -> None:
    seeded = await seed(client, before)
    args = scripts.append_args(
        PREFIX,
        PATH,
        request_.messages,
        content_type=request_.content_type,
        producer=request_.producer,
        stream_seq=request_.stream_seq,
        close=request_.close,
        now=request_.now,
    )
    res = await client.eval(scripts.APPEND.source, 0, *args)
    after = await client.hgetall(meta_key())
    outcome = lua_outcome(res, request_, after)
    assert outcome == expected
    if before.exists:
        await check_writes(client, before, request_, outcome, seeded)


def test_the_table_covers_every_decision() -> None:
    """Every kind the rules can decide (and every error they raise) has a row."""
    kinds = {case[3].kind for case in CASES}
    assert kinds == {
        "append",
        "duplicate",
        "closed_only",
        "closed_duplicate",
        NoSuchStream,
        DataGone,
        StreamClosed,
        ContentTypeMismatch,
        StaleProducerEpoch,
        ProducerBadEpochStart,
        ProducerSeqAhead,
        SeqConflict,
    }
