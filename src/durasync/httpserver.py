"""The HTTP/1.1 connection layer of ``durasync serve``: uvicorn's httptools protocol, bounded.

uvicorn (0.55, httptools) parses requests and writes responses, but enforces few bounds by
itself: no limit on header size or count (llhttp buffers a header of any size), no deadline for
a request head or a body, a keep-alive timeout that is armed only after a first response (a
connection that sends nothing stays open for ever), ``limit_concurrency`` that answers 503 to
*requests* but still accepts and keeps every *connection*, and a ``send`` that waits without
limit for a client that does not read. :class:`BoundedHttpProtocol` is a subclass of its
``HttpToolsProtocol`` (passed to uvicorn as ``http=``) that adds, per connection:

- **head size and count**: at most ``max_header_bytes`` of request line plus headers and
  ``max_headers`` header fields, else ``431`` and close. The raw bytes of an unfinished head
  are counted as they arrive, so llhttp never buffers more than the limit plus one read
  (at most 256 KiB);
- **head deadline**: the head must be complete ``header_timeout`` seconds after its first
  byte, else ``408`` and close;
- **body progress**: while a request body is expected and the app is reading it, some bytes
  must arrive every ``body_timeout`` seconds, else ``408`` (or a close, if the response has
  started). Time the app itself leaves the body unread does not count;
- **idle connections**: a connection with no request in progress that receives nothing for
  ``idle_timeout`` seconds is closed, from its first second on (also if it never sends
  anything);
- **write stalls**: a response write that the client does not drain (the transport's
  64 KiB buffer stays full) for ``write_timeout`` seconds aborts the connection, and so does
  a connection closed with unsent data that makes no progress for as long;
- **connection cap**: beyond ``max_connections`` open connections (HTTP and WebSocket) a new
  one gets ``503`` with ``Retry-After`` and is closed at once.

WebSocket upgrades go through the same head checks (size, count, deadline); once upgraded
the connection belongs to uvicorn's WebSocket protocol (its ping timeout and ``ws_max_size``,
and the rooms layer's own frame, queue and rate bounds).

With a :class:`RequestObserver` (``bounded_protocol(limits, observer=...)``), every request's
status, response body bytes and duration are reported when its ASGI task ends (metrics and
access lines: :class:`durasync.logs.RequestLog`), and so is every refusal of this layer.

The protocol also gives each request a :class:`ConnectionHandle` under the ASGI scope
extension :data:`durasync.streams.app.CONNECTION_EXTENSION`: the streams app uses it to
release a catch-up chunk while the client does not read, to end a long-poll or SSE response
as soon as its client goes away, and to abort a response it cannot finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import resource
import socket
import struct
import termios
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

import httptools
import msgspec
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from durasync.httpwire import error_body
from durasync.streams.app import CONNECTION_EXTENSION

__all__ = [
    "BoundedHttpProtocol",
    "ConnectionHandle",
    "HttpLimits",
    "RequestObserver",
    "bounded_protocol",
    "default_max_connections",
]

#: Seconds between checks of a closing connection's unsent data.
DRAIN_POLL: Final = 0.25
#: ``ioctl`` request for the bytes of a socket's send queue not yet sent (Linux ``SIOCOUTQ``).
_TIOCOUTQ: Final = getattr(termios, "TIOCOUTQ", 0x5411)
#: ``SO_LINGER`` on, 0 s: ``close`` resets the connection and drops unsent data.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)

#: File descriptors left to the store, logs and outgoing connections when the connection cap
#: is derived from the open-file limit.
FD_RESERVE: Final = 64


class HttpLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Bounds of the HTTP connection layer (see the module docstring; docs/deploy.md)."""

    #: Request line plus header fields, in bytes (431 above).
    max_header_bytes: int = 32 * 1024
    #: Header fields per request (431 above).
    max_headers: int = 100
    #: Seconds from a request head's first byte to its end (408 after).
    header_timeout: float = 10.0
    #: Seconds a request body may make no progress while the app reads it (408 after).
    body_timeout: float = 30.0
    #: Seconds a connection may stay without a request and without receiving anything.
    idle_timeout: float = 30.0
    #: Seconds a response write may make no progress (the client does not read) before the
    #: connection is aborted.
    write_timeout: float = 30.0
    #: Open connections (HTTP and WebSocket); ``None``: the open-file limit minus
    #: :data:`FD_RESERVE` (see :func:`default_max_connections`).
    max_connections: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_headers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        for name in ("header_timeout", "body_timeout", "idle_timeout", "write_timeout"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be positive")


def default_max_connections() -> int:
    """The open-file soft limit (``ulimit -n``) minus :data:`FD_RESERVE`, at least 1: beyond
    it ``accept`` would fail for every client, including the ones the server could serve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - FD_RESERVE)


class RequestObserver(Protocol):
    """Told about every request a connection served (see :class:`durasync.logs.RequestLog`)."""

    @property
    def active(self) -> bool:
        """False: nothing to observe (requests then run without any wrapping)."""

    def request_done(
        self, scope: Mapping[str, object], status: int, nbytes: int, seconds: float
    ) -> None:
        """A request ended: ``status`` (0: no response started), body bytes sent, duration."""

    def refused(self, status: int, code: str) -> None:
        """This layer answered ``status`` ``code`` itself (408, 431, 503) and closed."""


class _Refusal(Exception):
    """Raised from a parser callback to refuse the request (the parser stops there)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


_REASONS: Final = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def _refusal_bytes(status: int, code: str, message: str, extra: bytes = b"") -> bytes:
    body = error_body(code, message)
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-content-type-options: nosniff\r\n",
            b"cache-control: no-store\r\n",
            extra,
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class ConnectionHandle:
    """What a response may know and do about its connection (ASGI scope extension
    :data:`~durasync.streams.app.CONNECTION_EXTENSION`). One per connection."""

    __slots__ = ("_on_lost", "_protocol", "lost")

    def __init__(self, protocol: BoundedHttpProtocol) -> None:
        self._protocol = protocol
        self._on_lost: Callable[[], None] | None = None
        #: True once the connection is gone (closed by either side or aborted).
        self.lost = False

    @property
    def write_paused(self) -> bool:
        """True while the transport's write buffer is full: the next ``send`` will wait."""
        return self._protocol.flow.write_paused

    def on_lost(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` (once) when the connection is lost; ``None`` removes it. One
        slot: the request being answered owns it and clears it when done. Called at once if
        the connection is already gone."""
        if callback is not None and self.lost:
            callback()
            return
        self._on_lost = callback

    def abort(self) -> None:
        """Drop the connection now, unsent data included (a response that cannot finish)."""
        self._protocol.abort()

    def _connection_lost(self) -> None:
        self.lost = True
        callback, self._on_lost = self._on_lost, None
        if callback is not None:
            callback()


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of :class:`HttpLimits` (module docstring).

    Use :func:`bounded_protocol` to get a subclass bound to a set of limits.
    """

    limits: HttpLimits = HttpLimits()
    max_connections: int = 1
    observer: RequestObserver | None = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = self.limits
        # uvicorn re-arms its keep-alive timer after every response: the idle bound.
        self.timeout_keep_alive = limits.idle_timeout  # type: ignore[assignment]
        self._handle = ConnectionHandle(self)
        self._extensions: dict[str, dict[object, object]] = {
            CONNECTION_EXTENSION: {"handle": self._handle}
        }
        self._refused = False
        self._head_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_progress = 0.0
        self._stall_timer: asyncio.TimerHandle | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._fd = -1

    # -- connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        over = len(self.connections) >= self.max_connections
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        if over:
            self._refuse(
                503,
                "TOO_MANY_CONNECTIONS",
                "the server has as many connections as it accepts; retry later",
                extra=b"retry-after: 1\r\n",
            )
            return
        # Idle from the first second: a connection that never sends is closed too.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.limits.idle_timeout, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        super().connection_lost(exc)
        self._handle._connection_lost()

    def _cancel_timers(self) -> None:
        for name in ("_header_timer", "_body_timer", "_stall_timer"):
            timer = getattr(self, name)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)

    def abort(self) -> None:
        """Drop the connection and everything queued for it, in this process and in the
        kernel: with a zero linger the socket is reset at once instead of lingering as an
        orphan that keeps its send buffer while the peer does not read."""
        transport = self.transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()

    def _close(self) -> None:
        """Close once everything queued for the client was delivered; abort (reset) if the
        delivery makes no progress for ``write_timeout`` (a client that does not read).

        What is queued counts both this process's transport buffer and the kernel's send
        queue: closing a socket whose send queue the peer never drains would leave an
        orphan connection holding that queue for minutes.
        """
        self._refused = True  # read nothing more
        self._watch_drain(-1)

    def _unsent(self) -> int:
        """Bytes queued for the client: transport buffer plus kernel send queue (Linux)."""
        size = self.transport.get_write_buffer_size()
        if self._fd >= 0 and not self.transport.is_closing():
            with contextlib.suppress(OSError):
                size += struct.unpack("i", fcntl.ioctl(self._fd, _TIOCOUTQ, b"\0\0\0\0"))[0]
        return size

    def _watch_drain(self, previous: int, since: float = 0.0) -> None:
        """Close when nothing is queued any more; abort when the queue has not shrunk for
        ``write_timeout`` (checked every :data:`DRAIN_POLL` seconds meanwhile)."""
        self._drain_timer = None
        size = self._unsent()
        if size == 0:
            if not self.transport.is_closing():
                self.transport.close()
            return
        now = self.loop.time()
        if previous < 0 or size < previous:
            since = now
        elif now - since >= self.limits.write_timeout:
            self.abort()
            return
        delay = min(DRAIN_POLL, self.limits.write_timeout)
        self._drain_timer = self.loop.call_later(delay, self._watch_drain, size, since)

    def _refuse(
        self, status: int, code: str, message: str, *, extra: bytes = b"", body: bool = False
    ) -> None:
        """Answer ``status`` outside any request cycle and close the connection.

        ``body``: the refusal is about the current request's body, whose app waits for it
        and has not answered. Any other unfinished response (one half written, or a
        pipelined request still being answered) cannot be followed by an answer of ours:
        the connection is reset instead.
        """
        self._refused = True
        self._cancel_timers()
        self._unset_keepalive_if_required()
        if self.observer is not None:
            self.observer.refused(status, code)
        cycle = self.cycle
        if (
            cycle is not None
            and not cycle.response_complete
            and (cycle.response_started or not body)
        ):
            self.abort()
            return
        if not self.transport.is_closing():
            self.transport.write(_refusal_bytes(status, code, message, extra))
        self._close()

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing() and self._drain_timer is None:
            self._close()

    def handle_websocket_upgrade(self) -> None:
        # The head passed every check; the WebSocket protocol takes the connection over.
        self._cancel_timers()
        self._unset_keepalive_if_required()
        super().handle_websocket_upgrade()

    def shutdown(self) -> None:
        super().shutdown()
        if self.transport.is_closing():
            self._watch_drain(-1)

    # -- reading ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # Per request, the common case (a head, and a small body, in one read) arms no timer:
        # a deadline is armed only when a head or a body is still incomplete after a read.
        if self._refused:
            return
        self._unset_keepalive_if_required()
        cycle = self.cycle
        # Bytes belong to a request head unless a request's body is still expected.
        if cycle is None or not cycle.more_body:
            self._head_bytes += len(data)
        elif self._body_timer is not None:
            self._body_progress = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _Refusal):
                self._refuse(refusal.status, refusal.code, refusal.message)
                return
            self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._head_bytes:
            # A head began and is not complete (a complete head resets the count).
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(431, "HEADERS_TOO_LARGE", self._head_message())
            elif self._header_timer is None:
                # Part of a head arrived (just now): the rest must follow in time.
                self._header_timer = self.loop.call_later(
                    self.limits.header_timeout, self._on_header_timeout
                )
        elif self._body_timer is None:
            cycle = self.cycle
            if cycle is not None and cycle.more_body and not cycle.response_complete:
                self._body_progress = self.loop.time()
                self._body_timer = self.loop.call_later(
                    self.limits.body_timeout, self._on_body_timeout
                )

    def _bad_request(self) -> None:
        self._cancel_timers()
        self.logger.warning("Invalid HTTP request received.")
        self.send_400_response("Invalid HTTP request received.")
        self._watch_drain(-1)

    def _head_message(self) -> str:
        limits = self.limits
        return (
            f"request line and headers must fit in {limits.max_header_bytes} bytes "
            f"and {limits.max_headers} fields"
        )

    def on_headers_complete(self) -> None:
        limits = self.limits
        if len(self.headers) > limits.max_headers or (
            # Exact size only when the bytes read so far (head, maybe body) exceed the limit.
            self._head_bytes > limits.max_header_bytes
            and len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            > limits.max_header_bytes
        ):
            raise _Refusal(431, "HEADERS_TOO_LARGE", self._head_message())
        self._head_bytes = 0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        HttpToolsProtocol.on_headers_complete(self)
        self.scope["extensions"] = self._extensions

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self._head_bytes and not self.transport.is_closing():
            self._refuse(
                408,
                "HEADER_TIMEOUT",
                f"the request head did not arrive within {self.limits.header_timeout} s",
            )

    def _on_body_timeout(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if (
            cycle is None
            or not cycle.more_body
            or cycle.response_complete
            or self.transport.is_closing()
        ):
            return
        timeout = self.limits.body_timeout
        now = self.loop.time()
        if self.flow.read_paused:
            # The app leaves the body unread: its time, not the client's.
            self._body_progress = now
            self._body_timer = self.loop.call_later(timeout, self._on_body_timeout)
            return
        quiet = now - self._body_progress
        if quiet < timeout:
            self._body_timer = self.loop.call_later(timeout - quiet, self._on_body_timeout)
            return
        self._refuse(
            408, "BODY_TIMEOUT", f"the request body made no progress for {timeout} s", body=True
        )

    # -- writing ----------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.limits.write_timeout, self._on_stall)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _on_stall(self) -> None:
        self._stall_timer = None
        if self.flow.write_paused:
            # The client has not read for write_timeout: free its buffers.
            self.abort()

    # -- requests ---------------------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        observer = self.observer
        recorder: _Recorder | None = None
        if observer is not None and observer.active:
            recorder = _Recorder(cycle, observer)
            # run_asgi (and its 500 fallback) sends through the instance attribute.
            cycle.send = recorder.send  # type: ignore[method-assign]
        if self.config.reset_contextvars:
            task = self.loop.create_task(cycle.run_asgi(app), context=contextvars.Context())
        else:
            task = self.loop.create_task(cycle.run_asgi(app))
        if recorder is None:
            task.add_done_callback(self._request_done)
        else:
            # One done callback either way (each is a loop callback of its own).
            recorder.then = self._request_done
            task.add_done_callback(recorder.done)
        self.tasks.add(task)

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        # uvicorn closes the transport itself after some responses (Connection: close, an
        # app error): make sure that close cannot wait for ever on a client that never reads.
        if self.transport.is_closing() and self._drain_timer is None:
            self._watch_drain(-1)


class _Recorder:
    """Notes one request's status and body bytes as they are sent; reports them to the
    observer when the request's task ends. ``send`` is a plain function returning uvicorn's
    own send coroutine: no extra coroutine frame per message."""

    __slots__ = ("_send", "nbytes", "observer", "scope", "started", "status", "then")

    def __init__(self, cycle: RequestResponseCycle, observer: RequestObserver) -> None:
        self._send = cycle.send
        self.scope = cycle.scope
        self.observer = observer
        # perf_counter: uvloop's loop.time() counts whole milliseconds.
        self.started = time.perf_counter()
        self.status = 0
        self.nbytes = 0
        #: The protocol's own done callback, run first.
        self.then: Callable[[asyncio.Task[None]], None] | None = None

    def send(self, message: Any) -> Any:
        if message["type"] == "http.response.body":
            self.nbytes += len(message.get("body", b""))
        elif message["type"] == "http.response.start":
            self.status = message["status"]
        return self._send(message)

    def done(self, task: asyncio.Task[None]) -> None:
        if self.then is not None:
            self.then(task)
        self.observer.request_done(
            self.scope, self.status, self.nbytes, time.perf_counter() - self.started
        )


def bounded_protocol(
    limits: HttpLimits, *, observer: RequestObserver | None = None
) -> type[BoundedHttpProtocol]:
    """A :class:`BoundedHttpProtocol` subclass bound to ``limits`` (uvicorn ``http=``) and,
    optionally, a request ``observer`` (``app.state.request_log`` of
    :func:`durasync.server.create_app`)."""
    cap = limits.max_connections or default_max_connections()
    return type(
        "DurasyncHttpProtocol",
        (BoundedHttpProtocol,),
        {
            "limits": limits,
            "max_connections": cap,
            "observer": observer,
            "__module__": __name__,
        },
    )
