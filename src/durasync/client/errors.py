"""Errors raised by durasync's asyncio clients.

- :class:`ClientError` -- base.

  - :class:`ConnectionFailed` -- the connection stopped for good (state
    ``failed``): a permanent error (HTTP 401/403 at the handshake, protocol
    violation) or ``max_reconnect_attempts`` exhausted. ``classification``
    says which; ``__cause__`` is the last underlying error.
  - :class:`ConnectionNotOpen` -- ``send()`` after ``close()`` / failure.
  - :class:`HandshakeRejected` -- the server answered the session handshake
    with an ``error`` frame (``permanent`` says whether a retry may help).

Buffer overflow under policy ``reject`` raises
:class:`durasync.protocol.BufferFull` unchanged.
"""

from __future__ import annotations

from durasync.protocol import Classification

__all__ = [
    "ClientError",
    "ConnectionFailed",
    "ConnectionNotOpen",
    "HandshakeRejected",
    "ProducerFenced",
    "ProducerSeqGap",
    "ProducerStateConflict",
    "StreamClosedError",
    "StreamConflict",
    "StreamError",
    "StreamGone",
    "StreamNotFound",
]


class ClientError(Exception):
    """Base class of client errors."""


class ConnectionFailed(ClientError):
    """The connection reached state ``failed`` and will not reconnect by itself."""

    def __init__(self, classification: Classification) -> None:
        super().__init__(classification.reason)
        self.classification = classification


class ConnectionNotOpen(ClientError):
    """The connection is closed or failed; nothing can be sent."""


class HandshakeRejected(ClientError):
    """The server refused the session handshake with an ``error`` frame."""

    def __init__(self, code: str, message: str, *, permanent: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.permanent = permanent


class StreamError(ClientError):
    """A Durable Streams request failed with an HTTP status the client does not retry.

    Attributes:
        status: the HTTP status (0 when the request never got an answer).
        url: the stream URL.
    """

    def __init__(self, status: int, url: str, message: str = "") -> None:
        super().__init__(f"HTTP {status} for {url}" + (f": {message}" if message else ""))
        self.status = status
        self.url = url


class StreamNotFound(StreamError):
    """404: no such stream (or it expired). DS §2."""


class StreamGone(StreamError):
    """410: the offset is below retention, or the stream was soft-deleted. DS §2."""


class StreamConflict(StreamError):
    """409: content-type or configuration mismatch, or ``Stream-Seq`` regression."""


class StreamClosedError(StreamConflict):
    """409 with ``Stream-Closed: true``: the stream is closed; nothing more can be appended."""


class ProducerFenced(StreamError):
    """403: a newer epoch of this producer id exists (DS §3 zombie fencing).

    Attributes:
        current_epoch: the server's epoch for the producer id (None if absent).
    """

    def __init__(self, url: str, current_epoch: int | None) -> None:
        super().__init__(403, url, f"producer fenced by epoch {current_epoch}")
        self.current_epoch = current_epoch


class ProducerSeqGap(StreamError):
    """409 with ``Producer-Expected-Seq``: the server expected another sequence number.

    The producer sends one request at a time and advances only on success,
    so a gap means the server lost producer state (DS §3). The append was
    *not* applied; nothing is renumbered silently.
    """

    def __init__(self, url: str, expected: int | None, received: int | None) -> None:
        super().__init__(409, url, f"producer seq gap: expected {expected}, sent {received}")
        self.expected = expected
        self.received = received


class ProducerStateConflict(StreamError):
    """The server already holds later sequence numbers for this (producer id,
    epoch) than this producer ever sent: another process is using the same
    identity, or a restarted one reused it without a new epoch. Retrying
    would silently drop data, so the client stops (or auto-claims a new epoch)."""
