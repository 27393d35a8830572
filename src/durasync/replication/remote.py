"""The HTTP side of a link: requests to the remote server (httpx), bounded and classified.

Every request has a deadline (``request_timeout``; live reads add their wait), every answer
body read is bounded (``max_body``), and every failure becomes one of:

- :class:`GapError`: the remote answered 410 with a gap body (a cursor it cannot serve);
- :class:`RemoteError` with an :class:`~durasync.replication.core.Outcome`: ``transient``
  (no answer, timeouts, 408/425/429/5xx; ``retry_after`` when the remote named one) or
  ``permanent`` (any other status; ``status`` and the remote's error text kept).

``on_contact(ok)`` is called after every request (True: the remote answered, whatever the
status; False: no answer), so the link tracks its connectivity.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from durasync.replication.config import ReplicationSettings
from durasync.replication.core import Outcome, classify_failure, classify_response
from durasync.replication.wire import GapBody, ServerInfo, StreamList, StreamRead

__all__ = ["Answer", "GapError", "Remote", "RemoteError", "StreamMissing", "quote_path"]

#: Largest answer body read from a remote (a framed read holds at most ``batch_bytes``).
_MAX_BODY_SLACK: Final = 1 << 20
_PATH_SAFE: Final = "/-._~!$&'()*+,;=:@"

_stream_read_decoder = msgspec.msgpack.Decoder(StreamRead)
_F = TypeVar("_F")
_stream_list_decoder = msgspec.json.Decoder(StreamList)
_server_decoder = msgspec.json.Decoder(ServerInfo)
_gap_decoder = msgspec.json.Decoder(GapBody)


def quote_path(path: str) -> str:
    """A stream path as a URL path (percent-encoded where needed)."""
    return quote(path, safe=_PATH_SAFE)


class RemoteError(Exception):
    """A request to the remote failed; ``outcome`` says whether retrying can help."""

    def __init__(self, outcome: Outcome, what: str) -> None:
        status = f"HTTP {outcome.status}" if outcome.status is not None else "no answer"
        super().__init__(f"{what}: {status}: {outcome.detail}".rstrip(": "))
        self.outcome = outcome

    @property
    def status(self) -> int | None:
        return self.outcome.status

    @property
    def transient(self) -> bool:
        return self.outcome.kind == "transient"


class StreamMissing(RemoteError):
    """The remote has no such stream (404)."""


class GapError(Exception):
    """The remote cannot serve the cursor (410 with a gap body)."""

    def __init__(self, body: GapBody) -> None:
        super().__init__(f"gap: {body.reason}")
        self.body = body


class Answer:
    """A remote's answer: status, headers and the whole body (read under the bound)."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: httpx.Headers, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content


def _detail(resp: Answer) -> str:
    text = resp.content[:2000].decode("utf-8", "replace")
    try:
        body = msgspec.json.decode(resp.content[:20_000])
    except msgspec.DecodeError:
        return text[:1000]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code, message = err.get("code"), err.get("message")
            return f"{code}: {message}"[:1000]
    return text[:1000]


class Remote:
    """One remote server, seen from a link (one HTTP connection pool).

    ``base`` is the remote's base URL (``http://host:port``); ``token`` its bearer token.
    """

    def __init__(
        self,
        base: str,
        *,
        token: str | None,
        settings: ReplicationSettings,
        on_contact: Callable[[bool], None] = lambda ok: None,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base = base.rstrip("/")
        self.settings = settings
        self._on_contact = on_contact
        self._clock = clock
        headers = {"User-Agent": "durasync-replication"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=settings.request_timeout,
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
            transport=transport,
        )
        self.max_body = settings.batch_bytes + _MAX_BODY_SLACK

    async def aclose(self) -> None:
        await self._client.aclose()

    def stream_url(self, path: str) -> str:
        return f"{self.base}/v1/stream/{quote_path(path)}"

    async def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        wait: float = 0.0,
    ) -> Answer:
        """Send one request; the answer whatever its status (body read, bounded).

        Raises:
            RemoteError: no answer (transient), or an answer body over the bound (permanent).
        """
        timeout = httpx.Timeout(
            self.settings.request_timeout, read=self.settings.request_timeout + wait
        )
        try:
            async with self._client.stream(
                method,
                url,
                params=dict(sorted((params or {}).items())),
                headers=dict(headers or {}),
                content=content,
                timeout=timeout,
            ) as resp:
                declared = resp.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                    raise RemoteError(
                        Outcome(
                            kind="permanent", status=resp.status_code, detail="answer too large"
                        ),
                        what,
                    )
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_body:
                        raise RemoteError(
                            Outcome(
                                kind="permanent", status=resp.status_code, detail="answer too large"
                            ),
                            what,
                        )
                    chunks.append(chunk)
                answer = Answer(resp.status_code, resp.headers, b"".join(chunks))
        except httpx.HTTPError as exc:
            self._on_contact(False)
            raise RemoteError(classify_failure(f"{type(exc).__name__}: {exc}"), what) from None
        except OSError as exc:
            self._on_contact(False)
            raise RemoteError(classify_failure(f"{type(exc).__name__}: {exc}"), what) from None
        self._on_contact(True)
        return answer

    def fail(self, resp: Answer, what: str) -> RemoteError:
        """The error for a non-2xx answer (classified)."""
        outcome = classify_response(
            resp.status_code,
            detail=_detail(resp),
            retry_after=resp.headers.get("retry-after"),
            now=self._clock(),
            max_retry_after=self.settings.max_retry_after,
        )
        return RemoteError(outcome, what)

    # -- durasync replication API --------------------------------------------------------

    async def server_info(self) -> ServerInfo | None:
        """The remote's replication identity, or None when it does not serve durasync's
        replication API (any other Durable Streams server).

        Raises:
            RemoteError: no answer, or a failure other than "no such route".
        """
        resp = await self.request("GET", f"{self.base}/v1/replication/server", what="identify")
        if resp.status_code in (404, 405, 501):
            return None
        if resp.status_code != 200:
            raise self.fail(resp, "identify")
        try:
            return _server_decoder.decode(resp.content)
        except msgspec.DecodeError:
            return None

    async def list_streams(self, prefix: str, *, after: str = "", limit: int = 1000) -> StreamList:
        """One page of the remote's streams under ``prefix``.

        Raises:
            RemoteError: failure or an answer that does not decode (permanent).
        """
        params = {"prefix": prefix, "limit": str(limit)}
        if after:
            params["after"] = after
        what = f"list {prefix!r}"
        resp = await self.request(
            "GET", f"{self.base}/v1/replication/streams", params=params, what=what
        )
        if resp.status_code != 200:
            raise self.fail(resp, what)
        try:
            return _stream_list_decoder.decode(resp.content)
        except msgspec.DecodeError as exc:
            raise RemoteError(
                Outcome(kind="permanent", status=200, detail=str(exc)), what
            ) from None

    async def read_stream(
        self, path: str, offset: str, *, server: str, epoch: str, wait: float
    ) -> StreamRead | None:
        """A framed read of ``path`` from ``offset`` in incarnation ``(server, epoch)``,
        waiting up to ``wait`` seconds at the tail. None: the stream does not exist (404).

        Raises:
            GapError: the remote cannot serve this cursor. RemoteError: other failures.
        """
        params = {
            "offset": offset,
            "server": server,
            "epoch": epoch,
            "max_bytes": str(self.settings.batch_bytes),
            "max_messages": str(self.settings.batch_messages),
        }
        if wait > 0:
            params["wait"] = f"{wait:.3f}"
        what = f"read {path!r}"
        resp = await self.request(
            "GET",
            f"{self.base}/v1/replication/streams/{quote_path(path)}",
            params=params,
            what=what,
            wait=wait,
        )
        if resp.status_code == 404:
            return None
        if resp.status_code == 410:
            gap = self.gap(resp)
            if gap is not None:
                raise GapError(gap)
        if resp.status_code != 200:
            raise self.fail(resp, what)
        try:
            return _stream_read_decoder.decode(resp.content)
        except msgspec.DecodeError as exc:
            raise RemoteError(
                Outcome(kind="permanent", status=200, detail=str(exc)), what
            ) from None

    def follow_stream(
        self, path: str, offset: str, *, server: str, epoch: str, heartbeat: float
    ) -> AsyncIterator[StreamRead]:
        """A live framed read of stream ``path`` from ``offset`` (``live=stream``): one
        :class:`StreamRead` per batch as the source gets data, until the response ends
        (closed and sent, re-created, the source's time limit, shutdown). The source sends
        at least one frame every ``heartbeat`` seconds; a silent connection is dropped.

        Raises:
            StreamMissing: 404, no such stream. GapError: 410 with a gap body.
            RemoteError: other failures, a frame over the bound or that does not decode.
        """
        params = {
            "offset": offset,
            "server": server,
            "epoch": epoch,
            "max_bytes": str(self.settings.batch_bytes),
            "max_messages": str(self.settings.batch_messages),
        }
        return self.follow_frames(
            f"/v1/replication/streams/{quote_path(path)}", params, StreamRead, heartbeat=heartbeat
        )

    async def follow_frames(
        self, path: str, params: Mapping[str, str], kind: type[_F], *, heartbeat: float
    ) -> AsyncIterator[_F]:
        """Frames (4-byte big-endian length, then msgpack ``kind``) of a live framed read at
        ``{base}{path}`` with ``live=stream`` (see :meth:`follow_stream`)."""
        query = {**params, "live": "stream", "wait": f"{heartbeat:.3f}"}
        what = f"follow {path!r}"
        decoder = msgspec.msgpack.Decoder(kind)
        timeout = httpx.Timeout(
            self.settings.request_timeout, read=self.settings.request_timeout + heartbeat
        )
        try:
            async with self._client.stream(
                "GET", self.base + path, params=dict(sorted(query.items())), timeout=timeout
            ) as resp:
                self._on_contact(True)
                if resp.status_code != 200:
                    body = b""
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > 1 << 16:
                            break
                    answer = Answer(resp.status_code, resp.headers, body)
                    if resp.status_code == 404:
                        raise StreamMissing(Outcome(kind="permanent", status=404), what)
                    gap = self.gap(answer) if resp.status_code == 410 else None
                    if gap is not None:
                        raise GapError(gap)
                    raise self.fail(answer, what)
                buf = bytearray()
                async for chunk in resp.aiter_bytes():
                    buf += chunk
                    while len(buf) >= 4:
                        size = int.from_bytes(buf[:4], "big")
                        if size > self.max_body:
                            raise RemoteError(
                                Outcome(kind="permanent", status=200, detail="frame too large"),
                                what,
                            )
                        if len(buf) < 4 + size:
                            break
                        frame = bytes(buf[4 : 4 + size])
                        del buf[: 4 + size]
                        try:
                            yield decoder.decode(frame)
                        except msgspec.DecodeError as exc:
                            raise RemoteError(
                                Outcome(kind="permanent", status=200, detail=str(exc)), what
                            ) from None
        except (httpx.HTTPError, OSError) as exc:
            self._on_contact(False)
            raise RemoteError(classify_failure(f"{type(exc).__name__}: {exc}"), what) from None

    @staticmethod
    def gap(resp: Answer) -> GapBody | None:
        """The gap body of a 410 answer, or None if it is another 410."""
        try:
            return _gap_decoder.decode(resp.content)
        except msgspec.DecodeError:
            return None

    async def json(
        self, method: str, path: str, *, what: str, body: Any = None, wait: float = 0.0
    ) -> Answer:
        """A request with a JSON body to ``{base}{path}`` (the answer, any status)."""
        content = msgspec.json.encode(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else {}
        return await self.request(
            method, self.base + path, what=what, headers=headers, content=content, wait=wait
        )
