"""``StreamClient``: a Durable Streams client over ``httpx.AsyncClient``.

Covers the protocol of ``PROTOCOL.md`` (summary in the project's
``reference/durable-streams-protocol.md``; "DS §n" below): create (PUT),
append (POST), read (GET catch-up), head (HEAD), delete (DELETE), idempotent
producers (DS §3) and live tailing over long-poll or SSE (DS §2 GET).

Guarantees:

- :meth:`IdempotentProducer.append` applies each batch **exactly once**:
  it sends ``Producer-Id/Epoch/Seq`` and retries transient failures
  (timeouts, connection errors, 429, 5xx) with the *same* numbers, so a
  retry of a request that did reach the server is answered ``204
  duplicate`` and not applied twice. Batches are applied in call order
  (one request in flight per producer).
- :meth:`StreamClient.tail` yields every byte of the stream from the start
  offset exactly once and in order, as batches tagged with offsets. It
  survives network cuts and server restarts by resuming from the last
  offset it delivered (a partially received batch is discarded and read
  again, never delivered twice). With a checkpoint file, the offset of the
  last batch the consumer *finished* (it asked for the next one) is written
  atomically, so a restarted process resumes there: at-least-once for the
  one batch being processed at a crash, exactly-once otherwise.
- Permanent errors (400/401/403/404/409/410...) raise a typed
  :class:`~durasync.client.errors.StreamError` subclass and never loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin

import httpx
import msgspec

from durasync.client.errors import (
    ProducerFenced,
    ProducerSeqGap,
    ProducerStateConflict,
    StreamClosedError,
    StreamConflict,
    StreamError,
    StreamGone,
    StreamNotFound,
)
from durasync.httpwire import is_json
from durasync.protocol import Backoff, BackoffPolicy

__all__ = [
    "AppendResult",
    "Batch",
    "IdempotentProducer",
    "LiveMode",
    "StreamClient",
    "StreamInfo",
]

LiveMode = Literal["long-poll", "sse"]

_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_TRANSIENT_ERRORS = (httpx.TransportError, httpx.RemoteProtocolError, TimeoutError)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """Metadata of a stream (PUT/HEAD response headers, DS §2)."""

    url: str
    content_type: str | None
    next_offset: str | None
    closed: bool
    created: bool = False
    ttl: int | None = None
    expires_at: str | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Outcome of an append: the stream's tail after it.

    ``duplicate`` is True when the server had already applied this producer
    batch (a retry; DS §3 204) -- the data is in the stream exactly once.
    """

    next_offset: str | None
    closed: bool = False
    duplicate: bool = False
    epoch: int | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """A contiguous range of the stream: ``data`` spans ``offset`` -> ``next_offset``.

    For ``application/json`` streams ``data`` is a JSON array of the
    messages in the range (use :meth:`json`).
    """

    data: bytes
    offset: str
    next_offset: str
    content_type: str | None
    up_to_date: bool = False

    def json(self) -> list[Any]:
        """The messages of a JSON-mode batch (DS §5).

        Raises:
            ValueError: the batch is not a JSON array.
        """
        if not self.data:
            return []
        value = json.loads(self.data)
        if not isinstance(value, list):
            raise ValueError("JSON-mode batch is not an array")
        return value


def _closed(resp: httpx.Response) -> bool:
    return str(resp.headers.get("stream-closed", "")).lower() == "true"


def _int_header(resp: httpx.Response, name: str) -> int | None:
    value = resp.headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _Control(msgspec.Struct):
    """SSE ``control`` event payload (DS §2 SSE), camelCase on the wire."""

    streamNextOffset: str
    streamCursor: str | None = None
    upToDate: bool = False
    streamClosed: bool = False


_control_decoder = msgspec.json.Decoder(_Control)


class StreamClient:
    """Client for one Durable Streams server (or absolute stream URLs).

    Args:
        base_url: prefix for relative stream paths, e.g.
            ``http://127.0.0.1:4437/v1/stream/``; absolute URLs bypass it.
        client: an ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`);
            by default one is created with ``timeout``.
        headers: extra headers on every request.
        token_provider: async callable returning a bearer token, awaited per
            request (so rotation needs no restart).
        retry: backoff for transient failures of idempotent operations.
        max_retries: attempts per operation before the last error is raised
            (0 = retry forever; :meth:`tail` always retries forever).
        timeout: per-request timeout, seconds (long-poll/SSE reads use
            ``live_timeout``).
        live_timeout: read timeout for one long-poll or SSE read; must exceed
            the server's long-poll timeout (30 s by default).
        rng: random source for the backoff jitter.
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        client: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
        token_provider: Callable[[], Awaitable[str | None]] | None = None,
        retry: BackoffPolicy | None = None,
        max_retries: int = 8,
        timeout: float = 10.0,
        live_timeout: float = 75.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.base_url = base_url
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._headers = dict(headers or {})
        self._token_provider = token_provider
        self._retry = retry or BackoffPolicy(initial_delay=0.1, max_delay=5.0, min_delay=0.05)
        self._max_retries = max_retries
        self._timeout = timeout
        self._live_timeout = live_timeout
        self._rng = rng

    async def aclose(self) -> None:
        """Close the HTTP client if this instance created it."""
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> StreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def url(self, stream: str) -> str:
        """The absolute URL of ``stream`` (absolute URLs are returned unchanged)."""
        if "://" in stream:
            return stream
        base = self.base_url if self.base_url.endswith("/") else self.base_url + "/"
        return urljoin(base, stream.lstrip("/"))

    # -- operations ---------------------------------------------------------------

    async def create(
        self,
        stream: str,
        *,
        content_type: str = "application/octet-stream",
        data: bytes | str | None = None,
        ttl: int | None = None,
        expires_at: str | None = None,
        closed: bool = False,
    ) -> StreamInfo:
        """Create the stream, or confirm it exists with the same config (DS §2 PUT).

        Idempotent, so transient failures are retried.

        Raises:
            StreamConflict: it exists with another configuration (409).
            StreamError: any other non-retryable status.
        """
        url = self.url(stream)
        headers = {"Content-Type": content_type}
        if ttl is not None:
            headers["Stream-TTL"] = str(ttl)
        if expires_at is not None:
            headers["Stream-Expires-At"] = expires_at
        if closed:
            headers["Stream-Closed"] = "true"
        body = data.encode() if isinstance(data, str) else data
        resp = await self._request("PUT", url, headers=headers, content=body, retry=True)
        self._raise_for(resp, url)
        return self._info(url, resp, created=resp.status_code == 201)

    async def head(self, stream: str) -> StreamInfo:
        """Metadata of the stream (DS §2 HEAD); retried on transient failures.

        Raises:
            StreamNotFound: 404. StreamGone: 410.
        """
        url = self.url(stream)
        resp = await self._request("HEAD", url, retry=True)
        self._raise_for(resp, url)
        return self._info(url, resp)

    async def delete(self, stream: str) -> None:
        """Delete the stream (DS §2 DELETE). Not retried (a retry would 404).

        Raises:
            StreamNotFound: 404. StreamGone: 410 (already soft-deleted).
        """
        url = self.url(stream)
        resp = await self._request("DELETE", url, retry=False)
        self._raise_for(resp, url)

    async def read(self, stream: str, offset: str = "-1") -> Batch:
        """One catch-up read from ``offset`` (DS §2 GET without ``live``).

        Returns at most one server chunk; ``up_to_date`` says whether it
        reached the tail. Retried on transient failures.
        """
        url = self.url(stream)
        resp = await self._request("GET", url, params={"offset": offset}, retry=True)
        self._raise_for(resp, url)
        return self._batch(resp, offset)

    async def append(
        self,
        stream: str,
        data: bytes | str,
        *,
        content_type: str = "application/octet-stream",
        seq: str | None = None,
        close: bool = False,
    ) -> AppendResult:
        """A plain append (DS §2 POST), **not** retried: a retry could duplicate.

        Use :meth:`producer` for appends that must survive retries.

        Raises:
            StreamClosedError: the stream is closed. StreamConflict: content
            type mismatch or ``Stream-Seq`` regression. StreamError: others.
        """
        url = self.url(stream)
        headers = {"Content-Type": content_type}
        if seq is not None:
            headers["Stream-Seq"] = seq
        if close:
            headers["Stream-Closed"] = "true"
        body = data.encode() if isinstance(data, str) else data
        resp = await self._request("POST", url, headers=headers, content=body, retry=False)
        self._raise_for(resp, url)
        return AppendResult(resp.headers.get("stream-next-offset"), _closed(resp))

    def producer(
        self,
        stream: str,
        *,
        content_type: str = "application/octet-stream",
        producer_id: str | None = None,
        epoch: int = 0,
        auto_claim: bool = False,
    ) -> IdempotentProducer:
        """An idempotent producer for ``stream`` (DS §3); see :class:`IdempotentProducer`."""
        return IdempotentProducer(
            self,
            self.url(stream),
            content_type=content_type,
            producer_id=producer_id,
            epoch=epoch,
            auto_claim=auto_claim,
        )

    async def tail(
        self,
        stream: str,
        *,
        offset: str = "-1",
        live: LiveMode = "long-poll",
        checkpoint: str | os.PathLike[str] | None = None,
        stop_at_up_to_date: bool = False,
        on_retry: Callable[[BaseException, float], None] | None = None,
        give_up_after: float | None = None,
    ) -> AsyncIterator[Batch]:
        """Yield the stream from ``offset``, live, exactly once and in order.

        Args:
            offset: where to start (``-1`` = beginning, ``now`` = tail), used
                only if the checkpoint file has no offset.
            live: ``"long-poll"`` or ``"sse"``.
            checkpoint: file keeping the offset across process restarts
                (written atomically after each batch the consumer finished).
            stop_at_up_to_date: end once caught up instead of waiting for more.
            on_retry: called with the error and the delay (seconds) before each
                retry of a transient failure.
            give_up_after: raise the last transient error once requests have
                failed for this many seconds in a row (None: retry forever).

        Ends when the stream is closed and everything was delivered (DS
        ``Stream-Closed``). Retries transient failures from the last delivered
        offset, forever unless ``give_up_after`` is given.

        Raises:
            StreamNotFound / StreamGone / StreamError: permanent failures (and
                a transient one past ``give_up_after``).
            httpx.TransportError / TimeoutError: network failures past ``give_up_after``.
        """
        url = self.url(stream)
        ckpt = Path(checkpoint) if checkpoint is not None else None
        if ckpt is not None:
            saved = await asyncio.to_thread(_read_checkpoint, ckpt)
            if saved is not None:
                offset = saved
        backoff = Backoff(self._retry, rng=self._rng)
        state = _TailState(offset)
        failing_since: float | None = None  # monotonic time of the first failure in a row
        while True:
            try:
                if live == "sse" and state.caught_up:
                    if state.content_type is None:
                        state.content_type = (await self.head(url)).content_type
                    reader = self._tail_sse(url, state)
                else:
                    reader = self._tail_http(url, state)
                async with contextlib.aclosing(reader):
                    async for batch in reader:
                        backoff.reset()
                        failing_since = None
                        yield batch
                        # The consumer asked for more: this batch is done.
                        state.offset = batch.next_offset
                        if ckpt is not None:
                            await asyncio.to_thread(_write_checkpoint, ckpt, state.offset)
                        if stop_at_up_to_date and batch.up_to_date:
                            return
                if state.closed or (stop_at_up_to_date and state.caught_up):
                    return
                failing_since = None
                continue
            except _TRANSIENT_ERRORS as exc:
                error: BaseException = exc
            except StreamError as exc:
                if exc.status not in _RETRY_STATUSES:
                    raise
                error = exc
            now = time.monotonic()
            if failing_since is None:
                failing_since = now
            elif give_up_after is not None and now - failing_since >= give_up_after:
                raise error
            delay = backoff.next_delay()
            delay = delay if delay is not None else self._retry.max_delay
            if give_up_after is not None:
                delay = min(delay, max(0.0, failing_since + give_up_after - now))
            if on_retry is not None:
                on_retry(error, delay)
            await asyncio.sleep(delay)

    # -- tail readers -------------------------------------------------------------

    async def _tail_http(self, url: str, state: _TailState) -> AsyncGenerator[Batch]:
        """One request: a catch-up read until up to date, then long-poll reads."""
        params: dict[str, str] = {"offset": state.offset}
        if state.caught_up:
            params["live"] = "long-poll"
            if state.cursor:
                params["cursor"] = state.cursor
        resp = await self._request(
            "GET", url, params=params, retry=False, read_timeout=self._live_timeout
        )
        if resp.status_code == 204:  # long-poll timeout: nothing new (DS §2)
            state.cursor = resp.headers.get("stream-cursor", state.cursor)
            nxt = resp.headers.get("stream-next-offset")
            if nxt and nxt != state.offset:
                # A 204 that claims the tail moved (the reference server does
                # this when a closing append wakes the poll): never skip data,
                # re-read from our offset with a catch-up request instead.
                state.caught_up = False
                return
            if _closed(resp):
                # Confirm the end with a catch-up read before finishing: the
                # reference server 0.3.7 (file store) can announce closure
                # before the closing append's data is readable.
                state.caught_up = False
            return
        self._raise_for(resp, url)
        batch = self._batch(resp, state.offset)
        state.content_type = batch.content_type
        state.cursor = resp.headers.get("stream-cursor", state.cursor)
        state.caught_up = batch.up_to_date
        if batch.up_to_date and _closed(resp):
            state.closed = True
        if not _empty(batch.data, batch.content_type) or batch.next_offset != state.offset:
            yield batch

    async def _tail_sse(self, url: str, state: _TailState) -> AsyncGenerator[Batch]:
        """One SSE connection: data events are delivered with their control event."""
        params = {"offset": state.offset, "live": "sse"}
        if state.cursor:
            params["cursor"] = state.cursor
        headers = await self._auth_headers()
        timeout = httpx.Timeout(self._timeout, read=self._live_timeout)
        async with self._client.stream(
            "GET", url, params=params, headers=headers, timeout=timeout
        ) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                self._raise_for(resp, url)
            b64 = resp.headers.get("stream-sse-data-encoding", "").lower() == "base64"
            ctype = state.content_type  # the stream's type (SSE itself is text/event-stream)
            pending: list[bytes] = []
            async for event, data in _sse_events(resp):
                if event == "data":
                    raw = base64.b64decode("".join(data.split())) if b64 else data.encode()
                    pending.append(raw)
                elif event == "control":
                    try:
                        ctl = _control_decoder.decode(data)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        raise StreamError(0, url, "bad SSE control event") from None
                    if ctl.streamCursor:
                        state.cursor = ctl.streamCursor
                    # streamClosed: finish this connection; the catch-up read
                    # that follows confirms the end (see _tail_http).
                    closing = ctl.streamClosed
                    body = _join(pending, ctype)
                    pending.clear()
                    if not _empty(body, ctype) or ctl.streamNextOffset != state.offset:
                        yield Batch(body, state.offset, ctl.streamNextOffset, ctype, ctl.upToDate)
                    else:
                        state.offset = ctl.streamNextOffset
                    if closing:
                        state.caught_up = False
                        return
        # The server ended the SSE response (it does so periodically): reconnect.

    # -- plumbing -------------------------------------------------------------------

    async def _auth_headers(self) -> dict[str, str]:
        headers = dict(self._headers)
        if self._token_provider is not None:
            token = await self._token_provider()
            if token:
                headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        retry: bool,
        read_timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request; with ``retry``, retry transient failures with backoff."""
        backoff = Backoff(self._retry, rng=self._rng)
        attempt = 0
        while True:
            attempt += 1
            all_headers = await self._auth_headers()
            all_headers.update(headers or {})
            try:
                resp = await self._client.request(
                    method,
                    url,
                    headers=all_headers,
                    params=dict(sorted((params or {}).items())),  # DS §2: sorted keys
                    content=content,
                    timeout=httpx.Timeout(self._timeout, read=read_timeout or self._timeout),
                )
            except _TRANSIENT_ERRORS:
                if not retry or (self._max_retries and attempt >= self._max_retries):
                    raise
            else:
                if not retry or resp.status_code not in _RETRY_STATUSES:
                    return resp
                if self._max_retries and attempt >= self._max_retries:
                    return resp
            delay = backoff.next_delay()
            await asyncio.sleep(delay if delay is not None else self._retry.max_delay)

    @staticmethod
    def _raise_for(resp: httpx.Response, url: str) -> None:
        status = resp.status_code
        if status < 400:
            return
        text = resp.text[:200] if resp.content else ""
        if status == 404:
            raise StreamNotFound(status, url, text)
        if status == 410:
            raise StreamGone(status, url, text)
        if status == 409:
            if _closed(resp):
                raise StreamClosedError(status, url, text)
            raise StreamConflict(status, url, text)
        raise StreamError(status, url, text)

    @staticmethod
    def _info(url: str, resp: httpx.Response, *, created: bool = False) -> StreamInfo:
        return StreamInfo(
            url=url,
            content_type=resp.headers.get("content-type"),
            next_offset=resp.headers.get("stream-next-offset"),
            closed=_closed(resp),
            created=created,
            ttl=_int_header(resp, "stream-ttl"),
            expires_at=resp.headers.get("stream-expires-at"),
        )

    @staticmethod
    def _batch(resp: httpx.Response, offset: str) -> Batch:
        nxt = resp.headers.get("stream-next-offset") or offset
        return Batch(
            data=resp.content,
            offset=offset,
            next_offset=nxt,
            content_type=resp.headers.get("content-type"),
            up_to_date=resp.headers.get("stream-up-to-date", "").lower() == "true",
        )


@dataclass(slots=True)
class _TailState:
    offset: str
    cursor: str | None = None
    caught_up: bool = False
    closed: bool = False
    content_type: str | None = None


def _empty(data: bytes, content_type: str | None) -> bool:
    return not data or (is_json(content_type) and data.strip() == b"[]")


def _join(parts: list[bytes], content_type: str | None) -> bytes:
    if len(parts) == 1:
        return parts[0]
    if is_json(content_type):  # several JSON arrays: merge into one
        merged: list[Any] = []
        for p in parts:
            merged.extend(json.loads(p))
        return json.dumps(merged).encode()
    return b"".join(parts)


async def _sse_events(resp: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """Parse ``text/event-stream`` (WHATWG HTML §9.2.6, the subset DS uses)."""
    event = "message"
    data: list[str] = []
    async for line in resp.aiter_lines():
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield event, "\n".join(data)


def _read_checkpoint(path: Path) -> str | None:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable checkpoint {path}: {exc}") from exc
    offset = doc.get("offset") if isinstance(doc, dict) else None
    if not isinstance(offset, str) or not offset:
        raise ValueError(f"checkpoint {path} has no offset")
    return offset


def _write_checkpoint(path: Path, offset: str) -> None:
    """Write ``{"offset": ...}`` atomically: temp file, fsync, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"offset": offset}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class IdempotentProducer:
    """Exactly-once appends to one stream (DS §3 idempotent producers).

    Numbers each batch with (``producer_id``, ``epoch``, ``seq``); ``seq``
    starts at 0 and advances only after the server accepted the batch.
    Transient failures are retried forever with the same numbers (bound
    the wait with ``asyncio.timeout``); the server answers a retry of an
    applied batch with 204 and does not apply it again.

    Args:
        producer_id: stable identity; default a random UUID (a new identity
            per producer object, so a restarted process never collides).
        epoch: starting epoch. Reusing a fixed ``producer_id`` after a
            restart needs a higher epoch (or ``auto_claim``).
        auto_claim: on 403 (fenced by a newer epoch) or on evidence that the
            identity is in use (:class:`ProducerStateConflict`), claim
            ``server epoch + 1`` with seq 0 and retry, instead of raising.
    """

    def __init__(
        self,
        client: StreamClient,
        url: str,
        *,
        content_type: str = "application/octet-stream",
        producer_id: str | None = None,
        epoch: int = 0,
        auto_claim: bool = False,
    ) -> None:
        self._client = client
        self.url = url
        self.content_type = content_type
        self.producer_id = producer_id or uuid.uuid4().hex
        self.epoch = epoch
        self.seq = 0
        """Sequence number of the next batch."""
        self.auto_claim = auto_claim
        self._lock = asyncio.Lock()

    async def append(self, data: bytes | str, *, close: bool = False) -> AppendResult:
        """Append one batch exactly once (and optionally close the stream).

        Raises:
            ProducerFenced: 403 and ``auto_claim`` is off.
            ProducerSeqGap: 409 with ``Producer-Expected-Seq`` (server lost state).
            ProducerStateConflict: identity in use elsewhere, ``auto_claim`` off.
            StreamClosedError / StreamNotFound / StreamError: permanent failures.
        """
        body = data.encode() if isinstance(data, str) else data
        async with self._lock:
            backoff = Backoff(self._client._retry, rng=self._client._rng)
            while True:
                headers = {
                    "Content-Type": self.content_type,
                    "Producer-Id": self.producer_id,
                    "Producer-Epoch": str(self.epoch),
                    "Producer-Seq": str(self.seq),
                }
                if close:
                    headers["Stream-Closed"] = "true"
                try:
                    resp = await self._client._request(
                        "POST", self.url, headers=headers, content=body, retry=False
                    )
                except _TRANSIENT_ERRORS:
                    resp = None
                if resp is None or resp.status_code in _RETRY_STATUSES:
                    # Same (id, epoch, seq) again: the server dedupes (DS §3).
                    delay = backoff.next_delay()
                    await asyncio.sleep(
                        delay if delay is not None else self._client._retry.max_delay
                    )
                    continue
                result = self._handle(resp)
                if result is not None:
                    self.seq += 1
                    return result

    def _handle(self, resp: httpx.Response) -> AppendResult | None:
        """Interpret a response; None means "retry with the (new) numbers"."""
        status = resp.status_code
        server_epoch = _int_header(resp, "producer-epoch")
        if status in (200, 204):
            server_seq = _int_header(resp, "producer-seq")
            duplicate = status == 204 and server_seq is not None
            if status == 204 and server_seq is not None and server_seq > self.seq:
                # A "duplicate" of a seq we never sent this far: someone else
                # owns this identity/epoch. Retrying would drop our data.
                if not self.auto_claim:
                    raise ProducerStateConflict(
                        409, self.url, f"server is at seq {server_seq}, we sent {self.seq}"
                    )
                self._claim(server_epoch)
                return None
            return AppendResult(
                resp.headers.get("stream-next-offset"),
                _closed(resp),
                duplicate=duplicate,
                epoch=self.epoch,
                seq=self.seq,
            )
        if status == 403 and resp.headers.get("producer-epoch") is not None:
            if not self.auto_claim:
                raise ProducerFenced(self.url, server_epoch)
            self._claim(server_epoch)
            return None
        if status == 409 and resp.headers.get("producer-expected-seq") is not None:
            raise ProducerSeqGap(
                self.url,
                _int_header(resp, "producer-expected-seq"),
                _int_header(resp, "producer-received-seq"),
            )
        StreamClient._raise_for(resp, self.url)
        raise StreamError(status, self.url, "unexpected response")

    def _claim(self, server_epoch: int | None) -> None:
        """Auto-claim: epoch = server's + 1, seq restarts at 0 (DS §3)."""
        self.epoch = max(self.epoch, server_epoch if server_epoch is not None else self.epoch) + 1
        self.seq = 0
