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

__all__ = ["ClientError", "ConnectionFailed", "ConnectionNotOpen", "HandshakeRejected"]


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
