"""The Durable Streams HTTP protocol as a raw ASGI app over a :class:`LogStore`.

Serves ``PUT/POST/GET/HEAD/DELETE`` on ``{prefix}/<path>`` (DS §2) and hands
``{prefix}/__ds/...`` to the subscription service (DS §9). Handlers are thin:
parsing, validation and framing live in :mod:`durasync.streams.protocol`;
ordering, durability and the atomic checks live in the store.

Why raw ASGI instead of Starlette ``Request``/``Response`` objects: the append
and read paths are the hot paths of the benchmark, and this avoids building
request/response objects, lets us stream the body under a size limit, and
gives exact control of the SSE framing. The app is mounted into a Starlette
application by :func:`durasync.server.create_app`.

Guarantees:

- every malformed request gets a 4xx with ``{"error": {"code", "message"}}``;
  a store outage is a 503 with ``Retry-After``; any other exception is logged
  and answered 500 (never a traceback on the wire);
- a body larger than ``max_body_bytes`` is refused with 413 while it streams
  in (never buffered beyond the limit);
- :meth:`StreamsApp.begin_shutdown` ends every open long-poll (204) and SSE
  stream promptly, so a graceful shutdown does not wait for live timeouts.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import operator
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import parse_qs, quote

import msgspec
from starlette.types import Message, Receive, Scope, Send

from durasync.auth import (
    Action,
    AuthError,
    Authorizer,
    LoopbackAuthorizer,
    credentials_from_scope,
)
from durasync.httpwire import error_body, is_json
from durasync.metrics import Metrics
from durasync.namespaces import ReservedAccess, is_reserved
from durasync.store.base import (
    OFFSET_NOW,
    OFFSET_START,
    AppendResult,
    Entry,
    LogStore,
    Producer,
    ReadResult,
    StreamConfig,
    StreamInfo,
)
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
    StoreUnavailable,
    StreamClosed,
    StreamExists,
)
from durasync.store.rules import fork_prefix
from durasync.streams import protocol as p

__all__ = [
    "CONNECTION_EXTENSION",
    "PREFLIGHT_HEADERS",
    "SECURITY_HEADERS",
    "Connection",
    "CorsPolicy",
    "StreamSettings",
    "StreamsApp",
    "answer_preflight",
    "normalize_origin",
]

log = logging.getLogger("durasync.streams")

#: ``on_created(path, info)``: awaited after a PUT created a stream, before the 201.
StreamCreatedHook = Callable[[str, StreamInfo], Awaitable[None]]
#: ``on_deleted(path)``: awaited after a DELETE removed a stream, before the 204.
StreamDeletedHook = Callable[[str], Awaitable[None]]


class StreamSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Tunables of the streams layer (defaults follow the reference server)."""

    #: URL prefix of the stream root (the conformance suite uses /v1/stream).
    prefix: str = "/v1/stream"
    #: How long a long-poll waits for data before answering 204 (DS §2).
    long_poll_timeout: float = 30.0
    #: SSE connections end after this long so CDNs can collapse (DS §2 SSE).
    sse_max_duration: float = 60.0
    #: Largest accepted request body (413 above).
    max_body_bytes: int = 16 * 1024 * 1024
    #: Most messages one JSON-mode PUT or POST may carry (413 ``TOO_MANY_MESSAGES`` above).
    max_append_messages: int = p.MAX_APPEND_MESSAGES
    #: Catch-up chunk limit; a read returns at least one message. 4 MiB keeps
    #: the per-response overhead small on a long catch-up (the reference sends
    #: everything in one response) while bounding the memory of one response.
    read_chunk_bytes: int = 4 * 1024 * 1024
    read_chunk_messages: int = 100_000
    #: Largest piece a response body is written in. A larger catch-up answer is written
    #: piece by piece; while the client does not read, the app drops the unwritten part of
    #: its chunk and reads it again from the store as the client drains (with a server that
    #: offers the connection extension, see :data:`CONNECTION_EXTENSION`). SSE reads at most
    #: this much per event.
    write_chunk_bytes: int = 64 * 1024
    #: Bytes of catch-up chunks that responses may hold at once (payload plus
    #: :data:`ENTRY_OVERHEAD` per message). While it is used up, further catch-up and
    #: long-poll reads return at most ``write_chunk_bytes`` (DS §2 lets the server pick the
    #: chunk size), so many concurrent catch-ups cost about this much, not
    #: ``read_chunk_bytes`` each.
    read_budget_bytes: int = 16 * 1024 * 1024
    #: Cursor interval in seconds (DS §7).
    cursor_interval: float = p.CURSOR_INTERVAL
    #: ``Cache-Control`` scope of cacheable reads: ``public`` or ``private``
    #: (private when reads are user-specific, e.g. behind token auth).
    cache_scope: str = "public"
    #: Reserved paths (first segment ``__``, see :mod:`durasync.namespaces`) that the public
    #: API serves read-only; every other reserved path answers 404.
    public_reserved: frozenset[str] = frozenset()
    #: Browser origins that may read responses (``*``: any, for loopback development);
    #: see :class:`CorsPolicy`.
    cors_origins: tuple[str, ...] = ("*",)


# Header names (ASGI gives them lower-cased).
H_CONTENT_TYPE: Final = b"content-type"
H_CONTENT_LENGTH: Final = b"content-length"
H_NEXT_OFFSET: Final = b"stream-next-offset"
H_UP_TO_DATE: Final = b"stream-up-to-date"
H_CLOSED: Final = b"stream-closed"
H_CURSOR: Final = b"stream-cursor"
H_SEQ: Final = b"stream-seq"
H_TTL: Final = b"stream-ttl"
H_EXPIRES_AT: Final = b"stream-expires-at"
H_FORKED_FROM: Final = b"stream-forked-from"
H_FORK_OFFSET: Final = b"stream-fork-offset"
H_FORK_SUB_OFFSET: Final = b"stream-fork-sub-offset"
H_PRODUCER_ID: Final = b"producer-id"
H_PRODUCER_EPOCH: Final = b"producer-epoch"
H_PRODUCER_SEQ: Final = b"producer-seq"
H_PRODUCER_EXPECTED: Final = b"producer-expected-seq"
H_PRODUCER_RECEIVED: Final = b"producer-received-seq"
H_SSE_ENCODING: Final = b"stream-sse-data-encoding"
H_ETAG: Final = b"etag"
H_IF_NONE_MATCH: Final = b"if-none-match"
H_CACHE_CONTROL: Final = b"cache-control"

TRUE: Final = b"true"
#: Optional request headers of a POST (DS §2 close and Stream-Seq, DS §3 producer).
_POST_OPTIONAL: Final = frozenset(
    (H_CLOSED, H_SEQ, H_PRODUCER_ID, H_PRODUCER_EPOCH, H_PRODUCER_SEQ)
)
NO_STORE: Final = (H_CACHE_CONTROL, b"no-store")
JSON_CT: Final = (H_CONTENT_TYPE, b"application/json")

#: Protocol headers browsers may send (CORS preflight) and read (expose).
REQUEST_HEADERS: Final = (
    "Content-Type, Authorization, If-None-Match, Stream-Seq, Stream-TTL, "
    "Stream-Expires-At, Stream-Closed, Stream-Forked-From, Stream-Fork-Offset, "
    "Stream-Fork-Sub-Offset, Producer-Id, Producer-Epoch, Producer-Seq"
)
EXPOSE_HEADERS: Final = (
    "Stream-Next-Offset, Stream-Up-To-Date, Stream-Closed, Stream-Cursor, "
    "Stream-TTL, Stream-Expires-At, Stream-SSE-Data-Encoding, Producer-Epoch, "
    "Producer-Seq, Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, "
    "Content-Type, Retry-After, WWW-Authenticate"
)
METHODS: Final = "GET, HEAD, PUT, POST, DELETE, OPTIONS"

#: DS §8 headers on every response, pre-encoded once. The streams app adds
#: them itself in its single respond path so it can be served without any
#: wrapping middleware (each ``send`` wrapper costs on every live delivery).
SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-resource-policy", b"cross-origin"),
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
)
#: Answer to a CORS preflight (sent before auth: browsers send no credentials).
PREFLIGHT_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    *SECURITY_HEADERS,
    (b"access-control-allow-methods", METHODS.encode()),
    (b"access-control-allow-headers", REQUEST_HEADERS.encode()),
    (b"access-control-max-age", b"86400"),
    (b"content-length", b"0"),
)


H_ORIGIN: Final = b"origin"
H_ALLOW_ORIGIN: Final = b"access-control-allow-origin"
_VARY_ORIGIN: Final = (b"vary", b"Origin")


def normalize_origin(origin: str) -> str:
    """An allowed-origins entry in the form browsers send (``scheme://host[:port]``, lower
    case), or ``*``.

    Raises:
        ValueError: anything else (a path, a query, a missing scheme).
    """
    value = origin.strip().rstrip("/").lower()
    if value == "*":
        return value
    scheme, sep, host = value.partition("://")
    if not sep or scheme not in ("http", "https") or not host or any(c in host for c in "/?#@ "):
        raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
    return value


class CorsPolicy:
    """Which browser origins may read responses (DS §8 CORS).

    ``("*",)`` (the default) answers ``Access-Control-Allow-Origin: *`` everywhere, as the
    static :data:`SECURITY_HEADERS` do, at no cost per request. With a list of origins, a
    request whose ``Origin`` is in the list gets it echoed, any other gets no
    ``Access-Control-Allow-Origin`` (the browser withholds the response from the page), and
    every response carries ``Vary: Origin`` so caches keep the answers apart.
    """

    __slots__ = ("any_origin", "origins")

    def __init__(self, origins: tuple[str, ...] | list[str] = ("*",)) -> None:
        normalized = [normalize_origin(o) for o in origins]
        self.any_origin = not normalized or "*" in normalized
        self.origins = frozenset(normalized)

    def allowed(self, scope: Scope) -> bytes | None:
        """The request's ``Origin`` if it may read the response, else None."""
        for name, value in scope.get("headers", ()):
            if name == H_ORIGIN:
                origin: bytes = value
                return origin if origin.decode("latin-1").lower() in self.origins else None
        return None

    def wrap(self, scope: Scope, send: Send) -> Send:
        """``send`` that applies the list of origins to every response head (idempotent:
        wrapping twice gives the same headers). Identity when any origin is allowed."""
        if self.any_origin:
            return send
        allowed = self.allowed(scope)

        async def cors_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != H_ALLOW_ORIGIN]
                if not any(n.lower() == b"vary" and b"origin" in v.lower() for n, v in headers):
                    headers.append(_VARY_ORIGIN)
                if allowed is not None:
                    headers.append((H_ALLOW_ORIGIN, allowed))
                message = {**message, "headers": headers}
            await send(message)

        return cors_send


async def answer_preflight(scope: Scope, send: Send) -> bool:
    """Answer a CORS preflight (DS §8) before auth; True if ``scope`` was one.

    Browsers send preflights (``OPTIONS`` with ``Access-Control-Request-Method``)
    without credentials, so they must not reach the authorizer.
    """
    if scope["method"] != "OPTIONS":
        return False
    for name, _ in scope["headers"]:
        if name == b"access-control-request-method":
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": list(PREFLIGHT_HEADERS),
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return True
    return False


#: ASGI scope extension (``scope["extensions"][CONNECTION_EXTENSION]["handle"]``, a
#: :class:`Connection`) through which the server layer (:mod:`durasync.httpserver`) lets a
#: response see its connection. Optional: without it the app answers the same, but holds a
#: catch-up chunk while it is written and notices a gone long-poll client only when its wait
#: ends.
CONNECTION_EXTENSION: Final = "durasync.connection"


class Connection(Protocol):
    """The connection a response is written to (see :data:`CONNECTION_EXTENSION`)."""

    #: True once the connection is gone.
    lost: bool

    @property
    def write_paused(self) -> bool:
        """True while the client is not draining: the next ``send`` will wait."""
        ...

    def on_lost(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` once when the connection is lost (one slot; None clears it)."""
        ...

    def abort(self) -> None:
        """Drop the connection (a response that cannot be finished)."""
        ...


def _connection(scope: Scope) -> Connection | None:
    extensions = scope.get("extensions")
    if extensions is None:
        return None
    info = extensions.get(CONNECTION_EXTENSION)
    if info is None:
        return None
    conn: Connection | None = info.get("handle")
    return conn


Headers = list[tuple[bytes, bytes]]

#: Seconds a catch-up answer keeps its chunk while its client does not drain (then drops
#: it and re-reads the rest from the store as the client drains).
RELEASE_AFTER: Final = 0.1
#: Seconds a response may write pieces without letting other connections run.
YIELD_AFTER: Final = 0.005
#: Memory of one read message besides its payload (its Entry and offset strings), as the
#: read budget counts it.
ENTRY_OVERHEAD: Final = 200

#: Bounds of the shared live answers (``StreamsApp._sse_events`` and
#: ``_long_poll_200``): streams remembered, and the largest body shared
#: (live-tail sized; catch-up chunks are never kept).
SHARED_SLOTS: Final = 256
SHARED_MAX_BYTES: Final = 64 * 1024

_V = TypeVar("_V")


def _remember(slots: dict[str, _V], path: str, value: _V, size: int) -> None:
    """Keep ``value`` as ``path``'s one shared answer, within the bounds above."""
    if size > SHARED_MAX_BYTES:
        return
    slots.pop(path, None)
    if len(slots) >= SHARED_SLOTS:
        # Evict the oldest slot (dicts keep insertion order).
        del slots[next(iter(slots))]
    slots[path] = value


class _Disconnected(Exception):
    """The client went away while we read its body."""


class _Live:
    """One live (long-poll or SSE) request: lets shutdown/disconnect end its wait."""

    __slots__ = ("ended", "sse", "task", "waiting")

    def __init__(self, sse: bool = False) -> None:
        #: An SSE response (else a long-poll), for the metrics.
        self.sse = sse
        #: The request's own task (found once per request, not once per wait:
        #: an SSE response waits once per delivery).
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        #: True while the task waits in :meth:`StreamsApp._wait`.
        self.waiting = False
        self.ended = False

    def end(self) -> None:
        # Idempotent: ``_wait`` absorbs exactly one cancellation of its own.
        if self.ended:
            return
        self.ended = True
        if self.waiting and self.task is not None:
            self.task.cancel()


def _always() -> bool:
    return True


def _never() -> bool:
    return False


def _first(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def _now() -> float:
    return time.time()


class StreamsApp:
    """ASGI app serving the Durable Streams protocol over one store.

    ``subscriptions`` (optional) is the ASGI app for ``{prefix}/__ds/...`` and
    gets ``notify_append(path, tail)`` after every append that wrote data or
    closed a stream.

    Reserved paths (:mod:`durasync.namespaces`) answer 404 for every method and
    principal, except those declared in ``settings.public_reserved`` (read-only,
    403 ``READ_ONLY`` on writes) and the ``__ds`` routes above. An instance that
    a layer mounts to serve its own reserved stream under its own route and
    authorization (the rooms journal) passes ``serve_reserved=True``; no such
    instance may be mounted on a path a client chooses.
    """

    def __init__(
        self,
        store: LogStore,
        settings: StreamSettings | None = None,
        *,
        authorizer: Authorizer | None = None,
        subscriptions: Any | None = None,
        serve_reserved: bool = False,
        metrics: Metrics | None = None,
        on_created: StreamCreatedHook | None = None,
        on_deleted: StreamDeletedHook | None = None,
        write_guard: Callable[[str], str | None] | None = None,
    ) -> None:
        self.store = store
        #: Says why a stream may not be written through this API (a read-only replica of
        #: another server's stream), or None; such writes get 403 ``READ_ONLY_MIRROR``.
        self.write_guard = write_guard
        #: Counters (no-op children when metrics are off or not given).
        self.metrics = metrics or Metrics(enabled=False)
        #: Lifecycle hooks for embedders (registry stream); a hook's error is logged and the
        #: request still succeeds: the stream was created or deleted.
        self.on_created = on_created
        self.on_deleted = on_deleted
        self.settings = settings or StreamSettings()
        self.authorizer: Authorizer = authorizer or LoopbackAuthorizer()
        self._reserved = ReservedAccess(self.settings.public_reserved)
        self.cors = CorsPolicy(self.settings.cors_origins)
        self._serve_reserved = serve_reserved
        self.subscriptions = subscriptions
        self._notify: Callable[[str, str], Awaitable[None]] | None = (
            getattr(subscriptions, "notify_append", None) if subscriptions else None
        )
        #: Whether an append must be reported at all: checked before
        #: ``_notify_append`` so an append with no subscription to match
        #: costs no coroutine (services without ``wants_appends`` get every one).
        self._wants_appends: Callable[[], bool] = (
            getattr(subscriptions, "wants_appends", _always) if self._notify is not None else _never
        )
        self._prefix = self.settings.prefix.rstrip("/") + "/"
        self._ds_prefix = "__ds"
        self._live: set[_Live] = set()
        #: Payload bytes held by catch-up reads in flight (see ``read_budget_bytes``).
        self._held = 0
        self._closing = False
        #: Last SSE events encoded per stream: (read, cursor bucket, client
        #: cursor, base64, bytes); see ``_sse_events``.
        self._sse_frames: dict[str, tuple[ReadResult, int, str | None, bool, bytes]] = {}
        #: Last long-poll answer with data per stream; see ``_long_poll_200``.
        self._lp_answers: dict[
            str,
            tuple[
                ReadResult,
                tuple[str, str | None, int, str],
                tuple[tuple[bytes, bytes], ...],
                bytes,
            ],
        ] = {}
        cache = self.settings.cache_scope
        self._cacheable = (
            H_CACHE_CONTROL,
            f"{cache}, max-age=60, stale-while-revalidate=300".encode(),
        )

    # ------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """End every open long-poll and SSE stream now; new ones end at once."""
        self._closing = True
        for live in list(self._live):
            live.end()

    @property
    def live_requests(self) -> int:
        """Number of open long-poll/SSE requests (for tests and metrics)."""
        return len(self._live)

    @property
    def closing(self) -> bool:
        """True once :meth:`begin_shutdown` was called (readiness answers 503)."""
        return self._closing

    def live_counts(self) -> tuple[int, int]:
        """Open long-polls and open SSE responses (read when metrics are scraped)."""
        sse = sum(1 for live in self._live if live.sse)
        return len(self._live) - sse, sse

    # ------------------------------------------------------------------
    # ASGI entry
    # ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request; the app needs no wrapping middleware.

        Every response carries the DS §8 security/CORS headers; CORS
        preflights are answered before auth. Any unexpected exception is
        logged and answered with an opaque 500 (or, if the response had
        already started, re-raised so the server drops the connection).
        """
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        if not self.cors.any_origin:
            send = self.cors.wrap(scope, send)
        if await answer_preflight(scope, send):
            return
        try:
            await self._handle(scope, receive, send)
        except Exception as exc:
            self.metrics.error("streams", "INTERNAL_ERROR")
            log.error(
                "unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc
            )
            try:
                await _error(send, 500, "INTERNAL_ERROR", "internal server error")
            except Exception:
                # The response had started: only dropping the connection is left.
                raise exc from None

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path_params = scope.get("path_params")
        if path_params is not None and "path" in path_params:
            path: str = path_params["path"]
        else:
            full: str = scope["path"]
            path = full[len(self._prefix) :] if full.startswith(self._prefix) else ""
        method: str = scope["method"]
        try:
            if "\ufffd" in path:
                p.decode_path(path, scope.get("raw_path"))
            principal = self.authorizer.authenticate(credentials_from_scope(scope))
            if path == self._ds_prefix or path.startswith("__ds/"):
                if not self.authorizer.authorize(principal, "admin", "stream/" + path):
                    raise AuthError(403, "FORBIDDEN", f"not allowed to use stream/{path}")
                if self.subscriptions is None:
                    raise p.RequestRefused(
                        404, "NOT_FOUND", "subscriptions are not enabled on this server"
                    )
                await self.subscriptions(scope, receive, _with_security_headers(send))
                return
            p.validate_stream_path(path)
            if is_reserved(path) and not self._serve_reserved:
                # Internal state (rooms, subscriptions, ...): as if absent, for everyone.
                if not self._reserved.readable(path):
                    raise p.RequestRefused(404, "NOT_FOUND", f"no stream at {path!r}")
                if method not in ("GET", "HEAD"):
                    raise p.RequestRefused(403, "READ_ONLY", f"stream {path!r} is read-only")
            action: Action = "read" if method in ("GET", "HEAD") else "write"
            if not self.authorizer.authorize(principal, action, "stream/" + path):
                raise AuthError(403, "FORBIDDEN", f"token does not allow {action} on stream/{path}")
            if action == "write" and self.write_guard is not None:
                refused = self.write_guard(path)
                if refused is not None:
                    raise p.RequestRefused(403, "READ_ONLY_MIRROR", refused)
            headers = dict(scope["headers"])
            if method == "POST":
                await self._post(
                    scope,
                    receive=receive,
                    send=send,
                    path=path,
                    headers=headers,
                    principal=principal,
                )
            elif method == "GET":
                await self._get(scope, receive=receive, send=send, path=path, headers=headers)
            elif method == "PUT":
                await self._put(
                    scope,
                    receive=receive,
                    send=send,
                    path=path,
                    headers=headers,
                    principal=principal,
                )
            elif method == "HEAD":
                await self._head(send, path)
            elif method == "DELETE":
                await self.store.delete(path)
                self.metrics.streams_deleted.inc()
                if self.on_deleted is not None:
                    await self._run_hook("on_deleted", self.on_deleted(path))
                await _respond(send, 204, [])
                # DS §9: a deleted stream leaves every subscription.
                notify_delete = getattr(self.subscriptions, "notify_delete", None)
                if notify_delete is not None:
                    await notify_delete(path)
            elif method == "OPTIONS":
                await _respond(send, 204, [(b"allow", b"GET, HEAD, PUT, POST, DELETE, OPTIONS")])
            else:
                await _error(
                    send,
                    405,
                    "METHOD_NOT_ALLOWED",
                    f"method {method} is not supported on streams",
                    [(b"allow", b"GET, HEAD, PUT, POST, DELETE, OPTIONS")],
                )
        except _Disconnected:
            return
        except p.RequestRefused as exc:
            self.metrics.error("streams", exc.code)
            await _error(send, exc.status, exc.code, exc.message, exc.headers)
        except AuthError as exc:
            self.metrics.error("streams", exc.code)
            extra: Headers = []
            if exc.status == 401:
                extra.append(
                    (
                        b"www-authenticate",
                        b'Bearer realm="durasync", error="invalid_token"'
                        if exc.code != "MISSING_TOKEN"
                        else b'Bearer realm="durasync"',
                    )
                )
            await _error(send, exc.status, exc.code, exc.message, extra)
        except StoreClientError as exc:
            status, code, extra = _map_store_error(exc, method)
            self.metrics.error("streams", code)
            await _error(send, status, code, str(exc) or code, extra)
        except StoreUnavailable as exc:
            self.metrics.error("streams", "STORE_UNAVAILABLE")
            log.warning("store unavailable: %s", exc)
            await _error(
                send,
                503,
                "STORE_UNAVAILABLE",
                "the store is unavailable, retry later",
                [(b"retry-after", b"1")],
            )

    # ------------------------------------------------------------------
    # PUT: create (DS §2)
    # ------------------------------------------------------------------

    async def _put(
        self,
        scope: Scope,
        *,
        receive: Receive,
        send: Send,
        path: str,
        headers: dict[bytes, bytes],
        principal: Any,
    ) -> None:
        ttl_raw = headers.get(H_TTL)
        expires_raw = headers.get(H_EXPIRES_AT)
        if ttl_raw is not None and expires_raw is not None:
            raise p.RequestRefused(
                400, "INVALID_HEADER", "send Stream-TTL or Stream-Expires-At, not both"
            )
        ttl = p.parse_ttl(ttl_raw.decode("latin-1")) if ttl_raw is not None else None
        expires_text = expires_raw.decode("latin-1") if expires_raw is not None else None
        expires_at = (
            p.check_expiry(p.parse_expires_at(expires_text), _now())
            if expires_text is not None
            else None
        )
        closed = p.parse_bool_true(_hget(headers, b"stream-closed"))
        ct_raw = headers.get(H_CONTENT_TYPE)
        content_type = p.normalize_content_type(ct_raw.decode("latin-1")) if ct_raw else None

        forked_raw = headers.get(H_FORKED_FROM)
        fork_offset_raw = headers.get(H_FORK_OFFSET)
        sub_raw = headers.get(H_FORK_SUB_OFFSET)
        if forked_raw is None and (fork_offset_raw is not None or sub_raw is not None):
            raise p.RequestRefused(
                400,
                "INVALID_HEADER",
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
            )
        body = await _read_body(scope, receive, headers, self.settings.max_body_bytes)

        prefix_messages: list[bytes] = []
        json_mode = is_json(content_type or "application/octet-stream")
        if forked_raw is not None:
            source = self._fork_source(forked_raw.decode("latin-1"))
            if not self.authorizer.authorize(principal, "read", "stream/" + source):
                raise AuthError(403, "FORBIDDEN", f"token does not allow read on stream/{source}")
            fork_offset: str | None = None
            if fork_offset_raw is not None:
                fork_offset = p.parse_offset([fork_offset_raw.decode("latin-1")])
            sub_offset = 0
            if sub_raw is not None:
                sub_offset = p.parse_non_negative_int(
                    sub_raw.decode("latin-1"), "Stream-Fork-Sub-Offset"
                )
            try:
                if body or sub_offset:
                    # The body's framing and the sub-offset's unit follow the
                    # source's content type (a fork always has it, DS §6).
                    source_ct = (await self.store.head(source)).config.content_type
                    json_mode = is_json(source_ct)
                if sub_offset:
                    if fork_offset is None or fork_offset in (OFFSET_START, OFFSET_NOW):
                        raise p.RequestRefused(
                            400,
                            "INVALID_FORK_SUB_OFFSET",
                            "Stream-Fork-Sub-Offset > 0 needs an explicit Stream-Fork-Offset",
                        )
                    prefix_messages = await self._fork_prefix(
                        source, fork_offset, sub_offset, json_mode
                    )
            except DataGone:
                raise p.RequestRefused(
                    409, "SOURCE_DELETED", "the fork source has been deleted"
                ) from None
            except NoSuchStream:
                raise p.RequestRefused(404, "NOT_FOUND", "the fork source does not exist") from None
            # The store inherits content type ("" = the source's) and expiry
            # from the source, and resolves an absent fork offset to its tail.
            config = StreamConfig(
                content_type=content_type or "",
                ttl_seconds=ttl,
                expires_at=expires_at,
                expires_at_text=expires_text,
                forked_from=source,
                fork_offset=fork_offset,
                fork_sub_offset=sub_offset,
            )
        else:
            config = StreamConfig(
                content_type=content_type or "application/octet-stream",
                ttl_seconds=ttl,
                expires_at=expires_at,
                expires_at_text=expires_text,
            )

        messages: list[bytes] = []
        if body:
            messages = (
                p.parse_json_messages(
                    body, allow_empty_array=True, max_messages=self.settings.max_append_messages
                )
                if json_mode
                else [body]
            )
        if prefix_messages:
            messages = prefix_messages + messages
        try:
            result = await self.store.create(path, config, initial=messages, closed=closed)
        except DataGone:
            # DS §6: a soft-deleted URL cannot be re-created (409).
            raise p.RequestRefused(
                409, "STREAM_DELETED", "the stream was deleted and its URL is still in use"
            ) from None
        info = result.info
        out: Headers = [
            (H_CONTENT_TYPE, info.config.content_type.encode("latin-1")),
            (H_NEXT_OFFSET, info.tail.encode()),
        ]
        if info.closed:
            out.append((H_CLOSED, TRUE))
        if result.created:
            self.metrics.streams_created.inc()
            if self.on_created is not None:
                await self._run_hook("on_created", self.on_created(path, info))
            out.append((b"location", _location(scope, headers)))
            await _respond(send, 201, out)
            # DS §9: a stream created with data wakes matching subscriptions.
            if messages or info.closed:
                await self._notify_append(path, info.tail)
        else:
            await _respond(send, 200, out)

    async def _run_hook(self, name: str, call: Awaitable[None]) -> None:
        """Await a lifecycle hook; its failure is logged, never the request's."""
        try:
            await call
        except Exception:
            log.exception("stream %s hook failed", name)

    async def _notify_append(self, path: str, tail: str) -> None:
        """Tell subscriptions (DS §9) that ``path`` got data or closed; never raises."""
        if self._notify is None:
            return
        try:
            await self._notify(path, tail)
        except Exception:
            log.exception("subscription notify failed for %s", path)

    def _fork_source(self, raw: str) -> str:
        """``Stream-Forked-From`` names a stream on this server by URL path (DS §6)."""
        value = raw.strip()
        if "://" in value:
            value = "/" + value.split("://", 1)[1].split("/", 1)[-1]
        if value.startswith(self._prefix):
            value = value[len(self._prefix) :]
        elif value.startswith("/"):
            raise p.RequestRefused(
                400, "INVALID_HEADER", f"Stream-Forked-From must be a path under {self._prefix}"
            )
        source = p.validate_stream_path(value)
        if self._reserved.hidden(source):
            # Reserved streams are not reachable by naming them as a source either.
            raise p.RequestRefused(404, "NOT_FOUND", "the fork source does not exist")
        return source

    async def _fork_prefix(
        self, source: str, anchor: str, count: int, json_mode: bool
    ) -> list[bytes]:
        """The messages a sub-offset fork copies past ``anchor`` (DS §6).

        JSON: the next ``count`` messages; otherwise ``count`` bytes. Reads
        only as much of the source as needed; overshooting is a 400.
        """
        messages: list[bytes] = []
        have = 0
        offset = anchor
        while have < count:
            res = await self.store.read(
                source,
                offset,
                max_messages=count - have if json_mode else 1024,
                max_bytes=count - have if not json_mode else 1 << 26,
            )
            for entry in res.entries:
                messages.append(entry.data)
                have += 1 if json_mode else len(entry.data)
            if not res.entries or res.up_to_date:
                break
            offset = res.next_offset
        try:
            return fork_prefix(count, json_mode, messages)
        except BadOffset as exc:
            raise p.RequestRefused(400, "INVALID_FORK_SUB_OFFSET", str(exc)) from None

    # ------------------------------------------------------------------
    # POST: append and/or close (DS §2, §3)
    # ------------------------------------------------------------------

    async def _post(
        self,
        scope: Scope,
        *,
        receive: Receive,
        send: Send,
        path: str,
        headers: dict[bytes, bytes],
        principal: Any,
    ) -> None:
        close = False
        producer_h: p.ProducerHeaders | None = None
        stream_seq: str | None = None
        # Most appends carry none of the optional DS §2/§3 headers: one set
        # test instead of five lookups-and-parses (same results when absent).
        if not _POST_OPTIONAL.isdisjoint(headers):
            close = p.parse_bool_true(_hget(headers, H_CLOSED))
            producer_h = p.parse_producer(
                _hget(headers, H_PRODUCER_ID),
                _hget(headers, H_PRODUCER_EPOCH),
                _hget(headers, H_PRODUCER_SEQ),
            )
            stream_seq = p.parse_stream_seq(_hget(headers, H_SEQ))
        body = await _read_body(scope, receive, headers, self.settings.max_body_bytes)
        content_type: str | None = None
        messages: list[bytes]
        if body:
            ct_raw = headers.get(H_CONTENT_TYPE)
            if not ct_raw:
                raise p.RequestRefused(
                    400, "MISSING_CONTENT_TYPE", "an append with a body needs a Content-Type"
                )
            content_type = p.normalize_content_type(ct_raw.decode("latin-1"))
            if is_json(content_type):
                messages = p.parse_json_messages(
                    body, allow_empty_array=False, max_messages=self.settings.max_append_messages
                )
            else:
                messages = [body]
        elif close:
            # DS §2: a close-only POST may omit (or mismatch) the Content-Type.
            messages = []
        else:
            raise p.RequestRefused(
                400, "EMPTY_BODY", "an append needs a non-empty body (or Stream-Closed: true)"
            )
        producer = (
            Producer(producer_h.producer_id, producer_h.epoch, producer_h.seq)
            if producer_h
            else None
        )
        result = await self.store.append(
            path,
            messages,
            content_type=content_type,
            producer=producer,
            stream_seq=stream_seq,
            close=close,
        )
        if result.status == "appended":
            metrics = self.metrics
            metrics.appends.inc()
            metrics.appended_messages.inc(len(messages))
            metrics.appended_bytes.inc(len(body))
        out: Headers = [(H_NEXT_OFFSET, result.tail.encode())]
        if result.closed:
            out.append((H_CLOSED, TRUE))
        status = 204
        if producer is not None:
            out.extend(_producer_headers(result))
            # DS §3: 200 when a batch with data was accepted; 204 for a
            # duplicate and for a close-only request (no data written).
            status = 200 if result.status == "appended" else 204
        await _respond(send, status, out)
        if result.status != "duplicate" and self._wants_appends():
            await self._notify_append(path, result.tail)

    # ------------------------------------------------------------------
    # HEAD (DS §2)
    # ------------------------------------------------------------------

    async def _head(self, send: Send, path: str) -> None:
        info = await self.store.head(path)
        config = info.config
        out: Headers = [
            (H_CONTENT_TYPE, config.content_type.encode("latin-1")),
            (H_NEXT_OFFSET, info.tail.encode()),
            NO_STORE,
        ]
        if config.ttl_seconds is not None:
            out.append((H_TTL, str(config.ttl_seconds).encode()))
        if config.expires_at_text is not None:
            out.append((H_EXPIRES_AT, config.expires_at_text.encode("latin-1")))
        if info.closed:
            out.append((H_CLOSED, TRUE))
        await _respond(send, 200, out)

    # ------------------------------------------------------------------
    # GET: catch-up, long-poll, SSE (DS §2, §4, §7)
    # ------------------------------------------------------------------

    async def _read(
        self, path: str, offset: str, max_bytes: int | None = None
    ) -> tuple[ReadResult, str]:
        res = await self.store.read(
            path,
            offset,
            max_bytes=max_bytes or self.settings.read_chunk_bytes,
            max_messages=self.settings.read_chunk_messages,
        )
        content_type = res.content_type
        if content_type is None:
            content_type = (await self.store.head(path)).config.content_type
        return res, content_type

    async def _get(
        self,
        scope: Scope,
        *,
        receive: Receive,
        send: Send,
        path: str,
        headers: dict[bytes, bytes],
    ) -> None:
        raw_query: bytes = scope.get("query_string", b"")
        query = _parse_query(raw_query.decode("latin-1")) if raw_query else {}
        offset = p.parse_offset(query.get("offset", []))
        live_values = query.get("live")
        live: str | None = None
        if live_values:
            if len(live_values) > 1 or live_values[0] not in ("long-poll", "sse"):
                raise p.RequestRefused(
                    400, "INVALID_LIVE", "live must be 'long-poll' or 'sse' (given once)"
                )
            live = live_values[0]
            if offset is None:
                raise p.RequestRefused(
                    400, "MISSING_OFFSET", f"live={live} needs an offset (use -1 or now)"
                )
        cursor = _first(query, "cursor")
        if offset is None:
            offset = OFFSET_START
        if live == "sse":
            await self._sse(scope, receive, send, path=path, offset=offset, cursor=cursor)
            return
        res, content_type, hold = await self._read_held(path, offset)
        try:
            await self._answer_read(
                scope,
                send,
                path=path,
                headers=headers,
                res=res,
                content_type=content_type,
                hold=hold,
                live=live,
                offset=offset,
                cursor=cursor,
            )
        finally:
            hold.give_back()

    async def _read_held(
        self, path: str, offset: str, *, live: bool = False
    ) -> tuple[ReadResult, str, _Hold]:
        """A catch-up read whose payload counts against ``read_budget_bytes`` until the
        returned hold is given back (a full chunk only while the budget allows).

        ``live``: the read of a reader woken at the tail, limited to ``write_chunk_bytes``
        like an SSE reader's, so that every live reader woken by one append makes the very
        same read (the store shares one read per path and limits) and gets the same answer.
        """
        settings = self.settings
        if not live and self._held + settings.read_chunk_bytes <= settings.read_budget_bytes:
            limit = settings.read_chunk_bytes
        else:
            limit = min(settings.read_chunk_bytes, settings.write_chunk_bytes)
        self._held += limit  # reserved while the read runs
        try:
            res, content_type = await self._read(path, offset, limit)
        finally:
            self._held -= limit
        entries = res.entries
        if not entries or (
            len(entries) == 1 and len(entries[0].data) <= settings.write_chunk_bytes
        ):
            return res, content_type, _NO_HOLD  # a live-tail sized read: nothing to account
        return (
            res,
            content_type,
            _Hold(self, _payload_size(res, False) + ENTRY_OVERHEAD * len(entries)),
        )

    async def _answer_read(
        self,
        scope: Scope,
        send: Send,
        *,
        path: str,
        headers: dict[bytes, bytes],
        res: ReadResult,
        content_type: str,
        hold: _Hold,
        live: str | None,
        offset: str,
        cursor: str | None,
    ) -> None:
        json_mode = is_json(content_type)
        if live == "long-poll":
            await self._long_poll(
                scope,
                send,
                path=path,
                res=res,
                content_type=content_type,
                json_mode=json_mode,
                offset=offset,
                cursor=cursor,
                hold=hold,
            )
            return

        out: Headers = [
            (H_CONTENT_TYPE, content_type.encode("latin-1")),
            (H_NEXT_OFFSET, res.next_offset.encode()),
        ]
        if res.up_to_date:
            out.append((H_UP_TO_DATE, TRUE))
        if res.closed:
            out.append((H_CLOSED, TRUE))
        if offset == OFFSET_NOW:
            # DS §4: the tail position must not be cached.
            out.append(NO_STORE)
        else:
            etag = p.etag_for(path, offset, res.next_offset, res.closed)
            out.append((H_ETAG, etag.encode()))
            # DS §7: chunks are cacheable; an empty read at an open tail is not
            # (the next append changes it), so it must be revalidated.
            out.append(
                self._cacheable if res.entries or res.closed else (H_CACHE_CONTROL, b"no-cache")
            )
            if p.etag_matches(_hget(headers, H_IF_NONE_MATCH), etag):
                await _respond(send, 304, out)
                return
        size = _payload_size(res, json_mode)
        if size > self.settings.write_chunk_bytes:
            await self._respond_in_pieces(
                scope, send, out, path=path, res=res, json_mode=json_mode, size=size, hold=hold
            )
            return
        body = _payload(res, json_mode)
        hold.give_back()
        await _respond(send, 200, out, body)

    async def _respond_in_pieces(
        self,
        scope: Scope,
        send: Send,
        headers: Headers,
        *,
        path: str,
        res: ReadResult,
        json_mode: bool,
        size: int,
        hold: _Hold,
    ) -> None:
        """A 200 whose body (``size`` bytes, the payload of ``res``) is written in pieces of
        at most ``write_chunk_bytes``.

        With the connection extension, the unwritten part of ``res`` is dropped whenever the
        client stops draining and read again from the store piece by piece once it does, so
        a client that does not read costs at most about one piece here (and the stall bound
        of the server layer ends it). A re-read that fails (the stream was deleted or trimmed
        meanwhile, the store is down) aborts the connection: the client sees a short body and
        retries from its offset.
        """
        headers.extend(SECURITY_HEADERS)
        headers.append((H_CONTENT_LENGTH, str(size).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        conn = _connection(scope)
        body = _PiecewiseBody(
            self.store,
            path,
            res,
            json_mode=json_mode,
            chunk=self.settings.write_chunk_bytes,
            hold=hold,
        )
        del res  # the body owns the entries now, and drops them when the client stalls
        loop = asyncio.get_running_loop()
        since_yield = loop.time()
        while True:
            try:
                piece = await body.next_piece()
            except (StoreClientError, StoreUnavailable) as exc:
                log.info("catch-up of %s cut short: %s", path, exc)
                if conn is not None:
                    conn.abort()
                    await asyncio.sleep(0)  # let the server see the connection go first
                return
            more = not body.done
            message = {"type": "http.response.body", "body": piece, "more_body": more}
            if conn is None:
                await send(message)
            elif conn.lost:
                return
            elif more and conn.write_paused and body.holding:
                # The client is behind. Most catch up within moments (the socket buffers
                # just filled); one that does not gets its chunk dropped, to be re-read
                # from the store as it drains. (The server's send only waits for the
                # drain before writing, so a send cut short wrote nothing: send it again.)
                try:
                    async with asyncio.timeout(RELEASE_AFTER):
                        await send(message)
                except TimeoutError:
                    body.release()
                    await send(message)
            else:
                await send(message)
            if not more:
                return
            if loop.time() - since_yield > YIELD_AFTER:
                # Let other connections run (a fast reader of a long chunk would otherwise
                # keep the event loop until its socket buffers are full).
                await asyncio.sleep(0)
                since_yield = loop.time()

    async def _wait(self, live: _Live, path: str, offset: str, *, within: float) -> bool:
        """Wait for data past ``offset``; False on timeout, shutdown or disconnect."""
        if live.ended or within <= 0:
            return False
        # Wait in the request's own task (no helper task: one task and one
        # loop hop less per live delivery); ``live.end()`` cancels it and the
        # cancellation is absorbed here, like ``asyncio.timeout`` does.
        live.waiting = True
        try:
            return await self.store.wait_for(path, offset, within)
        except asyncio.CancelledError:
            task = live.task
            if live.ended and task is not None and task.uncancel() == 0:
                return False
            raise
        finally:
            live.waiting = False

    async def _long_poll(
        self,
        scope: Scope,
        send: Send,
        *,
        path: str,
        res: ReadResult,
        content_type: str,
        json_mode: bool,
        offset: str,
        cursor: str | None,
        hold: _Hold,
    ) -> None:
        if not res.entries and not res.closed:
            live = _Live()
            if self._closing:
                live.ended = True
            self._live.add(live)
            conn = _connection(scope)
            if conn is not None:
                # A client that goes away ends the wait (and leaves the live count) at once.
                conn.on_lost(live.end)
            try:
                woke = await self._wait(
                    live, path, res.next_offset, within=self.settings.long_poll_timeout
                )
            finally:
                self._live.discard(live)
                if conn is not None:
                    conn.on_lost(None)
            if live.ended and conn is not None and conn.lost:
                return
            if woke:
                hold.give_back()
                res, content_type, woken = await self._read_held(path, res.next_offset, live=True)
                try:
                    await self._long_poll_answer(
                        scope,
                        send,
                        path=path,
                        res=res,
                        content_type=content_type,
                        json_mode=json_mode,
                        offset=offset,
                        cursor=cursor,
                        hold=woken,
                    )
                finally:
                    woken.give_back()
                return
        await self._long_poll_answer(
            scope,
            send,
            path=path,
            res=res,
            content_type=content_type,
            json_mode=json_mode,
            offset=offset,
            cursor=cursor,
            hold=hold,
        )

    async def _long_poll_answer(
        self,
        scope: Scope,
        send: Send,
        *,
        path: str,
        res: ReadResult,
        content_type: str,
        json_mode: bool,
        offset: str,
        cursor: str | None,
        hold: _Hold,
    ) -> None:
        """A long-poll's answer to ``res``: 200 with its data, or 204 at the tail (DS §2)."""
        if res.entries:
            size = _payload_size(res, json_mode)
            if size > self.settings.write_chunk_bytes:
                head = self._long_poll_head(
                    path, res, content_type=content_type, offset=offset, cursor=cursor, now=_now()
                )
                await self._respond_in_pieces(
                    scope,
                    send,
                    head,
                    path=path,
                    res=res,
                    json_mode=json_mode,
                    size=size,
                    hold=hold,
                )
                return
            hold.give_back()
            headers, body = self._long_poll_200(
                path,
                res,
                content_type=content_type,
                json_mode=json_mode,
                offset=offset,
                cursor=cursor,
            )
            await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
            await send({"type": "http.response.body", "body": body})
            return
        out: Headers = [
            (H_CONTENT_TYPE, content_type.encode("latin-1")),
            (H_NEXT_OFFSET, res.next_offset.encode()),
        ]
        if not res.closed:
            # DS §7: a cursor on every live response while the stream is open.
            out.append(
                (
                    H_CURSOR,
                    p.compute_cursor(
                        _now(), cursor, interval=self.settings.cursor_interval
                    ).encode(),
                )
            )
        out.append((H_UP_TO_DATE, TRUE))
        if res.closed:
            out.append((H_CLOSED, TRUE))
        # DS §2: timeout (or closed at tail) -> 204; never cached.
        out.append(NO_STORE)
        await _respond(send, 204, out)

    def _long_poll_200(
        self,
        path: str,
        res: ReadResult,
        *,
        content_type: str,
        json_mode: bool,
        offset: str,
        cursor: str | None,
    ) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
        """Headers and body of a long-poll answer with data, built once per read.

        Every long-poll reader woken by one append at the same offset gets the
        very same :class:`ReadResult` from the store's read cache; the answer
        depends only on it, the request's offset and cursor and the DS §7
        cursor time bucket, so those are the key and a hit is exactly the
        answer a fresh build would give (readers holding the same cursor share
        its random jitter). Bounded like the SSE cache.
        """
        now = _now()
        interval = self.settings.cursor_interval
        bucket = int((now - p.CURSOR_EPOCH) // interval)
        key = (offset, cursor, bucket, content_type)
        cached = self._lp_answers.get(path)
        if cached is not None and cached[0] is res and cached[1] == key:
            return cached[2], cached[3]
        out = self._long_poll_head(
            path, res, content_type=content_type, offset=offset, cursor=cursor, now=now
        )
        body = _payload(res, json_mode)
        out.extend(SECURITY_HEADERS)
        out.append((H_CONTENT_LENGTH, str(len(body)).encode()))
        headers = tuple(out)
        _remember(self._lp_answers, path, (res, key, headers, body), len(body))
        return headers, body

    def _long_poll_head(
        self,
        path: str,
        res: ReadResult,
        *,
        content_type: str,
        offset: str,
        cursor: str | None,
        now: float,
    ) -> Headers:
        """The protocol headers of a long-poll 200 (DS §2, §7)."""
        out: Headers = [
            (H_CONTENT_TYPE, content_type.encode("latin-1")),
            (H_NEXT_OFFSET, res.next_offset.encode()),
        ]
        if not res.closed:
            # DS §7: a cursor on every live response while the stream is open.
            interval = self.settings.cursor_interval
            out.append((H_CURSOR, p.compute_cursor(now, cursor, interval=interval).encode()))
        if res.up_to_date:
            out.append((H_UP_TO_DATE, TRUE))
        if res.closed:
            out.append((H_CLOSED, TRUE))
        out.append((H_ETAG, p.etag_for(path, offset, res.next_offset, res.closed).encode()))
        out.append(self._cacheable)
        return out

    def _sse_events(
        self,
        path: str,
        res: ReadResult,
        *,
        json_mode: bool,
        binary: bool,
        cursor: str | None,
        interval: float,
    ) -> bytes:
        """The SSE data + control events of ``res``, encoded once per read.

        Every SSE reader woken by one append gets the very same
        :class:`ReadResult` from the store's read cache; its events are
        encoded for the first reader and the same bytes are written to the
        others (``_SseFrames``). The control event's cursor depends on the
        time bucket and the reader's own cursor, so both are part of the key:
        a hit yields exactly the bytes a fresh encoding would (up to the DS §7
        random jitter, which readers holding the same cursor then share).
        """
        now = _now()
        bucket = int((now - p.CURSOR_EPOCH) // interval)
        frames = self._sse_frames
        cached = frames.get(path)
        if (
            cached is not None
            and cached[0] is res
            and cached[1] == bucket
            and cached[2] == cursor
            and cached[3] == binary
        ):
            return cached[4]
        parts: list[bytes] = []
        if res.entries:
            parts.append(p.sse_data(_payload(res, json_mode), base64_encode=binary))
        # DS §2 SSE: a control event follows every data event and reports
        # position, cursor, up-to-date and closure.
        parts.append(
            p.sse_control(
                res.next_offset,
                cursor=p.compute_cursor(now, cursor, interval=interval),
                up_to_date=res.up_to_date,
                closed=res.closed,
            )
        )
        body = b"".join(parts)
        _remember(frames, path, (res, bucket, cursor, binary, body), len(body))
        return body

    async def _sse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        path: str,
        offset: str,
        cursor: str | None,
    ) -> None:
        """An SSE response (DS §2): events of at most about ``write_chunk_bytes`` of data
        each (one message may make a larger one), ended by ``sse_max_duration``, a closed
        stream, shutdown or the client leaving. A client that does not read when the
        duration is up is cut off by the server layer's write bound."""
        read_bytes = min(self.settings.read_chunk_bytes, self.settings.write_chunk_bytes)
        # First read before the response starts, so 404/400/410 are plain errors.
        res, content_type = await self._read(path, offset, read_bytes)
        json_mode = is_json(content_type)
        binary = not p.is_text_type(content_type)
        out: Headers = [
            (H_CONTENT_TYPE, b"text/event-stream"),
            (H_CACHE_CONTROL, b"no-cache"),
            *SECURITY_HEADERS,
        ]
        if binary:
            out.append((H_SSE_ENCODING, b"base64"))
        live = _Live(sse=True)
        if self._closing:
            live.ended = True
        self._live.add(live)
        conn = _connection(scope)
        watcher: asyncio.Future[None] | None = None
        if conn is not None:
            conn.on_lost(live.end)
        else:
            watcher = asyncio.ensure_future(_watch_disconnect(receive, live))
        since_yield = time.monotonic()
        deadline = since_yield + self.settings.sse_max_duration
        interval = self.settings.cursor_interval
        chunk = self.settings.write_chunk_bytes
        try:
            await send({"type": "http.response.start", "status": 200, "headers": out})
            while True:
                body = self._sse_events(
                    path, res, json_mode=json_mode, binary=binary, cursor=cursor, interval=interval
                )
                if len(body) <= chunk:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                else:
                    for start in range(0, len(body), chunk):
                        piece = body[start : start + chunk]
                        await send({"type": "http.response.body", "body": piece, "more_body": True})
                if res.closed or live.ended:
                    break
                next_offset = res.next_offset
                if not res.up_to_date:
                    if time.monotonic() >= deadline:
                        break
                    if time.monotonic() - since_yield > YIELD_AFTER:
                        await asyncio.sleep(0)  # catching up: let other connections run
                        since_yield = time.monotonic()
                    res, content_type = await self._read(path, next_offset, read_bytes)
                    continue
                woke = await self._wait(live, path, next_offset, within=deadline - time.monotonic())
                if not woke:
                    break
                res, content_type = await self._read(path, next_offset, read_bytes)
        except (StoreClientError, StoreUnavailable) as exc:
            # The stream was deleted or the store failed mid-stream: end the
            # response; the client reconnects and sees the error status.
            log.debug("SSE on %s ended: %s", path, exc)
        except OSError:
            pass
        finally:
            self._live.discard(live)
            if conn is not None:
                conn.on_lost(None)
            if watcher is not None:
                watcher.cancel()
            if conn is None or not conn.lost:
                with contextlib.suppress(OSError, RuntimeError):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})


# ----------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------


def _parse_query(raw: str) -> dict[str, list[str]]:
    """``parse_qs(raw, keep_blank_values=True)``, without its cost when nothing is escaped.

    Every long-poll request parses its query string; the common
    ``offset=...&live=...&cursor=...`` has no ``%`` or ``+`` to decode.
    """
    if "%" in raw or "+" in raw:
        return parse_qs(raw, keep_blank_values=True)
    out: dict[str, list[str]] = {}
    for part in raw.split("&"):
        if part:
            name, _, value = part.partition("=")
            values = out.get(name)
            if values is None:
                out[name] = [value]
            else:
                values.append(value)
    return out


def _hget(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return value.decode("latin-1") if value is not None else None


def _payload(res: ReadResult, json_mode: bool) -> bytes:
    if json_mode:
        return p.json_array([entry.data for entry in res.entries])
    entries = res.entries
    if len(entries) == 1:
        return entries[0].data
    return b"".join([entry.data for entry in entries])


class _Hold:
    """Payload bytes a response counts against its app's ``read_budget_bytes``; given back
    once (idempotent)."""

    __slots__ = ("_app", "size")

    def __init__(self, app: StreamsApp, size: int) -> None:
        self._app = app
        self.size = size
        app._held += size

    def give_back(self) -> None:
        self._app._held -= self.size
        self.size = 0


class _NoHold(_Hold):
    """The hold of a read too small to count (shared; giving it back does nothing)."""

    __slots__ = ()

    def __init__(self) -> None:
        self.size = 0

    def give_back(self) -> None:
        return


_NO_HOLD: Final = _NoHold()


def _payload_size(res: ReadResult, json_mode: bool) -> int:
    """``len(_payload(res, json_mode))`` without building it."""
    size = 0
    for entry in res.entries:
        size += len(entry.data)
    if json_mode:
        size += max(len(res.entries) - 1, 0) + 2
    return size


_entry_data = operator.attrgetter("data")


class _PiecewiseBody:
    """The payload of a catch-up read, produced in pieces of at most ``chunk`` bytes.

    Holds the read's entries until :meth:`release`, then re-reads the unwritten ones from
    the store, ``chunk`` bytes at a time, from the offset after the last entry written (the
    stream's entries never change once appended). A message larger than a piece is kept
    until it is fully written (re-reading it per piece would let a slow client multiply the
    store's work). Runs of whole messages are cut and joined at C speed (cumulative sizes,
    bisect, ``join``), not message by message.
    """

    __slots__ = (
        "_chunk",
        "_ends",
        "_entries",
        "_hold",
        "_json",
        "_path",
        "_pos",
        "_remaining",
        "_resume",
        "_store",
        "_tail",
        "_written",
        "done",
    )

    def __init__(
        self,
        store: LogStore,
        path: str,
        res: ReadResult,
        *,
        json_mode: bool,
        chunk: int,
        hold: _Hold,
    ) -> None:
        self._hold = hold
        self._store = store
        self._path = path
        self._json = json_mode
        self._chunk = chunk
        self._entries: list[Entry] | None = None
        self._ends: list[int] = []
        self._pos = 0  # next entry in _entries
        self._remaining = len(res.entries)  # entries not yet started
        self._resume = res.entries[0].offset if res.entries else res.next_offset
        self._written = 0  # entries started so far
        #: Unwritten rest of a message larger than a piece.
        self._tail = b""
        self.done = False
        self._hold_entries(res.entries)

    def _hold_entries(self, entries: list[Entry]) -> None:
        self._entries = entries
        self._pos = 0
        # _ends[i]: bytes of entries[0..i], each with its JSON separator.
        sizes = map(len, map(_entry_data, entries))
        if self._json:
            sizes = map((1).__add__, sizes)
        self._ends = list(itertools.accumulate(sizes))

    @property
    def holding(self) -> bool:
        """Whether the read's chunk is still held (not yet released)."""
        return self._hold.size > 0

    def release(self) -> None:
        """Drop the held entries (the client is not reading); they are read again later."""
        self._entries = None
        self._ends = []
        self._pos = 0
        self._hold.give_back()

    async def next_piece(self) -> bytes:
        """The next piece of the body; sets :attr:`done` with the last one.

        Raises:
            StoreClientError, StoreUnavailable: a re-read failed (deleted, trimmed, down).
        """
        chunk = self._chunk
        parts: list[bytes] = []
        size = 0
        if self._json and self._written == 0 and not self._tail:
            parts.append(b"[")
            size = 1
        while size < chunk:
            if self._tail:
                rest = self._tail[: chunk - size]
                self._tail = self._tail[len(rest) :]
                parts.append(rest)
                size += len(rest)
                continue
            if self._remaining == 0:
                if self._json:
                    if size + 1 > chunk:
                        break
                    parts.append(b"]")
                self.done = True
                break
            entries = self._entries
            if entries is None or self._pos >= len(entries):
                entries = await self._reread()
            pos = self._pos
            ends = self._ends
            # Whole entries that fit (with their separators; a JSON comma is counted even
            # before the first entry, which needs none: a piece may end one byte short).
            base = ends[pos - 1] if pos else 0
            stop = bisect.bisect_right(ends, base + chunk - size, pos)
            comma = self._json and self._written > 0
            if stop == pos:
                if size > 1:
                    break  # the next message starts the next piece
                # A message larger than a piece: write what fits, keep the rest.
                data = entries[pos].data
                if comma:
                    parts.append(b",")
                    size += 1
                take = chunk - size
                parts.append(data[:take])
                self._tail = data[take:]
                self._advance(entries, pos + 1)
                break
            run = map(_entry_data, entries[pos:stop])
            if self._json:
                # One join, the leading comma included (an empty first item gives it).
                joined = b",".join(itertools.chain((b"",), run) if comma else run)
            else:
                joined = b"".join(run)
            parts.append(joined)
            size += len(joined)
            self._advance(entries, stop)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _advance(self, entries: list[Entry], stop: int) -> None:
        count = stop - self._pos
        self._pos = stop
        self._remaining -= count
        self._written += count
        self._resume = entries[stop - 1].next_offset

    async def _reread(self) -> list[Entry]:
        res = await self._store.read(
            self._path, self._resume, max_bytes=self._chunk, max_messages=self._remaining
        )
        if not res.entries:
            raise DataGone(f"{self._path!r} no longer holds the data being written")
        self._hold_entries(res.entries)
        return res.entries


def _producer_headers(result: AppendResult) -> Headers:
    out: Headers = []
    if result.producer_epoch is not None:
        out.append((H_PRODUCER_EPOCH, str(result.producer_epoch).encode()))
    if result.producer_seq is not None:
        out.append((H_PRODUCER_SEQ, str(result.producer_seq).encode()))
    return out


def _location(scope: Scope, headers: dict[bytes, bytes]) -> bytes:
    host = headers.get(b"host")
    if host is None:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}".encode() if server else b"localhost"
    scheme = scope.get("scheme", "http")
    # ``path`` already holds the mount prefix under Starlette's Mount and uvicorn's --root-path
    # (ASGI: the full path); add ``root_path`` only for servers that leave it out of ``path``.
    root, path = scope.get("root_path", ""), scope["path"]
    if root and not path.startswith(root.rstrip("/") + "/") and path != root:
        path = root + path
    path = quote(path, safe="/:@!$&'()*+,;=-._~")
    return f"{scheme}://".encode() + host + path.encode()


def _map_store_error(exc: StoreClientError, method: str) -> tuple[int, str, Headers]:
    """DS §2/§3 status of each store error."""
    if isinstance(exc, NoSuchStream):
        return 404, "NOT_FOUND", []
    if isinstance(exc, DataGone):
        return 410, "GONE", []
    if isinstance(exc, StreamClosed):
        return 409, "STREAM_CLOSED", [(H_CLOSED, TRUE), (H_NEXT_OFFSET, exc.tail.encode())]
    if isinstance(exc, StreamExists):
        return 409, "STREAM_EXISTS", []
    if isinstance(exc, ContentTypeMismatch):
        return 409, "CONTENT_TYPE_MISMATCH", []
    if isinstance(exc, SeqConflict):
        return 409, "SEQ_CONFLICT", []
    if isinstance(exc, StaleProducerEpoch):
        return 403, "PRODUCER_FENCED", [(H_PRODUCER_EPOCH, str(exc.current_epoch).encode())]
    if isinstance(exc, ProducerSeqAhead):
        return (
            409,
            "PRODUCER_SEQ_GAP",
            [
                (H_PRODUCER_EXPECTED, str(exc.expected).encode()),
                (H_PRODUCER_RECEIVED, str(exc.received).encode()),
            ],
        )
    if isinstance(exc, ProducerBadEpochStart):
        return 400, "PRODUCER_BAD_EPOCH_START", []
    if isinstance(exc, BadOffset):
        return 400, "INVALID_OFFSET", []
    return 400, "BAD_REQUEST", []


async def _read_body(
    scope: Scope, receive: Receive, headers: dict[bytes, bytes], limit: int
) -> bytes:
    """Read the request body, refusing (413) as soon as it exceeds ``limit``."""
    declared = headers.get(H_CONTENT_LENGTH)
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise p.RequestRefused(
                400, "INVALID_HEADER", "Content-Length is not a number"
            ) from None
        if length > limit:
            raise p.RequestRefused(413, "BODY_TOO_LARGE", f"request body larger than {limit} bytes")
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _Disconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise p.RequestRefused(413, "BODY_TOO_LARGE", f"request body larger than {limit} bytes")
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise p.RequestRefused(413, "BODY_TOO_LARGE", f"request body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _watch_disconnect(receive: Receive, live: _Live) -> None:
    """End ``live`` when the client disconnects (SSE only)."""
    with contextlib.suppress(Exception):
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                live.end()
                return


def _with_security_headers(send: Send) -> Send:
    """``send`` that adds the DS §8 headers a sub-app did not set (no duplicates)."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            present = {name.lower() for name, _ in headers}
            headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
            message["headers"] = headers
        await send(message)

    return wrapped


#: ``Content-Length: 0`` of every bodiless answer (most of them: 204 appends), built once.
_NO_BODY: Final = (H_CONTENT_LENGTH, b"0")


async def _respond(send: Send, status: int, headers: Headers, body: bytes = b"") -> None:
    """The one response path: adds the DS §8 headers and Content-Length."""
    headers.extend(SECURITY_HEADERS)
    headers.append(_NO_BODY if not body else (H_CONTENT_LENGTH, str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: Send, status: int, code: str, message: str, extra: Headers | None = None
) -> None:
    body = error_body(code, message)
    headers: Headers = [JSON_CT, NO_STORE]
    if extra:
        headers.extend(extra)
    await _respond(send, status, headers, body)
