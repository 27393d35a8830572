"""Pure Durable Streams protocol logic: parsing, validation and framing.

No I/O, no clock reads (time is an argument), no asyncio: the HTTP handlers in
:mod:`durasync.streams.app` call these and stay thin, and tests drive them
directly. Section numbers ("DS §2") refer to the Durable Streams protocol
(``shared/reference/durable-streams-protocol.md``).

Every parser raises :class:`RequestRefused` with an HTTP status, a stable
machine code and a short message naming the problem; the app turns it into a
``{"error": {"code": ..., "message": ...}}`` body.
"""

from __future__ import annotations

import base64
import functools
import random
import re
from datetime import datetime
from typing import Any, Final
from urllib.parse import unquote_to_bytes

import msgspec

from durasync.httpwire import media_type
from durasync.streams.errors import RequestRefused

__all__ = [
    "CURSOR_EPOCH",
    "CURSOR_INTERVAL",
    "MAX_APPEND_MESSAGES",
    "MAX_SAFE_INTEGER",
    "ProducerHeaders",
    "RequestRefused",
    "check_expiry",
    "compute_cursor",
    "decode_path",
    "etag_for",
    "etag_matches",
    "is_text_type",
    "json_array",
    "normalize_content_type",
    "parse_bool_true",
    "parse_expires_at",
    "parse_json_messages",
    "parse_non_negative_int",
    "parse_offset",
    "parse_producer",
    "parse_stream_seq",
    "parse_ttl",
    "sse_control",
    "sse_data",
    "validate_stream_path",
]

#: JavaScript's Number.MAX_SAFE_INTEGER: the bound of producer epoch/seq (DS §3).
MAX_SAFE_INTEGER: Final = 2**53 - 1
#: Cursor epoch and interval of DS §7 (the reference's defaults).
CURSOR_EPOCH: Final = 1728432000.0  # 2024-10-09T00:00:00Z
CURSOR_INTERVAL: Final = 20.0
#: Upper bounds that keep hostile values cheap to handle.
MAX_OFFSET_LEN: Final = 256
MAX_PATH_LEN: Final = 1024
MAX_SEQ_LEN: Final = 256
MAX_PRODUCER_ID_LEN: Final = 256
MAX_CONTENT_TYPE_LEN: Final = 256
#: Default cap on the messages of one JSON-mode append (PUT or POST body).
MAX_APPEND_MESSAGES: Final = 100_000


def _bad(code: str, message: str) -> RequestRefused:
    return RequestRefused(400, code, message)


# --------------------------------------------------------------------------
# Paths and offsets
# --------------------------------------------------------------------------

# Control characters and backslash never appear in a stream path.
_PATH_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")


def validate_stream_path(path: str) -> str:
    """Validate a stream path (the part after ``/v1/stream/``) and return it.

    Rejects (400) empty paths, over-long paths, control characters, empty
    segments and ``.``/``..`` segments (path traversal, DS §8).
    """
    if not path:
        raise _bad("INVALID_PATH", "missing stream path after /v1/stream/")
    if len(path) > MAX_PATH_LEN:
        raise _bad("INVALID_PATH", f"stream path longer than {MAX_PATH_LEN} characters")
    if _PATH_FORBIDDEN.search(path):
        raise _bad("INVALID_PATH", "stream path contains control characters or backslash")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise _bad("INVALID_PATH", "stream path has an empty, '.' or '..' segment")
    return path


def decode_path(path: str, raw_path: bytes | None) -> str:
    """``path`` as the server decoded it, checked against the raw request path.

    ASGI servers percent-decode the path leniently: invalid UTF-8 becomes U+FFFD, so
    ``/a%FF`` and ``/a%FE`` would both name the stream ``a\ufffd``. When ``path`` holds
    U+FFFD, the raw path must decode as strict UTF-8 (a literal U+FFFD, sent as
    ``%EF%BF%BD``, is fine).

    Raises:
        RequestRefused: 400 ``INVALID_PATH`` when the raw path is not UTF-8.
    """
    if "\ufffd" in path and raw_path is not None:
        try:
            unquote_to_bytes(raw_path.split(b"?", 1)[0]).decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("INVALID_PATH", "the request path is not valid UTF-8") from None
    return path


# Unreserved URL characters (RFC 3986) only: excludes `, & = ? /` (DS §4),
# whitespace and anything needing escaping.
_OFFSET_RE = re.compile(r"[A-Za-z0-9._~-]+")


def parse_offset(values: list[str]) -> str | None:
    """Parse the ``offset`` query values; ``None`` when absent.

    Returns the offset text (``-1``/``now`` sentinels included). The store
    judges whether a well-formed offset is a boundary of the stream.

    Raises:
        RequestRefused: repeated, empty, over-long or with forbidden characters.
    """
    if not values:
        return None
    if len(values) > 1:
        raise _bad("INVALID_OFFSET", "offset given more than once")
    value = values[0]
    if not value:
        raise _bad("INVALID_OFFSET", "offset is empty")
    if len(value) > MAX_OFFSET_LEN or _OFFSET_RE.fullmatch(value) is None:
        raise _bad("INVALID_OFFSET", "offset is malformed")
    return value


# --------------------------------------------------------------------------
# Header values
# --------------------------------------------------------------------------

_UINT_RE = re.compile(r"0|[1-9][0-9]{0,15}")


def parse_non_negative_int(value: str, name: str, *, maximum: int = MAX_SAFE_INTEGER) -> int:
    """Strict non-negative decimal integer: no sign, leading zero, point or exponent.

    Raises:
        RequestRefused: any other syntax or a value above ``maximum``.
    """
    if _UINT_RE.fullmatch(value) is None:
        raise _bad("INVALID_HEADER", f"{name} must be a non-negative integer without sign")
    number = int(value)
    if number > maximum:
        raise _bad("INVALID_HEADER", f"{name} is larger than {maximum}")
    return number


def parse_ttl(value: str) -> int:
    """``Stream-TTL`` (DS §2 PUT): seconds as a strict non-negative integer, at least 1.

    DS §2 fixes the syntax (``0`` is well-formed) but a stream with TTL 0 would expire as
    it is created (201, then 404 on every request): refused so the mistake shows at once.
    """
    ttl = parse_non_negative_int(value, "Stream-TTL", maximum=10**12)
    if ttl == 0:
        raise _bad("INVALID_HEADER", "Stream-TTL must be at least 1 (0 expires the stream at once)")
    return ttl


_RFC3339_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_expires_at(value: str) -> float:
    """``Stream-Expires-At`` (DS §2 PUT): an RFC 3339 timestamp -> Unix seconds."""
    if _RFC3339_RE.fullmatch(value) is None:
        raise _bad("INVALID_HEADER", "Stream-Expires-At must be an RFC 3339 timestamp")
    text = value.upper().replace("Z", "+00:00")
    # fromisoformat takes at most 6 fractional digits; keep microseconds.
    match = re.search(r"\.([0-9]+)", text)
    if match and len(match.group(1)) > 6:
        text = text[: match.start(1) + 6] + text[match.end(1) :]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise _bad("INVALID_HEADER", "Stream-Expires-At is not a valid date and time") from None


def check_expiry(expires_at: float, now: float) -> float:
    """``Stream-Expires-At`` must lie in the future at ``now`` (Unix seconds).

    A stream created already expired would answer 201 and then 404: refused instead.

    Raises:
        RequestRefused: 400 ``INVALID_HEADER`` when ``expires_at <= now``.
    """
    if expires_at <= now:
        raise _bad(
            "INVALID_HEADER", "Stream-Expires-At is in the past (the stream would never exist)"
        )
    return expires_at


def parse_bool_true(value: str | None) -> bool:
    """``Stream-Closed`` (DS §2): exactly ``true`` (any case); anything else is absent."""
    return value is not None and value.strip().lower() == "true"


def parse_stream_seq(value: str | None) -> str | None:
    """``Stream-Seq`` (DS §2 POST): an opaque, non-empty, bounded string."""
    if value is None:
        return None
    if not value:
        raise _bad("INVALID_HEADER", "Stream-Seq is empty")
    if len(value) > MAX_SEQ_LEN:
        raise _bad("INVALID_HEADER", f"Stream-Seq longer than {MAX_SEQ_LEN} characters")
    return value


class ProducerHeaders(msgspec.Struct, frozen=True):
    """Parsed ``Producer-Id/Epoch/Seq`` headers (DS §3)."""

    producer_id: str
    epoch: int
    seq: int


def parse_producer(pid: str | None, epoch: str | None, seq: str | None) -> ProducerHeaders | None:
    """All three producer headers or none (DS §3); else 400."""
    if pid is None and epoch is None and seq is None:
        return None
    if pid is None or epoch is None or seq is None:
        raise _bad(
            "INVALID_PRODUCER",
            "Producer-Id, Producer-Epoch and Producer-Seq must be sent together",
        )
    if not pid.strip():
        raise _bad("INVALID_PRODUCER", "Producer-Id is empty")
    if len(pid) > MAX_PRODUCER_ID_LEN:
        raise _bad("INVALID_PRODUCER", f"Producer-Id longer than {MAX_PRODUCER_ID_LEN}")
    return ProducerHeaders(
        pid,
        parse_non_negative_int(epoch, "Producer-Epoch"),
        parse_non_negative_int(seq, "Producer-Seq"),
    )


# --------------------------------------------------------------------------
# Content types (DS §5)
# --------------------------------------------------------------------------

_MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")


@functools.lru_cache(maxsize=256)
def normalize_content_type(value: str) -> str:
    """Canonical form used for storage and comparison (pure; results are LRU-cached).

    The media type is lower-cased (comparisons are case-insensitive, DS §5);
    parameters are kept, trimmed, joined by ``"; "``.

    Raises:
        RequestRefused: not ``type/subtype[; params]`` or over-long.
    """
    if len(value) > MAX_CONTENT_TYPE_LEN:
        raise _bad("INVALID_CONTENT_TYPE", "Content-Type is too long")
    parts = value.split(";")
    media = parts[0].strip()
    if _MEDIA_TYPE_RE.fullmatch(media) is None:
        raise _bad("INVALID_CONTENT_TYPE", "Content-Type is not a media type")
    params = [p.strip() for p in parts[1:] if p.strip()]
    for param in params:
        if "=" not in param or any(ord(c) < 0x20 or ord(c) == 0x7F for c in param):
            raise _bad("INVALID_CONTENT_TYPE", "Content-Type has a malformed parameter")
    media = media.lower()
    return "; ".join([media, *params]) if params else media


def is_text_type(content_type: str) -> bool:
    """SSE sends ``text/*`` and JSON as UTF-8 text; anything else as base64 (DS §2 SSE)."""
    mt = media_type(content_type)
    return mt.startswith("text/") or mt == "application/json"


# --------------------------------------------------------------------------
# JSON mode (DS §5)
# --------------------------------------------------------------------------

_json_encoder = msgspec.json.Encoder()
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_raw_decoder = msgspec.json.Decoder(msgspec.Raw)
_JSON_WS = b" \t\r\n"


class _Counted:
    """What the counting decoder makes of every value of the array (one shared instance)."""

    __slots__ = ()


_COUNTED: Final = _Counted()


class _TooMany(Exception):
    pass


def _check_count(body: bytes, limit: int) -> None:
    """Refuse a JSON array of more than ``limit`` values, stopping at value ``limit + 1``.

    Each value is decoded on its own and dropped at once (a ``dec_hook`` counts them), so
    the memory is one value at a time and the time is one decoding pass of at most the
    first ``limit + 1`` values.

    Raises:
        RequestRefused: 413 ``TOO_MANY_MESSAGES``.
        msgspec.DecodeError, RecursionError: the body is not valid JSON / too deep.
    """
    seen = 0

    def count(kind: type, value: Any) -> _Counted:
        nonlocal seen
        seen += 1
        if seen > limit:
            raise _TooMany
        return _COUNTED

    try:
        msgspec.json.Decoder(list[_Counted], dec_hook=count).decode(body)
    except _TooMany:
        raise RequestRefused(
            413, "TOO_MANY_MESSAGES", f"a JSON append may carry at most {limit} messages"
        ) from None


def parse_json_messages(
    body: bytes, *, allow_empty_array: bool, max_messages: int = MAX_APPEND_MESSAGES
) -> list[bytes]:
    """Split a JSON-mode body into messages, flattening one array level.

    ``[a, b]`` -> two messages, ``[[1, 2]]`` -> one message ``[1, 2]``, a
    non-array value -> one message. Each message keeps its exact bytes.

    Memory: the body plus about 100 bytes per message; an array of more than
    ``max_messages`` values is refused without materializing them (an array with fewer
    commas than the cap is decoded directly, any other is counted first, value by value).

    Raises:
        RequestRefused: 400 ``INVALID_JSON`` for invalid JSON, JSON nested deeper than
            the decoder's recursion limit (about 1,000 levels), or ``[]`` when not
            ``allow_empty_array`` (POST ``[]`` -> 400, PUT ``[]`` is an empty stream);
            413 ``TOO_MANY_MESSAGES`` for more than ``max_messages`` messages.
    """
    stripped = body.lstrip(_JSON_WS)
    try:
        if stripped[:1] == b"[":
            if body.count(b",") >= max_messages:
                # As many commas as the cap: count the values before materializing them.
                _check_count(body, max_messages)
            items = _raw_list_decoder.decode(body)
            if not items and not allow_empty_array:
                raise _bad("EMPTY_JSON_ARRAY", "an empty JSON array appends nothing")
            return [bytes(item) for item in items]
        return [bytes(_raw_decoder.decode(body))]
    except msgspec.DecodeError as exc:
        raise _bad("INVALID_JSON", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _bad("INVALID_JSON", "body is JSON nested too deeply") from None


def json_array(messages: list[bytes]) -> bytes:
    """Serve JSON-mode messages as one JSON array (``[]`` when none)."""
    if not messages:
        return b"[]"
    return b"[" + b",".join(messages) + b"]"


# --------------------------------------------------------------------------
# Caching (DS §7)
# --------------------------------------------------------------------------


def etag_for(path: str, start: str, end: str, closed: bool) -> str:
    """Strong ETag for a read of ``path`` from ``start`` to ``end``.

    Changes when the stream gets closed (``:c`` suffix), as DS §7 requires.
    """
    pid = base64.urlsafe_b64encode(path.encode()).decode().rstrip("=")
    return f'"{pid}:{start}:{end}{":c" if closed else ""}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of an ``If-None-Match`` list against ``etag``."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def compute_cursor(
    now: float,
    client_cursor: str | None,
    *,
    interval: float = CURSOR_INTERVAL,
    epoch: float = CURSOR_EPOCH,
    rng: random.Random | None = None,
) -> str:
    """The ``Stream-Cursor`` of a live response (DS §7).

    The number of whole ``interval``s since ``epoch``; if the client already
    holds a cursor at or past that, a strictly larger one (1-3600 s of random
    jitter), so CDN cache keys never loop.
    """
    current = int((now - epoch) // interval)
    if client_cursor is not None and _UINT_RE.fullmatch(client_cursor):
        previous = int(client_cursor)
        if previous >= current:
            jitter_seconds = (rng or random).randint(1, 3600)
            return str(previous + max(1, int(jitter_seconds // interval)))
    return str(max(current, 0))


# --------------------------------------------------------------------------
# SSE framing (DS §2 GET live=sse)
# --------------------------------------------------------------------------

_LINE_SPLIT = re.compile(rb"\r\n|\r|\n")


def sse_data(payload: bytes, *, base64_encode: bool) -> bytes:
    """One ``event: data`` frame.

    Every CR, LF or CRLF in ``payload`` starts a new ``data:`` line, so the
    payload can never end the event or inject another one. A line that starts
    with a space gets one extra space, because SSE parsers strip one after
    ``data:``.
    """
    if base64_encode:
        return b"event: data\ndata:" + base64.b64encode(payload) + b"\n\n"
    lines = _LINE_SPLIT.split(payload)
    return (
        b"event: data\n"
        + b"".join([(b"data: " if line[:1] == b" " else b"data:") + line + b"\n" for line in lines])
        + b"\n"
    )


class _Control(msgspec.Struct, omit_defaults=True, rename="camel"):
    stream_next_offset: str
    stream_cursor: str | None = None
    up_to_date: bool = False
    stream_closed: bool = False


def sse_control(next_offset: str, *, cursor: str | None, up_to_date: bool, closed: bool) -> bytes:
    """One ``event: control`` frame (camelCase JSON; no cursor once closed)."""
    control = _Control(
        stream_next_offset=next_offset,
        stream_cursor=None if closed else cursor,
        up_to_date=up_to_date or closed,
        stream_closed=closed,
    )
    return b"event: control\ndata:" + _json_encoder.encode(control) + b"\n\n"
